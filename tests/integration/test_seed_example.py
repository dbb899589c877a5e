"""The Pupload seed's example, as a user runs it: submit, upload with curl, fetch the result."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import artifact, submit, upload, wait_for

pytestmark = pytest.mark.docker

# The example the README and examples/walkthrough.sh submit: the seed's flow, run
# with the built-in resize image.
EXAMPLE = json.loads((Path(__file__).parents[2] / "examples" / "resize.json").read_text())
SEED_FLOW = EXAMPLE["Flow"]
SEED_DEFS = EXAMPLE["NodeDefs"]


def image_bytes(fmt: str, size: tuple[int, int]) -> bytes:
    picture = Image.new("RGB", size, (200, 30, 30))
    for x in range(0, size[0], 7):
        picture.putpixel((x, x % size[1]), (0, 0, 255))
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt)
    return buffer.getvalue()


async def curl_put(args: list[str]) -> None:
    process = await asyncio.create_subprocess_exec(
        "curl",
        "-sS",
        "--fail-with-body",
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, (out, err)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize(("fmt", "curl_style"), [("PNG", "-T"), ("JPEG", "--data-binary")])
async def test_seed_example_resizes_to_width_800(start_service, tmp_path, fmt, curl_style):
    client = await start_service()
    run = await submit(client, SEED_FLOW, SEED_DEFS)
    assert run["Status"] == "WAITING"
    assert len(run["ID"]) == 32
    assert run["NodeState"]["resize-1"]["MaxAttempts"] == 3
    waiting = run["WaitingURLs"]
    assert [w["Artifact"]["EdgeName"] for w in waiting] == ["input-image"]
    assert waiting[0]["Artifact"]["StoreName"] == "default"

    source = tmp_path / f"photo.{fmt.lower()}"
    source.write_bytes(image_bytes(fmt, (1600, 1200)))
    url = waiting[0]["PutURL"]
    if curl_style == "-T":
        await curl_put(["-T", str(source), url])
    else:
        await curl_put(["-X", "PUT", "--data-binary", f"@{source}", url])

    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == "COMPLETE", done
    produced = done["Artifacts"]["output-image"]
    assert produced["StoreName"] == "default"
    assert produced["EdgeName"] == "output-image"
    assert done["Artifacts"]["input-image"]["ObjectName"].endswith("/input-image")

    # The upload stored exactly the bytes sent, whatever curl's Content-Type said.
    assert await artifact(client, run["ID"], "input-image") == source.read_bytes()
    result = Image.open(io.BytesIO(await artifact(client, run["ID"], "output-image")))
    assert result.format == fmt
    assert result.size == (800, 600)


async def test_text_input_is_rejected_by_mime_type_without_retries(start_service):
    client = await start_service()
    flow = {**SEED_FLOW, "Nodes": [{**SEED_FLOW["Nodes"][0], "Uses": "pipewell/resize"}]}
    run = await submit(client, flow, [])  # the built-in NodeDef, typed image/*
    await upload(client, run, "input-image", b"this is not an image\n")
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == "ERROR"
    state = done["NodeState"]["resize-1"]
    assert state["Attempt"] == 1
    assert state["Error"].startswith("input 'image' is text/plain, but this node accepts image/")


async def test_builtin_resize_nodedef_is_used_by_name(start_service):
    client = await start_service()
    flow = {
        **SEED_FLOW,
        "Nodes": [
            {
                **SEED_FLOW["Nodes"][0],
                "Uses": "pipewell/resize",
                "Flags": [{"Name": "width", "Value": 100}],
            }
        ],
    }
    run = await submit(client, flow, [])
    await upload(client, run, "input-image", image_bytes("PNG", (400, 200)))
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == "COMPLETE", done
    result = Image.open(io.BytesIO(await artifact(client, run["ID"], "output-image")))
    assert (result.format, result.size) == ("PNG", (100, 50))
