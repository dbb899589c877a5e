"""The Axiom and native streams read with a standard SSE parser (httpx-sse), self-closing."""

from __future__ import annotations

import json

import httpx
import pytest
from httpx_sse import aconnect_sse

from tests.integration.test_invocations import GREET, one_node, save

pytestmark = pytest.mark.docker


async def test_axiom_and_native_streams_parse_and_close(start_service):
    client = await start_service()
    graph = (await save(client, one_node("greet", "chat"), [GREET]))["graph_id"]
    base = f"http://127.0.0.1:{client.port}"
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        body = {"graph_id": graph, "input": {"text": "sse"}}
        async with aconnect_sse(
            http, "POST", "/invocations/v1/flows/invoke/stream", json=body
        ) as source:
            frames = [json.loads(sse.data) async for sse in source.aiter_sse()]
        # The stream ended by itself after the final frame.
        assert frames[-1]["is_final"] is True and frames[-1]["success"] is True
        assert frames[0]["payload"] == {"text": 'hello {"text":"sse"}'}
        execution = frames[0]["execution_id"]

        async with aconnect_sse(http, "GET", f"/api/v1/flow/events/{execution}") as source:
            events = [(sse.event, json.loads(sse.data)) async for sse in source.aiter_sse()]
        assert [name for name, _ in events] == ["status", "end"]
        assert events[-1][1]["Status"] == "COMPLETE"


async def test_a_big_runs_stream_sends_it_whole_once_then_what_changed(start_service):
    """251 nodes: the stream's first event is the whole run; the one node that runs
    comes as deltas holding that node alone, which merged give the run's status."""
    from orchestrator.flow_test.session import merge_delta
    from orchestrator.models import FlowRun
    from tests.helpers import submit_big_waiting_run, upload

    client = await start_service()
    run = await submit_big_waiting_run(client)
    base = f"http://127.0.0.1:{client.port}"
    events: list[tuple[str, str]] = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        async with aconnect_sse(http, "GET", f"/api/v1/flow/events/{run['ID']}") as source:
            async for sse in source.aiter_sse():
                events.append((sse.event, sse.data))
                if len(events) == 1:
                    await upload(client, run, "src", b"payload")
                if sse.event == "delta" and '"go":{"Status":"COMPLETE"' in sse.data:
                    break
    name, whole = events[0]
    assert name == "status" and len(json.loads(whole)["NodeState"]) == 251
    deltas = [json.loads(data) for name, data in events[1:] if name == "delta"]
    assert deltas and all(set(d["NodeState"]) <= {"go"} for d in deltas)
    assert all(len(data) < len(whole) / 10 for name, data in events[1:])
    assert deltas[-1]["Counts"] == {"COMPLETE": 1, "IDLE": 250}
    assert "result" in deltas[-1]["Artifacts"]

    merged = FlowRun.model_validate_json(whole)
    for delta in deltas:
        merged = merge_delta(merged, delta)
    status = await (await client.get(f"/api/v1/flow/status/{run['ID']}")).json()
    assert merged.node_state["go"].model_dump(mode="json") == status["NodeState"]["go"]
    assert set(merged.artifacts) == set(status["Artifacts"])
