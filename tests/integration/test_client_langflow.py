"""Langflow's own client library (langflow-sdk from PyPI) against the real service."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from langflow_sdk import AsyncClient, Client, LangflowAuthError, LangflowNotFoundError

from tests.helpers import create_key
from tests.integration.test_invocations import ECHO, GREET, SLOW, one_node, save

pytestmark = pytest.mark.docker


@pytest.fixture
async def langflow(start_service, tmp_path, capsys):  # type: ignore[no-untyped-def]
    """(service client, base URL, key) with auth required and the greeter flow saved."""
    data_dir = tmp_path / "data"
    key = create_key(capsys, data_dir, "sdk")
    client = await start_service(data_dir, auth="required")
    headers = {"x-api-key": key}
    await save(client, one_node("greet", "chat"), [GREET], headers=headers)
    await save(client, one_node("echo", "hook"), [ECHO], headers=headers)
    return client, f"http://127.0.0.1:{client.port}", key


async def test_run_with_the_sync_and_async_clients(langflow):
    _client, base, key = langflow
    sync = Client(base, api_key=key)
    try:
        # The SDK always sends "stream": false in the body; Langflow ignores it, so do we.
        result = await asyncio.to_thread(sync.run, "chat", input_value="Tell me")
        assert result.first_text_output() == 'hello {"text":"Tell me"}'
        tweaked = await asyncio.to_thread(
            sync.run, "chat", input_value="Hi", tweaks={"greet": {"greeting": "Sure!"}}
        )
        assert tweaked.first_text_output() == 'Sure! {"text":"Hi"}'
        with pytest.raises(LangflowNotFoundError):
            await asyncio.to_thread(sync.run, "no-such-flow", input_value="x")
    finally:
        sync.close()
    async with AsyncClient(base, api_key=key) as client:
        result = await client.run("chat", input_value="async")
        assert result.first_text_output() == 'hello {"text":"async"}'
    async with AsyncClient(base, api_key="0" * 64) as client:
        with pytest.raises(LangflowAuthError):
            await client.run("chat", input_value="x")


async def test_stream_ends_with_the_whole_run_response(langflow):
    _client, base, key = langflow
    async with AsyncClient(base, api_key=key) as client:
        chunks = [chunk async for chunk in client.stream("chat", input_value="streamed")]
    assert chunks[0].event == "add_message" and chunks[-1].is_end
    tokens = "".join(c.text or "" for c in chunks if c.is_token)
    assert tokens.endswith('hello {"text":"streamed"}')
    final = chunks[-1].final_response()
    assert final is not None
    assert final.first_text_output() == 'hello {"text":"streamed"}'


async def test_webhook_takes_any_body_and_a_key_in_the_url(langflow):
    client, base, key = langflow
    async with httpx.AsyncClient(base_url=base) as http:
        response = await http.post(
            f"/api/v1/webhook/hook?x-api-key={key}",
            content=b"plain words, not JSON",
            headers={"Content-Type": "text/plain"},
        )
        assert response.status_code == 202, response.text
        execution = response.json()["execution_id"]
        refused = await http.post("/api/v1/webhook/hook?x-api-key=nope", content=b"x")
        assert refused.status_code == 401
    for _ in range(300):
        status = await (
            await client.get(f"/api/v1/flow/status/{execution}", headers={"x-api-key": key})
        ).json()
        if status["Status"] in ("COMPLETE", "ERROR"):
            break
        await asyncio.sleep(0.1)
    assert status["Status"] == "COMPLETE", status
    reply = await client.get(f"/api/v1/flow/artifact/{execution}/reply", headers={"x-api-key": key})
    assert await reply.json() == {"text": "plain words, not JSON"}


async def test_a_quiet_stream_keeps_alive_and_still_parses(langflow, monkeypatch):
    client, base, key = langflow
    monkeypatch.setattr("orchestrator.api.langflow.HEARTBEAT_SECONDS", 0.3)
    headers = {"x-api-key": key}
    await save(client, one_node("slow", "quiet"), [SLOW], headers=headers)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as http:
        response = await http.post("/api/v1/run/quiet?stream=true", json={"input_value": "z"})
        assert response.status_code == 200
        assert "\n\n\n" in response.text  # blank keep-alive lines while the node sleeps
    async with AsyncClient(base, api_key=key) as sdk:
        chunks = [chunk async for chunk in sdk.stream("quiet", input_value="zz")]
    final = chunks[-1].final_response()
    assert final is not None and final.first_text_output() == "zz"
