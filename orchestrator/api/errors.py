"""Domain errors below, HTTP above: the one middleware that maps them to responses.

Every error body is JSON ``{"code", "message", ...}``, except the unknown run of
the native API, whose plain-text body the Pupload seed fixes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.api.resources import SETTINGS
from orchestrator.errors import (
    ArtifactNotFound,
    BodyTimeout,
    ConfigError,
    Conflict,
    ContentTypeUnsupported,
    DataDirFull,
    DataDirUnwritable,
    FileTooLarge,
    FlowNotFound,
    Forbidden,
    NotFound,
    PipewellError,
    RunFinished,
    RunNotFound,
    StoreFull,
)
from orchestrator.validation.results import ValidationEntry
from storage import (
    InvalidKey,
    KeyConflict,
    ObjectExists,
    ObjectNotFound,
    SignatureInvalid,
    StoreError,
)

log = structlog.get_logger(__name__)

UNKNOWN_RUN_TEXT = "Flow run does not exist."
# The data directory's path stays in the service's log: callers need not know it.


class ErrorBody(BaseModel):
    """Every error's body: a stable code, what to fix, and the fields some codes add."""

    model_config = ConfigDict(extra="allow")

    code: str = Field(description="stable: see the error catalog of docs/api.md")
    message: str = Field(description="what went wrong and what to change")
    errors: list[ValidationEntry] | None = Field(
        default=None, description="FLOW_INVALID: every problem of the flow"
    )
    warnings: list[ValidationEntry] | None = Field(
        default=None, description="FLOW_INVALID: what is allowed but probably wrong"
    )
    field: str | None = Field(default=None, description="the request field at fault")
    run_status: str | None = Field(default=None, description="RUN_FINISHED: how the run ended")
    expired: bool | None = Field(default=None, description="URL_INVALID: whether it expired")
    detail: str | None = Field(default=None, description="Langflow's field for the error")
    execution_id: str | None = Field(default=None, description="the run a Langflow error is of")


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    body = ErrorBody(code=code, message=message, **extra)
    return web.json_response(
        text=body.model_dump_json(exclude_unset=True), status=status, headers=headers
    )


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
    (Conflict, 409),
    (NotFound, 404),
    (ArtifactNotFound, 404),
    (FlowNotFound, 404),
    (Forbidden, 403),
    (ContentTypeUnsupported, 415),
    (BodyTimeout, 408),
    (FileTooLarge, 413),
    (DataDirFull, 507),
    (StoreFull, 507),
    (DataDirUnwritable, 503),
    (ConfigError, 502),
    (PipewellError, 400),
)

#: A store's errors, which carry no code of ours: status and code, most specific first.
STORE_STATUS: tuple[tuple[type[StoreError], int, str], ...] = (
    (SignatureInvalid, 403, "URL_INVALID"),
    (InvalidKey, 400, "KEY_INVALID"),
    (ObjectExists, 409, "OBJECT_EXISTS"),
    (KeyConflict, 409, "KEY_CONFLICT"),
    (ObjectNotFound, 404, "OBJECT_NOT_FOUND"),
    (StoreError, 502, "STORE_UNAVAILABLE"),
)


def status_of(exc: PipewellError) -> int:
    return next(status for kind, status in STATUS if isinstance(exc, kind))


def response_for(request: web.Request, exc: Exception) -> web.Response:
    """The answer to a request that raised ``exc`` (aiohttp's HTTPExceptions but the
    four below are raised again, for aiohttp to answer)."""
    if isinstance(exc, RunNotFound):
        # The seed fixes this answer: plain text.
        return web.Response(status=400, text=UNKNOWN_RUN_TEXT, content_type="text/plain")
    if isinstance(exc, PipewellError):
        status = status_of(exc)
        if status >= 500:
            log.warning("request_refused", path=request.path, code=exc.code, error=str(exc))
        message, extra = exc.public()
        response = error_response(status, exc.code, message, **extra)
        if isinstance(exc, BodyTimeout):
            response.force_close()  # the rest of the body would be read as a request
        return response
    if isinstance(exc, StoreError):
        status, code = next((s, c) for kind, s, c in STORE_STATUS if isinstance(exc, kind))
        if status >= 500:
            log.warning("store_error", path=request.path, error=str(exc))
        extra = {"expired": exc.expired} if isinstance(exc, SignatureInvalid) else {}
        return error_response(status, code, str(exc), **extra)
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return error_response(
            413,
            "BODY_TOO_LARGE",
            f"request body over the limit of {request.app[SETTINGS].max_body_bytes} bytes "
            "(max_body_bytes in the configuration)",
        )
    if isinstance(exc, web.HTTPNotFound):
        return error_response(
            404,
            "ROUTE_NOT_FOUND",
            f"no endpoint {request.method} {request.path} (see docs/api.md)",
        )
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return error_response(
            405,
            "METHOD_NOT_ALLOWED",
            f"{request.path} does not take {request.method}; it takes {allowed}",
            headers={"Allow": allowed},
        )
    if isinstance(exc, web.HTTPException):
        raise exc
    # A bug of ours (a pydantic error included): the details go to the log, not the caller.
    log.error("request_failed", method=request.method, path=request.path, exc_info=exc)
    return error_response(500, "INTERNAL_ERROR", "the service failed on this request; see its log")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Exception as exc:
        return response_for(request, exc)


__all__ = [
    "UNKNOWN_RUN_TEXT",
    "ErrorBody",
    "error_middleware",
    "error_response",
    "response_for",
    "schema_errors",
]
