"""The container as a sandbox: who the node runs as, and what Docker keeps of its output."""

from __future__ import annotations

import io

import docker
import docker.errors
import pytest

from tests.helpers import (
    BUSYBOX,
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


@pytest.mark.parametrize("transfer", ["mount", "archive"])
async def test_a_node_runs_as_nobody_when_its_image_names_no_user(start_service, transfer):
    client = await start_service(executor={"transfer": transfer})
    run, done = await run_chain(client, [busybox_def("plain", UID_AND_COPY)], "plain", data=b"in")
    assert done["Status"] == "COMPLETE", done["NodeState"]["n0"]
    assert uid_logged(done["NodeState"]["n0"]) == "65534"
    # Still reads its input and writes its output, whichever way files travel.
    assert await artifact(client, run["ID"], "out") == b"in"


@pytest.mark.parametrize("transfer", ["mount", "archive"])
async def test_a_nodedef_may_ask_for_root(start_service, transfer):
    client = await start_service(executor={"transfer": transfer})
    defs = [busybox_def("rooted", UID_AND_COPY, RunAsRoot=True)]
    run, done = await run_chain(client, defs, "rooted", data=b"in")
    assert done["Status"] == "COMPLETE", done["NodeState"]["n0"]
    assert uid_logged(done["NodeState"]["n0"]) == "0"
    assert await artifact(client, run["ID"], "out") == b"in"


@pytest.fixture(scope="module")
def image_with_a_user():
    """An image whose config names its own unprivileged user."""
    engine = docker.from_env()
    tag = "pipewell/test-own-user:latest"
    dockerfile = f"FROM {BUSYBOX}\nUSER 1234:1234\n".encode()
    engine.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True)
    yield tag
    try:
        engine.images.remove(tag)
    except docker.errors.APIError:
        pass  # a container of another test run may still use it; it is tiny
    engine.close()


async def test_an_image_with_its_own_user_keeps_it(start_service, image_with_a_user):
    client = await start_service()
    defs = [busybox_def("own", UID_AND_COPY, Image=image_with_a_user)]
    run, done = await run_chain(client, defs, "own", data=b"mine")
    assert done["Status"] == "COMPLETE", done["NodeState"]["n0"]
    assert uid_logged(done["NodeState"]["n0"]) == "1234"
    assert await artifact(client, run["ID"], "out") == b"mine"


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
