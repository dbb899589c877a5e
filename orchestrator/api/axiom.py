"""Axiom's invocation API: ``/invocations/v1/flows/invoke`` and ``…/invoke/stream``.

Request ``{graph_id, input, wait?, timeout_seconds?, config_id?}``; answers 202
``{accepted, execution_id}``, with ``wait`` also ``result``. The stream sends
one ``data:`` frame per terminal output as it is produced, then a final frame.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SkipValidation, StrictBool, StrictStr

from orchestrator.api.auth import tenant_of
from orchestrator.api.bodies import answer, read_model
from orchestrator.api.openapi import RUN_START_ERRORS, Answer, operation
from orchestrator.api.resources import SERVICE
from orchestrator.api.sse import HEARTBEAT_SECONDS, open_stream, run_changes, send
from orchestrator.models import FlowRun, RunStatus
from orchestrator.service.executions import (
    MAX_WAIT_SECONDS,
    TIMEOUT_ERROR,
    Outcome,
    failure_message,
    wait_seconds,
)

routes = web.RouteTableDef()


class InvokeRequest(BaseModel):
    """Axiom's invocation body (the seed's fields)."""

    model_config = ConfigDict(extra="forbid")

    graph_id: StrictStr = Field(min_length=1, description="the saved flow to run")
    # Not an object: INPUT_INVALID, from the service layer that every dialect shares.
    input: SkipValidation[dict[str, Any]] = Field(
        description="a JSON object for the entry node (one key per entry edge when it has several)"
    )
    wait: StrictBool = Field(default=False, description="block until the run ends; add result")
    # Checked by wait_seconds first, for its own code (TIMEOUT_INVALID).
    timeout_seconds: SkipValidation[Annotated[float, Field(gt=0, le=MAX_WAIT_SECONDS)] | None] = (
        Field(default=None, description="how long wait blocks (or the stream lasts); default 30")
    )
    config_id: StrictStr | None = Field(default=None, description="a config profile of the flow")


class InvokeResult(BaseModel):
    """``result`` with ``wait``: the output, the error, or what is known at the timeout."""

    success: bool
    output: Any = Field(default=None, description="the terminal output, decoded")
    completed_at: int | None = Field(default=None, description="milliseconds since the epoch")
    error: str | None = None
    status: RunStatus | None = Field(
        default=None, description="when the wait ran out: the run's status (it goes on)"
    )


class InvokeAccepted(BaseModel):
    accepted: Literal[True] = True
    execution_id: str = Field(description="the run's id in every dialect (the native ID)")
    result: InvokeResult | None = Field(default=None, description="with wait only")


class Frame(BaseModel):
    """One ``data:`` frame of the stream: an output as it is produced, or the final frame."""

    execution_id: str
    frame_index: int
    payload: Any = Field(default=None, description="a terminal output, decoded")
    edge: str | None = Field(default=None, description="with several terminal edges: whose")
    is_final: bool
    success: bool | None = Field(default=None, description="final frame: whether the run completed")
    error: str | None = Field(default=None, description="final frame: why not")


INVOKE_ERRORS = (
    "FLOW_NOT_FOUND",
    "CONFIG_NOT_FOUND",
    "FLAGS_INVALID",
    "INPUT_INVALID",
    "TIMEOUT_INVALID",
    *RUN_START_ERRORS,
)


async def _start(request: web.Request, *, stream: bool) -> tuple[FlowRun, float, bool]:
    body = await read_model(request, InvokeRequest)
    timeout = wait_seconds(body.timeout_seconds)
    service = request.app[SERVICE]
    tenant = tenant_of(request)
    flow = await service.flows.find(tenant, body.graph_id)
    run = await service.executions.start(tenant, flow, body.input, config_id=body.config_id)
    return run, timeout, body.wait and not stream


def result_of(outcome: Outcome) -> InvokeResult:
    if outcome.success:
        completed = outcome.completed_at
        return InvokeResult(
            success=True,
            output=outcome.output,
            completed_at=int(completed.timestamp() * 1000) if completed else None,
        )
    if outcome.finished:
        return InvokeResult(success=False, error=outcome.error)
    # What is known when the wait runs out: the run goes on.
    return InvokeResult(success=False, error=TIMEOUT_ERROR, status=outcome.run.status)


@routes.post("/invocations/v1/flows/invoke")
@operation(
    "Run a saved flow (Axiom)",
    tag="axiom",
    body=InvokeRequest,
    answers={202: Answer("accepted; with wait, the result too", InvokeAccepted)},
    errors=INVOKE_ERRORS,
)
async def invoke(request: web.Request) -> web.Response:
    """A timeout never stops the run: poll or stream its execution_id natively."""
    run, timeout, wait = await _start(request, stream=False)
    body = InvokeAccepted(accepted=True, execution_id=run.id)
    if wait:
        outcome = await request.app[SERVICE].executions.wait(run.id, timeout)
        body.result = result_of(outcome)
    return answer(body, status=202, exclude_unset=True)


@routes.post("/invocations/v1/flows/invoke/stream")
@operation(
    "Run a saved flow, its outputs streamed (Axiom)",
    tag="axiom",
    body=InvokeRequest,
    answers={
        200: Answer(
            "Server-Sent Events, one `data:` line of JSON each: a frame per terminal output "
            "as it is produced (`payload`, `is_final: false`, and `edge` when there are "
            "several), then the final frame (`is_final: true`, `success`, and `error` on "
            "failure or when timeout_seconds runs out); `wait` does not apply",
            events=((None, Frame),),
        )
    },
    errors=INVOKE_ERRORS,
)
async def invoke_stream(request: web.Request) -> web.StreamResponse:
    run, timeout, _ = await _start(request, stream=True)
    service = request.app[SERVICE]
    terminal = await service.runs.terminal_edges(run.id)
    response = await open_stream(request)
    sent: set[str] = set()
    index = 0
    last = run
    unreadable = None
    updates = service.runs.watch(run.id, timeout, heartbeat=HEARTBEAT_SECONDS)
    async for update in run_changes(response, updates):
        last = update.run
        for edge in terminal:
            if edge in sent or edge not in last.artifacts:
                continue
            sent.add(edge)
            # The stream is open: its final frame is the only way left to say it failed.
            payload, unreadable = await service.executions.read_output(run.id, edge)
            if unreadable is not None:
                break
            frame = Frame(execution_id=run.id, frame_index=index, payload=payload, is_final=False)
            if len(terminal) > 1:
                frame.edge = edge
            await send(response, frame.model_dump(mode="json", exclude_unset=True))
            index += 1
        if unreadable:
            break
    final = Frame(execution_id=run.id, frame_index=index, is_final=True)
    if unreadable:
        final.success, final.error = False, unreadable
    elif last.status.finished:
        final.success = last.status == RunStatus.COMPLETE
        if not final.success:
            final.error = failure_message(last)
    else:
        final.success, final.error = False, TIMEOUT_ERROR
    await send(response, final.model_dump(mode="json", exclude_unset=True))
    await response.write_eof()
    return response


__all__ = ["Frame", "InvokeAccepted", "InvokeRequest", "InvokeResult", "result_of", "routes"]
