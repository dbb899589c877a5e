"""Request and response bodies: JSON (or YAML), objects, the {Flow, NodeDefs}
submission, bodies read as a pydantic model, and answers shaped by one.

A body is untrusted: it is only read as the content types an endpoint
documents (a browser can send ``text/plain`` across origins without asking
first), its YAML aliases may not expand beyond a bound, its nesting is bounded,
and a large one is parsed off the event loop. Every refusal is a 4xx saying
what to send instead.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import yaml
from aiohttp import web
from pydantic import BaseModel, ValidationError

from orchestrator.api.resources import SETTINGS
from orchestrator.api.server import read_body
from orchestrator.documents import MAX_DEPTH, MAX_YAML_NODES, parse_body, schema_errors
from orchestrator.errors import BodyInvalid, ContentTypeUnsupported, FlowInvalid
from orchestrator.models import FlowSubmission

JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")
#: JSON bodies larger than this (and every YAML one) are parsed in a thread, so other
#: requests go on meanwhile.
PARSE_INLINE_BYTES = 64 * 1024
#: A flow with more nodes than this is checked against the schema off the event loop.
CHECK_INLINE_NODES = 100
# Parsing is CPU-bound: two threads at most, whatever the number of requests.
_parsers = ThreadPoolExecutor(2, thread_name_prefix="pipewell-parse")


def body_kind(request: web.Request, *, yaml_ok: bool) -> str:
    """``json`` or ``yaml`` by the request's Content-Type; 415 for any other type."""
    content_type = request.content_type
    if content_type in JSON_TYPES or (
        content_type.startswith("application/") and content_type.endswith("+json")
    ):
        return "json"
    if yaml_ok and content_type in YAML_TYPES:
        return "yaml"
    accepted = "application/json" + (" or application/yaml" if yaml_ok else "")
    sent = request.headers.get("Content-Type")
    raise ContentTypeUnsupported(
        f"this endpoint takes {accepted}, not "
        + (f"{sent!r}" if sent else "a body without Content-Type")
        + f"; send the header 'Content-Type: {accepted.split(' or ')[0]}'"
    )


#: Where a request keeps its body once read (the stream gives it only once).
_BODY = web.RequestKey("pipewell.body", bytes)


async def request_body(request: web.Request) -> bytes:
    """The whole body: 413 past ``max_body_bytes``, 408 BODY_TIMEOUT when a pause in it
    outlasts ``idle_timeout`` (aiohttp's own ``read`` would wait for ever)."""
    body = request.get(_BODY)
    if body is None:
        settings = request.app[SETTINGS]
        body = request[_BODY] = await read_body(
            request.content.iter_any(), settings.idle_timeout, settings.max_body_bytes
        )
    return body


async def read_json(request: web.Request, *, yaml_ok: bool = False) -> Any:
    """The body as JSON (or YAML when ``yaml_ok`` and sent as YAML), or a 4xx saying why."""
    kind = body_kind(request, yaml_ok=yaml_ok)
    body = await request_body(request)
    try:
        # YAML's parser is pure Python and slow on a hostile document (deep nesting
        # takes a second in 64 KiB): never on the event loop. JSON's is C.
        if kind == "json" and len(body) <= PARSE_INLINE_BYTES:
            return parse_body(body, kind)
        return await asyncio.get_running_loop().run_in_executor(_parsers, parse_body, body, kind)
    except (yaml.YAMLError, ValueError) as exc:
        # UnicodeDecodeError and json's errors are ValueErrors; so are integers over
        # Python's 4,300-digit limit.
        raise BodyInvalid(
            "BODY_MALFORMED", f"request body is not valid {kind.upper()}: {exc}"
        ) from exc


async def read_object(
    request: web.Request, *, empty_ok: bool = False, yaml_ok: bool = False
) -> dict[str, Any]:
    """The body as a JSON object; an empty body is ``{}`` when ``empty_ok``."""
    if empty_ok and not await request_body(request):
        return {}
    body = await read_json(request, yaml_ok=yaml_ok)
    if not isinstance(body, dict):
        raise BodyInvalid("BODY_MALFORMED", "request body must be a JSON object")
    return body


async def read_fields(
    request: web.Request, accepted: tuple[str, ...], *, empty_ok: bool = False
) -> dict[str, Any]:
    """The body as a JSON object with no field outside ``accepted`` (typos surface)."""
    body = await read_object(request, empty_ok=empty_ok)
    unknown = [k for k in body if k not in accepted]
    if unknown:
        raise BodyInvalid(
            "BODY_MALFORMED",
            f"unknown field(s) {', '.join(map(repr, unknown))}; accepted: {', '.join(accepted)}",
        )
    return body


M = TypeVar("M", bound=BaseModel)


async def read_model(request: web.Request, model: type[M], *, empty_ok: bool = False) -> M:
    """The body as a JSON object read as ``model`` (the schema the API's document shows);
    400 ``BODY_MALFORMED`` naming the first field at fault and what it takes."""
    body = await read_object(request, empty_ok=empty_ok)
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        message, where = _first_problem(exc, model)
        raise BodyInvalid("BODY_MALFORMED", message, field=where) from exc


def _first_problem(exc: ValidationError, model: type[BaseModel]) -> tuple[str, str]:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        fields = [f.alias or name for name, f in model.model_fields.items()]
        unknown = [str(e["loc"][0]) for e in exc.errors() if e["type"] == "extra_forbidden"]
        message = f"unknown field(s) {', '.join(map(repr, unknown))}; accepted: {', '.join(fields)}"
        return message, unknown[0]
    if error["type"] == "missing" and len(error["loc"]) == 1:
        info = model.model_fields.get(where)
        hint = f": {info.description}" if info is not None and info.description else ""
        return f"{where} is required{hint}", where
    return f"{where}: {error['msg']}", where


def answer(
    body: BaseModel, *, status: int = 200, exclude_unset: bool = False, exclude_none: bool = False
) -> web.Response:
    """A JSON answer shaped by a model of the API's document."""
    text = body.model_dump_json(exclude_unset=exclude_unset, exclude_none=exclude_none)
    return web.json_response(text=text, status=status)


def answer_json(data: bytes, *, status: int = 200) -> web.Response:
    """JSON made already (a run's cached FlowRun): the same answer as ``answer``."""
    return web.Response(body=data, status=status, content_type="application/json", charset="utf-8")


async def read_submission(request: web.Request) -> FlowSubmission:
    """``{Flow, NodeDefs}`` as JSON or YAML; a bare Flow (``Name`` and ``Nodes`` at the
    top, no ``Flow``) is ``{Flow: body, NodeDefs: []}``, as ``pipewell validate`` reads a
    flow file: the same file is taken by the CLI and the API."""
    body = await read_json(request, yaml_ok=True)
    if not isinstance(body, dict):
        raise BodyInvalid(
            "BODY_MALFORMED",
            "request body must be an object: {Flow, NodeDefs}, or a bare Flow {Name, Nodes}",
        )
    if "Flow" not in body:
        if "NodeDefs" in body:
            raise BodyInvalid(
                "BODY_MALFORMED",
                "request body has NodeDefs but no 'Flow': send {Flow: {Name, Nodes}, NodeDefs}",
            )
        if "Name" not in body or "Nodes" not in body:
            raise BodyInvalid(
                "BODY_MALFORMED",
                "request body has no 'Flow': send {Flow, NodeDefs}, or a bare Flow with "
                "Name and Nodes",
            )
        body = {"Flow": body, "NodeDefs": []}
    try:
        nodes = body["Flow"].get("Nodes") if isinstance(body["Flow"], dict) else None
        if not isinstance(nodes, list) or len(nodes) <= CHECK_INLINE_NODES:
            return FlowSubmission.model_validate(body)
        # A 10,000-node flow takes 0.1 s to check: not on the event loop.
        return await asyncio.get_running_loop().run_in_executor(
            _parsers, FlowSubmission.model_validate, body
        )
    except ValidationError as exc:
        # Request validation is converted here, where the request is parsed: a pydantic
        # error anywhere else is a bug of ours, and answers 500.
        raise FlowInvalid(schema_errors(exc)) from exc


__all__ = [
    "MAX_DEPTH",
    "MAX_YAML_NODES",
    "answer",
    "answer_json",
    "body_kind",
    "parse_body",
    "read_fields",
    "read_json",
    "read_model",
    "read_object",
    "read_submission",
]
