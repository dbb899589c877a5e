"""Domain errors below, HTTP above: the one error table, and the one middleware that
maps errors to responses by it.

Every error body is JSON ``{"code", "message", ...}``, except the unknown run of
the native API, whose plain-text body the Pupload seed fixes.

:data:`ERRORS` is the one table of error answers: each code, its HTTP status and
when it is answered. The status of every domain and store error is its code's
row's; the OpenAPI document's error responses are made from the rows each
operation names (:mod:`orchestrator.api.openapi`); the error catalog of
``docs/api.md`` is :func:`catalog`'s rendering of it (a test holds the two equal).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.api.resources import SETTINGS
from orchestrator.errors import (
    BodyTimeout,
    ConfigNotFound,
    FlowNotFound,
    Missing,
    NodeDefNotFound,
    PipewellError,
    RunExpired,
    RunNotFound,
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

#: The native API's unknown run: plain text, as the Pupload seed fixes it.
RUN_NOT_FOUND = "RUN_NOT_FOUND"
#: aiohttp's own answer to a request its HTTP parser cannot read (a request line or a
#: header over 8190 bytes, malformed HTTP): plain text, before any code of ours runs, so
#: it cannot be our JSON. Any operation may meet it.
HTTP_UNREADABLE = "HTTP_UNREADABLE"
#: No key, or one the service does not know: the 401 body the seeds fix, without a code.
UNAUTHORIZED = "UNAUTHORIZED"


@dataclass(frozen=True)
class ErrorCode:
    """One row of the error table: a code, its HTTP status, and when it is answered."""

    code: str
    status: int
    #: When it is answered and what to do, in the catalog's words (Markdown).
    when: str
    #: For an answer without a ``code`` (the seeds fix them): how the catalog shows its
    #: body. ``code`` then only names the row, for the operations that list it.
    body: str | None = None
    #: Its body is plain text, not JSON.
    text: bool = False


#: Every error answer, in the order of the catalog of docs/api.md.
ERRORS: tuple[ErrorCode, ...] = (
    ErrorCode(
        "BODY_MALFORMED",
        400,
        "the body is not JSON/YAML, not an object, lacks a required field, has one of the wrong "
        "type (`field` names the first at fault) or has an unknown one (the message lists the "
        "accepted fields), or is out of bounds (aliases, nesting, long integers, NaN: see [Request "
        "bodies](#request-bodies-browsers-and-other-origins))",
    ),
    ErrorCode(
        "CONTENT_TYPE_UNSUPPORTED",
        415,
        "a body sent as a type the endpoint does not take (the message names the ones it takes)",
    ),
    ErrorCode(
        "ORIGIN_FORBIDDEN",
        403,
        "a state-changing request from a web page of an origin not in `allowed_origins`",
    ),
    ErrorCode(
        "HOST_FORBIDDEN",
        403,
        "without auth, a request addressed to a name that is not this service's",
    ),
    ErrorCode(
        "BODY_TOO_LARGE",
        413,
        "over `max_body_bytes` (uploads go to the presigned URLs, which have no limit)",
    ),
    ErrorCode(
        "BODY_TIMEOUT",
        408,
        "no byte of a request body (an upload's too) came for `idle_timeout` (15 s): nothing of it "
        "was kept, send it again",
    ),
    ErrorCode(
        "COLLECTION_INVALID",
        400,
        "an upload to a collection's WaitingURL that cannot become its items: not a zip or tar, "
        "over a limit of `collections` (items, bytes, compression ratio), or two entries that "
        "would be one item; the message names the archive's own code (`ARCHIVE_...`). Nothing "
        "of it was kept: the same URL takes the fixed upload",
    ),
    ErrorCode(
        "COLLECTION_NOT_FOUND",
        404,
        "the run has no collection on that edge (for item PutURLs: none that uploads fill); the "
        "message lists the ones it has",
    ),
    ErrorCode(
        "COLLECTION_CLOSED",
        409,
        "the collection is complete (closed, or filled by its archive) or its run has ended: "
        "no item can be added",
    ),
    ErrorCode(
        "COLLECTION_TOO_LARGE",
        400,
        "a collection filled item by item over `collections` limits: more item names than "
        "`max_items` (10,000), or at close an item over `max_item_bytes` or all over "
        "`max_total_bytes`",
    ),
    ErrorCode(
        "ITEM_NAME_INVALID",
        400,
        "an item name that is not a relative path of letters, digits, `.`, `_` and `-` parts "
        "(the message gives the name it would be)",
    ),
    ErrorCode(
        "NODE_NOT_MAPPED",
        404,
        "the run has no mapped node of that ID; the message lists the ones it has",
    ),
    ErrorCode(
        "STATUS_INVALID",
        400,
        "`status` is not one of IDLE, READY, RUNNING, RETRYING, COMPLETE, ERROR, STOPPED",
    ),
    ErrorCode(
        "FILE_TOO_LARGE",
        413,
        "a file sent as a body of its own (Langflow's upload, a webhook's file) is over "
        "`invocations.max_file_bytes` (1 GiB): nothing of it was kept",
    ),
    ErrorCode(
        "FLOW_INVALID",
        400,
        "validation failed; `errors` lists every problem (`code` such as `NODE_001` or "
        "`SCHEMA_001`, `message`, and the `node`/`edge`/`well`/`store`/`field`), `warnings` too. "
        "`NAME_001`: a name that is not an identifier (see below)",
    ),
    ErrorCode(
        "FLOW_NOT_FOUND",
        404,
        "no saved flow with that graph_id, id, name or version for this tenant (also a deleted "
        "one)",
    ),
    ErrorCode("VERSION_INVALID", 400, "`?version=` is not a positive integer"),
    ErrorCode("CONFIG_NOT_FOUND", 404, "the flow has no config profile with that `config_id`"),
    ErrorCode("CONFIG_INVALID", 400, "a config_id that is empty or longer than 100 characters"),
    ErrorCode(
        "FLAGS_INVALID",
        400,
        "flags, tweaks or node_settings name a node or flag the flow does not have, or a value "
        "that is not a string, number or boolean",
    ),
    ErrorCode(
        "INPUT_INVALID",
        400,
        "the input is not an object, its keys do not match the entry edges, or a file edge got "
        "JSON, a file of a type its nodes do not take, bad base64 or a URL the service did not "
        'give (see "Files as inputs")',
    ),
    ErrorCode("TIMEOUT_INVALID", 400, "`timeout_seconds` is not a number in (0, 3600]"),
    ErrorCode(
        "LIMIT_INVALID",
        400,
        "`limit` of `GET /api/v1/flow/runs` is not a whole number from 1 to 500",
    ),
    ErrorCode(
        "NODE_UNKNOWN",
        400,
        "Scade's start/end/result node id or Langflow's `output_component` is not a node of the "
        "flow",
    ),
    ErrorCode("NODEDEF_NOT_FOUND", 404, "no built-in NodeDef of that Publisher/Name"),
    ErrorCode("TASK_NOT_FOUND", 404, "no Scade task with that id for this tenant"),
    ErrorCode("RUN_FAILED", 500, "Langflow `/run`: the run failed (`detail`, `execution_id`)"),
    ErrorCode(
        "RUN_TIMEOUT",
        504,
        "Langflow `/run`: the run was still going after `invocations.sync_timeout`",
    ),
    ErrorCode(
        "RUN_EXPIRED",
        410,
        "the run existed, and retention deleted it when its lifetime ran out (its flow's "
        "`Lifetime`, else the service's `retention`): its status, logs and objects are gone",
    ),
    ErrorCode(
        "RUN_FINISHED",
        409,
        "cancelling a run that is COMPLETE, ERROR or STOPPED already (`run_status` says which)",
    ),
    ErrorCode(
        "RUN_NOT_ENDED",
        409,
        "retrying a run that is still WAITING or RUNNING (`run_status` says which): wait for "
        "its end, or cancel it first",
    ),
    ErrorCode(
        "ARTIFACT_NOT_FOUND",
        404,
        "the run has no artifact on that edge (yet), or it is gone from its store",
    ),
    ErrorCode(
        "FORBIDDEN",
        403,
        "key management or a sweep (`/api/v1/gc`) with a key that is not an admin key",
    ),
    ErrorCode(
        "API_KEY_INVALID",
        400,
        "a key name that is empty or over 100 characters, or a tenant that is not a name (letters, "
        "digits, `.`, `_`, `-`, at most 128)",
    ),
    ErrorCode("API_KEY_EXISTS", 409, "a key with that name exists"),
    ErrorCode("API_KEY_NOT_FOUND", 404, "no active key with that name to revoke"),
    ErrorCode(
        "URL_INVALID",
        403,
        "a presigned URL that is altered or expired (`expired` says which)",
    ),
    ErrorCode("STORE_NOT_FOUND", 404, "a presigned URL for a local store that does not exist"),
    ErrorCode("KEY_INVALID", 400, "an object key in a presigned URL that is not a valid key"),
    ErrorCode(
        "KEY_CONFLICT",
        409,
        "an object key that is a prefix of another object's, or the reverse",
    ),
    ErrorCode(
        "OBJECT_EXISTS",
        409,
        "a PUT to a WaitingURL whose input was uploaded already (a WaitingURL takes one upload; "
        "submit the flow again to send other bytes)",
    ),
    ErrorCode("OBJECT_NOT_FOUND", 404, "a presigned GET of an object that is not there"),
    ErrorCode("EXPECTATION_FAILED", 417, "an `Expect` header other than `100-continue`"),
    ErrorCode(
        "STORE_UNAVAILABLE",
        502,
        "the object store could not be reached or refused the request",
    ),
    ErrorCode(
        "STORAGE_FULL",
        507,
        "the service's data directory is full: a new run (any dialect), a saved flow, a config "
        "profile, a task, a key or an upload to a presigned URL (not kept: send it again) cannot "
        "be stored. Runs already accepted go on and are written once there is room; retry later. "
        "The service's log names the directory",
    ),
    ErrorCode(
        "STORAGE_LOW",
        507,
        "a new run (any dialect) while the data directory's free space is below "
        "`retention.low_water`: runs already accepted go on, and new ones are taken again "
        "once space is back (`Retry-After` says when to try)",
    ),
    ErrorCode(
        "QUOTA_EXCEEDED",
        429,
        "a new run while the caller's tenant has its most runs accepted and not ended "
        "(`quotas.running` and `quotas.queued`, or its own in `tenants`); nothing was kept: "
        "send it again after `Retry-After` seconds",
    ),
    ErrorCode(
        "QUEUE_FULL",
        429,
        "a new run while a tier it uses has `quotas.queued_per_tier` attempts waiting for a "
        "worker (every tenant's); nothing was kept: send it again after `Retry-After` seconds",
    ),
    ErrorCode(
        "STORAGE_UNWRITABLE",
        503,
        "the data directory refuses writes (made immutable, a read-only filesystem, permissions; "
        "the `message` gives SQLite's reason); as above",
    ),
    ErrorCode("ROUTE_NOT_FOUND", 404, "no endpoint at that path"),
    ErrorCode("METHOD_NOT_ALLOWED", 405, "the path takes other methods (listed, and in `Allow`)"),
    ErrorCode(
        "INTERNAL_ERROR",
        500,
        "a fault of the service; the details are in its log, not in the answer",
    ),
    ErrorCode(
        UNAUTHORIZED,
        401,
        "missing, unknown or revoked API key",
        body='(no code) `{"error":"unauthorized"}`',
    ),
    ErrorCode(
        RUN_NOT_FOUND,
        400,
        "native status, artifact or events of an unknown run (or another tenant's)",
        body=f"(text) `{UNKNOWN_RUN_TEXT}`",
        text=True,
    ),
    ErrorCode(
        HTTP_UNREADABLE,
        400,
        "a request line or a header over 8190 bytes, or malformed HTTP, refused before any "
        "endpoint",
        body="(text) the HTTP server's own",
        text=True,
    ),
)
#: Each row by its code.
TABLE: dict[str, ErrorCode] = {row.code: row for row in ERRORS}
#: The codes of JSON error bodies, and the status of each.
CODES: dict[str, int] = {row.code: row.status for row in ERRORS if row.body is None}


def catalog() -> str:
    """The error catalog's table, as docs/api.md shows it."""
    lines = ["| code | status | when |", "| --- | --- | --- |"]
    for row in ERRORS:
        lines.append(f"| {row.body or f'`{row.code}`'} | {row.status} | {row.when} |")
    return "\n".join(lines) + "\n"


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
    run_status: str | None = Field(
        default=None, description="RUN_FINISHED: how the run ended; RUN_NOT_ENDED: where it is"
    )
    expired: bool | None = Field(default=None, description="URL_INVALID: whether it expired")
    detail: str | None = Field(default=None, description="Langflow's field for the error")
    execution_id: str | None = Field(default=None, description="the run a Langflow error is of")


def error_response(
    code: str,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    """The JSON error answer of ``code``, with the status of its row."""
    body = ErrorBody(code=code, message=message, **extra)
    return web.json_response(
        text=body.model_dump_json(exclude_unset=True), status=CODES[code], headers=headers
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


#: A store's errors, which carry no code of ours: their codes, most specific first.
STORE_CODES: tuple[tuple[type[StoreError], str], ...] = (
    (SignatureInvalid, "URL_INVALID"),
    (InvalidKey, "KEY_INVALID"),
    (ObjectExists, "OBJECT_EXISTS"),
    (KeyConflict, "KEY_CONFLICT"),
    (ObjectNotFound, "OBJECT_NOT_FOUND"),
    (StoreError, "STORE_UNAVAILABLE"),
)

#: Where what there is is listed, for the errors of a thing that is not there: the domain
#: says what is missing and what to do, the API which of its routes lists what exists.
LISTED_AT: tuple[tuple[type[Missing], Callable[[Any], str]], ...] = (
    (FlowNotFound, lambda exc: "GET /api/v1/flows"),
    (NodeDefNotFound, lambda exc: "GET /api/v1/nodedefs"),
    (ConfigNotFound, lambda exc: f"GET /api/v1/flows/{exc.graph_id}/configs"),
)


def code_of(exc: PipewellError | StoreError) -> str:
    """The code ``exc`` is answered with, whose row gives its status."""
    if isinstance(exc, StoreError):
        return next(code for kind, code in STORE_CODES if isinstance(exc, kind))
    return exc.code


def public(exc: PipewellError) -> tuple[str, dict[str, Any]]:
    """What a caller reads of ``exc``: its message (with the route that lists what there
    is, if it names a thing that is not there) and its extra fields."""
    message, extra = exc.public()
    if isinstance(exc, Missing):
        where = next((route(exc) for kind, route in LISTED_AT if isinstance(exc, kind)), None)
        message = exc.said(where)
    return message, extra


def response_for(request: web.Request, exc: Exception) -> web.Response:
    """The answer to a request that raised ``exc`` (aiohttp's HTTPExceptions but the
    four below are raised again, for aiohttp to answer)."""
    if isinstance(exc, RunNotFound) and not isinstance(exc, RunExpired):
        # The seed fixes this answer: plain text.
        status = TABLE[RUN_NOT_FOUND].status
        return web.Response(status=status, text=UNKNOWN_RUN_TEXT, content_type="text/plain")
    # A code without a row is a bug of ours: answered as one, below.
    if isinstance(exc, PipewellError) and exc.code in CODES:
        if CODES[exc.code] >= 500:
            log.warning("request_refused", path=request.path, code=exc.code, error=str(exc))
        message, extra = public(exc)
        retry_after = getattr(exc, "retry_after", None)
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        response = error_response(exc.code, message, headers=headers, **extra)
        if isinstance(exc, BodyTimeout):
            response.force_close()  # the rest of the body would be read as a request
        return response
    if isinstance(exc, StoreError):
        code = code_of(exc)
        if CODES[code] >= 500:
            log.warning("store_error", path=request.path, error=str(exc))
        extra = {"expired": exc.expired} if isinstance(exc, SignatureInvalid) else {}
        return error_response(code, str(exc), **extra)
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return error_response(
            "BODY_TOO_LARGE",
            f"request body over the limit of {request.app[SETTINGS].max_body_bytes} bytes "
            "(max_body_bytes in the configuration)",
        )
    if isinstance(exc, web.HTTPNotFound):
        return error_response(
            "ROUTE_NOT_FOUND",
            f"no endpoint {request.method} {request.path} (see docs/api.md)",
        )
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return error_response(
            "METHOD_NOT_ALLOWED",
            f"{request.path} does not take {request.method}; it takes {allowed}",
            headers={"Allow": allowed},
        )
    if isinstance(exc, web.HTTPException):
        raise exc
    # A bug of ours (a pydantic error included): the details go to the log, not the caller.
    log.error("request_failed", method=request.method, path=request.path, exc_info=exc)
    return error_response("INTERNAL_ERROR", "the service failed on this request; see its log")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Exception as exc:
        return response_for(request, exc)


__all__ = [
    "CODES",
    "ERRORS",
    "HTTP_UNREADABLE",
    "RUN_NOT_FOUND",
    "STORE_CODES",
    "TABLE",
    "UNAUTHORIZED",
    "UNKNOWN_RUN_TEXT",
    "ErrorBody",
    "ErrorCode",
    "catalog",
    "code_of",
    "error_middleware",
    "error_response",
    "public",
    "response_for",
]
