"""A worker: takes tasks for the tiers it offers and runs them within its capacity.

Capacity model: each running container reserves its tier's memory from the
worker's memory; CPU limits cap each container but are not reserved (parallel
nodes share the cores); at most ``max_parallel`` containers run at once. A batch
(items of one mapped node run one after another, ``Task.batch``) is one task: one
slot, its tier's memory once.

While its Docker engine does not answer, a worker takes no tasks: it pings the
engine with backoff, and once the engine is back it removes what the outage
left behind (containers, attempt directories) and takes tasks again.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

import docker
import structlog

from orchestrator.config import Settings, WorkerSettings
from orchestrator.executor import Cleanup, DockerExecutor, Emit, Executor
from orchestrator.identity import WorkerIdentity
from orchestrator.messages import (
    AttemptCleanedUp,
    AttemptLog,
    AttemptResult,
    AttemptStarted,
    Task,
    WorkerHeartbeat,
    WorkerMessage,
    attempt_key,
)
from orchestrator.models import LogRecord
from orchestrator.queue import TaskQueue, open_queue
from orchestrator.tiers import TIERS

log = structlog.get_logger(__name__)
#: Seconds /healthz waits for the Docker engine's answer.
HEALTH_PING_LIMIT = 3.0

#: Seconds between pings of an unreachable Docker engine: doubling, up to the second.
ENGINE_RETRY_FIRST = 0.5
ENGINE_RETRY_MAX = 10.0
#: Seconds before taking again once the queue failed a take (a fault that may last).
TAKE_RETRY = 1.0


class Capacity:
    """Memory and container slots, reserved per running task.

    Only the take loop reserves, and only what fits now (``fitting``), so a
    reservation never waits: a task too big for the free memory is not taken
    at all, and never holds up the smaller ones behind it.
    """

    def __init__(self, memory: int, slots: int) -> None:
        self.memory = memory
        self.slots = slots
        self.used_memory = 0
        self.used_slots = 0
        self._next_release = asyncio.Event()

    def fitting(self, tiers: frozenset[str]) -> frozenset[str]:
        """The tiers of ``tiers`` a task of which could start now."""
        if self.used_slots >= self.slots:
            return frozenset()
        free = self.memory - self.used_memory
        return frozenset(t for t in tiers if TIERS[t].memory <= free)

    def next_release(self) -> asyncio.Event:
        """An event set when a running task next gives its share back.

        Taken at once, with ``fitting``: a release in between cannot be missed.
        """
        return self._next_release

    def reserve(self, memory: int) -> None:
        if self.used_slots >= self.slots or self.used_memory + memory > self.memory:
            raise RuntimeError("reserved beyond capacity: take only what fitting() allows")
        self.used_memory += memory
        self.used_slots += 1

    def release(self, memory: int) -> None:
        self.used_memory -= memory
        self.used_slots -= 1
        self._next_release.set()
        self._next_release = asyncio.Event()


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        queue: TaskQueue,
        executor: Executor,
        *,
        sweep_every: float = 30.0,
    ):
        self.name = settings.resolved_name()
        # Unique where the name is not (orchestrator.identity): what the queue knows us by.
        self.id = executor.worker_id
        self.queue = queue
        self.executor = executor
        self.tiers = frozenset(t.name for t in settings.offered_tiers())
        self.capacity = Capacity(settings.resolved_memory(), settings.resolved_max_parallel())
        # Each attempt holds one thread for its whole life (blocking Docker/HTTP calls);
        # a slot is free again before its container's removal, which needs one too.
        self._pool = ThreadPoolExecutor(self.capacity.slots * 2, thread_name_prefix="pipewell-exec")
        self._running: set[asyncio.Task[None]] = set()
        self._attempts: set[str] = set()  # Task.key of the attempts running here
        # Task.key of batch items taken whose turn has not come (running, they go above).
        self._held_items: set[str] = set()
        self._closing = False
        self._loop_task: asyncio.Task[None] | None = None
        # One ordered outbox: log lines of an attempt always precede its result.
        # A Task in it is a mark: the messages before it are sent, the task is done.
        self._outbox: asyncio.Queue[WorkerMessage | Task] = asyncio.Queue()
        self._sender_task: asyncio.Task[None] | None = None
        # Set while the Docker engine answers; tasks are taken only then.
        self._engine_ok = asyncio.Event()
        self._engine_ok.set()
        self._engine_problem: str | None = None
        self._engine_task: asyncio.Task[None] | None = None
        self._sweep_task: asyncio.Task[None] | None = None
        self._sweep_every = sweep_every
        # The one ping in flight (a hung engine must not gather a thread per check).
        self._ping: asyncio.Future[str | None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        removed = await loop.run_in_executor(self._pool, self.executor.remove_leftovers)
        if removed:
            log.info("removed_leftover_containers", count=removed, worker=self.name)
        self.executor.open()
        self.queue.register_worker(self.id, self.tiers, self.heartbeat)
        self.queue.on_cancel(self._cancel_run)
        self._loop_task = asyncio.create_task(self._take_loop(), name=f"worker-{self.name}")
        self._sender_task = asyncio.create_task(self._send_loop(), name=f"sender-{self.name}")
        self._sweep_task = asyncio.create_task(self._sweep_loop(), name=f"sweep-{self.name}")
        log.info(
            "worker_started",
            worker=self.name,
            worker_id=self.id,
            tiers=sorted(self.tiers),
            memory_mib=self.capacity.memory // 2**20,
            slots=self.capacity.slots,
            launch=self.executor.launch,
        )

    def heartbeat(self) -> WorkerHeartbeat:
        """What this worker offers and holds now (sent to the service by the queue)."""
        return WorkerHeartbeat(
            worker_id=self.id,
            name=self.name,
            tiers=sorted(self.tiers),
            memory=self.capacity.memory,
            slots=self.capacity.slots,
            running=sorted(self._attempts),
            held=sorted(self._held_items),
            launch=self.executor.launch,
            spares=self.executor.spares(),
        )

    async def close(self, grace: float = 10.0) -> None:
        """Stop taking tasks, give running attempts ``grace`` seconds, then abandon them.

        Abandoned containers are removed by the next start (``remove_leftovers``)
        and their nodes are re-dispatched by the scheduler when it resumes. An
        attempt that fails meanwhile is not reported either: with the service
        going down its output has nowhere to go, and that is not the node's fault.
        """
        self._closing = True
        await self.queue.unregister_worker(self.id)
        for background in (self._loop_task, self._engine_task, self._sweep_task):
            if background is not None:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
        if self._running:
            await asyncio.wait(self._running, timeout=grace)
        if self._running:
            loop = asyncio.get_running_loop()
            killed = await loop.run_in_executor(None, self.executor.abort_all)
            log.info("worker_aborted_attempts", killed=killed, worker=self.name)
            await asyncio.wait(self._running, timeout=grace)
        for task in self._running:
            task.cancel()
        loop = asyncio.get_running_loop()
        # Stops making spares, waits for one being made, removes them all.
        removing = loop.run_in_executor(None, self.executor.close)
        try:
            await asyncio.wait_for(asyncio.shield(removing), grace)
        except TimeoutError:  # their deadline, or the next start, removes them
            log.warning("warm_containers_left", worker=self.name)
        if self._sender_task is not None:
            self._sender_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender_task
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def engine_problem(self) -> str | None:
        """None while the Docker engine answers (asked now), else what is wrong with it.

        An engine that takes over HEALTH_PING_LIMIT to answer is reported as such,
        without waiting for its answer (up to ``executor.docker_timeout``); slow is
        not down, so tasks are still taken.
        """
        if self._engine_problem is None:
            if self._ping is None or self._ping.done():
                loop = asyncio.get_running_loop()
                self._ping = loop.run_in_executor(None, self.executor.ping)
            try:
                problem = await asyncio.wait_for(asyncio.shield(self._ping), HEALTH_PING_LIMIT)
            except TimeoutError:
                return f"no answer within {HEALTH_PING_LIMIT:g} s"
            if problem is not None:
                self._engine_down(problem)
        return self._engine_problem

    def _engine_down(self, problem: str) -> None:
        """Stop taking tasks until the engine answers again (:meth:`_await_engine`)."""
        self._engine_problem = problem
        if self._engine_ok.is_set() and not self._closing:
            self._engine_ok.clear()
            log.warning("docker_engine_unreachable", worker=self.name, problem=problem)
            self._engine_task = asyncio.create_task(self._await_engine())

    async def _await_engine(self) -> None:
        loop = asyncio.get_running_loop()
        delay = ENGINE_RETRY_FIRST
        # Pings, then removes the outage's leftovers before any task is taken.
        while (problem := await loop.run_in_executor(None, self.executor.reconnect)) is not None:
            self._engine_problem = problem
            await asyncio.sleep(delay)
            delay = min(delay * 2, ENGINE_RETRY_MAX)
        self._engine_problem = None
        self._engine_ok.set()

    async def _take_loop(self) -> None:
        while True:
            await self._engine_ok.wait()
            try:
                task = await self._take_fitting()
            except Exception:  # a queue fault must not stop this worker for good
                log.exception("take_failed", worker=self.name)
                await asyncio.sleep(TAKE_RETRY)
                continue
            if task is None:
                continue
            # Taken while the engine went away: it would only be lost again.
            await self._engine_ok.wait()
            memory = TIERS[task.tier].memory
            self.capacity.reserve(memory)
            execute = self._execute_batch if task.batch else self._execute
            running = asyncio.create_task(execute(task, memory))
            self._running.add(running)
            running.add_done_callback(self._running.discard)

    async def _take_fitting(self) -> Task | None:
        """A task of a tier that fits the free capacity now; None when capacity changed first.

        Asks only for tiers that fit, so the queue keeps the others for workers
        (or moments) that can hold them.
        """
        fitting = self.capacity.fitting(self.tiers)
        released = asyncio.create_task(self.capacity.next_release().wait())
        if not fitting:
            await released
            return None
        take = asyncio.create_task(self.queue.take_task(fitting))
        try:
            while True:
                await asyncio.wait({take, released}, return_when=asyncio.FIRST_COMPLETED)
                if take.done() or self.capacity.fitting(self.tiers) != fitting:
                    break
                # A release that lets no other tier fit: the take in flight stands
                # (cancelling one may leave its task read but unrun).
                released = asyncio.create_task(self.capacity.next_release().wait())
        finally:
            released.cancel()
            if not take.done():
                take.cancel()
        # A take that completed just as it was cancelled still holds its task: keep it.
        try:
            return await take
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise
            return None

    async def _sweep_loop(self) -> None:
        """Remove what dead workers on this Docker engine left: containers, expired spares."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._sweep_every)
            try:
                await loop.run_in_executor(self._pool, self.executor.remove_expired_spares)
                dead = await self.queue.dead_workers()
                if dead:
                    removed = await loop.run_in_executor(
                        self._pool, self.executor.remove_containers_of, dead
                    )
                    if removed:
                        log.info(
                            "removed_dead_workers_containers", count=removed, workers=sorted(dead)
                        )
            except Exception:  # the sweep must go on: a failure here only delays clean-up
                log.exception("sweep_failed", worker=self.name)

    def _cancel_run(self, run_id: str) -> None:
        """The run ended: kill its containers here (their results are moot).

        Also with no attempt of it in hand yet: one taken from the queue may
        still be waiting for capacity, and the executor then refuses to start it.
        """
        loop = asyncio.get_running_loop()
        loop.run_in_executor(None, self.executor.kill_run, run_id)

    async def _send_loop(self) -> None:
        # Attempts whose result the queue refused: their task is not marked done, so a
        # durable queue hands it out again (reclaim) instead of the node waiting for
        # ever on a result nobody will send. Keyed as Task.key: items of one node apart.
        unsent: set[str] = set()
        while True:
            entry = await self._outbox.get()
            key = attempt_key(entry.run_id, entry.node_id, entry.attempt, entry.item)
            try:
                if isinstance(entry, Task):
                    # A batch is done only once every item's result is out.
                    refused = [k for k in entry.attempt_keys() if k in unsent]
                    if refused:
                        unsent.difference_update(refused)
                        log.warning(
                            "task_left_for_reclaim",
                            run_id=entry.run_id,
                            node=entry.node_id,
                            item=entry.item,
                            results_lost=len(refused),
                        )
                        continue
                    await self.queue.task_done(entry)
                else:
                    await self.queue.put_message(entry)
            except Exception:
                log.exception("worker_message_lost", kind=entry.kind, run_id=entry.run_id)
                if isinstance(entry, AttemptResult):
                    unsent.add(key)

    async def _run(self, task: Task, emit: Emit) -> tuple[AttemptResult, Callable[[], float]]:
        """The executor's result; an executor that raises fails the attempt, saying so."""
        try:
            # The executor's thread logs with the attempt's bound context too.
            in_context = contextvars.copy_context().run
            return await asyncio.get_running_loop().run_in_executor(
                self._pool, in_context, self.executor.run, task, emit
            )
        except Exception as exc:  # the executor's contract is to never raise: a bug
            log.exception("executor_raised", run_id=task.run_id, node_id=task.node_id)
            error = f"internal error in the worker: {type(exc).__name__}: {exc}"
            return AttemptResult.of(task, ok=False, error=error), lambda: 0.0

    async def _execute(self, task: Task, memory: int) -> None:
        loop = asyncio.get_running_loop()
        # This task's own context: every line logged for the attempt carries them.
        structlog.contextvars.bind_contextvars(
            run_id=task.run_id, node_id=task.node_id, attempt=task.attempt
        )
        if task.item is not None:
            structlog.contextvars.bind_contextvars(item=task.item)

        def emit(record: LogRecord) -> None:
            message = AttemptLog(
                run_id=task.run_id,
                node_id=task.node_id,
                attempt=task.attempt,
                item=task.item,
                record=record,
            )
            loop.call_soon_threadsafe(self._outbox.put_nowait, message)

        self._attempts.add(task.key)
        released = False
        try:
            self._outbox.put_nowait(
                AttemptStarted(
                    run_id=task.run_id,
                    node_id=task.node_id,
                    attempt=task.attempt,
                    item=task.item,
                    worker=self.name,
                )
            )
            result, cleanup = await self._run(task, emit)
            if result.engine_down:
                # Before the result goes out: the scheduler queues the node again at once.
                self._engine_down(result.error)
            if self._closing and not result.ok:
                # Most likely the shutdown itself (the service no longer takes the
                # output, or the container was killed): not the node's failure. The
                # scheduler runs the node again when it resumes.
                log.info(
                    "attempt_abandoned",
                    run_id=task.run_id,
                    node_id=task.node_id,
                    attempt=task.attempt,
                    item=task.item,
                    error=result.error,
                )
            else:
                self._outbox.put_nowait(result)
                # Only once its result is out may the queue forget the task.
                self._outbox.put_nowait(task)
            self._attempts.discard(task.key)
            # The container has exited: its slot and memory are free while it is removed.
            self.capacity.release(memory)
            released = True
            remove_seconds = await loop.run_in_executor(
                self._pool, contextvars.copy_context().run, cleanup
            )
            self._outbox.put_nowait(
                AttemptCleanedUp(
                    run_id=task.run_id,
                    node_id=task.node_id,
                    attempt=task.attempt,
                    item=task.item,
                    remove_seconds=round(remove_seconds, 4),
                )
            )
        finally:
            self._attempts.discard(task.key)
            if not released:
                self.capacity.release(memory)

    async def _execute_batch(self, task: Task, memory: int) -> None:
        """A batch's items, one after another in its one slot, each reported as a lone
        item's attempt is: started, its lines, its result (as soon as it has ended), and
        once the batch's containers are gone, its removal. The batch's task is done once
        every item's result is out; an item not run or not reported (the worker closing)
        leaves it undone, to run again."""
        loop = asyncio.get_running_loop()
        assert task.batch
        structlog.contextvars.bind_contextvars(
            run_id=task.run_id, node_id=task.node_id, items=len(task.batch)
        )
        begun: list[Task] = []
        finished: set[str] = set()  # Task.key of the items ended, reported or not
        reported: set[str] = set()

        def started(item: Task) -> None:
            begun.append(item)
            self._held_items.discard(item.key)
            self._attempts.add(item.key)
            self._outbox.put_nowait(
                AttemptStarted(
                    run_id=item.run_id,
                    node_id=item.node_id,
                    attempt=item.attempt,
                    item=item.item,
                    worker=self.name,
                )
            )

        def ended(result: AttemptResult) -> None:
            key = attempt_key(result.run_id, result.node_id, result.attempt, result.item)
            finished.add(key)
            self._attempts.discard(key)
            if result.engine_down:
                # Before the result goes out: the scheduler queues the item again at once.
                self._engine_down(result.error)
            if self._closing and not result.ok:
                log.info(  # as a lone attempt's (_execute): not the item's failure
                    "attempt_abandoned",
                    attempt=result.attempt,
                    item=result.item,
                    error=result.error,
                )
                return
            self._outbox.put_nowait(result)
            reported.add(key)

        def begin(item: Task) -> Emit | None:  # on the executor's thread
            if self._closing:
                return None  # the rest is left to run again
            loop.call_soon_threadsafe(started, item)

            def emit(record: LogRecord) -> None:
                message = AttemptLog(
                    run_id=item.run_id,
                    node_id=item.node_id,
                    attempt=item.attempt,
                    item=item.item,
                    record=record,
                )
                loop.call_soon_threadsafe(self._outbox.put_nowait, message)

            return emit

        def end(result: AttemptResult) -> None:  # on the executor's thread
            loop.call_soon_threadsafe(ended, result)

        released = False
        self._held_items.update(item.key for item in task.batch)
        try:
            cleanup, why = await self._run_batch(task, begin, end)
            # Whatever the executor began and ended, it did before it returned (one thread,
            # one ordered way into this loop); an item it left (a bug) fails here.
            for item in task.batch:
                if item.key in finished:
                    continue
                if all(b.key != item.key for b in begun):
                    if self._closing:
                        break
                    started(item)
                ended(_failed(item, f"internal error in the worker: {why}"))
            if all(item.key in reported for item in task.batch):
                # Only once every item's result is out may the queue forget the task.
                self._outbox.put_nowait(task)
            else:
                log.info("batch_left_to_run_again", reported=len(reported), items=len(task.batch))
            for item in begun:
                self._attempts.discard(item.key)
            # Its containers have exited: the slot and memory are free while they go.
            self.capacity.release(memory)
            released = True
            remove_seconds = await loop.run_in_executor(
                self._pool, contextvars.copy_context().run, cleanup
            )
            # One removal for the items of a container: each item its share.
            share = round(remove_seconds / max(1, len(begun)), 4)
            for item in begun:
                self._outbox.put_nowait(
                    AttemptCleanedUp(
                        run_id=item.run_id,
                        node_id=item.node_id,
                        attempt=item.attempt,
                        item=item.item,
                        remove_seconds=share,
                    )
                )
        finally:
            for item in task.batch:
                self._held_items.discard(item.key)
            for item in begun:
                self._attempts.discard(item.key)
            if not released:
                self.capacity.release(memory)

    async def _run_batch(
        self,
        task: Task,
        begin: Callable[[Task], Emit | None],
        end: Callable[[AttemptResult], None],
    ) -> tuple[Cleanup, str]:
        """The executor's cleanup of a batch, and why an item it did not end (a bug) fails:
        :meth:`_execute_batch` fails those."""
        try:
            in_context = contextvars.copy_context().run
            cleanup = await asyncio.get_running_loop().run_in_executor(
                self._pool, in_context, self.executor.run_batch, task, begin, end
            )
        except Exception as exc:  # the executor's contract is to never raise: a bug
            log.exception("executor_raised", run_id=task.run_id, node_id=task.node_id)
            return (lambda: 0.0), f"{type(exc).__name__}: {exc}"
        return cleanup, "the executor ended the batch without it"


def _failed(task: Task, error: str) -> AttemptResult:
    return AttemptResult.of(task, ok=False, error=error)


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings, client: docker.DockerClient, queue: TaskQueue | None = None
) -> AsyncIterator[Worker]:
    """A worker of this data directory's identity on ``client``'s engine, until the block ends.

    ``queue``: the service's in-process queue; None connects to ``settings.queue.url``
    as this worker (a worker of ``pipewell worker``, or ``pipewell dev`` on Redis).
    """
    loop = asyncio.get_running_loop()
    # Unique to this data directory: only containers labelled with it are ever removed.
    identity = await loop.run_in_executor(None, WorkerIdentity, settings.data_dir)
    own_queue = None
    try:
        executor = DockerExecutor(
            client,
            settings.executor,
            settings.worker.resolved_name(),
            identity.id,
            settings.data_dir / "work",
        )
        if queue is None:
            queue = own_queue = open_queue(settings.queue, consumer=identity.id)
            await queue.check()
        worker = Worker(settings.worker, queue, executor, sweep_every=settings.queue.reclaim_after)
        await worker.start()
        try:
            yield worker
        finally:
            await worker.close()
    finally:
        if own_queue is not None:
            await own_queue.close()
        identity.close()


__all__ = ["Capacity", "Worker", "running_worker"]
