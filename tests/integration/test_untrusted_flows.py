"""A flow is untrusted input: attacks through its names, its body and its stores fail safely.

Each test is the attack as a hostile user sends it to the real service.
"""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from orchestrator.config import ExecutorSettings
from orchestrator.executor import AttemptFailed, DockerExecutor, inside
from orchestrator.messages import Task, TaskInput, TaskOutput
from tests.helpers import BUSYBOX, busybox_def

VICTIM_BYTES = b"the host's own file\n"


def one_input_flow(input_name: str) -> tuple[dict, list[dict]]:
    flow = {
        "Name": "attack",
        "Nodes": [
            {
                "ID": "n",
                "Uses": "test/cat",
                "Inputs": [{"Name": input_name, "Edge": "src"}],
                "Outputs": [{"Name": "out", "Edge": "dst"}],
            }
        ],
    }
    node_def = busybox_def(
        "cat",
        "cp ${" + input_name + "} ${out}",
        Inputs=[{"Name": input_name}],
        Outputs=[{"Name": "out"}],
    )
    return flow, [node_def]


@pytest.mark.parametrize("style", ["absolute", "relative"])
async def test_an_input_name_cannot_name_a_host_file(start_service, tmp_path, style):
    victim = tmp_path / "victim.bin"
    victim.write_bytes(VICTIM_BYTES)
    client = await start_service()
    # The executor once wrote each input to <attempt>/in/<Name>: both forms reached the victim.
    name = str(victim) if style == "absolute" else "../../../../../../../" + str(victim)
    flow, defs = one_input_flow(name)
    response = await client.post("/api/v1/flow/test", json={"Flow": flow, "NodeDefs": defs})
    assert response.status == 400, await response.text()
    body = await response.json()
    assert body["code"] == "FLOW_INVALID"
    fields = {e["field"] for e in body["errors"] if e["code"] == "NAME_001"}
    assert {"Flow.Nodes.0.Inputs.0.Name", "NodeDefs.0.Inputs.0.Name"} <= fields
    assert all("not a valid name" in e["message"] for e in body["errors"])
    assert victim.read_bytes() == VICTIM_BYTES


async def test_every_name_that_becomes_a_path_or_variable_is_checked(start_service):
    client = await start_service()
    bad = "x/../y"
    flow = {
        "Name": "attack",
        "Stores": [{"Name": "s" * 5000, "Type": "local"}],
        "DataWells": [{"Edge": "src", "Source": "upload"}, {"Edge": "dst", "Store": "s" * 5000}],
        "Nodes": [
            {
                "ID": "node\x00id",
                "Uses": "test/t",
                "Inputs": [{"Name": "in", "Edge": "src"}],
                "Outputs": [{"Name": "out", "Edge": "dst"}],
                "Flags": [{"Name": bad, "Value": "1"}],
                "Command": "../run",
            }
        ],
    }
    node_def = busybox_def("t", "true", Flags=[{"Name": bad}], Outputs=[{"Name": "out"}])
    node_def["Commands"] = [{"Name": "../run", "Exec": "true"}]
    response = await client.post("/api/v1/flow/test", json={"Flow": flow, "NodeDefs": [node_def]})
    assert response.status == 400, await response.text()
    fields = {e["field"] for e in (await response.json())["errors"] if e["code"] == "NAME_001"}
    assert {
        "Flow.Stores.0.Name",
        "Flow.DataWells.1.Store",
        "Flow.Nodes.0.ID",
        "Flow.Nodes.0.Flags.0.Name",
        "Flow.Nodes.0.Command",
        "NodeDefs.0.Flags.0.Name",
        "NodeDefs.0.Commands.0.Name",
    } <= fields


@pytest.mark.docker
def test_the_worker_refuses_a_task_whose_names_are_paths(tmp_path: Path):
    """Defence in depth: a task that skipped validation (from a queue) builds no path."""
    victim = tmp_path / "victim.bin"
    victim.write_bytes(VICTIM_BYTES)
    client = docker.from_env()
    try:
        executor = DockerExecutor(client, ExecutorSettings(), "test-names", tmp_path / "work")
        for inputs, outputs in (
            ([TaskInput(name=str(victim), url="http://127.0.0.1:9/x")], []),
            ([], [TaskOutput(name="../../out", url="http://127.0.0.1:9/y")]),
        ):
            task = Task(
                run_id="r" * 32,
                node_id="n",
                attempt=1,
                image=BUSYBOX,
                tier="c-nano",
                timeout=10,
                argv=["true"],
                flags={},
                inputs=inputs,
                outputs=outputs,
            )
            result, cleanup = executor.run(task, lambda record: None)
            cleanup()
            assert not result.ok
            assert not result.retryable
            assert "is not a valid name" in result.error
        assert victim.read_bytes() == VICTIM_BYTES
        assert list((tmp_path / "work" / "attempts").iterdir()) == []
    finally:
        client.close()


def test_inside_keeps_file_names_in_their_directory(tmp_path: Path):
    assert inside(tmp_path, "image.png") == tmp_path / "image.png"
    for name in ("", ".", "..", "../x", "/etc/passwd", "a/b", "a\0b"):
        with pytest.raises(AttemptFailed):
            inside(tmp_path, name)
