"""The native dialect (Pupload's Flow API): test a flow, status, artifacts, events."""

from __future__ import annotations

import asyncio
import math

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from orchestrator.api.auth import tenant_of
from orchestrator.api.bodies import read_submission
from orchestrator.api.downloads import download_headers
from orchestrator.api.resources import INVOCATIONS, METRICS, QUEUE, WORKER
from orchestrator.api.sse import HEARTBEAT_SECONDS, keep_alive, open_stream, send
from orchestrator.errors import BodyInvalid

routes = web.RouteTableDef()


@routes.post("/api/v1/flow/test")
async def test_flow(request: web.Request) -> web.Response:
    submission = await read_submission(request)
    run = await request.app[INVOCATIONS].submit(submission, tenant_of(request))
    return web.json_response(text=run.model_dump_json())


@routes.post("/api/v1/flow/validate")
async def validate_flow(request: web.Request) -> web.Response:
    submission = await read_submission(request)
    result = request.app[INVOCATIONS].validate(submission)
    return web.json_response(
        {
            "valid": result.ok,
            "errors": [e.model_dump(exclude_none=True) for e in result.errors],
            "warnings": [w.model_dump(exclude_none=True) for w in result.warnings],
        }
    )


@routes.get("/api/v1/flow/status/{run_id}")
async def flow_status(request: web.Request) -> web.Response:
    run = await request.app[INVOCATIONS].get(request.match_info["run_id"], tenant_of(request))
    return web.json_response(text=run.model_dump_json())


@routes.get("/api/v1/flow/graph/{run_id}")
async def flow_graph(request: web.Request) -> web.Response:
    """The run's nodes and the edges between them (``{Name, Nodes}``), to draw its DAG.

    Only the graph: the Flow's Stores may hold a flow store's credentials.
    """
    flow = await request.app[INVOCATIONS].flow_of(request.match_info["run_id"], tenant_of(request))
    nodes = [node.model_dump(mode="json") for node in flow.nodes]
    return web.json_response({"Name": flow.name, "Nodes": nodes})


@routes.post("/api/v1/flow/cancel/{run_id}")
async def cancel_flow(request: web.Request) -> web.Response:
    """Stop a run: 200 with the STOPPED FlowRun; 409 RUN_FINISHED when it has ended."""
    run = await request.app[INVOCATIONS].cancel(request.match_info["run_id"], tenant_of(request))
    return web.json_response(text=run.model_dump_json())


#: Runs one listing answers at the most.
MAX_LISTED = 500


@routes.get("/api/v1/flow/runs")
async def recent_runs(request: web.Request) -> web.Response:
    """The caller's newest runs, newest first: ``?limit=`` (default 50, at most 500)."""
    raw = request.query.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LISTED:
        raise BodyInvalid("LIMIT_INVALID", f"limit is a whole number from 1 to {MAX_LISTED}")
    runs = await request.app[INVOCATIONS].recent(tenant_of(request), int(raw))
    return web.json_response({"runs": runs})


@routes.get("/api/v1/nodedefs")
async def nodedefs(request: web.Request) -> web.Response:
    """The built-in NodeDefs: a flow may name any of them in Uses without sending it."""
    found = request.app[INVOCATIONS].nodedefs()
    return web.json_response({"NodeDefs": [d.model_dump(mode="json") for d in found]})


@routes.get("/api/v1/nodedefs/{publisher}/{name}")
async def nodedef(request: web.Request) -> web.Response:
    uses = f"{request.match_info['publisher']}/{request.match_info['name']}"
    return web.json_response(text=request.app[INVOCATIONS].nodedef(uses).model_dump_json())


@routes.get("/api/v1/workers")
async def workers(request: web.Request) -> web.Response:
    """Live workers (tiers, capacity, running attempts, last heartbeat) and queue depth per tier."""
    return web.json_response(await request.app[QUEUE].describe())


@routes.get("/api/v1/flow/artifact/{run_id}/{edge}")
async def flow_artifact(request: web.Request) -> web.StreamResponse:
    """The artifact's bytes, streamed from its store through the service."""
    info, reader = await request.app[INVOCATIONS].open_artifact(
        request.match_info["run_id"], request.match_info["edge"], tenant_of(request)
    )
    loop = asyncio.get_running_loop()
    response = web.StreamResponse(
        headers={
            **download_headers(info.content_type, request.match_info["edge"]),
            "Content-Length": str(info.size),
        }
    )
    try:
        await response.prepare(request)
        while chunk := await loop.run_in_executor(None, reader.read, 1024 * 1024):
            await response.write(chunk)
    finally:
        # Closing never blocks for long (a file, or a pooled HTTP body), and an
        # awaited close could be skipped if the client goes away meanwhile.
        reader.close()
    await response.write_eof()
    return response


@routes.get("/api/v1/flow/events/{run_id}")
async def flow_events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: ``status`` (the FlowRun), ``log`` (one line), ``end``."""
    invocations = request.app[INVOCATIONS]
    run_id = request.match_info["run_id"]
    # Raises RunNotFound (also for another tenant's run) before the stream opens.
    await invocations.get(run_id, tenant_of(request))
    response = await open_stream(request)
    # No end but the run's: a native stream lasts as long as its run.
    async for update in invocations.watch(run_id, math.inf, heartbeat=HEARTBEAT_SECONDS):
        if update.name == "heartbeat":
            await keep_alive(response)
        elif update.name == "log":
            await send(response, update.line, event="log")
        else:
            await send(response, update.run.model_dump(mode="json"), event="status")
            if update.name == "end" or update.run.status.finished:
                await send(response, update.run.model_dump(mode="json"), event="end")
                break
    return response


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus' text format: runs, attempts, durations, queue depth, bytes, HTTP latency."""
    recorded = request.app[METRICS]
    recorded.set_queued(await request.app[QUEUE].describe())
    recorded.runs_active.set(request.app[INVOCATIONS].active_runs())
    return web.Response(
        body=generate_latest(recorded.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """ok, and the local worker's Docker engine; 503 while that engine does not answer."""
    worker = request.app.get(WORKER)
    if worker is None:  # worker.enabled: false, no engine of ours to report on
        return web.json_response({"status": "ok"})
    problem = await worker.engine_problem()
    if problem is not None:
        return web.json_response(
            {"status": "degraded", "docker": f"unreachable: {problem}"}, status=503
        )
    return web.json_response({"status": "ok", "docker": "ok"})


__all__ = ["routes"]
