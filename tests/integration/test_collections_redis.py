"""A map over Redis workers, items being tasks any worker may take: a worker killed with
SIGKILL in the middle of a map, and the service killed with SIGKILL in the middle of
one, lose no item and leave every item's output there once."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers import (
    busybox_def,
    containers_left,
    free_port,
    start_dev,
    submit,
    wait_for,
    wait_healthy,
)
from tests.integration.test_redis_scaleout import (  # the fixtures: conftest.py
    RECLAIM,
    pytestmark,
    redis_service,
    settled,
    workers_once,
)

__all__ = ["pytestmark"]

ITEMS = 16
SLOW_UPPER = busybox_def(
    "slow-upper",
    "sh -c 'sleep 1; tr a-z A-Z < ${in} > ${out}'",
    Inputs=[{"Name": "in"}],
    Outputs=[{"Name": "out"}],
    Tier="c-nano",
)


def flow() -> dict[str, Any]:
    return {
        "Name": "batch",
        "Collections": ["docs"],
        "Nodes": [
            {"ID": "upper", "Uses": "test/slow-upper", "Inputs": [{"Name": "in", "Edge": "docs"}],
             "Outputs": [{"Name": "out", "Edge": "loud"}]},
        ],
    }  # fmt: skip


def batch() -> tuple[bytes, dict[str, bytes]]:
    files = {f"doc-{n:02}.txt": f"item {n}".encode() for n in range(ITEMS)}
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return data.getvalue(), files


async def spares_left(worker: str, seconds: float) -> list[str]:
    """Names of the spares ``worker`` started that are still there after ``seconds``
    (or as soon as there are none)."""
    deadline = time.monotonic() + seconds
    while True:
        found = await asyncio.to_thread(
            subprocess.run,
            ["docker", "ps", "-a", "--filter", "label=pipewell.worker=" + worker,
             "--format", "{{.Names}}"],
            capture_output=True, text=True,
        )  # fmt: skip
        names = found.stdout.split()
        if not names or time.monotonic() > deadline:
            return names
        await asyncio.sleep(0.5)


async def outputs_once(session: aiohttp.ClientSession, base: str, run_id: str) -> dict[str, bytes]:
    """Every item of the run's output collection, by name (a name twice fails)."""
    async with session.get(f"{base}/api/v1/flow/collection/{run_id}/loud?limit=1000") as got:
        page = await got.json()
    names = [item["Name"] for item in page["Items"]]
    assert len(names) == len(set(names)) == page["Count"], page
    found = {}
    for item in page["Items"]:
        async with session.get(item["URL"]) as response:
            found[item["Name"]] = await response.read()
    return found


async def test_a_worker_killed_mid_map_loses_no_item(redis_server, start_service, start_worker):
    client = await redis_service(start_service, redis_server)
    # Two slots each: sixteen items go as four batches of four, two a worker.
    doomed = start_worker("w1", "--concurrency", "2")
    start_worker("w2", "--concurrency", "2")
    # Both heard from before the map is batched: its batches are sized by their slots.
    await workers_once(client, lambda body: len(body["workers"]) == 2)
    run = await submit(client, flow(), [SLOW_UPPER])
    archive, files = batch()
    put = next(w["PutURL"] for w in run["WaitingURLs"])
    async with client.session.put(put, data=archive) as response:
        assert response.status == 200, await response.text()
    await workers_once(
        client,
        lambda body: (
            sorted((w["name"], w["running"] > 0) for w in body["workers"])
            == [("w1", True), ("w2", True)]
        ),
        seconds=60,
    )
    os.killpg(doomed.pid, signal.SIGKILL)
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"}, timeout=120)
    assert done["Status"] == "COMPLETE", done
    assert done["NodeState"]["upper"]["Items"]["Counts"] == {"COMPLETE": ITEMS}
    base = str(client.make_url("")).rstrip("/")
    found = await outputs_once(client.session, base, run["ID"])
    assert found == {name: content.upper() for name, content in files.items()}
    # The items w1 held ran again elsewhere, under the same attempt numbers.
    page = await (await client.get(f"/api/v1/flow/items/{run['ID']}/upper?limit=1000")).json()
    assert {item["Attempt"] for item in page["Items"]} == {1}
    # w1's containers (its batches', its spares) are removed by w2 once w1 counts as dead.
    assert await containers_left(run["ID"], 4 * RECLAIM + 10) == []
    assert await spares_left("w1", 4 * RECLAIM + 10) == []


async def test_a_service_killed_mid_map_resumes_every_item_once(
    redis_server, start_worker, tmp_path: Path
):
    start_worker("w1")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    flags = ("--queue", redis_server.url, "--no-local-worker")
    archive, files = batch()
    with (tmp_path / "service.log").open("ab") as log:
        service = start_dev(tmp_path / "service", port, log, *flags)
        try:
            async with aiohttp.ClientSession() as session:
                await wait_healthy(session, base)
                body = {"Flow": flow(), "NodeDefs": [SLOW_UPPER]}
                async with session.post(f"{base}/api/v1/flow/test", json=body) as response:
                    run = await response.json()
                async with session.put(run["WaitingURLs"][0]["PutURL"], data=archive) as put:
                    assert put.status == 200, await put.text()
                # Some items done, others still to run, when the service dies.
                deadline = time.monotonic() + 60
                while True:
                    async with session.get(f"{base}/api/v1/flow/status/{run['ID']}") as got:
                        counts = (await got.json())["NodeState"]["upper"]["Items"]["Counts"]
                    if counts.get("COMPLETE", 0) >= 2:
                        break
                    assert time.monotonic() < deadline, counts
                    await asyncio.sleep(0.1)
                assert counts.get("COMPLETE", 0) < ITEMS
                os.killpg(service.pid, signal.SIGKILL)
                service.wait(10)
                service = start_dev(tmp_path / "service", port, log, *flags)
                await wait_healthy(session, base)
                done = await settled(session, base, run["ID"])
                assert done["Status"] == "COMPLETE", done
                found = await outputs_once(session, base, run["ID"])
                assert found == {name: content.upper() for name, content in files.items()}
                async with session.get(
                    f"{base}/api/v1/flow/items/{run['ID']}/upper?limit=1000"
                ) as got:
                    page = await got.json()
        finally:
            if service.poll() is None:
                os.killpg(service.pid, signal.SIGTERM)
            service.wait(30)
    assert len(page["Items"]) == ITEMS
    assert all(item["Status"] == "COMPLETE" for item in page["Items"])
    # An item whose transfer met the service down (its store is the service's) failed
    # that attempt and ran once more; none ran beyond that.
    assert {item["Attempt"] for item in page["Items"]} <= {1, 2}
    assert await containers_left(run["ID"], 30) == []
