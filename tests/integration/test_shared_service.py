"""One tenant cannot degrade or spy on the shared service (the real service, engine, stores)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from orchestrator.cli import GIL_SWITCH_SECONDS
from tests.helpers import (
    busybox_def,
    chain_flow,
    create_key,
    free_port,
    run_chain,
    start_dev,
    submit,
    upload,
    wait_for,
    wait_healthy,
)

pytestmark = pytest.mark.docker


async def test_metrics_name_no_nodedef_a_flow_brings_and_do_not_grow_with_them(
    start_service, tmp_path, capsys
):
    data_dir = tmp_path / "data"
    acme = create_key(capsys, data_dir, "acme", tenant="acme")
    globex = create_key(capsys, data_dir, "globex", tenant="globex")
    client = await start_service(data_dir, auth="required")
    as_acme = {"Authorization": f"Bearer {acme}"}

    async def failing_runs(count: int, prefix: str) -> None:
        for number in range(count):
            secret = {
                "Publisher": "acme-confidential",
                "Name": f"{prefix}-{number}",
                # Refused at once, no container: its registry is not allowed.
                "Image": "registry.invalid/merger:1",
                "MaxAttempts": 1,
                "Command": {"Name": "run", "Exec": "true"},
            }
            flow = chain_flow(secret["Name"])
            flow["Nodes"][0]["Uses"] = f"acme-confidential/{secret['Name']}"
            body = {"Flow": flow, "NodeDefs": [secret]}
            response = await client.post("/api/v1/flow/test", json=body, headers=as_acme)
            assert response.status == 200, await response.text()
            run = await response.json()
            await upload(client, run, "src", b"x")
            await wait_for(client, run["ID"], {"ERROR"}, headers=as_acme)

    async def scrape() -> str:
        response = await client.get("/metrics", headers={"Authorization": f"Bearer {globex}"})
        assert response.status == 200
        return await response.text()

    await failing_runs(3, "merger-target")
    await scrape()  # the scrape's own route is a series from its second answer on
    before = await scrape()
    await failing_runs(30, "acquisition")
    after = await scrape()
    assert "acme-confidential" not in after
    assert set(re.findall(r'nodedef="([^"]*)"', after)) == {"other"}
    # Thirty more NodeDefs, not one more series.
    assert len(after.splitlines()) == len(before.splitlines())


async def test_a_lone_surrogate_is_refused_at_submission(start_service):
    client = await start_service()
    raw = (
        '{"Flow": {"Name": "s", "Nodes": [{"ID": "n", "Uses": "test/echo", '
        '"Flags": [{"Name": "word", "Value": "\\ud800"}], '
        '"Inputs": [{"Name": "in", "Edge": "src"}], '
        '"Outputs": [{"Name": "out", "Edge": "out"}]}]}, '
        '"NodeDefs": [{"Publisher": "test", "Name": "echo", "Image": "pipewell/busybox:latest", '
        '"Flags": [{"Name": "word"}], "Command": {"Name": "run", "Exec": "echo ${word}"}}]}'
    )
    response = await client.post(
        "/api/v1/flow/test", data=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400, await response.text()
    body = await response.json()
    assert body["code"] == "BODY_MALFORMED"
    assert "lone surrogate (\\ud800)" in body["message"]


async def test_a_hostile_yaml_body_does_not_stall_other_requests(start_service):
    # As pipewell serve and dev run: the GIL's switch interval they set, and no heap of
    # a whole test session for the collector to walk while the parser makes objects by
    # the million (its pauses, not the parse, took 0.7 s late in a full run).
    default = sys.getswitchinterval()
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    gc.collect()
    gc.freeze()
    try:
        await _hostile_yaml_does_not_stall(await start_service())
    finally:
        gc.unfreeze()
        sys.setswitchinterval(default)


async def _hostile_yaml_does_not_stall(client) -> None:  # type: ignore[no-untyped-def]
    bomb = b"[" * 64 * 1024

    async def post() -> int:
        response = await client.post(
            "/api/v1/flow/validate", data=bomb, headers={"Content-Type": "application/yaml"}
        )
        return response.status

    posting = asyncio.gather(*(post() for _ in range(2)))
    slowest = 0.0
    while not posting.done():
        began = time.monotonic()
        assert (await client.get("/healthz")).status == 200
        slowest = max(slowest, time.monotonic() - began)
        await asyncio.sleep(0.02)
    assert await posting == [400, 400]
    # Parsed on the event loop, each stalled every request for about a second.
    assert slowest < 0.5, slowest


@pytest.fixture
def open_directory() -> Iterator[Path]:
    """A directory any user of the host may traverse (pytest's own are root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="pipewell-open-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_no_other_user_of_the_host_reaches_an_attempts_files(start_service, open_directory):
    """A node running as root may leave a setuid file in its out/ while it runs."""
    data_dir = open_directory / "data"
    client = await start_service(data_dir)
    # An operator loosened the data directory: the attempts must stay closed anyway.
    data_dir.chmod(0o755)
    (data_dir / "work").chmod(0o755)
    planter = busybox_def(
        "planter",
        "sh -c 'cp /bin/busybox ${out}.sh; chmod 4755 ${out}.sh; sleep 4; cp ${in} ${out}'",
        RunAsRoot=True,
    )
    run = await submit(client, chain_flow("planter"), [planter])
    await upload(client, run, "src", b"x")
    pattern = str(data_dir / "work" / "attempts" / "*" / "out" / "out.sh")
    deadline = time.monotonic() + 20
    while not (planted := glob.glob(pattern)):
        assert time.monotonic() < deadline, "the node never wrote its setuid file"
        await asyncio.sleep(0.1)
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    reached = await asyncio.to_thread(
        subprocess.run,
        [*as_nobody, "sh", "-c", f"cat {planted[0]} > /dev/null"],
        capture_output=True,
        timeout=10,
    )
    assert reached.returncode != 0 and b"Permission denied" in reached.stderr, reached
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == "COMPLETE", done["NodeState"]["n0"]


async def test_a_metrics_scrape_shows_catalog_nodedefs_by_name(start_service):
    client = await start_service()
    flow = chain_flow("checksum")
    flow["Nodes"][0]["Uses"] = "pipewell/checksum"
    flow["Nodes"][0]["Inputs"] = [{"Name": "file", "Edge": "src"}]
    flow["Nodes"][0]["Outputs"] = [{"Name": "checksums", "Edge": "out"}]
    run = await submit(client, flow, [])
    await upload(client, run, "src", b"abc")
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == "COMPLETE", done["NodeState"]
    metrics = await (await client.get("/metrics")).text()
    assert 'nodedef="pipewell/checksum"' in metrics
    _run, _done = await run_chain(client, [busybox_def("copy", "cp ${in} ${out}")], "copy")
    metrics = await (await client.get("/metrics")).text()
    assert 'nodedef="other"' in metrics and "test/copy" not in metrics


def stored_bytes(data_dir: Path) -> int:
    """Disk blocks the local store's objects hold (a sparse file counts what it uses)."""
    return sum(f.stat().st_blocks * 512 for f in (data_dir / "objects").rglob("*") if f.is_file())


@pytest.mark.parametrize("transfer", ["mount", "archive"])
async def test_an_output_over_its_limit_fails_the_attempt_and_is_not_stored(
    start_service, tmp_path, transfer
):
    data_dir = tmp_path / "data"
    client = await start_service(data_dir, executor={"transfer": transfer})
    # Free to write, 3 GiB to store: over c-nano's default (4 x 512 MiB).
    sparse = busybox_def("sparse", "truncate -s 3G ${out}", Tier="c-nano")
    _run, done = await run_chain(client, [sparse], "sparse")
    state = done["NodeState"]["n0"]
    assert done["Status"] == "ERROR" and state["Attempt"] == 1, state  # not retried
    assert state["Error"].startswith(
        "output 'out' is 3.0 GiB, over this node's limit of 2.0 GiB"
    ), state["Error"]
    assert stored_bytes(data_dir) < 2**20

    own = busybox_def("own", "sh -c 'head -c ${size} /dev/zero > ${out}'", MaxOutputBytes=1024)
    own["Flags"] = [{"Name": "size"}]
    for size, status in (("2048", "ERROR"), ("1024", "COMPLETE")):
        flow = chain_flow("own")
        flow["Nodes"][0]["Flags"] = [{"Name": "size", "Value": size}]
        run = await submit(client, flow, [own])
        await upload(client, run, "src", b"x")
        done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
        assert done["Status"] == status, done["NodeState"]["n0"]
    assert done["NodeState"]["n0"]["Status"] == "COMPLETE"


async def test_the_operator_maximum_holds_a_nodedefs_limit(start_service):
    client = await start_service(executor={"max_output_bytes": "1k"})
    big = busybox_def("big", "sh -c 'head -c 2048 /dev/zero > ${out}'", MaxOutputBytes=2**30)
    _run, done = await run_chain(client, [big], "big")
    assert done["Status"] == "ERROR"
    assert done["NodeState"]["n0"]["Error"].startswith(
        "output 'out' is 2.0 KiB, over this node's limit of 1.0 KiB"
    )


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


async def wide_run_with_an_unread_stream(client) -> tuple[dict, socket.socket]:  # type: ignore[no-untyped-def]
    """A 1,000-node run (each node reads an upload edge of its own, on a tier no
    worker offers, so a node whose input arrives becomes ready and waits), and a
    socket with a 4 KB receive buffer on its event stream that reads nothing."""
    nodes = [
        {"ID": f"n{i}", "Uses": "test/big", "Inputs": [{"Name": "in", "Edge": f"in{i}"}],
         "Outputs": [{"Name": "out", "Edge": f"out{i}"}]}
        for i in range(1000)
    ]  # fmt: skip
    big = busybox_def("big", "cp ${in} ${out}", Tier="c-4xlarge")
    run = await submit(client, {"Name": "wide", "Nodes": nodes}, [big])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    host = f"127.0.0.1:{client.server.port}"
    sock.connect(("127.0.0.1", client.server.port))
    sock.sendall(f"GET /api/v1/flow/events/{run['ID']} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return run, sock


async def test_a_reader_that_never_reads_holds_bounded_memory(start_service):
    """A 1,000-node run changes 200 times while an SSE reader with a 4 KB buffer reads nothing."""
    client = await start_service()
    run, sock = await wide_run_with_an_unread_stream(client)
    try:
        await asyncio.sleep(0.5)
        before = rss_bytes()
        # Each upload is a change (each was once a snapshot of the whole run, ~0.5 MB).
        for i in range(200):
            await upload(client, run, f"in{i}", b"x")
        await asyncio.sleep(1)
        grown = rss_bytes() - before
        assert grown < 100 * 2**20, f"RSS grew {grown / 2**20:.0f} MiB"
    finally:
        sock.close()
    response = await client.post(f"/api/v1/flow/cancel/{run['ID']}")
    assert response.status == 200


class SilentEndpoint:
    """An S3 endpoint that accepts connections and never answers (a dead store)."""

    def __init__(self) -> None:
        self.held: list[asyncio.StreamWriter] = []
        self.url = ""

    async def hold(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.held.append(writer)


@pytest.fixture
async def silent_endpoint() -> AsyncIterator[SilentEndpoint]:
    endpoint = SilentEndpoint()
    server = await asyncio.start_server(endpoint.hold, "127.0.0.1", 0)
    endpoint.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    yield endpoint
    server.close()
    for writer in endpoint.held:
        writer.close()  # the calls still waiting fail now, and their threads come back
    await server.wait_closed()


def dead_store_flow(endpoint: str) -> dict:
    """A one-node flow on a store of its own at ``endpoint``; its static input is looked
    for at submission: on a dead store, that call hangs."""
    dead = {
        "Name": "dead",
        "Type": "s3",
        "Params": {"bucket": "b", "endpoint_url": endpoint, "access_key_id": "k",
                   "secret_access_key": "s", "read_timeout": 30, "max_attempts": 3},
    }  # fmt: skip
    flow = chain_flow("copy")
    flow["DataWells"] = [
        {"Edge": "src", "Source": "static", "Store": "dead", "Key": "in.txt"},
        {"Edge": "out", "Store": "dead"},
    ]
    flow["Stores"] = [dead]
    return flow


async def test_a_dead_flow_store_does_not_hold_other_tenants_submissions(
    start_service, silent_endpoint
):
    client = await start_service(storage={"flow_store_endpoints": [silent_endpoint.url]})
    flow = dead_store_flow(silent_endpoint.url)
    copy = busybox_def("copy", "cp ${in} ${out}")
    stuck = [
        asyncio.create_task(
            client.post("/api/v1/flow/test", json={"Flow": flow, "NodeDefs": [copy]})
        )
        for _ in range(8)
    ]
    deadline = time.monotonic() + 30
    while len(silent_endpoint.held) < 4:  # waiting on the dead store, as many as may
        assert time.monotonic() < deadline, len(silent_endpoint.held)
        await asyncio.sleep(0.1)
    await asyncio.sleep(1)
    began = time.monotonic()
    run, done = await run_chain(client, [copy], "copy", data=b"mine")
    assert done["Status"] == "COMPLETE", done["NodeState"]
    assert time.monotonic() - began < 10  # not the dead store's 90 s
    finished = [await (await task).text() for task in stuck if task.done()]
    assert finished == [], finished[:1]
    for task in stuck:
        task.cancel()


async def test_half_sent_requests_cannot_exhaust_the_service(tmp_path):
    """600 connections that send half a header and stop, against 512 open files."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = tmp_path / "config.yaml"
    config.write_text("idle_timeout: 3\n")
    log_path = tmp_path / "service.log"
    held: list[socket.socket] = []
    with log_path.open("ab") as log:
        process = start_dev(tmp_path / "data", port, log, "--config", str(config), open_files=512)
        try:
            async with aiohttp.ClientSession() as session:
                await wait_healthy(session, base)
                for _ in range(600):
                    sock = socket.create_connection(("127.0.0.1", port))
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                    held.append(sock)
                fds = len(os.listdir(f"/proc/{process.pid}/fd"))
                assert fds < 512, fds
                # Closed by the service once idle_timeout is over, not held for ever...
                await asyncio.sleep(5)
                closed = sum(1 for sock in held if _closed(sock))
                assert closed == len(held), f"{len(held) - closed} still open"
                # ...and it serves again.
                await wait_healthy(session, base, timeout=5)
                body = {"Flow": chain_flow("copy"), "NodeDefs": [busybox_def("copy", "true")]}
                async with session.post(f"{base}/api/v1/flow/validate", json=body) as response:
                    assert response.status == 200
        finally:
            for sock in held:
                sock.close()
            os.killpg(process.pid, signal.SIGTERM)
            await asyncio.to_thread(process.wait, 30)
    written = log_path.read_text(errors="replace")
    assert "out of system resource" not in written
    assert written.count("connections_refused") <= 2, written.count("connections_refused")


def _closed(sock: socket.socket) -> bool:
    """Whether the peer closed (or reset) the connection."""
    try:
        sock.settimeout(0.5)
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


async def test_a_flow_over_the_node_limit_is_refused_with_what_to_do(start_service):
    client = await start_service(max_flow_nodes=5)
    copy = busybox_def("copy", "cp ${in} ${out}")
    steps = ["copy"] * 6
    for path in ("/api/v1/flow/test", "/api/v1/flow/validate"):
        response = await client.post(path, json={"Flow": chain_flow(*steps), "NodeDefs": [copy]})
        body = await response.json()
        errors = body["errors"]
        assert [(e["code"], e["field"]) for e in errors] == [("FLOW_003", "Flow.Nodes")], body
        assert "6 nodes, over this service's limit of 5 (max_flow_nodes)" in errors[0]["message"]
    run, done = await run_chain(client, [copy], *steps[:5])
    assert done["Status"] == "COMPLETE", done["NodeState"]


async def test_a_stream_whose_reader_takes_nothing_is_closed(start_service, monkeypatch):
    monkeypatch.setattr("orchestrator.api.sse.WRITE_TIMEOUT", 1.0)
    client = await start_service()
    run, sock = await wide_run_with_an_unread_stream(client)
    try:
        # The whole run first (~0.5 MB), then a delta per upload: more than the socket holds.
        for i in range(50):
            await upload(client, run, f"in{i}", b"x")
        await asyncio.sleep(3)  # past WRITE_TIMEOUT with nothing taken
        sock.setblocking(False)
        deadline = time.monotonic() + 10
        while True:  # what was sent before the close, then the end of the stream
            try:
                if not sock.recv(65536):
                    break
            except BlockingIOError:
                assert time.monotonic() < deadline, "the stream is still open"
                await asyncio.sleep(0.05)
    finally:
        sock.close()
    response = await client.post(f"/api/v1/flow/cancel/{run['ID']}")
    assert response.status == 200


def _send_part_of(port: int, head: str, part: bytes) -> socket.socket:
    """A request whose headers promise more body than is sent: then nothing."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(head.encode() + b"\r\n" + part)
    return sock


def _answer(sock: socket.socket, seconds: float) -> tuple[bytes, float]:
    """What the service answers within ``seconds``, and when its first bytes came."""
    sock.settimeout(seconds)
    began, first, received = time.monotonic(), None, b""
    with contextlib.suppress(TimeoutError):
        while chunk := sock.recv(65536):
            first = first or time.monotonic() - began
            received += chunk
            if b"\r\n\r\n" in received and b"}" in received:
                break
    return received, first or seconds


async def test_a_body_that_stops_coming_is_refused_and_nothing_of_it_kept(start_service):
    """JSON bodies and uploads alike: after idle_timeout of silence, 408 BODY_TIMEOUT."""
    client = await start_service(idle_timeout=1)
    port = client.port
    sock = _send_part_of(
        port,
        "POST /api/v1/flow/validate HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nContent-Length: 500\r\n",
        b'{"Flow": {"Name": "x", ',
    )
    answer, after = await asyncio.to_thread(_answer, sock, 10)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"Connection: close" in answer
    assert b'"code":"BODY_TIMEOUT"' in answer.replace(b" ", b"")
    assert 0.9 < after < 3

    run = await submit(client, chain_flow("copy"), [busybox_def("copy", "cp ${in} ${out}")])
    url = run["WaitingURLs"][0]["PutURL"]
    target = url.split(f":{port}", 1)[1]
    sock = _send_part_of(
        port,
        f"PUT {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n",
        b"x" * 10,
    )
    answer, after = await asyncio.to_thread(_answer, sock, 10)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408") and after < 3, (answer[:200], after)
    # Nothing of it was kept: the same create-only URL takes the whole input.
    await upload(client, run, "src", b"whole input")
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == "COMPLETE"
    async with client.get(f"/api/v1/flow/artifact/{run['ID']}/out") as response:
        assert await response.read() == b"whole input"


async def test_shutdown_is_not_held_by_a_flow_store_that_never_answers(tmp_path, silent_endpoint):
    """SIGTERM while submissions wait on a dead flow store: they are answered and the
    process ends at once, not when the store's calls give up (90 s each; before, the
    process never ended on SIGTERM)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = tmp_path / "config.yaml"
    config.write_text(f"storage:\n  flow_store_endpoints: ['{silent_endpoint.url}']\n")
    flow = dead_store_flow(silent_endpoint.url)
    body = {"Flow": flow, "NodeDefs": [busybox_def("copy", "cp ${in} ${out}")]}
    log_path = tmp_path / "service.log"
    with log_path.open("ab") as log:
        process = start_dev(tmp_path / "data", port, log, "--config", str(config))
        try:
            async with aiohttp.ClientSession() as session:
                await wait_healthy(session, base)
                stuck = [
                    asyncio.create_task(session.post(f"{base}/api/v1/flow/test", json=body))
                    for _ in range(4)
                ]
                deadline = time.monotonic() + 30
                while len(silent_endpoint.held) < 4:
                    done = [await (await t).text() for t in stuck if t.done()]
                    assert time.monotonic() < deadline and not done, done[:1]
                    await asyncio.sleep(0.1)
                began = time.monotonic()
                os.killpg(process.pid, signal.SIGTERM)
                code = await asyncio.to_thread(process.wait, 60)
                took = time.monotonic() - began
                answers = await asyncio.gather(*stuck, return_exceptions=True)
                texts = [await a.text() for a in answers if isinstance(a, aiohttp.ClientResponse)]
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
    assert took < 10, (took, log_path.read_text(errors="replace")[-6000:])
    assert code == 0, code
    # Each waiting submission was told, not dropped.
    assert len(texts) == 4 and all("STORE_UNAVAILABLE" in t and "shutting down" in t for t in texts)
    assert "shutdown_abandoned_store_calls" in log_path.read_text(errors="replace")
