"""Reading runs: a run resolved live-or-stored once, then its status, graph, artifacts
and events.

A run the scheduler holds is read through its read-only ``LiveRun`` view; one it no
longer holds is read from the state store once, and an ended one is kept as JSON
(it cannot change any more), so a poll of a finished run costs a lookup.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar

from orchestrator.errors import ArtifactNotFound, RunExpired, RunFinished, RunNotFound
from orchestrator.events import EventBus
from orchestrator.models import (
    DEFAULT_TENANT,
    Artifact,
    CollectionItem,
    Flow,
    FlowRun,
    FlowSubmission,
)
from orchestrator.run_ids import RunIds
from orchestrator.runtime import terminal_edges
from orchestrator.scheduler import Scheduler
from orchestrator.state import StateStore
from orchestrator.stores import StoreRegistry
from storage import ObjectInfo, Store

T = TypeVar("T")

#: Ended runs the scheduler no longer holds, kept as JSON once read back from the
#: database (they cannot change any more): at most this many, and this many bytes.
ENDED_RUNS_CACHED = 1000
ENDED_RUNS_CACHED_BYTES = 16 * 1024 * 1024
#: A run with more nodes than this is streamed whole once, then as deltas (its nodes
#: that changed), not whole on every change.
DELTA_NODES = 200


@dataclass(frozen=True)
class RunRecord:
    """A run as resolved once: its FlowRun, whose it is, and the Flow it runs (flags
    applied), from which its stores are found."""

    run: FlowRun
    tenant: str
    flow: Flow


@dataclass(frozen=True)
class Update:
    """One step of a watched run.

    ``status`` and ``end`` carry the run, ``log`` one line, ``heartbeat`` nothing new.
    """

    name: str
    run: FlowRun
    line: dict[str, Any] | None = None
    #: For ``status``: the nodes changed and artifacts added since the update before.
    changes: tuple[set[str], list[str]] | None = None


class Runs:
    def __init__(
        self,
        scheduler: Scheduler,
        state: StateStore,
        stores: StoreRegistry,
        events: EventBus,
        run_ids: RunIds,
    ) -> None:
        self.run_ids = run_ids
        self.scheduler = scheduler
        self.state = state
        self.stores = stores
        self.events = events
        # Reads of artifacts block on stores: bounded, and apart from the threads that
        # dispatch runs, so a slow download never holds back a dispatch.
        self._io = ThreadPoolExecutor(4, thread_name_prefix="pipewell-reads")
        self._ended = EndedRuns(ENDED_RUNS_CACHED, ENDED_RUNS_CACHED_BYTES)

    def close(self) -> None:
        self._io.shutdown(wait=False, cancel_futures=True)

    async def io_call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    # ------------------------------------------------------------ one run, resolved once

    async def resolve(self, run_id: str, tenant: str | None = None) -> RunRecord:
        """The run live or stored, with its Flow; another tenant's is RunNotFound."""
        live = self.scheduler.live(run_id)
        if live is not None:
            _check_owner(run_id, live.tenant, tenant)
            return RunRecord(live.run, live.tenant, live.flow)
        snapshot = await self._snapshot(run_id)
        owner = snapshot["plan"].get("tenant", DEFAULT_TENANT)
        _check_owner(run_id, owner, tenant)
        run = FlowRun.model_validate(snapshot["run"])
        self._keep_if_ended(run_id, owner, run)
        flow = FlowSubmission.model_validate(snapshot["plan"]["submission"]).flow
        return RunRecord(run, owner, flow)

    async def get(self, run_id: str, tenant: str | None = None) -> FlowRun:
        """The run as it stands, live or finished; another tenant's is RunNotFound."""
        live = self.scheduler.live(run_id)
        if live is not None:
            _check_owner(run_id, live.tenant, tenant)
            return live.run
        return FlowRun.model_validate_json(await self._stored_json(run_id, tenant))

    async def status_json(self, run_id: str, tenant: str | None = None) -> bytes:
        """``get`` as the JSON the API answers, made once per change of the run (for
        a run the scheduler no longer holds, once): a poll costs a lookup."""
        live = self.scheduler.live(run_id)
        if live is not None:
            _check_owner(run_id, live.tenant, tenant)
            return live.json()
        return await self._stored_json(run_id, tenant)

    async def _stored_json(self, run_id: str, tenant: str | None) -> bytes:
        """The FlowRun's JSON of a run the scheduler does not hold, from the database."""
        cached = self._ended.get(run_id)
        if cached is None:
            snapshot = await self._snapshot(run_id)
            owner = snapshot["plan"].get("tenant", DEFAULT_TENANT)
            run = FlowRun.model_validate(snapshot["run"])
            cached = self._keep_if_ended(run_id, owner, run)
        owner, data = cached
        _check_owner(run_id, owner, tenant)
        return data

    def _keep_if_ended(self, run_id: str, owner: str, run: FlowRun) -> tuple[str, bytes]:
        entry = (owner, run.model_dump_json().encode())
        # Only an ended run is final: one read between its first write and the
        # scheduler taking it up (a submission in progress) would go stale.
        if run.status.finished and self.scheduler.live(run_id) is None:
            self._ended.put(run_id, entry)
        return entry

    async def _snapshot(self, run_id: str) -> dict[str, Any]:
        """A run the scheduler no longer holds, as last written."""
        snapshot = await self.state.load(run_id) if _looks_like_run_id(run_id) else None
        if snapshot is None:
            raise self.missing(run_id)
        return snapshot

    def missing(self, run_id: str) -> RunNotFound:
        """What to say of a run that is not there: expired (retention deleted it: its
        ID is one this service made), or never was."""
        started = self.run_ids.issued(run_id)
        return RunNotFound(run_id) if started is None else RunExpired(run_id, started)

    def forget(self, run_ids: list[str]) -> None:
        """Retention deleted these runs, or some of their artifacts: read them again."""
        for run_id in run_ids:
            self._ended.drop(run_id)

    # ------------------------------------------------------------ what readers ask

    async def flow_of(self, run_id: str, tenant: str | None = None) -> Flow:
        """The Flow a run runs (flags applied), for drawing it; another tenant's is RunNotFound."""
        return (await self.resolve(run_id, tenant)).flow

    async def recent(self, tenant: str, limit: int) -> list[dict[str, Any]]:
        """The tenant's newest runs, newest first (ID, Flow, Status, StartedAt, FinishedAt)."""
        return await self.state.recent(tenant, limit)

    def active_runs(self) -> int:
        """How many runs have not finished (every tenant's)."""
        return self.scheduler.live_runs()

    def changed(self, run_id: str) -> None:
        """An ended run was changed (a retry now names it): its JSON is made again."""
        self._ended.drop(run_id)

    async def cancel(self, run_id: str, tenant: str) -> FlowRun:
        flow_run = await self.get(run_id, tenant)
        stopped = await self.scheduler.cancel(run_id)
        if stopped is None:  # finished, and no longer held
            raise RunFinished(run_id, flow_run.status.value)
        return stopped

    async def terminal_edges(self, run_id: str) -> list[str]:
        """The edges no node reads: what an invocation returns."""
        live = self.scheduler.live(run_id)
        if live is not None:
            return live.terminal_edges()
        return terminal_edges((await self.resolve(run_id)).flow)

    # ------------------------------------------------------------ artifacts

    async def open_artifact(
        self, record: RunRecord, edge: str
    ) -> tuple[ObjectInfo, BinaryIO, Store, Artifact]:
        """The artifact on ``edge``: its object's facts, a reader, its store, its name."""
        artifact = record.run.artifacts.get(edge)
        if artifact is None:
            raise ArtifactNotFound(record.run.id, edge, "no such edge or not produced yet")
        if artifact.expired_at is not None:
            raise ArtifactNotFound(
                record.run.id,
                edge,
                f"it expired at {artifact.expired_at:%Y-%m-%d %H:%M} UTC (its DataWell's "
                "Lifetime is shorter than its run's): its objects were deleted",
            )
        if artifact.items is not None:
            raise ArtifactNotFound(
                record.run.id,
                edge,
                f"it is a collection of {artifact.items} items, not one object: read it by its "
                "items",
            )
        store = await self.store_of(record, artifact.store_name)
        info = await self.io_call(store.stat, artifact.object_name)
        if info is None:
            raise ArtifactNotFound(record.run.id, edge, "the object is gone from its store")
        reader = await self.io_call(store.open_read, artifact.object_name)
        return info, reader, store, artifact

    async def collection_items(
        self, record: RunRecord, edge: str, after: str | None, limit: int
    ) -> list[CollectionItem]:
        """Up to ``limit`` items of the collection on ``edge`` after ``after``, in the
        order they came: live, or as last written."""
        live = self.scheduler.live(record.run.id)
        if live is not None:
            items = live.collections[edge].items
            names = list(items)
            start = names.index(after) + 1 if after in items else 0
            return [items[n] for n in names[start : start + limit]]
        rows = await self.state.member_page(record.run.id, edge, after, limit)
        return [CollectionItem.model_validate(row) for row in rows]

    async def store_of(self, record: RunRecord, store_name: str) -> Store:
        """A store the run names; a flow's own ones are opened first when the scheduler
        no longer holds the run (and so no longer keeps them open)."""
        if record.flow.stores and self.scheduler.live(record.run.id) is None:
            await self.io_call(self.stores.prepare, record.flow)
        return self.stores.get(store_name, record.flow)

    # ------------------------------------------------------------ events

    async def watch(
        self, run_id: str, timeout: float, *, heartbeat: float | None = None
    ) -> AsyncIterator[Update]:
        """The run now, then every change and log line, until it finishes or ``timeout``.

        With ``heartbeat``, a quiet stretch that long yields a ``heartbeat``
        update, so a stream can show it is alive.
        """
        deadline = time.monotonic() + timeout
        async with self.events.subscribe(run_id) as events:
            run = await self.get(run_id)
            yield Update("end" if run.status.finished else "status", run)
            if run.status.finished:
                return
            while (left := deadline - time.monotonic()) > 0:
                try:
                    event = await asyncio.wait_for(events.get(), min(left, heartbeat or left))
                except TimeoutError:
                    if heartbeat and deadline - time.monotonic() > 0:
                        yield Update("heartbeat", run)
                        continue
                    return
                if event.name == "log":
                    yield Update("log", run, event.data)
                    continue
                # The run as it is now (the scheduler's own while it holds it): a reader
                # behind skips to the present, and no snapshot is made per change.
                run = await self.get(run_id)
                changes = events.take_changes()
                yield Update(event.name, run, changes=changes)
                if event.name == "end":
                    return

    def delta_json(self, run_id: str, changes: tuple[set[str], list[str]] | None) -> bytes | None:
        """What changed in a big run (more than DELTA_NODES nodes) as a ``delta`` event's
        JSON; None for a run a stream sends whole."""
        live = self.scheduler.live(run_id)
        if live is None or changes is None or len(live.run.node_state) <= DELTA_NODES:
            return None
        return live.delta_json(*changes)


class EndedRuns:
    """Run id → (tenant, FlowRun JSON) of ended runs, the least recently read dropped
    first beyond ``limit`` runs or ``max_bytes`` of JSON."""

    def __init__(self, limit: int, max_bytes: int) -> None:
        self.limit = limit
        self.max_bytes = max_bytes
        self.bytes = 0
        self._runs: OrderedDict[str, tuple[str, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._runs)

    def get(self, run_id: str) -> tuple[str, bytes] | None:
        found = self._runs.get(run_id)
        if found is not None:
            self._runs.move_to_end(run_id)
        return found

    def drop(self, run_id: str) -> None:
        """The run changed after all (a retry names it): read it again next time."""
        previous = self._runs.pop(run_id, None)
        if previous is not None:
            self.bytes -= len(previous[1])

    def put(self, run_id: str, entry: tuple[str, bytes]) -> None:
        if len(entry[1]) > self.max_bytes:
            return
        previous = self._runs.pop(run_id, None)
        if previous is not None:
            self.bytes -= len(previous[1])
        self._runs[run_id] = entry
        self.bytes += len(entry[1])
        while len(self._runs) > self.limit or self.bytes > self.max_bytes:
            _, (_, dropped) = self._runs.popitem(last=False)
            self.bytes -= len(dropped)


def _check_owner(run_id: str, owner: str, tenant: str | None) -> None:
    if tenant is not None and owner != tenant:
        raise RunNotFound(run_id)


def _looks_like_run_id(run_id: str) -> bool:
    return len(run_id) == 32 and all(c in "0123456789abcdef" for c in run_id)


__all__ = ["DELTA_NODES", "EndedRuns", "RunRecord", "Runs", "Update"]
