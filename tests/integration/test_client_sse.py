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
