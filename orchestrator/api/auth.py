"""API-key authentication for every endpoint but /healthz, the presigned object URLs,
and the handlers marked ``no_key_needed``: the API's documentation (``/openapi.json``,
``/docs``) and the web UI's static pages, which hold no tenant's data.

Accepted: ``Authorization: Bearer KEY``, ``x-api-key: KEY``, ``Authorization:
Basic KEY`` (Scade's form) and HTTP Basic with KEY as the password; on
Langflow's endpoints also ``?x-api-key=KEY``, as Langflow takes it (webhook
callers often can set no header). Missing,
unknown or revoked keys get 401 ``{"error":"unauthorized"}`` (the body the
seeds fix).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Literal

from aiohttp import web
from pydantic import BaseModel

from orchestrator.api.resources import DATABASE, KEYS
from orchestrator.api_key_store import Principal
from orchestrator.errors import Forbidden
from orchestrator.models import DEFAULT_TENANT

TENANT = web.RequestKey("tenant", str)
PRINCIPAL = web.RequestKey("principal", Principal)
OPEN_PATHS = ("/healthz",)
# Presigned URLs carry their own signature; keys are not asked there.
OPEN_PREFIXES = ("/objects/",)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


#: Set on handlers that answer nothing of any tenant's: the API's documentation, the
#: web UI's pages and their files.
_NO_KEY = "_pipewell_no_key_needed"


def no_key_needed(handler: Handler) -> Handler:
    """Let ``handler`` answer without a key: a browser opening a page sends no header.

    The mark is on the matched route's handler rather than on a path prefix, so no
    spelling of a path reaches an API endpoint without a key.
    """
    setattr(handler, _NO_KEY, True)
    return handler


def is_public(path: str, handler: object) -> bool:
    """Whether a request needs no key: the open paths, and handlers marked no_key_needed."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES) or getattr(handler, _NO_KEY, False)


class Unauthorized(BaseModel):
    """The 401 body the seeds fix: no ``code``, unlike every other error."""

    error: Literal["unauthorized"] = "unauthorized"


def tenant_of(request: web.Request) -> str:
    return request.get(TENANT, DEFAULT_TENANT)


def require_admin(request: web.Request, what: str) -> None:
    """Forbidden unless the caller's key is an admin key (with auth off, any local caller)."""
    principal = request.get(PRINCIPAL)
    if principal is not None and not principal.admin:
        raise Forbidden("FORBIDDEN", f"{what} needs an admin key (pipewell keys create --admin)")


#: Paths whose callers may put the key in the URL, as Langflow allows.
QUERY_KEY_PREFIXES = ("/api/v1/run/", "/api/v1/webhook/")


def presented_key(request: web.Request) -> str | None:
    if key := request.headers.get("x-api-key"):
        return key.strip()
    if request.path.startswith(QUERY_KEY_PREFIXES) and (key := request.query.get("x-api-key")):
        return key.strip()
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token:
        return token
    if scheme.lower() == "basic" and token:
        try:
            user, sep, password = base64.b64decode(token, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return token  # Scade sends the raw key after "Basic"
        if sep:
            return password or user
        return token
    return None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if is_public(request.path, request.match_info.handler):
        return await handler(request)
    raw = presented_key(request)
    principal = None
    if raw:
        principal = await request.app[DATABASE].run(request.app[KEYS].authenticate, raw)
    if principal is None:
        return web.json_response(text=Unauthorized().model_dump_json(), status=401)
    request[PRINCIPAL] = principal
    request[TENANT] = principal.tenant
    return await handler(request)


__all__ = [
    "PRINCIPAL",
    "QUERY_KEY_PREFIXES",
    "TENANT",
    "Unauthorized",
    "auth_middleware",
    "is_public",
    "no_key_needed",
    "presented_key",
    "tenant_of",
]
