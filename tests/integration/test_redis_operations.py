"""Redis as operators run it, with real redis-server processes: one that loses its
data (no persistence, kill -9) strands no run, a Sentinel failover loses no run, TLS
is checked against its CA, and the password is never in argv or the log."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web

from orchestrator.api.app import create_app
from orchestrator.api.resources import QUEUE
from orchestrator.errors import ConfigError
from orchestrator.messages import AttemptLog, AttemptStarted, WorkerHeartbeat, WorkerMessage
from orchestrator.models import LogRecord
from orchestrator.queue.redis_streams import RedisQueue
from orchestrator.redis_access import PASSWORD_VARIABLE, RedisAccess
from tests.helpers import (
    busybox_def,
    chain_flow,
    free_port,
    service_settings,
    submit,
    upload,
    wait_for,
)
from tests.integration.test_redis_scaleout import (
    RECLAIM,
    RedisServer,
    TlsFiles,
    pytestmark,  # noqa: F401 (docker, redis-server)
    queued_task,
    redis_service,
)

QUICK = [busybox_def("quick", "sh -c 'sleep 1.5; cp ${in} ${out}'")]


@pytest.fixture
def volatile_redis(tmp_path: Path):
    """A redis-server that keeps nothing: no append-only file, no snapshots."""
    server = RedisServer(tmp_path, persistent=False)
    server.start()
    yield server
    server.stop()


async def twelve_runs(client) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    """Twelve two-node runs, each input uploaded (its own bytes)."""
    runs = []
    for n in range(12):
        run = await submit(client, chain_flow("quick", "quick", name=f"two-{n}"), QUICK)
        await upload(client, run, "src", f"run {n}".encode())
        runs.append(run)
    return runs


async def all_complete(client, runs: list[dict]) -> int:  # type: ignore[no-untyped-def,type-arg]
    """Each run COMPLETE with its own bytes, each node on attempt 1 (a lost attempt runs
    again under its number); returns how many attempts were found lost and sent again."""
    lost = 0
    for n, run in enumerate(runs):
        done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"}, timeout=120)
        assert done["Status"] == "COMPLETE", done
        assert [state["Attempt"] for state in done["NodeState"].values()] == [1, 1], done
        response = await client.get(f"/api/v1/flow/artifact/{run['ID']}/out")
        assert await response.read() == f"run {n}".encode()
        lines = [log["message"] for s in done["NodeState"].values() for log in s["Logs"]]
        lost += sum("(Redis lost or moved its data): dispatching it again" in m for m in lines)
    return lost


def count_starts(client) -> Counter[tuple[str, str, int]]:  # type: ignore[no-untyped-def]
    """The starts the service reads from its queue, by attempt, from now on."""
    queue = client.server.app[QUEUE]
    starts: Counter[tuple[str, str, int]] = Counter()
    read = queue.next_message

    async def counted() -> WorkerMessage:
        message = await read()
        if isinstance(message, AttemptStarted):
            starts[(message.run_id, message.node_id, message.attempt)] += 1
        return message

    queue.next_message = counted
    return starts


async def test_a_redis_that_loses_everything_mid_run_strands_no_run(
    volatile_redis, start_service, start_worker, capsys
):
    client = await redis_service(start_service, volatile_redis)
    starts = count_starts(client)
    # Two at a time: when Redis goes, two run and a few more wait in its streams.
    start_worker("w1", "--concurrency", "2", queue=volatile_redis.url)
    runs = await twelve_runs(client)
    await asyncio.sleep(3)
    volatile_redis.kill()
    await asyncio.sleep(2)
    volatile_redis.start()  # empty: its streams, groups and workers hash are gone
    assert await all_complete(client, runs) > 0  # some were lost: else this proves nothing
    # None ran twice: a task the worker ran through the outage was not sent again.
    assert max(starts.values()) == 1, starts
    assert "attempt_lost_in_queue" in capsys.readouterr().out
    metrics = await (await client.get("/metrics")).text()
    assert 'pipewell_node_attempts_total{outcome="lost"}' in metrics
    # What the empty Redis lost came back on its own: the worker's registration (its
    # heartbeat wrote it anew) and the consumer groups of the streams.
    assert volatile_redis.cli("hlen", "pipewell:workers") == "1"
    groups = volatile_redis.cli("xinfo", "groups", "pipewell:messages")
    assert "service" in groups.split()
    workers = await (await client.get("/api/v1/workers")).json()
    assert [w["name"] for w in workers["workers"]] == ["w1"]


# ------------------------------------------------------------ TLS


def make_tls(directory: Path) -> TlsFiles:
    """A CA, and a certificate it signed for 127.0.0.1 (redis-server's, and a client's)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("pipewell test CA"))
        .issuer_name(name("pipewell test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.pem", directory / "redis.pem", directory / "redis.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


@pytest.fixture
def tls_redis(tmp_path: Path):
    server = RedisServer(tmp_path, tls=make_tls(tmp_path))
    server.start()
    yield server
    server.stop()


async def ping(queue: RedisQueue) -> None:
    """One call that needs Redis (its groups made first), bounded."""
    try:
        async with asyncio.timeout(8):
            await queue.waiting()
    finally:
        await queue.close()


async def test_tls_is_refused_without_the_ca_and_accepted_with_it(tls_redis, capsys):
    url = tls_redis.url
    assert url.startswith("rediss://")
    untrusting = RedisQueue(RedisAccess(url), consumer="c")
    try:
        # At start: a clear error, not a wait for ever.
        with pytest.raises(ConfigError, match="certificate that is not trusted.*--queue-ca"):
            await untrusting.check()
    finally:
        await untrusting.close()
    with pytest.raises(TimeoutError):  # later: never talked to, retried
        await ping(RedisQueue(RedisAccess(url), consumer="c"))
    assert "CERTIFICATE_VERIFY_FAILED" in capsys.readouterr().out
    # With the CA, and with the CA and a client certificate.
    await ping(RedisQueue(RedisAccess(url, tls_ca_file=tls_redis.tls.ca), consumer="c"))
    both = RedisAccess(
        url,
        tls_ca_file=tls_redis.tls.ca,
        tls_cert_file=tls_redis.tls.cert,
        tls_key_file=tls_redis.tls.key,
    )
    await ping(RedisQueue(both, consumer="c"))
    # Plain text to the TLS port is not answered either.
    plain = url.replace("rediss://", "redis://")
    with pytest.raises(TimeoutError):
        await ping(RedisQueue(RedisAccess(plain), consumer="c"))


# ------------------------------------------------------------ the password


def command_lines() -> str:
    """Every process's command line, as ps shows them."""
    lines = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            lines.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:  # ended meanwhile
            continue
    return "\n".join(lines)


async def test_the_password_comes_from_a_file_or_the_environment_and_is_never_shown(
    tmp_path, start_service, start_worker, capsys
):
    secret = f"pw-{uuid.uuid4().hex}"
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis", password=secret)
    server.start()
    try:
        bare = f"redis://127.0.0.1:{server.port}/0"
        password_file = tmp_path / "redis-password"
        password_file.write_text(secret + "\n")
        client = await start_service(
            queue={"url": bare, "password_file": password_file, "reclaim_after": RECLAIM},
            worker={"enabled": False},
        )
        start_worker("w1", queue=bare, env={PASSWORD_VARIABLE: secret})
        run = await submit(client, chain_flow("quick", name="one"), QUICK)
        await upload(client, run, "src", b"authenticated")
        done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"}, timeout=60)
        assert done["Status"] == "COMPLETE", done
        shown = command_lines()
        assert bare in shown and secret not in shown
        assert secret not in (tmp_path / "w1.log").read_text()
        assert secret not in capsys.readouterr().out
        # A service or worker given a wrong password stops at once and says what to fix.
        settings = service_settings(
            tmp_path / "refused-service",
            queue={"url": f"redis://:not-{secret}@127.0.0.1:{server.port}/0"},
            worker={"enabled": False},
        )
        runner = web.AppRunner(create_app(settings))
        try:
            with pytest.raises(ConfigError, match="refused the password.*PIPEWELL_REDIS"):
                await runner.setup()  # the app's start-up, where the queue is opened
        finally:
            await runner.cleanup()
        refused = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "orchestrator.cli", "worker", "--queue", bare,
             "--data-dir", str(tmp_path / "refused")],
            env={**os.environ, PASSWORD_VARIABLE: f"not-{secret}"},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert refused.returncode == 2, refused
        assert "refused the password" in refused.stderr
        assert "PIPEWELL_REDIS_PASSWORD" in refused.stderr
        assert secret not in refused.stderr + refused.stdout
        # A URL's password is not logged either when Redis refuses it.
        wrong = RedisQueue(
            RedisAccess(f"redis://:not-{secret}@127.0.0.1:{server.port}/0"), consumer="c"
        )
        with pytest.raises(TimeoutError):
            await ping(wrong)
        said = capsys.readouterr().out
        assert "redis_unreachable" in said and "***@127.0.0.1" in said
        assert secret not in said
    finally:
        server.stop()


# ------------------------------------------------------------ Sentinel

MASTER_NAME = "pipewell"


class RedisWithSentinels:
    """A master, its replica and three sentinels on loopback ports, as Debian's
    redis-server runs them (``--sentinel``); nothing persisted."""

    def __init__(self, directory: Path) -> None:
        for name in ("master", "replica", "sentinels"):
            (directory / name).mkdir()
        self.directory = directory
        self.master = RedisServer(directory / "master", persistent=False)
        self.replica = RedisServer(
            directory / "replica",
            persistent=False,
            extra=("--replicaof", "127.0.0.1", str(self.master.port)),
        )
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        self.url = f"redis+sentinel://{hosts}/{MASTER_NAME}/0"

    def start(self) -> None:
        self.master.start()
        self.replica.start()
        self._until(lambda: "master_link_status:up" in self.replica.cli("info", "replication"))
        for port in self.sentinel_ports:
            conf = self.directory / "sentinels" / f"{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {conf.parent}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                f"sentinel failover-timeout {MASTER_NAME} 10000\n"
            )
            self.sentinels.append(
                subprocess.Popen(
                    ["redis-server", str(conf), "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        # Each sentinel knows the replica and the two other sentinels: ready to fail over.
        for port in self.sentinel_ports:
            self._until(lambda port=port: "num-other-sentinels\n2" in self.ask(port))
            self._until(lambda port=port: "num-slaves\n1" in self.ask(port))

    def ask(self, port: int) -> str:
        """The sentinel's view of the master (SENTINEL MASTER), "" while it cannot say."""
        return RedisServer.cli_at(port, "sentinel", "master", MASTER_NAME)

    def master_port(self) -> int:
        answer = RedisServer.cli_at(
            self.sentinel_ports[0], "sentinel", "get-master-addr-by-name", MASTER_NAME
        )
        return int(answer.split()[-1])

    @staticmethod
    def _until(predicate, seconds: float = 30) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + seconds
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("the Redis set did not get ready")
            time.sleep(0.1)

    def stop(self) -> None:
        for process in self.sentinels:
            process.terminate()
        for process in self.sentinels:
            process.wait(10)
        self.replica.stop()
        self.master.stop()


@pytest.fixture
def sentinel_redis(tmp_path: Path):
    (tmp_path / "redis").mkdir()
    redis_set = RedisWithSentinels(tmp_path / "redis")
    redis_set.start()
    yield redis_set
    redis_set.stop()


async def test_runs_complete_across_a_sentinel_failover(
    sentinel_redis, start_service, start_worker, capsys
):
    client = await start_service(
        queue={"url": sentinel_redis.url, "reclaim_after": RECLAIM}, worker={"enabled": False}
    )
    start_worker("w1", queue=sentinel_redis.url)
    runs = await twelve_runs(client)
    await asyncio.sleep(3)
    first = sentinel_redis.master_port()
    sentinel_redis.master.kill()  # what the replica had not received is gone with it
    await all_complete(client, runs)
    assert sentinel_redis.master_port() == sentinel_redis.replica.port != first
    # The service and the worker went on with the new master.
    assert "redis_back" in capsys.readouterr().out
    run = await submit(client, chain_flow("quick", name="after"), QUICK)
    await upload(client, run, "src", b"after the failover")
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"}, timeout=60)
    assert done["Status"] == "COMPLETE", done


# ------------------------------------------------------------ where a task is


async def test_a_task_is_found_in_its_stream_or_on_a_workers_heartbeat_once_it_is_read(
    redis_server,
):
    service = RedisQueue(redis_server.url, consumer="service")
    worker = RedisQueue(redis_server.url, consumer="w")
    try:
        tasks = [queued_task(n) for n in range(3)]
        keys = {task.key for task in tasks}
        await service.put_tasks(tasks)
        assert await service.unaccounted(keys | {"r9/n/1"}) == ({"r9/n/1"}, True)
        redis_server.cli("del", "pipewell:tasks:c-small")  # Redis lost them
        assert await service.unaccounted(keys) == (keys, True)
        # A worker says r0 runs and r1 waits its turn in a batch; then a log line.
        beat = WorkerHeartbeat(
            worker_id="w",
            name="w",
            tiers=["c-small"],
            running=[tasks[0].key],
            held=[tasks[1].key],
            sent_at=time.time(),
        )
        await worker.put_message(beat)
        line = LogRecord(message="working")
        await worker.put_message(AttemptLog(run_id="r0", node_id="n", attempt=1, record=line))
        # Sent after the last look: nothing says yet that the look missed them.
        assert await service.unaccounted(keys) == (keys, True)
        # Still unread at the next look: not caught up, so nothing may be called lost.
        assert await service.unaccounted(keys) == (keys, False)
        assert (await asyncio.wait_for(service.next_message(), 5)).kind == "log"
        assert await service.unaccounted(keys) == ({tasks[2].key}, True)
    finally:
        for queue in (service, worker):
            await queue.close()
