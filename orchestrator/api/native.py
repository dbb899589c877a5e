"""The native dialect (Pupload's Flow API): test a flow, status, artifacts, events."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from orchestrator.api.appkeys import EVENTS, SCHEDULER
from orchestrator.api.errors import BadRequest, read_json
from orchestrator.models import FlowSubmission

HEARTBEAT_SECONDS = 15.0
routes = web.RouteTableDef()


def _submission(body: Any) -> FlowSubmission:
    if not isinstance(body, dict):
        raise BadRequest("BODY_MALFORMED", "request body must be an object with Flow and NodeDefs")
    if "Flow" not in body:
        raise BadRequest("BODY_MALFORMED", "request body has no 'Flow': send {Flow, NodeDefs}")
    return FlowSubmission.model_validate(body)


@routes.post("/api/v1/flow/test")
async def test_flow(request: web.Request) -> web.Response:
    submission = _submission(await read_json(request))
    run = await request.app[SCHEDULER].submit(submission)
    return web.json_response(text=run.model_dump_json())


@routes.post("/api/v1/flow/validate")
async def validate_flow(request: web.Request) -> web.Response:
    submission = _submission(await read_json(request))
    result = request.app[SCHEDULER].validate(submission)
    return web.json_response(
        {
            "valid": result.ok,
            "errors": [e.model_dump(exclude_none=True) for e in result.errors],
            "warnings": [w.model_dump(exclude_none=True) for w in result.warnings],
        }
    )


@routes.get("/api/v1/flow/status/{run_id}")
async def flow_status(request: web.Request) -> web.Response:
    run = await request.app[SCHEDULER].get(request.match_info["run_id"])
    return web.json_response(text=run.model_dump_json())


@routes.get("/api/v1/flow/artifact/{run_id}/{edge}")
async def flow_artifact(request: web.Request) -> web.StreamResponse:
    """The artifact's bytes, streamed from its store through the service."""
    scheduler = request.app[SCHEDULER]
    info, reader = await scheduler.open_artifact(
        request.match_info["run_id"], request.match_info["edge"]
    )
    loop = asyncio.get_running_loop()
    response = web.StreamResponse(
        headers={
            "Content-Type": info.content_type or "application/octet-stream",
            "Content-Length": str(info.size),
            "Content-Disposition": f'inline; filename="{request.match_info["edge"]}"',
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
    scheduler = request.app[SCHEDULER]
    run_id = request.match_info["run_id"]
    run = await scheduler.get(run_id)  # raises RunNotFound before the stream opens
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    async with request.app[EVENTS].subscribe(run_id) as events:
        run = await scheduler.get(run_id)
        await _send(response, "status", run.model_dump(mode="json"))
        if run.status.finished:
            await _send(response, "end", run.model_dump(mode="json"))
            return response
        while True:
            try:
                event = await asyncio.wait_for(events.get(), HEARTBEAT_SECONDS)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            await _send(response, event.name, event.data)
            if event.name == "end":
                return response


async def _send(response: web.StreamResponse, name: str, data: dict[str, Any]) -> None:
    payload = json.dumps(data, separators=(",", ":"))
    await response.write(f"event: {name}\ndata: {payload}\n\n".encode())


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


__all__ = ["routes"]
