"""Langflow's trigger endpoints: ``/api/v1/run/{id}[?stream=true]`` and ``/api/v1/webhook/{id}``.

``input_value`` becomes the input ``{"text": input_value}``; ``tweaks``
(``{node_id: {flag: value}}``) override node Flags; ``session_id`` is echoed
(the execution_id when absent). The run answers Langflow's nested shape with
the output text at ``outputs[0].outputs[0].results.message.text``. The stream
writes Langflow's lines, ``{"event": ..., "data": ...}`` each followed by a
blank line: ``add_message`` (the input, then the reply), ``token`` (node log
lines, then the output in chunks), ``error`` on failure, and ``end``, whose
``result`` is the whole run response (as Langflow's, and langflow-sdk's
``final_response()`` reads it). Streaming is asked for by ``?stream=true`` or,
unlike Langflow, by ``"stream": true`` in the body, which is how langflow-sdk's
``stream()`` asks. Body fields Langflow would ignore are ignored. The webhook
takes any body: a JSON object is the input, anything else ``{"text": body}``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

import structlog
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import BaseModel, ConfigDict, Field, SkipValidation, StrictBool, StrictStr

from orchestrator.api.auth import tenant_of
from orchestrator.api.bodies import JSON_TYPES, answer, read_model, read_object, request_body
from orchestrator.api.errors import error_response
from orchestrator.api.flows import REF, VERSION, FlagsIn, find_flow
from orchestrator.api.openapi import (
    FIND_FLOW_ERRORS,
    RUN_START_ERRORS,
    STORAGE_ERRORS,
    Answer,
    Query,
    operation,
)
from orchestrator.api.resources import SERVICE, SETTINGS
from orchestrator.api.server import arriving
from orchestrator.api.sse import HEARTBEAT_SECONDS, open_stream
from orchestrator.errors import BodyInvalid, ContentTypeUnsupported, InvalidInvocation
from orchestrator.mime import OCTET_STREAM
from orchestrator.models import FlowRun, utcnow
from orchestrator.registry import SavedFlow
from orchestrator.runtime import entry_edges
from orchestrator.service.executions import TIMEOUT_ERROR, Executions, Outcome, text_of
from orchestrator.service.inputs import file_form, takes_json
from orchestrator.service.saved_flows import node_outputs
from orchestrator.validation import resolve_defs

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()
CHUNK_CHARACTERS = 512


class RunRequest(BaseModel):
    """Langflow's run body. Fields Langflow would ignore are ignored here too."""

    model_config = ConfigDict(extra="allow")

    input_value: StrictStr | None = Field(
        default=None, description='the input becomes {"text": input_value}; absent, {}'
    )
    message: StrictStr | None = Field(
        default=None, description="input_value's spelling in the seed's streaming example"
    )
    input_type: StrictStr | None = Field(default=None, description="accepted, not used")
    output_type: StrictStr | None = Field(default=None, description="accepted, not used")
    output_component: StrictStr | None = Field(
        default=None, description="a node id: answer with its outputs, not the terminal ones"
    )
    # Checked by the service layer against the flow's nodes and NodeDefs (FLAGS_INVALID).
    tweaks: SkipValidation[FlagsIn | None] = Field(
        default=None, description="{node_id: {flag: value}}, overriding node Flags"
    )
    session_id: StrictStr | None = Field(
        default=None, description="echoed; the execution_id when absent"
    )
    # langflow-sdk's stream() asks in the body; Langflow itself reads only ?stream=.
    stream: StrictBool = Field(default=False, description="stream, like ?stream=true")


class MessageSource(BaseModel):
    id: str
    display_name: str
    source: str


class MessageProperties(BaseModel):
    source: MessageSource


class Message(BaseModel):
    text: str
    sender: str
    sender_name: str
    session_id: str
    timestamp: str
    flow_id: str
    properties: MessageProperties
    component_id: str


class MessageResults(BaseModel):
    message: Message


class ResultData(BaseModel):
    results: MessageResults
    artifacts: dict[str, str] = Field(description='{"edge": the edge of this output}')


class RunInputs(BaseModel):
    input_value: str | None


class RunOutputs(BaseModel):
    inputs: RunInputs
    outputs: list[ResultData]


class RunResponse(BaseModel):
    """Langflow's run response; the output text is at
    ``outputs[0].outputs[0].results.message.text``."""

    session_id: str
    outputs: list[RunOutputs]
    execution_id: str


class WebhookAccepted(BaseModel):
    message: Literal["Task started in the background"]
    status: Literal["in progress"]
    execution_id: str


FLOW = {"flow_id": REF["ref"]}


async def _start(
    request: web.Request,
) -> tuple[SavedFlow, FlowRun, dict[str, Any], list[str] | None, bool]:
    """The flow (404 before any body problem, as Langflow), the started run, the echoed
    fields, the edges to answer with, and whether to stream."""
    flow = await find_flow(request, request.match_info["flow_id"])
    body = await read_model(request, RunRequest, empty_ok=True)
    if body.model_extra:
        # Langflow ignores body fields it does not use.
        log.debug("langflow_fields_ignored", fields=sorted(body.model_extra))
    text = body.input_value if "input_value" in body.model_fields_set else body.message
    edges = node_outputs(flow, body.output_component or None, field="output_component")
    input_value = {"text": text} if text is not None else {}
    executions = request.app[SERVICE].executions
    files, tweaks = file_tweaks(flow, body.tweaks, entry_edges(flow.submission.flow))
    run = await executions.start(
        tenant_of(request), flow, input_value, flags=tweaks, flags_field="tweaks", files=files
    )
    stream = body.stream or request.query.get("stream", "").lower() in ("true", "1")
    return flow, run, {"text": text, "session_id": body.session_id or run.id}, edges, stream


def _message(flow: SavedFlow, run: FlowRun, session: str, text: str, node: str) -> Message:
    return Message(
        text=text,
        sender="Machine",
        sender_name="AI",
        session_id=session,
        timestamp=(run.finished_at or utcnow()).isoformat(timespec="seconds"),
        flow_id=flow.graph_id,
        properties=MessageProperties(
            source=MessageSource(id=node, display_name=node, source=flow.name)
        ),
        component_id=node,
    )


#: Where Langflow's File and Chat Input components take an uploaded file's path.
FILE_TWEAKS = ("path", "files", "file_path")


def file_tweaks(flow: SavedFlow, tweaks: Any, entry: list[str]) -> tuple[dict[str, Any], Any]:
    """The files among ``tweaks`` (entry edge → its file) and the flag tweaks left.

    Langflow sends an uploaded file's ``file_path`` as a tweak of the component
    that reads it: ``{"File-x": {"path": "…"}}`` or ``{"ChatInput-x": {"files":
    "…"}}``. Here that component is an entry edge, or the node that reads one;
    a name the node declares as a flag stays a flag.
    """
    if not isinstance(tweaks, dict):
        return {}, tweaks
    submission = flow.submission
    defs = resolve_defs(submission, {})
    files: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for key, values in tweaks.items():
        if not isinstance(values, dict):
            rest[key] = values
            continue
        node = next((n for n in submission.flow.nodes if n.id == key), None)
        flags = {f.name for f in defs[key].flags} if node is not None else set()
        named = [k for k in FILE_TWEAKS if k in values and k not in flags]
        if key in entry or (node is not None and named):
            edges = [key] if key in entry else [b.edge for b in node.inputs if b.edge in entry]
            if len(edges) != 1 or len(named) != 1:
                raise InvalidInvocation(
                    "INPUT_INVALID",
                    f'tweaks: {key!r} takes one file, as {{"path": file_path}}; '
                    f"the flow's entry edges are {', '.join(map(repr, entry)) or 'none'}",
                )
            files[edges[0]] = _file_value(values[named[0]], f"tweaks: {key}.{named[0]}")
            left = {k: v for k, v in values.items() if k != named[0]}
            if left and key not in entry:
                rest[key] = left
            continue
        rest[key] = values
    return files, (rest or None) if tweaks else tweaks


def _file_value(value: Any, where: str) -> Any:
    """A tweak's file: a file_path from the upload (or a list of one), a URL or data URL."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str) or not value:
        raise InvalidInvocation("INPUT_INVALID", f"{where} must be one file_path (a string)")
    return value if file_form(value) is not None else {"file_path": value}


class UploadAnswer(BaseModel):
    """Langflow's upload answer: give ``file_path`` back in a run's tweaks."""

    flowId: str = Field(description="the flow's graph_id")  # noqa: N815 - Langflow's name
    file_path: str = Field(
        description='the file, for tweaks: {"<entry edge or node>": {"path": file_path}}'
    )


@routes.post("/api/v1/files/upload/{flow_id}")
@operation(
    "Upload a file for a saved flow's runs (Langflow)",
    tag="langflow",
    params=FLOW,
    query=(VERSION,),
    raw_body={
        "multipart/form-data": {
            "type": "object",
            "properties": {"file": {"type": "string", "format": "binary"}},
            "required": ["file"],
        }
    },
    answers={201: Answer("kept; name its file_path in a run's tweaks", UploadAnswer)},
    errors=(
        *FIND_FLOW_ERRORS,
        "BODY_MALFORMED",
        "CONTENT_TYPE_UNSUPPORTED",
        "FILE_TOO_LARGE",
        "BODY_TIMEOUT",
        "STORE_UNAVAILABLE",
        *STORAGE_ERRORS,
    ),
)
async def upload_file(request: web.Request) -> web.Response:
    """``curl -F file=@photos.zip``, as Langflow's: the file is streamed into the store."""
    flow = await find_flow(request, request.match_info["flow_id"])
    if request.content_type != "multipart/form-data":
        raise ContentTypeUnsupported(
            "this endpoint takes multipart/form-data with the file in a field named 'file' "
            "(curl -F file=@photo.png)"
        )
    settings = request.app[SETTINGS]
    try:
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                raise BodyInvalid("BODY_MALFORMED", "the form has no field named 'file'")
            if isinstance(part, BodyPartReader) and part.name == "file":
                break
            await part.release()
    except (ValueError, HttpProcessingError) as exc:
        raise _unreadable_form(exc) from None
    chunks = arriving(_part_chunks(part), settings.idle_timeout)
    content_type = part.headers.get("Content-Type", OCTET_STREAM)
    file_path = await request.app[SERVICE].executions.upload(
        tenant_of(request), flow, part.filename or "file", chunks, content_type
    )
    return answer(UploadAnswer(flowId=flow.graph_id, file_path=file_path), status=201)


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    try:
        while chunk := await part.read_chunk(1 << 16):
            yield chunk
    except (ValueError, HttpProcessingError) as exc:
        raise _unreadable_form(exc) from None


def _unreadable_form(exc: Exception) -> BodyInvalid:
    # aiohttp's message names the header or boundary at fault; it holds no secret.
    reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return BodyInvalid(
        "BODY_MALFORMED",
        f"the multipart form cannot be read ({reason!s:.200}): send it as curl -F "
        "file=@photo.png does",
    )


def _producer(flow: SavedFlow, edge: str) -> str:
    return next(n.id for n in flow.submission.flow.nodes if any(o.edge == edge for o in n.outputs))


@routes.post("/api/v1/run/{flow_id}")
@operation(
    "Run a saved flow (Langflow)",
    tag="langflow",
    params=FLOW,
    query=(
        Query("stream", bool, "stream Langflow's lines rather than wait for the response"),
        VERSION,
    ),
    body=RunRequest,
    body_required=False,
    answers={
        200: Answer(
            "without stream: the run response, once the run completed. With stream "
            "(`text/event-stream`): Langflow's lines, a JSON object each followed by a blank "
            "line: `add_message` (the input, then the empty reply), `token` (`{chunk, id, "
            "timestamp}`: node log lines, then the output text in chunks), `error` on "
            "failure, and `end` whose `result` is this run response",
            RunResponse,
            # Langflow's lines are no SSE events: there is no event to describe.
            also={"text/event-stream": {"description": "Langflow's JSON lines (above)"}},
        )
    },
    errors=(
        *FIND_FLOW_ERRORS,
        "NODE_UNKNOWN",
        "FLAGS_INVALID",
        "INPUT_INVALID",
        "RUN_FAILED",
        "RUN_TIMEOUT",
        *RUN_START_ERRORS,
    ),
)
async def run_flow(request: web.Request) -> web.StreamResponse:
    """Waits up to invocations.sync_timeout; the flow is looked up before the body is read."""
    flow, run, fields, edges, stream = await _start(request)
    if stream:
        return await _stream(request, flow, run, fields, edges)
    timeout = request.app[SETTINGS].invocations.sync_timeout
    outcome = await request.app[SERVICE].executions.wait(run.id, timeout, edges)
    if not outcome.finished:
        return error_response(
            "RUN_TIMEOUT",
            f"{TIMEOUT_ERROR}; the run goes on: GET /api/v1/flow/status/{run.id}",
            detail=TIMEOUT_ERROR,
            execution_id=run.id,
        )
    if not outcome.success:
        return error_response(
            "RUN_FAILED", outcome.error or "", detail=outcome.error, execution_id=run.id
        )
    return answer(_run_response(flow, outcome, fields))


def _run_response(flow: SavedFlow, outcome: Outcome, fields: dict[str, Any]) -> RunResponse:
    """Langflow's run response: the sync answer, and the ``result`` of the stream's ``end``."""
    session = fields["session_id"]
    outputs = [
        ResultData(
            results=MessageResults(
                message=_message(flow, outcome.run, session, text_of(output), _producer(flow, edge))
            ),
            artifacts={"edge": edge},
        )
        for edge, output in outcome.outputs.items()
    ]
    return RunResponse(
        session_id=session,
        outputs=[RunOutputs(inputs=RunInputs(input_value=fields["text"]), outputs=outputs)],
        execution_id=outcome.run.id,
    )


async def _stream(
    request: web.Request,
    flow: SavedFlow,
    run: FlowRun,
    fields: dict[str, Any],
    edges: list[str] | None,
) -> web.StreamResponse:
    service = request.app[SERVICE]
    session = fields["session_id"]
    response = await open_stream(request)

    async def line(event: str, data: dict[str, Any]) -> None:
        text = json.dumps({"event": event, "data": data}, separators=(", ", ": "))
        await response.write(f"{text}\n\n".encode())

    def stamp() -> str:
        return utcnow().strftime("%Y-%m-%d %H:%M:%S UTC")

    user = {
        "timestamp": utcnow().isoformat(timespec="seconds"),
        "sender": "User",
        "sender_name": "User",
        "session_id": session,
        "text": fields["text"] or "",
        "flow_id": flow.graph_id,
        "id": str(uuid.uuid4()),
        "category": "message",
    }
    await line("add_message", user)
    reply_id = str(uuid.uuid4())
    reply = {**user, "sender": "Machine", "sender_name": "AI", "text": "", "id": reply_id}
    await line("add_message", reply)
    last = run
    replayed = False
    timeout = request.app[SETTINGS].invocations.sync_timeout
    async for update in service.runs.watch(run.id, timeout, heartbeat=HEARTBEAT_SECONDS):
        if update.name == "heartbeat":
            # A blank line: Langflow's line format has no comment; readers skip blank lines.
            await response.write(b"\n")
            continue
        if update.name == "log" and update.line is not None:
            chunk = f"[{update.line['node']}] {update.line['message']}\n"
            await line("token", {"chunk": chunk, "id": reply_id, "timestamp": stamp()})
            continue
        if not replayed:  # lines written before the stream opened
            replayed = True
            for node_id, state in update.run.node_state.items():
                for record in state.logs:
                    chunk = f"[{node_id}] {record.message}\n"
                    await line("token", {"chunk": chunk, "id": reply_id, "timestamp": stamp()})
        last = update.run
    outcome = await service.executions.outcome(last, edges)
    if outcome.success:
        text = text_of(outcome.output)
        for start in range(0, len(text), CHUNK_CHARACTERS):
            piece = text[start : start + CHUNK_CHARACTERS]
            await line("token", {"chunk": piece, "id": reply_id, "timestamp": stamp()})
        await line("end", {"result": _run_response(flow, outcome, fields).model_dump(mode="json")})
    else:
        error = outcome.error if outcome.finished else TIMEOUT_ERROR
        await line("error", {"error": error, "execution_id": run.id})
        await line("end", {"result": {"session_id": session, "message": "", "error": error}})
    await response.write_eof()
    return response


@routes.post("/api/v1/webhook/{flow_id}")
@operation(
    "Start a saved flow from a webhook (Langflow)",
    tag="langflow",
    params=FLOW,
    query=(
        VERSION,
        Query("filename", str, "the name of a file sent as the body (default 'file')"),
    ),
    raw_body={
        "application/json": {"type": "object", "description": "the input"},
        "text/plain": {"type": "string", "description": 'text: {"text": body}'},
        "application/octet-stream": {
            "type": "string",
            "format": "binary",
            "description": "a file (any type but JSON and text), or any body where the "
            "flow's entry edge takes a file: the file",
        },
    },
    body_required=False,
    answers={202: Answer("started; follow the execution_id natively", WebhookAccepted)},
    errors=(
        *FIND_FLOW_ERRORS,
        "BODY_MALFORMED",
        "INPUT_INVALID",
        "BODY_TOO_LARGE",
        "FILE_TOO_LARGE",
        "BODY_TIMEOUT",
        *RUN_START_ERRORS,
    ),
)
async def webhook(request: web.Request) -> web.Response:
    """Any body, as Langflow: a JSON object is the input; a file, where the flow's entry
    edge takes one, is the file; anything else is ``{"text": body}``."""
    flow = await find_flow(request, request.match_info["flow_id"])
    executions = request.app[SERVICE].executions
    files: dict[str, Any] = {}
    edge = _file_entry(executions, flow, request.content_type)
    if edge is not None and request.body_exists:
        settings = request.app[SETTINGS]
        given = request.content_type
        content_type = OCTET_STREAM if given in _NOT_A_TYPE else given
        chunks = arriving(request.content.iter_chunked(1 << 16), settings.idle_timeout)
        name = request.query.get("filename", "file")
        file_path = await executions.upload(tenant_of(request), flow, name, chunks, content_type)
        files[edge] = {"file_path": file_path}
        input_value: dict[str, Any] = {}
    else:
        input_value = await _webhook_input(request)
    run = await executions.start(tenant_of(request), flow, input_value, files=files)
    accepted = WebhookAccepted(
        message="Task started in the background", status="in progress", execution_id=run.id
    )
    return answer(accepted, status=202)


#: What curl --data-binary sends without -H: it says nothing of the bytes.
_NOT_A_TYPE = {"application/x-www-form-urlencoded", ""}


def _file_entry(executions: Executions, flow: SavedFlow, content_type: str) -> str | None:
    """The entry edge a webhook body is the file of: the flow's one entry edge, when its
    nodes do not take JSON, or when the body is neither JSON nor text."""
    entry = entry_edges(flow.submission.flow)
    if len(entry) != 1 or content_type in JSON_TYPES or content_type.endswith("+json"):
        return None
    readers = executions.entry_types(flow).get(entry[0], [])
    binary = not content_type.startswith("text/") and content_type not in _NOT_A_TYPE
    return entry[0] if not takes_json(readers) or binary else None


async def _webhook_input(request: web.Request) -> dict[str, Any]:
    raw = await request_body(request)
    if not raw:
        return {}
    if request.content_type in JSON_TYPES or request.content_type.endswith("+json"):
        return await read_object(request)
    return {"text": raw.decode("utf-8", errors="replace")}


__all__ = ["RunRequest", "RunResponse", "WebhookAccepted", "routes"]
