"""xpander's workflow API: ``/v1/workflows/{id}/invoke`` and ``…/invoke/stream``.

The id is a saved flow's graph_id, integer id or name; ``?version=N`` picks a
version of a name. The body is ``{"input": {...}, "id"?: ...}``; ``input`` is
the invocation input. Both answer with xpander's task record, its ``id`` being
the execution_id; the stream sends ``task_created``, a ``task_updated`` whenever
the run or one of its nodes changes state, and ends with ``task_finished``: the
seed names the events TaskCreated … TaskFinished, and those are the names of
xpander-sdk's enum members; on the wire its values are lower case, and its
``TaskUpdateEvent`` parses only those. Records carry ``input`` (as given) and
``result`` as a string (the output's text, or its JSON), as the SDK's ``Task``
has them. Body fields xpander documents and Pipewell does not use
(``think_mode``, ``output_format``, …) are ignored, as xpander ignores what it
does not use.
"""

from __future__ import annotations

from typing import Any, Literal

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SkipValidation, StrictStr

from orchestrator.api.auth import tenant_of
from orchestrator.api.bodies import answer, read_model
from orchestrator.api.flows import REF, VERSION, find_flow
from orchestrator.api.openapi import FIND_FLOW_ERRORS, RUN_START_ERRORS, Answer, operation
from orchestrator.api.resources import SERVICE, SETTINGS
from orchestrator.api.sse import HEARTBEAT_SECONDS, open_stream, run_changes, send
from orchestrator.errors import InvalidInvocation
from orchestrator.models import FlowRun, NodeStatus, RunStatus, utcnow
from orchestrator.registry import SavedFlow
from orchestrator.runtime import entry_edges
from orchestrator.service.executions import TIMEOUT_ERROR, Executions, Outcome, text_of
from orchestrator.service.inputs import takes_only_json

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()


class WorkflowInvoke(BaseModel):
    """xpander's invocation body; its other fields (think_mode, output_format, …) are
    accepted and ignored, as xpander ignores what it does not use."""

    model_config = ConfigDict(extra="allow")

    # Not an object: INPUT_INVALID, from the service layer that every dialect shares.
    input: SkipValidation[dict[str, Any]] = Field(
        description='the invocation input, e.g. {"text": "..."}; `files` (URLs the service '
        "gave for your objects, or data URLs) fill the flow's entry edges that take files"
    )
    id: StrictStr | None = Field(
        default=None, description="xpander's conversation id: accepted, not used"
    )


TaskStatus = Literal["pending", "executing", "completed", "failed", "stopped"]


class Task(BaseModel):
    """xpander's task record (what xpander-sdk's ``Task`` parses)."""

    id: str = Field(description="the execution_id")
    agent_id: str = Field(description="the flow's graph_id")
    organization_id: str = Field(description="the tenant")
    input: Any = Field(description="the input as sent")
    status: TaskStatus
    result: str | None = Field(
        description="the output's text or compact JSON; the error once failed"
    )
    created_at: str
    finished_at: str | None
    source: Literal["api"]
    nodes: dict[str, NodeStatus] = Field(description="each node's state")
    error: str | None = Field(default=None, description="only when the wait ran out")


class TaskEvent(BaseModel):
    """One ``data:`` event of the stream (what xpander-sdk's ``TaskUpdateEvent`` parses)."""

    type: Literal["task_created", "task_updated", "task_finished"]
    task_id: str
    organization_id: str
    time: str
    data: Task


STATUS: dict[RunStatus, TaskStatus] = {
    RunStatus.WAITING: "pending",
    RunStatus.RUNNING: "executing",
    RunStatus.COMPLETE: "completed",
    RunStatus.ERROR: "failed",
    RunStatus.STOPPED: "stopped",
}


async def _start(request: web.Request) -> tuple[SavedFlow, FlowRun, Any]:
    flow = await find_flow(request, request.match_info["workflow_id"])
    body = await read_model(request, WorkflowInvoke)
    if body.model_extra:
        log.debug("xpander_fields_ignored", fields=sorted(body.model_extra))
    executions = request.app[SERVICE].executions
    input_value, files = body.input, {}
    if isinstance(input_value, dict) and input_value.get("files"):
        input_value, files = _files(executions, flow, input_value)
    run = await executions.start(tenant_of(request), flow, input_value, files=files)
    return flow, run, body.input


def _files(
    executions: Executions, flow: SavedFlow, given: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """xpander's ``input.files`` (URLs; here also data URLs) fill the flow's entry edges
    that take files, in the order of their names; other input keys naming entry edges
    fill those."""
    urls = given["files"]
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise InvalidInvocation("INPUT_INVALID", "input.files must be a list of URLs")
    entry = entry_edges(flow.submission.flow)
    readers = executions.entry_types(flow)
    takers = [edge for edge in entry if not takes_only_json(readers.get(edge, []))]
    if len(urls) != len(takers):
        raise InvalidInvocation(
            "INPUT_INVALID",
            f"input.files has {len(urls)} file(s); this flow takes {len(takers)}"
            + (f" (entry edges {', '.join(map(repr, takers))}, in this order)" if takers else ""),
        )
    files = dict(zip(takers, urls, strict=True))
    rest = {k: v for k, v in given.items() if k in entry and k not in files}
    return rest, files


def task_of(flow: SavedFlow, run: FlowRun, given: Any, outcome: Outcome | None = None) -> Task:
    """xpander's task record; ``result`` is the output as text, or the error once failed."""
    result: str | None = None
    status = STATUS[run.status]
    if outcome is not None and outcome.success:
        result = text_of(outcome.output)
    elif outcome is not None and outcome.finished:
        result = outcome.error
        status = STATUS[RunStatus.ERROR] if run.status == RunStatus.COMPLETE else status
    task = Task(
        id=run.id,
        agent_id=flow.graph_id,
        organization_id=flow.tenant,
        input=given,
        status=status,
        result=result,
        created_at=_iso(run.started_at),
        finished_at=_iso(run.finished_at) if run.finished_at else None,
        source="api",
        nodes={node_id: state.status for node_id, state in run.node_state.items()},
    )
    if outcome is not None and not outcome.finished:
        task.error = TIMEOUT_ERROR
    return task


def _states(run: FlowRun) -> tuple[Any, ...]:
    """The run's and its nodes' states: a TaskUpdated is sent when these change."""
    return (run.status, *(state.status for state in run.node_state.values()))


def _iso(moment: Any) -> str:
    return moment.isoformat().replace("+00:00", "Z")


WORKFLOW = {"workflow_id": REF["ref"]}
INVOKE_ERRORS = (*FIND_FLOW_ERRORS, "INPUT_INVALID", *RUN_START_ERRORS)


@routes.post("/v1/workflows/{workflow_id}/invoke")
@operation(
    "Run a saved flow and wait (xpander)",
    tag="xpander",
    params=WORKFLOW,
    query=(VERSION,),
    body=WorkflowInvoke,
    answers={
        200: Answer("the task record, as it stands when the run ends or the wait runs out", Task)
    },
    errors=INVOKE_ERRORS,
)
async def invoke(request: web.Request) -> web.Response:
    """Waits up to invocations.sync_timeout (300 s by default); the run goes on after."""
    flow, run, given = await _start(request)
    executions = request.app[SERVICE].executions
    outcome = await executions.wait(run.id, request.app[SETTINGS].invocations.sync_timeout)
    return answer(task_of(flow, outcome.run, given, outcome), exclude_unset=True)


@routes.post("/v1/workflows/{workflow_id}/invoke/stream")
@operation(
    "Run a saved flow, its task streamed (xpander)",
    tag="xpander",
    params=WORKFLOW,
    query=(VERSION,),
    body=WorkflowInvoke,
    answers={
        200: Answer(
            "Server-Sent Events, `data:` lines of xpander-sdk's TaskUpdateEvent: `{type, "
            "task_id, organization_id, time, data}` with `data` the Task record; `type` is "
            "`task_created`, then `task_updated` whenever the run or a node changes state, "
            "then `task_finished` with the result",
            events=((None, TaskEvent),),
        )
    },
    errors=INVOKE_ERRORS,
)
async def invoke_stream(request: web.Request) -> web.StreamResponse:
    flow, run, given = await _start(request)
    service = request.app[SERVICE]
    response = await open_stream(request)

    async def event(
        kind: Literal["task_created", "task_updated", "task_finished"], task: Task
    ) -> None:
        data = TaskEvent(
            type=kind, task_id=run.id, organization_id=flow.tenant, time=_iso(utcnow()), data=task
        )
        await send(response, data.model_dump(mode="json", exclude_unset=True))

    await event("task_created", task_of(flow, run, given))
    last = run
    last_seen = _states(run)
    timeout = request.app[SETTINGS].invocations.sync_timeout
    updates = service.runs.watch(run.id, timeout, heartbeat=HEARTBEAT_SECONDS)
    async for update in run_changes(response, updates):
        last = update.run
        seen = _states(last)
        if seen != last_seen and not last.status.finished:
            await event("task_updated", task_of(flow, last, given))
        last_seen = seen
    await event("task_finished", task_of(flow, last, given, await service.executions.outcome(last)))
    await response.write_eof()
    return response


__all__ = ["Task", "TaskEvent", "WorkflowInvoke", "routes", "task_of"]
