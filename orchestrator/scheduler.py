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
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import structlog

from orchestrator.background import Background
from orchestrator.cache import CachedOutput, Entry, ResultCache, Work, work_key
from orchestrator.cache.flights import Flights, Waiter
from orchestrator.collections.archives import ArchiveLimits, ArchiveRefused
from orchestrator.collections.bundles import (
    bundle_key,
    drop_bundle,
    expand_bundle,
    item_key,
    typed_item_name,
)
from orchestrator.command import split_exec
from orchestrator.config import Settings
from orchestrator.dispatch_leases import Lease, Leases
from orchestrator.dispatch_order import DispatchOrder
from orchestrator.errors import (
    CollectionRefused,
    DataDirError,
    RunFinished,
    TooBusy,
)
from orchestrator.events import EventBus
from orchestrator.messages import (
    AttemptCleanedUp,
    AttemptLog,
    AttemptResult,
    AttemptStarted,
    ItemURL,
    Task,
    TaskInput,
    TaskOutput,
    WorkerMessage,
    attempt_key,
)
from orchestrator.metrics import OTHER_NODEDEFS, Metrics
from orchestrator.mime import extension_for
from orchestrator.models import (
    CacheHit,
    CollectionItem,
    FlowRun,
    LogRecord,
    NodeDef,
    NodeStatus,
    RunStatus,
    WaitingURL,
    utcnow,
)
from orchestrator.queue import TaskQueue
from orchestrator.runtime import LiveRun, ReusedOutputs, RunState, Transition
from orchestrator.state import StateStore
from orchestrator.stores import UPLOAD_GRACE, StoreCalls, StoreRegistry
from orchestrator.tiers import TIERS
from storage import Store, StoreError

log = structlog.get_logger(__name__)

FINISHED_RUNS_KEPT = 500
#: Attempts dispatched together: their URLs presigned in one trip to a store thread,
#: their tasks queued in one round trip. Runs take turns, a batch each.
#: An attempt as the dispatch loop knows it: node ID, attempt number, item (or None).
Attempt = tuple[str, int, str | None]
DISPATCH_BATCH = 64
#: Tasks of a tier let wait in the task queue: a quarter of its workers' slots, at least
#: AHEAD_LEAST. Enough that a slot freed finds one while the next is sent; few, since in
#: Redis a run of another tenant or of a higher priority queues behind those, not behind
#: all. The in-process queue takes in turn: as many of each turn (priority, tenant).
AHEAD_SHARE = 4
AHEAD_LEAST = 2
#: Seconds a run refused for a quota or a full tier is told to wait (Retry-After).
QUOTA_RETRY_AFTER = 10
#: Seconds the queue's count of waiting tasks is trusted before it is asked again.
WAITING_FRESH = 0.25
#: Seconds a run takes the ID the engine gave an image name as still true (a chain's
#: nodes of one image: one inspect); another run asks the engine again.
IMAGE_ID_FRESH = 10.0
#: A node's log line when the cached result it would reuse is no longer in its store.
GONE = "the outputs of the same work done before are gone or were replaced: running it"
#: A node or item whose attempt is in the queue or on a worker.
SENT = frozenset({NodeStatus.READY, NodeStatus.RUNNING})
#: Nodes marked queued before the loop is let go to others, when many become ready at once.
DISPATCH_SLICE = 256

#: Seconds between two status events of a run whose only change is its mapped
#: nodes' items: a 10,000-item map streams progress, not an event per item.
PROGRESS_EVERY = 0.25

#: Slots a node's items are spread over when no live worker has said how many it has
#: (workers starting with the service): a batch then takes at most an eighth of them.
SLOTS_UNKNOWN = 8

#: An attempt waiting to be sent: node, attempt, since when (perf_counter), item or None.
Pending = tuple[str, int, float, str | None]


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
        *,
        image_ids: Callable[[str], str | None] | None = None,
    ) -> None:
        """``image_ids``: the ID the one engine every attempt runs on gives an image name
        (None: it has none), when the service can ask it itself (a worker in-process, no
        other): a cached result's image is then confirmed here, not by a worker."""
        self.settings = settings
        self.image_ids = image_ids
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
        # (run id, node id, item or None) → its retry's timer.
        self._timers: dict[tuple[str, str, str | None], asyncio.TimerHandle] = {}
        # run id → when to check the run's WaitingURLs that are about to expire unused.
        self._deadlines: dict[str, asyncio.TimerHandle] = {}
        # (run id, node id, item or None) → when its current attempt was queued (monotonic).
        self._queued_at: dict[tuple[str, str, str | None], float] = {}
        # Attempts sent to a durable queue, until their result: looked for if it is long
        # in coming (dispatch_leases).
        self._leases = Leases()
        # Attempts marked queued whose tasks are still to be made and queued (node,
        # attempt, since when, item): the dispatch loop takes a batch of one run at a
        # time, in the order of dispatch_order (tier, priority, tenant, run), and only
        # while the task queue has room for the tier, so a 10,000-node run never holds
        # back another's node and no request waits for a run's dispatch.
        self._order: DispatchOrder[Pending] = DispatchOrder(settings.running_limit)
        # Tenant → its runs accepted and not ended (quotas).
        self._unfinished: Counter[str] = Counter()
        # Tenant → its new runs being made now (``admission``), counted with the above.
        self._admitting: Counter[str] = Counter()
        # Tasks no worker has taken yet, per tier, as the queue said at ``_looked_at``
        # (monotonic) plus those put since.
        self._waiting: dict[str, int] = {}
        self._looked_at = -WAITING_FRESH
        self._slots: dict[str, int] = {}
        self._recheck: asyncio.TimerHandle | None = None
        # Run id → mapped nodes whose items moved since the last status event, and
        # the timer that publishes them (``_save``).
        self._progress: dict[str, tuple[frozenset[str], asyncio.TimerHandle]] = {}
        # (run id, mapped node) warned of no worker for its tier: once, not per item.
        self._warned: set[tuple[str, str]] = set()
        self._dispatch_wanted = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Retries and deadlines started by timers: tracked, so none is lost or left behind.
        self._background = Background()
        self.cache = ResultCache(state.db, settings.cache)
        self._flights = Flights()
        # (run id, image name) → its ID and when the engine said so (``_image_id``).
        self._image_seen: dict[tuple[str, str], tuple[str | None, float]] = {}
        # Attempts whose cached outputs turned out gone: they run, looking nothing up.
        self._missed: set[tuple[str, str, str | None, int]] = set()

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
            asyncio.create_task(self._collect_cache(), name="scheduler-cache-collect"),
        ]
        if self.queue.durable:
            self._tasks.append(asyncio.create_task(self._look_for_lost(), name="scheduler-leases"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._background.close()
        for handle in [
            *self._timers.values(),
            *self._deadlines.values(),
            *(timer for _nodes, timer in self._progress.values()),
            *([self._recheck] if self._recheck else []),
        ]:
            handle.cancel()
        self._timers.clear()
        self._deadlines.clear()
        await self.cache.close()
        # A write that fails here is reported by StateStore.close, which tries once more.
        with contextlib.suppress(DataDirError):
            await asyncio.shield(self.state.flush())

    async def _io_call(self, fn, *args, store: Store | None = None):  # type: ignore[no-untyped-def]
        return await self.calls.call(fn, *args, store=store)

    # ------------------------------------------------------------ accepting runs

    async def accept(
        self,
        run: RunState,
        waiting: list[WaitingURL],
        *,
        arrived: Mapping[str, str | None] | None = None,
        static: Mapping[str, str | None] | None = None,
        members: Mapping[str, list[CollectionItem]] | None = None,
        reused: Mapping[str, ReusedOutputs] | None = None,
    ) -> FlowRun:
        """Take a run the service layer made ready: planned, its stores open, its
        WaitingURLs handed out (``waiting``) or its inputs written (``arrived``: edge →
        digest; a collection's archive is expanded into its items here:
        CollectionRefused if it cannot be, and the run is not taken). ``static``: the
        digests of its static edges' objects. A retry's: ``members``, the items of
        collection edges already in place; ``reused``, nodes whose outputs are in place
        (the retried run's), COMPLETE before anything is dispatched.

        Accepted only once on disk: a run answered 200 must survive a restart. Nothing
        is dispatched or awaited before: a refused run (DataDirError) leaves nothing
        running.
        """
        expanded = {}
        for edge in arrived or ():
            if run.is_collection(edge):
                try:
                    expanded[edge] = await self._expand(run, edge)
                except ArchiveRefused as exc:
                    raise CollectionRefused(edge, exc.code, str(exc)) from None
        items = run.start(waiting, static).items
        for node_id in run.plan.order:
            if node_id in (reused or {}):
                items += run.reuse(node_id, (reused or {})[node_id]).items
        for edge, given in (members or {}).items():
            items += run.collection_arrived(edge, given).items
        for edge, digest in (arrived or {}).items():
            if edge in expanded:
                items += run.collection_arrived(edge, expanded[edge]).items
            else:
                items += run.artifact_arrived(edge, digest).items
        await self.state.save_now(run.id, run)
        self.runs[run.id] = run
        self._unfinished[run.plan.tenant] += 1
        self._await_uploads(run)
        log.info(
            "run_submitted",
            run_id=run.id,
            flow=run.flow.name,
            nodes=len(run.plan.order),
            uploads=len(waiting),
            inputs=len(arrived or ()),
        )
        await self._apply(run, Transition(dispatch=run.ready_nodes(), items=items))
        self._arm_upload_deadline(run)
        return run.run

    @contextlib.asynccontextmanager
    async def admission(self, tenant: str) -> AsyncIterator[None]:
        """Hold a place for a new run of ``tenant`` while it is made (TooBusy at once
        when its quota of runs has none left): runs sent at the same moment are counted
        against the quota together, not each as if it were alone."""
        self._check_quota(tenant)
        self._admitting[tenant] += 1
        try:
            yield
        finally:
            self._admitting[tenant] -= 1
            if self._admitting[tenant] <= 0:
                del self._admitting[tenant]

    def _check_quota(self, tenant: str) -> None:
        settings = self.settings
        running, queued = settings.running_limit(tenant), settings.queued_limit(tenant)
        have = self._unfinished.get(tenant, 0) + self._admitting.get(tenant, 0)
        if running is not None:
            most = running if settings.quotas.over == "refuse" else running + (queued or 0)
            if queued is None and settings.quotas.over == "queue":
                most = None
            if most is not None and have >= most:
                raise TooBusy(
                    "QUOTA_EXCEEDED",
                    f"your tenant has {have} runs accepted and not ended, its most "
                    f"({running} running at once"
                    + (f", {queued} more queued" if settings.quotas.over == "queue" else "")
                    + "): wait for some to end, then send this one again; nothing of it "
                    "was kept",
                    QUOTA_RETRY_AFTER,
                )

    async def check_room(self, tiers: set[str]) -> None:
        """TooBusy when a new run on ``tiers`` would go beyond a tier's backlog bound:
        before anything of the run is kept."""
        bound = self.settings.quotas.queued_per_tier
        if tiers:
            await self._look_at_queue()
        for tier in sorted(tiers):
            backlog = self._order.pending(tier) + self._waiting.get(tier, 0)
            if backlog >= bound:
                raise TooBusy(
                    "QUEUE_FULL",
                    f"tier {tier} has {backlog} attempts waiting for a worker, the service's "
                    f"most (quotas.queued_per_tier {bound}): send the run again in a moment; "
                    "nothing of it was kept",
                    QUOTA_RETRY_AFTER,
                )

    def queued_attempts(self) -> dict[str, int]:
        """Attempts per tier waiting in the dispatch order (not yet in the task queue)."""
        return self._order.counts()

    def tenant_runs(self) -> dict[str, dict[str, int]]:
        """Per tenant: runs accepted and not ended, and of those started."""
        return {
            tenant: {"unfinished": count, "started": self._order.started(tenant)}
            for tenant, count in sorted(self._unfinished.items())
        }

    def live(self, run_id: str) -> LiveRun | None:
        """A run the scheduler holds, to read: running, or ended a moment ago."""
        return self.runs.get(run_id)

    def running(self, run_id: str) -> bool:
        """Whether the scheduler holds the run, and it has not ended."""
        run = self.runs.get(run_id)
        return run is not None and not run.status.finished

    def forget_ended(self, run_ids: list[str]) -> None:
        """Stop holding these ended runs (retention deleted them, or changed their
        artifacts): readers go to the database. Unfinished runs stay."""
        for run_id in run_ids:
            run = self.runs.get(run_id)
            if run is not None and run.status.finished:
                del self.runs[run_id]
                self._finished.pop(run_id, None)

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

    async def retried(self, run_id: str, retry_id: str) -> None:
        """Run ``retry_id`` retries the ended run ``run_id``: the old run names it too."""
        run = self.runs.get(run_id)
        if run is not None:
            run.retried_by(retry_id)
            self._persist(run)
            return
        await self.state.add_retry(run_id, retry_id)

    async def object_written(
        self, store_name: str, key: str, *, digest: str | None = None, tell_uploader: bool = False
    ) -> None:
        """A store received an object (``digest``: what the store knows its bytes by):
        maybe an upload a run waits for.

        A collection's upload is expanded into its items first. One that cannot be
        (not an archive, over a limit) is dropped: with ``tell_uploader`` (the upload's
        own request is waiting) CollectionRefused says why and the run waits on, its URL
        good for the fixed upload; else (found by polling) the run ends ERROR saying why.
        """
        target = self._awaited.pop((store_name, key), None)
        if target is None:
            return
        run = self.runs.get(target[0])
        if run is None:
            return
        edge = target[1]
        log.info("upload_received", run_id=run.id, edge=edge)
        if not run.is_collection(edge):
            await self._apply(run, run.artifact_arrived(edge, digest))
            return
        try:
            members = await self._expand(run, edge)
        except ArchiveRefused as exc:
            refused = CollectionRefused(edge, exc.code, str(exc))
            log.warning("collection_refused", run_id=run.id, edge=edge, reason=exc.code)
            if tell_uploader and not run.status.finished:
                self._awaited[(store_name, key)] = target  # the same URL may try again
                raise refused from None
            await self._apply(run, run.fail(str(refused)))
            return
        await self._apply(run, run.collection_arrived(edge, members))

    async def collection_filled(
        self, run_id: str, edge: str, members: list[CollectionItem]
    ) -> None:
        """A collection's items were put one by one and it was closed: it is complete."""
        run = self.runs.get(run_id)
        if run is None or run.status.finished:
            return
        self._awaited.pop(run.upload_key(edge), None)
        log.info("collection_closed", run_id=run.id, edge=edge, items=len(members))
        await self._apply(run, run.collection_arrived(edge, members))

    def limits(self) -> ArchiveLimits:
        limits = self.settings.collections
        return ArchiveLimits(
            max_entries=limits.max_items,
            max_total_bytes=limits.max_total_bytes,
            max_entry_bytes=limits.max_item_bytes,
            max_ratio=limits.max_ratio,
        )

    async def _expand(self, run: RunState, edge: str) -> list[CollectionItem]:
        """The archive on a collection edge, expanded into its items' objects and dropped
        (on a store thread). ArchiveRefused: nothing of it is kept."""
        artifact = run.artifact_for(edge)
        store = self._store(run, artifact.store_name)
        limits = self.limits()

        def expand_and_drop() -> list[CollectionItem]:
            try:
                return expand_bundle(store, artifact.object_name, limits)
            finally:
                drop_bundle(store, artifact.object_name)

        members = await self._io_call(expand_and_drop, store=store)
        log.info("collection_expanded", run_id=run.id, edge=edge, items=len(members))
        return members

    def _store(self, run: RunState, store_name: str) -> Store:
        return self.stores.get(store_name, run.plan.submission.flow)

    def _await_uploads(self, run: RunState) -> None:
        for edge in run.pending_uploads():
            self._awaited[run.upload_key(edge)] = (run.id, edge)

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
            store_name, key = run.upload_key(edge)
            try:
                store = self._store(run, store_name)
            except StoreError as exc:
                log.warning("upload_check_failed", store=store_name, error=str(exc))
                continue
            await self._check_upload(store, store_name, key)
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
            info = await self._io_call(store.stat, key, store=store)
        except Exception as exc:  # a store outage must not stop the poller
            log.warning("upload_check_failed", store=store_name, error=str(exc))
            return
        if info is not None:
            await self.object_written(store_name, key, digest=info.digest)

    # ------------------------------------------------------------ dispatch

    async def _apply(self, run: RunState, transition: Transition) -> None:
        for number, node_id in enumerate(transition.dispatch, 1):
            if run.state(node_id).status == NodeStatus.IDLE:  # not dispatched meanwhile
                self._dispatch(run, node_id)
            if number % DISPATCH_SLICE == 0:
                await asyncio.sleep(0)  # 10,000 nodes made ready at once: in slices
        if transition.items and not run.status.finished:
            # Marked queued by the run already (its Concurrency counted them): sent as nodes are.
            since = time.perf_counter()
            for node_id, item, attempt in transition.items:
                self._queue_up(run, (node_id, attempt, since, item))
                if (run.id, node_id) not in self._warned:
                    self._warned.add((run.id, node_id))
                    self._warn_if_no_worker(run, node_id)
            self._dispatch_wanted.set()
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
        self._queue_up(run, (node_id, attempt, time.perf_counter(), None))

    def _queue_up(self, run: RunState, pending: Pending) -> None:
        """An attempt marked queued, for the dispatch loop to send in its turn."""
        node_id, _, _, item = pending
        tier = self._tier_of(run, node_id, item)
        self._order.add(run.id, run.plan.tenant, run.plan.submission.priority, tier, pending)
        self._dispatch_wanted.set()

    def _tier_of(self, run: RunState, node_id: str, item: str | None) -> str:
        """The tier an attempt runs on: its node's, raised after an OOM (not an item's)."""
        return (item is None and run.state(node_id).tier) or run.defs[node_id].tier

    def _ahead(self, tier: str) -> int:
        """Tasks of ``tier`` let wait in the task queue (of each turn, where the queue
        takes in turn): a share of its workers' slots (AHEAD_SHARE), so that a freed
        slot finds one; what waits beyond that waits here, in the dispatch order."""
        ahead = self._slots.get(tier)
        if ahead is None:  # asked of the workers' heartbeats once per look at the queue
            ahead = max(AHEAD_LEAST, self.queue.slots_for(tier) // AHEAD_SHARE)
            self._slots[tier] = ahead
        return ahead

    def _tier_has_room(self, tier: str) -> bool:
        return self._waiting.get(tier, 0) < self._ahead(tier)

    def _turn_has_room(self, tier: str, priority: int, tenant: str) -> bool:
        """Whether the queue, which takes in turn, takes another task of this turn now:
        a tenant's task goes in beside another tenant's backlog, not behind it."""
        return self.queue.waiting_in_turn(tier, priority, tenant) < self._ahead(tier)

    async def _dispatch_loop(self) -> None:
        while True:
            await self._dispatch_wanted.wait()
            if not self._order:
                self._dispatch_wanted.clear()
                continue
            await self._look_at_queue()
            if self.queue.takes_in_turn:
                turn = self._order.take(_always, DISPATCH_BATCH, self._turn_has_room)
            else:
                turn = self._order.take(self._tier_has_room, DISPATCH_BATCH)
            if turn is None:
                # Every tier with work is full: a start or a result wakes the loop, and
                # a look at the queue in a moment (another service's workers take too).
                self._dispatch_wanted.clear()
                if self._recheck is None:
                    self._recheck = asyncio.get_running_loop().call_later(
                        WAITING_FRESH, self._look_again
                    )
                continue
            run_id, tier, batch = turn
            run = self.runs.get(run_id)
            if run is None:
                continue
            try:
                sent = await self._send(run, batch)
            except Exception as exc:  # the loop that queues every run's work must go on
                log.exception("dispatch_crashed", run_id=run_id)
                await self._fail_run(run_id, f"the service failed to dispatch nodes ({exc})")
            else:
                self._waiting[tier] = self._waiting.get(tier, 0) + sent

    async def _look_at_queue(self) -> None:
        """Ask the queue what waits in it: the in-process queue each time (a count of
        its deques), Redis unless it said so a moment ago (a round trip)."""
        if self.queue.durable and time.monotonic() - self._looked_at < WAITING_FRESH:
            return
        self._looked_at = time.monotonic()
        self._slots = {}
        try:
            self._waiting = await self.queue.waiting()
        except Exception as exc:  # the queue is down: its own put will say so
            log.debug("queue_waiting_unknown", error=_reason(exc))

    def _look_again(self) -> None:
        self._recheck = None
        self._looked_at = -WAITING_FRESH
        self._dispatch_wanted.set()

    def _taken(self, run: RunState | None, message: AttemptStarted | AttemptResult) -> None:
        """A worker took a task, or one ended: maybe room for the next. A start is one
        task fewer waiting (a batch's items start one by one: the count may fall short
        until the next look at the queue corrects it)."""
        if isinstance(message, AttemptStarted) and run is not None:
            tier = self._tier_of(run, message.node_id, message.item)
            self._waiting[tier] = max(0, self._waiting.get(tier, 0) - 1)
        if self._order:
            self._dispatch_wanted.set()

    def _still_queued(self, run: RunState, batch: list[Pending]) -> list[Pending]:
        """The attempts of ``batch`` still to be queued (not cancelled, not superseded)."""
        if run.status.finished:
            return []
        return [pending for pending in batch if _still_ready(run, pending)]

    async def _send(self, run: RunState, batch: list[Pending]) -> int:
        """Make the batch's tasks (URLs presigned on a store thread) and queue them;
        returns how many tasks were queued.

        Whatever fails on the way (a store that cannot presign, the queue) fails
        these attempts, which are retried like any other: a node never stays
        READY with nothing queued.
        """
        batch = self._still_queued(run, batch)
        if not batch:
            return 0
        attempts = [(node_id, attempt, item) for node_id, attempt, _, item in batch]
        try:
            # Before any URL is presigned: attempts served by the cache, or waiting for
            # another run's same work, are not queued.
            attempts, reuse = await self._consult_cache(run, attempts)
            if not attempts:
                return 0
            names = {edge["store"] for edge in run.plan.edges.values()}
            stores = {name: self._store(run, name) for name in names}
            tasks = await self.calls.call_for(run.flow, self._tasks_for, run, stores, attempts)
            for task in tasks:
                task.reuse = reuse.get((task.node_id, task.attempt, task.item), [])
            left = set(attempts)
            # A cancel may have come meanwhile.
            batch = [p for p in self._still_queued(run, batch) if (p[0], p[1], p[3]) in left]
            wanted = {(node_id, attempt, item) for node_id, attempt, _, item in batch}
            queued = time.perf_counter()
            for node_id, _attempt, _since, item in batch:
                self._queued_at[(run.id, node_id, item)] = queued
            chosen = [t for t in tasks if (t.node_id, t.attempt, t.item) in wanted]
            chosen = self._batched(run, chosen)
            await self.queue.put_tasks(chosen, (run.plan.submission.priority, run.plan.tenant))
            for node_id, attempt, _since, item in batch:
                self._lease(run, node_id, attempt, item)
        except Exception as exc:
            if self.calls.stopping:
                return 0  # still READY: dispatched again when the service is back
            log.warning("dispatch_failed", run_id=run.id, attempts=len(batch), error=_reason(exc))
            for node_id, attempt, _, item in batch:
                failed = AttemptResult(
                    run_id=run.id,
                    node_id=node_id,
                    attempt=attempt,
                    item=item,
                    ok=False,
                    error=f"could not dispatch the attempt: {_reason(exc)}",
                )
                await self._handle_result(run, failed)
            return 0
        for node_id, _attempt, since, item in batch:
            presign = {"presign": round(queued - since, 4)}
            if item is None:
                run.record_timings(node_id, presign, replace=True)
            else:
                run.record_item_timings(node_id, item, presign)
        self._save(run)
        return len(chosen)

    # ------------------------------------------------------------ the result cache

    def _work_key(self, run: RunState, node_id: str, item: str | None = None) -> str | None:
        """The key of the work of a node, or of one item of a mapped node
        (orchestrator.cache.keys); None when its outputs are not to be cached: the cache
        is off, its NodeDef says ``Cache: false``, it makes a whole collection, or an
        input's bytes are not known by a digest."""
        node_def = run.defs[node_id]
        mapping = run.maps.get(node_id)
        if not self.cache.enabled or not node_def.cache or (mapping is None) != (item is None):
            return None
        node = run.node(node_id)
        if mapping is None and any(run.is_collection(b.edge) for b in node.outputs):
            return None
        digests = run.input_digests(node_id)
        if mapping is not None:
            member = run.collections[mapping.edge].items.get(item or "")
            sha256 = member.sha256 if member is not None else ""
            digests[run.plan.mapped[node_id]] = f"sha256:{sha256}" if sha256 else None
        ignored = set(node_def.cache_ignore)
        work = Work(
            tenant=run.tenant,
            node_id=node_id,
            argv=_argv(node_def, node.command),
            flags=_flags(node_def, node),
            run_as_root=node_def.run_as_root,
            cache_version=node_def.cache_version,
            inputs={name: digest for name, digest in digests.items() if name not in ignored},
            outputs={
                b.name: (_single_type(_types(node_def, b.name, "out")), False) for b in node.outputs
            },
        )
        return work_key(work)

    def _may_reuse(self, run: RunState, attempt: Attempt) -> bool:
        submission = run.plan.submission
        node_id, number, item = attempt
        return (
            not submission.no_cache
            and node_id not in submission.recompute
            and (run.id, node_id, item, number) not in self._missed
        )

    async def _consult_cache(
        self, run: RunState, attempts: list[Attempt]
    ) -> tuple[list[Attempt], dict[Attempt, list[str]]]:
        """The attempts to queue, and for each cacheable one the IDs of the images that
        did its work before (``Task.reuse``: the worker confirms its own). An attempt
        whose work another run's node is doing now waits for it (single flight); with
        the engine in reach, a hit is taken here. Neither is queued."""
        if not self.cache.enabled:
            return attempts, {}
        keys: dict[Attempt, str] = {}
        queued: list[Attempt] = []
        for attempt in attempts:
            node_id, number, item = attempt
            key = self._work_key(run, node_id, item)
            if key is None:
                queued.append(attempt)
                continue
            reusable = self._may_reuse(run, attempt)
            # Items: a batch sent again is rare, and its items cheap. An attempt that may
            # reuse nothing (NoCache, Recompute) does not wait for another's same work.
            if item is None and reusable:
                owner = self._flights.claim(run.tenant, key, run.id, node_id)
                if owner is not None:
                    self._flights.wait(run.tenant, key, (run.id, node_id, number))
                    self._log(
                        run,
                        node_id,
                        f"waiting: node '{owner[1]}' of run {owner[0]} is doing the same work "
                        "now; its outputs will be reused",
                    )
                    continue
            if reusable:
                keys[attempt] = key
            queued.append(attempt)
        if not keys:
            return queued, {}
        entries = await self.cache.entries(run.tenant, keys.values())
        found = {a: entries[key] for a, key in keys.items() if key in entries}
        reuse = {attempt: list(by_image) for attempt, by_image in found.items()}
        if self.image_ids is not None and found:
            served = await self._reuse_here(run, found, reuse)
            queued = [attempt for attempt in queued if attempt not in served]
        return queued, reuse

    async def _reuse_here(
        self, run: RunState, found: dict[Attempt, dict[str, Entry]], reuse: dict[Attempt, list[str]]
    ) -> set[Attempt]:
        """With the engine in reach, a cached result's image is confirmed here: a hit is
        taken without queueing it (no worker slot, no queue). Returns the attempts served;
        an entry whose objects are gone is forgotten (and left out of ``reuse``)."""
        assert self.image_ids is not None
        ids: dict[str, str | None] = {}
        for name in {run.defs[node_id].image for node_id, _n, _i in found}:
            ids[name] = await self._image_id(run, name)
        hits = [
            (attempt, by_image[image_id])
            for attempt, by_image in found.items()
            if (image_id := ids.get(run.defs[attempt[0]].image)) is not None
            and image_id in by_image
        ]
        if not hits:
            return set()
        copies = await self._copy_cached(run, [(a[0], a[2], entry) for a, entry in hits])
        served = set()
        for (attempt, entry), copied in zip(hits, copies, strict=True):
            node_id, number, item = attempt
            if copied is None:  # its objects are gone: the worker runs it
                await self.cache.forget(entry)
                reuse[attempt] = [i for i in reuse[attempt] if i != entry.image_id]
                if item is None:
                    self._log(run, node_id, GONE)
                continue
            served.add(attempt)
            await self._reused(run, node_id, item, number, entry, copied)
        return served

    def _wake(self, waiters: list[Waiter]) -> None:
        """Nodes that waited for another's work: dispatched again, to reuse it or do it."""
        for run_id, node_id, attempt in waiters:
            run = self.runs.get(run_id)
            if run is None or run.status.finished:
                continue
            state = run.state(node_id)
            if state.status != NodeStatus.READY or state.attempt != attempt:
                continue
            self._queue_up(run, (node_id, attempt, time.perf_counter(), None))

    def _work_ended(self, run: RunState, node_id: str) -> None:
        if run.state(node_id).status.ended:
            self._wake(self._flights.release(run.id, node_id))

    def _output_keys(
        self, run: RunState, node_id: str, item: str | None
    ) -> dict[str, tuple[str, str, str]]:
        """Output name → (edge, store, key) of a node's outputs, or of one item's."""
        found = {}
        for binding in run.node(node_id).outputs:
            artifact = run.artifact_for(binding.edge)
            key = artifact.object_name if item is None else item_key(artifact.object_name, item)
            found[binding.name] = (binding.edge, artifact.store_name, key)
        return found

    async def _remember(self, run: RunState, result: AttemptResult) -> None:
        """An attempt's work succeeded: its outputs are kept as an entry for later runs."""
        node_id, item = result.node_id, result.item
        key = self._work_key(run, node_id, item)
        if key is None or not result.image_id:
            return
        targets = self._output_keys(run, node_id, item)
        # A key with the run's ID in it is this run's alone: no later run writes it
        # again, so what its store says of it need not be kept (and asked) to tell.
        shared = {n: t for n, t in targets.items() if run.id not in t[2]}
        now: dict[str, str | None] = {}
        if shared:
            stores = {n: self._store(run, store) for n, (_e, store, _k) in shared.items()}

            def stored() -> dict[str, str | None]:
                found = {}
                for name, (_edge, _store, object_key) in shared.items():
                    info = stores[name].stat(object_key)
                    found[name] = info.digest if info is not None else None
                return found

            try:
                now = await self.calls.call_for(run.flow, stored)
            except StoreError as exc:
                log.warning("cache_entry_not_made", run_id=run.id, node_id=node_id, error=str(exc))
                return
        outputs = {}
        for name, (_edge, store, object_key) in targets.items():
            info = result.outputs.get(name)
            if info is None or (name in shared and now.get(name) is None):
                return
            outputs[name] = CachedOutput(
                store=store,
                key=object_key,
                digest=f"sha256:{info.sha256}" if info.sha256 else None,
                size=info.size,
                content_type=info.content_type,
                stored=now.get(name),
            )
        self.cache.record(Entry(run.tenant, key, result.image_id, run.id, node_id, outputs))
        self.metrics.cache_entries_made.inc()

    async def _reuse(self, run: RunState, result: AttemptResult) -> None:
        """A worker confirmed the image of a cached result: its outputs are copied to
        this run's keys and the node (or item) is COMPLETE, Cached. Outputs gone or
        replaced since: a miss, and it runs after all (the same attempt)."""
        node_id, item, attempt = result.node_id, result.item, result.attempt
        key = self._work_key(run, node_id, item)
        entry = await self.cache.entry(run.tenant, key, result.image_id) if key else None
        copied = (await self._copy_cached(run, [(node_id, item, entry)]))[0] if entry else None
        if entry is not None and copied is not None:
            await self._reused(run, node_id, item, attempt, entry, copied)
            return
        if entry is not None:
            await self.cache.forget(entry)
        self._missed.add((run.id, node_id, item, attempt))
        if item is not None:
            await self._apply(run, run.item_retry(node_id, item, again=True))
            return
        self._log(run, node_id, GONE)
        self._dispatch(run, node_id, again=True)
        self._save(run)

    async def _reused(
        self,
        run: RunState,
        node_id: str,
        item: str | None,
        attempt: int,
        entry: Entry,
        copied: list[tuple[str, str, CachedOutput]],
    ) -> None:
        """The entry's outputs are the attempt's, copied: it is COMPLETE, Cached."""
        self.cache.reused(entry)
        self.metrics.cache_hits.inc()
        if item is not None:
            produced = {
                edge: CollectionItem(
                    name=_output_item_name(run, edge, item, cached.content_type),
                    object_name=object_key,
                    size=cached.size,
                    content_type=cached.content_type,
                    sha256=(cached.digest or "").removeprefix("sha256:"),
                )
                for edge, object_key, cached in copied
            }
            hit = CacheHit(run=entry.run_id, node=entry.node_id)
            await self._apply(run, run.item_succeeded(node_id, item, attempt, produced, hit))
            return
        self._log(
            run,
            node_id,
            f"reused the outputs of node '{entry.node_id}' of run {entry.run_id} (same image "
            f"{entry.image_id[:19]}, command, flags and input bytes): no container ran",
        )
        hit = CacheHit(run=entry.run_id, node=entry.node_id)
        digests = {edge: cached.digest for edge, _key, cached in copied}
        await self._apply(run, run.attempt_succeeded(node_id, attempt, digests=digests, cached=hit))
        self._work_ended(run, node_id)

    async def _image_id(self, run: RunState, name: str) -> str | None:
        """The ID the engine gives ``name``, as this run saw it at most IMAGE_ID_FRESH
        seconds ago: a chain's ten nodes of one image ask the engine once, and another
        run (after a rebuild, say) asks again."""
        assert self.image_ids is not None
        seen = self._image_seen.get((run.id, name))
        if seen is not None and time.monotonic() - seen[1] < IMAGE_ID_FRESH:
            return seen[0]
        try:
            image_id = await asyncio.to_thread(self.image_ids, name)
        except Exception as exc:  # the engine not answering: the worker will say
            log.warning("image_not_inspected", image=name, error=str(exc))
            return None
        self._image_seen[(run.id, name)] = (image_id, time.monotonic())
        return image_id

    async def _copy_cached(
        self, run: RunState, hits: list[tuple[str, str | None, Entry]]
    ) -> list[list[tuple[str, str, CachedOutput]] | None]:
        """For each (node, item, entry): its objects copied to the outputs (each output's
        edge, its new key, what was copied), or None if one is gone, was written again
        since, or is in another store. One store call for them all."""
        plans: list[list[tuple[str, str, CachedOutput, Store]] | None] = []
        for node_id, item, entry in hits:
            plan: list[tuple[str, str, CachedOutput, Store]] | None = []
            for name, (edge, store_name, target) in self._output_keys(run, node_id, item).items():
                cached = entry.outputs.get(name)
                if cached is None or cached.store != store_name:
                    plan = None
                    break
                plan.append((edge, target, cached, self._store(run, store_name)))
            plans.append(plan)

        def copy(plan: list[tuple[str, str, CachedOutput, Store]]) -> bool:
            for _edge, target, cached, store in plan:
                info = store.stat(cached.key)
                if info is None or info.size != cached.size:
                    return False
                if cached.stored is not None and info.digest != cached.stored:
                    return False
                store.copy(cached.key, target)
            return True

        def copy_all() -> list[list[tuple[str, str, CachedOutput]] | None]:
            done: list[list[tuple[str, str, CachedOutput]] | None] = []
            for plan in plans:
                try:
                    ok = plan is not None and copy(plan)
                except StoreError as exc:  # ObjectNotFound among them: deleted in between
                    log.info("cache_copy_failed", run_id=run.id, error=str(exc))
                    ok = False
                made = [(e, t, c) for e, t, c, _s in plan] if plan is not None else None
                done.append(made if ok else None)
            return done

        try:
            return await self.calls.call_for(run.flow, copy_all)
        except StoreError as exc:  # the store itself is out of reach: all run
            log.info("cache_copy_failed", run_id=run.id, error=str(exc))
            return [None] * len(hits)

    async def _collect_cache(self) -> None:
        while True:
            await asyncio.sleep(self.settings.cache.collect_every)
            try:
                forgotten = await self.cache.collect()
            except Exception as exc:  # a full disk now must not stop later sweeps
                log.warning("cache_collect_failed", error=str(exc))
                continue
            if forgotten:
                log.info("cache_collected", entries=forgotten)

    def _batched(self, run: RunState, tasks: list[Task]) -> list[Task]:
        """Items in batches as big as ``items_per_container`` allows, but no bigger than
        the node's queued items spread over the slots of the workers that take their
        tier: 16 items on 8 free slots go as 8 batches of 2, not 1 of 16 on one slot."""
        most = self.settings.executor.items_per_container

        def size(node_id: str, tier: str) -> int:
            queued = run.maps[node_id].counts[NodeStatus.READY]
            slots = self.queue.slots_for(tier) or SLOTS_UNKNOWN
            return max(1, min(most, -(-queued // slots)))

        return _batched(tasks, size) if most > 1 else tasks

    def _tasks_for(
        self,
        run: RunState,
        stores: dict[str, Store],
        attempts: list[tuple[str, int, str | None]],
    ) -> list[Task]:
        """On a store thread: the attempts' Tasks, with their URLs presigned."""
        return [
            self._task_for(run, stores, node_id, attempt, item)
            for node_id, attempt, item in attempts
        ]

    def _task_for(
        self,
        run: RunState,
        stores: dict[str, Store],
        node_id: str,
        attempt: int,
        item: str | None = None,
    ) -> Task:
        """The attempt's Task, with presigned URLs for each input and output: of the node,
        or of one item of a mapped node (its item as the mapped input, its outputs as
        that item of each output collection)."""
        node = run.node(node_id)
        node_def = run.defs[node_id]
        timeout = node_def.timeout or self.settings.executor.default_timeout
        url_ttl = self.settings.storage.url_ttl + timeout
        mapped = run.maps.get(node_id)
        inputs = []
        for binding in node.inputs:
            types = _types(node_def, binding.name, "in")
            artifact = run.artifact_for(binding.edge)
            store = stores[artifact.store_name]
            if mapped is not None and item is not None and binding.edge == mapped.edge:
                key = run.collections[binding.edge].items[item].object_name
                url = store.get_url(key, url_ttl, internal=True)
                inputs.append(TaskInput(name=binding.name, url=url, types=types))
            elif run.is_collection(binding.edge):  # a gather: every item
                members = run.collections[binding.edge].items.values()
                items = [
                    ItemURL(name=m.name, url=store.get_url(m.object_name, url_ttl, internal=True))
                    for m in members
                ]
                inputs.append(TaskInput(name=binding.name, types=types, items=items))
            else:
                url = store.get_url(artifact.object_name, url_ttl, internal=True)
                inputs.append(TaskInput(name=binding.name, url=url, types=types))
        outputs = []
        for binding in node.outputs:
            artifact = run.artifact_for(binding.edge)
            store = stores[artifact.store_name]
            declared = _single_type(_types(node_def, binding.name, "out"))
            collection = run.is_collection(binding.edge) and item is None
            if item is not None:
                key = item_key(artifact.object_name, item)
            elif collection:
                key = bundle_key(artifact.object_name)
            else:
                key = artifact.object_name
            outputs.append(
                TaskOutput(
                    name=binding.name,
                    url=store.put_url(key, url_ttl, internal=True),
                    suffix=extension_for(declared) if declared and not collection else "",
                    type=declared,
                    collection=collection,
                )
            )
        return Task(
            run_id=run.id,
            node_id=node_id,
            attempt=attempt,
            image=node_def.image,
            tier=(item is None and run.state(node_id).tier) or node_def.tier,
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
            item=item,
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
        self._order.drop(run.id)
        self._order.ended(run.id, run.plan.tenant)
        self._unfinished[run.plan.tenant] -= 1
        if self._unfinished[run.plan.tenant] <= 0:
            del self._unfinished[run.plan.tenant]
        if self._order:  # its tasks left the queue, and its tenant may start another run
            self._looked_at = -WAITING_FRESH
            self._dispatch_wanted.set()
        for key in [k for k in self._timers if k[0] == run.id]:
            self._timers.pop(key).cancel()
        deadline = self._deadlines.pop(run.id, None)
        if deadline is not None:
            deadline.cancel()
        for key in [k for k, v in self._awaited.items() if v[0] == run.id]:
            del self._awaited[key]
        # Attempts still queued, or whose dispatch kept failing, never start: their
        # queue times would stay for as long as the service runs.
        for key in [k for k in self._queued_at if k[0] == run.id]:
            del self._queued_at[key]
        self._leases.end_run(run.id)
        self._warned = {k for k in self._warned if k[0] != run.id}
        self._missed = {k for k in self._missed if k[0] != run.id}
        for seen in [k for k in self._image_seen if k[0] == run.id]:
            del self._image_seen[seen]
        self._wake(self._flights.drop_run(run.id))
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
        held = self._progress.pop(run.id, None)
        if held is not None:
            nodes = nodes | held[0]
        if nodes and not edges and not run.status.finished and nodes <= run.maps.keys():
            # Only mapped nodes' items moved: progress, sent a few times a second,
            # not an event per item per change.
            timer = held[1] if held is not None else None
            if timer is None:
                timer = asyncio.get_running_loop().call_later(
                    PROGRESS_EVERY, self._publish_progress, run.id
                )
            self._progress[run.id] = (nodes, timer)
            return
        if held is not None:
            held[1].cancel()
        # What changed, not a snapshot: each reader takes the run as it is when it
        # gets there (invocations.watch), a big run's as a delta.
        self.events.publish(run.id, "status", nodes=nodes, edges=edges)
        if run.status.finished:
            self.events.publish(run.id, "end")

    def _publish_progress(self, run_id: str) -> None:
        held = self._progress.pop(run_id, None)
        if held is not None:
            self.events.publish(run_id, "status", nodes=held[0], edges=())

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
            if self.queue.durable and not self.queue.has_buffered_messages():
                await self._acknowledge()
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

    async def _acknowledge(self) -> None:
        """Write what the messages handed out changed, then let a durable queue forget
        them: a service killed in between reads them again, never loses one."""
        try:
            await self.state.flush()
            await self.queue.messages_handled()
        except Exception as exc:  # unwritten: they stay pending, and are acked later
            log.warning("messages_not_acknowledged", error=str(exc))

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
        if isinstance(message, AttemptStarted | AttemptResult):
            self._taken(run, message)
        if isinstance(message, AttemptResult):
            self._leases.end(
                attempt_key(message.run_id, message.node_id, message.attempt, message.item)
            )
        if run is None:
            return
        if message.item is not None:
            await self._handle_item(run, message)
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
                queued = self._queued_at.pop((run.id, message.node_id, None), None)
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
                outcome = _outcome(message)
                log.info(
                    "attempt_finished",
                    outcome=outcome,
                    seconds=round(sum(message.timings.values()), 3),
                    error=message.error or None,
                )
                nodedef = self._nodedef_label(run, message.node_id)
                self.metrics.attempt_ended(outcome, nodedef, message.timings)
                written = sum(output.size for output in message.outputs.values())
                self.metrics.store_bytes.labels("node_output").inc(written)
            await self._handle_result(run, message)

    async def _handle_item(self, run: RunState, message: WorkerMessage) -> None:
        """A message about one item of a mapped node: the item's state, not the node's."""
        node_id, name = message.node_id, message.item
        assert name is not None
        item = run.item(node_id, name)
        if item is None or message.attempt != item.attempt:
            return
        if isinstance(message, AttemptCleanedUp):
            run.record_item_timings(node_id, name, {"remove": message.remove_seconds})
            self._persist(run)
            return
        if run.status.finished:
            return
        if isinstance(message, AttemptLog):
            run.add_item_log(node_id, name, message.record)
            self._persist(run)
        elif isinstance(message, AttemptStarted):
            if run.item_started(node_id, name, message.attempt):
                queued = self._queued_at.pop((run.id, node_id, name), None)
                if queued is not None:
                    waited = time.perf_counter() - queued
                    run.record_item_timings(node_id, name, {"queue_wait": round(waited, 4)})
                    self.metrics.queue_wait_seconds.observe(waited)
                self._save(run)
        elif isinstance(message, AttemptResult):
            run.record_item_timings(node_id, name, message.timings)
            if not item.status.ended:
                outcome = _outcome(message)
                nodedef = self._nodedef_label(run, node_id)
                self.metrics.attempt_ended(outcome, nodedef, message.timings)
                self.metrics.items_ended.labels(outcome).inc()
            await self._handle_item_result(run, message)

    async def _handle_item_result(self, run: RunState, result: AttemptResult) -> None:
        node_id, name = result.node_id, result.item
        assert name is not None
        if result.ok and result.reused:
            await self._reuse(run, result)
            return
        if result.ok:
            produced = {}
            for binding in run.node(node_id).outputs:
                info = result.outputs.get(binding.name)
                key = item_key(run.artifact_for(binding.edge).object_name, name)
                content_type = info.content_type if info else ""
                produced[binding.edge] = CollectionItem(
                    name=_output_item_name(run, binding.edge, name, content_type),
                    object_name=key,
                    size=info.size if info else 0,
                    content_type=content_type,
                    sha256=info.sha256 if info else "",
                )
            item = run.item(node_id, name)
            await self._apply(run, run.item_succeeded(node_id, name, result.attempt, produced))
            if item is not None and item.status == NodeStatus.COMPLETE:
                await self._remember(run, result)
            return
        if result.engine_down:
            await self._apply(run, run.item_retry(node_id, name, again=True))
            return
        result = self._by_retry_policy(run, result)
        delay = self.settings.retry.delay(result.attempt)
        transition = run.item_failed(
            node_id, name, result.attempt, result.error,
            retryable=result.retryable, retry_delay=delay,
        )  # fmt: skip
        if transition.retry_after is not None:
            key = (run.id, node_id, name)
            spawn = self._background.spawn
            self._timers[key] = asyncio.get_running_loop().call_later(
                delay, lambda: spawn(self._retry_item(*key), f"retry-{run.id}-{node_id}")
            )
        await self._apply(run, transition)

    async def _retry_item(self, run_id: str, node_id: str, name: str) -> None:
        self._timers.pop((run_id, node_id, name), None)
        run = self.runs.get(run_id)
        if run is None or run.status.finished:
            return
        await self._apply(run, run.item_retry(node_id, name))

    async def _handle_result(self, run: RunState, result: AttemptResult) -> None:
        node_id = result.node_id
        if result.item is not None:
            await self._handle_item_result(run, result)
            return
        if result.ok and result.reused:
            await self._reuse(run, result)
            return
        if result.ok:
            sizes = ", ".join(f"{k} {v.size} B {v.content_type}" for k, v in result.outputs.items())
            try:
                collections = await self._expand_outputs(run, node_id, result.attempt)
            except (ArchiveRefused, StoreError) as exc:
                refused = isinstance(exc, ArchiveRefused)
                code = f" ({exc.code})" if isinstance(exc, ArchiveRefused) else ""
                result = result.model_copy(
                    update={
                        "ok": False,
                        "retryable": not refused,
                        "error": f"its collection output could not be taken: {exc}{code}",
                    }
                )
            else:
                counted = "".join(
                    f", {edge} {len(items)} items" for edge, items in collections.items()
                )
                self._log(
                    run,
                    node_id,
                    f"attempt {result.attempt} succeeded"
                    + (f": {sizes}" if sizes else "")
                    + counted,
                )
                digests = {
                    b.edge: f"sha256:{info.sha256}"
                    for b in run.node(node_id).outputs
                    if (info := result.outputs.get(b.name)) is not None and info.sha256
                }
                transition = run.attempt_succeeded(
                    node_id, result.attempt, collections, digests=digests
                )
                await self._apply(run, transition)
                if run.state(node_id).status == NodeStatus.COMPLETE:
                    await self._remember(run, result)
                self._work_ended(run, node_id)
                return
        if result.engine_down:
            await self._attempt_lost(run, result)
            return
        result = self._by_retry_policy(run, result)
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
            self._timers[(run.id, node_id, None)] = loop.call_later(
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
        self._work_ended(run, node_id)

    def _by_retry_policy(self, run: RunState, result: AttemptResult) -> AttemptResult:
        """A failed attempt as its NodeDef's Retry sees it: an exit code not worth a
        retry fails the node now; out of memory moves a node's next attempt up a tier."""
        policy = run.defs[result.node_id].retry
        code = result.exit_code
        if code is not None and code in policy.fail_exit_codes and result.retryable:
            return result.model_copy(
                update={
                    "retryable": False,
                    "error": f"{result.error} (exit code {code} is one of the NodeDef's "
                    "Retry.FailExitCodes: not retried)",
                }
            )
        if not (result.oom and policy.tier_up_on_oom and result.item is None):
            return result
        state = run.state(result.node_id)
        if result.attempt != state.attempt or result.attempt >= state.max_attempts:
            return result
        current = TIERS[state.tier or run.defs[result.node_id].tier]
        bigger = sorted(
            (TIERS[name] for name in self.queue.offered_tiers() if name in TIERS),
            key=lambda tier: (tier.memory, tier.cpus),
        )
        bigger = [t for t in bigger if t.memory > current.memory and t.gpus == current.gpus]
        if not bigger:
            return result.model_copy(
                update={
                    "error": f"{result.error}; no worker offers a tier larger than "
                    f"{current.name} (Retry.TierUpOnOOM), so the next attempt runs on it again"
                }
            )
        run.set_tier(result.node_id, bigger[0].name)
        return result.model_copy(
            update={
                "error": f"{result.error}; the next attempt runs on tier {bigger[0].name} "
                f"({bigger[0].memory_mib} MiB, Retry.TierUpOnOOM)"
            }
        )

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

    async def _expand_outputs(
        self, run: RunState, node_id: str, attempt: int
    ) -> dict[str, list[CollectionItem]]:
        """The node's collection outputs, each expanded from the tar its worker put."""
        collections: dict[str, list[CollectionItem]] = {}
        for binding in run.node(node_id).outputs:
            if run.is_collection(binding.edge) and node_id not in run.maps:
                collections[binding.edge] = await self._expand(run, binding.edge)
        return collections

    async def _retry(self, run_id: str, node_id: str) -> None:
        self._timers.pop((run_id, node_id, None), None)
        run = self.runs.get(run_id)
        if run is None or run.status.finished:
            return
        if run.state(node_id).status == NodeStatus.RETRYING:
            self._dispatch(run, node_id)
            self._save(run)

    # ------------------------------------------------------------ lost attempts

    async def _look_for_lost(self) -> None:
        """Every lease term, ask the durable queue where the attempts sent a term ago
        are; dispatch again those it lost (dispatch_leases)."""
        term = self.queue.lease_term
        while True:
            await asyncio.sleep(term)
            due = self._leases.due(time.monotonic(), term)
            if not due:
                continue
            try:
                missing, caught_up = await self.queue.unaccounted(due)
            except Exception as exc:  # the queue is down: its own calls say so
                log.warning("lost_attempts_unknown", error=_reason(exc))
                continue
            for lease in self._leases.lost(missing, caught_up):
                run = self.runs.get(lease.run_id)
                if run is None:
                    continue
                try:
                    await self._lost(run, lease)
                except Exception as exc:  # the look for the others must go on
                    log.exception("lost_attempt_not_sent", run_id=run.id, node_id=lease.node_id)
                    await self._fail_run(
                        run.id, f"the service failed to send a lost attempt again ({exc})"
                    )

    def _nodedef_label(self, run: RunState, node_id: str) -> str:
        """The node's NodeDef as a metrics label. A label per flow-chosen name would grow
        /metrics without bound and show every tenant the names other tenants use:
        catalog names only."""
        uses = run.node(node_id).uses
        return uses if uses in self.catalog else OTHER_NODEDEFS

    def _lease(self, run: RunState, node_id: str, attempt: int, item: str | None) -> None:
        """The attempt is in a durable queue from now: looked for if it is long in coming."""
        if self.queue.durable:
            lease = Lease(run.id, node_id, attempt, item, time.monotonic())
            self._leases.grant(attempt_key(run.id, node_id, attempt, item), lease)

    async def _lost(self, run: RunState, lease: Lease) -> None:
        """The queue lost the attempt (Redis lost or moved its data): it is dispatched
        again under the same number, not counted against MaxAttempts."""
        node_id, item, attempt = lease.node_id, lease.item, lease.attempt
        if run.status.finished:
            return
        if item is not None:
            current = run.item(node_id, item)
            if current is None or current.attempt != attempt or current.status not in SENT:
                return
            transition = run.item_retry(node_id, item, again=True)
        else:
            state = run.state(node_id)
            if state.attempt != attempt or state.status not in SENT:
                return
            transition = None
        what = f"item {item!r}" if item is not None else "node"
        log.warning("attempt_lost_in_queue", run_id=run.id, node_id=node_id, item=item)
        self.metrics.attempt_ended("lost", self._nodedef_label(run, node_id), {})
        self._log(
            run,
            node_id,
            f"attempt {attempt} of this {what} is in the queue no more, nor on any worker "
            "(Redis lost or moved its data): dispatching it again (not counted against "
            "MaxAttempts)",
            level="warning",
        )
        if transition is not None:
            await self._apply(run, transition)
        else:
            self._dispatch(run, node_id, again=True)
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
        self._unfinished[run.plan.tenant] += 1
        self._await_uploads(run)
        for node_id in run.active_nodes():
            if node_id in run.maps:
                continue  # a mapped node runs as its items, below
            state = run.state(node_id)
            if f"{run.id}/{node_id}/{state.attempt}" in in_queue:
                self._log(run, node_id, "service restarted: this attempt is still in the queue")
                self._lease(run, node_id, state.attempt, None)
                continue
            again = state.status != NodeStatus.RETRYING
            self._log(run, node_id, "service restarted: dispatching this node again")
            self._dispatch(run, node_id, again=again)
        items = run.take_ready_items()
        marked = {(node_id, name) for node_id, name, _attempt in items}
        for node_id, name, item in run.active_items():
            if (node_id, name) in marked:
                continue
            if attempt_key(run.id, node_id, item.attempt, name) in in_queue:
                self._lease(run, node_id, item.attempt, name)
                continue
            if item.status == NodeStatus.RETRYING:
                items.extend(run.item_retry(node_id, name).items)
            else:
                items.extend(run.item_retry(node_id, name, again=True).items)
        await self._apply(run, Transition(dispatch=run.ready_nodes(), items=items))
        for (store_name, key), (run_id, _edge) in list(self._awaited.items()):
            if run_id == run.id:
                await self._check_upload(self._store(run, store_name), store_name, key)
        self._arm_upload_deadline(run)
        log.info("run_resumed", run_id=run.id, status=run.status.value)


def _output_item_name(run: RunState, edge: str, item: str, content_type: str) -> str:
    """What an item's output is called in its collection: named for the type the node
    made (``typed_item_name``), unless another item has that name already (two inputs
    ``a.csv`` and ``a.txt`` both parsed to JSON): then by its own, or its own plus the
    type's extension."""
    taken = run.collections[edge].items
    typed = typed_item_name(item, content_type)
    suffix = typed[len(typed.rpartition(".")[0]) :] if typed != item else ""
    for name in (typed, item, f"{item}{suffix}"):
        if name not in taken:
            return name
    return item  # every input item's name differs: not reached


def _batched(tasks: list[Task], sizes: Callable[[str, str], int]) -> list[Task]:
    """The tasks with each node's items in batches (one container runs a batch's items
    one after another) of ``sizes(node, tier)``; a node's own tasks, and a lone item,
    as they are."""
    out: list[Task] = []
    by_node: dict[str, list[Task]] = {}
    for task in tasks:
        if task.item is None:
            out.append(task)
        else:
            by_node.setdefault(task.node_id, []).append(task)
    for node_id, items in by_node.items():
        size = sizes(node_id, items[0].tier)
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            if len(chunk) == 1:
                out.append(chunk[0])
            else:
                out.append(chunk[0].model_copy(update={"batch": chunk}))
    return out


def _still_ready(run: RunState, pending: Pending) -> bool:
    """Whether a pending attempt is still the one to send (not cancelled or superseded)."""
    node_id, attempt, _since, item = pending
    if item is None:
        state = run.state(node_id)
        return state.attempt == attempt and state.status == NodeStatus.READY
    found = run.item(node_id, item)
    return found is not None and found.attempt == attempt and found.status == NodeStatus.READY


def _outcome(result: AttemptResult) -> str:
    """How an attempt ended, as the metrics count it."""
    if result.ok:
        return "reused" if result.reused else "succeeded"
    return "lost" if result.engine_down else "failed"


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


def _always(_tier: str) -> bool:
    return True


def _tier_order(name: str) -> tuple[int, int]:
    tier = TIERS[name]
    return (tier.gpus, tier.memory)


__all__ = ["Scheduler"]
