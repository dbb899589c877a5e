"""The CLI with collections, against the real service and real (busybox) containers:
``pipewell test`` uploads a folder item by item or a zip as it is, shows each mapped
node's progress and failed items, and saves a collection output as a folder of its
items; ``pipewell status``, ``items`` and ``download`` read the same run."""

from __future__ import annotations

import asyncio
import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from textual.widgets import DataTable, RichLog

from orchestrator.cli import main
from orchestrator.flow_files import read_flow_file
from orchestrator.flow_test.live import FilePicker, LiveView
from orchestrator.flow_test.session import RunSession
from tests.helpers import busybox_def

pytestmark = pytest.mark.docker

UPPER = busybox_def(
    "upper",
    # An item whose text starts with "bad" fails for good (MaxAttempts 1).
    "sh -c 'case $(cat ${in}) in bad*) echo refusing ${in} >&2; exit 2;; esac; "
    "tr a-z A-Z < ${in} > ${out}'",
    Inputs=[{"Name": "in"}],
    Outputs=[{"Name": "out"}],
    MaxAttempts=1,
    Tier="c-nano",
)
LISTING = busybox_def(
    "listing",
    'sh -c \'cd ${all} && for f in $(find . -type f | sort); do echo "$f=$(cat $f)"; done '
    "> ${out}'",
    Inputs=[{"Name": "all", "Collection": True}],
    Outputs=[{"Name": "out", "Type": ["text/plain"]}],
    Tier="c-nano",
)


def batch(**map_fields: Any) -> dict[str, Any]:
    """docs (a collection) → upper, mapped → loud (a terminal collection); docs → list,
    a gather → listing (a terminal file)."""
    upper: dict[str, Any] = {
        "ID": "upper",
        "Uses": "test/upper",
        "Inputs": [{"Name": "in", "Edge": "docs"}],
        "Outputs": [{"Name": "out", "Edge": "loud"}],
    }
    if map_fields:
        upper["Map"] = map_fields
    gather = {
        "ID": "list",
        "Uses": "test/listing",
        "Inputs": [{"Name": "all", "Edge": "docs"}],
        "Outputs": [{"Name": "out", "Edge": "listing"}],
    }
    flow = {"Name": "batch", "Collections": ["docs"], "Nodes": [upper, gather]}
    return {"Flow": flow, "NodeDefs": [UPPER, LISTING]}


def folder_of(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def zipped(files: dict[str, bytes]) -> bytes:
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return data.getvalue()


async def pipewell(*argv: str) -> int:
    # The service answers on this loop: the blocking CLI runs in a thread.
    return await asyncio.to_thread(main, list(argv))


async def test_a_folder_is_put_item_by_item_mapped_gathered_and_saved_as_a_folder(
    start_service, tmp_path, capsys
):
    client = await start_service()
    server = str(client.make_url("")).rstrip("/")
    flow = tmp_path / "batch.yaml"
    flow.write_text(yaml.safe_dump(batch()))
    photos = folder_of(
        tmp_path / "photos",
        {"a.txt": b"alpha", "sub/b.txt": b"beta", "c.txt": b"gamma", ".DS_Store": b"junk"},
    )
    out = tmp_path / "o"
    argv = ["test", str(flow), "--server", server, "--plain", "--out", str(out)]
    assert await pipewell(*argv, "--input", f"docs={photos}") == 0, capsys.readouterr()
    lines = capsys.readouterr().out.splitlines()
    assert f"uploaded 3 items of {photos} to edge 'docs' (14 bytes)" in lines, lines
    # The mapped node says how far its items are, not its attempt.
    said = [line.split("] ", 1)[1] for line in lines if line.startswith("[")]
    upper = [" ".join(line.split()) for line in said if line.startswith("upper ")]
    assert upper[-1].startswith("upper COMPLETE 3/3 items "), upper
    assert upper[-1].endswith(" s") and upper[0].startswith("upper RUNNING "), upper
    assert not any("attempt" in line for line in upper), upper
    assert lines[-2] == f"  loud -> {out / 'loud'}/ (3 items, 14 bytes)", lines
    assert lines[-1] == f"  listing -> {out / 'listing.txt'} (45 bytes)", lines
    saved = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert saved == ["listing.txt", "loud/a.txt", "loud/c.txt", "loud/sub/b.txt"]
    assert (out / "loud" / "a.txt").read_bytes() == b"ALPHA"
    assert (out / "loud" / "sub" / "b.txt").read_bytes() == b"BETA"
    assert (out / "loud" / "c.txt").read_bytes() == b"GAMMA"
    assert (out / "listing.txt").read_text().splitlines() == [
        "./a.txt=alpha",
        "./c.txt=gamma",
        "./sub/b.txt=beta",
    ]


async def test_failed_items_are_listed_and_read_by_status_items_and_download(
    start_service, tmp_path, capsys
):
    client = await start_service()
    server = str(client.make_url("")).rstrip("/")
    flow = tmp_path / "batch.yaml"
    flow.write_text(yaml.safe_dump(batch(MinSuccess=0.5)))
    archive = tmp_path / "docs.zip"
    files = {"a.txt": b"alpha", "sub/b.txt": b"beta", "c.txt": b"bad one", "d.txt": b"delta"}
    archive.write_bytes(zipped(files))
    out = tmp_path / "o"
    argv = ["test", str(flow), "--server", server, "--plain", "--out", str(out)]
    assert await pipewell(*argv, "--input", f"docs={archive}") == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"uploaded {archive} to edge 'docs' ({archive.stat().st_size} bytes)" in lines
    # (The in-process service logs to the same captured stdout.)
    run_id = next(line for line in lines if line.endswith(": batch, 2 node(s)")).split()[1][:-1]
    upper = [" ".join(line.split("] ", 1)[1].split()) for line in lines if "] upper " in line]
    assert upper[-1].startswith("upper COMPLETE 4/4 items (1 failed)"), upper
    # After the outputs: the failed item, its reason, and where its log is.
    at = lines.index("  upper: 1 of 4 items failed")
    assert lines[at + 1].startswith("    c.txt: command exited with code 2: refusing ")
    assert lines[at + 2] == f"    their logs: pipewell items {run_id} upper --status ERROR --logs"
    assert sorted(p.name for p in (out / "loud").rglob("*") if p.is_file()) == [
        "a.txt",
        "b.txt",
        "d.txt",
    ]

    assert await pipewell("status", run_id, "--server", server) == 0
    status = capsys.readouterr().out.splitlines()
    row = next(line for line in status if line.split()[0] == "upper")
    assert " ".join(row.split()[:6]) == "upper COMPLETE 4/4 items (1 failed)", status
    assert "  upper: 1 of 4 items failed" in status
    assert any(line.startswith("    c.txt: command exited with code 2") for line in status)

    assert await pipewell("items", run_id, "upper", "--status", "error", "--logs",
                          "--server", server) == 0  # fmt: skip
    listed = capsys.readouterr().out.splitlines()
    assert listed[0] == "node upper: 4/4 items (1 failed); 1 ERROR item(s) here"
    assert listed[1].split()[:4] == ["c.txt", "ERROR", "attempt", "1"]
    assert any(line.endswith("c.txt stderr: refusing /pipewell/in/in.txt") for line in listed), (
        listed
    )
    assert await pipewell("items", run_id, "upper", "--limit", "2", "--server", server) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 4 and listed[-1].startswith("  … and more: --limit 4")
    assert await pipewell("items", run_id, "list", "--server", server) == 1
    assert f"run {run_id} has no mapped node 'list'" in capsys.readouterr().err

    folder = tmp_path / "fetched"
    assert await pipewell("download", run_id, "loud", "-o", str(folder), "--server", server) == 0
    assert capsys.readouterr().out.strip() == f"loud -> {folder}/ (3 items, 14 bytes)"
    assert (folder / "sub" / "b.txt").read_bytes() == b"BETA"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "a.txt",
        "d.txt",
        "sub/b.txt",
    ]
    # The uploaded collection reads the same way: its items, not the zip.
    assert await pipewell("download", run_id, "docs", "-o", str(tmp_path / "in"),
                          "--server", server) == 0  # fmt: skip
    assert (tmp_path / "in" / "c.txt").read_bytes() == b"bad one"
    assert await pipewell("download", run_id, "loud", "-o", "-", "--server", server) == 2
    assert "carries a collection, a folder of items: give -o DIR" in capsys.readouterr().err


async def test_what_a_collection_edge_takes_is_checked_before_anything_is_submitted(
    start_service, tmp_path, capsys
):
    client = await start_service()
    server = str(client.make_url("")).rstrip("/")
    flow = tmp_path / "batch.yaml"
    flow.write_text(yaml.safe_dump(batch()))
    (tmp_path / "notes.txt").write_text("not an archive")
    (tmp_path / "empty").mkdir()
    folder_of(tmp_path / "spaced", {"my photo.txt": b"x", "ok.txt": b"y"})
    argv = ["test", str(flow), "--server", server, "--plain", "--out", str(tmp_path / "o")]
    cases = {
        "edge 'docs' carries a collection, and notes.txt is neither a zip nor a tar": "notes.txt",
        "the folder holds no file to put as an item": "empty",
        "item name 'my photo.txt' is not a relative path of letters, digits, '.', '_' and '-' "
        "parts (none starting with '.'); it would be 'my_photo.txt'": "spaced",
        "is not there (edge 'docs' takes a folder of items, or a zip or tar of them)": "gone",
    }
    for said, name in cases.items():
        assert await pipewell(*argv, "--input", f"docs={tmp_path / name}") == 2, said
        assert said in capsys.readouterr().err
    assert await pipewell(*argv) == 2
    assert "pass --input docs=FOLDER|ARCHIVE" in capsys.readouterr().err
    # No run was made: none left behind, STOPPED or waiting.
    assert await (await client.get("/api/v1/flow/runs")).json() == {"runs": []}

    # A zip by its first bytes that is no zip: the service refuses it, in its words, and
    # the run that waited for it is stopped.
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    assert await pipewell(*argv, "--input", f"docs={tmp_path / 'broken.zip'}") == 2
    err = capsys.readouterr().err
    assert f"uploading {tmp_path / 'broken.zip'} to edge 'docs': edge 'docs': the archive " in err
    assert "(ARCHIVE_UNREADABLE)" in err and err.rstrip().endswith("(400)"), err
    [run] = (await (await client.get("/api/v1/flow/runs")).json())["runs"]
    assert run["Status"] == "STOPPED"


async def test_the_live_view_takes_a_folder_and_draws_a_bar_of_items(start_service, tmp_path):
    client = await start_service()
    flow = tmp_path / "batch.yaml"
    flow.write_text(yaml.safe_dump(batch(MinSuccess=0.5)))
    photos = folder_of(tmp_path / "photos", {"a.txt": b"alpha", "b.txt": b"bad", "c.txt": b"c"})
    session = RunSession(str(client.make_url("")), None, read_flow_file(flow))
    await session.submit()
    app = LiveView(session, {}, tmp_path / "out")

    async def until(check, seconds: float = 60.0) -> None:  # type: ignore[no-untyped-def]
        for _ in range(int(seconds * 10)):
            if check():
                return
            await asyncio.sleep(0.1)
        raise AssertionError("not reached in time")

    try:
        async with app.run_test(size=(140, 40)) as pilot:
            await until(lambda: isinstance(app.screen, FilePicker))
            assert app.screen.edge == "docs" and app.screen.collection
            app.screen.query_one("#path").value = str(tmp_path / "missing")
            await pilot.press("enter")
            assert isinstance(app.screen, FilePicker)  # not there: asked again
            app.screen.query_one("#path").value = str(photos)
            await pilot.press("enter")
            await until(lambda: app.outputs is not None)
            table = app.query_one("#nodes", DataTable)
            cell = str(table.get_cell("upper", "last line"))
            assert cell.endswith(" 3/3 items (1 failed)"), cell
            bar = cell.split(" ")[0]
            assert len(bar) == 16 and bar.count("░") == 0, bar
            assert str(table.get_cell("upper", "state")) == "COMPLETE"
            assert str(table.get_cell("upper", "attempt")) == "items"
            # Under the mapped node's log: its failed item and why.
            log = app.query_one("#log", RichLog)
            text = "\n".join(line.text for line in log.lines)
            assert "upper: 1 of 3 items failed" in text, text
            assert "b.txt: command exited with code 2: refusing" in text
            await pilot.press("q")
        [loud, listing] = app.return_value
        assert (loud.edge, loud.items) == ("loud", 2)
        assert (loud.path / "a.txt").read_bytes() == b"ALPHA"
        assert listing.path.read_text().splitlines()[1] == "./b.txt=bad"
    finally:
        await session.aclose()
