"""Key management over HTTP, for admin keys: ``/api/v1/keys``.

The same operations as ``pipewell keys``. With auth off (loopback only) any
local caller may use them, as any local user may run the CLI.
"""

from __future__ import annotations

from aiohttp import web

from orchestrator.api.auth import PRINCIPAL
from orchestrator.api.bodies import read_object
from orchestrator.api.resources import DATABASE, KEYS
from orchestrator.errors import BodyInvalid, Forbidden
from orchestrator.models import DEFAULT_TENANT

routes = web.RouteTableDef()


def _require_admin(request: web.Request) -> None:
    principal = request.get(PRINCIPAL)
    if principal is not None and not principal.admin:
        raise Forbidden(
            "FORBIDDEN", "managing keys needs an admin key (pipewell keys create --admin)"
        )


@routes.get("/api/v1/keys")
async def list_keys(request: web.Request) -> web.Response:
    _require_admin(request)
    keys = await request.app[DATABASE].run(request.app[KEYS].list)
    return web.json_response({"keys": [k.public() for k in keys]})


@routes.post("/api/v1/keys")
async def create_key(request: web.Request) -> web.Response:
    _require_admin(request)
    body = await read_object(request)
    unknown = set(body) - {"name", "tenant", "admin"}
    name, tenant, admin = body.get("name"), body.get("tenant", DEFAULT_TENANT), body.get("admin")
    if unknown or not isinstance(name, str) or not isinstance(tenant, str):
        raise BodyInvalid(
            "BODY_MALFORMED", 'send {"name": "...", "tenant": "..." (optional), "admin": false}'
        )
    store = request.app[KEYS]
    raw = await request.app[DATABASE].run(store.create, name, tenant, admin=bool(admin))
    info = await request.app[DATABASE].run(store.get, name)
    return web.json_response({**info.public(), "key": raw}, status=201)


@routes.delete("/api/v1/keys/{name}")
async def revoke_key(request: web.Request) -> web.Response:
    _require_admin(request)
    await request.app[DATABASE].run(request.app[KEYS].revoke, request.match_info["name"])
    return web.Response(status=204)


__all__ = ["routes"]
