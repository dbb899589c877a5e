"""The web UI: static pages and their scripts, served as package data.

The pages hold no data: their scripts call the API like any client, with the
key the user enters in the page (kept in the tab's sessionStorage, or
localStorage when asked to remember it) sent as ``Authorization: Bearer``. So
the pages and assets answer without a key (``no_key_needed``), and everything
they show is subject to the API's own keys and tenants. Run ids and graph ids
in the page paths are read by the scripts, never by the server.

Logs, flow names and artifacts come from untrusted users, so every answer here
carries a Content-Security-Policy allowing scripts, styles and connections to
this origin only (no inline script, no eval), and the scripts only ever write
text (``textContent``), never markup.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from orchestrator.api.auth import no_key_needed
from orchestrator.api.openapi import Answer, operation

routes = web.RouteTableDef()

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not no-referrer: under it the Fetch spec has a page's own POSTs carry "Origin:
    # null" (Chromium sends the origin anyway), which the browser guard would refuse.
    "Referrer-Policy": "same-origin",
    # Small files: always revalidated, so a new version of the service shows at once.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str


ASSETS = web.AppKey("ui_assets", dict[str, Asset])


def _read_assets() -> dict[str, Asset]:
    folder = resources.files("orchestrator") / "ui" / "static"
    assets = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in CONTENT_TYPES:
            assets[entry.name] = Asset(entry.read_bytes(), CONTENT_TYPES[suffix])
    return assets


async def load_assets(app: web.Application) -> None:
    """``on_startup``: the UI's files, read once (a few small files) off the event loop."""
    app[ASSETS] = await asyncio.get_running_loop().run_in_executor(None, _read_assets)


def _answer(request: web.Request, name: str) -> web.Response:
    asset = request.app[ASSETS].get(name)
    if asset is None:
        raise web.HTTPNotFound()
    return web.Response(body=asset.body, headers={**HEADERS, "Content-Type": asset.content_type})


#: What a page answers, and what the two short paths to the UI answer, for the document.
A_PAGE = {200: Answer("the page", media_types=("text/html",), schema={"type": "string"})}
TO_UI = {302: Answer("to /ui/", media_types=(), headers={"Location": "/ui/"})}


@routes.get("/")
@operation(
    "To the web UI",
    tag="ui",
    answers=TO_UI,
)
@no_key_needed
async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/")


@routes.get("/ui")
@operation(
    "To the web UI",
    tag="ui",
    answers=TO_UI,
)
@no_key_needed
async def ui_without_slash(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/")


@routes.get("/ui/")
@operation(
    "The web UI: recent runs and saved flows",
    tag="ui",
    answers=A_PAGE,
)
@no_key_needed
async def runs_page(request: web.Request) -> web.Response:
    return _answer(request, "index.html")


@routes.get("/ui/runs/{run_id}")
@operation(
    "The web UI: one run's graph, states and logs",
    params={"run_id": "the run's ID"},
    tag="ui",
    answers=A_PAGE,
)
@no_key_needed
async def run_page(request: web.Request) -> web.Response:
    return _answer(request, "run.html")


@routes.get("/ui/flows/{ref}")
@operation(
    "The web UI: a saved flow, a form to run it, its API calls",
    params={"ref": "a graph_id, integer id or name"},
    tag="ui",
    answers=A_PAGE,
)
@no_key_needed
async def flow_page(request: web.Request) -> web.Response:
    return _answer(request, "flow.html")


@routes.get("/console/api-keys")
@operation(
    "The web UI: API keys (admin keys)",
    tag="ui",
    answers=A_PAGE,
)
@no_key_needed
async def keys_page(request: web.Request) -> web.Response:
    return _answer(request, "keys.html")


@routes.get("/ui/static/{name}")
@operation(
    "A file of the web UI",
    tag="ui",
    params={"name": "one of the UI's files, by its exact name"},
    answers={
        200: Answer(
            "the file",
            media_types=(*sorted(set(CONTENT_TYPES.values())),),
            schema={},
        )
    },
    errors=("ROUTE_NOT_FOUND",),
)
@no_key_needed
async def asset(request: web.Request) -> web.Response:
    """One of the files read at start-up, by its exact name: no path reaches the disk."""
    return _answer(request, request.match_info["name"])


__all__ = ["ASSETS", "load_assets", "routes"]
