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
    FlowInvalid,
    FlowNotFound,
    InputMismatch,
    RunFinished,
    RunNotFound,
)
from orchestrator.invocations import InvalidInvocation
from storage import StoreError

log = structlog.get_logger(__name__)

UNKNOWN_RUN_TEXT = "Flow run does not exist."
# The data directory's path stays in the service's log: callers need not know it.
_KEPT = "Runs already accepted are kept and go on; retry this request later."


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


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RunNotFound:
        return web.Response(status=400, text=UNKNOWN_RUN_TEXT, content_type="text/plain")
    except RunFinished as exc:
        return error_response(409, "RUN_FINISHED", str(exc), run_status=exc.status)
    except FlowInvalid as exc:
        return error_response(
            400,
            "FLOW_INVALID",
            f"the flow is invalid: {len(exc.errors)} problem(s); fix each entry of 'errors'",
            errors=exc.errors,
            warnings=exc.warnings,
        )
    except ValidationError as exc:
        errors = schema_errors(exc)
        return error_response(
            400,
            "FLOW_INVALID",
            f"the request does not match the schema: {len(errors)} problem(s)",
            errors=errors,
        )
    except ArtifactNotFound as exc:
        return error_response(404, "ARTIFACT_NOT_FOUND", str(exc))
    except FlowNotFound as exc:
        return error_response(404, "FLOW_NOT_FOUND", str(exc))
    except InputMismatch as exc:
        return error_response(400, "INPUT_INVALID", str(exc))
    except DataDirFull as exc:
        log.warning("data_dir_refused_write", path=request.path, error=str(exc))
        return error_response(
            507,
            "STORAGE_FULL",
            "the service's data directory is full, so nothing new can be stored: its operator "
            f"must free space there (the service's log names it). {_KEPT}",
        )
    except DataDirUnwritable as exc:
        log.warning("data_dir_refused_write", path=request.path, error=str(exc))
        return error_response(
            503,
            "STORAGE_UNWRITABLE",
            f"the service's data directory refuses writes ({exc.reason}): its operator must "
            f"make it writable again (the service's log says how). {_KEPT}",
        )
    except InvalidInvocation as exc:
        return error_response(exc.status, exc.code, exc.message)
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
    except (StoreError, ConfigError) as exc:
        log.warning("store_error", path=request.path, error=str(exc))
        return error_response(502, "STORE_UNAVAILABLE", str(exc))
    except Exception:
        # The details go to the log, not to the caller.
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
