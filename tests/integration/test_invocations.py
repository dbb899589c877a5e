"""Saved flows and the invocation dialects (Axiom, xpander, Scade, Langflow), through
real containers on the real service."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import time
from typing import Any

import pytest
import yaml

from orchestrator.api.resources import SERVICE
from tests.helpers import busybox_def, running_containers, wait_for

pytestmark = pytest.mark.docker

GREET = busybox_def(
    "greet",
    'sh -c \'printf "%s " "$FLAG_GREETING" > ${out}; cat ${in} >> ${out}\'',
    Flags=[{"Name": "greeting", "Default": "hello"}],
    MaxAttempts=1,
)
ECHO = busybox_def("echo", "cp ${in} ${out}", MaxAttempts=1)
FAIL = busybox_def("fail", "sh -c 'echo boom >&2; exit 3'", MaxAttempts=1)
SLOW = busybox_def("slow", "sh -c 'sleep 3; cp ${in} ${out}'", MaxAttempts=1)
GZIP = busybox_def("gzip", "sh -c 'gzip -c ${in} > ${out}'", MaxAttempts=1)


def one_node(uses: str, name: str | None = None, node_id: str | None = None) -> dict[str, Any]:
    node_id = node_id or uses
    return {
        "Name": name or f"{uses}-flow",
        "Nodes": [
            {
                "ID": node_id,
                "Uses": f"test/{uses}",
                "Inputs": [{"Name": "in", "Edge": "request"}],
                "Outputs": [{"Name": "out", "Edge": "reply"}],
            }
        ],
    }


async def save(client, flow: dict[str, Any], defs: list[dict[str, Any]], **kw) -> dict[str, Any]:
    response = await client.post("/api/v1/flows", json={"Flow": flow, "NodeDefs": defs}, **kw)
    assert response.status in (200, 201), await response.text()
    return await response.json()


async def axiom(client, body: dict[str, Any], **kw) -> tuple[int, dict[str, Any]]:
    response = await client.post("/invocations/v1/flows/invoke", json=body, **kw)
    return response.status, await response.json()


async def sse_data(response) -> list[dict[str, Any]]:
    """Every ``data:`` line of an SSE body, parsed."""
    assert response.headers["Content-Type"].startswith("text/event-stream")
    text = await response.text()
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]


# ---------------------------------------------------------------- saved flows


async def test_saved_flows_are_versioned_pinned_and_deletable(start_service):
    client = await start_service()
    first = await save(client, one_node("greet", "greeter"), [GREET])
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", first["graph_id"])
    assert (first["name"], first["version"], first["created"]) == ("greeter", 1, True)
    assert first["entry_edges"] == ["request"] and first["terminal_edges"] == ["reply"]

    again = await save(client, one_node("greet", "greeter"), [GREET])
    assert (again["graph_id"], again["version"], again["created"]) == (first["graph_id"], 1, False)

    changed = dict(GREET, Flags=[{"Name": "greeting", "Default": "howdy"}])
    yaml_body = yaml.safe_dump({"Flow": one_node("greet", "greeter"), "NodeDefs": [changed]})
    response = await client.post(
        "/api/v1/flows", data=yaml_body, headers={"Content-Type": "application/yaml"}
    )
    assert response.status == 201
    second = await response.json()
    assert second["version"] == 2 and second["graph_id"] != first["graph_id"]

    listing = await (await client.get("/api/v1/flows?name=greeter")).json()
    assert [(f["graph_id"], f["version"]) for f in listing["flows"]] == [
        (first["graph_id"], 1),
        (second["graph_id"], 2),
    ]
    by_name = await (await client.get("/api/v1/flows/greeter")).json()
    assert by_name["graph_id"] == second["graph_id"]
    assert by_name["NodeDefs"][0]["Flags"][0]["Default"] == "howdy"
    pinned = await (await client.get("/api/v1/flows/greeter?version=1")).json()
    assert pinned["graph_id"] == first["graph_id"]

    # The old id keeps running the old version.
    status, body = await axiom(
        client, {"graph_id": first["graph_id"], "input": {"text": "a"}, "wait": True}
    )
    assert status == 202 and body["result"]["output"] == {"text": 'hello {"text":"a"}'}
    status, body = await axiom(
        client, {"graph_id": second["graph_id"], "input": {"text": "a"}, "wait": True}
    )
    assert body["result"]["output"] == {"text": 'howdy {"text":"a"}'}

    assert (await client.delete(f"/api/v1/flows/{first['graph_id']}")).status == 204
    status, body = await axiom(client, {"graph_id": first["graph_id"], "input": {}})
    assert status == 404 and body["code"] == "FLOW_NOT_FOUND"
    assert (await client.get(f"/api/v1/flows/{first['graph_id']}")).status == 404

    invalid = await client.post("/api/v1/flows", json={"Flow": one_node("missing"), "NodeDefs": []})
    assert invalid.status == 400
    assert (await invalid.json())["code"] == "FLOW_INVALID"


# ---------------------------------------------------------------- Axiom


async def test_axiom_invoke_waits_or_returns_at_once(start_service):
    client = await start_service()
    graph = (await save(client, one_node("greet"), [GREET]))["graph_id"]
    before = time.time() * 1000
    status, body = await axiom(
        client, {"graph_id": graph, "input": {"text": "world"}, "wait": True}
    )
    assert status == 202
    assert body["accepted"] is True and re.fullmatch(r"[0-9a-f]{32}", body["execution_id"])
    result = body["result"]
    assert result["success"] is True
    assert result["output"] == {"text": 'hello {"text":"world"}'}
    assert before <= result["completed_at"] <= time.time() * 1000

    status, body = await axiom(client, {"graph_id": graph, "input": {"text": "later"}})
    assert status == 202 and set(body) == {"accepted", "execution_id"}
    # The execution_id is the run id of the native API.
    run = await wait_for(client, body["execution_id"], {"COMPLETE"})
    assert run["Artifacts"]["request"]["EdgeName"] == "request"

    for bad, code in (
        ({"input": {}}, "BODY_MALFORMED"),
        ({"graph_id": graph}, "BODY_MALFORMED"),
        ({"graph_id": graph, "input": [1]}, "INPUT_INVALID"),
        ({"graph_id": graph, "input": {}, "timeout_seconds": -1}, "TIMEOUT_INVALID"),
        ({"graph_id": graph, "input": {}, "wiat": True}, "BODY_MALFORMED"),
        ({"graph_id": "0" * 26, "input": {}}, "FLOW_NOT_FOUND"),
    ):
        status, error = await axiom(client, bad)
        assert error["code"] == code, (bad, error)
        assert status == (404 if code == "FLOW_NOT_FOUND" else 400)
        assert error["message"]


async def test_json_output_is_returned_as_json_and_binary_as_a_url(start_service):
    client = await start_service()
    echo = (await save(client, one_node("echo"), [ECHO]))["graph_id"]
    value = {"text": "hi", "n": 3, "nested": {"list": [1, 2]}}
    _, body = await axiom(client, {"graph_id": echo, "input": value, "wait": True})
    assert body["result"]["output"] == value

    packed = (await save(client, one_node("gzip"), [GZIP]))["graph_id"]
    _, body = await axiom(client, {"graph_id": packed, "input": value, "wait": True})
    output = body["result"]["output"]
    assert output["content_type"] == "application/gzip"
    async with client.session.get(output["url"]) as response:
        assert response.status == 200
        data = await response.read()
    assert output["size"] == len(data)
    assert json.loads(gzip.decompress(data)) == value


async def test_config_profiles_set_flags(start_service):
    client = await start_service()
    graph = (await save(client, one_node("greet"), [GREET]))["graph_id"]
    response = await client.put(
        f"/api/v1/flows/{graph}/configs/formal", json={"flags": {"greet": {"greeting": "Good day"}}}
    )
    assert response.status == 201
    listing = await (await client.get(f"/api/v1/flows/{graph}/configs")).json()
    assert listing["configs"] == {"formal": {"greet": {"greeting": "Good day"}}}

    _, body = await axiom(
        client, {"graph_id": graph, "input": {"text": "x"}, "wait": True, "config_id": "formal"}
    )
    assert body["result"]["output"] == {"text": 'Good day {"text":"x"}'}

    status, body = await axiom(client, {"graph_id": graph, "input": {}, "config_id": "casual"})
    assert status == 404 and body["code"] == "CONFIG_NOT_FOUND"
    for flags, hint in (
        ({"nobody": {"greeting": "x"}}, "no node 'nobody'"),
        ({"greet": {"volume": "11"}}, "no flag 'volume'"),
        ({"greet": {"greeting": ["a"]}}, "greet.greeting must be a string, number or boolean"),
        ([1], "flags must be an object {node_id: {flag: value}}"),
    ):
        response = await client.put(f"/api/v1/flows/{graph}/configs/bad", json={"flags": flags})
        error = await response.json()
        assert response.status == 400 and error["code"] == "FLAGS_INVALID"
        assert hint in error["message"]

    # A new version of the flow starts with the profiles of the one before it.
    newer = dict(GREET, Timeout=30)
    second = await save(client, one_node("greet"), [newer])
    assert second["version"] == 2
    configs = await (await client.get(f"/api/v1/flows/{second['graph_id']}/configs")).json()
    assert "formal" in configs["configs"]
    assert (await client.delete(f"/api/v1/flows/{graph}/configs/formal")).status == 204
    assert (await client.get(f"/api/v1/flows/{graph}/configs/formal")).status == 404


async def test_several_entry_edges_take_one_key_each(start_service):
    client = await start_service()
    join = busybox_def("join", "sh -c 'cat ${a} ${b} > ${out}'", MaxAttempts=1)
    flow = {
        "Name": "join",
        "Nodes": [
            {
                "ID": "join",
                "Uses": "test/join",
                "Inputs": [{"Name": "a", "Edge": "left"}, {"Name": "b", "Edge": "right"}],
                "Outputs": [{"Name": "out", "Edge": "both"}],
            }
        ],
    }
    graph = (await save(client, flow, [join]))["graph_id"]
    _, body = await axiom(
        client, {"graph_id": graph, "input": {"left": {"l": 1}, "right": "r"}, "wait": True}
    )
    assert body["result"]["output"] == {"text": '{"l":1}"r"'}

    status, body = await axiom(client, {"graph_id": graph, "input": {"left": 1, "middle": 2}})
    assert status == 400 and body["code"] == "INPUT_INVALID"
    assert "'middle'" in body["message"] and "'left', 'right'" in body["message"]
    status, body = await axiom(client, {"graph_id": graph, "input": {"left": 1}})
    assert status == 400 and "missing input key(s) 'right'" in body["message"]


async def test_axiom_timeout_returns_what_is_known_and_the_run_goes_on(start_service):
    client = await start_service()
    graph = (await save(client, one_node("slow"), [SLOW]))["graph_id"]
    started = time.monotonic()
    status, body = await axiom(
        client, {"graph_id": graph, "input": {"v": 1}, "wait": True, "timeout_seconds": 0.5}
    )
    assert time.monotonic() - started < 2.5
    assert status == 202
    assert body["result"] == {
        "success": False,
        "error": "timeout waiting for pipeline result",
        "status": "RUNNING",
    }
    run = await wait_for(client, body["execution_id"], {"COMPLETE", "ERROR"})
    assert run["Status"] == "COMPLETE"

    # A quiet stretch yields heartbeats (the streams write them as SSE comments).
    service = client.server.app[SERVICE]
    flow = await service.flows.find("default", graph)
    started = await service.executions.start("default", flow, {"v": 3})
    names = [u.name async for u in service.runs.watch(started.id, 30, heartbeat=0.4)]
    assert names[0] == "status" and names[-1] == "end"
    assert names.count("heartbeat") >= 3

    response = await client.post(
        "/invocations/v1/flows/invoke/stream",
        json={"graph_id": graph, "input": {"v": 2}, "timeout_seconds": 0.5},
    )
    frames = await sse_data(response)
    assert frames == [
        {
            "execution_id": frames[0]["execution_id"],
            "frame_index": 0,
            "is_final": True,
            "success": False,
            "error": "timeout waiting for pipeline result",
        }
    ]


async def test_axiom_stream_sends_a_frame_per_terminal_output(start_service):
    client = await start_service()
    flow = {
        "Name": "fan",
        "Nodes": [
            {
                "ID": "quick",
                "Uses": "test/echo",
                "Inputs": [{"Name": "in", "Edge": "request"}],
                "Outputs": [{"Name": "out", "Edge": "fast"}],
            },
            {
                "ID": "later",
                "Uses": "test/slow",
                "Inputs": [{"Name": "in", "Edge": "request"}],
                "Outputs": [{"Name": "out", "Edge": "slow"}],
            },
        ],
    }
    graph = (await save(client, flow, [ECHO, SLOW]))["graph_id"]
    response = await client.post(
        "/invocations/v1/flows/invoke/stream", json={"graph_id": graph, "input": {"k": "v"}}
    )
    assert response.status == 200
    frames = await sse_data(response)
    execution = frames[0]["execution_id"]
    assert frames == [
        {
            "execution_id": execution,
            "frame_index": 0,
            "payload": {"k": "v"},
            "is_final": False,
            "edge": "fast",
        },
        {
            "execution_id": execution,
            "frame_index": 1,
            "payload": {"k": "v"},
            "is_final": False,
            "edge": "slow",
        },
        {"execution_id": execution, "frame_index": 2, "is_final": True, "success": True},
    ]


# ---------------------------------------------------------------- xpander


async def test_xpander_invoke_sync_and_stream(start_service):
    client = await start_service()
    first = await save(client, one_node("greet", "assistant"), [GREET])
    changed = dict(GREET, Flags=[{"Name": "greeting", "Default": "hey"}])
    await save(client, one_node("greet", "assistant"), [changed])

    response = await client.post(
        "/v1/workflows/assistant/invoke?version=1", json={"input": {"text": "you"}}
    )
    assert response.status == 200
    task = await response.json()
    assert task["status"] == "completed" and task["result"] == 'hello {"text":"you"}'
    assert task["input"] == {"text": "you"}
    assert re.fullmatch(r"[0-9a-f]{32}", task["id"]) and task["agent_id"] == first["graph_id"]
    assert task["source"] == "api" and task["finished_at"].endswith("Z")

    response = await client.post(
        "/v1/workflows/assistant/invoke/stream",
        json={"input": {"text": "all"}},
        headers={"x-api-key": "ignored when auth is off"},
    )
    events = await sse_data(response)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "task_created" and kinds[-1] == "task_finished"
    assert "task_updated" in kinds
    assert {e["task_id"] for e in events} == {events[0]["task_id"]}
    finished = events[-1]["data"]
    assert finished["status"] == "completed"
    assert finished["result"] == 'hey {"text":"all"}'
    # Node state changes are reported as they happen.
    node_states = [e["data"]["nodes"]["greet"] for e in events]
    assert node_states[-1] == "COMPLETE" and any(s in ("READY", "RUNNING") for s in node_states)

    unknown = await client.post("/v1/workflows/nobody/invoke", json={"input": {}})
    assert unknown.status == 404 and (await unknown.json())["code"] == "FLOW_NOT_FOUND"


# ---------------------------------------------------------------- Scade


async def test_scade_execute_then_poll_the_task(start_service):
    client = await start_service()
    flow = {
        "Name": "two-step",
        "Nodes": [
            {
                "ID": "SYnn-start",
                "Uses": "test/echo",
                "Inputs": [{"Name": "in", "Edge": "request"}],
                "Outputs": [{"Name": "out", "Edge": "middle"}],
            },
            {
                "ID": "y5iI-end",
                "Uses": "test/greet",
                "Inputs": [{"Name": "in", "Edge": "middle"}],
                "Outputs": [{"Name": "out", "Edge": "reply"}],
            },
        ],
    }
    saved = await save(client, flow, [ECHO, GREET])
    request = {
        "start_node_id": "SYnn-start",
        "end_node_id": "y5iI-end",
        "result_node_id": "y5iI-end",
        "node_settings": {
            "SYnn-start": {"data": {"source": "video.mp4", "target": "image.jpg"}},
            "y5iI-end": {"data": {"greeting": "swap"}},
        },
    }
    response = await client.post(f"/api/v1/scade/flow/{saved['id']}/execute", json=request)
    assert response.status == 200, await response.text()
    task = await response.json()
    assert isinstance(task["id"], int) and task["status"] in (1, 2)
    assert task["result"] is None and task["finished"] is None
    assert task["data"] == {"node_id": None, "init_context": {}, **request}
    assert task["ref_id"] == f"flow:{saved['id']};" and task["task_type"] == 4

    deadline = time.monotonic() + 60
    while task["status"] in (1, 2):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
        task = await (await client.get(f"/api/v1/task/{task['id']}")).json()
    assert task["status"] == 3
    assert task["result"] == {"text": 'swap {"source":"video.mp4","target":"image.jpg"}'}
    assert task["execution_time"] > 0 and task["finished"]

    # The graph_id works as the flow id too; result_node_id picks that node's output.
    request["result_node_id"] = "SYnn-start"
    response = await client.post(f"/api/v1/scade/flow/{saved['graph_id']}/execute", json=request)
    task = await response.json()
    while task["status"] in (1, 2):
        await asyncio.sleep(0.2)
        task = await (await client.get(f"/api/v1/task/{task['id']}")).json()
    assert task["result"] == {"source": "video.mp4", "target": "image.jpg"}

    for path in ("/api/v1/task/999999", "/api/v1/task/abc", "/api/v1/task/" + "9" * 30):
        response = await client.get(path)
        assert response.status == 404 and (await response.json())["code"] == "TASK_NOT_FOUND"
    request["start_node_id"] = "nope"
    response = await client.post(f"/api/v1/scade/flow/{saved['id']}/execute", json=request)
    assert response.status == 400 and "'nope'" in (await response.json())["message"]


# ---------------------------------------------------------------- Langflow


async def test_langflow_run_stream_and_webhook(start_service):
    client = await start_service()
    graph = (await save(client, one_node("greet", "chat"), [GREET]))["graph_id"]
    response = await client.post(
        f"/api/v1/run/{graph}",
        json={
            "input_value": "Tell me",
            "session_id": "chat-123",
            "input_type": "chat",
            "output_type": "chat",
            "tweaks": {"greet": {"greeting": "Sure!"}},
        },
    )
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["session_id"] == "chat-123"
    assert body["outputs"][0]["inputs"] == {"input_value": "Tell me"}
    message = body["outputs"][0]["outputs"][0]["results"]["message"]
    assert message["text"] == 'Sure! {"text":"Tell me"}'
    assert message["session_id"] == "chat-123" and message["component_id"] == "greet"

    response = await client.post(
        "/api/v1/run/chat?stream=true", json={"message": "stream it", "session_id": "s-1"}
    )
    assert response.status == 200
    raw = await response.text()
    lines = [json.loads(chunk) for chunk in raw.split("\n\n") if chunk.strip()]
    events = [line["event"] for line in lines]
    assert events[:2] == ["add_message", "add_message"] and events[-1] == "end"
    assert lines[0]["data"]["sender"] == "User" and lines[0]["data"]["text"] == "stream it"
    tokens = "".join(line["data"]["chunk"] for line in lines if line["event"] == "token")
    assert "[greet] attempt 1 started" in tokens
    assert tokens.endswith('hello {"text":"stream it"}')
    # end carries the whole run response, as Langflow's does.
    result = lines[-1]["data"]["result"]
    assert result["session_id"] == "s-1"
    [reply] = result["outputs"][0]["outputs"]
    assert reply["results"]["message"]["text"] == 'hello {"text":"stream it"}'

    bad = await client.post(f"/api/v1/run/{graph}", json={"tweaks": {"greet": {"nope": 1}}})
    assert (
        bad.status == 400
        and "tweaks: node 'greet' has no flag 'nope'" in (await bad.json())["message"]
    )

    two_step = {
        "Name": "two-step",
        "Nodes": [
            {**one_node("echo")["Nodes"][0], "Outputs": [{"Name": "out", "Edge": "middle"}]},
            {**one_node("greet")["Nodes"][0], "Inputs": [{"Name": "in", "Edge": "middle"}]},
        ],
    }
    chain = (await save(client, two_step, [ECHO, GREET]))["graph_id"]
    # The echo's output is the JSON {"text": "mid"}: its message is that text.
    for component, text in (("echo", "mid"), ("", 'hello {"text":"mid"}')):
        response = await client.post(
            f"/api/v1/run/{chain}", json={"input_value": "mid", "output_component": component}
        )
        result = (await response.json())["outputs"][0]["outputs"]
        assert [r["results"]["message"]["text"] for r in result] == [text], component
        assert result[0]["results"]["message"]["component_id"] == (component or "greet")

    bad = await client.post(f"/api/v1/run/{graph}", json={"output_component": "nope"})
    assert bad.status == 400 and (await bad.json())["code"] == "NODE_UNKNOWN"
    body = await (await client.post(f"/api/v1/run/{graph}", json={"session_id": None})).json()
    assert body["session_id"] == body["execution_id"]

    echo = (await save(client, one_node("echo"), [ECHO]))["graph_id"]
    response = await client.post(f"/api/v1/webhook/{echo}", json={"data": "example-data"})
    assert response.status == 202
    body = await response.json()
    assert body["message"] == "Task started in the background"
    assert body["status"] == "in progress"
    await wait_for(client, body["execution_id"], {"COMPLETE"})
    stored = await client.get(f"/api/v1/flow/artifact/{body['execution_id']}/reply")
    assert json.loads(await stored.read()) == {"data": "example-data"}


# ---------------------------------------------------------------- failure everywhere


async def test_a_failing_flow_seen_through_every_dialect(start_service):
    client = await start_service()
    graph = (await save(client, one_node("fail", "broken", "boom"), [FAIL]))["graph_id"]
    why = "node 'boom' failed: command exited with code 3: boom"

    _, body = await axiom(client, {"graph_id": graph, "input": {}, "wait": True})
    assert body["result"] == {"success": False, "error": why}

    response = await client.post(
        "/invocations/v1/flows/invoke/stream", json={"graph_id": graph, "input": {}}
    )
    frames = await sse_data(response)
    assert frames[-1]["is_final"] is True and frames[-1]["success"] is False
    assert frames[-1]["error"] == why and len(frames) == 1

    task = await (await client.post(f"/v1/workflows/{graph}/invoke", json={"input": {}})).json()
    assert task["status"] == "failed" and task["result"] == why
    response = await client.post(f"/v1/workflows/{graph}/invoke/stream", json={"input": {}})
    events = await sse_data(response)
    assert events[-1]["type"] == "task_finished" and events[-1]["data"]["status"] == "failed"

    response = await client.post(f"/api/v1/scade/flow/{graph}/execute", json={})
    task = await response.json()
    while task["status"] in (1, 2):
        await asyncio.sleep(0.2)
        task = await (await client.get(f"/api/v1/task/{task['id']}")).json()
    assert task["status"] == 4 and task["result"] == {"error": why}

    response = await client.post(f"/api/v1/run/{graph}", json={"input_value": "x"})
    assert response.status == 500
    body = await response.json()
    assert body["code"] == "RUN_FAILED" and body["detail"] == why
    assert re.fullmatch(r"[0-9a-f]{32}", body["execution_id"])
    response = await client.post(f"/api/v1/run/{graph}?stream=true", json={"input_value": "x"})
    lines = [json.loads(c) for c in (await response.text()).split("\n\n") if c.strip()]
    assert [line["event"] for line in lines][-2:] == ["error", "end"]
    assert lines[-2]["data"]["error"] == why


async def test_saved_flows_and_tasks_outlive_a_restart(start_service, tmp_path):
    data_dir = tmp_path / "data"
    client = await start_service(data_dir)
    graph = (await save(client, one_node("slow"), [SLOW]))["graph_id"]
    response = await client.post(f"/api/v1/scade/flow/{graph}/execute", json={})
    task = await response.json()
    # Its container exists once its input is in: only then does stopping the service
    # leave the attempt to be resumed (an input download cut by the stopping server
    # would be the node's failure).
    await running_containers(task["execution_id"], seconds=30)
    await client.close()  # stops the service while the node sleeps

    client = await start_service(data_dir)
    listed = await (await client.get("/api/v1/flows")).json()
    assert [f["graph_id"] for f in listed["flows"]] == [graph]
    deadline = time.monotonic() + 60
    while task["status"] in (1, 2):
        assert time.monotonic() < deadline, task
        await asyncio.sleep(0.2)
        task = await (await client.get(f"/api/v1/task/{task['id']}")).json()
    # The run resumed with the input the service had written before it stopped.
    assert task["status"] == 3 and task["result"] == {}, task


async def test_sync_dialects_answer_what_is_known_when_their_wait_runs_out(start_service):
    client = await start_service(invocations={"sync_timeout": 0.5})
    graph = (await save(client, one_node("slow"), [SLOW]))["graph_id"]

    response = await client.post(f"/v1/workflows/{graph}/invoke", json={"input": {"v": 1}})
    task = await response.json()
    assert response.status == 200
    assert task["status"] == "executing" and task["result"] is None
    assert task["error"] == "timeout waiting for pipeline result"

    response = await client.post(f"/api/v1/run/{graph}", json={"input_value": "x"})
    body = await response.json()
    assert response.status == 504 and body["code"] == "RUN_TIMEOUT"
    # Neither wait stopped its run.
    for execution in (task["id"], body["execution_id"]):
        assert (await wait_for(client, execution, {"COMPLETE", "ERROR"}))["Status"] == "COMPLETE"


async def test_outputs_over_the_inline_limit_come_back_as_a_url(start_service):
    client = await start_service(invocations={"inline_output_bytes": 16})
    graph = (await save(client, one_node("echo"), [ECHO]))["graph_id"]
    small, large = {"a": 1}, {"text": "ünïcode, and longer than sixteen bytes"}
    _, body = await axiom(client, {"graph_id": graph, "input": small, "wait": True})
    assert body["result"]["output"] == small
    _, body = await axiom(client, {"graph_id": graph, "input": large, "wait": True})
    output = body["result"]["output"]
    assert output["content_type"] == "application/json" and output["size"] > 16
    async with client.session.get(output["url"]) as response:
        assert json.loads(await response.read()) == large


async def test_an_output_gone_from_its_store_is_reported_not_raised(start_service, tmp_path):
    data_dir = tmp_path / "data"
    client = await start_service(data_dir)
    graph = (await save(client, one_node("echo"), [ECHO]))["graph_id"]
    task = await (await client.post(f"/api/v1/scade/flow/{graph}/execute", json={})).json()
    run = await wait_for(client, task["execution_id"], {"COMPLETE"})
    reply = data_dir / "objects" / "default" / "data" / run["Artifacts"]["reply"]["ObjectName"]
    reply.unlink()

    task = await (await client.get(f"/api/v1/task/{task['id']}")).json()
    assert task["status"] == 4
    assert task["result"] == {
        "error": f"output 'reply' could not be read: run '{run['ID']}' has no artifact on edge "
        "'reply': the object is gone from its store"
    }
