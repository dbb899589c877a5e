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
from typing import Any

import structlog
from aiohttp import web

from orchestrator.api.auth import tenant_of
from orchestrator.api.bodies import JSON_TYPES, read_object
from orchestrator.api.errors import error_response
from orchestrator.api.flows import find_flow
from orchestrator.api.resources import INVOCATIONS, SETTINGS
from orchestrator.api.sse import HEARTBEAT_SECONDS, open_stream
from orchestrator.errors import BodyInvalid
from orchestrator.invocations import TIMEOUT_ERROR, Invocations, Outcome, text_of
from orchestrator.models import FlowRun, utcnow
from orchestrator.registry import SavedFlow

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()
FIELDS = (
    "input_value",
    "message",  # the spelling of the seed's streaming example
    "input_type",
    "output_type",
    "output_component",
    "tweaks",
    "session_id",
    "stream",  # the SDK's stream() sends it in the body: it turns streaming on here
)
CHUNK_CHARACTERS = 512


async def _start(
    request: web.Request,
) -> tuple[SavedFlow, FlowRun, dict[str, Any], list[str] | None, bool]:
    """The flow (404 before any body problem, as Langflow), the started run, the echoed
    fields, the edges to answer with, and whether to stream."""
    flow = await find_flow(request, request.match_info["flow_id"])
    body = await read_object(request, empty_ok=True)
    ignored = sorted(set(body) - set(FIELDS))
    if ignored:
        # Langflow ignores body fields it does not use; its SDK sends some (stream).
        log.debug("langflow_fields_ignored", fields=ignored)
    text = body.get("input_value", body.get("message"))
    if text is not None and not isinstance(text, str):
        raise BodyInvalid("BODY_MALFORMED", "input_value must be a string")
    session = body.get("session_id")
    if session is not None and not isinstance(session, str):
        raise BodyInvalid("BODY_MALFORMED", "session_id must be a string")
    streamed = body.get("stream", False)
    if not isinstance(streamed, bool):
        raise BodyInvalid("BODY_MALFORMED", "stream must be true or false")
    edges = Invocations.node_outputs(
        flow, body.get("output_component") or None, field="output_component"
    )
    input_value = {"text": text} if text is not None else {}
    run = await request.app[INVOCATIONS].start(
        tenant_of(request), flow, input_value, flags=body.get("tweaks"), flags_field="tweaks"
    )
    stream = streamed or request.query.get("stream", "").lower() in ("true", "1")
    return flow, run, {"text": text, "session_id": session or run.id}, edges, stream


def _message(flow: SavedFlow, run: FlowRun, session: str, text: str, node: str) -> dict[str, Any]:
    return {
        "text": text,
        "sender": "Machine",
        "sender_name": "AI",
        "session_id": session,
        "timestamp": (run.finished_at or utcnow()).isoformat(timespec="seconds"),
        "flow_id": flow.graph_id,
        "properties": {"source": {"id": node, "display_name": node, "source": flow.name}},
        "component_id": node,
    }


def _producer(flow: SavedFlow, edge: str) -> str:
    return next(n.id for n in flow.submission.flow.nodes if any(o.edge == edge for o in n.outputs))


@routes.post("/api/v1/run/{flow_id}")
async def run_flow(request: web.Request) -> web.StreamResponse:
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
    return web.json_response(_run_response(flow, outcome, fields))


def _run_response(flow: SavedFlow, outcome: Outcome, fields: dict[str, Any]) -> dict[str, Any]:
    """Langflow's run response: the sync answer, and the ``result`` of the stream's ``end``."""
    session = fields["session_id"]
    outputs = [
        {
            "results": {
                "message": _message(
                    flow, outcome.run, session, text_of(output), _producer(flow, edge)
                )
            },
            "artifacts": {"edge": edge},
        }
        for edge, output in outcome.outputs.items()
    ]
    return {
        "session_id": session,
        "outputs": [{"inputs": {"input_value": fields["text"]}, "outputs": outputs}],
        "execution_id": outcome.run.id,
    }


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
        await line("end", {"result": _run_response(flow, outcome, fields)})
    else:
        error = outcome.error if outcome.finished else TIMEOUT_ERROR
        await line("error", {"error": error, "execution_id": run.id})
        await line("end", {"result": {"session_id": session, "message": "", "error": error}})
    await response.write_eof()
    return response


@routes.post("/api/v1/webhook/{flow_id}")
async def webhook(request: web.Request) -> web.Response:
    """Any body, as Langflow: a JSON object is the input; anything else is ``{"text": body}``."""
    flow = await find_flow(request, request.match_info["flow_id"])
    input_value = await _webhook_input(request)
    run = await request.app[INVOCATIONS].start(tenant_of(request), flow, input_value)
    return web.json_response(
        {
            "message": "Task started in the background",
            "status": "in progress",
            "execution_id": run.id,
        },
        status=202,
    )


async def _webhook_input(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    if request.content_type in JSON_TYPES or request.content_type.endswith("+json"):
        return await read_object(request)
    return {"text": raw.decode("utf-8", errors="replace")}


__all__ = ["routes"]
