"""Scade's flow execution API: ``/api/v1/scade/flow/{id}/execute`` and ``/api/v1/task/{id}``.

``node_settings[start_node_id].data`` is the invocation input; the ``data`` of
any other node sets that node's Flags. The result is the output of
``result_node_id`` (``end_node_id`` when absent; the flow's terminal outputs
when neither is given). Tasks get integer ids, as Scade's do, scoped to the
tenant that made them.

Status codes: 1 waiting, 2 in progress, 3 finished, 4 failed.
"""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from orchestrator.api.auth import tenant_of
from orchestrator.api.bodies import answer, read_model
from orchestrator.api.flows import REF, VERSION, find_flow
from orchestrator.api.openapi import FIND_FLOW_ERRORS, RUN_START_ERRORS, Answer, operation
from orchestrator.api.resources import SERVICE
from orchestrator.errors import NotFound, RunNotFound
from orchestrator.models import FlowRun, RunStatus
from orchestrator.registry import SavedFlow, TaskRecord, parse_id
from orchestrator.service.saved_flows import node_outputs

routes = web.RouteTableDef()


class NodeSetting(BaseModel):
    model_config = ConfigDict(extra="allow")

    data: dict[str, Any] = Field(
        default_factory=dict,
        description="the start node's: the input; any other node's: its Flags",
    )


class ExecuteRequest(BaseModel):
    """Scade's execute body (the seed's fields)."""

    model_config = ConfigDict(extra="forbid")

    start_node_id: StrictStr | None = Field(default=None, description="a node of the flow")
    end_node_id: StrictStr | None = Field(default=None, description="a node of the flow")
    result_node_id: StrictStr | None = Field(
        default=None, description="the node whose output is the result (else end_node_id)"
    )
    node_settings: dict[str, NodeSetting] | None = Field(
        default=None, description="{node_id: {data: {...}}}"
    )
    init_context: dict[str, Any] | None = Field(default=None, description="echoed")


class TaskData(BaseModel):
    """The request, as Scade echoes it."""

    node_id: str | None
    start_node_id: str | None
    end_node_id: str | None
    result_node_id: str | None
    init_context: dict[str, Any]
    node_settings: dict[str, dict[str, Any]]


class ScadeTask(BaseModel):
    """Scade's task record."""

    id: int
    data: TaskData
    status: Literal[1, 2, 3, 4] = Field(
        description="1 waiting, 2 in progress, 3 finished, 4 failed"
    )
    created: str
    finished: str | None
    result: Any = Field(description='the output once finished; {"error": "..."} once failed')
    execution_time: float | None = Field(description="seconds")
    execution_cost: None
    parent_id: None
    ref_id: str
    task_type: int
    is_hide: bool
    public_access_token: None
    file_result_link: None
    execution_id: str = Field(description="the run's id in every dialect (the native ID)")


STATUS: dict[RunStatus, Literal[1, 2, 3, 4]] = {
    RunStatus.WAITING: 1,
    RunStatus.RUNNING: 2,
    RunStatus.COMPLETE: 3,
    RunStatus.ERROR: 4,
    RunStatus.STOPPED: 4,
}
TASK_TYPE_FLOW = 4


def _node_id(value: str | None, field: str, flow: SavedFlow) -> str | None:
    if value is not None:
        node_outputs(flow, value, field=field)  # NODE_UNKNOWN if none
    return value


@routes.post("/api/v1/scade/flow/{flow_id}/execute")
@operation(
    "Run a saved flow as a task (Scade)",
    tag="scade",
    params={"flow_id": REF["ref"]},
    query=(VERSION,),
    body=ExecuteRequest,
    answers={200: Answer("the task record: GET /api/v1/task/{id} follows it", ScadeTask)},
    errors=(*FIND_FLOW_ERRORS, "NODE_UNKNOWN", "FLAGS_INVALID", "INPUT_INVALID", *RUN_START_ERRORS),
)
async def execute(request: web.Request) -> web.Response:
    """``node_settings[start_node_id].data`` is the input; other nodes' ``data`` their Flags."""
    body = await read_model(request, ExecuteRequest)
    flow = await find_flow(request, request.match_info["flow_id"])
    start = _node_id(body.start_node_id, "start_node_id", flow)
    _node_id(body.end_node_id, "end_node_id", flow)
    _node_id(body.result_node_id, "result_node_id", flow)
    settings = body.node_settings or {}
    input_value = settings[start].data if start in settings else {}
    flags = {node: entry.data for node, entry in settings.items() if node != start}
    tenant = tenant_of(request)
    service = request.app[SERVICE]
    run = await service.executions.start(
        tenant, flow, input_value, flags=flags or None, flags_field="node_settings"
    )
    request_data = {
        "node_id": None,
        "start_node_id": body.start_node_id,
        "end_node_id": body.end_node_id,
        "result_node_id": body.result_node_id,
        "init_context": body.init_context or {},
        "node_settings": {
            node: entry.model_dump(mode="json", exclude_unset=True)
            for node, entry in settings.items()
        },
    }
    task = await service.tasks.add(tenant, run.id, flow.seq, request_data)
    return answer(await _record(request, task, flow, run))


@routes.get("/api/v1/task/{task_id}")
@operation(
    "A task (Scade)",
    tag="scade",
    params={"task_id": "the task's integer id"},
    answers={200: Answer("the task record, result filled once finished", ScadeTask)},
    errors=("TASK_NOT_FOUND",),
)
async def get_task(request: web.Request) -> web.Response:
    raw = request.match_info["task_id"]
    tenant = tenant_of(request)
    service = request.app[SERVICE]
    task_id = parse_id(raw)
    task = await service.tasks.get(tenant, task_id) if task_id is not None else None
    if task is None:
        raise NotFound("TASK_NOT_FOUND", f"no task {raw!r}")
    flow = await service.flows.by_seq(tenant, task.flow_seq)
    try:
        run = await service.runs.get(task.execution_id, tenant)
    except RunNotFound as exc:
        raise NotFound("TASK_NOT_FOUND", f"task {raw}'s run is gone") from exc
    return answer(await _record(request, task, flow, run))


async def _record(
    request: web.Request, task: TaskRecord, flow: SavedFlow, run: FlowRun
) -> ScadeTask:
    """The seed's task record, ``result`` filled once the run has finished."""
    result: Any = None
    status = STATUS[run.status]
    if run.status.finished:
        result_node = task.request.get("result_node_id") or task.request.get("end_node_id")
        edges = node_outputs(flow, result_node, field="result_node_id")
        outcome = await request.app[SERVICE].executions.outcome(run, edges)
        result = outcome.output if outcome.success else {"error": outcome.error}
        status = status if outcome.success else STATUS[RunStatus.ERROR]
    elapsed = None
    if run.finished_at is not None:
        elapsed = round((run.finished_at - run.started_at).total_seconds(), 3)
    return ScadeTask(
        id=task.id,
        data=TaskData.model_validate(task.request),
        status=status,
        created=task.created_at.removesuffix("Z"),
        finished=run.finished_at.isoformat().removesuffix("+00:00") if run.finished_at else None,
        result=result,
        execution_time=elapsed,
        execution_cost=None,
        parent_id=None,
        ref_id=f"flow:{flow.seq};",
        task_type=TASK_TYPE_FLOW,
        is_hide=False,
        public_access_token=None,
        file_result_link=None,
        execution_id=run.id,
    )


__all__ = ["ExecuteRequest", "ScadeTask", "routes"]
