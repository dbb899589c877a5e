"""The result cache through the real service, real containers and the real local store:
an identical resubmission starts no container and gives the same bytes; a changed flag,
input byte, CacheVersion or image is a miss; tenants never share; 20 identical runs at
once compute once; a deleted object is a miss, not an error."""

from __future__ import annotations

import asyncio
import io
import subprocess
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    BUSYBOX,
    artifact,
    busybox_def,
    cached,
    chain_flow,
    create_key,
    labelled_containers,
    submit,
    upload,
    wait_for,
)

pytestmark = pytest.mark.docker

UPPER = busybox_def(
    "upper",
    "sh -c 'tr a-z A-Z < ${in} > ${out}; echo ${suffix} >> ${out}'",
    Inputs=[{"Name": "in"}],
    Outputs=[{"Name": "out"}],
    Flags=[{"Name": "suffix", "Default": "!"}],
    Tier="c-nano",
)
COUNT = busybox_def(
    "count",
    "sh -c 'wc -c < ${in} > ${out}'",
    Inputs=[{"Name": "in"}],
    Outputs=[{"Name": "out"}],
    Tier="c-nano",
)
DEFS = [UPPER, COUNT]


async def run_once(
    client, flow: dict[str, Any], defs: list[dict[str, Any]], data: bytes, **extra: Any
) -> dict[str, Any]:
    body = {"Flow": flow, "NodeDefs": defs, **extra}
    response = await client.post("/api/v1/flow/test", json=body)
    assert response.status == 200, await response.text()
    run = await response.json()
    await upload(client, run, "src", data)
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == "COMPLETE", done
    return done


async def test_the_same_work_again_reuses_its_outputs_and_starts_no_container(start_service):
    client = await start_service()
    flow = chain_flow("upper", "count")
    first = await run_once(client, flow, DEFS, b"hello")
    assert cached(first) == {"n0": None, "n1": None}
    assert await artifact(client, first["ID"], "out") == b"7\n"

    second = await run_once(client, flow, DEFS, b"hello")
    assert cached(second) == {
        "n0": {"Run": first["ID"], "Node": "n0"},
        "n1": {"Run": first["ID"], "Node": "n1"},
    }
    assert await artifact(client, second["ID"], "e1") == b"HELLO!\n"
    assert await artifact(client, second["ID"], "out") == b"7\n"
    # Its own objects, at its own keys: the first run's can go without taking them along.
    assert second["Artifacts"]["out"]["ObjectName"] != first["Artifacts"]["out"]["ObjectName"]
    assert second["Artifacts"]["out"]["Digest"] == first["Artifacts"]["out"]["Digest"]
    assert second["Artifacts"]["out"]["Digest"].startswith("sha256:")
    assert labelled_containers(second["ID"]) == []
    for state in second["NodeState"].values():
        assert "run" not in state["Timings"], state
        assert any("no container ran" in line["message"] for line in state["Logs"]), state
    metrics = await (await client.get("/metrics")).text()
    assert "pipewell_cache_hits_total 2.0" in metrics


async def test_a_changed_flag_input_byte_or_cache_version_is_a_miss(start_service):
    client = await start_service()
    flow = chain_flow("upper", "count")
    first = await run_once(client, flow, DEFS, b"hello")

    # Another input byte: both nodes run (the second's input changed too).
    other_bytes = await run_once(client, flow, DEFS, b"hellp")
    assert cached(other_bytes) == {"n0": None, "n1": None}
    assert await artifact(client, other_bytes["ID"], "e1") == b"HELLP!\n"

    # Another flag value: n0 runs; its output has the same length, so n1's input bytes
    # differ and it runs too.
    flagged = chain_flow("upper", "count")
    flagged["Nodes"][0]["Flags"] = [{"Name": "suffix", "Value": "+"}]
    run = await run_once(client, flagged, DEFS, b"hello")
    assert cached(run) == {"n0": None, "n1": None}
    assert await artifact(client, run["ID"], "e1") == b"HELLO+\n"

    # The flag set to its default is the same work as the default.
    explicit = chain_flow("upper", "count")
    explicit["Nodes"][0]["Flags"] = [{"Name": "suffix", "Value": "!"}]
    run = await run_once(client, explicit, DEFS, b"hello")
    assert cached(run)["n0"] == {"Run": first["ID"], "Node": "n0"}

    # A new CacheVersion on count: count runs again, upper is still reused.
    versioned = [UPPER, {**COUNT, "CacheVersion": "2"}]
    run = await run_once(client, flow, versioned, b"hello")
    assert cached(run) == {"n0": {"Run": first["ID"], "Node": "n0"}, "n1": None}
    assert await artifact(client, run["ID"], "out") == b"7\n"


async def test_a_rebuilt_image_is_a_miss(start_service, tmp_path: Path):
    tag = f"pipewell-test/cache-{uuid.uuid4().hex[:8]}:latest"

    def build(label: str) -> None:
        (tmp_path / "Dockerfile").write_text(f"FROM {BUSYBOX}\nLABEL build={label}\n")
        subprocess.run(
            ["docker", "build", "-q", "-t", tag, str(tmp_path)], check=True, capture_output=True
        )

    await asyncio.to_thread(build, "one")
    try:
        client = await start_service()
        node_def = {**UPPER, "Image": tag}
        flow = chain_flow("upper")
        first = await run_once(client, flow, [node_def], b"abc")
        again = await run_once(client, flow, [node_def], b"abc")
        assert cached(again) == {"n0": {"Run": first["ID"], "Node": "n0"}}
        await asyncio.to_thread(build, "two")
        rebuilt = await run_once(client, flow, [node_def], b"abc")
        assert cached(rebuilt) == {"n0": None}
        assert await artifact(client, rebuilt["ID"], "out") == b"ABC!\n"
        # The new image's result is now the one reused.
        after = await run_once(client, flow, [node_def], b"abc")
        assert cached(after) == {"n0": {"Run": rebuilt["ID"], "Node": "n0"}}
    finally:
        await asyncio.to_thread(subprocess.run, ["docker", "rmi", "-f", tag], capture_output=True)


async def test_nocache_recompute_and_a_nodedef_without_cache_run_again(start_service):
    client = await start_service()
    flow = chain_flow("upper", "count")
    first = await run_once(client, flow, DEFS, b"hello")

    everything = await run_once(client, flow, DEFS, b"hello", NoCache=True)
    assert cached(everything) == {"n0": None, "n1": None}

    one = await run_once(client, flow, DEFS, b"hello", Recompute=["n0"])
    # n0 ran and made the same bytes, so n1's work is the same: reused.
    assert cached(one)["n0"] is None
    assert cached(one)["n1"] is not None

    uncached = await run_once(client, flow, [{**UPPER, "Cache": False}, COUNT], b"hello")
    assert cached(uncached)["n0"] is None
    assert cached(uncached)["n1"] is not None
    assert first["ID"] not in {None}


async def test_tenants_never_share_results(start_service, tmp_path, capsys):
    data_dir = tmp_path / "data"
    acme = {"Authorization": f"Bearer {create_key(capsys, data_dir, 'acme', tenant='acme')}"}
    globex = {"Authorization": f"Bearer {create_key(capsys, data_dir, 'gx', tenant='globex')}"}
    client = await start_service(data_dir, auth="required")
    flow = chain_flow("upper")

    async def run_as(headers: dict[str, str]) -> dict[str, Any]:
        body = {"Flow": flow, "NodeDefs": [UPPER]}
        response = await client.post("/api/v1/flow/test", json=body, headers=headers)
        assert response.status == 200, await response.text()
        run = await response.json()
        await upload(client, run, "src", b"same bytes")
        return await wait_for(client, run["ID"], {"COMPLETE"}, headers=headers)

    first = await run_as(acme)
    other = await run_as(globex)
    assert cached(other) == {"n0": None}
    again = await run_as(acme)
    assert cached(again) == {"n0": {"Run": first["ID"], "Node": "n0"}}


async def test_twenty_identical_runs_at_once_compute_once(start_service):
    client = await start_service()
    slow = busybox_def(
        "slow",
        "sh -c 'sleep 1; tr a-z A-Z < ${in} > ${out}'",
        Inputs=[{"Name": "in"}],
        Outputs=[{"Name": "out"}],
        Tier="c-nano",
    )
    flow = chain_flow("slow")

    async def one() -> dict[str, Any]:
        return await run_once(client, flow, [slow], b"twenty")

    runs = await asyncio.gather(*(one() for _ in range(20)))
    computed = [run["ID"] for run in runs if cached(run)["n0"] is None]
    assert len(computed) == 1, [cached(run) for run in runs]
    for run in runs:
        if run["ID"] != computed[0]:
            assert cached(run)["n0"] == {"Run": computed[0], "Node": "n0"}
        assert await artifact(client, run["ID"], "out") == b"TWENTY"


async def test_an_entry_whose_objects_are_gone_is_a_miss(start_service, tmp_path):
    data_dir = tmp_path / "data"
    client = await start_service(data_dir)
    flow = chain_flow("upper")
    first = await run_once(client, flow, [UPPER], b"gone")
    key = first["Artifacts"]["out"]["ObjectName"]
    (data_dir / "objects" / "default" / "data" / key).unlink()

    again = await run_once(client, flow, [UPPER], b"gone")
    assert cached(again) == {"n0": None}
    assert await artifact(client, again["ID"], "out") == b"GONE!\n"
    logs = [line["message"] for line in again["NodeState"]["n0"]["Logs"]]
    assert any("gone or were replaced: running it" in line for line in logs), logs
    # The run that computed it again is the one reused next.
    third = await run_once(client, flow, [UPPER], b"gone")
    assert cached(third) == {"n0": {"Run": again["ID"], "Node": "n0"}}


def zipped(files: dict[str, bytes]) -> bytes:
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return data.getvalue()


async def test_a_batch_sent_again_with_one_new_item_runs_that_item_alone(start_service):
    client = await start_service()
    upper = busybox_def(
        "upper-item",
        "sh -c 'tr a-z A-Z < ${in} > ${out}'",
        Inputs=[{"Name": "in"}],
        Outputs=[{"Name": "out"}],
        Tier="c-nano",
    )
    flow = {
        "Name": "batch",
        "Collections": ["docs"],
        "Nodes": [
            {"ID": "upper", "Uses": "test/upper-item", "Inputs": [{"Name": "in", "Edge": "docs"}],
             "Outputs": [{"Name": "out", "Edge": "loud"}]},
        ],
    }  # fmt: skip
    files = {f"doc-{n}.txt": f"item {n}".encode() for n in range(4)}

    async def batch(contents: dict[str, bytes]) -> dict[str, Any]:
        run = await submit(client, flow, [upper])
        await upload(client, run, "docs", zipped(contents))
        done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
        assert done["Status"] == "COMPLETE", done
        return done

    first = await batch(files)
    again = await batch({**files, "doc-new.txt": b"the new one"})
    response = await client.get(f"/api/v1/flow/items/{again['ID']}/upper")
    items = {item["Name"]: item for item in (await response.json())["Items"]}
    assert {name: item.get("Cached") for name, item in items.items()} == {
        **{name: {"Run": first["ID"], "Node": "upper"} for name in files},
        "doc-new.txt": None,
    }
    response = await client.get(f"/api/v1/flow/collection/{again['ID']}/loud")
    members = {m["Name"]: m for m in (await response.json())["Items"]}
    assert set(members) == {*files, "doc-new.txt"}
    for name, member in members.items():
        async with client.session.get(member["URL"]) as got:
            expected = files.get(name, b"the new one").upper()
            assert await got.read() == expected
