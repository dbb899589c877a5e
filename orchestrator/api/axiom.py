"""Axiom's invocation API: ``/invocations/v1/flows/invoke`` and ``…/invoke/stream``.

Request ``{graph_id, input, wait?, timeout_seconds?, config_id?}``; answers 202
``{accepted, execution_id}``, with ``wait`` also ``result``. The stream sends
one ``data:`` frame per terminal output as it is produced, then a final frame.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from orchestrator.api.auth import tenant_of
from orchestrator.api.bodies import read_fields
from orchestrator.api.resources import INVOCATIONS
from orchestrator.api.sse import HEARTBEAT_SECONDS, open_stream, run_changes, send
from orchestrator.errors import BodyInvalid
from orchestrator.invocations import TIMEOUT_ERROR, Outcome, failure_message, wait_seconds
from orchestrator.models import FlowRun, RunStatus

routes = web.RouteTableDef()
FIELDS = ("graph_id", "input", "wait", "timeout_seconds", "config_id")


async def _start(request: web.Request, *, stream: bool) -> tuple[FlowRun, float, bool]:
    body = await read_fields(request, FIELDS)
    graph_id = body.get("graph_id")
    if not isinstance(graph_id, str) or not graph_id:
        raise BodyInvalid("BODY_MALFORMED", "graph_id is required: the saved flow to run")
    if "input" not in body:
        raise BodyInvalid("BODY_MALFORMED", "input is required: a JSON object for the entry node")
    config_id = body.get("config_id")
    if config_id is not None and not isinstance(config_id, str):
        raise BodyInvalid("BODY_MALFORMED", "config_id must be a string")
    wait = body.get("wait", False)
    if not isinstance(wait, bool):
        raise BodyInvalid("BODY_MALFORMED", "wait must be true or false")
    timeout = wait_seconds(body.get("timeout_seconds"))
    invocations = request.app[INVOCATIONS]
    tenant = tenant_of(request)
    flow = await invocations.find(tenant, graph_id)
    run = await invocations.start(tenant, flow, body["input"], config_id=config_id)
    return run, timeout, wait and not stream


def result_of(outcome: Outcome) -> dict[str, Any]:
    if outcome.success:
        completed = outcome.completed_at
        return {
            "success": True,
            "output": outcome.output,
            "completed_at": int(completed.timestamp() * 1000) if completed else None,
        }
    if outcome.finished:
        return {"success": False, "error": outcome.error}
    # What is known when the wait runs out: the run goes on.
    return {"success": False, "error": TIMEOUT_ERROR, "status": outcome.run.status.value}


@routes.post("/invocations/v1/flows/invoke")
async def invoke(request: web.Request) -> web.Response:
    run, timeout, wait = await _start(request, stream=False)
    body: dict[str, Any] = {"accepted": True, "execution_id": run.id}
    if wait:
        outcome = await request.app[INVOCATIONS].wait(run.id, timeout)
        body["result"] = result_of(outcome)
    return web.json_response(body, status=202)


@routes.post("/invocations/v1/flows/invoke/stream")
async def invoke_stream(request: web.Request) -> web.StreamResponse:
    run, timeout, _ = await _start(request, stream=True)
    invocations = request.app[INVOCATIONS]
    terminal = await request.app[INVOCATIONS].terminal_edges(run.id)
    response = await open_stream(request)
    sent: set[str] = set()
    index = 0
    last = run
    unreadable = None
    updates = invocations.watch(run.id, timeout, heartbeat=HEARTBEAT_SECONDS)
    async for update in run_changes(response, updates):
        last = update.run
        for edge in terminal:
            if edge in sent or edge not in last.artifacts:
                continue
            sent.add(edge)
            # The stream is open: its final frame is the only way left to say it failed.
            payload, unreadable = await invocations.read_output(run.id, edge)
            if unreadable is not None:
                break
            frame: dict[str, Any] = {
                "execution_id": run.id,
                "frame_index": index,
                "payload": payload,
                "is_final": False,
            }
            if len(terminal) > 1:
                frame["edge"] = edge
            await send(response, frame)
            index += 1
        if unreadable:
            break
    final: dict[str, Any] = {"execution_id": run.id, "frame_index": index, "is_final": True}
    if unreadable:
        final.update(success=False, error=unreadable)
    elif last.status.finished:
        final["success"] = last.status == RunStatus.COMPLETE
        if not final["success"]:
            final["error"] = failure_message(last)
    else:
        final.update(success=False, error=TIMEOUT_ERROR)
    await send(response, final)
    await response.write_eof()
    return response


__all__ = ["result_of", "routes"]
