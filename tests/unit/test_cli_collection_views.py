"""The CLI's collections, without Docker: what an --input of a collection edge may be
(checked before anything is submitted), a mapped node's progress as the views and
``pipewell status`` say it, failed items listed with how to see the rest, and a
collection's items saved under a folder and never outside it (a fake service names
them)."""

from __future__ import annotations

import argparse
import asyncio
import io
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from orchestrator.client import (
    LocalFileError,
    failed_items_lines,
    item_path,
    item_progress_text,
    progress_bar,
    run_client_command,
)
from orchestrator.flow_test.command import check_inputs, summary
from orchestrator.flow_test.live import BAR, item_cell
from orchestrator.flow_test.plain import PlainView
from orchestrator.flow_test.session import (
    CannotTest,
    FailedItems,
    NodeView,
    Output,
    RunSession,
    Update,
    check_collection_input,
    collection_files,
    parse_inputs,
)
from orchestrator.models import FlowRun, FlowSubmission, ItemProgress, ItemState

RUN = "a" * 32


def progress(total: int | None, **counts: int) -> ItemProgress:
    return ItemProgress(total=total, counts=counts, min_success=0.5)


def test_a_mapped_nodes_progress_counts_the_items_that_ended():
    assert item_progress_text(progress(5000, COMPLETE=309, ERROR=3, RUNNING=8)) == (
        "312/5000 items (3 failed)"
    )
    assert item_progress_text(progress(4, COMPLETE=4)) == "4/4 items"
    # The collection still coming in: no total yet.
    assert item_progress_text(progress(None, COMPLETE=2, READY=5)) == "2/? items"
    assert item_progress_text(progress(10, COMPLETE=2, ERROR=1, STOPPED=7)) == (
        "10/10 items (1 failed, 7 stopped)"
    )
    assert item_progress_text(progress(3)) == "0/3 items"


def test_a_bar_of_items_shows_successes_failures_and_what_is_left():
    assert progress_bar(progress(4, COMPLETE=2), 20) == (10, 0)
    assert progress_bar(progress(4, COMPLETE=3, ERROR=1), 20) == (15, 5)
    assert progress_bar(progress(0), 20) == (0, 0)
    # One failure in 5000 still shows as a cell of its own.
    assert progress_bar(progress(5000, COMPLETE=4999, ERROR=1), 20) == (19, 1)
    # Without a total, the items known so far are the whole.
    assert progress_bar(progress(None, COMPLETE=1, READY=1), 10) == (5, 0)


def test_failed_items_are_listed_with_their_reasons_and_how_to_see_the_rest():
    items = [
        ItemState(name="c.txt", status="ERROR", attempt=1, error="exit 2:\nrefusing c.txt"),
        ItemState(name="d.txt", status="ERROR", attempt=2, error=""),
    ]
    lines = failed_items_lines(RUN, "thumb", progress(5000, COMPLETE=9, ERROR=12), items, True)
    assert lines == [
        "  thumb: 12 of 5000 items failed",
        "    c.txt: exit 2: refusing c.txt",
        "    d.txt: no error given",
        f"    … 10 more: pipewell items {RUN} thumb --status ERROR --limit 12",
    ]
    lines = failed_items_lines(RUN, "thumb", progress(3, ERROR=2, COMPLETE=1), items, False)
    assert lines[-1] == f"    their logs: pipewell items {RUN} thumb --status ERROR --logs"
    assert failed_items_lines(RUN, "thumb", None, [], False) == []


def test_an_item_is_saved_under_its_folder_and_never_outside(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert item_path(out, "a.txt") == out / "a.txt"
    assert item_path(out, "photos/2024/cat.jpg") == out / "photos" / "2024" / "cat.jpg"
    for name in ("../x", "a/../../x", "/etc/passwd", "a//b", "./a", "", "a\\..\\x", "a\x00b"):
        with pytest.raises(LocalFileError):
            item_path(out, name)
    # A link already there does not carry an item out of the folder either.
    (tmp_path / "elsewhere").mkdir()
    (out / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(LocalFileError, match="outside"):
        item_path(out, "link/x.txt")


def make_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_a_folders_items_are_its_regular_files_by_relative_name(tmp_path):
    folder = make_folder(
        tmp_path / "photos",
        {
            "b.jpg": b"b",
            "a/z.jpg": b"z",
            "a/b/c.jpg": b"c",
            ".DS_Store": b"junk",
            "__MACOSX/a/._z.jpg": b"junk",
            "a/._z.jpg": b"junk",
            "Thumbs.db": b"junk",
        },
    )
    (folder / "link.jpg").symlink_to(folder / "b.jpg")
    (folder / "linked").symlink_to(folder / "a", target_is_directory=True)
    found = collection_files(folder)
    assert [name for name, _ in found] == ["b.jpg", "a/z.jpg", "a/b/c.jpg"]
    assert found[0][1] == folder / "b.jpg"


def archive(path: Path, kind: str) -> Path:
    if kind == "zip":
        with zipfile.ZipFile(path, "w") as made:
            made.writestr("a.txt", "a")
    else:
        with tarfile.open(path, "w:gz") as made:
            data = b"a"
            info = tarfile.TarInfo("a.txt")
            info.size = len(data)
            made.addfile(info, io.BytesIO(data))
    return path


def test_a_collection_edge_takes_a_zip_a_tar_or_a_folder_and_nothing_else(tmp_path):
    assert check_collection_input("docs", archive(tmp_path / "in.zip", "zip")) == "zip"
    # By its bytes, not its name.
    assert check_collection_input("docs", archive(tmp_path / "in.bin", "tar")) == "tar"
    assert check_collection_input("docs", make_folder(tmp_path / "f", {"a.txt": b"a"})) == "folder"
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CannotTest, match="notes.txt is neither a zip nor a tar: give a zip"):
        check_collection_input("docs", tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    make_folder(tmp_path / "junk", {".DS_Store": b"x"})
    for folder in ("empty", "junk"):
        with pytest.raises(CannotTest, match="holds no file to put as an item"):
            check_collection_input("docs", tmp_path / folder)
    # A name the service would refuse, in its words, before anything is submitted.
    said = {
        "my cat.jpg": "item name 'my cat.jpg' is not a relative path of letters, digits, '.', "
        "'_' and '-' parts (none starting with '.'); it would be 'my_cat.jpg'",
        ".hidden/a": "item name '.hidden/a' is not a relative path of letters, digits, '.', "
        "'_' and '-' parts (none starting with '.'); it would be 'hidden/a'",
    }
    for name, refusal in said.items():
        folder = make_folder(tmp_path / f"refused-{len(name)}", {name: b"x", "ok.jpg": b"y"})
        with pytest.raises(CannotTest) as refused:
            check_collection_input("docs", folder)
        assert str(refused.value) == f"--input docs={folder}: {refusal}"


def test_inputs_of_collection_edges_are_parsed_and_checked_as_such(tmp_path):
    folder = make_folder(tmp_path / "photos", {"a.jpg": b"a"})
    (tmp_path / "one.txt").write_text("x")
    files = parse_inputs([f"docs={folder}", f"text={tmp_path / 'one.txt'}"], {"docs"})
    assert files == {"docs": folder, "text": tmp_path / "one.txt"}
    with pytest.raises(CannotTest, match="is not a file but a folder: only a collection edge"):
        parse_inputs([f"text={folder}"], {"docs"})
    with pytest.raises(CannotTest, match="is not there .edge 'docs' takes a folder of items"):
        parse_inputs([f"docs={tmp_path / 'gone'}"], {"docs"})
    check_inputs(files, ["docs", "text"], ask_for_missing=False, collections={"docs"})
    with pytest.raises(CannotTest, match="neither a zip nor a tar"):
        check_inputs(
            {"docs": tmp_path / "one.txt"}, ["docs"], ask_for_missing=False, collections={"docs"}
        )
    with pytest.raises(CannotTest, match="pass --input docs=FOLDER|ARCHIVE --input text=PATH"):
        check_inputs({}, ["docs", "text"], ask_for_missing=False, collections={"docs"})


class ScriptedSession:
    """What PlainView reads of a session: its nodes, changed by a script of states."""

    def __init__(self, script: list[dict[str, NodeView]]) -> None:
        self.script = script
        self.nodes: dict[str, NodeView] = {}

    def elapsed(self) -> float:
        return 1.0

    async def follow(self):  # type: ignore[no-untyped-def]
        for nodes in self.script:
            self.nodes = nodes
            yield Update("status")


async def test_the_plain_view_says_a_mapped_nodes_items_at_most_once_a_second(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("orchestrator.flow_test.plain.time.monotonic", lambda: clock[0])

    def mapped(status: str, **counts: int) -> dict[str, NodeView]:
        return {"thumb": NodeView(status=status, items=progress(4, **counts))}

    session = ScriptedSession(
        [
            mapped("IDLE"),
            mapped("RUNNING", RUNNING=2),
            mapped("RUNNING", COMPLETE=1, RUNNING=2),  # the same second: not said
            mapped("RUNNING", COMPLETE=2, ERROR=1, RUNNING=1),  # a second later: said
            mapped("COMPLETE", COMPLETE=3, ERROR=1),
        ]
    )
    said: list[str] = []
    view = PlainView(session, said.append)  # type: ignore[arg-type]
    steps = session.follow()

    async def step(seconds: float) -> None:
        clock[0] += seconds
        await steps.__anext__()
        for node_id, node in session.nodes.items():
            view._show(node_id, node)

    for seconds in (0.0, 0.0, 0.5, 0.6, 0.1):
        await step(seconds)
    lines = [" ".join(line.split("] ", 1)[1].split()) for line in said]
    assert lines == [
        "thumb RUNNING 0/4 items",
        "thumb RUNNING 3/4 items (1 failed)",
        "thumb COMPLETE 4/4 items (1 failed) 0.0 s",
    ]


def test_the_live_view_draws_a_bar_then_the_count():
    view = NodeView(status="RUNNING", items=progress(8, COMPLETE=3, ERROR=1, RUNNING=2))
    cell = item_cell(view)
    assert cell.plain == "█" * 6 + "█" * 2 + "░" * 8 + " 4/8 items (1 failed)"
    styles = {span.style for span in cell.spans}
    assert {"green", "red", "dim"} <= styles
    assert len(cell.plain.split(" ")[0]) == BAR
    failed = NodeView(status="ERROR", error="5 of 8 items failed", items=progress(8, ERROR=5))
    assert item_cell(failed).plain.endswith("5/8 items (5 failed)  5 of 8 items failed")


def submission() -> FlowSubmission:
    return FlowSubmission.model_validate(
        {
            "Flow": {
                "Name": "batch",
                "Collections": ["docs"],
                "Nodes": [
                    {
                        "ID": "thumb",
                        "Uses": "t/x",
                        "Inputs": [{"Name": "in", "Edge": "docs"}],
                        "Outputs": [{"Name": "out", "Edge": "thumbs"}],
                    }
                ],
            }
        }
    )


def finished_run(**items: Any) -> dict[str, Any]:
    return {
        "ID": RUN,
        "Status": "COMPLETE",
        "NodeState": {"thumb": {"Status": "COMPLETE", "Items": {"Total": 3, **items}}},
        "Artifacts": {
            "thumbs": {
                "StoreName": "default",
                "ObjectName": f"tenants/default/{RUN}/thumbs",
                "EdgeName": "thumbs",
                "Items": 3,
            }
        },
        "StartedAt": "2026-12-04T00:00:00Z",
    }


async def test_the_summary_says_where_a_collection_went_and_which_items_failed(tmp_path):
    session = RunSession("http://127.0.0.1:9", None, submission())
    try:
        session.run = FlowRun.model_validate(finished_run())
        session.failed = {
            "thumb": FailedItems(
                progress(3, COMPLETE=2, ERROR=1),
                [ItemState(name="b.jpg", status="ERROR", attempt=1, error="not an image")],
                False,
            )
        }
        outputs = [Output("thumbs", tmp_path / "thumbs", 12, items=2)]
        lines = summary(session, outputs)
    finally:
        await session.aclose()
    assert lines[1:] == [
        f"  thumbs -> {tmp_path / 'thumbs'}/ (2 items, 12 bytes)",
        "  thumb: 1 of 3 items failed",
        "    b.jpg: not an image",
        f"    their logs: pipewell items {RUN} thumb --status ERROR --logs",
    ]


def fake_service(names_by_page: list[list[str]]) -> web.Application:
    """A service whose collection 'thumbs' pages the items named, each item's bytes its
    name; it knows one run, finished."""
    app = web.Application()

    async def status(request: web.Request) -> web.Response:
        return web.json_response(finished_run())

    async def collection(request: web.Request) -> web.Response:
        after = request.query.get("after")
        index = int(after) if after else 0
        names = names_by_page[index]
        more = index + 1 < len(names_by_page)
        items = [
            {"Name": name, "ObjectName": f"x/{name}", "URL": str(request.url.with_path("/item")
             .with_query(name=name))}
            for name in names
        ]  # fmt: skip
        page = {"Edge": "thumbs", "Complete": True, "Count": 3, "Items": items,
                "Next": str(index + 1) if more else None}  # fmt: skip
        return web.json_response(page)

    async def item(request: web.Request) -> web.Response:
        assert "Authorization" not in request.headers  # a presigned URL: no key sent there
        return web.Response(body=request.query["name"].encode())

    app.router.add_get("/api/v1/flow/status/{id}", status)
    app.router.add_get("/api/v1/flow/collection/{id}/{edge}", collection)
    app.router.add_get("/item", item)
    return app


async def test_pipewell_test_saves_every_page_of_a_collection_output(aiohttp_server, tmp_path):
    server = await aiohttp_server(fake_service([["a.jpg", "sub/b.jpg"], ["c.jpg"]]))
    session = RunSession(str(server.make_url("")), "secret", submission())
    try:
        session.run = FlowRun.model_validate(finished_run())
        [output] = await session.download(tmp_path / "out")
    finally:
        await session.aclose()
    assert (output.edge, output.path, output.items) == ("thumbs", tmp_path / "out/thumbs", 3)
    folder = tmp_path / "out" / "thumbs"
    assert (folder / "sub" / "b.jpg").read_bytes() == b"sub/b.jpg"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "a.jpg",
        "c.jpg",
        "sub/b.jpg",
    ]
    assert output.size == len(b"a.jpgsub/b.jpgc.jpg")


async def test_a_hostile_item_name_is_never_written_outside_out(aiohttp_server, tmp_path):
    server = await aiohttp_server(fake_service([["ok.jpg", "../../escaped.jpg"]]))
    session = RunSession(str(server.make_url("")), None, submission())
    try:
        session.run = FlowRun.model_validate(finished_run())
        with pytest.raises(CannotTest, match="saving item '../../escaped.jpg' of edge 'thumbs'"):
            await session.download(tmp_path / "deep" / "out")
    finally:
        await session.aclose()
    assert not (tmp_path / "escaped.jpg").exists()
    assert not (tmp_path / "deep" / "escaped.jpg").exists()
    assert (tmp_path / "deep" / "out" / "thumbs" / "ok.jpg").read_bytes() == b"ok.jpg"


async def test_pipewell_download_of_a_collection_saves_a_folder(aiohttp_server, tmp_path, capsys):
    server = await aiohttp_server(fake_service([["a.jpg"], ["sub/b.jpg", "/etc/passwd"]]))
    args = argparse.Namespace(
        server=str(server.make_url("")), key=None, run_id=RUN, edge="thumbs",
        output=tmp_path / "got",
    )  # fmt: skip
    assert await asyncio.to_thread(run_client_command, "download", args) == 2
    assert "item name '/etc/passwd' is not a relative path: not saved" in capsys.readouterr().err
    assert (tmp_path / "got" / "sub" / "b.jpg").read_bytes() == b"sub/b.jpg"
    server = await aiohttp_server(fake_service([["a.jpg"], ["sub/b.jpg"]]))
    args.server, args.output = str(server.make_url("")), tmp_path / "again"
    assert await asyncio.to_thread(run_client_command, "download", args) == 0
    assert capsys.readouterr().out == f"thumbs -> {tmp_path / 'again'}/ (2 items, 14 bytes)\n"
