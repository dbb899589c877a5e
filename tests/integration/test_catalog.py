"""The built-in catalog through the service and the CLI, and node images built on first use."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import docker
import pytest

from orchestrator.api.resources import WORKER
from orchestrator.cli import main
from orchestrator.node_images import HASH_LABEL, NodeSource, image_state, source_hash
from tests.helpers import submit, wait_for

pytestmark = pytest.mark.docker


async def test_the_catalog_is_listed_and_each_nodedef_read(start_service):
    client = await start_service()
    listed = await (await client.get("/api/v1/nodedefs")).json()
    names = [f"{d['Publisher']}/{d['Name']}" for d in listed["NodeDefs"]]
    assert "pipewell/resize" in names and names == sorted(names)
    resize = await (await client.get("/api/v1/nodedefs/pipewell/resize")).json()
    assert resize["Image"] == "pipewell/resize:latest"
    assert [f["Name"] for f in resize["Flags"]] == ["width", "height"]
    assert resize["Inputs"][0]["Type"][0] == "image/png"
    missing = await client.get("/api/v1/nodedefs/pipewell/nothing")
    body = await missing.json()
    assert (missing.status, body["code"]) == (404, "NODEDEF_NOT_FOUND")
    assert "GET /api/v1/nodedefs" in body["message"]


@pytest.fixture
def node_source(tmp_path):  # type: ignore[no-untyped-def]
    """A node source of its own (under a throwaway name) that the worker may build.

    Ask for it before start_service: its image is removed after the service (and
    the warm containers of that image) stopped.
    """
    name = f"ondemand-{uuid.uuid4().hex[:8]}"
    directory = tmp_path / "nodes" / name
    directory.mkdir(parents=True)
    engine = docker.from_env()
    yield NodeSource(name, directory)
    for image in engine.images.list(name=f"pipewell/{name}"):
        engine.images.remove(image.id, force=True)
    engine.close()


def flow_of(source: NodeSource) -> dict:
    return {
        "Name": "first-use",
        "Nodes": [{"ID": "n", "Uses": "test/n", "Outputs": [{"Name": "out", "Edge": "made"}]}],
    }


async def run_node_of(client, source: NodeSource) -> dict:  # type: ignore[no-untyped-def]
    client.server.app[WORKER].executor.images.builder.nodes_dir = source.directory.parent
    defs = [{"Publisher": "test", "Name": "n", "Image": source.image, "MaxAttempts": 1}]
    run = await submit(client, flow_of(source), defs)
    return await wait_for(client, run["ID"], {"COMPLETE", "ERROR"}, timeout=100)


async def test_a_missing_built_in_image_is_built_from_its_source_when_a_node_needs_it(
    node_source, start_service
):
    (node_source.directory / "Dockerfile").write_text(
        'FROM pipewell/busybox:latest\nCMD ["sh", "-c", "echo made here > $OUTPUT_OUT"]\n'
    )
    client = await start_service()
    done = await run_node_of(client, node_source)
    assert done["Status"] == "COMPLETE", done["NodeState"]["n"]
    said = [line["message"] for line in done["NodeState"]["n"]["Logs"]]
    assert (
        f"image {node_source.image} is missing on this worker: building it from its source" in said
    )
    assert any(line.startswith(f"built {node_source.image} in ") for line in said), said
    made = await client.get(f"/api/v1/flow/artifact/{done['ID']}/made")
    assert await made.read() == b"made here\n"
    engine = docker.from_env()
    try:
        labels = engine.images.get(node_source.image).labels
        assert labels[HASH_LABEL] == source_hash(engine, node_source)
        assert image_state(engine, node_source) == "up to date"
        (node_source.directory / "note.txt").write_text("changed")
        assert image_state(engine, node_source) == "outdated"
    finally:
        engine.close()


async def test_an_image_that_does_not_build_fails_the_attempt_saying_why(
    node_source, start_service
):
    (node_source.directory / "Dockerfile").write_text(
        "FROM pipewell/busybox:latest\nRUN echo cannot go on; exit 7\n"
    )
    client = await start_service()
    done = await run_node_of(client, node_source)
    assert done["Status"] == "ERROR"
    error = done["NodeState"]["n"]["Error"]
    assert error.startswith(f"image {node_source.image} not found locally, and building ")
    assert "returned a non-zero code: 7" in error and "cannot go on" in error, error


async def test_pipewell_nodes_builds_by_name_and_lists_the_catalog(capsys):
    # make setup built it: nothing to do, and the list says it is current.
    assert await asyncio.to_thread(main, ["nodes", "build", "resize"]) == 0
    assert capsys.readouterr().out.splitlines() == ["1 node image(s) up to date"]
    assert await asyncio.to_thread(main, ["nodes", "list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["NODE", "IMAGE", "STATE", "TIER", "DOES"]
    resize = next(line.split() for line in table if line.startswith("pipewell/resize "))
    assert resize[1:6] == ["pipewell/resize:latest", "up", "to", "date", "c-small"]
    assert await asyncio.to_thread(main, ["nodes", "build", "no-such-node"]) == 2
    assert "no node source for no-such-node in nodes/" in capsys.readouterr().err


def test_sources_are_found_only_for_built_in_image_names():
    from orchestrator.node_images import source_for

    nodes = Path(__file__).resolve().parents[2] / "nodes"
    assert source_for("pipewell/resize:latest", nodes).name == "resize"
    assert source_for("pipewell/resize", nodes).name == "resize"
    assert source_for("pipewell/resize:v2", nodes) is None
    assert source_for("evil/resize:latest", nodes) is None
    assert source_for("pipewell/../resize:latest", nodes) is None


async def test_a_base_image_missing_here_is_never_pulled_for_a_build(start_service, node_source):
    (node_source.directory / "Dockerfile").write_text(
        'FROM pipewell/no-such-base:latest AS build\nFROM build\nCMD ["true"]\n'
    )
    client = await start_service()
    done = await run_node_of(client, node_source)
    assert done["Status"] == "ERROR"
    assert done["NodeState"]["n"]["Error"] == (
        f"image {node_source.image} not found locally, and building {node_source.image} "
        "needs pipewell/no-such-base:latest, which is not on this host (make setup builds "
        "it; a base is never pulled from a registry)"
    )


async def test_a_nodedef_sent_with_the_flow_wins_over_the_catalogs(start_service):
    client = await start_service()
    own = {
        "Publisher": "pipewell",
        "Name": "checksum",
        "Image": "pipewell/busybox:latest",
        "Outputs": [{"Name": "checksums"}],
        "Command": {"Name": "run", "Exec": "sh -c 'echo mine > ${checksums}'"},
    }
    flow = {
        "Name": "own-checksum",
        "Nodes": [
            {
                "ID": "sum",
                "Uses": "pipewell/checksum",
                "Outputs": [{"Name": "checksums", "Edge": "sums"}],
            }
        ],
    }
    run = await submit(client, flow, [own])
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == "COMPLETE", done["NodeState"]["sum"]
    made = await client.get(f"/api/v1/flow/artifact/{run['ID']}/sums")
    assert await made.read() == b"mine\n"
