"""Scade's flow execution API: ``/api/v1/scade/flow/{id}/execute`` and ``/api/v1/task/{id}``.

``node_settings[start_node_id].data`` is the invocation input; the ``data`` of
any other node sets that node's Flags. The result is the output of
``result_node_id`` (``end_node_id`` when absent; the flow's terminal outputs
when neither is given). Tasks get integer ids, as Scade's do, scoped to the
tenant that made them.

Status codes: 1 waiting, 2 in progress, 3 finished, 4 failed.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from orchestrator.api.auth import tenant_of
from orchestrator.api.bodies import read_fields
from orchestrator.api.flows import find_flow
from orchestrator.api.resources import INVOCATIONS
from orchestrator.errors import BodyInvalid, NotFound, RunNotFound
from orchestrator.invocations import Invocations
from orchestrator.models import FlowRun, RunStatus
from orchestrator.registry import MAX_ID_DIGITS, SavedFlow, TaskRecord

routes = web.RouteTableDef()
FIELDS = ("start_node_id", "end_node_id", "result_node_id", "node_settings", "init_context")
STATUS = {
    RunStatus.WAITING: 1,
    RunStatus.RUNNING: 2,
    RunStatus.COMPLETE: 3,
    RunStatus.ERROR: 4,
    RunStatus.STOPPED: 4,
}
TASK_TYPE_FLOW = 4


def _node_id(body: dict[str, Any], field: str, flow: SavedFlow) -> str | None:
    value = body.get(field)
    if value is not None:
        Invocations.node_outputs(flow, str(value), field=field)  # NODE_UNKNOWN if none
    return None if value is None else str(value)


@routes.post("/api/v1/scade/flow/{flow_id}/execute")
async def execute(request: web.Request) -> web.Response:
    body = await read_fields(request, FIELDS)
    flow = await find_flow(request, request.match_info["flow_id"])
    start = _node_id(body, "start_node_id", flow)
    _node_id(body, "end_node_id", flow)
    _node_id(body, "result_node_id", flow)
    settings = body.get("node_settings") or {}
    if not isinstance(settings, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("data", {}), dict) for v in settings.values()
    ):
        raise BodyInvalid(
            "BODY_MALFORMED",
            "node_settings must be {node_id: {data: {...}}}",
            field="node_settings",
        )
    input_value = settings.get(start, {}).get("data", {}) if start else {}
    flags = {node: entry.get("data", {}) for node, entry in settings.items() if node != start}
    tenant = tenant_of(request)
    invocations = request.app[INVOCATIONS]
    run = await invocations.start(
        tenant, flow, input_value, flags=flags or None, flags_field="node_settings"
    )
    request_data = {
        "node_id": None,
        "start_node_id": body.get("start_node_id"),
        "end_node_id": body.get("end_node_id"),
        "result_node_id": body.get("result_node_id"),
        "init_context": body.get("init_context") or {},
        "node_settings": settings,
    }
    task = await invocations.add_task(tenant, run.id, flow.seq, request_data)
    return web.json_response(await _record(request, task, flow, run))


@routes.get("/api/v1/task/{task_id}")
async def get_task(request: web.Request) -> web.Response:
    raw = request.match_info["task_id"]
    tenant = tenant_of(request)
    invocations = request.app[INVOCATIONS]
    is_id = raw.isdigit() and len(raw) <= MAX_ID_DIGITS
    task = await invocations.task(tenant, int(raw)) if is_id else None
    if task is None:
        raise NotFound("TASK_NOT_FOUND", f"no task {raw!r}")
    flow = await invocations.flow_by_seq(tenant, task.flow_seq)
    try:
        run = await request.app[INVOCATIONS].get(task.execution_id, tenant)
    except RunNotFound as exc:
        raise NotFound("TASK_NOT_FOUND", f"task {raw}'s run is gone") from exc
    return web.json_response(await _record(request, task, flow, run))


async def _record(
    request: web.Request, task: TaskRecord, flow: SavedFlow, run: FlowRun
) -> dict[str, Any]:
    """The seed's task record, ``result`` filled once the run has finished."""
    result: Any = None
    status = STATUS[run.status]
    if run.status.finished:
        result_node = task.request.get("result_node_id") or task.request.get("end_node_id")
        edges = Invocations.node_outputs(flow, result_node, field="result_node_id")
        outcome = await request.app[INVOCATIONS].outcome(run, edges)
        result = outcome.output if outcome.success else {"error": outcome.error}
        status = status if outcome.success else STATUS[RunStatus.ERROR]
    elapsed = None
    if run.finished_at is not None:
        elapsed = round((run.finished_at - run.started_at).total_seconds(), 3)
    return {
        "id": task.id,
        "data": task.request,
        "status": status,
        "created": task.created_at.removesuffix("Z"),
        "finished": run.finished_at.isoformat().removesuffix("+00:00") if run.finished_at else None,
        "result": result,
        "execution_time": elapsed,
        "execution_cost": None,
        "parent_id": None,
        "ref_id": f"flow:{flow.seq};",
        "task_type": TASK_TYPE_FLOW,
        "is_hide": False,
        "public_access_token": None,
        "file_result_link": None,
        "execution_id": run.id,
    }


__all__ = ["routes"]
