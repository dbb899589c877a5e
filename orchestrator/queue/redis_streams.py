"""The queue on Redis Streams: workers on any number of Docker hosts.

Keys (all under ``pipewell:``):

- ``tasks:<tier>``: one stream per tier, consumer group ``workers``. A worker
  reads the streams of the tiers that fit it now (``XREADGROUP``), and acks and
  deletes an entry once the attempt's result is sent: at-least-once delivery.
  While it runs a task, its heartbeat touches the entry (``XCLAIM … JUSTID``),
  so only the tasks of a worker silent for ``reclaim_after`` seconds go idle,
  and another worker takes them over (``XAUTOCLAIM``) and runs the attempt
  again under the same number: a lost attempt is not counted against the node.
- ``messages``: attempt started, log lines, results, cleaned-up and
  heartbeats, to the service (consumer group ``service``), acked once handled.
  Results are idempotent by (run, node, attempt) in the scheduler, so a message
  read twice after a restart changes nothing.
- ``cancels``: the runs that ended; every worker reads all of it.
- ``workers``: a hash of the latest heartbeat of each worker, for the API.

Redis going away is waited out: every call retries with backoff, logging once
when Redis stops answering and once when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeVar

import structlog
from pydantic import TypeAdapter
from redis import exceptions as redis_errors

from orchestrator.background import Background
from orchestrator.dispatch_order import NO_TURN, Turn
from orchestrator.errors import ConfigError
from orchestrator.messages import (
    AttemptLog,
    CancelRun,
    Task,
    WorkerHeartbeat,
    WorkerMessage,
)
from orchestrator.models import LogRecord
from orchestrator.queue.memory import worker_view
from orchestrator.redis_access import PASSWORD_VARIABLE, RedisAccess, safe_url
from orchestrator.tiers import TIERS

log = structlog.get_logger(__name__)

PREFIX = "pipewell:"
MESSAGES = PREFIX + "messages"
CANCELS = PREFIX + "cancels"
WORKERS = PREFIX + "workers"
WORKER_GROUP = "workers"
SERVICE_GROUP = "service"
#: Milliseconds a blocking read waits before it looks around (a close, an outage).
BLOCK_MS = 2000
#: Seconds a stopping worker tries to leave the workers hash.
UNREGISTER_LIMIT = 2.0
#: Seconds the first look at Redis may take before it is left to the retries.
CHECK_LIMIT = 10.0
#: Streams are capped (approximately) at this many entries.
MAX_ENTRIES = 100_000
_RETRY_FIRST, _RETRY_MAX = 0.2, 5.0

T = TypeVar("T")
_UNREACHABLE = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)
_messages = TypeAdapter(WorkerMessage)


def tasks_stream(tier: str) -> str:
    return f"{PREFIX}tasks:{tier}"


class RedisQueue:
    """One connection's view of the queue: the service's or one worker's."""

    durable = True
    takes_in_turn = False

    def __init__(
        self, access: RedisAccess | str, *, consumer: str, reclaim_after: float = 30.0
    ) -> None:
        access = RedisAccess(access) if isinstance(access, str) else access
        self.url = access.url
        self.consumer = consumer
        self.reclaim_after = reclaim_after
        self.heartbeat_every = max(0.5, reclaim_after / 3)
        # An attempt is looked for once the workers had time to say they run it.
        self.lease_term = self.heartbeat_every
        self._redis = access.client()
        self._ready = False
        self._unreachable_since: float | None = None
        self._background = Background()
        # Service side: entries of tasks not yet started (to drop them), messages to ack,
        # and the live workers by their heartbeats.
        self._queued: dict[str, tuple[str, bytes]] = {}
        self._read_pending = True  # first read the messages a previous service left unacked
        self._buffer: list[tuple[bytes, WorkerMessage]] = []
        self._to_ack: list[bytes] = []
        # Messages handed out, to acknowledge once their changes are written.
        self._handed: list[bytes] = []
        # The last message read, and the last there was at the previous look for lost
        # tasks (``unaccounted``): each as (milliseconds, sequence).
        self._read_up_to = (0, 0)
        self._horizon = (0, 0)
        self._workers: dict[str, tuple[WorkerHeartbeat, float]] = {}
        # Worker side: the entries of the tasks this worker holds, and who to tell of cancels.
        self._held: dict[str, tuple[str, bytes]] = {}
        # Entries a cancelled take had read: delivered to this consumer, so no one
        # else gets them before reclaim_after; the next take returns them first.
        self._read_late: list[tuple[str, bytes, Any]] = []
        self._cancel_callbacks: list[Callable[[str], None]] = []
        self._heartbeat: Callable[[], WorkerHeartbeat] | None = None

    # ------------------------------------------------------------ plumbing

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, retried with backoff while Redis does not answer."""
        delay = _RETRY_FIRST
        while True:
            try:
                if not self._ready:
                    await self._create_groups()
                result = await call()
            except redis_errors.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # Redis restarted without its data: make the groups again, then retry.
                log.warning("redis_groups_missing", during=what)
                self._ready = False
                continue
            except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
                if self._unreachable_since is None:
                    self._unreachable_since = time.monotonic()
                    log.warning(
                        "redis_unreachable", url=safe_url(self.url), during=what, error=str(exc)
                    )
                self._ready = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)
                continue
            if self._unreachable_since is not None:
                log.info(
                    "redis_back",
                    url=safe_url(self.url),
                    after_seconds=round(time.monotonic() - self._unreachable_since, 1),
                )
                self._unreachable_since = None
            return result

    async def check(self) -> None:
        """ConfigError now for what waiting for Redis will not mend: credentials it
        refuses, a certificate the CA did not sign. Unreachable is waited out later."""
        try:
            async with asyncio.timeout(CHECK_LIMIT):
                await self._redis.ping()
        except redis_errors.AuthenticationError as exc:
            raise ConfigError(
                f"Redis at {safe_url(self.url)} refused the password ({exc}): check "
                f"queue.password_file (--queue-password-file), {PASSWORD_VARIABLE} or the URL"
            ) from exc
        except (*_UNREACHABLE, TimeoutError) as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise ConfigError(
                    f"Redis at {safe_url(self.url)} showed a certificate that is not trusted "
                    f"({exc}): give the CA that signed it, queue.tls_ca_file (--queue-ca)"
                ) from exc
            log.warning("redis_unreachable", url=safe_url(self.url), during="start", error=str(exc))

    async def _create_groups(self) -> None:
        """The consumer groups, made once (a Redis that restarted empty needs them again)."""
        streams = [(tasks_stream(t), WORKER_GROUP) for t in TIERS] + [(MESSAGES, SERVICE_GROUP)]
        for stream, group in streams:
            try:
                await self._redis.xgroup_create(stream, group, id="0", mkstream=True)
            except redis_errors.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._ready = True

    async def close(self) -> None:
        await self._background.close()
        await self._redis.aclose()

    # ------------------------------------------------------------ the service's side

    async def put_task(self, task: Task) -> None:
        await self.put_tasks([task])

    async def put_tasks(self, tasks: list[Task], turn: Turn = NO_TURN) -> None:
        """Queue tasks in one round trip (a pipeline, not a transaction); a tier's stream
        is taken in the order it came, whatever the turn."""
        if not tasks:
            return

        async def send() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for task in tasks:
                entry = {"task": task.model_dump_json()}
                pipe.xadd(tasks_stream(task.tier), entry, maxlen=MAX_ENTRIES, approximate=True)
            return await pipe.execute()

        entries = await self._call("put_tasks", send)
        for task, entry in zip(tasks, entries, strict=True):
            self._queued[task.key] = (tasks_stream(task.tier), entry)

    async def next_message(self) -> WorkerMessage:
        while not self._buffer:
            if self._to_ack:
                acked, self._to_ack = self._to_ack, []
                await self._call(
                    "ack", lambda acked=acked: self._ack(MESSAGES, SERVICE_GROUP, acked)
                )
            start = "0" if self._read_pending else ">"
            read = await self._call(
                "next_message",
                lambda start=start: self._redis.xreadgroup(
                    SERVICE_GROUP, self.consumer, {MESSAGES: start}, count=100, block=BLOCK_MS
                ),
            )
            entries = read[0][1] if read else []
            if self._read_pending and not entries:
                self._read_pending = False
            for entry_id, fields in entries:
                self._read_up_to = max(self._read_up_to, _entry_order(entry_id))
                message = self._parse(entry_id, fields)
                if message is not None:
                    self._buffer.append((entry_id, message))
            if self._read_pending:
                # Pending entries come back every time until acked: ack what was read.
                self._to_ack.extend(entry_id for entry_id, _ in entries)
        entry_id, message = self._buffer.pop(0)
        if not self._read_pending:
            self._handed.append(entry_id)
        self._queued.pop(f"{message.run_id}/{message.node_id}/{message.attempt}", None)
        return message

    def has_buffered_messages(self) -> bool:
        return bool(self._buffer)

    async def messages_handled(self) -> None:
        """Acknowledge what was handed out: its changes are on disk. Until then a message
        stays pending, and a service killed before writing what it changed reads it
        again when it starts (handling one twice changes nothing: results are matched
        to their attempt)."""
        self._to_ack.extend(self._handed)
        self._handed = []

    def _parse(self, entry_id: bytes, fields: dict[bytes, bytes] | None) -> WorkerMessage | None:
        """A worker message; heartbeats are kept here (the live workers) and not passed on."""
        if not fields:  # deleted meanwhile
            self._to_ack.append(entry_id)
            return None
        try:
            data = json.loads(fields[b"message"])
            if data.get("kind") == "heartbeat":
                heartbeat = WorkerHeartbeat.model_validate(data)
                self._workers[heartbeat.worker_id] = (heartbeat, time.monotonic())
                self._to_ack.append(entry_id)
                return None
            return _messages.validate_python(data)
        except (KeyError, ValueError) as exc:  # json's and pydantic's errors are ValueErrors
            # Not ours (another version, or a stray writer): skipped, never fatal.
            log.error("queue_message_unreadable", entry=entry_id.decode(), error=str(exc)[:500])
            self._to_ack.append(entry_id)
            return None

    def live_workers(self) -> list[WorkerHeartbeat]:
        """Workers heard from within ``reclaim_after`` seconds."""
        now = time.monotonic()
        return [hb for hb, seen in self._workers.values() if now - seen < self.reclaim_after]

    def offered_tiers(self) -> frozenset[str]:
        return frozenset(t for hb in self.live_workers() for t in hb.tiers)

    def slots_for(self, tier: str) -> int:
        return sum(hb.slots for hb in self.live_workers() if tier in hb.tiers)

    def drop_run(self, run_id: str, *, cancel: bool = False) -> int:
        queued = [key for key in self._queued if key.startswith(run_id + "/")]
        entries = [self._queued.pop(key) for key in queued]

        async def drop() -> None:
            for stream, entry in entries:
                await self._call("drop_run", lambda s=stream, e=entry: self._redis.xdel(s, e))
            if cancel:
                body = CancelRun(run_id=run_id).model_dump_json()
                await self._call(
                    "cancel",
                    lambda: self._redis.xadd(
                        CANCELS, {"message": body}, maxlen=10_000, approximate=True
                    ),
                )

        self._background.spawn(drop(), f"drop-{run_id}")
        return len(entries)

    # ------------------------------------------------------------ a worker's side

    def register_worker(
        self,
        worker: str,
        tiers: frozenset[str],
        heartbeat: Callable[[], WorkerHeartbeat] | None = None,
    ) -> None:
        """Start heartbeating (which also keeps this worker's tasks its own) and hearing cancels."""
        self._heartbeat = heartbeat or (
            lambda: WorkerHeartbeat(worker_id=worker, name=worker, tiers=sorted(tiers))
        )
        self._background.spawn(self._heartbeat_loop(), f"heartbeat-{worker}")
        self._background.spawn(self._cancel_loop(), f"cancels-{worker}")

    async def unregister_worker(self, worker: str) -> None:
        self._background.cancel(f"heartbeat-{worker}")
        self._background.cancel(f"cancels-{worker}")
        # Unreachable Redis: the entry goes stale and the service sees the worker as dead.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(UNREGISTER_LIMIT):
                await self._call("unregister", lambda: self._redis.hdel(WORKERS, worker))

    def on_cancel(self, callback: Callable[[str], None]) -> None:
        self._cancel_callbacks.append(callback)

    async def take_task(self, tiers: frozenset[str]) -> Task:
        while True:
            wanted = {tasks_stream(t) for t in tiers}
            for late in [e for e in self._read_late if e[0] in wanted]:
                self._read_late.remove(late)
                task = await self._hold(*late)
                if task is not None:
                    return task
            for tier in sorted(tiers):
                task = await self._reclaim(tasks_stream(tier))
                if task is not None:
                    return task
            streams = {tasks_stream(t): ">" for t in sorted(tiers)}
            reading = asyncio.ensure_future(
                self._call(
                    "take_task",
                    lambda streams=streams: self._redis.xreadgroup(
                        WORKER_GROUP, self.consumer, streams, count=1, block=BLOCK_MS
                    ),
                )
            )
            try:
                # A take is cancelled when the worker's capacity changes; Redis may
                # have delivered an entry by then, which must not wait for reclaim.
                read = await asyncio.shield(reading)
            except asyncio.CancelledError:
                reading.add_done_callback(self._keep_late_read)
                raise
            for stream, entries in read or []:
                for entry_id, fields in entries:
                    task = await self._hold(stream.decode(), entry_id, fields)
                    if task is not None:
                        return task

    def _keep_late_read(self, reading: asyncio.Future[Any]) -> None:
        if reading.cancelled() or reading.exception() is not None:
            return
        for stream, entries in reading.result() or []:
            for entry_id, fields in entries:
                self._read_late.append((stream.decode(), entry_id, fields))

    async def _reclaim(self, stream: str) -> Task | None:
        """A task of this stream whose worker went silent, taken over (``XAUTOCLAIM``).

        Follows XAUTOCLAIM's cursor: one call looks at ten pending entries at most,
        and the first ten may all be live workers' tasks.
        """
        cursor: bytes | str = "0-0"
        while True:
            claimed = await self._call(
                "reclaim",
                lambda cursor=cursor: self._redis.xautoclaim(
                    stream,
                    WORKER_GROUP,
                    self.consumer,
                    min_idle_time=int(self.reclaim_after * 1000),
                    start_id=cursor,
                    count=1,
                ),
            )
            if not claimed:
                return None
            for entry_id, fields in claimed[1]:
                # No await between holding a task and returning it: a take cancelled
                # there (the worker's capacity changed) would lose the task, held
                # and touched by heartbeats but run by no one.
                task = await self._hold(stream, entry_id, fields)
                if task is not None:
                    self._background.spawn(self._say_reclaimed(task), "reclaim-log")
                    return task
            cursor = claimed[0]
            if cursor in (b"0-0", "0-0"):
                return None

    async def _say_reclaimed(self, task: Task) -> None:
        log.warning(
            "task_reclaimed", run_id=task.run_id, node_id=task.node_id, attempt=task.attempt
        )
        record = LogRecord(
            message=f"attempt {task.attempt}: its worker was silent for over "
            f"{self.reclaim_after:g} s; worker {self._name()} runs it again (not "
            "counted against MaxAttempts)",
            level="warning",
            attempt=task.attempt,
        )
        await self.put_message(
            AttemptLog(
                run_id=task.run_id,
                node_id=task.node_id,
                attempt=task.attempt,
                item=task.item,
                record=record,
            )
        )

    async def _hold(self, stream: str, entry_id: bytes, fields: Any) -> Task | None:
        """The entry's task, now this worker's (awaits only for a deleted entry)."""
        if not fields:  # deleted (its run ended) after it was delivered
            await self._call("ack", lambda: self._ack(stream, WORKER_GROUP, [entry_id]))
            return None
        task = Task.model_validate_json(fields[b"task"])
        self._held[task.key] = (stream, entry_id)
        return task

    def _name(self) -> str:
        return self._heartbeat().name if self._heartbeat is not None else self.consumer

    async def task_done(self, task: Task) -> None:
        held = self._held.pop(task.key, None)
        if held is not None:
            stream, entry_id = held
            await self._call("task_done", lambda: self._ack(stream, WORKER_GROUP, [entry_id]))

    async def put_message(self, message: Any) -> None:
        body = message.model_dump_json()
        await self._call(
            "put_message",
            lambda: self._redis.xadd(
                MESSAGES, {"message": body}, maxlen=MAX_ENTRIES, approximate=True
            ),
        )

    async def _heartbeat_loop(self) -> None:
        assert self._heartbeat is not None
        every = self.heartbeat_every
        while True:
            beat = self._heartbeat().model_copy(update={"sent_at": time.time()})
            await self.put_message(beat)
            await self._call(
                "heartbeat",
                lambda beat=beat: self._redis.hset(WORKERS, beat.worker_id, beat.model_dump_json()),
            )
            # The tasks held here stay ours: touching resets their idle time.
            for stream, entry_id in list(self._held.values()):
                await self._call(
                    "touch",
                    lambda s=stream, e=entry_id: self._redis.xclaim(
                        s, WORKER_GROUP, self.consumer, 0, [e], justid=True
                    ),
                )
            await asyncio.sleep(every)

    async def queued_keys(self) -> set[str]:
        """Every task still in a tier's stream: waiting, or held by a worker (acked ones are
        deleted). Read when the service starts; they can be dropped if their run ends."""
        held: set[str] = set()
        for tier in TIERS:
            stream = tasks_stream(tier)
            entries = await self._call("queued_keys", lambda s=stream: self._redis.xrange(s))
            for entry_id, fields in entries:
                if fields:
                    task = Task.model_validate_json(fields[b"task"])
                    self._queued[task.key] = (stream, entry_id)
                    held.update(task.attempt_keys())  # a batch holds each of its items
        return set(self._queued) | held

    def waiting_in_turn(self, tier: str, priority: int, tenant: str) -> int:
        raise NotImplementedError("a Redis stream is taken in the order it came, not in turn")

    async def waiting(self) -> dict[str, int]:
        """Tasks no worker has taken yet, per tier: a stream's entries less those
        delivered and not yet acknowledged (acknowledged ones are deleted), in one trip."""

        def count() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for tier in TIERS:
                pipe.xlen(tasks_stream(tier))
                pipe.xinfo_groups(tasks_stream(tier))
            return pipe.execute()

        answers = await self._call("waiting", count)
        waiting = {}
        for number, tier in enumerate(TIERS):
            length, groups = answers[2 * number], answers[2 * number + 1]
            taken = sum(g["pending"] for g in groups if g.get("name") == WORKER_GROUP.encode())
            if length - taken > 0:
                waiting[tier] = length - taken
        return waiting

    async def unaccounted(self, keys: Collection[str]) -> tuple[set[str], bool]:
        """Of the attempts ``keys``, those in no tier's stream and on no live worker (by
        its latest heartbeat); and whether every message there was at the previous look
        is read and handed out since (a result, a heartbeat that would have found them).
        One round trip: the streams hold what waits and what runs only."""

        def look() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            pipe.xrevrange(MESSAGES, count=1)
            for tier in TIERS:
                pipe.xrange(tasks_stream(tier))
            return pipe.execute()

        last, *streams = await self._call("unaccounted", look)
        horizon, self._horizon = self._horizon, _entry_order(last[0][0]) if last else (0, 0)
        unread = self._buffer and _entry_order(self._buffer[0][0]) <= horizon
        caught_up = self._read_up_to >= horizon and not unread
        found = {key for hb in self.live_workers() for key in (*hb.running, *hb.held)}
        for entries in streams:
            for _entry_id, fields in entries:
                if fields:
                    found.update(Task.model_validate_json(fields[b"task"]).attempt_keys())
        return set(keys) - found, caught_up

    async def describe(self) -> dict[str, Any]:
        """The live workers and the tasks waiting per tier (``GET /api/v1/workers``)."""
        queued: dict[str, int] = {}
        for tier in TIERS:
            groups = await self._call(
                "describe", lambda tier=tier: self._redis.xinfo_groups(tasks_stream(tier))
            )
            lag = sum(g.get("lag") or 0 for g in groups if g.get("name") == WORKER_GROUP.encode())
            if lag:
                queued[tier] = lag
        return {"workers": [worker_view(b) for b in self.live_workers()], "queued": queued}

    async def dead_workers(self) -> set[str]:
        """Workers whose last heartbeat is over twice ``reclaim_after`` old."""
        beats = await self._call("dead_workers", lambda: self._redis.hgetall(WORKERS))
        cutoff = time.time() - 2 * self.reclaim_after
        return {
            worker_id.decode()
            for worker_id, body in beats.items()
            if WorkerHeartbeat.model_validate_json(body).sent_at < cutoff
        }

    async def _cancel_loop(self) -> None:
        last = "$"
        while True:
            read = await self._call(
                "cancels", lambda last=last: self._redis.xread({CANCELS: last}, block=BLOCK_MS)
            )
            for _stream, entries in read or []:
                for entry_id, fields in entries:
                    last = entry_id
                    run_id = CancelRun.model_validate_json(fields[b"message"]).run_id
                    for callback in self._cancel_callbacks:
                        callback(run_id)

    async def _ack(self, stream: str, group: str, entry_ids: list[bytes]) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(stream, group, *entry_ids)
            pipe.xdel(stream, *entry_ids)
            await pipe.execute()


def _entry_order(entry_id: bytes) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition(b"-")
    return int(milliseconds), int(sequence or 0)


__all__ = ["RedisQueue", "tasks_stream"]
