"""The API's own documentation: ``GET /openapi.json`` and Swagger UI at ``GET /docs``.

Both are public: the document is the same for every tenant and names none of
them (``api.auth`` lets them through without a key). Swagger UI's files come
from the ``swagger-ui-py`` package and are served by the service itself, so the
page works without the internet and loads nothing from another origin. The page
has no inline script and is sent with a Content-Security-Policy that allows
only this origin: "Try it out" calls go to the same origin (the document's
server is ``/``), which the browser guard lets through like any page of ours.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from aiohttp import web

from orchestrator.api.auth import no_key_needed
from orchestrator.api.openapi import Answer, document, operation
from orchestrator.api.resources import SETTINGS

routes = web.RouteTableDef()

#: The document, built once per application on first request (its routes are fixed by then).
_BUILT = web.AppKey("openapi_document", dict)

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Pipewell API</title>
  <link rel="stylesheet" href="/docs/static/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/static/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/static/swagger-ui-bundle.js"></script>
  <script src="/docs/static/pipewell-docs.js"></script>
</body>
</html>
"""
# No standalone preset: its top bar loads any URL's document into this page.
START = """window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout"
});
"""
#: Swagger UI's files the page uses, and their types; nothing else of the package is served.
ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
OWN_ASSET = "pipewell-docs.js"
PAGE_HEADERS = {
    # Scripts, styles, images and fetches from this origin only; Swagger UI sets styles
    # inline and shows some images as data: URLs.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: under it the Fetch spec has the page's own POSTs ("Try it out")
    # carry "Origin: null", which the browser guard would refuse.
    "Referrer-Policy": "same-origin",
}


def swagger_ui_dir() -> Path:
    """Where swagger-ui-py keeps Swagger UI's files, found without importing the package
    (which would load its framework adapters)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed: pip install swagger-ui-py")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def init_docs(app: web.Application) -> None:
    app[_BUILT] = {}


@routes.get("/openapi.json")
@operation(
    "This document",
    tag="service",
    answers={200: Answer("the OpenAPI 3.1 document", schema={"type": "object"})},
)
@no_key_needed
async def openapi_json(request: web.Request) -> web.Response:
    """Generated from the handlers' own models; public, like /docs."""
    built = request.app[_BUILT]
    if not built:
        built.update(document(request.app, request.app[SETTINGS]))
    return web.json_response(built)


@routes.get("/docs")
@operation(
    "Interactive documentation (Swagger UI)",
    tag="service",
    answers={200: Answer("the page", media_types=("text/html",), schema={"type": "string"})},
)
@no_key_needed
async def docs_page(request: web.Request) -> web.Response:
    """Served from the service's own files; "Try it out" calls this origin."""
    return web.Response(text=PAGE, content_type="text/html", headers=PAGE_HEADERS)


@routes.get("/docs/static/{name}")
@operation(
    "A file of the documentation page",
    tag="service",
    params={"name": "one of Swagger UI's files the page loads"},
    answers={
        200: Answer(
            "the file",
            media_types=(*sorted(set(ASSETS.values())),),
            schema={},
        )
    },
    errors=("ROUTE_NOT_FOUND",),
)
@no_key_needed
async def docs_asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    headers = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}
    if name == OWN_ASSET:
        return web.Response(text=START, content_type="text/javascript", headers=headers)
    if name not in ASSETS:
        raise web.HTTPNotFound()
    headers["Content-Type"] = ASSETS[name]
    return web.FileResponse(swagger_ui_dir() / name, headers=headers)


__all__ = ["init_docs", "routes", "swagger_ui_dir"]
