"""Status reads served from the run's cached JSON: every read after a change shows it,
live runs and runs read back from the database alike, byte for byte what the FlowRun
serializes to."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from orchestrator.api.resources import QUEUE, SCHEDULER, SERVICE
from orchestrator.messages import AttemptCleanedUp, AttemptLog
from orchestrator.models import LogRecord
from orchestrator.service.runs import EndedRuns
from tests.helpers import busybox_def, chain_flow, create_key, submit, upload, wait_for

pytestmark = pytest.mark.docker

TALKS = busybox_def(
    "talks", "sh -c 'echo first; sleep 0.5; echo second; cp ${in} ${out}'", MaxAttempts=1
)
JSON = "application/json; charset=utf-8"


async def status(client, run_id: str, headers: dict[str, str] | None = None) -> bytes:
    response = await client.get(f"/api/v1/flow/status/{run_id}", headers=headers)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == JSON
    return await response.read()


def fresh(client, run_id: str) -> bytes:
    """The run as the scheduler holds it, serialized now (what every read answered before
    the cache)."""
    return client.server.app[SCHEDULER].runs[run_id].run.model_dump_json().encode()


async def until(client, run_id: str, check, timeout: float = 30.0) -> dict[str, Any]:
    """Poll the status until ``check(run)`` holds: a stale cache would never get there."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(f"/api/v1/flow/status/{run_id}")
        run = await response.json()
        if check(run):
            return run
        assert time.monotonic() < deadline, f"status never showed the change: {run}"
        await asyncio.sleep(0.02)


def messages(run: dict[str, Any]) -> list[str]:
    return [line["message"] for line in run["NodeState"]["n0"]["Logs"]]


async def test_each_read_of_a_live_run_shows_its_latest_state(start_service):
    client = await start_service()
    run = await submit(client, chain_flow("talks"), [TALKS])
    waiting = await status(client, run["ID"])
    assert waiting == fresh(client, run["ID"])
    assert b'"WAITING"' in waiting and b'"PutURL"' in waiting
    await upload(client, run, "src", b"payload")

    # Read as fast as it goes while the node runs: every state reached is shown.
    seen = set()
    while True:
        body = await status(client, run["ID"])
        seen.add(body)
        if b'"Status":"COMPLETE"' in body:
            break
        await asyncio.sleep(0.01)
    assert len(seen) > 1
    final = await status(client, run["ID"])
    assert final == fresh(client, run["ID"])
    done = await wait_for(client, run["ID"], {"COMPLETE"})
    assert done["WaitingURLs"] == [] and done["NodeState"]["n0"]["Status"] == "COMPLETE"
    assert {"first", "second"} <= set(messages(done))
    assert done["Artifacts"]["out"]["EdgeName"] == "out"


async def test_a_finished_run_still_shows_what_changes_after_its_end(start_service):
    client = await start_service()
    run = await submit(client, chain_flow("talks"), [TALKS])
    await upload(client, run, "src", b"x")
    await wait_for(client, run["ID"], {"COMPLETE"})
    await status(client, run["ID"])  # cached

    # The container's removal is reported after the result: it reaches the status.
    attempt = client.server.app[SCHEDULER].runs[run["ID"]].state("n0").attempt
    await client.server.app[QUEUE].put_message(
        AttemptCleanedUp(run_id=run["ID"], node_id="n0", attempt=attempt, remove_seconds=12.5)
    )
    shown = await until(
        client, run["ID"], lambda r: r["NodeState"]["n0"]["Timings"].get("remove") == 12.5
    )
    assert shown["Status"] == "COMPLETE"
    assert await status(client, run["ID"]) == fresh(client, run["ID"])

    # A change made to the FlowRun directly, not through RunState's methods, shows once
    # it is declared (a save alone no longer serializes the whole run again).
    held = client.server.app[SCHEDULER].runs[run["ID"]]
    held.run.error = "changed behind RunState's back"
    held.changed()
    assert b"changed behind RunState" in await status(client, run["ID"])


async def test_log_lines_and_outputs_show_on_the_next_read(start_service):
    client = await start_service()
    slow = busybox_def("slow", "sh -c 'sleep 3; cp ${in} ${out}'", MaxAttempts=1)
    run = await submit(client, chain_flow("slow"), [slow])
    await upload(client, run, "src", b"x")
    running = await until(client, run["ID"], lambda r: r["Status"] == "RUNNING")
    assert "Artifacts" in running and "out" not in running["Artifacts"]
    held = client.server.app[SCHEDULER].runs[run["ID"]]
    line = LogRecord(message="a line from the worker", stream="stdout", attempt=1)
    await client.server.app[QUEUE].put_message(
        AttemptLog(run_id=run["ID"], node_id="n0", attempt=held.state("n0").attempt, record=line)
    )
    await until(client, run["ID"], lambda r: "a line from the worker" in messages(r))
    # Straight into the state machine: the next read has it, no save needed.
    held.add_log("n0", LogRecord(message="added in place"))
    assert "added in place" in messages(
        await (await client.get(f"/api/v1/flow/status/{run['ID']}")).json()
    )
    done = await until(client, run["ID"], lambda r: r["Status"] == "COMPLETE", timeout=60)
    assert done["Artifacts"]["out"]["EdgeName"] == "out"
    assert await status(client, run["ID"]) == fresh(client, run["ID"])


async def test_a_run_read_back_from_the_database_answers_the_same(start_service, tmp_path, capsys):
    data_dir = tmp_path / "data"
    acme = {"x-api-key": create_key(capsys, data_dir, "acme-key", "acme")}
    globex = {"x-api-key": create_key(capsys, data_dir, "globex-key", "globex")}
    client = await start_service(data_dir, auth="required")
    body = {"Flow": chain_flow("talks"), "NodeDefs": [TALKS]}
    run = await (await client.post("/api/v1/flow/test", json=body, headers=acme)).json()
    await upload(client, run, "src", b"x")
    await wait_for(client, run["ID"], {"COMPLETE"}, headers=acme)
    live = await status(client, run["ID"], acme)
    flow_run = await client.server.app[SERVICE].runs.get(run["ID"])

    # The scheduler keeps only its latest finished runs: this one is read from SQLite,
    # then from the cache of ended runs.
    client.server.app[SCHEDULER].runs.pop(run["ID"])
    for _ in range(3):
        assert await status(client, run["ID"], acme) == live
        assert await client.server.app[SERVICE].runs.get(run["ID"]) == flow_run
        other = await client.get(f"/api/v1/flow/status/{run['ID']}", headers=globex)
        assert other.status == 400
        assert await other.text() == "Flow run does not exist."
    artifact = await client.get(f"/api/v1/flow/artifact/{run['ID']}/out", headers=acme)
    assert artifact.status == 200 and await artifact.read() == b"x"


def test_ended_runs_are_bounded_by_count_and_bytes():
    ended = EndedRuns(limit=3, max_bytes=100)
    for i in range(5):
        ended.put(f"r{i}", ("t", b"x" * 10))
    assert len(ended) == 3 and ended.get("r0") is None and ended.get("r4") is not None
    ended.get("r2")  # read: kept before r3
    ended.put("big", ("t", b"y" * 80))
    assert ended.get("r3") is None and ended.get("r2") is not None
    assert ended.bytes <= 100
    ended.put("huge", ("t", b"z" * 101))  # larger than the whole cache: not kept
    assert ended.get("huge") is None and ended.bytes <= 100
