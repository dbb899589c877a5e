"""Helpers of the built-in nodes' tests: one catalog node run through the real service.

The flow names the node by its catalog ``Uses`` and sends no NodeDefs, so the
built-in NodeDef (types, flags, defaults, commands) and the image are exercised
together, exactly as a user's flow would.
"""

from __future__ import annotations

import io
import json
import subprocess
from dataclasses import dataclass, field
from typing import Any

from aiohttp.test_utils import TestClient

from orchestrator.catalog import load_catalog
from tests.helpers import artifact, submit, wait_for

MEDIA = "pipewell/media:latest"


@dataclass
class NodeRun:
    """How one node's run ended: its status, error, log lines and outputs' bytes."""

    status: str
    error: str
    attempts: int
    logs: list[str]
    outputs: dict[str, bytes] = field(default_factory=dict)

    def json(self, name: str) -> Any:
        return json.loads(self.outputs[name])

    def text(self, name: str) -> str:
        return self.outputs[name].decode("utf-8")


def one_node_flow(
    uses: str,
    inputs: list[str],
    outputs: list[str],
    flags: dict[str, str] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """A flow of one catalog node: input ``x`` on edge ``in-x``, output ``y`` on ``out-y``."""
    node: dict[str, Any] = {
        "ID": "n",
        "Uses": uses,
        "Inputs": [{"Name": name, "Edge": f"in-{name}"} for name in inputs],
        "Outputs": [{"Name": name, "Edge": f"out-{name}"} for name in outputs],
        "Flags": [{"Name": k, "Value": v} for k, v in (flags or {}).items()],
    }
    if command is not None:
        node["Command"] = command
    return {"Name": uses.replace("/", "-"), "Nodes": [node]}


async def run_node(
    client: TestClient,
    uses: str,
    inputs: dict[str, bytes],
    outputs: list[str],
    flags: dict[str, str] | None = None,
    command: str | None = None,
    timeout: float = 90.0,
    unchecked_flags: bool = False,
) -> NodeRun:
    """Submit a one-node flow (no NodeDefs: the catalog's), upload its inputs, wait for its end.

    ``unchecked_flags`` sends the catalog's NodeDef without its flags' Values, Min and
    Max, so a value validation would refuse reaches the node: its own check is tested.
    """
    flow = one_node_flow(uses, list(inputs), outputs, flags, command)
    defs = [_unchecked(uses)] if unchecked_flags else []
    run = await submit(client, flow, defs)
    for name, data in inputs.items():
        url = next(
            w["PutURL"] for w in run["WaitingURLs"] if w["Artifact"]["EdgeName"] == f"in-{name}"
        )
        # A file object: aiohttp warns that a large bytes body would block the loop.
        async with client.session.put(url, data=io.BytesIO(data)) as response:
            assert response.status == 200, await response.text()
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"}, timeout=timeout)
    state = done["NodeState"]["n"]
    result = NodeRun(
        status=done["Status"],
        error=state.get("Error") or "",
        attempts=state["Attempt"],
        logs=[line["message"] for line in state["Logs"]],
    )
    if done["Status"] == "COMPLETE":
        for name in outputs:
            result.outputs[name] = await artifact(client, run["ID"], f"out-{name}")
    return result


def _unchecked(uses: str) -> dict[str, Any]:
    node_def = load_catalog()[uses].model_dump(mode="json", by_alias=True, exclude_none=True)
    for flag in node_def["Flags"]:
        for bound in ("Values", "Min", "Max"):
            flag.pop(bound, None)
    return node_def


async def refused_flags(
    client: TestClient, uses: str, inputs: list[str], outputs: list[str], flags: dict[str, str]
) -> list[str]:
    """The NODE_012 messages with which the service refuses the flow before it runs."""
    flow = one_node_flow(uses, inputs, outputs, flags)
    response = await client.post("/api/v1/flow/test", json={"Flow": flow, "NodeDefs": []})
    assert response.status == 400, await response.text()
    errors = (await response.json())["errors"]
    assert {e["code"] for e in errors} == {"NODE_012"}, errors
    return [e["message"] for e in errors]


def probe(media: bytes) -> dict[str, Any]:
    """ffprobe's streams (frames counted) and format of ``media``, run in pipewell/media
    with no network. The bytes are saved first: from a pipe, ffprobe cannot tell an MP3's
    duration."""
    done = subprocess.run(
        ["docker", "run", "--rm", "-i", "--network", "none", MEDIA, "sh", "-c",
         'cat > /tmp/media && exec ffprobe -v error -print_format json -show_streams'
         " -show_format -count_frames /tmp/media"],
        input=media,
        capture_output=True,
        timeout=60,
        check=True,
    )  # fmt: skip
    return json.loads(done.stdout)
