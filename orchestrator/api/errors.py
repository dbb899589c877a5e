"""Domain errors below, HTTP above: the one middleware that maps them to responses.

Every error body is JSON ``{"code", "message", ...}``, except the unknown run of
the native API, whose plain-text body the Pupload seed fixes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from pydantic import ValidationError

from orchestrator.api.resources import SETTINGS
from orchestrator.errors import (
    ArtifactNotFound,
    ConfigError,
    DataDirFull,
    DataDirUnwritable,
    FlowNotFound,
    Forbidden,
    KeyExists,
    NotFound,
    PipewellError,
    RunFinished,
    RunNotFound,
)
from storage import StoreError

log = structlog.get_logger(__name__)

UNKNOWN_RUN_TEXT = "Flow run does not exist."
# The data directory's path stays in the service's log: callers need not know it.


class BadRequest(Exception):
    """A request the API layer refuses before it reaches the engine."""

    def __init__(self, code: str, message: str, status: int = 400, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.extra = extra


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    body = {"code": code, "message": message, **extra}
    return web.json_response(body, status=status, headers=headers)


def schema_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """pydantic's errors as validation entries: where, and what to fix."""
    entries = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        entries.append(
            {"code": "SCHEMA_001", "message": f"{where}: {error['msg']}", "field": where}
        )
    return entries


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


#: The HTTP status of each domain error, most specific first; any other PipewellError is 400.
STATUS: tuple[tuple[type[Exception], int], ...] = (
    (RunFinished, 409),
    (KeyExists, 409),
    (NotFound, 404),
    (ArtifactNotFound, 404),
    (FlowNotFound, 404),
    (Forbidden, 403),
    (DataDirFull, 507),
    (DataDirUnwritable, 503),
    (ConfigError, 502),
    (PipewellError, 400),
)


def status_of(exc: PipewellError) -> int:
    return next(status for kind, status in STATUS if isinstance(exc, kind))


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RunNotFound:
        # The seed fixes this answer: plain text.
        return web.Response(status=400, text=UNKNOWN_RUN_TEXT, content_type="text/plain")
    except PipewellError as exc:
        status = status_of(exc)
        if status >= 500:
            log.warning("request_refused", path=request.path, code=exc.code, error=str(exc))
        message, extra = exc.public()
        return error_response(status, exc.code, message, **extra)
    except BadRequest as exc:
        return error_response(exc.status, exc.code, exc.message, **exc.extra)
    except web.HTTPRequestEntityTooLarge:
        return error_response(
            413,
            "BODY_TOO_LARGE",
            f"request body over the limit of {request.app[SETTINGS].max_body_bytes} bytes "
            "(max_body_bytes in the configuration)",
        )
    except web.HTTPNotFound:
        return error_response(
            404,
            "ROUTE_NOT_FOUND",
            f"no endpoint {request.method} {request.path} (see docs/api.md)",
        )
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        return error_response(
            405,
            "METHOD_NOT_ALLOWED",
            f"{request.path} does not take {request.method}; it takes {allowed}",
            headers={"Allow": allowed},
        )
    except web.HTTPException:
        raise
    except StoreError as exc:
        log.warning("store_error", path=request.path, error=str(exc))
        return error_response(502, "STORE_UNAVAILABLE", str(exc))
    except Exception:
        # A bug of ours (a pydantic error included): the details go to the log, not the caller.
        log.exception("request_failed", method=request.method, path=request.path)
        return error_response(
            500, "INTERNAL_ERROR", "the service failed on this request; see its log"
        )


__all__ = [
    "UNKNOWN_RUN_TEXT",
    "BadRequest",
    "error_middleware",
    "error_response",
    "schema_errors",
]
