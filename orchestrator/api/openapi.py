"""The OpenAPI 3.1 document of every endpoint, generated from the handlers' own models.

Each handler says what it takes and answers with ``@operation(...)`` right
under its route: the pydantic models it parses its body with and shapes its
answer with, its query parameters, and the error codes it can answer. The
document is built from the application's router, so an endpoint appears with
the method and path it is really served at, and its schemas are those models'
JSON Schemas (``model_json_schema``'s, with ``#/components/schemas/{model}``
references): the documentation cannot drift from the code. A test fails for
any route without an ``@operation``.

Security follows the service's settings: with ``auth: required`` every
operation but the public ones (``/healthz``, the docs, the presigned object
URLs) asks for a key, and may answer 401; without auth nothing does.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from orchestrator.api.auth import QUERY_KEY_PREFIXES, Unauthorized, is_public
from orchestrator.api.errors import UNKNOWN_RUN_TEXT, ErrorBody
from orchestrator.config import Settings

REF_TEMPLATE = "#/components/schemas/{model}"
OPENAPI_VERSION = "3.1.0"

#: The status of every error code (the catalog of docs/api.md; a test holds them equal).
CODES: dict[str, int] = {
    "BODY_MALFORMED": 400,
    "CONTENT_TYPE_UNSUPPORTED": 415,
    "ORIGIN_FORBIDDEN": 403,
    "HOST_FORBIDDEN": 403,
    "BODY_TOO_LARGE": 413,
    "BODY_TIMEOUT": 408,
    "FILE_TOO_LARGE": 413,
    "FLOW_INVALID": 400,
    "FLOW_NOT_FOUND": 404,
    "VERSION_INVALID": 400,
    "CONFIG_NOT_FOUND": 404,
    "CONFIG_INVALID": 400,
    "FLAGS_INVALID": 400,
    "INPUT_INVALID": 400,
    "TIMEOUT_INVALID": 400,
    "LIMIT_INVALID": 400,
    "NODE_UNKNOWN": 400,
    "TASK_NOT_FOUND": 404,
    "NODEDEF_NOT_FOUND": 404,
    "RUN_FAILED": 500,
    "RUN_TIMEOUT": 504,
    "RUN_FINISHED": 409,
    "ARTIFACT_NOT_FOUND": 404,
    "FORBIDDEN": 403,
    "API_KEY_INVALID": 400,
    "API_KEY_EXISTS": 409,
    "API_KEY_NOT_FOUND": 404,
    "URL_INVALID": 403,
    "STORE_NOT_FOUND": 404,
    "KEY_INVALID": 400,
    "KEY_CONFLICT": 409,
    "OBJECT_EXISTS": 409,
    "OBJECT_NOT_FOUND": 404,
    "EXPECTATION_FAILED": 417,
    "STORE_UNAVAILABLE": 502,
    "STORAGE_FULL": 507,
    "STORAGE_UNWRITABLE": 503,
    "ROUTE_NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "INTERNAL_ERROR": 500,
}
#: The native API's unknown run: plain text, as the Pupload seed fixes it.
RUN_NOT_FOUND = "RUN_NOT_FOUND"
#: aiohttp's own answer to a request its HTTP parser cannot read (a request line or a
#: header over 8190 bytes, malformed HTTP): plain text, before any code of ours runs, so
#: it cannot be our JSON. Any operation may meet it.
HTTP_UNREADABLE = "HTTP_UNREADABLE"
#: The answers in plain text, and what each is.
TEXT_ANSWERS = {
    RUN_NOT_FOUND: f"`{UNKNOWN_RUN_TEXT}` (text: an unknown run, or another tenant's)",
    HTTP_UNREADABLE: "a request line or header over 8190 bytes, or malformed HTTP (text, "
    "from the HTTP server before any endpoint)",
}
#: A write of the data directory's database that failed: any request that stores something.
STORAGE_ERRORS = ("STORAGE_FULL", "STORAGE_UNWRITABLE")

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer KEY"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
    "basic": {
        "type": "http",
        "scheme": "basic",
        "description": "HTTP Basic with the key as password; `Authorization: Basic KEY` "
        "(the raw key, Scade's form) works too",
    },
    "queryKey": {
        "type": "apiKey",
        "in": "query",
        "name": "x-api-key",
        "description": "Langflow's endpoints only, as Langflow takes it (webhook senders "
        "often cannot set headers)",
    },
}
HEADER_KEYS: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}, {"basic": []}]


@dataclass(frozen=True)
class Query:
    """A query parameter: its name, its Python type (the schema's source) and what it does."""

    name: str
    type: Any
    description: str
    required: bool = False


@dataclass(frozen=True)
class Answer:
    """One successful answer: a pydantic model (JSON), or a media type and a raw schema."""

    description: str
    model: type[BaseModel] | None = None
    media_types: tuple[str, ...] = ("application/json",)
    schema: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: Other media types the same status may answer with (a stream): type → schema.
    also: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Server-Sent Events: (its ``event:`` name or None, the model of its JSON ``data:``).
    events: tuple[tuple[str | None, type[BaseModel]], ...] = ()


@dataclass(frozen=True)
class Operation:
    """What an endpoint takes and answers, as the document shows it."""

    summary: str
    tag: str
    answers: dict[int, Answer]
    description: str | None = None
    #: The JSON body's model; ``body_media`` names other types it is also read as.
    body: type[BaseModel] | None = None
    body_media: tuple[str, ...] = ()
    #: A body that is not JSON at all (the object store's bytes): media type → schema.
    raw_body: dict[str, dict[str, Any]] | None = None
    body_required: bool = True
    errors: tuple[str, ...] = ()
    query: tuple[Query, ...] = ()
    params: dict[str, str] = field(default_factory=dict)


H = TypeVar("H", bound=Callable[..., Any])
_ATTRIBUTE = "__openapi__"


def operation(
    summary: str, *, tag: str, answers: dict[int, Answer], **fields: Any
) -> Callable[[H], H]:
    """Describe the handler below for the document (its docstring is the description)."""

    def describe(handler: H) -> H:
        setattr(handler, _ATTRIBUTE, Operation(summary, tag, answers, **fields))
        return handler

    return describe


def described(handler: Callable[..., Any]) -> Operation | None:
    return getattr(handler, _ATTRIBUTE, None)


# ---------------------------------------------------------------- the document

TAGS = (
    "native",
    "saved flows",
    "axiom",
    "xpander",
    "scade",
    "langflow",
    "keys",
    "objects",
    "service",
)


def _version() -> str:
    try:
        return version("pipewell")
    except PackageNotFoundError:
        return "0"


def document(app: web.Application, settings: Settings) -> dict[str, Any]:
    """The OpenAPI document of every described route of ``app``.

    HEAD is left out: aiohttp answers it for every GET, with the GET's headers.
    """
    routes = [
        (route.method.lower(), route.resource.canonical, route.handler, described(route.handler))
        for route in app.router.routes()
        if route.resource is not None
        and route.method != "HEAD"
        and described(route.handler) is not None
    ]
    schemas, refs = _components(op for *_, op in routes if op is not None)
    paths: dict[str, dict[str, Any]] = {}
    for method, path, handler, op in sorted(routes, key=lambda r: (r[1], r[0])):
        assert op is not None
        paths.setdefault(path, {})[method] = _operation(method, path, handler, op, refs, settings)
    doc: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Pipewell",
            "version": _version(),
            "description": "Run flows of containerized processing steps. One engine, several "
            "dialects: the native (Pupload) Flow API, saved flows, Axiom, xpander, Scade and "
            "Langflow. Every error body is `{code, message, ...}` but the 401 "
            '`{"error":"unauthorized"}` and the native unknown run, the text '
            f"`{UNKNOWN_RUN_TEXT}`.",
        },
        # Relative: "Try it out" calls the origin the docs were loaded from.
        "servers": [{"url": "/"}],
        "tags": [{"name": name} for name in TAGS],
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": SECURITY_SCHEMES},
    }
    if settings.auth == "required":
        doc["security"] = HEADER_KEYS
    return doc


ModelRef = tuple[type[BaseModel], str]


def _components(ops: Iterable[Operation]) -> tuple[dict[str, Any], dict[ModelRef, dict[str, str]]]:
    """Every model's JSON Schema under components, and the reference to each (model, mode)."""
    wanted: list[ModelRef] = [(ErrorBody, "serialization"), (Unauthorized, "serialization")]
    for op in ops:
        if op.body is not None:
            wanted.append((op.body, "validation"))
        wanted.extend((a.model, "serialization") for a in op.answers.values() if a.model)
        wanted.extend(
            (model, "serialization") for a in op.answers.values() for _, model in a.events
        )
    unique = list(dict.fromkeys(wanted))
    refs, defs = models_json_schema(unique, ref_template=REF_TEMPLATE)
    return dict(sorted(defs.get("$defs", {}).items())), refs  # type: ignore[return-value]


def _operation(
    method: str,
    path: str,
    handler: Callable[..., Any],
    op: Operation,
    refs: dict[ModelRef, dict[str, str]],
    settings: Settings,
) -> dict[str, Any]:
    module = handler.__module__.rsplit(".", 1)[-1]
    result: dict[str, Any] = {
        "tags": [op.tag],
        "summary": op.summary,
        "operationId": f"{module}_{handler.__name__}",
    }
    description = op.description or inspect.getdoc(handler)
    if description:
        result["description"] = description
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            **({"description": op.params[name]} if name in op.params else {}),
        }
        for name in _path_names(path)
    ]
    parameters += [
        {
            "name": q.name,
            "in": "query",
            "required": q.required,
            "description": q.description,
            "schema": TypeAdapter(q.type).json_schema(ref_template=REF_TEMPLATE),
        }
        for q in op.query
    ]
    if parameters:
        result["parameters"] = parameters
    if op.body is not None:
        schema = refs[(op.body, "validation")]
        media = ("application/json", *op.body_media)
        result["requestBody"] = {
            "required": op.body_required,
            "content": {m: {"schema": schema} for m in media},
        }
    elif op.raw_body is not None:
        result["requestBody"] = {
            "required": op.body_required,
            "content": {m: {"schema": s} for m, s in op.raw_body.items()},
        }
    responses: dict[str, Any] = {}
    for status, answer in sorted(op.answers.items()):
        responses[str(status)] = _answer(answer, refs)
    # The auth middleware's own rule says which paths are open and where a key may be
    # in the query: the document cannot say otherwise.
    public = is_public(path, handler)
    secured = settings.auth == "required" and not public
    has_body = "requestBody" in result
    for status, entry in _errors(method, op, settings, refs, has_body=has_body).items():
        responses.setdefault(str(status), entry)
    if secured:
        responses["401"] = {
            "description": "no API key, or an unknown or revoked one",
            "content": {"application/json": {"schema": refs[(Unauthorized, "serialization")]}},
        }
        if path.startswith(QUERY_KEY_PREFIXES):
            result["security"] = [*HEADER_KEYS, {"queryKey": []}]
    elif settings.auth == "required":
        result["security"] = []
    result["responses"] = dict(sorted(responses.items()))
    return result


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]


def _answer(answer: Answer, refs: dict[ModelRef, dict[str, str]]) -> dict[str, Any]:
    entry: dict[str, Any] = {"description": answer.description}
    if answer.model is not None:
        schema = refs[(answer.model, "serialization")]
        entry["content"] = {m: {"schema": schema} for m in answer.media_types}
    elif answer.schema is not None:
        entry["content"] = {m: {"schema": answer.schema} for m in answer.media_types}
    if answer.also:
        content = entry.setdefault("content", {})
        content.update({m: {"schema": schema} for m, schema in answer.also.items()})
    if answer.events:
        # Before OpenAPI 3.2's itemSchema, an event stream's schema describes one event:
        # its fields as text, the JSON of ``data`` by contentMediaType and contentSchema.
        variants = [_event(name, refs[(model, "serialization")]) for name, model in answer.events]
        schema = variants[0] if len(variants) == 1 else {"oneOf": variants}
        entry.setdefault("content", {})["text/event-stream"] = {"schema": schema}
    if answer.headers:
        entry["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in answer.headers.items()
        }
    return entry


def _event(name: str | None, data: dict[str, str]) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data}
    }
    if name is not None:
        properties["event"] = {"const": name}
    return {
        "type": "object",
        "required": ["data", *(["event"] if name else [])],
        "properties": properties,
    }


def _errors(
    method: str,
    op: Operation,
    settings: Settings,
    refs: dict[ModelRef, dict[str, str]],
    *,
    has_body: bool,
) -> dict[int, Any]:
    """The error answers of an operation: its own codes and those every request may meet."""
    codes = list(op.errors)
    if has_body and op.body is not None:
        codes += ["BODY_MALFORMED", "CONTENT_TYPE_UNSUPPORTED", "BODY_TOO_LARGE", "BODY_TIMEOUT"]
    if not op.tag == "objects":  # presigned URLs are left to their signatures
        if settings.auth == "none":
            codes.append("HOST_FORBIDDEN")
        if method not in ("get", "head"):
            codes.append("ORIGIN_FORBIDDEN")
    codes += ["INTERNAL_ERROR", HTTP_UNREADABLE]
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys(codes):
        by_status.setdefault(400 if code in TEXT_ANSWERS else CODES[code], []).append(code)
    errors: dict[int, Any] = {}
    for status, listed in by_status.items():
        content: dict[str, Any] = {}
        if any(code not in TEXT_ANSWERS for code in listed):
            content["application/json"] = {"schema": refs[(ErrorBody, "serialization")]}
        if RUN_NOT_FOUND in listed:
            text = {"type": "string", "examples": [UNKNOWN_RUN_TEXT]}
            content["text/plain"] = {"schema": text}
        elif HTTP_UNREADABLE in listed:
            content["text/plain"] = {"schema": {"type": "string"}}
        names = ", ".join(TEXT_ANSWERS.get(code, f"`{code}`") for code in listed)
        errors[status] = {"description": names, "content": content}
    return errors


__all__ = [
    "CODES",
    "HTTP_UNREADABLE",
    "RUN_NOT_FOUND",
    "STORAGE_ERRORS",
    "Answer",
    "Operation",
    "Query",
    "described",
    "document",
    "operation",
]
