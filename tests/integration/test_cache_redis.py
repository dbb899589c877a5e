"""The result cache with Redis workers (worker processes, a real redis-server): identical
runs at once compute once whichever worker takes them, a worker confirms the image of a
cached result, and a retry runs on them too."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.helpers import artifact, busybox_def, cached, chain_flow, submit, upload, wait_for
from tests.integration.test_redis_scaleout import pytestmark, redis_service

__all__ = ["pytestmark"]

SLOW = busybox_def(
    "slow",
    "sh -c 'sleep 1; tr a-z A-Z < ${in} > ${out}'",
    Inputs=[{"Name": "in"}],
    Outputs=[{"Name": "out"}],
    Tier="c-nano",
)


async def test_identical_runs_on_redis_workers_compute_once(
    redis_server, start_service, start_worker
):
    client = await redis_service(start_service, redis_server)
    start_worker("w1")
    start_worker("w2")

    async def one() -> dict[str, Any]:
        run = await submit(client, chain_flow("slow"), [SLOW])
        await upload(client, run, "src", b"redis")
        return await wait_for(client, run["ID"], {"COMPLETE", "ERROR"}, timeout=60)

    runs = await asyncio.gather(*(one() for _ in range(6)))
    assert all(run["Status"] == "COMPLETE" for run in runs), runs
    computed = [run["ID"] for run in runs if cached(run)["n0"] is None]
    assert len(computed) == 1, [cached(run) for run in runs]
    for run in runs:
        assert await artifact(client, run["ID"], "out") == b"REDIS"

    # Later, the same again: a worker confirms the image, and no container runs.
    later = await one()
    assert cached(later) == {"n0": {"Run": computed[0], "Node": "n0"}}
    logs = [line["message"] for line in later["NodeState"]["n0"]["Logs"]]
    assert any("no container ran" in line for line in logs), logs

    # A retry of a run that failed runs on them too, taking over what succeeded.
    failing = busybox_def("fail", "sh -c 'exit 4'", Inputs=[{"Name": "in"}],
                          Outputs=[{"Name": "out"}], MaxAttempts=1)  # fmt: skip
    run = await submit(client, chain_flow("slow", "fail"), [SLOW, failing])
    await upload(client, run, "src", b"redis")
    failed = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"}, timeout=60)
    assert failed["Status"] == "ERROR"
    response = await client.post(f"/api/v1/flow/retry/{run['ID']}")
    assert response.status == 200, await response.text()
    again = await wait_for(client, (await response.json())["ID"], {"COMPLETE", "ERROR"})
    assert again["Status"] == "ERROR"
    assert cached(again)["n0"] == {"Run": run["ID"], "Node": "n0"}
    assert again["NodeState"]["n1"]["Error"].startswith("command exited with code 4")
