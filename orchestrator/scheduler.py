"""Drives runs: takes runs the service layer made ready, dispatches ready nodes, handles
results and retries, resumes after a restart. Nothing else: validating, planning and
reading runs are the service layer's (``orchestrator.service``).

The scheduler owns every unfinished run's ``RunState`` in memory, persists it
through ``StateStore`` after each change, and talks to workers only through
the queue. On start it resumes every unfinished run found in the state store.
Readers see a run it holds through ``live``, as a read-only ``LiveRun``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque
from typing import Any

import structlog

from orchestrator.background import Background
from orchestrator.command import split_exec
from orchestrator.config import Settings
from orchestrator.errors import (
    DataDirError,
    RunFinished,
)
from orchestrator.events import EventBus
from orchestrator.messages import (
    AttemptCleanedUp,
    AttemptLog,
    AttemptResult,
    AttemptStarted,
    Task,
    TaskInput,
    TaskOutput,
    WorkerMessage,
)
from orchestrator.metrics import OTHER_NODEDEFS, Metrics
from orchestrator.mime import extension_for
from orchestrator.models import (
    FlowRun,
    LogRecord,
    NodeDef,
    NodeStatus,
    RunStatus,
    WaitingURL,
    utcnow,
)
from orchestrator.queue import TaskQueue
from orchestrator.runtime import LiveRun, RunState, Transition
from orchestrator.state import StateStore
from orchestrator.stores import UPLOAD_GRACE, StoreCalls, StoreRegistry
from orchestrator.tiers import TIERS
from storage import Store, StoreError

log = structlog.get_logger(__name__)

FINISHED_RUNS_KEPT = 500
#: Attempts dispatched together: their URLs presigned in one trip to a store thread,
#: their tasks queued in one round trip. Runs take turns, a batch each.
DISPATCH_BATCH = 64
#: Nodes marked queued before the loop is let go to others, when many become ready at once.
DISPATCH_SLICE = 256


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        state: StateStore,
        queue: TaskQueue,
        events: EventBus,
        stores: StoreRegistry,
        calls: StoreCalls,
        catalog: dict[str, NodeDef],
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.state = state
        self.queue = queue
        self.events = events
        self.stores = stores
        self.calls = calls
        self.catalog = catalog
        self.runs: dict[str, RunState] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        # (store name, object key) → (run id, edge) for uploads still awaited.
        self._awaited: dict[tuple[str, str], tuple[str, str]] = {}
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        # run id → when to check the run's WaitingURLs that are about to expire unused.
        self._deadlines: dict[str, asyncio.TimerHandle] = {}
        # (run id, node id) → when its current attempt was queued (monotonic).
        self._queued_at: dict[tuple[str, str], float] = {}
        # Attempts marked queued whose tasks are still to be made and queued, per run
        # (run id → node, attempt, since when): the dispatch loop takes a batch of one
        # run at a time, in turns, so a 10,000-node run never holds back another's node
        # and no request waits for a run's dispatch.
        self._to_dispatch: OrderedDict[str, deque[tuple[str, int, float]]] = OrderedDict()
        self._dispatch_wanted = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Retries and deadlines started by timers: tracked, so none is lost or left behind.
        self._background = Background()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        # A durable queue (Redis) outlives the service: what it still holds runs as it is.
        in_queue = await self.queue.queued_keys()
        for snapshot in await self.state.unfinished():
            await self._resume(snapshot, in_queue)
        self._tasks = [
            asyncio.create_task(self._consume(), name="scheduler-consume"),
            asyncio.create_task(self._poll_uploads(), name="scheduler-poll-uploads"),
            asyncio.create_task(self._dispatch_loop(), name="scheduler-dispatch"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._background.close()
        for handle in [*self._timers.values(), *self._deadlines.values()]:
            handle.cancel()
        self._timers.clear()
        self._deadlines.clear()
        # A write that fails here is reported by StateStore.close, which tries once more.
        with contextlib.suppress(DataDirError):
            await asyncio.shield(self.state.flush())

    async def _io_call(self, fn, *args, store: Store | None = None):  # type: ignore[no-untyped-def]
        return await self.calls.call(fn, *args, store=store)

    # ------------------------------------------------------------ accepting runs

    async def accept(
        self, run: RunState, waiting: list[WaitingURL], *, arrived: list[str] | None = None
    ) -> FlowRun:
        """Take a run the service layer made ready: planned, its stores open, its
        WaitingURLs handed out (``waiting``) or its inputs written (``arrived``).

        Accepted only once on disk: a run answered 200 must survive a restart. Nothing
        is dispatched or awaited before: a refused run (DataDirError) leaves nothing
        running.
        """
        run.start(waiting)
        for edge in arrived or ():
            run.artifact_arrived(edge)
        await self.state.save_now(run.id, run)
        self.runs[run.id] = run
        self._await_uploads(run)
        log.info(
            "run_submitted",
            run_id=run.id,
            flow=run.flow.name,
            nodes=len(run.plan.order),
            uploads=len(waiting),
            inputs=len(arrived or ()),
        )
        await self._apply(run, Transition(dispatch=run.ready_nodes()))
        self._arm_upload_deadline(run)
        return run.run

    def live(self, run_id: str) -> LiveRun | None:
        """A run the scheduler holds, to read: running, or ended a moment ago."""
        return self.runs.get(run_id)

    def live_runs(self) -> int:
        """How many runs have not finished (every tenant's)."""
        return sum(1 for run in self.runs.values() if not run.status.finished)

    async def cancel(self, run_id: str) -> FlowRun | None:
        """Stop a run: STOPPED, queued tasks dropped, containers killed wherever they run.
        None for a run the scheduler no longer holds."""
        run = self.runs.get(run_id)
        if run is None:
            return None
        if run.status.finished:
            raise RunFinished(run.id, run.status.value)
        log.info("run_cancelled", run_id=run.id)
        await self._apply(run, run.cancel())
        return run.run

    async def object_written(self, store_name: str, key: str) -> None:
        """A local store received an object: maybe an upload a run waits for."""
        target = self._awaited.pop((store_name, key), None)
        if target is None:
            return
        run = self.runs.get(target[0])
        if run is not None:
            log.info("upload_received", run_id=run.id, edge=target[1])
            await self._apply(run, run.artifact_arrived(target[1]))

    def _store(self, run: RunState, store_name: str) -> Store:
        return self.stores.get(store_name, run.plan.submission.flow)

    def _await_uploads(self, run: RunState) -> None:
        for edge in run.pending_uploads():
            artifact = run.artifact_for(edge)
            self._awaited[(artifact.store_name, artifact.object_name)] = (run.id, edge)

    def _arm_upload_deadline(self, run: RunState) -> None:
        """Wake when the first of the run's WaitingURLs still awaited expires.

        The TTLs are in the persisted FlowRun, so a resumed run is armed again
        (at once when its URLs expired while the service was down).
        """
        previous = self._deadlines.pop(run.id, None)
        if previous is not None:
            previous.cancel()
        pending = set(run.pending_uploads())
        ttls = [w.ttl for w in run.run.waiting_urls if w.artifact.edge_name in pending]
        if not ttls or run.status.finished:
            return
        delay = max(0.0, (min(ttls) - utcnow()).total_seconds()) + UPLOAD_GRACE
        spawn, name = self._background.spawn, f"uploads-due-{run.id}"
        self._deadlines[run.id] = asyncio.get_running_loop().call_later(
            delay, lambda: spawn(self._uploads_due(run.id), name)
        )

    async def _uploads_due(self, run_id: str) -> None:
        """End the run if an input's WaitingURL expired before its bytes came."""
        self._deadlines.pop(run_id, None)
        run = self.runs.get(run_id)
        if run is None or run.status.finished:
            return
        now = utcnow()
        due = {
            w.artifact.edge_name: w.ttl
            for w in run.run.waiting_urls
            if w.ttl <= now and w.artifact.edge_name in run.pending_uploads()
        }
        for edge in due:
            # An upload that landed in time may not have been polled yet (S3): ask.
            artifact = run.artifact_for(edge)
            try:
                store = self._store(run, artifact.store_name)
            except StoreError as exc:
                log.warning("upload_check_failed", store=artifact.store_name, error=str(exc))
                continue
            await self._check_upload(store, artifact.store_name, artifact.object_name)
        if not run.status.finished:
            late = {edge: ttl for edge, ttl in due.items() if edge in run.pending_uploads()}
            if late:
                log.warning("uploads_expired", run_id=run.id, edges=sorted(late))
                await self._apply(run, run.uploads_expired(late))
        self._arm_upload_deadline(run)

    async def _poll_uploads(self) -> None:
        """Stores that cannot tell us about uploads (S3) are checked periodically."""
        while True:
            await asyncio.sleep(self.settings.storage.poll_interval)
            for (store_name, key), (run_id, _edge) in list(self._awaited.items()):
                run = self.runs.get(run_id)
                if run is None or run.status.finished:
                    self._awaited.pop((store_name, key), None)
                    continue
                store = self._store(run, store_name)
                if not self.stores.notifies(store):
                    await self._check_upload(store, store_name, key)

    async def _check_upload(self, store: Store, store_name: str, key: str) -> None:
        try:
            present = await self._io_call(store.exists, key, store=store)
        except Exception as exc:  # a store outage must not stop the poller
            log.warning("upload_check_failed", store=store_name, error=str(exc))
            return
        if present:
            await self.object_written(store_name, key)

    # ------------------------------------------------------------ dispatch

    async def _apply(self, run: RunState, transition: Transition) -> None:
        for number, node_id in enumerate(transition.dispatch, 1):
            if run.state(node_id).status == NodeStatus.IDLE:  # not dispatched meanwhile
                self._dispatch(run, node_id)
            if number % DISPATCH_SLICE == 0:
                await asyncio.sleep(0)  # 10,000 nodes made ready at once: in slices
        if run.status.finished:
            self._finish(run)
        self._save(run)

    def _dispatch(self, run: RunState, node_id: str, *, again: bool = False) -> None:
        """Mark the node's next attempt queued (its current one again, after a restart)
        and leave its task to the dispatch loop."""
        if run.status.finished:
            return
        attempt = run.redispatched(node_id) if again else run.dispatched(node_id)
        self._warn_if_no_worker(run, node_id)
        waiting = self._to_dispatch.setdefault(run.id, deque())
        waiting.append((node_id, attempt, time.perf_counter()))
        self._dispatch_wanted.set()

    async def _dispatch_loop(self) -> None:
        while True:
            await self._dispatch_wanted.wait()
            if not self._to_dispatch:
                self._dispatch_wanted.clear()
                continue
            run_id, waiting = self._to_dispatch.popitem(last=False)
            batch = [waiting.popleft() for _ in range(min(DISPATCH_BATCH, len(waiting)))]
            if waiting:
                self._to_dispatch[run_id] = waiting  # to the back of the line
            run = self.runs.get(run_id)
            if run is None:
                continue
            try:
                await self._send(run, batch)
            except Exception as exc:  # the loop that queues every run's work must go on
                log.exception("dispatch_crashed", run_id=run_id)
                await self._fail_run(run_id, f"the service failed to dispatch nodes ({exc})")

    def _still_queued(
        self, run: RunState, batch: list[tuple[str, int, float]]
    ) -> list[tuple[str, int, float]]:
        """The attempts of ``batch`` still to be queued (not cancelled, not superseded)."""
        if run.status.finished:
            return []
        return [
            item
            for item in batch
            if run.state(item[0]).attempt == item[1]
            and run.state(item[0]).status == NodeStatus.READY
        ]

    async def _send(self, run: RunState, batch: list[tuple[str, int, float]]) -> None:
        """Make the batch's tasks (URLs presigned on a store thread) and queue them.

        Whatever fails on the way (a store that cannot presign, the queue) fails
        these attempts, which are retried like any other: a node never stays
        READY with nothing queued.
        """
        batch = self._still_queued(run, batch)
        if not batch:
            return
        attempts = [(node_id, attempt) for node_id, attempt, _ in batch]
        try:
            names = {edge["store"] for edge in run.plan.edges.values()}
            stores = {name: self._store(run, name) for name in names}
            tasks = await self.calls.call_for(run.flow, self._tasks_for, run, stores, attempts)
            batch = self._still_queued(run, batch)  # a cancel may have come meanwhile
            wanted = {(node_id, attempt) for node_id, attempt, _ in batch}
            queued = time.perf_counter()
            for node_id, _attempt, _since in batch:
                self._queued_at[(run.id, node_id)] = queued
            await self.queue.put_tasks([t for t in tasks if (t.node_id, t.attempt) in wanted])
        except Exception as exc:
            if self.calls.stopping:
                return  # still READY: dispatched again when the service is back
            log.warning("dispatch_failed", run_id=run.id, attempts=len(batch), error=_reason(exc))
            for node_id, attempt, _ in batch:
                failed = AttemptResult(
                    run_id=run.id,
                    node_id=node_id,
                    attempt=attempt,
                    ok=False,
                    error=f"could not dispatch the attempt: {_reason(exc)}",
                )
                await self._handle_result(run, failed)
            return
        for node_id, _attempt, since in batch:
            run.record_timings(node_id, {"presign": round(queued - since, 4)}, replace=True)
        self._save(run)

    def _tasks_for(
        self, run: RunState, stores: dict[str, Store], attempts: list[tuple[str, int]]
    ) -> list[Task]:
        """On a store thread: the attempts' Tasks, with their URLs presigned."""
        return [self._task_for(run, stores, node_id, attempt) for node_id, attempt in attempts]

    def _task_for(
        self, run: RunState, stores: dict[str, Store], node_id: str, attempt: int
    ) -> Task:
        """The attempt's Task, with presigned URLs for each input and output."""
        node = run.node(node_id)
        node_def = run.defs[node_id]
        timeout = node_def.timeout or self.settings.executor.default_timeout
        url_ttl = self.settings.storage.url_ttl + timeout
        inputs = []
        for binding in node.inputs:
            artifact = run.run.artifacts[binding.edge]
            url = stores[artifact.store_name].get_url(artifact.object_name, url_ttl, internal=True)
            inputs.append(
                TaskInput(name=binding.name, url=url, types=_types(node_def, binding.name, "in"))
            )
        outputs = []
        for binding in node.outputs:
            artifact = run.artifact_for(binding.edge)
            url = stores[artifact.store_name].put_url(artifact.object_name, url_ttl, internal=True)
            declared = _single_type(_types(node_def, binding.name, "out"))
            outputs.append(
                TaskOutput(
                    name=binding.name,
                    url=url,
                    suffix=extension_for(declared) if declared else "",
                    type=declared,
                )
            )
        return Task(
            run_id=run.id,
            node_id=node_id,
            attempt=attempt,
            image=node_def.image,
            tier=node_def.tier,
            timeout=timeout,
            argv=_argv(node_def, node.command),
            flags=_flags(node_def, node),
            inputs=inputs,
            outputs=outputs,
            run_as_root=node_def.run_as_root,
            max_output_bytes=min(
                node_def.max_output_bytes or TIERS[node_def.tier].output_bytes,
                self.settings.executor.max_output_bytes,
            ),
        )

    def _warn_if_no_worker(self, run: RunState, node_id: str) -> None:
        tier_name = run.defs[node_id].tier
        if tier_name not in self.queue.offered_tiers():
            offered = ", ".join(sorted(self.queue.offered_tiers(), key=_tier_order)) or "none"
            self._log(
                run,
                node_id,
                f"waiting: no worker offers tier {TIERS[tier_name].describe()}; workers offer: "
                f"{offered}. Start a worker that can hold it, or pick a smaller Tier.",
                level="warning",
            )

    def _finish(self, run: RunState) -> None:
        if run.id in self._finished:
            return  # a failure while dispatching finished it already
        run.mark_finished(utcnow())
        dropped = self.queue.drop_run(run.id, cancel=run.status != RunStatus.COMPLETE)
        self._to_dispatch.pop(run.id, None)
        for key in [k for k in self._timers if k[0] == run.id]:
            self._timers.pop(key).cancel()
        deadline = self._deadlines.pop(run.id, None)
        if deadline is not None:
            deadline.cancel()
        for key in [k for k, v in self._awaited.items() if v[0] == run.id]:
            del self._awaited[key]
        # Attempts still queued, or whose dispatch kept failing, never start: their
        # queue times would stay for as long as the service runs.
        for node_id in run.plan.order:
            self._queued_at.pop((run.id, node_id), None)
        log.info("run_finished", run_id=run.id, status=run.status.value, dropped_tasks=dropped)
        self.metrics.runs_finished.labels(run.status.value).inc()
        self._finished[run.id] = None
        while len(self._finished) > FINISHED_RUNS_KEPT:
            old, _ = self._finished.popitem(last=False)
            self.runs.pop(old, None)

    def _persist(self, run: RunState) -> None:
        """Queue the run's write: of what changed since the last one (RunState.take_write)."""
        self.state.save(run.id, run)

    def _save(self, run: RunState) -> None:
        self._persist(run)
        nodes, edges = run.take_published()
        if not self.events.watched(run.id):
            return
        # What changed, not a snapshot: each reader takes the run as it is when it
        # gets there (invocations.watch), a big run's as a delta.
        self.events.publish(run.id, "status", nodes=nodes, edges=edges)
        if run.status.finished:
            self.events.publish(run.id, "end")

    def _log(self, run: RunState, node_id: str, message: str, level: str = "info") -> None:
        """A line of the engine's own in the node's Logs (stream ``pipewell``)."""
        record = LogRecord(
            message=message,
            level=level,
            stream="pipewell",
            attempt=run.state(node_id).attempt or None,
        )
        run.add_log(node_id, record)
        self.events.publish(
            run.id, "log", lambda: {"node": node_id, **record.model_dump(mode="json")}
        )

    # ------------------------------------------------------------ worker messages

    async def _consume(self) -> None:
        while True:
            try:
                message = await self.queue.next_message()
            except Exception:  # the one loop that moves runs must outlive any queue fault
                log.exception("queue_read_failed")
                await asyncio.sleep(1)
                continue
            try:
                with structlog.contextvars.bound_contextvars(**_about(message)):
                    await self._handle(message)
            except Exception as exc:
                log.exception("message_handling_failed", kind=message.kind, run_id=message.run_id)
                await self._fail_run(
                    message.run_id,
                    f"the service failed on a '{message.kind}' message of node "
                    f"'{message.node_id}' ({type(exc).__name__}: {exc}); see its log",
                )
            # Messages come in batches that need no I/O to hand out: let requests in
            # between two, so a run's burst of results never holds the loop.
            await asyncio.sleep(0)

    async def _fail_run(self, run_id: str, reason: str) -> None:
        """End a run the engine cannot go on with, ERROR with ``reason``, rather than leave it."""
        run = self.runs.get(run_id)
        if run is None or run.status.finished:
            return
        try:
            await self._apply(run, run.fail(reason))
        except Exception:
            log.exception("run_fail_failed", run_id=run_id)

    async def _handle(self, message: WorkerMessage) -> None:
        run = self.runs.get(message.run_id)
        if run is None:
            return
        if isinstance(message, AttemptCleanedUp):
            # Arrives after the result, often after the run has finished.
            if message.attempt == run.state(message.node_id).attempt:
                run.record_timings(message.node_id, {"remove": message.remove_seconds})
                self._persist(run)
            return
        if run.status.finished:
            return
        if isinstance(message, AttemptLog):
            if message.attempt == run.state(message.node_id).attempt:
                run.add_log(message.node_id, message.record)
                self.events.publish(
                    run.id,
                    "log",
                    lambda: {"node": message.node_id, **message.record.model_dump(mode="json")},
                )
                self._persist(run)
        elif isinstance(message, AttemptStarted):
            if run.attempt_started(message.node_id, message.attempt):
                queued = self._queued_at.pop((run.id, message.node_id), None)
                if queued is not None:
                    waited = time.perf_counter() - queued
                    run.record_timings(message.node_id, {"queue_wait": round(waited, 4)})
                    self.metrics.queue_wait_seconds.observe(waited)
                self._log(
                    run,
                    message.node_id,
                    f"attempt {message.attempt} started on worker {message.worker}",
                )
                log.info("attempt_started", worker=message.worker)
                self._save(run)
        elif isinstance(message, AttemptResult):
            state = run.state(message.node_id)
            if message.attempt == state.attempt:
                run.record_timings(message.node_id, message.timings)
            # Counted once: a duplicate result comes after the node has ended.
            ended = state.status.ended
            if message.attempt == state.attempt and not ended:
                outcome = "succeeded" if message.ok else "lost" if message.engine_down else "failed"
                log.info(
                    "attempt_finished",
                    outcome=outcome,
                    seconds=round(sum(message.timings.values()), 3),
                    error=message.error or None,
                )
                uses = run.node(message.node_id).uses
                # A label per flow-chosen name would grow /metrics without bound and
                # show every tenant the names other tenants use: catalog names only.
                nodedef = uses if uses in self.catalog else OTHER_NODEDEFS
                self.metrics.attempt_ended(outcome, nodedef, message.timings)
                written = sum(output.size for output in message.outputs.values())
                self.metrics.store_bytes.labels("node_output").inc(written)
            await self._handle_result(run, message)

    async def _handle_result(self, run: RunState, result: AttemptResult) -> None:
        node_id = result.node_id
        if result.ok:
            sizes = ", ".join(f"{k} {v.size} B {v.content_type}" for k, v in result.outputs.items())
            self._log(
                run,
                node_id,
                f"attempt {result.attempt} succeeded" + (f": {sizes}" if sizes else ""),
            )
            await self._apply(run, run.attempt_succeeded(node_id, result.attempt))
            return
        if result.engine_down:
            await self._attempt_lost(run, result)
            return
        delay = self.settings.retry.delay(result.attempt)
        transition = run.attempt_failed(
            node_id, result.attempt, result.error, retryable=result.retryable, retry_delay=delay
        )
        state = run.state(node_id)
        if transition.retry_after is not None:
            self._log(
                run,
                node_id,
                f"attempt {result.attempt} of {state.max_attempts} failed: {result.error}; "
                f"retrying in {delay:g} s",
                level="warning",
            )
            loop = asyncio.get_running_loop()
            name = f"retry-{run.id}-{node_id}"
            self._timers[(run.id, node_id)] = loop.call_later(
                delay, lambda: self._background.spawn(self._retry(run.id, node_id), name)
            )
        elif state.status == NodeStatus.ERROR:
            why = "not retryable" if not result.retryable else "no attempts left"
            self._log(
                run,
                node_id,
                f"attempt {result.attempt} of {state.max_attempts} failed: {result.error} ({why})",
                level="error",
            )
        await self._apply(run, transition)

    async def _attempt_lost(self, run: RunState, result: AttemptResult) -> None:
        """The worker's Docker engine went away under the attempt: run it again under
        the same number (not counted against MaxAttempts); the task waits in the queue
        until a worker whose engine answers takes it."""
        state = run.state(result.node_id)
        if result.attempt != state.attempt or state.status.ended:
            return
        self._log(
            run,
            result.node_id,
            f"attempt {result.attempt} lost: {result.error}; it runs again once the Docker "
            "engine answers (not counted against MaxAttempts)",
            level="warning",
        )
        self._dispatch(run, result.node_id, again=True)
        self._save(run)

    async def _retry(self, run_id: str, node_id: str) -> None:
        self._timers.pop((run_id, node_id), None)
        run = self.runs.get(run_id)
        if run is None or run.status.finished:
            return
        if run.state(node_id).status == NodeStatus.RETRYING:
            self._dispatch(run, node_id)
            self._save(run)

    # ------------------------------------------------------------ resume

    async def _resume(self, snapshot: dict[str, Any], in_queue: set[str]) -> None:
        try:
            run = RunState.restore(
                snapshot, self.catalog, max_log_lines=self.settings.executor.log_lines_per_node
            )
        except Exception:
            log.exception("run_not_resumable", run_id=snapshot.get("run", {}).get("ID"))
            return
        try:
            await self.calls.prepare(run.flow)
        except StoreError as exc:
            log.error("run_stores_unavailable", run_id=run.id, error=str(exc))
        self.runs[run.id] = run
        self._await_uploads(run)
        for node_id in run.active_nodes():
            state = run.state(node_id)
            if f"{run.id}/{node_id}/{state.attempt}" in in_queue:
                self._log(run, node_id, "service restarted: this attempt is still in the queue")
                continue
            again = state.status != NodeStatus.RETRYING
            self._log(run, node_id, "service restarted: dispatching this node again")
            self._dispatch(run, node_id, again=again)
        await self._apply(run, Transition(dispatch=run.ready_nodes()))
        for (store_name, key), (run_id, _edge) in list(self._awaited.items()):
            if run_id == run.id:
                await self._check_upload(self._store(run, store_name), store_name, key)
        self._arm_upload_deadline(run)
        log.info("run_resumed", run_id=run.id, status=run.status.value)


def _reason(exc: Exception) -> str:
    """What failed, for a node's Error: store errors say it themselves (never a URL)."""
    if isinstance(exc, StoreError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _types(node_def: NodeDef, name: str, direction: str) -> list[str] | None:
    declared = node_def.inputs if direction == "in" else node_def.outputs
    for edge_def in declared:
        if edge_def.name == name:
            return edge_def.type
    return None


def _about(message: WorkerMessage) -> dict[str, object]:
    """The run, node and attempt a worker's message is about: bound to its handling's log lines."""
    fields = {k: getattr(message, k, None) for k in ("run_id", "node_id", "attempt")}
    return {k: v for k, v in fields.items() if v is not None}


def _single_type(types: list[str] | None) -> str | None:
    """The output's type when its Type is one concrete type; a choice or a family says
    nothing of which the node wrote."""
    if types and len(types) == 1 and "*" not in types[0]:
        return types[0].strip()
    return None


def _argv(node_def: NodeDef, command_name: str | None) -> list[str] | None:
    commands = node_def.all_commands()
    if not commands:
        return None
    chosen = next((c for c in commands if c.name == command_name), None) if command_name else None
    chosen = chosen or commands[0]
    return split_exec(chosen.exec)


def _flags(node_def: NodeDef, node: Any) -> dict[str, str]:
    values = {f.name: f.default for f in node_def.flags if f.default is not None}
    values.update({f.name: f.value for f in node.flags})
    return values


def _tier_order(name: str) -> tuple[int, int]:
    tier = TIERS[name]
    return (tier.gpus, tier.memory)


__all__ = ["Scheduler"]
