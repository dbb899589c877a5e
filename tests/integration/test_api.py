"""The native API's contract for bad input, unknown runs, limits, health and events."""

from __future__ import annotations

import asyncio

from tests.helpers import busybox_def, chain_flow, read_events, submit, upload, wait_for


async def test_healthz(start_service):
    client = await start_service()
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok", "docker": "ok"}


async def test_unknown_run_is_400_with_the_seed_text(start_service):
    client = await start_service()
    for run_id in ("nope", "0" * 32):
        response = await client.get(f"/api/v1/flow/status/{run_id}")
        assert response.status == 400
        assert await response.text() == "Flow run does not exist."


async def test_invalid_flow_reports_every_problem(start_service):
    client = await start_service()
    flow = {
        "Name": "bad",
        "Nodes": [
            {
                "ID": "a",
                "Uses": "nobody/none",
                "Inputs": [{"Name": "in", "Edge": "x"}],
                "Outputs": [{"Name": "out", "Edge": "y"}],
            },
            {
                "ID": "a",
                "Uses": "test/t",
                "Inputs": [{"Name": "in", "Edge": "y"}],
                "Outputs": [{"Name": "out", "Edge": "x"}],
            },
        ],
    }
    defs = [busybox_def("t", "true", Tier="c-huge")]
    response = await client.post("/api/v1/flow/test", json={"Flow": flow, "NodeDefs": defs})
    assert response.status == 400
    body = await response.json()
    assert body["code"] == "FLOW_INVALID"
    codes = {e["code"] for e in body["errors"]}
    assert {"NODE_001", "NODE_004", "NODE_007", "FLOW_001"} <= codes
    assert all(e["message"] for e in body["errors"])


async def test_schema_errors_say_where(start_service):
    client = await start_service()
    defs = [busybox_def("t", "true", MaxAttempts=0)]
    flow = {"Name": "f", "Nodes": [{"ID": "a", "Uses": "test/t", "Typo": 1}]}
    response = await client.post("/api/v1/flow/test", json={"Flow": flow, "NodeDefs": defs})
    assert response.status == 400
    body = await response.json()
    fields = {e["field"] for e in body["errors"]}
    assert "Flow.Nodes.0.Typo" in fields
    assert "NodeDefs.0.MaxAttempts" in fields


async def test_malformed_json_is_400_json(start_service):
    client = await start_service()
    response = await client.post(
        "/api/v1/flow/test", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    body = await response.json()
    assert body["code"] == "BODY_MALFORMED"
    assert "not valid JSON" in body["message"]


async def test_body_over_the_limit_is_413(start_service):
    client = await start_service(max_body_bytes=1024)
    response = await client.post(
        "/api/v1/flow/test", data=b"x" * 4096, headers={"Content-Type": "application/json"}
    )
    assert response.status == 413
    assert (await response.json())["code"] == "BODY_TOO_LARGE"


async def test_key_escaping_its_bucket_is_rejected(start_service):
    client = await start_service()
    flow = {
        "Name": "f",
        "DataWells": [
            {"Edge": "src", "Source": "upload", "Key": "../../etc/${RUN_ID}"},
            {"Edge": "out"},
        ],
        "Nodes": [
            {
                "ID": "a",
                "Uses": "test/t",
                "Inputs": [{"Name": "in", "Edge": "src"}],
                "Outputs": [{"Name": "out", "Edge": "out"}],
            }
        ],
    }
    response = await client.post(
        "/api/v1/flow/test", json={"Flow": flow, "NodeDefs": [busybox_def("t", "true")]}
    )
    assert response.status == 400
    errors = (await response.json())["errors"]
    assert [e["code"] for e in errors] == ["WELL_005"]


async def test_tampered_and_expired_upload_urls_are_refused(start_service):
    client = await start_service(storage={"url_ttl": 1})
    flow = chain_flow("t")
    run = await submit(client, flow, [busybox_def("t", "cp ${in} ${out}")])
    url = run["WaitingURLs"][0]["PutURL"]
    tampered = url.replace("/src?", "/other?")
    async with client.session.put(tampered, data=b"x") as response:
        assert response.status == 403
    await asyncio.sleep(2.1)
    async with client.session.put(url, data=b"x") as response:
        assert response.status == 403
        assert "expired" in (await response.json())["message"]
    # The input never came in time: the run ends, saying so (test_upload_safety.py).
    status = await wait_for(client, run["ID"], {"ERROR"}, timeout=10)
    assert "was not uploaded before its WaitingURL expired" in status["Error"]


async def test_events_stream_ends_with_the_final_run(start_service):
    client = await start_service()
    flow = chain_flow("t")
    run = await submit(client, flow, [busybox_def("t", "sh -c 'echo working; cp ${in} ${out}'")])
    response = await client.get(f"/api/v1/flow/events/{run['ID']}")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    await upload(client, run, "src", b"data")
    events = await read_events(response)
    names = [n for n, _ in events]
    assert names[0] == "status" and names[-1] == "end"
    assert events[-1][1]["Status"] == "COMPLETE"
    assert any(n == "log" and d["message"] == "working" and d["node"] == "n0" for n, d in events)


async def test_validate_reports_without_running(start_service):
    client = await start_service()
    good = {"Flow": chain_flow("t"), "NodeDefs": [busybox_def("t", "cp ${in} ${out}")]}
    response = await client.post("/api/v1/flow/validate", json=good)
    assert await response.json() == {"valid": True, "errors": [], "warnings": []}
    bad = {"Flow": chain_flow("missing"), "NodeDefs": []}
    body = await (await client.post("/api/v1/flow/validate", json=bad)).json()
    assert body["valid"] is False
    assert [(e["code"], e["node"]) for e in body["errors"]] == [("NODE_001", "n0")]


async def test_flows_can_be_sent_as_yaml(start_service):
    client = await start_service()
    body = """
Flow:
  Name: from-yaml
  Nodes:
    - ID: only
      Uses: test/t
      Inputs: [{Name: in, Edge: src}]
      Outputs: [{Name: out, Edge: out}]
NodeDefs:
  - {Publisher: test, Name: t, Image: "pipewell/busybox:latest",
     Command: {Name: run, Exec: "cp ${in} ${out}"}}
"""
    response = await client.post("/api/v1/flow/test", data=body,
                                 headers={"Content-Type": "application/yaml"})  # fmt: skip
    assert response.status == 200, await response.text()
    run = await response.json()
    assert run["Status"] == "WAITING"
    assert run["NodeState"]["only"]["Status"] == "IDLE"
