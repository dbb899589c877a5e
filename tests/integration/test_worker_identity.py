"""Services on one host, each on its own data directory: neither removes the other's containers."""

from __future__ import annotations

import uuid

import pytest

from tests.helpers import (
    artifact,
    busybox_def,
    chain_flow,
    running_containers,
    submit,
    upload,
    wait_for,
)

pytestmark = pytest.mark.docker


async def test_a_second_service_leaves_the_first_ones_running_node_alone(start_service, tmp_path):
    # Both services share a worker name, as they do by default (the host name).
    # A name of this test's own: services of other test runs on this host (older
    # code, the default name) would otherwise remove the node whatever we do.
    shared = {"name": f"shared-{uuid.uuid4().hex[:8]}"}
    first = await start_service(tmp_path / "one", worker=shared)
    defs = [busybox_def("slow", "sh -c 'sleep 4; cp ${in} ${out}'", MaxAttempts=1)]
    run = await submit(first, chain_flow("slow"), defs)
    await upload(first, run, "src", b"still mine")
    containers = await running_containers(run["ID"])

    # Starting removes the leftovers of its own identity, and only those.
    await start_service(tmp_path / "two", worker=shared)
    done = await wait_for(first, run["ID"], {"COMPLETE", "ERROR"}, timeout=60)
    assert done["Status"] == "COMPLETE", done["NodeState"]["n0"]
    assert done["NodeState"]["n0"]["Attempt"] == 1
    assert await artifact(first, run["ID"], "out") == b"still mine"

    one = (tmp_path / "one" / "worker-id").read_text().strip()
    two = (tmp_path / "two" / "worker-id").read_text().strip()
    assert one != two
    assert containers[0].attrs["Labels"]["pipewell.worker_id"] == one
