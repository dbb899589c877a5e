"""The native API's contract for bad input, unknown runs, limits, health and events."""

from __future__ import annotations

import asyncio

from orchestrator.api.resources import SCHEDULER, SERVICE
from orchestrator.models import FlowRun
from tests.helpers import (
    busybox_def,
    chain_flow,
    containers_left,
    read_events,
    running_containers,
    submit,
    upload,
    wait_for,
)


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


async def test_graph_gives_a_runs_nodes_live_and_after_it_left_memory(start_service):
    client = await start_service()
    flow = chain_flow("a", "b", name="drawn")
    flow["Nodes"][1]["Flags"] = [{"Name": "mode", "Value": 2}]
    defs = [busybox_def("a", "cp ${in} ${out}"), busybox_def("b", "cp ${in} ${out}",
            Flags=[{"Name": "mode"}])]  # fmt: skip
    run = await submit(client, flow, defs)
    expected = {
        "Name": "drawn",
        "Nodes": [
            {"ID": "n0", "Uses": "test/a", "Inputs": [{"Name": "in", "Edge": "src"}],
             "Outputs": [{"Name": "out", "Edge": "e1"}], "Flags": [], "Command": None},
            {"ID": "n1", "Uses": "test/b", "Inputs": [{"Name": "in", "Edge": "e1"}],
             "Outputs": [{"Name": "out", "Edge": "out"}],
             "Flags": [{"Name": "mode", "Value": "2"}], "Command": None},
        ],
    }  # fmt: skip
    response = await client.get(f"/api/v1/flow/graph/{run['ID']}")
    assert response.status == 200
    assert await response.json() == expected
    await upload(client, run, "src", b"x")
    await wait_for(client, run["ID"], {"COMPLETE"})
    # A finished run the scheduler no longer holds is read from its saved state.
    client.server.app[SCHEDULER].runs.pop(run["ID"])
    assert await (await client.get(f"/api/v1/flow/graph/{run['ID']}")).json() == expected
    for run_id in ("nope", "0" * 32):
        unknown = await client.get(f"/api/v1/flow/graph/{run_id}")
        assert unknown.status == 400
        assert await unknown.text() == "Flow run does not exist."


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


async def test_cancel_stops_a_run_and_its_containers(start_service):
    client = await start_service()
    defs = [busybox_def("slow", "sh -c 'sleep 60; cp ${in} ${out}'"),
            busybox_def("copy", "cp ${in} ${out}")]  # fmt: skip
    run = await submit(client, chain_flow("slow", "copy"), defs)
    await upload(client, run, "src", b"x")
    await running_containers(run["ID"], seconds=30)
    response = await client.post(f"/api/v1/flow/cancel/{run['ID']}")
    assert response.status == 200, await response.text()
    stopped = await response.json()
    assert stopped["Status"] == "STOPPED"
    assert stopped["NodeState"]["n0"]["Status"] == "STOPPED"
    assert stopped["NodeState"]["n0"]["Error"] == "stopped: the run was cancelled on request"
    assert await containers_left(run["ID"], 15) == []
    await asyncio.sleep(0.5)
    after = await (await client.get(f"/api/v1/flow/status/{run['ID']}")).json()
    assert after["Status"] == "STOPPED"
    assert after["NodeState"]["n1"]["Status"] == "IDLE"  # never started
    again = await client.post(f"/api/v1/flow/cancel/{run['ID']}")
    assert again.status == 409
    assert await again.json() == {
        "code": "RUN_FINISHED",
        "message": f"run '{run['ID']}' has ended already (STOPPED): there is nothing to stop",
        "run_status": "STOPPED",
    }
    unknown = await client.post("/api/v1/flow/cancel/" + "0" * 32)
    assert (unknown.status, await unknown.text()) == (400, "Flow run does not exist.")


async def test_cancel_of_a_run_waiting_for_its_inputs(start_service):
    client = await start_service()
    run = await submit(client, chain_flow("copy"), [busybox_def("copy", "cp ${in} ${out}")])
    response = await client.post(f"/api/v1/flow/cancel/{run['ID']}")
    stopped = await response.json()
    assert (stopped["Status"], stopped["WaitingURLs"]) == ("STOPPED", [])


async def test_workers_lists_the_local_worker(start_service):
    client = await start_service(worker={"tiers": ["c-nano", "c-small"]})
    body = await (await client.get("/api/v1/workers")).json()
    [worker] = body["workers"]
    assert worker["tiers"] == ["c-nano", "c-small"]
    assert worker["running"] == 0 and worker["slots"] > 0
    assert body["queued"] == {}


async def test_a_pydantic_error_of_ours_is_a_500_not_the_callers_fault(start_service, monkeypatch):
    client = await start_service()

    async def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        FlowRun.model_validate({"ID": 1})  # a bug: raises pydantic's ValidationError

    monkeypatch.setattr(client.server.app[SERVICE].runs, "status_json", broken)
    response = await client.get("/api/v1/flow/status/" + "0" * 32)
    assert response.status == 500
    assert (await response.json())["code"] == "INTERNAL_ERROR"
    # A body that does not match the schema is still the caller's 400, with where.
    response = await client.post(
        "/api/v1/flow/test", json={"Flow": {"Name": "x", "Nodes": "no"}, "NodeDefs": []}
    )
    body = await response.json()
    assert response.status == 400 and body["code"] == "FLOW_INVALID"
    assert body["errors"][0]["field"] == "Flow.Nodes"
