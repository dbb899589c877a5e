"""Saved flows and their config profiles: ``/api/v1/flows``.

A flow is referred to by its ``graph_id`` (one pinned version), its integer
``id``, or its name (the latest version, or ``?version=N``).
"""

from __future__ import annotations

from aiohttp import web

from orchestrator.api.auth import tenant_of
from orchestrator.api.bodies import read_object, read_submission
from orchestrator.api.resources import INVOCATIONS
from orchestrator.errors import BodyInvalid
from orchestrator.registry import MAX_ID_DIGITS, SavedFlow

routes = web.RouteTableDef()


def version_param(request: web.Request) -> int | None:
    raw = request.query.get("version")
    if raw is None or raw in ("", "latest"):
        return None
    if not raw.isdigit() or len(raw) > MAX_ID_DIGITS or int(raw) < 1:
        raise BodyInvalid("VERSION_INVALID", f"version must be a positive integer, not {raw!r}")
    return int(raw)


async def find_flow(request: web.Request, ref: str) -> SavedFlow:
    return await request.app[INVOCATIONS].find(tenant_of(request), ref, version_param(request))


@routes.post("/api/v1/flows")
async def save_flow(request: web.Request) -> web.Response:
    invocations = request.app[INVOCATIONS]
    flow, created = await invocations.save(tenant_of(request), await read_submission(request))
    body = {**invocations.describe(flow), "created": created}
    return web.json_response(body, status=201 if created else 200)


@routes.get("/api/v1/flows")
async def list_flows(request: web.Request) -> web.Response:
    flows = await request.app[INVOCATIONS].list(tenant_of(request), request.query.get("name"))
    return web.json_response({"flows": [f.summary() for f in flows]})


@routes.get("/api/v1/flows/{ref}")
async def get_flow(request: web.Request) -> web.Response:
    invocations = request.app[INVOCATIONS]
    flow = await find_flow(request, request.match_info["ref"])
    body = {
        **invocations.describe(flow),
        "configs": await invocations.configs(flow),
        **flow.submission.model_dump(mode="json", exclude_none=True),
    }
    return web.json_response(body)


@routes.delete("/api/v1/flows/{ref}")
async def delete_flow(request: web.Request) -> web.Response:
    flow = await find_flow(request, request.match_info["ref"])
    await request.app[INVOCATIONS].delete(tenant_of(request), flow.graph_id)
    return web.Response(status=204)


@routes.get("/api/v1/flows/{ref}/configs")
async def list_configs(request: web.Request) -> web.Response:
    flow = await find_flow(request, request.match_info["ref"])
    configs = await request.app[INVOCATIONS].configs(flow)
    return web.json_response({"graph_id": flow.graph_id, "configs": configs})


@routes.get("/api/v1/flows/{ref}/configs/{config_id}")
async def get_config(request: web.Request) -> web.Response:
    flow = await find_flow(request, request.match_info["ref"])
    config_id = request.match_info["config_id"]
    flags = await request.app[INVOCATIONS].config(flow, config_id)
    return web.json_response({"graph_id": flow.graph_id, "config_id": config_id, "flags": flags})


@routes.put("/api/v1/flows/{ref}/configs/{config_id}")
async def put_config(request: web.Request) -> web.Response:
    flow = await find_flow(request, request.match_info["ref"])
    body = await read_object(request)
    if set(body) != {"flags"}:
        raise BodyInvalid("BODY_MALFORMED", 'send {"flags": {node_id: {flag: value}}}')
    config_id = request.match_info["config_id"]
    flags, created = await request.app[INVOCATIONS].put_config(flow, config_id, body["flags"])
    return web.json_response(
        {"graph_id": flow.graph_id, "config_id": config_id, "flags": flags},
        status=201 if created else 200,
    )


@routes.delete("/api/v1/flows/{ref}/configs/{config_id}")
async def delete_config(request: web.Request) -> web.Response:
    flow = await find_flow(request, request.match_info["ref"])
    await request.app[INVOCATIONS].delete_config(flow, request.match_info["config_id"])
    return web.Response(status=204)


__all__ = ["find_flow", "routes", "version_param"]
