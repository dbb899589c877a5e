"""SIGKILL the real ``pipewell dev`` mid-run, start it again: the run resumes and completes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import aiohttp
import pytest

from tests.helpers import busybox_def, free_port, labelled_containers, start_dev, wait_healthy

pytestmark = pytest.mark.docker


async def status(session: aiohttp.ClientSession, base: str, run_id: str) -> dict:
    async with session.get(f"{base}/api/v1/flow/status/{run_id}") as response:
        assert response.status == 200
        return await response.json()


async def test_sigkill_then_restart_resumes_unfinished_runs(tmp_path, launched):
    data_dir, port = tmp_path / "data", free_port()
    log = (tmp_path / "service.log").open("ab")
    base = f"http://127.0.0.1:{port}"
    flow = {
        "Name": "slow-chain",
        "Nodes": [
            {
                "ID": "slow",
                "Uses": "test/slow",
                "Inputs": [{"Name": "in", "Edge": "src"}],
                "Outputs": [{"Name": "out", "Edge": "mid"}],
            },
            {
                "ID": "copy",
                "Uses": "test/copy",
                "Inputs": [{"Name": "in", "Edge": "mid"}],
                "Outputs": [{"Name": "out", "Edge": "out"}],
            },
        ],
    }
    defs = [
        busybox_def("slow", "sh -c 'sleep 4; cp ${in} ${out}'"),
        busybox_def("copy", "cp ${in} ${out}"),
    ]
    waiting = {
        "Name": "waiting",
        "Nodes": [
            {
                "ID": "copy",
                "Uses": "test/copy",
                "Inputs": [{"Name": "in", "Edge": "src"}],
                "Outputs": [{"Name": "out", "Edge": "out"}],
            }
        ],
    }

    config = str(launched.config_file(tmp_path))
    process = start_dev(data_dir, port, log, "--config", config)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(session, base)
            await launched.ready_at(session, base, *defs)
            async with session.post(
                f"{base}/api/v1/flow/test", json={"Flow": flow, "NodeDefs": defs}
            ) as response:
                run = await response.json()
            async with session.post(
                f"{base}/api/v1/flow/test", json={"Flow": waiting, "NodeDefs": defs}
            ) as response:
                idle = await response.json()
            async with session.put(run["WaitingURLs"][0]["PutURL"], data=b"survivor") as r:
                assert r.status == 200
            # Kill the service while the first node's container runs.
            for _ in range(100):
                if await asyncio.to_thread(labelled_containers, run["ID"]):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the first node never got a container")
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

            process = start_dev(data_dir, port, log, "--config", config)
            await wait_healthy(session, base)
            for _ in range(300):
                current = await status(session, base, run["ID"])
                if current["Status"] in ("COMPLETE", "ERROR"):
                    break
                await asyncio.sleep(0.1)
            assert current["Status"] == "COMPLETE", current
            messages = [r["message"] for r in current["NodeState"]["slow"]["Logs"]]
            assert "service restarted: dispatching this node again" in messages
            assert not any(m.startswith("waiting: no worker offers") for m in messages)
            async with session.get(f"{base}/api/v1/flow/artifact/{run['ID']}/out") as response:
                assert await response.read() == b"survivor"
            # The run that was waiting for its upload still takes it through the old URL.
            async with session.put(idle["WaitingURLs"][0]["PutURL"], data=b"late") as r:
                assert r.status == 200
            for _ in range(200):
                if (await status(session, base, idle["ID"]))["Status"] == "COMPLETE":
                    break
                await asyncio.sleep(0.1)
            async with session.get(f"{base}/api/v1/flow/artifact/{idle['ID']}/out") as response:
                assert await response.read() == b"late"
        assert labelled_containers(run["ID"]) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
        log.close()
