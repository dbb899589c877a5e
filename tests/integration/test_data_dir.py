"""The data directory under faults of the disk: full, made immutable, too open.

Real filesystems, mounted for the test (hence root): a small tmpfs that
fills up, and an ext4 image, where ``chattr +i`` is enforced on mmapped
pages too (the fault that used to kill the service with SIGBUS).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from structlog.testing import capture_logs

from orchestrator.cli import main
from orchestrator.database import STATE_DB
from tests.helpers import (
    artifact,
    busybox_def,
    chain_flow,
    free_port,
    start_dev,
    submit,
    upload,
    wait_for,
    wait_healthy,
)

pytestmark = pytest.mark.docker

COPY = [busybox_def("copy", "cp ${in} ${out}")]


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a filesystem for the data directory needs root")


@pytest.fixture
def tmpfs_dir(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs: small enough to fill in a moment."""
    _need_root()
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    try:
        _run("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount))
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc.stderr.decode().strip()}")
    yield mount
    # Lazy: a container or the service may still hold a file in it.
    _run("umount", "--lazy", str(mount))


@pytest.fixture
def ext4_dir(tmp_path: Path) -> Iterator[Path]:
    """A loop-mounted 64 MiB ext4 image: ext4 refuses writes to an immutable file's
    mmapped pages (tmpfs does not), which is how SQLite's WAL index met chattr +i."""
    _need_root()
    if shutil.which("mkfs.ext4") is None or shutil.which("chattr") is None:
        pytest.skip("needs mkfs.ext4 and chattr (e2fsprogs)")
    image, mount = tmp_path / "ext4.img", tmp_path / "ext4"
    mount.mkdir()
    with image.open("wb") as handle:
        handle.truncate(64 * 1024 * 1024)
    try:
        _run("mkfs.ext4", "-q", "-F", str(image))
        _run("mount", "-o", "loop", str(image), str(mount))
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot loop-mount an ext4 image here: {exc.stderr.decode().strip()}")
    yield mount
    subprocess.run(["chattr", "-R", "-i", str(mount)], capture_output=True)
    _run("umount", "--lazy", str(mount))


def fill(directory: Path) -> Path:
    """Write zeros until the filesystem refuses one more byte."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as handle:
        for block in (1024 * 1024, 4096, 1):
            try:
                while True:
                    handle.write(b"\0" * block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return filler


def stored_run(database: Path, run_id: str) -> dict | None:
    """The run as the database has it, read beside the service like an operator would."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        row = conn.execute("SELECT snapshot FROM runs WHERE id = ?", (run_id,)).fetchone()
        nodes = conn.execute("SELECT node_id, state FROM run_nodes WHERE run_id = ?", (run_id,))
        states = {node: json.loads(state) for node, state in nodes}
    return {**json.loads(row[0]), "NodeState": states} if row else None


def log_lines(run: dict, node: str) -> list[str]:
    return [record["message"] for record in run["NodeState"][node]["Logs"]]


TICKS = {
    "Name": "ticks",
    "Nodes": [{"ID": "tick", "Uses": "test/tick", "Outputs": [{"Name": "out", "Edge": "out"}]}],
}
# Up, then eight log lines a second later, then no change of the run for 10 s.
TICK_DEFS = [
    busybox_def(
        "tick",
        "sh -c 'echo up; sleep 1; for i in 1 2 3 4 5 6 7 8; do echo tick $i; sleep 0.1; done; "
        "sleep 10; echo done > ${out}'",
    )
]


async def test_full_disk_refuses_new_runs_and_loses_no_accepted_one(tmpfs_dir, start_service):
    # tmpfs_dir first: set up before the service, so unmounted after it stopped.
    database = tmpfs_dir / STATE_DB
    # No low-water mark: what a disk that fills all the same does.
    client = await start_service(tmpfs_dir, retention={"low_water": 0})
    waiting = await submit(client, chain_flow("copy"), COPY)
    ticking = await submit(client, TICKS, TICK_DEFS)
    for _ in range(300):
        current = await wait_for(client, ticking["ID"], {"RUNNING"})
        if "up" in log_lines(current, "tick"):
            break
        await asyncio.sleep(0.05)
    # The node's container is up and about to log: fill the disk under it.
    with capture_logs() as logs:
        filler = await asyncio.to_thread(fill, tmpfs_dir)

        refused = await client.post(
            "/api/v1/flow/test", json={"Flow": chain_flow("copy"), "NodeDefs": COPY}
        )
        assert refused.status == 507, await refused.text()
        body = await refused.json()
        assert body["code"] == "STORAGE_FULL"
        assert "data directory is full" in body["message"]
        assert str(tmpfs_dir) not in body["message"]  # the operator's log names it

        # Runs in flight go on in memory, and reads still answer.
        for _ in range(100):
            current = await wait_for(client, ticking["ID"], {"RUNNING"})
            if "tick 8" in log_lines(current, "tick"):
                break
            await asyncio.sleep(0.1)
        assert "tick 8" in log_lines(current, "tick"), current
        assert (await client.get(f"/api/v1/flow/status/{waiting['ID']}")).status == 200
        stored = await asyncio.to_thread(stored_run, database, ticking["ID"])
        assert stored is not None and "tick 8" not in log_lines(stored, "tick")

        # Long enough for a write after the last line to have failed too: from
        # here on, no save is pending, and only a retry can write those lines.
        await asyncio.sleep(2)
        await asyncio.to_thread(filler.unlink)
        for _ in range(70):
            stored = await asyncio.to_thread(stored_run, database, ticking["ID"])
            if "tick 8" in log_lines(stored, "tick"):
                break
            await asyncio.sleep(0.1)
        assert "tick 8" in log_lines(stored, "tick"), stored
        assert stored["Status"] == "RUNNING"

    failures = [e for e in logs if e["event"] == "state_write_failed"]
    assert failures and failures[0]["log_level"] == "error", logs
    assert f"the data directory {tmpfs_dir} is full" in failures[0]["error"]
    assert any(e["event"] == "state_writes_resumed" for e in logs), logs

    # Space is back: runs are accepted again, and everything accepted survives a restart.
    later = await submit(client, chain_flow("copy"), COPY)
    done = await wait_for(client, ticking["ID"], {"COMPLETE", "ERROR"}, timeout=60)
    assert done["Status"] == "COMPLETE", done
    port = client.port  # restarted on it, the URLs handed out before still work
    await client.close()
    client = await start_service(tmpfs_dir, port=port, retention={"low_water": 0})
    for run in (waiting, ticking, later):
        response = await client.get(f"/api/v1/flow/status/{run['ID']}")
        assert response.status == 200, (run["ID"], await response.text())
    assert (await wait_for(client, ticking["ID"], {"COMPLETE"}))["Status"] == "COMPLETE"
    await upload(client, waiting, "src", b"still here")
    assert (await wait_for(client, waiting["ID"], {"COMPLETE", "ERROR"}))["Status"] == "COMPLETE"


async def test_below_the_low_water_mark_new_runs_get_507_and_accepted_ones_finish(
    tmpfs_dir, start_service
):
    client = await start_service(tmpfs_dir, retention={"low_water": "8m"})
    waiting = await submit(client, chain_flow("copy"), COPY)
    ballast = tmpfs_dir / "ballast"
    await asyncio.to_thread(ballast.write_bytes, b"\0" * (10 * 2**20))  # 16 MiB less 10
    await asyncio.sleep(1.1)  # free space is looked at once a second
    with capture_logs() as logs:
        refused = await client.post(
            "/api/v1/flow/test", json={"Flow": chain_flow("copy"), "NodeDefs": COPY}
        )
        assert refused.status == 507, await refused.text()
        body = await refused.json()
        assert body["code"] == "STORAGE_LOW"
        assert "below its low-water mark of 8 MiB" in body["message"]
        assert "runs already accepted go on" in body["message"]
        assert refused.headers["Retry-After"] == "60"
    assert [e["event"] for e in logs if e["event"].startswith("data_dir")] == ["data_dir_low"]

    # The run accepted before takes its upload and completes.
    await upload(client, waiting, "src", b"accepted before")
    done = await wait_for(client, waiting["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == "COMPLETE", done
    assert await artifact(client, waiting["ID"], "out") == b"accepted before"

    # Space is back: taken again.
    await asyncio.to_thread(ballast.unlink)
    await asyncio.sleep(1.1)
    later = await submit(client, chain_flow("copy"), COPY)
    assert later["Status"] == "WAITING"


async def test_immutable_data_dir_fails_writes_without_killing_the_service(tmp_path, ext4_dir):
    data_dir, port = ext4_dir, free_port()
    base = f"http://127.0.0.1:{port}"
    service_log = tmp_path / "service.log"
    log = service_log.open("ab")
    database = data_dir / STATE_DB
    flow = {"Flow": chain_flow("copy"), "NodeDefs": COPY}
    # A 64 MiB filesystem: below any low-water mark worth having, so none.
    config = tmp_path / "config.yaml"
    config.write_text("retention: {low_water: 0}\n")
    process = start_dev(data_dir, port, log, "--config", str(config))
    try:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(session, base)
            async with session.post(f"{base}/api/v1/flow/test", json=flow) as response:
                assert response.status == 200
                run = await response.json()
            frozen = [data_dir, *data_dir.glob(STATE_DB + "*")]
            _run("chattr", "+i", *map(str, frozen))

            async with session.post(f"{base}/api/v1/flow/test", json=flow) as response:
                text = await response.text()
            await asyncio.sleep(0.5)  # a fault in the background write would have struck
            assert process.poll() is None, f"the service died ({process.returncode}): {text}"
            assert response.status == 503, text
            body = json.loads(text)
            assert body["code"] == "STORAGE_UNWRITABLE"
            assert "refuses writes" in body["message"]
            # Reads still answer, from memory and from the database.
            async with session.get(f"{base}/api/v1/flow/status/{run['ID']}") as response:
                assert response.status == 200
            async with session.get(f"{base}/api/v1/flow/status/{uuid.uuid4().hex}") as response:
                assert response.status == 400
                assert await response.text() == "Flow run does not exist."
            # A change of an accepted run while it cannot be written...
            async with session.put(run["WaitingURLs"][0]["PutURL"], data=b"kept") as response:
                assert response.status == 200
            for _ in range(100):
                async with session.get(f"{base}/api/v1/flow/status/{run['ID']}") as response:
                    if (await response.json())["Status"] == "COMPLETE":
                        break
                await asyncio.sleep(0.1)
            assert process.poll() is None
            logged = service_log.read_text()
            assert "state_write_failed" in logged
            assert f"the data directory {data_dir} cannot be written" in logged
            assert "chattr -i" in logged

            # ...is written once the directory takes writes again, and survives a SIGKILL.
            _run("chattr", "-i", *map(str, frozen))
            for _ in range(100):
                stored = await asyncio.to_thread(stored_run, database, run["ID"])
                if stored and stored["Status"] == "COMPLETE":
                    break
                await asyncio.sleep(0.1)
            assert stored and stored["Status"] == "COMPLETE", stored
            async with session.post(f"{base}/api/v1/flow/test", json=flow) as response:
                assert response.status == 200
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
            process = start_dev(data_dir, port, log, "--config", str(config))
            await wait_healthy(session, base)
            async with session.get(f"{base}/api/v1/flow/artifact/{run['ID']}/out") as response:
                assert await response.read() == b"kept"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
        log.close()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _assert_owner_only(data_dir: Path) -> None:
    assert _mode(data_dir) == 0o700
    files = list(data_dir.glob(STATE_DB + "*"))
    assert data_dir / STATE_DB in files
    for path in files:
        assert _mode(path) == 0o600, (path, oct(_mode(path)))


async def test_data_dir_and_secrets_are_owner_only(start_service, tmp_path):
    data_dir = tmp_path / "fresh"
    client = await start_service(data_dir)
    await submit(client, chain_flow("copy"), COPY)  # state written: the journal exists too
    _assert_owner_only(data_dir)
    objects = data_dir / "objects"
    assert _mode(objects) & 0o077 == 0, oct(_mode(objects))


async def test_a_looser_data_dir_is_tightened_at_start(start_service, tmp_path):
    data_dir = tmp_path / "old"
    data_dir.mkdir(mode=0o755)
    (data_dir / "objects").mkdir(mode=0o755)
    with contextlib.closing(sqlite3.connect(data_dir / STATE_DB)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")  # as earlier versions kept it
        conn.execute("CREATE TABLE old (x)")
    os.chmod(data_dir, 0o755)
    os.chmod(data_dir / STATE_DB, 0o644)
    with capture_logs() as logs:
        client = await start_service(data_dir)
        await submit(client, chain_flow("copy"), COPY)
    _assert_owner_only(data_dir)
    assert _mode(data_dir / "objects") & 0o077 == 0
    # Out of WAL, whose mmapped index could kill the process (see orchestrator.database).
    assert not list(data_dir.glob(STATE_DB + "-shm"))
    with contextlib.closing(sqlite3.connect(data_dir / STATE_DB)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal"
    warned = [e for e in logs if e["event"] == "data_dir_permissions_tightened"]
    assert warned and warned[0]["log_level"] == "warning", logs


def test_keys_cli_creates_an_owner_only_database(tmp_path, capsys):
    data_dir = tmp_path / "keys-first"
    assert main(["keys", "create", "--name", "laptop", "--data-dir", str(data_dir)]) == 0
    capsys.readouterr()
    _assert_owner_only(data_dir)


async def test_an_upload_to_a_full_store_is_507_and_leaves_nothing(tmpfs_dir, start_service):
    client = await start_service(tmpfs_dir / "data", retention={"low_water": 0})
    flow = chain_flow("copy")
    run = await submit(client, flow, [busybox_def("copy", "cp ${in} ${out}")])
    url = run["WaitingURLs"][0]["PutURL"]
    big = io.BytesIO(b"x" * (24 * 1024 * 1024))  # over the 16 MiB tmpfs
    async with client.session.put(url, data=big) as response:
        assert response.status == 507, await response.text()
        assert (await response.json())["code"] == "STORAGE_FULL"
    store = tmpfs_dir / "data" / "objects" / "default"
    assert list((store / "tmp").iterdir()) == []
    assert not (store / "data" / run["WaitingURLs"][0]["Artifact"]["ObjectName"]).exists()
    # Once there is room, the same URL takes the upload and the run goes on.
    async with client.session.put(url, data=b"fits") as response:
        assert response.status == 200, await response.text()
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == "COMPLETE", done
