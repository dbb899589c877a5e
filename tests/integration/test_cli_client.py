"""pipewell status, logs and cancel against the real service."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.cli import main
from tests.helpers import busybox_def, chain_flow, free_port, run_chain, submit, upload

pytestmark = pytest.mark.docker


async def pipewell(*argv: str) -> int:
    # The service answers on this loop: the blocking CLI runs in a thread.
    return await asyncio.to_thread(main, list(argv))


async def test_a_cancelled_running_node_reads_stopped_not_failed(start_service, capsys):
    client = await start_service()
    server = str(client.make_url("")).rstrip("/")
    sleepy = busybox_def("sleepy", "sh -c 'sleep 60; cp ${in} ${out}'")
    run = await submit(client, chain_flow("sleepy", "sleepy"), [sleepy])
    await upload(client, run, "src", b"x")
    for _ in range(600):
        status = await (await client.get(f"/api/v1/flow/status/{run['ID']}")).json()
        if status["NodeState"]["n0"]["Status"] == "RUNNING":
            break
        await asyncio.sleep(0.1)
    capsys.readouterr()
    assert await pipewell("cancel", run["ID"], "--server", server) == 0
    assert await pipewell("status", run["ID"], "--server", server) == 0
    lines = capsys.readouterr().out.splitlines()
    at = len(lines) - 1 - lines[::-1].index(f"run {run['ID']}: STOPPED")  # status's, after cancel's
    first, second = lines[at + 1].split(), lines[at + 2].split()
    assert first[:2] == ["n0", "STOPPED"] and second[:2] == ["n1", "IDLE"]
    assert "stopped: the run was cancelled on request" in lines[at + 1]
    assert not any("ERROR" in line or "failed" in line for line in lines[at:])


async def test_status_logs_and_cancel_of_real_runs(start_service, capsys):
    client = await start_service()
    server = str(client.make_url("")).rstrip("/")
    defs = [busybox_def("upper", "sh -c 'echo shouting; tr a-z A-Z < ${in} > ${out}'")]
    run, done = await run_chain(client, defs, "upper", data=b"quiet")
    assert done["Status"] == "COMPLETE"
    capsys.readouterr()

    assert await pipewell("status", run["ID"], "--server", server) == 0
    lines = capsys.readouterr().out.splitlines()
    at = lines.index(f"run {run['ID']}: COMPLETE")
    assert lines[at + 1].split() == ["n0", "COMPLETE", "attempt", "1/3"]

    assert await pipewell("logs", run["ID"], "--server", server, "--node", "n0") == 0
    logs = capsys.readouterr().out.splitlines()
    assert any(line.endswith("n0 stdout: shouting") for line in logs), logs
    assert any("n0 pipewell: attempt 1 succeeded" in line for line in logs), logs

    waiting = await submit(client, chain_flow("upper", name="waiting"), defs)
    assert await pipewell("status", waiting["ID"], "--server", server) == 0
    assert "waiting for an upload to edge 'src'" in capsys.readouterr().out
    assert await pipewell("cancel", waiting["ID"], "--server", server) == 0
    # (The in-process service logs to the same captured stdout.)
    assert f"run {waiting['ID']}: STOPPED" in capsys.readouterr().out.splitlines()
    assert await pipewell("cancel", waiting["ID"], "--server", server) == 1
    assert "has ended already (STOPPED)" in capsys.readouterr().err
    # --follow returns once the run has ended.
    assert await pipewell("logs", waiting["ID"], "--server", server, "--follow") == 0

    # Newest first, this tenant's: the cancelled run, then the completed one.
    assert await pipewell("runs", "--server", server) == 0
    table = capsys.readouterr().out.splitlines()
    header = table.index(next(line for line in table if line.startswith("ID ")))
    first, second = table[header + 1].split(), table[header + 2].split()
    assert first[:3] == [waiting["ID"], "STOPPED", "waiting"]
    assert second[:3] == [run["ID"], "COMPLETE", "chain"]
    assert second[-1] == "s" and float(second[-2]) > 0
    response = await client.get("/api/v1/flow/runs?limit=0")
    assert response.status == 400 and (await response.json())["code"] == "LIMIT_INVALID"
    response = await client.get("/api/v1/flow/runs?limit=1")
    assert [r["ID"] for r in (await response.json())["runs"]] == [waiting["ID"]]

    # An ID is one path segment: this one cannot reach the cancel endpoint.
    assert await pipewell("status", f"../cancel/{run['ID']}", "--server", server) == 1
    assert "Flow run does not exist." in capsys.readouterr().err
    assert await pipewell("status", "f" * 32, "--server", server) == 1
    assert "Flow run does not exist. (400)" in capsys.readouterr().err
    assert await pipewell("logs", run["ID"], "--server", server, "--node", "nope") == 1
    assert "has no node 'nope'; its nodes: n0" in capsys.readouterr().err
    nobody = f"http://127.0.0.1:{free_port()}"
    assert await pipewell("status", run["ID"], "--server", nobody) == 2
    assert f"no answer from {nobody}: ConnectionError" in capsys.readouterr().err
