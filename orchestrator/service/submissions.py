"""A flow made a run: validated, its NodeDefs resolved once, planned once, its stores
opened, its static objects checked, its inputs in place (WaitingURLs handed out, or an
invocation's input written), and handed to the scheduler ready to dispatch."""

from __future__ import annotations

import asyncio
import io
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import BinaryIO

import structlog

from orchestrator.config import Settings
from orchestrator.errors import FlowInvalid, InputMismatch, StorageLow
from orchestrator.models import DEFAULT_TENANT, FlowRun, FlowSubmission, NodeDef, WaitingURL, utcnow
from orchestrator.run_ids import RunIds
from orchestrator.runtime import RunState, plan_run
from orchestrator.scheduler import Scheduler
from orchestrator.service.usage import StorageUsage
from orchestrator.stores import StoreCalls, StoreRegistry, store_policy
from orchestrator.validation import ValidationEntry, ValidationResult, resolve_defs, validate
from storage import Store

log = structlog.get_logger(__name__)

#: An input an invocation gives an entry edge: its bytes, or what opens a stream of them
#: (an object of another store), and its content type.
Input = tuple[bytes | Callable[[], BinaryIO], str]


class Submissions:
    def __init__(
        self,
        settings: Settings,
        scheduler: Scheduler,
        stores: StoreRegistry,
        calls: StoreCalls,
        catalog: dict[str, NodeDef],
        run_ids: RunIds,
        usage: StorageUsage | None = None,
    ) -> None:
        self.run_ids = run_ids
        self.usage = usage
        self.settings = settings
        self.scheduler = scheduler
        self.stores = stores
        self.calls = calls
        self.catalog = catalog
        self.store_policy = store_policy(settings.storage, settings.retention)
        self.space = FreeSpace(Path(settings.data_dir), settings.retention.low_water)
        # Validating and planning a big flow is pure CPU: on threads, so the loop (and
        # every other tenant's request) gets its turns meanwhile.
        self._planning = ThreadPoolExecutor(2, thread_name_prefix="pipewell-plan")

    def close(self) -> None:
        self._planning.shutdown(wait=False, cancel_futures=True)

    async def validate(self, submission: FlowSubmission) -> ValidationResult:
        """Validate off the event loop: 10,000 nodes take half a second."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._planning, self._validate, submission)

    def _validate(self, submission: FlowSubmission) -> ValidationResult:
        return validate(
            submission,
            catalog=self.catalog,
            stores=self.store_policy,
            max_nodes=self.settings.max_flow_nodes,
        )

    async def submit(
        self,
        submission: FlowSubmission,
        *,
        tenant: str = DEFAULT_TENANT,
        inputs: dict[str, Input] | None = None,
        defs: dict[str, NodeDef] | None = None,
    ) -> FlowRun:
        """A new run of ``submission``, accepted by the scheduler.

        ``inputs`` (edge → input) fills the upload edges at once instead of handing
        out WaitingURLs; it must name each of them. ``defs`` (node ID → NodeDef) when
        the caller has resolved them already.
        """
        async with self.scheduler.admission(tenant):
            return await self._submit(submission, tenant, inputs, defs)

    async def _submit(
        self,
        submission: FlowSubmission,
        tenant: str,
        inputs: dict[str, Input] | None,
        defs: dict[str, NodeDef] | None,
    ) -> FlowRun:
        run, static = await self.prepare(submission, tenant, defs)
        if inputs is not None:
            expected = set(run.upload_edges())
            if set(inputs) != expected:
                raise InputMismatch(sorted(expected), sorted(inputs))
            arrived = {}
            for edge, (data, content_type) in inputs.items():
                store_name, key = run.upload_key(edge)
                store = self._store(run, store_name)
                write = partial(_write_input, store, key, data, content_type)
                arrived[edge] = await self.calls.call(write, store=store)
            return await self.scheduler.accept(run, [], arrived=arrived, static=static)
        waiting = await self.waiting_urls(run, run.pending_uploads())
        return await self.scheduler.accept(run, waiting, static=static)

    async def prepare(
        self, submission: FlowSubmission, tenant: str, defs: dict[str, NodeDef] | None = None
    ) -> tuple[RunState, dict[str, str | None]]:
        """A new run of ``submission``, planned (FlowInvalid if it is not valid), its
        stores open and its static objects there (their digests returned, by edge).
        StorageLow while the data directory is short of space, TooBusy over a quota of
        stored bytes or a tier's backlog (its quota of runs: ``Scheduler.admission``)."""
        self.space.check()
        if self.usage is not None:
            self.usage.check(tenant)
        loop = asyncio.get_running_loop()
        plan = partial(self._plan, submission, tenant, defs)
        run = await loop.run_in_executor(self._planning, plan)
        await self.scheduler.check_room({node_def.tier for node_def in run.defs.values()})
        await self.calls.prepare(submission.flow)
        return run, await self._check_static_objects(run)

    def _plan(
        self, submission: FlowSubmission, tenant: str, defs: dict[str, NodeDef] | None
    ) -> RunState:
        """Validate, resolve the NodeDefs (unless given) and plan a new run: on a planning
        thread (a second for 10,000 nodes)."""
        self._validate(submission).raise_if_invalid()
        defs = defs if defs is not None else resolve_defs(submission, self.catalog)
        now = utcnow()
        plan = plan_run(
            submission,
            run_id=self.run_ids.new(now),
            now=now,
            tenant=tenant,
            defs=defs,
            lifetime=self.settings.run_lifetime(tenant),
        )
        return RunState(plan, defs, max_log_lines=self.settings.executor.log_lines_per_node)

    def _store(self, run: RunState, store_name: str) -> Store:
        return self.stores.get(store_name, run.flow)

    async def _check_static_objects(self, run: RunState) -> dict[str, str | None]:
        """WELL_010: a static well's object must be there (in the tenant's namespace).
        Returns each static edge's digest, where its store knows one."""
        digests: dict[str, str | None] = {}
        missing = []
        for edge in run.plan.edges:
            if run.plan.edge(edge).source != "static":
                continue
            artifact = run.artifact_for(edge)
            store = self._store(run, artifact.store_name)
            info = await self.calls.call(store.stat, artifact.object_name, store=store)
            if info is not None:
                digests[edge] = info.digest
            else:
                missing.append(
                    ValidationEntry(
                        code="WELL_010",
                        message=f"the static DataWell on edge {edge!r} names an object that is "
                        f"not in store {artifact.store_name!r} (looked for "
                        f"{artifact.object_name!r}: in the service's stores, Keys are relative "
                        "to your tenant's namespace); store it there first, or fix the Key",
                        edge=edge,
                        well=edge,
                        store=artifact.store_name,
                    ).model_dump()
                )
        if missing:
            raise FlowInvalid(missing)
        return digests

    async def waiting_urls(self, run: RunState, edges: list[str]) -> list[WaitingURL]:
        """A create-only PUT URL for each of the run's upload ``edges``."""
        ttl = self.settings.storage.url_ttl
        expires = utcnow() + timedelta(seconds=ttl)
        urls = []
        for edge in edges:
            artifact = run.artifact_for(edge)
            store_name, key = run.upload_key(edge)
            store = self._store(run, store_name)
            # Create-only: once the input is there, the URL cannot replace it.
            presign = partial(store.put_url, key, ttl, create_only=True)
            url = await self.calls.call(presign, store=store)
            urls.append(WaitingURL(artifact=artifact, put_url=url, ttl=expires))
        return urls


class FreeSpace:
    """The data directory's free space against its low-water mark, looked at once a
    second at most (a statfs: the same filesystem for every run)."""

    def __init__(self, data_dir: Path, low_water: int, every: float = 1.0) -> None:
        self.data_dir = data_dir
        self.low_water = low_water
        self.every = every
        self._free: int | None = None
        self._looked_at = -every

    def check(self) -> None:
        if not self.low_water:
            return
        now = time.monotonic()
        if now - self._looked_at >= self.every:
            self._looked_at = now
            was_low = self._free is not None and self._free < self.low_water
            self._free = shutil.disk_usage(self.data_dir).free
            low = self._free < self.low_water
            if low != was_low:
                (log.warning if low else log.info)(
                    "data_dir_low" if low else "data_dir_space_back",
                    free_mib=self._free // 2**20,
                    low_water_mib=self.low_water // 2**20,
                    new_runs="refused (507 STORAGE_LOW)" if low else "taken again",
                )
        if self._free is not None and self._free < self.low_water:
            raise StorageLow(self._free, self.low_water)


def _write_input(
    store: Store, key: str, data: bytes | Callable[[], BinaryIO], content_type: str
) -> str | None:
    """An invocation's input into its edge's object: bytes, or a stream another store
    opens. Returns the digest the store knows it by."""
    with io.BytesIO(data) if isinstance(data, bytes) else data() as source:
        return store.write(key, source, content_type=content_type).digest


__all__ = ["FreeSpace", "Input", "Submissions"]
