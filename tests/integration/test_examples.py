"""The catalog examples, run as the README says: its exact commands, real images, real outputs.

The README's commands are read from its "Built-in nodes" section and run in a
copy of examples/ (so that examples/inputs/ and out/ land in a temporary
folder), each `pipewell test` with the embedded service it starts.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]


def readme_commands(heading: str = "Built-in nodes") -> list[list[str]]:
    """The shell lines of a README section's first block, split as a shell would."""
    section = (REPO / "README.md").read_text().split(f"\n## {heading}\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line) for line in block.splitlines() if line and not line.startswith("#")]


def batch_commands() -> list[list[str]]:
    return readme_commands("Batches: collections")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    examples = tmp_path / "examples"
    examples.mkdir()
    for path in (REPO / "examples").iterdir():
        if path.suffix in (".yaml", ".sh", ".json"):
            shutil.copy2(path, examples / path.name)
    return tmp_path


def image(path: Path) -> Image.Image:
    """The picture at ``path``, read whole (no file left open)."""
    return Image.open(io.BytesIO(path.read_bytes()))


async def pipewell(argv: list[str], cwd: Path) -> str:
    """``.venv/bin/pipewell ARGS`` as this interpreter's CLI; its output, asserting exit 0."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orchestrator.cli", *argv[1:],
        cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), timeout=100)
    text = out.decode(errors="replace")
    assert process.returncode == 0, f"{shlex.join(argv)} exited {process.returncode}:\n{text}"
    return text


async def test_every_example_command_of_the_readme_runs_and_its_outputs_are_right(workdir):
    commands = readme_commands()
    assert commands[0] == ["examples/make-inputs.sh"]
    made = await asyncio.to_thread(
        subprocess.run, commands[0], cwd=workdir, capture_output=True, text=True, timeout=60
    )
    assert made.returncode == 0, made.stderr
    runs = commands[1:]
    flows = sorted(argv[2] for argv in runs)
    batches = {argv[2] for argv in batch_commands()[1:]}  # run by a test of their own
    shown = [f"examples/{p.name}" for p in (workdir / "examples").glob("*.yaml")]
    assert flows == sorted(f for f in shown if f != "examples/greeter.yaml" and f not in batches)
    said = await asyncio.gather(*(pipewell(argv, workdir) for argv in runs))
    assert all(" COMPLETE in " in text for text in said), said
    out = workdir / "out"

    thumbnail = image(out / "photo" / "thumbnail.webp")
    assert (thumbnail.format, thumbnail.size) == ("WEBP", (320, 320))
    photo = image(workdir / "examples" / "inputs" / "photo.jpg").convert("RGB")
    marked = image(out / "photo" / "watermarked.jpg")
    assert (marked.format, marked.size) == ("JPEG", photo.size)
    corner = (900, 740, 1190, 790)  # the text, bottom right
    before, after = photo.crop(corner).getcolors(1 << 20), marked.convert("RGB").crop(corner)
    assert len(after.getcolors(1 << 20)) > len(before) + 20

    # 4 s at 2 frames a second: 8 tiles of 160x120, 4 columns, 4 px gaps.
    sheet = image(out / "video" / "sheet.jpg")
    assert (sheet.format, sheet.size) == ("JPEG", (4 * 160 + 5 * 4, 2 * 120 + 3 * 4))

    text = (
        b"Pipewell example report\nVisits grew by 12 percent this quarter.\n\n\f"
        b"Page two\nLyon and Porto led the list.\n\n\f"
    )
    assert json.loads((out / "pdf" / "checksums.json").read_text()) == {
        "size": len(text),
        "sha256": hashlib.sha256(text).hexdigest(),
        "md5": hashlib.md5(text).hexdigest(),
    }

    read = (out / "ocr" / "text.txt").read_text()
    lines = [line.strip() for line in read.splitlines() if line.strip()]
    assert lines == [
        "PIPEWELL EXAMPLE INVOICE",
        "Invoice number 4711",
        "Total due: 120.50 EUR",
        "Thank you for your order.",
    ]

    assert json.loads((out / "csv" / "busiest.json").read_text()) == [
        {"city": "Porto", "visits": 512},
        {"city": "Lyon", "visits": 340},
        {"city": "Turku", "visits": 101},
    ]


def first_flow_lines() -> list[str]:
    """The shell lines of the README's "Your first flow", in order, as a reader pastes them."""
    section = (REPO / "README.md").read_text().split("\n## Your first flow\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    blocks = [part.split("```", 1)[0] for part in section.split("```sh\n")[1:]]
    return [line for block in blocks for line in block.replace("\\\n", "").splitlines() if line]


async def test_the_readmes_first_flow_pasted_line_by_line_resizes_a_photo(start_service, workdir):
    client = await start_service()
    shutil.copy2(REPO / "examples" / "resize.json", workdir / "examples" / "resize.json")
    lines = first_flow_lines()
    assert any(line.startswith("RUN_ID=$(jq") for line in lines)
    assert sum("$PUT_URL" in line and line.startswith("curl") for line in lines) == 1
    # One shell, as a terminal keeps its variables from line to line; the service is
    # the test's, on a port of its own.
    script = "set -e\n" + "\n".join(lines).replace("127.0.0.1:1234", f"127.0.0.1:{client.port}")
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", script, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, err.decode()
    assert "event: end" in out.decode()
    resized = image(workdir / "resized.jpg")
    assert resized.format == "JPEG" and resized.size == (800, 533)


async def test_the_batch_examples_of_the_readme_run_and_their_outputs_are_right(workdir):
    commands = batch_commands()
    assert commands[0] == ["examples/make-inputs.sh"]
    made = await asyncio.to_thread(
        subprocess.run, commands[0], cwd=workdir, capture_output=True, text=True, timeout=60
    )
    assert made.returncode == 0, made.stderr
    said = await asyncio.gather(*(pipewell(argv, workdir) for argv in commands[1:]))
    assert all(" COMPLETE in " in text for text in said), said
    out = workdir / "out"

    # Six photos, each a 320x320 thumbnail watermarked on its own: a sheet of three
    # columns of 160 px tiles, and a zip of them under their names (as JPEGs now).
    sheet = image(out / "batch" / "sheet.jpg")
    assert (sheet.format, sheet.size) == ("JPEG", (3 * 160 + 4 * 4, 2 * 160 + 3 * 4))
    with zipfile.ZipFile(out / "batch" / "bundle.zip") as bundle:
        names = bundle.namelist()
        assert names == [
            "lamps/brass-lamp.jpg",
            "lamps/green-lamp.jpg",
            "mugs/blue-mug.jpg",
            "mugs/red-mug.jpg",
            "rugs/grey-rug.jpg",
            "rugs/sand-rug.jpg",
        ]
        for name in names:
            thumb = Image.open(io.BytesIO(bundle.read(name)))
            assert (thumb.format, thumb.size) == ("JPEG", (320, 320)), name

    # Each shop's CSV parsed and summed on its own, named for what it became.
    with zipfile.ZipFile(out / "csv-batch" / "report.zip") as report:
        assert report.namelist() == ["lyon.json", "porto.json", "turku.json"]
        assert json.loads(report.read("lyon.json")) == [
            {"product": "lamp", "revenue": 126.0},
            {"product": "rug", "revenue": 120.0},
            {"product": "mug", "revenue": 114.0},
        ]
        assert [row["product"] for row in json.loads(report.read("porto.json"))] == ["rug", "mug"]
