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
from typing import Any, Literal

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SkipValidation, StrictBool, StrictStr

from orchestrator.api.auth import tenant_of
from orchestrator.api.bodies import JSON_TYPES, answer, read_model, read_object, request_body
from orchestrator.api.errors import error_response
from orchestrator.api.flows import REF, VERSION, FlagsIn, find_flow
from orchestrator.api.openapi import STORAGE_ERRORS, Answer, Query, operation
from orchestrator.api.resources import INVOCATIONS, SETTINGS
from orchestrator.api.sse import HEARTBEAT_SECONDS, open_stream
from orchestrator.invocations import TIMEOUT_ERROR, Invocations, Outcome, text_of
from orchestrator.models import FlowRun, utcnow
from orchestrator.registry import SavedFlow

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
    edges = Invocations.node_outputs(flow, body.output_component or None, field="output_component")
    input_value = {"text": text} if text is not None else {}
    run = await request.app[INVOCATIONS].start(
        tenant_of(request), flow, input_value, flags=body.tweaks, flags_field="tweaks"
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
        "FLOW_NOT_FOUND",
        "VERSION_INVALID",
        "NODE_UNKNOWN",
        "FLAGS_INVALID",
        "INPUT_INVALID",
        "STORE_UNAVAILABLE",
        "RUN_FAILED",
        "RUN_TIMEOUT",
        *STORAGE_ERRORS,
    ),
)
async def run_flow(request: web.Request) -> web.StreamResponse:
    """Waits up to invocations.sync_timeout; the flow is looked up before the body is read."""
    flow, run, fields, edges, stream = await _start(request)
    if stream:
        return await _stream(request, flow, run, fields, edges)
    invocations = request.app[INVOCATIONS]
    timeout = request.app[SETTINGS].invocations.sync_timeout
    outcome = await invocations.wait(run.id, timeout, edges)
    if not outcome.finished:
        return error_response(
            504,
            "RUN_TIMEOUT",
            f"{TIMEOUT_ERROR}; the run goes on: GET /api/v1/flow/status/{run.id}",
            detail=TIMEOUT_ERROR,
            execution_id=run.id,
        )
    if not outcome.success:
        return error_response(
            500, "RUN_FAILED", outcome.error or "", detail=outcome.error, execution_id=run.id
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
    invocations = request.app[INVOCATIONS]
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
    async for update in invocations.watch(run.id, timeout, heartbeat=HEARTBEAT_SECONDS):
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
    outcome = await invocations.outcome(last, edges)
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
    query=(VERSION,),
    raw_body={
        "application/json": {"type": "object", "description": "the input"},
        "text/plain": {"type": "string", "description": 'any other body: {"text": body}'},
    },
    body_required=False,
    answers={202: Answer("started; follow the execution_id natively", WebhookAccepted)},
    errors=(
        "FLOW_NOT_FOUND",
        "VERSION_INVALID",
        "BODY_MALFORMED",
        "INPUT_INVALID",
        "BODY_TOO_LARGE",
        "STORE_UNAVAILABLE",
        *STORAGE_ERRORS,
    ),
)
async def webhook(request: web.Request) -> web.Response:
    """Any body, as Langflow: a JSON object is the input; anything else is ``{"text": body}``."""
    flow = await find_flow(request, request.match_info["flow_id"])
    input_value = await _webhook_input(request)
    run = await request.app[INVOCATIONS].start(tenant_of(request), flow, input_value)
    accepted = WebhookAccepted(
        message="Task started in the background", status="in progress", execution_id=run.id
    )
    return answer(accepted, status=202)


async def _webhook_input(request: web.Request) -> dict[str, Any]:
    raw = await request_body(request)
    if not raw:
        return {}
    if request.content_type in JSON_TYPES or request.content_type.endswith("+json"):
        return await read_object(request)
    return {"text": raw.decode("utf-8", errors="replace")}


__all__ = ["RunRequest", "RunResponse", "WebhookAccepted", "routes"]
