"""The CLI's client commands (status, logs, cancel, runs, download, flows), its keys
and the example scripts, against the real service."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO

import aiohttp
import pytest
import yaml

from orchestrator.cli import EXIT_BROKEN_PIPE, main
from tests.helpers import (
    busybox_def,
    chain_flow,
    create_key,
    free_port,
    run_chain,
    submit,
    upload,
    wait_for,
    wait_healthy,
)

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
#: What the CLI would otherwise take from the caller's environment.
CLIENT_ENV = ("PIPEWELL_API_KEY", "PIPEWELL_KEY", "PIPEWELL_URL", "PIPEWELL_DATA_DIR")


async def pipewell(*argv: str) -> int:
    # The service answers on this loop: the blocking CLI runs in a thread.
    return await asyncio.to_thread(main, list(argv))


async def test_a_cancelled_running_node_reads_stopped_not_failed(start_service, capsys):
    client = await start_service()
    server = str(client.make_url("")).rstrip("/")
    sleepy = busybox_def("sleepy", "sh -c 'sleep 60; cp ${in} ${out}'")
    run = await submit(client, chain_flow("sleepy", "sleepy"), [sleepy])
    await upload(client, run, "src", b"x")
    for _ in range(600):
        status = await (await client.get(f"/api/v1/flow/status/{run['ID']}")).json()
        if status["NodeState"]["n0"]["Status"] == "RUNNING":
            break
        await asyncio.sleep(0.1)
    capsys.readouterr()
    assert await pipewell("cancel", run["ID"], "--server", server) == 0
    assert await pipewell("status", run["ID"], "--server", server) == 0
    lines = capsys.readouterr().out.splitlines()
    at = len(lines) - 1 - lines[::-1].index(f"run {run['ID']}: STOPPED")  # status's, after cancel's
    first, second = lines[at + 1].split(), lines[at + 2].split()
    assert first[:2] == ["n0", "STOPPED"] and second[:2] == ["n1", "IDLE"]
    assert "stopped: the run was cancelled on request" in lines[at + 1]
    assert not any("ERROR" in line or "failed" in line for line in lines[at:])


def ours(out: str) -> list[str]:
    """The CLI's lines of what was captured, without the service's log lines (its own
    in-process server logs to the same stdout)."""
    return [line for line in out.splitlines() if not re.match(r"\d{4}-\d\d-\d\d ", line)]


async def test_retry_takes_over_what_succeeded_and_status_says_so(start_service, capsys):
    client = await start_service()
    server = str(client.make_url("")).rstrip("/")
    upper = busybox_def("upper", "sh -c 'tr a-z A-Z < ${in} > ${out}'")
    broken = busybox_def("broken", "sh -c 'echo nope >&2; exit 4'", MaxAttempts=1)
    run, done = await run_chain(client, [upper, broken], "upper", "broken")
    assert done["Status"] == "ERROR"
    capsys.readouterr()
    assert await pipewell("retry", run["ID"], "--server", server) == 0
    said = ours(capsys.readouterr().out)
    retry_id = said[0].split()[1].rstrip(":")
    assert said[:3] == [
        f"run {retry_id}: retries {run['ID']}, RUNNING",
        "  taken over from it: n0",
        "  to run: n1",
    ]
    assert said[-1] == f"  follow it: pipewell logs {retry_id} --follow"
    await wait_for(client, retry_id, {"ERROR"})
    assert await pipewell("status", retry_id, "--server", server) == 0
    lines = ours(capsys.readouterr().out)
    assert lines[:3] == [
        f"run {retry_id}: ERROR",
        f"  retries run {run['ID']}",
        f"  n0                   COMPLETE  reused from node n0 of run {run['ID']}",
    ]
    assert lines[3].split()[:4] == ["n1", "ERROR", "attempt", "1/1"]
    # --recompute names a node the run does not have: refused, with the service's words.
    assert await pipewell("retry", run["ID"], "--recompute", "nope", "--server", server) == 1
    assert "NODE_013: Recompute names node 'nope'" in capsys.readouterr().err


async def test_status_logs_and_cancel_of_real_runs(start_service, capsys):
    client = await start_service()
    server = str(client.make_url("")).rstrip("/")
    defs = [busybox_def("upper", "sh -c 'echo shouting; tr a-z A-Z < ${in} > ${out}'")]
    run, done = await run_chain(client, defs, "upper", data=b"quiet")
    assert done["Status"] == "COMPLETE"
    capsys.readouterr()

    assert await pipewell("status", run["ID"], "--server", server) == 0
    lines = capsys.readouterr().out.splitlines()
    at = lines.index(f"run {run['ID']}: COMPLETE")
    assert lines[at + 1].split() == ["n0", "COMPLETE", "attempt", "1/3"]

    assert await pipewell("logs", run["ID"], "--server", server, "--node", "n0") == 0
    logs = capsys.readouterr().out.splitlines()
    assert any(line.endswith("n0 stdout: shouting") for line in logs), logs
    assert any("n0 pipewell: attempt 1 succeeded" in line for line in logs), logs

    waiting = await submit(client, chain_flow("upper", name="waiting"), defs)
    assert await pipewell("status", waiting["ID"], "--server", server) == 0
    assert "waiting for an upload to edge 'src'" in capsys.readouterr().out
    assert await pipewell("cancel", waiting["ID"], "--server", server) == 0
    # (The in-process service logs to the same captured stdout.)
    assert f"run {waiting['ID']}: STOPPED" in capsys.readouterr().out.splitlines()
    assert await pipewell("cancel", waiting["ID"], "--server", server) == 1
    assert "has ended already (STOPPED)" in capsys.readouterr().err
    # --follow returns once the run has ended.
    assert await pipewell("logs", waiting["ID"], "--server", server, "--follow") == 0

    # Newest first, this tenant's: the cancelled run, then the completed one.
    assert await pipewell("runs", "--server", server) == 0
    table = capsys.readouterr().out.splitlines()
    header = table.index(next(line for line in table if line.startswith("ID ")))
    first, second = table[header + 1].split(), table[header + 2].split()
    assert first[:3] == [waiting["ID"], "STOPPED", "waiting"]
    assert second[:3] == [run["ID"], "COMPLETE", "chain"]
    assert second[-1] == "s" and float(second[-2]) > 0
    response = await client.get("/api/v1/flow/runs?limit=0")
    assert response.status == 400 and (await response.json())["code"] == "LIMIT_INVALID"
    response = await client.get("/api/v1/flow/runs?limit=1")
    assert [r["ID"] for r in (await response.json())["runs"]] == [waiting["ID"]]

    # An ID is one path segment: this one cannot reach the cancel endpoint.
    assert await pipewell("status", f"../cancel/{run['ID']}", "--server", server) == 1
    assert "Flow run does not exist." in capsys.readouterr().err
    assert await pipewell("status", "f" * 32, "--server", server) == 1
    assert "Flow run does not exist. (400)" in capsys.readouterr().err
    assert await pipewell("logs", run["ID"], "--server", server, "--node", "nope") == 1
    assert "has no node 'nope'; its nodes: n0" in capsys.readouterr().err
    nobody = f"http://127.0.0.1:{free_port()}"
    assert await pipewell("status", run["ID"], "--server", nobody) == 2
    assert f"no answer from {nobody}: ConnectionError" in capsys.readouterr().err


def clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV}
    return {**env, **values}


async def cli(*argv: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``pipewell ARGV`` in a process of its own, in ``cwd``, with only ``env`` of ours."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "orchestrator.cli", *argv],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def dev_without_data_dir(cwd: Path, port: int, log: BinaryIO) -> subprocess.Popen[bytes]:
    """``pipewell dev --auth required`` as typed in ``cwd``: its data directory its default."""
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "dev", "--port", str(port),
         "--auth", "required"],
        cwd=cwd, env=clean_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


async def test_a_key_made_where_dev_runs_is_taken_and_any_other_is_explained(tmp_path):
    """``pipewell dev`` and ``pipewell keys create`` started the default way (no
    --data-dir) share one data directory; a key made anywhere else is refused with
    a message saying where keys go."""
    here, elsewhere = tmp_path / "service", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    port = free_port()
    server = f"http://127.0.0.1:{port}"
    with (tmp_path / "service.log").open("wb") as log:
        service = dev_without_data_dir(here, port, log)
        try:
            async with aiohttp.ClientSession() as session:
                await wait_healthy(session, server)
            made = await cli("keys", "create", "--name", "laptop", cwd=here)
            assert made.returncode == 0, made.stderr
            assert "warning" not in made.stderr
            said = f"written to the data directory {here / '.pipewell'}: copy it now"
            assert said in made.stderr, made.stderr
            key = made.stdout.strip()
            assert len(key) == 64
            listed = await cli("runs", "--server", server, cwd=elsewhere, PIPEWELL_API_KEY=key)
            assert listed.returncode == 0, listed.stderr
            assert listed.stdout.startswith("ID ")

            # No key: how to give one.
            none = await cli("runs", "--server", server, cwd=elsewhere)
            assert none.returncode == 1
            assert "asks for an API key and none was given: pass --key KEY or set " \
                "PIPEWELL_API_KEY" in none.stderr  # fmt: skip

            # Made in another directory: a warning at once, and a refusal that says why.
            stray = await cli("keys", "create", "--name", "stray", cwd=elsewhere)
            assert stray.returncode == 0, stray.stderr
            assert f"warning: {elsewhere / '.pipewell'} holds no service database yet" in (
                stray.stderr
            )
            refused = await cli(
                "status", "f" * 32, "--server", server, "--key", stray.stdout.strip(),
                cwd=elsewhere,
            )  # fmt: skip
            assert refused.returncode == 1
            assert "refused the API key given (401): it does not know it, or it was revoked" in (
                refused.stderr
            )
            assert f"'pipewell keys create' here writes to {elsewhere / '.pipewell'}" in (
                refused.stderr
            )
            assert "wants an API key" not in refused.stderr

            # $PIPEWELL_DATA_DIR names the service's directory from anywhere.
            named = await cli(
                "keys", "create", "--name", "named", cwd=elsewhere,
                PIPEWELL_DATA_DIR=str(here / ".pipewell"),
            )  # fmt: skip
            assert named.returncode == 0 and "warning" not in named.stderr, named.stderr
            flow = tmp_path / "greeter.yaml"
            flow.write_text((REPO / "examples" / "greeter.yaml").read_text())
            saved = await cli(
                "flows", "save", str(flow), "--server", server, cwd=elsewhere,
                PIPEWELL_API_KEY=named.stdout.strip(),
            )  # fmt: skip
            assert saved.returncode == 0, saved.stderr

            # pipewell test --server says the same of a refused key.
            tested = await cli(
                "test", str(flow), "--server", server, "--plain", "--key", "0" * 64,
                "--input", f"request={flow}", cwd=elsewhere,
            )  # fmt: skip
            assert tested.returncode == 2
            assert "refused the API key given (401)" in tested.stderr, tested.stderr

            # Listing or revoking where there is no database creates none.
            empty = tmp_path / "empty"
            empty.mkdir()
            nothing = await cli("keys", "list", cwd=empty)
            assert nothing.returncode == 2
            assert f"no service database in {empty / '.pipewell'}, so no keys" in nothing.stderr
            assert not (empty / ".pipewell").exists()
        finally:
            os.killpg(service.pid, signal.SIGTERM)
            await asyncio.to_thread(service.wait, 60)


LOUD = busybox_def(
    "loud",
    "sh -c 'for i in $(seq 1000); do echo line $i $(printf %0100d 0); done; cp ${in} ${out}'",
)


async def test_a_closed_stdout_ends_any_command_quietly(start_service, tmp_path):
    """``pipewell logs ID | head -1``: no traceback, the exit status of a command
    killed by SIGPIPE (and that of head for the pipeline)."""
    client = await start_service()
    server = str(client.make_url("")).rstrip("/")
    run, done = await run_chain(client, [LOUD], "loud")
    assert done["Status"] == "COMPLETE"
    command = f"{sys.executable} -m orchestrator.cli logs {run['ID']} --server {server}"
    piped = await asyncio.to_thread(
        subprocess.run,
        ["bash", "-c", command + ' | head -1; echo "exit ${PIPESTATUS[0]}" >&2'],
        cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert piped.returncode == 0
    assert piped.stdout.count("\n") == 1 and " n0 pipewell: " in piped.stdout, piped.stdout
    assert piped.stderr == f"exit {EXIT_BROKEN_PIPE}\n", piped.stderr

    # A reader gone before anything was written: each printing command alike, its
    # output written as it is printed or buffered until it ends.
    cli = [sys.executable, "-m", "orchestrator.cli"]
    commands = [
        [*cli, "status", run["ID"], "--server", server],
        [*cli, "runs", "--server", server],
        [*cli, "logs", run["ID"], "--server", server],
        [*cli, "--version"],
        [*cli, "--help"],
    ]
    # PYTHONUNBUFFERED empty: stdout buffered, as Python has it by default.
    for unbuffered in ("1", ""):
        for argv in commands:
            read, write = os.pipe()
            os.close(read)
            try:
                ended = await asyncio.to_thread(
                    subprocess.run, argv, cwd=REPO, env=clean_env(PYTHONUNBUFFERED=unbuffered),
                    stdout=write, stderr=subprocess.PIPE, text=True, timeout=60,
                )  # fmt: skip
            finally:
                os.close(write)
            assert ended.stderr == "", (argv, unbuffered, ended.stderr)
            # argparse drops a --help it could not write at once, and exits 0.
            allowed = {EXIT_BROKEN_PIPE, 0} if argv[-1] == "--help" else {EXIT_BROKEN_PIPE}
            assert ended.returncode in allowed, (argv, unbuffered, ended.returncode)


#: A line of the in-process service's log, which shares the test's captured stdout.
SERVICE_LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[")


def printed(capsys) -> list[str]:  # type: ignore[no-untyped-def]
    """What the CLI printed since the last look, without the service's log lines."""
    lines = capsys.readouterr().out.splitlines()
    return [line for line in lines if not SERVICE_LOG_LINE.match(line)]


async def test_flows_save_and_list_and_download_against_the_service(
    start_service, tmp_path, capsys, monkeypatch
):
    data_dir = tmp_path / "data"
    key = create_key(capsys, data_dir, "laptop")  # before the service logs to stdout
    client = await start_service(data_dir, auth="required")
    server = str(client.make_url("")).rstrip("/")
    auth = {"Authorization": f"Bearer {key}"}
    flow = tmp_path / "greeter.yaml"
    flow.write_text((REPO / "examples" / "greeter.yaml").read_text())

    def pipewell(*argv: str) -> int:
        return main([*argv, "--server", server, "--key", key])

    assert await asyncio.to_thread(pipewell, "flows", "save", str(flow)) == 0
    first = printed(capsys)
    assert first[0].startswith("saved 'greeter' as version 1: graph_id ")
    graph_id = first[0].split("graph_id ")[1].split(",")[0]
    assert first[1:] == ["  entry edges: request", "  terminal edges: reply"]
    assert await asyncio.to_thread(pipewell, "flows", "save", str(flow)) == 0
    assert printed(capsys)[0].startswith("'greeter' version 1 is the same flow, kept: ")
    # A bare Flow, under another name, with its NodeDefs from a file of them.
    bare = tmp_path / "bare.yaml"
    document = yaml.safe_load(flow.read_text())
    bare.write_text(yaml.safe_dump(document["Flow"]))
    defs = tmp_path / "defs.yaml"
    defs.write_text(yaml.safe_dump(document["NodeDefs"]))
    argv = ("flows", "save", str(bare), "--name", "hello", "--nodedefs", str(defs))
    assert await asyncio.to_thread(pipewell, *argv) == 0
    assert printed(capsys)[0].startswith("saved 'hello' as version 1: ")
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({"Name": "broken", "Nodes": document["Flow"]["Nodes"]}))
    assert await asyncio.to_thread(pipewell, "flows", "save", str(broken)) == 1
    assert "\n  NODE_001: node 'greet' uses 'demo/greet'" in capsys.readouterr().err

    assert await asyncio.to_thread(pipewell, "flows", "list") == 0
    table = printed(capsys)
    assert table[0].split() == ["GRAPH_ID", "ID", "NAME", "VERSION", "CREATED"]
    rows = [line.split()[:4] for line in table[1:]]
    assert rows[0] == [graph_id, "1", "greeter", "1"]
    assert [row[2:] for row in rows] == [["greeter", "1"], ["hello", "1"]]
    assert await asyncio.to_thread(pipewell, "flows", "list", "--name", "hello") == 0
    assert [line.split()[2] for line in printed(capsys)[1:]] == ["hello"]

    # A run of the saved flow, through a dialect; its output downloaded.
    response = await client.post(
        "/invocations/v1/flows/invoke",
        json={"graph_id": graph_id, "input": {"text": "hi"}, "wait": True},
        headers=auth,
    )
    run_id = (await response.json())["execution_id"]
    await wait_for(client, run_id, {"COMPLETE"}, headers=auth)
    expected = b'hello {"text":"hi"}'
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(out)  # the default name lands in the current directory
    assert await asyncio.to_thread(pipewell, "download", run_id, "reply") == 0
    said = printed(capsys)
    assert said[-1] == f"reply -> reply.txt ({len(expected)} bytes)"
    assert (out / "reply.txt").read_bytes() == expected
    # Into a directory, under its own name; to a file; to stdout.
    nested = tmp_path / "nested"
    nested.mkdir()
    assert await asyncio.to_thread(pipewell, "download", run_id, "reply", "-o", str(nested)) == 0
    assert (nested / "reply.txt").read_bytes() == expected
    named = tmp_path / "answer.bin"
    assert await asyncio.to_thread(pipewell, "download", run_id, "reply", "-o", str(named)) == 0
    assert named.read_bytes() == expected
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".part") == []
    capsys.readouterr()
    # The uploaded input is an artifact as well.
    assert await asyncio.to_thread(pipewell, "download", run_id, "request", "-o", "-") == 0
    assert json.loads("".join(printed(capsys))) == {"text": "hi"}

    assert await asyncio.to_thread(pipewell, "download", run_id, "nope") == 1
    err = capsys.readouterr().err
    assert f"run {run_id} (COMPLETE) has no artifact on edge 'nope'; its artifacts: " in err
    assert "reply" in err and "request" in err
    assert await asyncio.to_thread(pipewell, "download", "f" * 32, "reply") == 1
    assert "Flow run does not exist. (400)" in capsys.readouterr().err
    # The key is the one of status and logs: without it, the same refusal.
    argv = ["download", run_id, "reply", "--server", server]
    assert await asyncio.to_thread(main, argv) == 1
    assert "none was given: pass --key KEY" in capsys.readouterr().err


async def test_invoke_sh_takes_the_clis_key_variable_and_its_old_name(
    start_service, tmp_path, capsys
):
    data_dir = tmp_path / "data"
    key = create_key(capsys, data_dir, "script", tenant="demo")
    client = await start_service(data_dir, auth="required")
    server = str(client.make_url("")).rstrip("/")
    # Never makes a key of its own here: one is given.
    never = {"PIPEWELL": "/bin/false"}
    for variable in ("PIPEWELL_API_KEY", "PIPEWELL_KEY"):
        done = await asyncio.to_thread(
            subprocess.run,
            ["bash", str(REPO / "examples" / "invoke.sh"), server],
            cwd=tmp_path, env=clean_env(**never, **{variable: key}), capture_output=True,
            text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, (variable, done.stdout[-3000:], done.stderr[-3000:])
        assert "unauthorized" not in done.stdout, done.stdout
        axiom = '"result":{"success":true,"output":{"text":"hello {\\"text\\":\\"hello\\"}"}'
        assert axiom in done.stdout, done.stdout
    # The webhook's run goes on after the script: the service is not stopped under it.
    headers = {"Authorization": f"Bearer {key}"}
    runs = await (await client.get("/api/v1/flow/runs?limit=50", headers=headers)).json()
    for run in runs["runs"]:
        await wait_for(client, run["ID"], {"COMPLETE"}, headers=headers)


async def test_walkthrough_sh_ends_on_a_stopped_run(start_service, tmp_path):
    """No worker takes the run: it is cancelled, and the script must stop waiting."""
    client = await start_service(worker={"enabled": False})
    server = str(client.make_url("")).rstrip("/")
    image = tmp_path / "photo.png"
    image.write_bytes(b"not looked at: nothing runs")
    script = await asyncio.create_subprocess_exec(
        "bash", str(REPO / "examples" / "walkthrough.sh"), str(image), server,
        cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert script.stdout is not None
        first = (await asyncio.wait_for(script.stdout.readline(), 30)).decode()
        run_id = first.split()[1]
        assert first == f"run {run_id} is waiting for input-image\n"
        await wait_for(client, run_id, {"RUNNING"}, timeout=30)
        response = await client.post(f"/api/v1/flow/cancel/{run_id}")
        assert response.status == 200, await response.text()
        rest, err = await asyncio.wait_for(script.communicate(), 30)
    finally:
        if script.returncode is None:
            script.kill()
            await script.wait()
    assert script.returncode == 0, err.decode()
    lines = rest.decode().splitlines()
    assert "status: STOPPED" in lines
    assert not any(line.startswith("wrote ") for line in lines)
    assert not list(tmp_path.glob("resized-*"))


async def test_gc_shows_what_is_due_then_deletes_it(start_service, capsys):
    client = await start_service(retention={"min_lifetime": 1})
    server = str(client.make_url("")).rstrip("/")
    copy = busybox_def("copy", "cp ${in} ${out}")
    run = await submit(client, {**chain_flow("copy"), "Lifetime": "1s"}, [copy])
    await upload(client, run, "src", b"x")
    await wait_for(client, run["ID"], {"COMPLETE"})
    await asyncio.sleep(1.1)
    capsys.readouterr()
    assert await pipewell("gc", "--dry-run", "--server", server) == 0
    assert ours(capsys.readouterr().out) == ["due now: 1 runs, 0 kept objects", f"  {run['ID']}"]
    assert (await client.get(f"/api/v1/flow/status/{run['ID']}")).status == 200
    assert await pipewell("gc", "--server", server) == 0
    said = ours(capsys.readouterr().out)
    assert said == [
        "deleted 1 runs, 0 edges kept shorter than their run, 0 kept objects (2 object deletions)"
    ]
    assert (await client.get(f"/api/v1/flow/status/{run['ID']}")).status == 410
    assert await pipewell("status", run["ID"], "--server", server) == 1
    assert "has expired" in capsys.readouterr().err
