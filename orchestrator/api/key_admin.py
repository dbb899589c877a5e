"""Key management over HTTP, for admin keys: ``/api/v1/keys``.

The same operations as ``pipewell keys``. With auth off (loopback only) any
local caller may use them, as any local user may run the CLI.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from orchestrator.api.auth import require_admin
from orchestrator.api.bodies import answer, read_model
from orchestrator.api.openapi import STORAGE_ERRORS, Answer, operation
from orchestrator.api.resources import DATABASE, KEYS
from orchestrator.models import DEFAULT_TENANT, NAME_PATTERN, NAME_RULE

routes = web.RouteTableDef()


class KeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Checked by the key store (KEY_INVALID); declared here for generated clients.
    name: StrictStr = Field(
        description="1 to 100 characters, unique",
        json_schema_extra={"minLength": 1, "maxLength": 100, "pattern": "\\S"},
    )
    tenant: StrictStr = Field(
        default=DEFAULT_TENANT,
        description=f"a name: {NAME_RULE}",
        json_schema_extra={"pattern": f"^{NAME_PATTERN.pattern}$"},
    )
    admin: StrictBool = Field(default=False, description="may manage keys over HTTP")


class KeyRecord(BaseModel):
    """A key as listed: never the raw key."""

    name: str
    tenant: str
    masked: str = Field(description="its first 8 and last 4 characters")
    admin: bool
    created_at: str
    last_used: str | None
    revoked: bool


class KeyList(BaseModel):
    keys: list[KeyRecord]


class NewKey(KeyRecord):
    key: str = Field(description="the raw key (64 hex characters), shown this once")


@routes.get("/api/v1/keys")
@operation(
    "Every API key",
    tag="keys",
    answers={200: Answer("the keys, masked", KeyList)},
    errors=("FORBIDDEN",),
)
async def list_keys(request: web.Request) -> web.Response:
    """For admin keys; with auth off, for any local caller."""
    require_admin(request, "managing keys")
    keys = await request.app[DATABASE].run(request.app[KEYS].list)
    return answer(KeyList(keys=[KeyRecord(**k.public()) for k in keys]))


@routes.post("/api/v1/keys")
@operation(
    "Create an API key",
    tag="keys",
    body=KeyRequest,
    answers={201: Answer("the key's record and the raw key, shown this once", NewKey)},
    errors=("FORBIDDEN", "API_KEY_INVALID", "API_KEY_EXISTS", *STORAGE_ERRORS),
)
async def create_key(request: web.Request) -> web.Response:
    """For admin keys; with auth off, for any local caller."""
    require_admin(request, "managing keys")
    body = await read_model(request, KeyRequest)
    store = request.app[KEYS]
    raw = await request.app[DATABASE].run(store.create, body.name, body.tenant, admin=body.admin)
    info = await request.app[DATABASE].run(store.get, body.name)
    return answer(NewKey(**info.public(), key=raw), status=201)


@routes.delete("/api/v1/keys/{name}")
@operation(
    "Revoke an API key",
    tag="keys",
    params={"name": "the key's name"},
    answers={204: Answer("revoked: the key is refused from its next use")},
    errors=("FORBIDDEN", "API_KEY_NOT_FOUND", *STORAGE_ERRORS),
)
async def revoke_key(request: web.Request) -> web.Response:
    require_admin(request, "managing keys")
    await request.app[DATABASE].run(request.app[KEYS].revoke, request.match_info["name"])
    return web.Response(status=204)


__all__ = ["KeyList", "KeyRequest", "NewKey", "routes"]
