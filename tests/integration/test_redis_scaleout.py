"""Scale-out on Redis Streams: a real redis-server, workers in processes of their own."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from orchestrator.cli import SHUTDOWN_LIMIT
from orchestrator.messages import Task
from orchestrator.queue.redis_streams import RedisQueue
from tests.helpers import (
    busybox_def,
    chain_flow,
    containers_left,
    create_key,
    free_port,
    running_containers,
    start_dev,
    submit,
    upload,
    wait_for,
    wait_healthy,
)

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]

RECLAIM = 3  # seconds a worker may be silent


class RedisServer:
    """A redis-server on a free loopback port. ``persistent``: ``restart`` keeps its data
    (an append-only file synced at each write); else it keeps nothing, as a cache-style
    Redis. ``tls``: the port speaks TLS only (certificate, key and CA files)."""

    def __init__(
        self,
        directory: Path,
        bind: str = "127.0.0.1",
        password: str = "",
        *,
        persistent: bool = True,
        tls: TlsFiles | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.directory = directory
        self.bind = bind
        self.password = password
        self.persistent = persistent
        self.tls = tls
        self.extra = extra
        self.port = free_port()
        auth = f":{password}@" if password else ""
        self.url = f"{'rediss' if tls else 'redis'}://{auth}{bind}:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"]
        if not self.persistent:
            persistence = ["--appendonly", "no"]
        ports = ["--port", str(self.port)]
        if self.tls is not None:
            ports = [
                "--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key),
                "--tls-ca-cert-file", str(self.tls.ca), "--tls-auth-clients", "optional",
            ]  # fmt: skip
        self.process = subprocess.Popen(
            ["redis-server", *ports, "--bind", self.bind, "--save", "", *persistence,
             "--dir", str(self.directory),
             *(["--requirepass", self.password] if self.password else []), *self.extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while self.cli("ping") != "PONG":
            if time.monotonic() > deadline:
                raise AssertionError("redis-server did not start")
            time.sleep(0.05)

    def cli(self, *command: str) -> str:
        """redis-cli's answer to ``command`` ("" when it cannot connect)."""
        tls = []
        if self.tls is not None:
            tls = ["--tls", "--cacert", str(self.tls.ca)]
        return self.cli_at(self.port, *tls, *command, host=self.bind, password=self.password)

    @staticmethod
    def cli_at(port: int, *command: str, host: str = "127.0.0.1", password: str = "") -> str:
        done = subprocess.run(
            ["redis-cli", "-h", host, "-p", str(port), *command],
            capture_output=True,
            env={**os.environ, "REDISCLI_AUTH": password},
            timeout=10,
        )
        return done.stdout.decode().strip()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def kill(self) -> None:
        """kill -9: what it had not written is gone."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def start_worker(
    tmp_path: Path, redis_server: RedisServer
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """``pipewell worker`` processes on this host, killed at the end."""
    started: list[subprocess.Popen[bytes]] = []
    logs = []

    def start(
        name: str, *extra: str, queue: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """A worker on ``queue`` (default the ``redis_server``'s URL), ``env`` added."""
        log = (tmp_path / f"{name}.log").open("ab")
        logs.append(log)
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "worker",
             "--queue", queue or redis_server.url,
             "--data-dir", str(tmp_path / name), "--name", name,
             "--reclaim-after", str(RECLAIM), *extra],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
        started.append(process)
        return process

    yield start
    stop(*started)
    for log in logs:
        log.close()


async def redis_service(start_service, redis_server: RedisServer, **queue: Any):  # type: ignore[no-untyped-def]
    """The service on Redis with no worker of its own (``queue``: more of its settings)."""
    return await start_service(
        queue={"url": redis_server.url, "reclaim_after": RECLAIM, **queue},
        worker={"enabled": False},
    )


async def workers_once(
    client: TestClient, what: Callable[[dict[str, Any]], bool], seconds: float = 15.0
) -> dict[str, Any]:
    """``GET /api/v1/workers`` once ``what`` holds of it; AssertionError after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        body = await (await client.get("/api/v1/workers")).json()
        if what(body):
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.1)


async def settled(session: aiohttp.ClientSession, base: str, run_id: str) -> dict:  # type: ignore[type-arg]
    """The run once COMPLETE or ERROR (or as it stands after a minute), from a service by URL."""
    deadline = time.monotonic() + 60
    while True:
        async with session.get(f"{base}/api/v1/flow/status/{run_id}") as response:
            run = await response.json()
        if run["Status"] in ("COMPLETE", "ERROR") or time.monotonic() > deadline:
            return run
        await asyncio.sleep(0.2)


SLOW = [busybox_def("slow", "sh -c 'sleep 4; cp ${in} ${out}'")]


def queued_task(n: int) -> Task:
    return Task(run_id=f"r{n}", node_id="n", attempt=1, image="x", tier="c-small", timeout=60)


async def test_a_reclaimed_task_is_handed_over_before_its_log_line_is_sent(redis_server):
    """Sending the reclaim's log line must not stand between a claim and its return:
    a take cancelled there would leave the task held here (heartbeats keep it) and
    run nowhere."""
    service = RedisQueue(redis_server.url, consumer="service", reclaim_after=0.2)
    gone = RedisQueue(redis_server.url, consumer="gone", reclaim_after=0.2)
    taker = RedisQueue(redis_server.url, consumer="taker", reclaim_after=0.2)
    try:
        await service.put_task(queued_task(1))
        assert (await gone.take_task(frozenset({"c-small"}))).run_id == "r1"
        await asyncio.sleep(0.4)  # "gone" never touches it again
        never = asyncio.Event()

        async def stuck_put_message(message: object) -> None:
            await never.wait()

        taker.put_message = stuck_put_message  # type: ignore[method-assign]
        task = await asyncio.wait_for(taker.take_task(frozenset({"c-small"})), 5)
        assert task.run_id == "r1"
    finally:
        for queue in (service, gone, taker):
            await queue.close()


async def test_a_take_cancelled_as_its_entry_arrives_leaves_it_to_the_next_take(redis_server):
    """The worker cancels a take when its capacity changes: an entry Redis delivered
    meanwhile is this consumer's, and must not wait reclaim_after for anyone to run it."""
    service = RedisQueue(redis_server.url, consumer="service")
    taker = RedisQueue(redis_server.url, consumer="taker", reclaim_after=60)
    reading, delivered = asyncio.Event(), asyncio.Event()
    real_read = taker._redis.xreadgroup

    async def slow_answer(*args: object, **kwargs: object) -> object:
        reading.set()
        answer = await real_read(*args, **kwargs)
        if answer:
            delivered.set()
            await asyncio.sleep(0.3)  # the answer is still on its way when the take is cancelled
        return answer

    taker._redis.xreadgroup = slow_answer  # type: ignore[method-assign]
    try:
        take = asyncio.create_task(taker.take_task(frozenset({"c-small"})))
        await asyncio.wait_for(reading.wait(), 5)
        await service.put_task(queued_task(7))
        await asyncio.wait_for(delivered.wait(), 5)
        take.cancel()
        with pytest.raises(asyncio.CancelledError):
            await take
        # The read goes on, shielded, for its 0.3 s: a take started before it ends
        # misses its entry until its own blocking read returns (BLOCK_MS).
        await asyncio.sleep(0.5)
        task = await asyncio.wait_for(taker.take_task(frozenset({"c-small"})), 2)
        assert task.run_id == "r7"
    finally:
        for queue in (service, taker):
            await queue.close()


async def test_a_dead_workers_task_is_found_behind_many_live_ones(redis_server):
    """XAUTOCLAIM looks at ten pending entries per call: its cursor must be followed."""
    service = RedisQueue(redis_server.url, consumer="service")
    # Touches its entries every 0.5 s; the taker reclaims entries idle for 2 s.
    live = RedisQueue(redis_server.url, consumer="live", reclaim_after=1.5)
    dead = RedisQueue(redis_server.url, consumer="dead")
    taker = RedisQueue(redis_server.url, consumer="taker", reclaim_after=2.0)
    try:
        for n in range(12):
            await service.put_task(queued_task(n))
        for _ in range(12):
            await live.take_task(frozenset({"c-small"}))
        await service.put_task(queued_task(99))
        assert (await dead.take_task(frozenset({"c-small"}))).run_id == "r99"
        live.register_worker("live", frozenset({"c-small"}))  # heartbeats touch its twelve
        await asyncio.sleep(2.5)
        task = await asyncio.wait_for(taker.take_task(frozenset({"c-small"})), 5)
        assert task.run_id == "r99"
    finally:
        await live.unregister_worker("live")
        for queue in (service, live, dead, taker):
            await queue.close()


async def test_a_flow_runs_through_a_worker_process(redis_server, start_service, start_worker):
    client = await redis_service(start_service, redis_server)
    start_worker("w1")
    defs = [busybox_def("upper", "sh -c 'tr a-z A-Z < ${in} > ${out}'"),
            busybox_def("copy", "cp ${in} ${out}")]  # fmt: skip
    run = await submit(client, chain_flow("upper", "copy"), defs)
    await upload(client, run, "src", b"through redis")
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"}, timeout=60)
    assert done["Status"] == "COMPLETE", done
    response = await client.get(f"/api/v1/flow/artifact/{run['ID']}/out")
    assert await response.read() == b"THROUGH REDIS"
    started = [line["message"] for line in done["NodeState"]["n0"]["Logs"]]
    assert "attempt 1 started on worker w1" in started


async def test_a_killed_workers_task_runs_again_elsewhere_and_its_container_goes(
    redis_server, start_service, start_worker
):
    client = await redis_service(start_service, redis_server)
    first = start_worker("w1")
    run = await submit(client, chain_flow("slow"), SLOW)
    await upload(client, run, "src", b"survives")
    await running_containers(run["ID"], seconds=30)
    os.killpg(first.pid, signal.SIGKILL)
    start_worker("w2")
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"}, timeout=60)
    assert done["Status"] == "COMPLETE", done
    state = done["NodeState"]["n0"]
    assert state["Attempt"] == 1  # the lost attempt was not counted
    messages = [line["message"] for line in state["Logs"]]
    assert any("its worker was silent for over 3 s; worker w2 runs it again" in m for m in messages)
    response = await client.get(f"/api/v1/flow/artifact/{run['ID']}/out")
    assert await response.read() == b"survives"
    # w1's container is removed by w2, on the same engine, once w1 counts as dead.
    assert await containers_left(run["ID"], 4 * RECLAIM + 10) == []


async def test_runs_complete_across_a_redis_restart(redis_server, start_service, start_worker):
    client = await redis_service(start_service, redis_server)
    start_worker("w1")
    run = await submit(client, chain_flow("slow", "slow", name="two"), SLOW)
    await upload(client, run, "src", b"kept")
    await running_containers(run["ID"], seconds=30)
    redis_server.stop()
    await asyncio.sleep(2)
    redis_server.start()
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"}, timeout=90)
    assert done["Status"] == "COMPLETE", done
    response = await client.get(f"/api/v1/flow/artifact/{run['ID']}/out")
    assert await response.read() == b"kept"


async def test_cancel_reaches_a_worker_process_and_workers_are_listed(
    redis_server, start_service, start_worker
):
    client = await redis_service(start_service, redis_server)
    start_worker("w1")
    long = [busybox_def("slow", "sh -c 'sleep 60; cp ${in} ${out}'")]
    run = await submit(client, chain_flow("slow"), long)
    await upload(client, run, "src", b"x")
    await running_containers(run["ID"], seconds=30)
    # The next heartbeat says it holds the task.
    await workers_once(
        client, lambda body: [(w["name"], w["running"]) for w in body["workers"]] == [("w1", 1)]
    )
    # A tier no live worker takes waits in its stream, and is counted there.
    big = [busybox_def("big", "true", Tier="m-xlarge")]
    waiting = await submit(client, chain_flow("big", name="big"), big)
    await upload(client, waiting, "src", b"x")
    await workers_once(client, lambda body: body["queued"] == {"m-xlarge": 1})
    response = await client.post(f"/api/v1/flow/cancel/{run['ID']}")
    assert (await response.json())["Status"] == "STOPPED"
    assert await containers_left(run["ID"], 15) == []
    await client.post(f"/api/v1/flow/cancel/{waiting['ID']}")
    await workers_once(client, lambda body: body["queued"] == {})


async def test_twenty_runs_over_two_workers_survive_losing_one(
    redis_server, start_service, start_worker
):
    client = await redis_service(start_service, redis_server)
    doomed = start_worker("w1")
    start_worker("w2")
    runs = [await submit(client, chain_flow("slow", name=f"r{i}"), SLOW) for i in range(20)]
    for i, run in enumerate(runs):
        await upload(client, run, "src", f"run {i}".encode())
    # Both workers hold some, as their heartbeats say.
    await workers_once(
        client,
        lambda body: (
            sorted((w["name"], w["running"] > 0) for w in body["workers"])
            == [("w1", True), ("w2", True)]
        ),
        seconds=60,
    )
    os.killpg(doomed.pid, signal.SIGKILL)
    for i, run in enumerate(runs):
        done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"}, timeout=120)
        assert done["Status"] == "COMPLETE", done
        assert done["NodeState"]["n0"]["Attempt"] == 1
        response = await client.get(f"/api/v1/flow/artifact/{run['ID']}/out")
        assert await response.read() == f"run {i}".encode()
    for run in runs:
        assert await containers_left(run["ID"], 4 * RECLAIM + 10) == []


async def test_a_service_killed_mid_run_resumes_without_running_a_node_twice(
    redis_server, start_worker, tmp_path
):
    start_worker("w1")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    flags = ("--queue", redis_server.url, "--no-local-worker")
    with (tmp_path / "service.log").open("ab") as log:
        service = start_dev(tmp_path / "service", port, log, *flags)
        try:
            async with aiohttp.ClientSession() as session:
                await wait_healthy(session, base)
                body = {"Flow": chain_flow("slow", "slow", name="two"), "NodeDefs": SLOW}
                async with session.post(f"{base}/api/v1/flow/test", json=body) as response:
                    run = await response.json()
                url = run["WaitingURLs"][0]["PutURL"]
                async with session.put(url, data=b"once") as response:
                    assert response.status == 200
                await running_containers(run["ID"], seconds=30)
                os.killpg(service.pid, signal.SIGKILL)
                service.wait(10)
                service = start_dev(tmp_path / "service", port, log, *flags)
                await wait_healthy(session, base)
                done = await settled(session, base, run["ID"])
                assert done["Status"] == "COMPLETE", done
                async with session.get(f"{base}/api/v1/flow/artifact/{run['ID']}/out") as r:
                    assert await r.read() == b"once"
        finally:
            if service.poll() is None:
                os.killpg(service.pid, signal.SIGTERM)
            service.wait(30)
    first = [line["message"] for line in done["NodeState"]["n0"]["Logs"]]
    # The attempt the worker was running when the service died ran once, and was not re-queued.
    assert first.count("attempt 1 started on worker w1") == 1, first
    assert "service restarted: this attempt is still in the queue" in first
    assert done["NodeState"]["n0"]["Attempt"] == 1


def spawn(argv: list[str], log: BinaryIO) -> subprocess.Popen[bytes]:
    """A process of its own session (so its whole group can be signalled)."""
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop(*processes: subprocess.Popen[bytes]) -> bool:
    """SIGTERM to each (all at once), then SIGKILL to any still there past the shutdown limit.

    True when each ended on its own in time: one that hangs must not outlive its test.
    """
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + SHUTDOWN_LIMIT + 5
    in_time = True
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            in_time = False
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    return in_time


class OtherHost:
    """A network namespace joined to this host by a veth pair: a host of its own for a worker."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.namespace = f"pw-{tag}"
        self.link = f"pwh-{tag}"
        subnet = 16 + int(tag[:2], 16) % 200
        self.host_address = f"10.231.{subnet}.1"
        self.address = f"10.231.{subnet}.2"

    def create(self) -> None:
        peer = self.link.replace("pwh-", "pww-")
        for command in (
            f"ip netns add {self.namespace}",
            f"ip link add {self.link} type veth peer name {peer}",
            f"ip link set {peer} netns {self.namespace}",
            f"ip addr add {self.host_address}/24 dev {self.link}",
            f"ip link set {self.link} up",
            f"ip netns exec {self.namespace} ip addr add {self.address}/24 dev {peer}",
            f"ip netns exec {self.namespace} ip link set {peer} up",
            f"ip netns exec {self.namespace} ip link set lo up",
        ):
            subprocess.run(command.split(), check=True, capture_output=True)

    def remove(self) -> None:
        subprocess.run(["ip", "link", "del", self.link], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True)


@pytest.fixture
def other_host() -> Iterator[OtherHost]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    host = OtherHost()
    try:
        host.create()
    except subprocess.CalledProcessError as exc:
        host.remove()
        pytest.skip(f"cannot make a network namespace here: {exc.stderr.decode().strip()}")
    yield host
    host.remove()


async def test_a_worker_on_another_host_runs_a_flow(other_host, tmp_path, capsys):
    """The worker's only way to Redis and to the store is the veth link."""
    # Beyond loopback, Redis wants a password (its protected mode), as any operator's would.
    redis = RedisServer(tmp_path, bind=other_host.host_address, password=uuid.uuid4().hex)
    redis.start()
    port = free_port()
    base = f"http://{other_host.host_address}:{port}"
    url = redis.url
    config = tmp_path / "config.yaml"
    config.write_text(
        f"host: {other_host.host_address}\nport: {port}\nauth: required\n"
        f"worker: {{enabled: false}}\nqueue: {{url: '{url}', reclaim_after: {RECLAIM}, "
        f"worker_url: '{base}'}}\n"
    )
    key = create_key(capsys, tmp_path / "service", "laptop")
    headers = {"Authorization": f"Bearer {key}"}
    with (tmp_path / "service.log").open("ab") as log, (tmp_path / "w.log").open("ab") as wlog:
        service = spawn(
            [sys.executable, "-m", "orchestrator.cli", "serve", "--config", str(config),
             "--data-dir", str(tmp_path / "service")], log,
        )  # fmt: skip
        worker = spawn(
            ["ip", "netns", "exec", other_host.namespace, sys.executable, "-m",
             "orchestrator.cli", "worker", "--queue", url, "--name", "remote",
             "--data-dir", str(tmp_path / "remote"), "--reclaim-after", str(RECLAIM)], wlog,
        )  # fmt: skip
        try:
            async with aiohttp.ClientSession(headers=headers) as session:
                await wait_healthy(session, base)
                defs = [busybox_def("upper", "sh -c 'tr a-z A-Z < ${in} > ${out}'")]
                body = {"Flow": chain_flow("upper"), "NodeDefs": defs}
                async with session.post(f"{base}/api/v1/flow/test", json=body) as response:
                    run = await response.json()
                async with session.put(run["WaitingURLs"][0]["PutURL"], data=b"far away") as r:
                    assert r.status == 200
                done = await settled(session, base, run["ID"])
                assert done["Status"] == "COMPLETE", done
                logs = [line["message"] for line in done["NodeState"]["n0"]["Logs"]]
                assert "attempt 1 started on worker remote" in logs
                async with session.get(f"{base}/api/v1/flow/artifact/{run['ID']}/out") as r:
                    assert await r.read() == b"FAR AWAY"
        finally:
            stopped_in_time = stop(worker, service)
            redis.stop()
    assert stopped_in_time, "the worker or the service outlived its shutdown limit"


async def test_a_redis_that_lost_its_data_or_holds_junk_does_not_stop_the_engine(
    redis_server, start_service, start_worker
):
    client = await redis_service(start_service, redis_server)
    start_worker("w1")
    defs = [busybox_def("copy", "cp ${in} ${out}")]
    for number, fault in enumerate(
        (["FLUSHALL"], ["XADD", "pipewell:messages", "*", "message", "{"])
    ):
        await asyncio.to_thread(
            subprocess.run, ["redis-cli", "-p", str(redis_server.port), *fault], check=True
        )
        run = await submit(client, chain_flow("copy", name=f"after-{number}"), defs)
        await upload(client, run, "src", b"still fine")
        done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"}, timeout=60)
        assert done["Status"] == "COMPLETE", (fault, done)


async def test_on_redis_the_queue_holds_about_a_slot_each_and_priority_goes_first(
    redis_server, start_service, start_worker
):
    """The service lets only as many tasks into Redis as the workers have slots: what
    waits beyond waits in its dispatch order, so a run of higher Priority submitted
    after fifteen others starts next, through a worker process."""
    from tests.integration.test_quotas import SLEEP, SLEEPER

    client = await redis_service(start_service, redis_server)
    start_worker("w1", "--concurrency", "1")
    await workers_once(client, lambda body: len(body["workers"]) == 1)

    async def started(**extra: Any) -> str:
        body = {"Flow": SLEEPER, "NodeDefs": [SLEEP], "NoCache": True, **extra}
        response = await client.post("/api/v1/flow/test", json=body)
        assert response.status == 200, await response.text()
        return (await response.json())["ID"]

    backlog = [await started() for _ in range(15)]
    urgent = await started(Priority=50)
    import redis

    from orchestrator.queue.redis_streams import tasks_stream

    with redis.Redis.from_url(redis_server.url) as direct:
        in_redis = await asyncio.to_thread(direct.xlen, tasks_stream("c-nano"))
    # What Redis holds stays bounded by the slots (1, at least 2), the rest waits here.
    described = await (await client.get("/api/v1/workers")).json()
    assert described["queued"].get("c-nano", 0) >= 10, (in_redis, described)
    # Two waiting at most (AHEAD_LEAST), and the one the worker runs.
    assert in_redis <= 3, in_redis
    done = await wait_for(client, urgent, {"COMPLETE"}, timeout=60)
    assert done["Status"] == "COMPLETE"
    left = 0
    for run_id in backlog:
        status = await (await client.get(f"/api/v1/flow/status/{run_id}")).json()
        left += status["Status"] != "COMPLETE"
    assert left >= 10, left
    for run_id in backlog:
        await wait_for(client, run_id, {"COMPLETE"}, timeout=60)
