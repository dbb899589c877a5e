"""Retrying an ended run through the real service and real containers: what succeeded
is taken over (no container), what failed runs, inputs are copied or asked for again,
nodes named run again with the nodes after them, and it works after a restart."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
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
from tests.integration.test_invocations import FAIL, GREET, axiom, save

pytestmark = pytest.mark.docker

UPPER = busybox_def(
    "upper",
    "sh -c 'tr a-z A-Z < ${in} > ${out}'",
    Inputs=[{"Name": "in"}],
    Outputs=[{"Name": "out"}],
    Tier="c-nano",
)
REVERSE = busybox_def(
    "reverse",
    "sh -c 'rev < ${in} > ${out}'",
    Inputs=[{"Name": "in"}],
    Outputs=[{"Name": "out"}],
    Tier="c-nano",
)


def checker(image: str) -> dict[str, Any]:
    """A node that fails until its image has /ok (a fix shipped in a rebuilt image)."""
    return {
        **busybox_def(
            "check",
            "sh -c 'test -e /ok || { echo not fixed yet >&2; exit 3; }; cp ${in} ${out}'",
            Inputs=[{"Name": "in"}],
            Outputs=[{"Name": "out"}],
            MaxAttempts=1,
            Tier="c-nano",
        ),
        "Image": image,
    }


async def build(tmp_path: Path, tag: str, fixed: bool) -> None:
    lines = [f"FROM {BUSYBOX}", "COPY ok /ok" if fixed else "LABEL fixed=no"]
    (tmp_path / "ok").write_text("ok\n")
    (tmp_path / "Dockerfile").write_text("\n".join(lines) + "\n")
    command = ["docker", "build", "-q", "-t", tag, str(tmp_path)]
    await asyncio.to_thread(subprocess.run, command, check=True, capture_output=True)


@pytest.fixture
async def check_image(tmp_path):
    tag = f"pipewell-test/check-{uuid.uuid4().hex[:8]}:latest"
    await build(tmp_path, tag, fixed=False)
    yield tag
    await asyncio.to_thread(subprocess.run, ["docker", "rmi", "-f", tag], capture_output=True)


async def retry(client, run_id: str, body: dict[str, Any] | None = None, **kwargs: Any):
    return await client.post(f"/api/v1/flow/retry/{run_id}", json=body, **kwargs)


async def test_a_failed_run_retried_runs_only_what_failed(start_service, check_image, tmp_path):
    client = await start_service(cache={"enabled": False})  # a retry reuses without it
    defs = [UPPER, REVERSE, checker(check_image)]
    run = await submit(client, chain_flow("upper", "reverse", "check"), defs)
    await upload(client, run, "src", b"abc")
    failed = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    assert failed["Status"] == "ERROR"
    assert "not fixed yet" in failed["NodeState"]["n2"]["Error"]

    await build(tmp_path, check_image, fixed=True)
    response = await retry(client, run["ID"])
    assert response.status == 200, await response.text()
    started = await response.json()
    assert started["RetryOf"] == run["ID"]
    assert started["WaitingURLs"] == []  # its input was copied from the old run
    done = await wait_for(client, started["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == "COMPLETE", done
    assert cached(done) == {
        "n0": {"Run": run["ID"], "Node": "n0"},
        "n1": {"Run": run["ID"], "Node": "n1"},
        "n2": None,
    }
    assert await artifact(client, done["ID"], "out") == b"CBA"
    assert await artifact(client, done["ID"], "src") == b"abc"
    assert done["NodeState"]["n0"]["Attempt"] == 0
    assert done["NodeState"]["n2"]["Attempt"] == 1
    old = await (await client.get(f"/api/v1/flow/status/{run['ID']}")).json()
    assert old["RetriedBy"] == [done["ID"]]
    assert labelled_containers(done["ID"]) == []


async def test_recompute_runs_the_named_node_and_those_after_it(start_service):
    client = await start_service()
    run = await submit(client, chain_flow("upper", "reverse", "upper"), [UPPER, REVERSE])
    await upload(client, run, "src", b"abc")
    assert (await wait_for(client, run["ID"], {"COMPLETE"}))["Status"] == "COMPLETE"

    response = await retry(client, run["ID"], {"Recompute": ["n1"]})
    assert response.status == 200, await response.text()
    done = await wait_for(client, (await response.json())["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == "COMPLETE", done
    # n1 and n2 ran, though the cache holds their work: Recompute looks nothing up.
    assert cached(done) == {"n0": {"Run": run["ID"], "Node": "n0"}, "n1": None, "n2": None}
    assert await artifact(client, done["ID"], "out") == b"CBA"

    unknown = await retry(client, run["ID"], {"Recompute": ["nope"]})
    assert unknown.status == 400
    body = await unknown.json()
    assert body["code"] == "FLOW_INVALID"
    assert body["errors"][0]["code"] == "NODE_013"


async def test_an_input_that_never_came_is_asked_for_again(start_service):
    client = await start_service()
    run = await submit(client, chain_flow("upper"), [UPPER])
    early = await retry(client, run["ID"])
    assert early.status == 409
    assert (await early.json())["code"] == "RUN_NOT_ENDED"
    cancelled = await client.post(f"/api/v1/flow/cancel/{run['ID']}")
    assert cancelled.status == 200

    response = await retry(client, run["ID"])
    assert response.status == 200, await response.text()
    again = await response.json()
    assert [w["Artifact"]["EdgeName"] for w in again["WaitingURLs"]] == ["src"]
    await upload(client, again, "src", b"late")
    done = await wait_for(client, again["ID"], {"COMPLETE", "ERROR"})
    assert await artifact(client, done["ID"], "out") == b"LATE"


async def test_a_retry_after_a_restart_and_of_another_tenants_run(
    start_service, tmp_path, capsys, check_image
):
    data_dir = tmp_path / "data"
    acme = {"Authorization": f"Bearer {create_key(capsys, data_dir, 'acme', tenant='acme')}"}
    globex = {"Authorization": f"Bearer {create_key(capsys, data_dir, 'gx', tenant='globex')}"}
    client = await start_service(data_dir, auth="required")
    body = {"Flow": chain_flow("upper", "check"), "NodeDefs": [UPPER, checker(check_image)]}
    response = await client.post("/api/v1/flow/test", json=body, headers=acme)
    run = await response.json()
    await upload(client, run, "src", b"xyz")
    assert (await wait_for(client, run["ID"], {"ERROR"}, headers=acme))["Status"] == "ERROR"
    await client.close()

    fixed_dir = tmp_path / "fixed"
    fixed_dir.mkdir()
    await build(fixed_dir, check_image, fixed=True)
    client = await start_service(data_dir, auth="required")
    # Another tenant's run is unknown to it, as on every native endpoint (the seed's 400).
    other = await retry(client, run["ID"], headers=globex)
    assert (other.status, await other.text()) == (400, "Flow run does not exist.")
    response = await retry(client, run["ID"], headers=acme)
    assert response.status == 200, await response.text()
    retried = await response.json()
    done = await wait_for(client, retried["ID"], {"COMPLETE", "ERROR"}, headers=acme)
    assert done["Status"] == "COMPLETE", done
    assert cached(done)["n0"] == {"Run": run["ID"], "Node": "n0"}
    out = await client.get(f"/api/v1/flow/artifact/{done['ID']}/out", headers=acme)
    assert await out.read() == b"XYZ"
    old = await (await client.get(f"/api/v1/flow/status/{run['ID']}", headers=acme)).json()
    assert old["RetriedBy"] == [done["ID"]]


async def test_objects_gone_since_are_asked_for_or_made_again(start_service, tmp_path):
    data_dir = tmp_path / "data"
    client = await start_service(data_dir)
    failing = busybox_def(
        "failing", "sh -c 'exit 9'", Inputs=[{"Name": "in"}], Outputs=[{"Name": "out"}],
        MaxAttempts=1,
    )  # fmt: skip
    run = await submit(client, chain_flow("upper", "reverse", "failing"), [UPPER, REVERSE, failing])
    await upload(client, run, "src", b"abc")
    failed = await wait_for(client, run["ID"], {"ERROR"})
    objects = data_dir / "objects" / "default" / "data"
    # n1's output is gone: n1 runs again (and n2 after it); n0 is still taken over.
    (objects / failed["Artifacts"]["e2"]["ObjectName"]).unlink()
    response = await retry(client, run["ID"])
    assert response.status == 200, await response.text()
    again = await wait_for(client, (await response.json())["ID"], {"COMPLETE", "ERROR"})
    assert cached(again) == {"n0": {"Run": run["ID"], "Node": "n0"}, "n1": None, "n2": None}
    assert await artifact(client, again["ID"], "e2") == b"CBA"

    # The input is gone too: it is asked for again, and the nodes after it run on it.
    (objects / failed["Artifacts"]["src"]["ObjectName"]).unlink()
    response = await retry(client, run["ID"])
    assert response.status == 200, await response.text()
    fresh = await response.json()
    assert [w["Artifact"]["EdgeName"] for w in fresh["WaitingURLs"]] == ["src"]
    await upload(client, fresh, "src", b"xyz")
    done = await wait_for(client, fresh["ID"], {"COMPLETE", "ERROR"})
    assert cached(done) == {"n0": None, "n1": None, "n2": None}
    assert await artifact(client, done["ID"], "e2") == b"ZYX"


async def test_a_run_started_through_a_dialect_is_retried_by_its_execution_id(start_service):
    client = await start_service()
    flow = {
        "Name": "greet-then-fail",
        "Nodes": [
            {"ID": "greet", "Uses": "test/greet", "Inputs": [{"Name": "in", "Edge": "request"}],
             "Outputs": [{"Name": "out", "Edge": "greeting"}]},
            {"ID": "fail", "Uses": "test/fail", "Inputs": [{"Name": "in", "Edge": "greeting"}],
             "Outputs": [{"Name": "out", "Edge": "reply"}]},
        ],
    }  # fmt: skip
    saved = await save(client, flow, [GREET, FAIL])
    status, body = await axiom(
        client, {"graph_id": saved["graph_id"], "input": {"text": "again"}, "wait": True}
    )
    assert status == 202 and body["result"]["success"] is False
    # Axiom's execution_id is the run's ID.
    response = await retry(client, body["execution_id"])
    assert response.status == 200, await response.text()
    again = await wait_for(client, (await response.json())["ID"], {"COMPLETE", "ERROR"})
    assert cached(again) == {"greet": {"Run": body["execution_id"], "Node": "greet"}, "fail": None}
    assert await artifact(client, again["ID"], "greeting") == b'hello {"text":"again"}'
    assert again["NodeState"]["fail"]["Error"] == "command exited with code 3: boom"
