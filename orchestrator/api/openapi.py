"""The OpenAPI 3.1 document of every endpoint, generated from the handlers' own models.

Each handler says what it takes and answers with ``@operation(...)`` right
under its route: the pydantic models it parses its body with and shapes its
answer with, its query parameters, and the error codes it can answer (each a
row of the error table, :data:`orchestrator.api.errors.ERRORS`, which gives it
its status: naming any other fails at import). The
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
from orchestrator.api.errors import (
    CODES,
    ERRORS,
    HTTP_UNREADABLE,
    RUN_NOT_FOUND,
    TABLE,
    UNAUTHORIZED,
    UNKNOWN_RUN_TEXT,
    ErrorBody,
    ErrorCode,
)
from orchestrator.config import Settings

REF_TEMPLATE = "#/components/schemas/{model}"
OPENAPI_VERSION = "3.1.0"


def codes(*names: str) -> tuple[str, ...]:
    """``names``, each the code of a row of the error table: any other fails here, at
    import, rather than leave an operation's answer undocumented."""
    unknown = [name for name in names if name not in TABLE]
    if unknown:
        raise ValueError(
            f"no row of the error table (ERRORS of orchestrator.api.errors) for {unknown}"
        )
    return names


# The groups of codes several operations answer, for the same reason each.
#: A write of the data directory's database that failed: any request that stores something.
STORAGE_ERRORS = codes("STORAGE_FULL", "STORAGE_UNWRITABLE")
#: A saved flow named in the path, at the ``?version=`` given.
FIND_FLOW_ERRORS = codes("FLOW_NOT_FOUND", "VERSION_INVALID")
#: A run started: its flow's stores opened, the run written.
RUN_START_ERRORS = codes(
    "STORE_UNAVAILABLE", "STORAGE_LOW", "QUOTA_EXCEEDED", "QUEUE_FULL", *STORAGE_ERRORS
)
#: A body read into a model: every operation that takes one.
BODY_ERRORS = codes("BODY_MALFORMED", "CONTENT_TYPE_UNSUPPORTED", "BODY_TOO_LARGE", "BODY_TIMEOUT")

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

    def __post_init__(self) -> None:
        codes(*self.errors)


H = TypeVar("H", bound=Callable[..., Any])
_ATTRIBUTE = "__openapi__"


def operation(
    summary: str, *, tag: str, answers: dict[int, Answer], **fields: Any
) -> Callable[[H], H]:
    """Describe the handler below for the document (its docstring is the description)."""
    described_as = Operation(summary, tag, answers, **fields)

    def describe(handler: H) -> H:
        setattr(handler, _ATTRIBUTE, described_as)
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
        unauthorized = TABLE[UNAUTHORIZED]
        responses[str(unauthorized.status)] = {
            "description": unauthorized.when,
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
    named = list(op.errors)
    if RUN_NOT_FOUND in named:  # an ID that was a run of ours, deleted by retention
        named.append("RUN_EXPIRED")
    if has_body and op.body is not None:
        named += BODY_ERRORS
    if not op.tag == "objects":  # presigned URLs are left to their signatures
        if settings.auth == "none":
            named.append("HOST_FORBIDDEN")
        if method not in ("get", "head"):
            named.append("ORIGIN_FORBIDDEN")
    named += ["INTERNAL_ERROR", HTTP_UNREADABLE]
    by_status: dict[int, list[ErrorCode]] = {}
    for row in ERRORS:  # the catalog's order, whatever the operation's
        if row.code in named:
            by_status.setdefault(row.status, []).append(row)
    errors: dict[int, Any] = {}
    for status, listed in by_status.items():
        content: dict[str, Any] = {}
        if any(not row.text for row in listed):
            content["application/json"] = {"schema": refs[(ErrorBody, "serialization")]}
        if TABLE[RUN_NOT_FOUND] in listed:
            text = {"type": "string", "examples": [UNKNOWN_RUN_TEXT]}
            content["text/plain"] = {"schema": text}
        elif any(row.text for row in listed):
            content["text/plain"] = {"schema": {"type": "string"}}
        errors[status] = {"description": _described(listed), "content": content}
    return errors


def _described(rows: list[ErrorCode]) -> str:
    """The codes, then each answer without one with when it is given (a client has no
    code to look up in the catalog)."""
    coded = ", ".join(f"`{row.code}`" for row in rows if row.body is None)
    uncoded = [f"{row.body}: {row.when}" for row in rows if row.body is not None]
    return "; ".join([coded, *uncoded] if coded else uncoded)


__all__ = [
    "BODY_ERRORS",
    "CODES",
    "FIND_FLOW_ERRORS",
    "HTTP_UNREADABLE",
    "RUN_NOT_FOUND",
    "RUN_START_ERRORS",
    "STORAGE_ERRORS",
    "Answer",
    "Operation",
    "Query",
    "codes",
    "described",
    "document",
    "operation",
]
