"""Tenants under load through the real service and real containers: a tenant's backlog
never holds up another tenant's run, a higher Priority goes first, a tenant's quota
of runs queues or refuses (429 with Retry-After, nothing kept), and a tier's backlog
bound refuses new runs (429 QUEUE_FULL)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import busybox_def, wait_for

pytestmark = pytest.mark.docker

SLEEP = busybox_def("sleep", "sh -c 'sleep 0.4; echo done > ${out}'", Tier="c-nano")
SLEEPER = {
    "Name": "sleeper",
    "Nodes": [{"ID": "s", "Uses": "test/sleep", "Outputs": [{"Name": "out", "Edge": "out"}]}],
}


def key_for(capsys, data_dir: Path, name: str, *extra: str) -> dict[str, str]:
    from orchestrator.cli import main

    capsys.readouterr()  # the service's log so far
    assert main(["keys", "create", "--name", name, "--data-dir", str(data_dir), *extra]) == 0
    return {"Authorization": f"Bearer {capsys.readouterr().out.strip().splitlines()[-1]}"}


async def start(client, headers: dict[str, str] | None = None, **extra: Any):
    # NoCache: the same work every time, and every run must run.
    body = {"Flow": SLEEPER, "NodeDefs": [SLEEP], "NoCache": True, **extra}
    return await client.post("/api/v1/flow/test", json=body, headers=headers)


async def started(client, headers: dict[str, str] | None = None, **extra: Any) -> str:
    response = await start(client, headers, **extra)
    assert response.status == 200, await response.text()
    return (await response.json())["ID"]


async def statuses(client, run_ids: list[str], headers: dict[str, str] | None = None):
    found = []
    for run_id in run_ids:
        response = await client.get(f"/api/v1/flow/status/{run_id}", headers=headers)
        found.append((await response.json())["Status"])
    return found


async def test_a_tenants_backlog_does_not_hold_up_another_tenants_run(
    start_service, tmp_path, capsys
):
    data_dir = tmp_path / "data"
    client = await start_service(data_dir, auth="required", worker={"max_parallel": 2})
    big = key_for(capsys, data_dir, "big", "--tenant", "big")
    small = key_for(capsys, data_dir, "small", "--tenant", "small")
    backlog = [await started(client, big) for _ in range(30)]
    single = await started(client, small)
    await wait_for(client, single, {"COMPLETE"}, headers=small)
    # 30 runs of 0.4 s on 2 slots take 6 s: the small tenant's went next, not last.
    left = [s for s in await statuses(client, backlog, big) if s != "COMPLETE"]
    assert len(left) >= 20, left
    for run_id in backlog:
        await wait_for(client, run_id, {"COMPLETE"}, headers=big)


async def test_a_higher_priority_goes_first(start_service):
    client = await start_service(worker={"max_parallel": 1})
    backlog = [await started(client) for _ in range(15)]
    urgent = await started(client, Priority=50)
    status = await wait_for(client, urgent, {"COMPLETE"})
    assert status.get("Priority") is None  # a submission's field, not the run's
    left = [s for s in await statuses(client, backlog) if s != "COMPLETE"]
    assert len(left) >= 10, left
    refused = await start(client, Priority=101)
    assert refused.status == 400


async def test_a_tenants_quota_queues_runs_beyond_it_and_refuses_past_its_queue(
    start_service, tmp_path, capsys
):
    data_dir = tmp_path / "data"
    client = await start_service(
        data_dir, auth="required", tenants={"capped": {"running": 1, "queued": 2}}
    )
    capped = key_for(capsys, data_dir, "capped", "--tenant", "capped")
    other = key_for(capsys, data_dir, "other", "--tenant", "other")
    runs = [await started(client, capped) for _ in range(3)]
    refused = await start(client, capped)
    assert refused.status == 429, await refused.text()
    assert refused.headers["Retry-After"] == "10"
    body = await refused.json()
    assert body["code"] == "QUOTA_EXCEEDED"
    assert "3 runs accepted and not ended" in body["message"]
    assert "1 running at once, 2 more queued" in body["message"]
    # Nothing of the refused run was kept.
    listed = await client.get("/api/v1/flow/runs", headers=capped)
    assert len((await listed.json())["runs"]) == 3
    # Another tenant is not bound by it.
    assert (await start(client, other)).status == 200

    # One at a time: each run's node started only after the one before it ended (from
    # its log, read once all ended: three reads of a moment apart can straddle a hand-over).
    spans = []
    for run_id in runs:
        done = await wait_for(client, run_id, {"COMPLETE"}, headers=capped)
        logs = done["NodeState"]["s"]["Logs"]
        began = next(r["timestamp"] for r in logs if "started on worker" in r["message"])
        ended = next(r["timestamp"] for r in logs if "succeeded" in r["message"])
        spans.append((began, ended))
    spans.sort()
    for (_, ended), (began, _) in zip(spans, spans[1:], strict=False):
        assert began > ended, spans
    assert (await start(client, capped)).status == 200  # room again


async def test_runs_sent_at_once_are_counted_against_the_quota_together(
    start_service, tmp_path, capsys
):
    data_dir = tmp_path / "data"
    client = await start_service(
        data_dir, auth="required", tenants={"burst": {"running": 1, "queued": 2}}
    )
    burst = key_for(capsys, data_dir, "burst", "--tenant", "burst")
    answers = await asyncio.gather(*(start(client, burst) for _ in range(12)))
    codes = sorted(answer.status for answer in answers)
    assert codes == [200] * 3 + [429] * 9, codes


async def test_over_refuse_and_a_full_tier_answer_429(start_service, tmp_path, capsys):
    data_dir = tmp_path / "data"
    client = await start_service(
        data_dir,
        auth="required",
        worker={"max_parallel": 1},
        quotas={"over": "refuse", "queued_per_tier": 6},
        tenants={"solo": {"running": 1}},
    )
    solo = key_for(capsys, data_dir, "solo", "--tenant", "solo")
    wide = key_for(capsys, data_dir, "wide", "--tenant", "wide")
    first = await started(client, solo)
    refused = await start(client, solo)
    assert refused.status == 429 and (await refused.json())["code"] == "QUOTA_EXCEEDED"
    await wait_for(client, first, {"COMPLETE"}, headers=solo)
    assert (await start(client, solo)).status == 200

    fan = {
        "Name": "fan",
        "Nodes": [
            {"ID": f"s{n}", "Uses": "test/sleep", "Outputs": [{"Name": "out", "Edge": f"o{n}"}]}
            for n in range(12)
        ],
    }
    body = {"Flow": fan, "NodeDefs": [SLEEP], "NoCache": True}
    response = await client.post("/api/v1/flow/test", json=body, headers=wide)
    assert response.status == 200, await response.text()
    fan_id = (await response.json())["ID"]
    await asyncio.sleep(0.5)
    full = await start(client, wide)
    assert full.status == 429, await full.text()
    body = await full.json()
    assert body["code"] == "QUEUE_FULL" and "tier c-nano" in body["message"]
    assert full.headers["Retry-After"] == "10"
    await wait_for(client, fan_id, {"COMPLETE"}, headers=wide, timeout=120)
    assert (await start(client, wide)).status == 200


async def test_a_tenant_storing_more_than_its_quota_gets_429_until_its_runs_expire(
    start_service, tmp_path, capsys
):
    from orchestrator.api.resources import SERVICE

    data_dir = tmp_path / "data"
    client = await start_service(
        data_dir,
        auth="required",
        retention={"min_lifetime": 1},
        quotas={"measure_every": 3600},
        tenants={"hoard": {"stored_bytes": 3000}},
    )
    hoard = key_for(capsys, data_dir, "hoard", "--tenant", "hoard")
    other = key_for(capsys, data_dir, "other", "--tenant", "other")
    copy = busybox_def("copy", "cp ${in} ${out}", Tier="c-nano")
    flow = {
        "Name": "keep",
        "Lifetime": "1s",
        "Nodes": [{"ID": "c", "Uses": "test/copy", "Inputs": [{"Name": "in", "Edge": "src"}],
                   "Outputs": [{"Name": "out", "Edge": "out"}]}],
    }  # fmt: skip
    response = await client.post(
        "/api/v1/flow/test", json={"Flow": flow, "NodeDefs": [copy]}, headers=hoard
    )
    run = await response.json()
    async with client.session.put(run["WaitingURLs"][0]["PutURL"], data=b"x" * 2000) as put:
        assert put.status == 200
    await wait_for(client, run["ID"], {"COMPLETE"}, headers=hoard)

    service = client.app[SERVICE]
    measured = await service.usage.measure()
    assert measured["hoard"] == 4000  # the input and its copy
    refused = await start(client, hoard)
    assert refused.status == 429, await refused.text()
    body = await refused.json()
    assert (
        body["code"] == "QUOTA_EXCEEDED"
        and "stores 3.9 KiB, its most is 2.9 KiB" in (body["message"])
    )
    assert refused.headers["Retry-After"] == "60"
    assert (await start(client, other)).status == 200
    own = await (await client.get("/api/v1/workers", headers=hoard)).json()
    assert own["tenants"] == [
        {"tenant": "hoard", "runs": 0, "running": 0, "running_limit": 100,
         "queued_limit": 1000, "stored_bytes": 4000, "stored_limit": 3000}
    ]  # fmt: skip

    await asyncio.sleep(1.1)
    await service.retention.sweep()
    assert (await service.usage.measure()).get("hoard", 0) == 0
    assert (await start(client, hoard)).status == 200
