"""The container as a sandbox: who the node runs as, and what Docker keeps of its output."""

from __future__ import annotations

import docker
import docker.errors
import pytest

from tests.helpers import (
    artifact,
    busybox_def,
    chain_flow,
    run_chain,
    running_containers,
    submit,
    upload,
    wait_for,
)

pytestmark = pytest.mark.docker

UID_AND_COPY = "sh -c 'id -u; cat ${in} > ${out}'"


def uid_logged(state: dict) -> str:
    return next(r["message"] for r in state["Logs"] if r["stream"] == "stdout")


async def test_a_node_runs_as_nobody_when_its_files_go_through_the_engine_api(start_service):
    # Mounted files, in each launch mode: test_launch_modes.
    client = await start_service(executor={"transfer": "archive"})
    run, done = await run_chain(client, [busybox_def("plain", UID_AND_COPY)], "plain", data=b"in")
    assert done["Status"] == "COMPLETE", done["NodeState"]["n0"]
    assert uid_logged(done["NodeState"]["n0"]) == "65534"
    # Still reads its input and writes its output, whichever way files travel.
    assert await artifact(client, run["ID"], "out") == b"in"


async def test_a_nodedef_may_ask_for_root_when_its_files_go_through_the_engine_api(start_service):
    client = await start_service(executor={"transfer": "archive"})
    defs = [busybox_def("rooted", UID_AND_COPY, RunAsRoot=True)]
    run, done = await run_chain(client, defs, "rooted", data=b"in")
    assert done["Status"] == "COMPLETE", done["NodeState"]["n0"]
    assert uid_logged(done["NodeState"]["n0"]) == "0"
    assert await artifact(client, run["ID"], "out") == b"in"


async def test_docker_keeps_only_a_capped_copy_of_the_node_logs(start_service):
    client = await start_service()
    defs = [busybox_def("slow", "sh -c 'sleep 2; cp ${in} ${out}'")]
    run = await submit(client, chain_flow("slow"), defs)
    await upload(client, run, "src", b"x")
    containers = await running_containers(run["ID"])
    engine = docker.from_env()
    try:
        attrs = engine.api.inspect_container(containers[0].id)
    finally:
        engine.close()
    assert attrs["HostConfig"]["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-size": "10m", "max-file": "1"},
    }
    assert (await wait_for(client, run["ID"], {"COMPLETE", "ERROR"}))["Status"] == "COMPLETE"
