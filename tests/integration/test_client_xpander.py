"""xpander's own models (xpander-sdk from PyPI) and a standard SSE parser (httpx-sse) on every
frame and task record the service sends."""

from __future__ import annotations

import httpx
import pytest
from httpx_sse import aconnect_sse
from xpander_sdk.models.configuration import Configuration
from xpander_sdk.models.events import TaskUpdateEventType
from xpander_sdk.modules.tasks.models.task import AgentExecutionStatus
from xpander_sdk.modules.tasks.sub_modules.task import Task, TaskUpdateEvent

from tests.integration.test_invocations import FAIL, GREET, one_node, save

pytestmark = pytest.mark.docker


def task(record: dict) -> Task:
    """A task record as the SDK reads one (its Task wants the client's configuration)."""
    configuration = Configuration(api_key="unused", organization_id=record["organization_id"])
    return Task.model_validate({**record, "configuration": configuration})


async def test_every_frame_and_record_parses_with_xpanders_models(start_service):
    client = await start_service()
    await save(client, one_node("greet", "assistant"), [GREET])
    await save(client, one_node("fail", "broken"), [FAIL])
    base = f"http://127.0.0.1:{client.port}"
    # Documented fields Pipewell does not use are ignored, not refused.
    body = {"input": {"text": "report"}, "think_mode": "default", "output_format": "text"}
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        response = await http.post("/v1/workflows/assistant/invoke", json=body)
        assert response.status_code == 200, response.text
        record = task(response.json())
        assert record.status == AgentExecutionStatus.Completed
        assert record.result == 'hello {"text":"report"}'
        assert record.input.text == "report"

        # Other input: the same would be the first call's work, reused at once (no update).
        body = {**body, "input": {"text": "streamed"}}
        async with aconnect_sse(
            http, "POST", "/v1/workflows/assistant/invoke/stream", json=body
        ) as source:
            events = [
                TaskUpdateEvent.model_validate_json(sse.data) async for sse in source.aiter_sse()
            ]
        types = [e.type for e in events]
        assert types[0] == TaskUpdateEventType.TaskCreated
        assert types[-1] == TaskUpdateEventType.TaskFinished
        assert TaskUpdateEventType.TaskUpdated in types
        records = [task(e.data) for e in events]
        assert records[-1].status == AgentExecutionStatus.Completed
        assert records[-1].result == 'hello {"text":"streamed"}'
        assert {e.task_id for e in events} == {records[0].id}

        async with aconnect_sse(
            http, "POST", "/v1/workflows/broken/invoke/stream", json={"input": {}}
        ) as source:
            events = [
                TaskUpdateEvent.model_validate_json(sse.data) async for sse in source.aiter_sse()
            ]
        final = task(events[-1].data)
        assert final.status == AgentExecutionStatus.Failed
        assert "boom" in (final.result or "")
