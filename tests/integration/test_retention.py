"""Retention through the real service, real containers and the real local store: an ended
run goes with its rows and objects once its lifetime ran out, and nothing else does (a run
still within its lifetime, a static object, another tenant's); a DataWell's Lifetime keeps
an edge shorter or longer than its run; a deleted run answers 410 RUN_EXPIRED."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from orchestrator.api.errors import UNKNOWN_RUN_TEXT
from orchestrator.api.resources import STORES
from orchestrator.database import STATE_DB
from tests.helpers import (
    artifact,
    busybox_def,
    chain_flow,
    free_port,
    start_dev,
    wait_for,
    wait_healthy,
)

pytestmark = pytest.mark.docker

COPY = busybox_def("copy", "cp ${in} ${out}", Tier="c-nano")
# Lifetimes of a second or two, so that tests wait that long and no more.
SHORT = {"min_lifetime": 1, "sweep_every": 3600}


def rows(data_dir: Path, run_id: str) -> dict[str, int]:
    """The run's rows in each table, read beside the service as an operator would."""
    database = f"file:{data_dir / STATE_DB}?mode=ro"
    with contextlib.closing(sqlite3.connect(database, uri=True)) as conn:
        counts = {
            table: conn.execute(
                f"SELECT count(*) FROM {table} WHERE run_id = ?", (run_id,)
            ).fetchone()[0]
            for table in ("run_nodes", "run_artifacts", "run_members", "run_items", "cache_entries")
        }
        counts["runs"] = conn.execute(
            "SELECT count(*) FROM runs WHERE id = ?", (run_id,)
        ).fetchone()[0]
    return counts


def run_rows(data_dir: Path) -> int:
    database = f"file:{data_dir / STATE_DB}?mode=ro"
    with contextlib.closing(sqlite3.connect(database, uri=True, timeout=5)) as conn:
        return conn.execute("SELECT count(*) FROM runs").fetchone()[0]


def kept(data_dir: Path) -> list[tuple[str, str]]:
    database = f"file:{data_dir / STATE_DB}?mode=ro"
    with contextlib.closing(sqlite3.connect(database, uri=True)) as conn:
        return conn.execute("SELECT store, key FROM kept_objects ORDER BY key").fetchall()


def object_path(data_dir: Path, key: str) -> Path:
    return data_dir / "objects" / "default" / "data" / key


def key_for(capsys, data_dir: Path, name: str, *extra: str) -> dict[str, str]:
    from orchestrator.cli import main

    capsys.readouterr()  # the service's log so far
    assert main(["keys", "create", "--name", name, "--data-dir", str(data_dir), *extra]) == 0
    return {"Authorization": f"Bearer {capsys.readouterr().out.strip().splitlines()[-1]}"}


async def run_layers(client, data: bytes, headers: dict[str, str] | None = None, **flow: Any):
    body = {"Flow": {**chain_flow("copy", "copy"), **flow}, "NodeDefs": [COPY]}
    response = await client.post("/api/v1/flow/test", json=body, headers=headers)
    assert response.status == 200, await response.text()
    run = await response.json()
    url = run["WaitingURLs"][0]["PutURL"]
    async with client.session.put(url, data=data) as put:
        assert put.status == 200, await put.text()
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"}, headers=headers)
    assert done["Status"] == "COMPLETE", done
    return done


async def gc(client, headers: dict[str, str] | None = None, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/gc", json=body, headers=headers)
    assert response.status == 200, await response.text()
    return await response.json()


async def test_an_ended_run_goes_with_its_rows_and_objects_and_nothing_else_does(
    start_service, tmp_path
):
    data_dir = tmp_path / "data"
    client = await start_service(data_dir, retention=SHORT)
    doomed = await run_layers(client, b"short-lived", Lifetime="1s")
    kept_run = await run_layers(client, b"kept a day", Lifetime="1d")
    keys = {edge: a["ObjectName"] for edge, a in doomed["Artifacts"].items()}
    assert set(keys) == {"src", "e1", "out"}
    assert all(object_path(data_dir, key).is_file() for key in keys.values())
    assert rows(data_dir, doomed["ID"])["run_nodes"] == 2
    # A presigned URL handed out while it lived.
    store = client.app[STORES].default
    url = store.get_url(keys["out"], 3600)
    async with client.session.get(url) as before:
        assert await before.read() == b"short-lived"

    due = await gc(client, DryRun=True)
    await asyncio.sleep(1.1)
    due = await gc(client, DryRun=True)
    assert due["DryRun"] is True and due["Runs"] == 1 and due["RunIDs"] == [doomed["ID"]]
    assert object_path(data_dir, keys["out"]).is_file()  # a dry run deletes nothing

    swept = await gc(client)
    assert swept["Runs"] == 1 and swept["RunIDs"] == [doomed["ID"]], swept
    assert not any(object_path(data_dir, key).exists() for key in keys.values())
    assert not object_path(data_dir, keys["out"]).parent.exists()  # no empty folders left
    assert rows(data_dir, doomed["ID"]) == dict.fromkeys(
        ("run_nodes", "run_artifacts", "run_members", "run_items", "cache_entries", "runs"), 0
    )
    status = await client.get(f"/api/v1/flow/status/{doomed['ID']}")
    assert status.status == 410
    body = await status.json()
    assert body["code"] == "RUN_EXPIRED"
    assert "has expired" in body["message"] and "submit the flow again" in body["message"]
    gone = await client.get(f"/api/v1/flow/artifact/{doomed['ID']}/out")
    assert gone.status == 410
    async with client.session.get(url) as after:
        assert after.status == 404
    # Not a run that never was: that one still gets the seed's answer.
    never = await client.get(f"/api/v1/flow/status/{'0' * 32}")
    assert never.status == 400 and await never.text() == UNKNOWN_RUN_TEXT

    # The other run is whole.
    assert await artifact(client, kept_run["ID"], "out") == b"kept a day"
    assert rows(data_dir, kept_run["ID"])["runs"] == 1
    assert (await gc(client))["Runs"] == 0


async def test_a_static_object_and_other_tenants_objects_stay(start_service, tmp_path, capsys):
    data_dir = tmp_path / "data"
    client = await start_service(
        data_dir, auth="required", retention=SHORT, tenants={"brief": {"retention": "1s"}}
    )
    brief = key_for(capsys, data_dir, "brief", "--tenant", "brief")
    lasting = key_for(capsys, data_dir, "lasting", "--tenant", "lasting")
    admin = key_for(capsys, data_dir, "ops", "--admin")
    # The brief tenant's static object, put there by the tenant itself.
    static = object_path(data_dir, "tenants/brief/library/reference.txt")
    static.parent.mkdir(parents=True)
    static.write_bytes(b"the tenant's own")
    flow = {
        "Name": "static",
        "DataWells": [
            {"Edge": "ref", "Source": "static", "Key": "library/reference.txt"},
            {"Edge": "out"},
        ],
        "Nodes": [
            {"ID": "n0", "Uses": "test/copy", "Inputs": [{"Name": "in", "Edge": "ref"}],
             "Outputs": [{"Name": "out", "Edge": "out"}]}
        ],
    }  # fmt: skip
    response = await client.post(
        "/api/v1/flow/test", json={"Flow": flow, "NodeDefs": [COPY]}, headers=brief
    )
    assert response.status == 200, await response.text()
    from_static = await wait_for(client, (await response.json())["ID"], {"COMPLETE"}, headers=brief)
    other = await run_layers(client, b"another tenant's", headers=lasting)

    forbidden = await client.post("/api/v1/gc", json={}, headers=brief)
    assert forbidden.status == 403 and (await forbidden.json())["code"] == "FORBIDDEN"
    await asyncio.sleep(1.1)
    swept = await gc(client, headers=admin)
    assert swept["RunIDs"] == [from_static["ID"]], swept
    assert static.read_bytes() == b"the tenant's own"
    assert not object_path(data_dir, from_static["Artifacts"]["out"]["ObjectName"]).exists()
    assert await artifact_of(client, other["ID"], lasting) == b"another tenant's"


async def artifact_of(client, run_id: str, headers: dict[str, str]) -> bytes:
    response = await client.get(f"/api/v1/flow/artifact/{run_id}/out", headers=headers)
    assert response.status == 200, await response.text()
    return await response.read()


async def test_a_well_kept_shorter_goes_first_and_one_kept_longer_outlives_its_run(
    start_service, tmp_path
):
    data_dir = tmp_path / "data"
    client = await start_service(data_dir, retention=SHORT)
    wells = [
        {"Edge": "src", "Source": "upload", "Key": "${RUN_ID}/src"},
        {"Edge": "e1", "Key": "${RUN_ID}/e1", "Lifetime": "1s"},
        {"Edge": "out", "Key": "results/${RUN_ID}.txt", "Lifetime": 5},
    ]
    run = await run_layers(client, b"layered", Lifetime="3s", DataWells=wells)
    keys = {edge: a["ObjectName"] for edge, a in run["Artifacts"].items()}
    assert keys["out"].endswith(f"results/{run['ID']}.txt")

    await asyncio.sleep(1.2)
    swept = await gc(client)
    assert (swept["Runs"], swept["EarlyEdges"]) == (0, 1), swept
    assert not object_path(data_dir, keys["e1"]).exists()
    assert object_path(data_dir, keys["src"]).is_file()
    early = await client.get(f"/api/v1/flow/artifact/{run['ID']}/e1")
    assert early.status == 404
    assert "expired" in (await early.json())["message"]
    status = await wait_for(client, run["ID"], {"COMPLETE"})
    assert (
        "ExpiredAt" in status["Artifacts"]["e1"] and "ExpiredAt" not in status["Artifacts"]["out"]
    )

    await asyncio.sleep(3 - 1.2)
    swept = await gc(client)
    assert swept["Runs"] == 1, swept
    assert (await client.get(f"/api/v1/flow/status/{run['ID']}")).status == 410
    assert not object_path(data_dir, keys["src"]).exists()
    assert object_path(data_dir, keys["out"]).read_bytes() == b"layered"
    assert kept(data_dir) == [("default", keys["out"])]

    await asyncio.sleep(5 - 3)
    swept = await gc(client)
    assert swept["KeptObjects"] == 1, swept
    assert not object_path(data_dir, keys["out"]).exists()
    assert kept(data_dir) == []


async def test_lifetimes_outside_the_operators_bounds_are_refused(start_service):
    client = await start_service(retention={"min_lifetime": "1h", "max_lifetime": "30d"})
    flow = {
        **chain_flow("copy"),
        "Lifetime": "90d",
        "DataWells": [
            {"Edge": "src", "Source": "upload", "Key": "${RUN_ID}/src", "Lifetime": "10m"},
            {"Edge": "out", "Lifetime": "a week"},
        ],
    }
    response = await client.post("/api/v1/flow/test", json={"Flow": flow, "NodeDefs": [COPY]})
    assert response.status == 400
    errors = {(e["code"], e.get("field")): e["message"] for e in (await response.json())["errors"]}
    assert "between 1h and 30d" in errors[("FLOW_004", "Flow.Lifetime")]
    assert "between 1h and 30d" in errors[("WELL_011", "Flow.DataWells.0.Lifetime")]
    assert "not a duration" in errors[("WELL_011", "Flow.DataWells.1.Lifetime")]
    # Pupload's empty Lifetime struct asks nothing: the run's.
    flow = {**chain_flow("copy"), "DataWells": [
        {"Edge": "src", "Source": "upload", "Key": "${RUN_ID}/src", "Lifetime": {}},
        {"Edge": "out"},
    ]}  # fmt: skip
    response = await client.post("/api/v1/flow/test", json={"Flow": flow, "NodeDefs": [COPY]})
    assert response.status == 200, await response.text()


async def test_a_kill_during_a_sweep_loses_nothing_not_due_and_the_next_one_finishes(tmp_path):
    data_dir, port = tmp_path / "data", free_port()
    base = f"http://127.0.0.1:{port}"
    config = tmp_path / "config.yaml"
    # Batches of 2: the kill lands between two of them, or inside one.
    config.write_text("retention: {min_lifetime: 1, batch: 2, sweep_every: 3600}\n")
    flow = {**chain_flow("copy"), "Lifetime": "1s"}
    log = (tmp_path / "service.log").open("ab")
    process = start_dev(data_dir, port, log, "--config", str(config))
    try:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(session, base)

            async def run(lifetime: str, data: bytes) -> str:
                body = {"Flow": {**flow, "Lifetime": lifetime}, "NodeDefs": [COPY]}
                async with session.post(f"{base}/api/v1/flow/test", json=body) as response:
                    started = await response.json()
                async with session.put(started["WaitingURLs"][0]["PutURL"], data=data) as put:
                    assert put.status == 200
                for _ in range(600):
                    async with session.get(f"{base}/api/v1/flow/status/{started['ID']}") as r:
                        current = await r.json()
                    if current["Status"] in ("COMPLETE", "ERROR"):
                        assert current["Status"] == "COMPLETE", current
                        return started["ID"]
                    await asyncio.sleep(0.05)
                raise AssertionError(f"run {started['ID']} did not end")

            # The same work each time: one container, then cache hits.
            kept = [await run("1d", b"kept")]
            kept += await asyncio.gather(*(run("1d", b"kept") for _ in range(9)))
            doomed = []
            for _ in range(6):
                doomed += await asyncio.gather(*(run("1s", b"doomed") for _ in range(10)))
            await asyncio.sleep(1.1)
            sweep = asyncio.create_task(session.post(f"{base}/api/v1/gc", json={}))
            # Killed as soon as the first batch is gone, with the others to go.
            for _ in range(2000):
                if await asyncio.to_thread(run_rows, data_dir) < len(kept) + len(doomed):
                    break
                await asyncio.sleep(0.001)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
            with contextlib.suppress(aiohttp.ClientError):
                await sweep
            left = await asyncio.to_thread(run_rows, data_dir) - len(kept)
            assert 0 < left < len(doomed), f"the kill did not land mid-sweep ({left} left)"

            process = start_dev(data_dir, port, log, "--config", str(config))
            await wait_healthy(session, base)
            for run_id in kept:
                async with session.get(f"{base}/api/v1/flow/artifact/{run_id}/out") as response:
                    assert response.status == 200 and await response.read() == b"kept", run_id
            async with session.post(f"{base}/api/v1/gc", json={}) as response:
                swept = await response.json()
            # The sweep at start took the rest, or this one does.
            assert set(swept["RunIDs"]) <= set(doomed) and not swept["FailedStores"], swept
            for run_id in doomed:
                async with session.get(f"{base}/api/v1/flow/status/{run_id}") as response:
                    assert response.status == 410, run_id
                assert rows(data_dir, run_id) == dict.fromkeys(
                    ("run_nodes", "run_artifacts", "run_members", "run_items", "cache_entries",
                     "runs"), 0
                )  # fmt: skip
            # What is left on disk is the kept runs' objects, nothing of the others.
            stored = data_dir / "objects" / "default" / "data" / "tenants" / "default"
            assert sorted(p.name for p in stored.iterdir()) == sorted(kept)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
        log.close()
