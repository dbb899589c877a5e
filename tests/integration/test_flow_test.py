"""``pipewell test``: real flow files, real inputs and outputs, real containers.

The plain view runs as the command does (a subprocess with its embedded
service, or ``--server``); the live view runs headless in textual's pilot
against the real service.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from PIL import Image
from textual.widgets import DataTable, RichLog

from orchestrator.cli import main
from orchestrator.flow_files import read_flow_file
from orchestrator.flow_test import session as session_module
from orchestrator.flow_test.live import ConfirmStop, FilePicker, LiveView
from orchestrator.flow_test.session import RunSession
from tests.helpers import busybox_def

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]

SHOUT = {
    "Flow": {
        "Name": "shout",
        "Nodes": [
            {
                "ID": "upper",
                "Uses": "test/upper",
                "Inputs": [{"Name": "in", "Edge": "text"}],
                "Outputs": [{"Name": "out", "Edge": "loud"}],
            },
            {
                "ID": "mark",
                "Uses": "test/mark",
                "Inputs": [{"Name": "in", "Edge": "loud"}],
                "Outputs": [{"Name": "out", "Edge": "marked"}],
            },
        ],
    },
    "NodeDefs": [
        busybox_def("upper", "sh -c 'echo converting; tr a-z A-Z < ${in} > ${out}'"),
        busybox_def(
            "mark",
            'sh -c \'printf "%s%s" "$(cat ${in})" "$FLAG_SUFFIX" > ${out}\'',
            Flags=[{"Name": "suffix", "Default": "."}],
        ),
    ],
}


def pipewell_test(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "test", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=100,
        stdin=subprocess.DEVNULL,
    )


def test_a_flow_file_runs_with_its_inputs_and_flags_and_its_outputs_land_in_out(tmp_path):
    flow = tmp_path / "shout.yaml"
    flow.write_text(yaml.safe_dump(SHOUT))
    (tmp_path / "words.txt").write_bytes(b"hello there")
    done = pipewell_test(
        str(flow),
        "--input",
        "text=words.txt",
        "--flag",
        "mark.suffix=!",
        "--out",
        "results",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("run ") and lines[0].endswith(": shout, 2 node(s)")
    assert lines[1] == "uploaded words.txt to edge 'text' (11 bytes)"
    # One line per change, in order: a node's log lines between its start and its end.
    said = [line.split("] ", 1)[1].split() for line in lines if line.startswith("[")]
    upper = [words for words in said if words[0] == "upper"]
    states = [words[1] for words in upper if words[1] != "|"]
    # Queued (READY) first, when the view sees it before the worker starts the node.
    assert states in (["READY", "RUNNING", "COMPLETE"], ["RUNNING", "COMPLETE"]), states
    running = upper.index(["upper", "RUNNING", "attempt", "1/3"])
    assert upper.index(["upper", "|", "stdout:", "converting"]) > running
    assert upper[-1][:4] == ["upper", "COMPLETE", "attempt", "1/3"]
    assert said.index(upper[-1]) < said.index(["mark", "RUNNING", "attempt", "1/3"])
    assert lines[-2].endswith(" COMPLETE in " + lines[-2].split(" in ")[1])
    assert lines[-1] == "  marked -> results/marked.txt (12 bytes)"
    assert (tmp_path / "results" / "marked.txt").read_bytes() == b"HELLO THERE!"
    # Only the terminal edge is downloaded.
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["marked.txt"]


def test_the_resize_example_makes_an_image_800_pixels_wide(tmp_path):
    picture = io.BytesIO()
    Image.new("RGB", (1600, 900), (200, 40, 40)).save(picture, format="PNG")
    (tmp_path / "photo.png").write_bytes(picture.getvalue())
    done = pipewell_test(
        str(REPO / "examples" / "resize.json"),
        "--input",
        "input-image=photo.png",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    written = done.stdout.splitlines()[-1].split(" -> ")[1].split(" (")[0]
    assert written == "out/output-image.png"
    with Image.open(tmp_path / written) as resized:
        assert (resized.format, resized.size) == ("PNG", (800, 450))


FAILING = {
    "Flow": {
        "Name": "breaks",
        "Nodes": [
            {
                "ID": "fragile",
                "Uses": "test/fragile",
                "Inputs": [{"Name": "in", "Edge": "text"}],
                "Outputs": [{"Name": "out", "Edge": "never"}],
            }
        ],
    },
    "NodeDefs": [
        busybox_def(
            "fragile",
            "sh -c 'echo reading the input; echo the input is not a number >&2; exit 3'",
            MaxAttempts=2,
        )
    ],
}


def test_a_failing_flow_exits_1_with_the_nodes_error_and_last_lines(tmp_path):
    flow = tmp_path / "breaks.json"
    flow.write_text(json.dumps(FAILING))
    (tmp_path / "in.txt").write_text("abc")
    done = pipewell_test(str(flow), "--input", "text=in.txt", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    said = [line.split("] ", 1)[1].split()[:3] for line in lines if line.startswith("[")]
    assert ["fragile", "RETRYING", "attempt"] in said, lines
    at = lines.index(next(line for line in lines if line.endswith(" ended ERROR")))
    assert lines[at + 1].startswith("  node fragile failed: ")
    assert lines[at + 1].endswith("command exited with code 3: the input is not a number")
    tail = lines[at + 2 :]
    assert "    stdout: reading the input" in tail
    assert "    stderr: the input is not a number" in tail
    assert lines[-1] == "the service's log: out/service.log"
    assert '"event": "run_finished"' in (tmp_path / "out" / "service.log").read_text()


def test_what_the_test_cannot_do_is_said_with_exit_2(tmp_path):
    flow = tmp_path / "shout.yaml"
    flow.write_text(yaml.safe_dump(SHOUT))
    (tmp_path / "words.txt").write_text("x")
    missing = pipewell_test(str(flow), cwd=tmp_path)
    assert missing.returncode == 2
    assert "the flow waits for a file on edge 'text': pass --input text=PATH" in missing.stderr
    unknown = pipewell_test(str(flow), "--input", "txt=words.txt", cwd=tmp_path)
    assert unknown.returncode == 2
    assert "--input txt: the flow waits for files on edge 'text' only" in unknown.stderr
    # Found before the run was submitted: nothing started, nothing to stop.
    assert not missing.stdout and not unknown.stdout
    no_file = pipewell_test(str(flow), "--input", "text=absent.txt", cwd=tmp_path)
    assert no_file.returncode == 2 and "absent.txt is not a file" in no_file.stderr
    no_node = pipewell_test(str(flow), "--flag", "shout.x=1", cwd=tmp_path)
    assert no_node.returncode == 2
    assert "the flow has no node 'shout' (its nodes: upper, mark)" in no_node.stderr
    # The service's validation refuses the flow: the flow's fault, every problem listed.
    unknown_def = yaml.safe_dump({"Flow": {**SHOUT["Flow"], "Name": "bad"}, "NodeDefs": []})
    flow.write_text(unknown_def)
    refused = pipewell_test(str(flow), "--input", "text=words.txt", cwd=tmp_path)
    assert refused.returncode == 1, refused.stderr
    assert "(400)" in refused.stderr
    assert "\n  NODE_001: node 'upper' uses 'test/upper'" in refused.stderr
    assert "\n  NODE_001: node 'mark' uses 'test/mark'" in refused.stderr


async def test_inputs_are_checked_against_the_flow_before_anything_is_submitted(
    start_service, tmp_path, capsys
):
    client = await start_service()
    server = str(client.make_url("")).rstrip("/")
    flow = tmp_path / "shout.yaml"
    flow.write_text(yaml.safe_dump(SHOUT))
    (tmp_path / "words.txt").write_text("x")
    argv = ["test", str(flow), "--server", server, "--plain", "--out", str(tmp_path / "o")]
    cases = {
        "--input txt: the flow waits for files on edge 'text' only": [
            "--input",
            f"txt={tmp_path / 'words.txt'}",
        ],
        "the flow waits for a file on edge 'text': pass --input text=PATH": [],
        f"--input 'text={tmp_path / 'gone.txt'}': {tmp_path / 'gone.txt'} is not a file": [
            "--input",
            f"text={tmp_path / 'gone.txt'}",
        ],
        f"--input 'text={tmp_path}': {tmp_path} is not a file": ["--input", f"text={tmp_path}"],
    }
    for said, inputs in cases.items():
        assert await asyncio.to_thread(main, argv + inputs) == 2, said
        assert said in capsys.readouterr().err
    # No run was made: none left behind, STOPPED or waiting.
    runs = await (await client.get("/api/v1/flow/runs")).json()
    assert runs == {"runs": []}


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_input_is_refused_before_the_run(tmp_path):
    flow = tmp_path / "shout.yaml"
    flow.write_text(yaml.safe_dump(SHOUT))
    secret = tmp_path / "secret.txt"
    secret.write_text("x")
    secret.chmod(0)
    done = pipewell_test(str(flow), "--input", "text=secret.txt", cwd=tmp_path)
    assert done.returncode == 2
    assert "--input text=secret.txt: Permission denied" in done.stderr
    assert not done.stdout


async def test_a_bare_flow_is_taken_by_the_api_as_by_the_cli(start_service):
    """The body ``pipewell validate`` and ``test`` take as a file: a Flow without its
    {Flow, NodeDefs} envelope, its NodeDefs from the catalog."""
    client = await start_service()
    bare = {
        "Name": "bare",
        "Nodes": [
            {
                "ID": "small",
                "Uses": "pipewell/resize",
                "Inputs": [{"Name": "image", "Edge": "photo"}],
                "Outputs": [{"Name": "resized", "Edge": "thumb"}],
            }
        ],
    }
    response = await client.post("/api/v1/flow/test", json=bare)
    assert response.status == 200, await response.text()
    run = await response.json()
    assert run["Status"] == "WAITING"
    assert [w["Artifact"]["EdgeName"] for w in run["WaitingURLs"]] == ["photo"]
    graph = await (await client.get(f"/api/v1/flow/graph/{run['ID']}")).json()
    assert graph["Name"] == "bare" and graph["Nodes"][0]["Uses"] == "pipewell/resize"
    cancelled = await client.post(f"/api/v1/flow/cancel/{run['ID']}")
    assert (await cancelled.json())["Status"] == "STOPPED"

    as_yaml = {"Content-Type": "application/yaml"}
    response = await client.post("/api/v1/flows", data=yaml.safe_dump(bare), headers=as_yaml)
    assert response.status == 201, await response.text()
    saved = await response.json()
    assert (saved["name"], saved["entry_edges"], saved["terminal_edges"]) == (
        "bare",
        ["photo"],
        ["thumb"],
    )
    response = await client.post("/api/v1/flow/validate", json=bare)
    assert (await response.json())["valid"] is True

    # Its schema errors say where, as the envelope's do.
    broken = {**bare, "Nodes": [{**bare["Nodes"][0], "Typo": 1}]}
    response = await client.post("/api/v1/flow/test", json=broken)
    assert response.status == 400
    body = await response.json()
    assert body["code"] == "FLOW_INVALID"
    assert "Flow.Nodes.0.Typo" in {e["field"] for e in body["errors"]}
    # Neither an envelope nor a bare Flow: refused, saying what to send.
    refusals = {
        "request body has no 'Flow': send {Flow, NodeDefs}, or a bare Flow with Name and Nodes": {
            "Nodes": bare["Nodes"]
        },
        "request body has NodeDefs but no 'Flow'": {**bare, "NodeDefs": []},
        "request body must be an object: {Flow, NodeDefs}, or a bare Flow {Name, Nodes}": [bare],
    }
    for said, body in refusals.items():
        for path in ("/api/v1/flow/test", "/api/v1/flows"):
            response = await client.post(path, json=body)
            assert response.status == 400, (path, said)
            answer = await response.json()
            assert answer["code"] == "BODY_MALFORMED" and said in answer["message"], answer
    runs = await (await client.get("/api/v1/flow/runs")).json()
    assert [r["ID"] for r in runs["runs"]] == [run["ID"]]


async def test_a_running_service_is_used_with_server(start_service, tmp_path, capsys):
    client = await start_service()
    server = str(client.make_url("")).rstrip("/")
    flow = tmp_path / "shout.yaml"
    flow.write_text(yaml.safe_dump(SHOUT))
    (tmp_path / "words.txt").write_text("served")
    argv = ["test", str(flow), "--server", server, "--plain", "--out", str(tmp_path / "o")]
    argv += ["--input", f"text={tmp_path / 'words.txt'}"]
    assert await asyncio.to_thread(main, argv) == 0
    assert (tmp_path / "o" / "marked.txt").read_bytes() == b"SERVED."
    said = capsys.readouterr().out.splitlines()
    run_id = next(line for line in said if line.endswith(": shout, 2 node(s)")).split()[1][:-1]
    status = await (await client.get(f"/api/v1/flow/status/{run_id}")).json()
    assert status["Status"] == "COMPLETE"


async def test_an_output_is_saved_with_the_extension_of_its_declared_type(
    start_service, tmp_path, capsys
):
    """json-to-csv declares text/csv, which a sniffer takes for plain text: saved as .csv."""
    client = await start_service()
    flow = tmp_path / "to-csv.yaml"
    node = {
        "ID": "tabulate",
        "Uses": "pipewell/json-to-csv",
        "Inputs": [{"Name": "json", "Edge": "rows"}],
        "Outputs": [{"Name": "csv", "Edge": "table"}],
    }
    flow.write_text(yaml.safe_dump({"Flow": {"Name": "to-csv", "Nodes": [node]}}))
    (tmp_path / "rows.json").write_bytes(b'[{"name": "Ada", "age": 36}]')
    argv = ["test", str(flow), "--server", str(client.make_url("")).rstrip("/"), "--plain"]
    argv += ["--out", str(tmp_path / "o"), "--input", f"rows={tmp_path / 'rows.json'}"]
    assert await asyncio.to_thread(main, argv) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["table.csv"]
    assert (tmp_path / "o" / "table.csv").read_bytes() == b"name,age\nAda,36\n"
    said = capsys.readouterr().out.splitlines()
    assert said[-1] == f"  table -> {tmp_path / 'o' / 'table.csv'} (16 bytes)", said


SLOW = {
    "Flow": {
        "Name": "slow",
        "Nodes": [
            {
                "ID": "first",
                "Uses": "test/slow",
                "Inputs": [{"Name": "in", "Edge": "text"}],
                "Outputs": [{"Name": "out", "Edge": "mid"}],
            },
            {
                "ID": "second",
                "Uses": "test/copy",
                "Inputs": [{"Name": "in", "Edge": "mid"}],
                "Outputs": [{"Name": "out", "Edge": "result"}],
            },
        ],
    },
    "NodeDefs": [
        busybox_def("slow", "sh -c 'echo started work; sleep 2; echo halfway; cat ${in} > ${out}'"),
        busybox_def("copy", "sh -c 'echo copying; cat ${in} ${in} > ${out}'"),
    ],
}


async def until(check, seconds: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(seconds * 10)):
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("not reached in time")


async def test_the_live_view_picks_a_file_shows_states_and_logs(start_service, tmp_path):
    client = await start_service()
    flow = tmp_path / "slow.yaml"
    flow.write_text(yaml.safe_dump(SLOW))
    (tmp_path / "in.txt").write_bytes(b"ab")
    session = RunSession(str(client.make_url("")), None, read_flow_file(flow))
    await session.submit()
    app = LiveView(session, {}, tmp_path / "out")
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            # No --input: the picker asks for the file of edge 'text'.
            await until(lambda: isinstance(app.screen, FilePicker))
            assert app.screen.edge == "text"
            app.screen.query_one("#path").value = str(tmp_path / "in.txt")
            await pilot.press("enter")
            table = app.query_one("#nodes", DataTable)
            log = app.query_one("#log", RichLog)
            # The first node's lines appear in its pane while it still runs.
            await until(lambda: any("started work" in line.text for line in log.lines))
            assert str(table.get_cell("first", "state")) == "RUNNING"
            assert str(table.get_cell("second", "state")) == "IDLE"
            await until(lambda: app.outputs is not None)
            assert [str(table.get_cell(n, "state")) for n in ("first", "second")] == [
                "COMPLETE",
                "COMPLETE",
            ]
            assert str(table.get_cell("second", "attempt")) == "1/3"
            assert "halfway" in str(table.get_cell("first", "last line")) or any(
                "halfway" in line.text for line in log.lines
            )
            # The cursor moves to the second node: its log replaces the first's.
            await pilot.press("down")
            await until(lambda: any("copying" in line.text for line in log.lines))
            assert not any("started work" in line.text for line in log.lines)
            await pilot.press("q")
        assert app.return_value is not None
        [output] = app.return_value
        assert output.edge == "result" and output.path.read_bytes() == b"abab"
    finally:
        await session.aclose()


async def test_the_live_view_asks_before_it_stops_a_run_and_shows_it_stopped(
    start_service, tmp_path
):
    client = await start_service()
    flow = tmp_path / "sleepy.yaml"
    sleepy = {
        "Flow": {**SLOW["Flow"], "Name": "sleepy"},
        "NodeDefs": [
            busybox_def("slow", "sh -c 'echo started work; sleep 60; cat ${in} > ${out}'"),
            SLOW["NodeDefs"][1],
        ],
    }
    flow.write_text(yaml.safe_dump(sleepy))
    (tmp_path / "in.txt").write_bytes(b"ab")
    session = RunSession(str(client.make_url("")), None, read_flow_file(flow))
    await session.submit()
    app = LiveView(session, {"text": tmp_path / "in.txt"}, tmp_path / "out")
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            table = app.query_one("#nodes", DataTable)
            await until(lambda: str(table.get_cell("first", "state")) == "RUNNING")
            await pilot.press("c")
            await until(lambda: isinstance(app.screen, ConfirmStop))
            assert app.screen.question == "Stop this run?"
            await pilot.press("n")  # keep it running
            await until(lambda: not isinstance(app.screen, ConfirmStop))
            await asyncio.sleep(0.5)
            assert str(table.get_cell("first", "state")) == "RUNNING"
            await pilot.press("c")
            await until(lambda: isinstance(app.screen, ConfirmStop))
            await pilot.press("y")
            await until(lambda: str(table.get_cell("first", "state")) == "STOPPED")
            assert str(table.get_cell("second", "state")) == "IDLE"
            assert "stopped: the run was cancelled on request" in str(
                table.get_cell("first", "last line")
            )
            await until(lambda: "stopped on request" in str(app.query_one("#summary").render()))
            assert "failed" not in str(app.query_one("#summary").render())
            await pilot.press("q")  # the run has ended: no question
        assert app.return_value is None
        status = await (await client.get(f"/api/v1/flow/status/{session.run_id}")).json()
        assert status["Status"] == "STOPPED"
        assert status["NodeState"]["first"]["Status"] == "STOPPED"
    finally:
        await session.aclose()


async def test_a_service_that_stops_answering_ends_the_test_with_exit_2(
    aiohttp_server, tmp_path, capsys, monkeypatch
):
    """The client's own fault path: a service whose stream drops and whose status fails."""
    monkeypatch.setattr(session_module, "LOST_AFTER", 1.5)
    monkeypatch.setattr(session_module, "RECONNECT_AFTER", 0.2)
    asked: list[str] = []

    async def accepted(request: web.Request) -> web.Response:
        waiting = {
            "Artifact": {"StoreName": "default", "ObjectName": "text", "EdgeName": "text"},
            "PutURL": str(request.url.with_path("/upload")),
            "TTL": "2026-11-28T01:00:00Z",
        }
        run = {
            "ID": "a" * 32,
            "Status": "WAITING",
            "NodeState": {},
            "WaitingURLs": [waiting],
            "StartedAt": "2026-11-28T00:00:00Z",
        }
        return web.json_response(run)

    async def uploaded(request: web.Request) -> web.Response:
        await request.read()
        return web.Response()

    async def failing(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.Response(status=503)

    app = web.Application()
    app.router.add_post("/api/v1/flow/test", accepted)
    app.router.add_put("/upload", uploaded)
    app.router.add_get("/api/v1/flow/events/{id}", failing)
    app.router.add_get("/api/v1/flow/status/{id}", failing)
    app.router.add_post("/api/v1/flow/cancel/{id}", failing)
    server = await aiohttp_server(app)
    flow = tmp_path / "shout.yaml"
    flow.write_text(yaml.safe_dump(SHOUT))
    (tmp_path / "words.txt").write_text("x")
    argv = ["test", str(flow), "--server", str(server.make_url("")), "--plain"]
    argv += ["--input", f"text={tmp_path / 'words.txt'}"]
    assert await asyncio.to_thread(main, argv) == 2
    err = capsys.readouterr().err
    assert f"no answer for 1.5 s; the run {'a' * 32} may still be going" in err, err
    assert f"/api/v1/flow/status/{'a' * 32}" in asked
