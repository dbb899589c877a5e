"""Retention: what outlived its lifetime is deleted, in bounded batches, off the event loop.

An ended run is kept for its lifetime, counted from its end: its flow's ``Lifetime``,
else its tenant's (``tenants.<name>.retention``), else ``retention.runs``. Then its
rows go (state, nodes, artifacts, items, cache entries made from it, its Scade task)
and so do the objects it took in or wrote. An edge whose DataWell asks a ``Lifetime``
of its own is kept that long instead: a shorter one is deleted while its run is still
there (the artifact then says when it expired), a longer one outlives its run's rows
in ``kept_objects`` until its time comes. Langflow's uploads (kept for later runs)
are kept objects from the start, for their tenant's run lifetime.

What is never deleted: a ``static`` well's object (the tenant's own), anything in a
store a flow declared itself, anything outside the run's tenant's namespace
(``tenants/<tenant>/``) in the service's stores, and an object at a key later runs
may write too (one without ``${RUN_ID}`` or ``${UUID}``) that holds other bytes than
the run recorded.

Order, for a crash at any point (kill -9): objects first, then rows, in one
transaction; every step can be done twice. A sweep cut short leaves rows whose
objects are partly gone, and the next one deletes the rest, then the rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from orchestrator import database
from orchestrator.collections.bundles import bundle_key
from orchestrator.config import Settings
from orchestrator.errors import DataDirError
from orchestrator.stores import StoreCalls, StoreRegistry
from orchestrator.validation import tenant_prefix
from storage import Store, StoreError

log = structlog.get_logger(__name__)

#: Objects one list of a collection's folder takes, then deleted before the next.
LIST_PAGE = 1000
#: Due runs a dry run names (it counts them all).
DRY_RUN_LISTED = 100
#: Pages the database gives back to the filesystem after a sweep (4 KiB each).
VACUUM_PAGES = 2000


@dataclass
class Deletions:
    """What one store is asked to delete: keys, folders (a collection's items), and keys
    later runs may write too, deleted only while they hold ``digest``."""

    keys: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    shared: list[tuple[str, str]] = field(default_factory=list)

    def add(self, key: str, *, folder: bool, digest: str | None, shared: bool) -> None:
        if folder:
            self.folders.append(key)
            self.keys.append(bundle_key(key))
        elif not shared:
            self.keys.append(key)
        elif digest is not None:
            self.shared.append((key, digest))
        # A shared key without a recorded digest cannot be told from a later run's: kept
        # (the next run at that key replaces it; it does not pile up).


@dataclass
class SweepReport:
    """What a sweep deleted, or with ``dry_run`` would delete."""

    dry_run: bool = False
    runs: int = 0
    edges: int = 0
    kept_objects: int = 0
    objects: int = 0
    skipped: int = 0
    failed_stores: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        return {
            "DryRun": self.dry_run,
            "Runs": self.runs,
            "EarlyEdges": self.edges,
            "KeptObjects": self.kept_objects,
            "Objects": self.objects,
            "Skipped": self.skipped,
            "FailedStores": self.failed_stores,
            "RunIDs": self.run_ids,
        }


@dataclass
class _DueRun:
    run_id: str
    tenant: str
    ended: float
    plan: dict[str, Any]
    digests: dict[str, str]


class Retention:
    def __init__(
        self,
        settings: Settings,
        db: database.Database,
        stores: StoreRegistry,
        calls: StoreCalls,
        *,
        running: Callable[[str], bool],
        deleted: Callable[[list[str]], None],
    ) -> None:
        self.settings = settings
        self.db = db
        self.stores = stores
        self.calls = calls
        # Whether the scheduler runs it still (an expiry is only set once a run ended:
        # a guard, should a run ever be taken up again).
        self._running = running
        # Runs whose rows are gone, or whose artifacts changed: readers forget them.
        self._deleted = deleted
        self._lock = asyncio.Lock()
        self.on_swept: list[Callable[[SweepReport], None]] = []

    async def sweep_and_say(self) -> None:
        """A sweep, as the service runs one every ``retention.sweep_every``: logged when
        it deleted anything."""
        report = await self.sweep()
        if report.runs or report.edges or report.kept_objects:
            log.info("retention_swept", **report.json() | {"RunIDs": len(report.run_ids)})

    def kept_for(self, tenant: str) -> float:
        return self.settings.run_lifetime(tenant)

    async def keep(self, store: str, key: str, tenant: str, lifetime: float) -> None:
        """Keep an object that belongs to no run (a Langflow upload) for ``lifetime`` s."""

        def write() -> None:
            with database.writing(self.db.path):
                self.db.connection.execute(
                    "INSERT OR REPLACE INTO kept_objects (store, key, tenant, expires_at) "
                    "VALUES (?, ?, ?, ?)",
                    (store, key, tenant, time.time() + lifetime),
                )

        await self.db.run(write)

    # ------------------------------------------------------------ one sweep

    async def sweep(self, *, dry_run: bool = False, now: float | None = None) -> SweepReport:
        """Everything due by ``now``, a batch at a time, until nothing due is left; with
        ``dry_run``, what that would delete (nothing is)."""
        async with self._lock:
            now = time.time() if now is None else now
            report = SweepReport(dry_run=dry_run)
            await self.db.run(self._set_unset_expiries)
            if dry_run:
                await self.db.run(self._count_due, now, report)
                return report
            while True:
                before = (report.runs, report.edges, report.kept_objects)
                await self._sweep_runs(now, report)
                await self._sweep_kept(now, report)
                if (report.runs, report.edges, report.kept_objects) == before:
                    break
                if report.failed_stores:
                    break  # the store is down: the next pass tries again
            if report.runs or report.kept_objects:
                await self.db.run(self._vacuum)
            for listener in self.on_swept:
                listener(report)
            return report

    def _set_unset_expiries(self) -> None:
        """Runs that ended before they had an expiry (before retention, or resumed from
        a plan without a lifetime): their tenant's lifetime from their end."""
        conn = self.db.connection
        tenants = [
            tenant
            for (tenant,) in conn.execute(
                "SELECT DISTINCT tenant FROM runs WHERE finished = 1 AND expires_at IS NULL"
            )
        ]
        with database.writing(self.db.path), conn:
            for tenant in tenants:
                conn.execute(
                    "UPDATE runs SET expires_at = (julianday(coalesce(finished_at, updated_at)) "
                    "- 2440587.5) * 86400.0 + ? WHERE finished = 1 AND expires_at IS NULL "
                    "AND tenant = ?",
                    (self.kept_for(tenant), tenant),
                )

    def _count_due(self, now: float, report: SweepReport) -> None:
        conn = self.db.connection
        report.runs = conn.execute(
            "SELECT count(*) FROM runs WHERE expires_at <= ?", (now,)
        ).fetchone()[0]
        rows = conn.execute(
            "SELECT id FROM runs WHERE expires_at <= ? ORDER BY expires_at LIMIT ?",
            (now, DRY_RUN_LISTED),
        )
        report.run_ids = [run_id for (run_id,) in rows]
        report.kept_objects = conn.execute(
            "SELECT count(*) FROM kept_objects WHERE expires_at <= ?", (now,)
        ).fetchone()[0]

    # ------------------------------------------------------------ runs

    async def _sweep_runs(self, now: float, report: SweepReport) -> None:
        due = await self.db.run(self._due_runs, now)
        due = [run for run in due if not self._running(run.run_id)]
        if not due:
            return
        deletions: dict[str, Deletions] = defaultdict(Deletions)
        gone: list[str] = []  # runs whose rows go now
        kept: list[tuple[str, str, str, int, str | None, float]] = []
        later: dict[str, float] = {}  # run → when something of it is next due
        expired_edges: dict[str, list[str]] = {}
        for run in due:
            edges = run.plan.get("edges", {})
            run_due = run.ended + (run.plan.get("lifetime") or self.kept_for(run.tenant))
            own_stores = {s.get("Name") for s in run.plan.get("flow_stores", [])}
            namespace = tenant_prefix(run.tenant) + "/"
            for edge, planned in edges.items():
                store, key = planned["store"], planned["key"]
                if (
                    planned["source"] == "static"
                    or store in own_stores
                    or store not in self.stores.operator
                    or not key.startswith(namespace)
                ):
                    continue
                edge_due = run.ended + planned["lifetime"] if planned.get("lifetime") else run_due
                folder = bool(planned.get("collection"))
                shared = bool(planned.get("shared"))
                digest = run.digests.get(edge)
                if edge_due <= now:
                    deletions[store].add(key, folder=folder, digest=digest, shared=shared)
                    if run_due > now:
                        expired_edges.setdefault(run.run_id, []).append(edge)
                elif run_due <= now:
                    kept.append((store, key, run.tenant, int(folder), digest if shared else None,
                                 edge_due))  # fmt: skip
                else:
                    later[run.run_id] = min(later.get(run.run_id, edge_due), edge_due)
            if run_due <= now:
                gone.append(run.run_id)
            else:
                later[run.run_id] = min(later.get(run.run_id, run_due), run_due)
        if not await self._delete(deletions, report):
            return  # rows stay until their objects are gone
        await self.db.run(self._forget_runs, gone, kept, later, expired_edges, now)
        report.runs += len(gone)
        report.run_ids += gone
        report.edges += sum(len(edges) for edges in expired_edges.values())
        self._deleted([*gone, *expired_edges])

    def _due_runs(self, now: float) -> list[_DueRun]:
        conn = self.db.connection
        rows = conn.execute(
            """SELECT id, tenant, coalesce(julianday(finished_at), julianday(updated_at)),
                      json_extract(coalesce(plan, json_extract(snapshot, '$.plan')), '$.edges'),
                      json_extract(coalesce(plan, json_extract(snapshot, '$.plan')), '$.lifetime'),
                      json_extract(coalesce(plan, json_extract(snapshot, '$.plan')),
                                   '$.submission.Flow.Stores')
               FROM runs WHERE expires_at <= ?
               ORDER BY expires_at LIMIT ?""",
            (now, self.settings.retention.batch),
        ).fetchall()
        found = []
        for run_id, tenant, ended_day, edges, lifetime, stores in rows:
            plan = {
                "edges": json.loads(edges) if edges else {},
                "lifetime": lifetime,
                "flow_stores": json.loads(stores) if stores else [],
            }
            digests = {}
            if any(e.get("shared") for e in plan["edges"].values()):
                digests = dict(
                    conn.execute(
                        "SELECT edge, json_extract(artifact, '$.Digest') FROM run_artifacts "
                        "WHERE run_id = ? AND json_extract(artifact, '$.Digest') IS NOT NULL",
                        (run_id,),
                    ).fetchall()
                )
            ended = (ended_day - 2440587.5) * 86400.0
            found.append(_DueRun(run_id, tenant, ended, plan, digests))
        return found

    def _forget_runs(
        self,
        gone: list[str],
        kept: list[tuple[str, str, str, int, str | None, float]],
        later: dict[str, float],
        expired_edges: dict[str, list[str]],
        now: float,
    ) -> None:
        conn = self.db.connection
        stamp = datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")
        with database.writing(self.db.path), conn:
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT OR REPLACE INTO kept_objects (store, key, tenant, prefix, digest, "
                "expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                kept,
            )
            ids = [(run_id,) for run_id in gone]
            for table in ("run_nodes", "run_artifacts", "run_members", "run_items"):
                conn.executemany(f"DELETE FROM {table} WHERE run_id = ?", ids)
            conn.executemany("DELETE FROM cache_entries WHERE run_id = ?", ids)
            conn.executemany("DELETE FROM tasks WHERE execution_id = ?", ids)
            conn.executemany("DELETE FROM runs WHERE id = ?", ids)
            conn.executemany(
                "UPDATE runs SET expires_at = ? WHERE id = ?",
                [(due, run_id) for run_id, due in later.items() if run_id not in gone],
            )
            conn.executemany(
                "UPDATE run_artifacts SET artifact = json_set(artifact, '$.ExpiredAt', ?) "
                "WHERE run_id = ? AND edge = ?",
                [
                    (stamp, run_id, edge)
                    for run_id, edges in expired_edges.items()
                    for edge in edges
                ],
            )

    # ------------------------------------------------------------ kept objects

    async def _sweep_kept(self, now: float, report: SweepReport) -> None:
        rows = await self.db.run(self._due_kept, now)
        if not rows:
            return
        deletions: dict[str, Deletions] = defaultdict(Deletions)
        for store, key, _, prefix, digest in rows:
            if store in self.stores.operator:
                deletions[store].add(key, folder=bool(prefix), digest=digest,
                                     shared=digest is not None)  # fmt: skip
        if not await self._delete(deletions, report):
            return

        def forget() -> None:
            conn = self.db.connection
            with database.writing(self.db.path), conn:
                conn.executemany(
                    "DELETE FROM kept_objects WHERE store = ? AND key = ?",
                    [(store, key) for store, key, *_ in rows],
                )

        await self.db.run(forget)
        report.kept_objects += len(rows)

    def _due_kept(self, now: float) -> list[tuple[str, str, str, int, str | None]]:
        return self.db.connection.execute(
            "SELECT store, key, tenant, prefix, digest FROM kept_objects "
            "WHERE expires_at <= ? ORDER BY expires_at LIMIT ?",
            (now, self.settings.retention.batch),
        ).fetchall()

    # ------------------------------------------------------------ objects

    async def _delete(self, deletions: dict[str, Deletions], report: SweepReport) -> bool:
        """Delete in each store (one thread call per store); False if any store failed."""
        ok = True
        for name, wanted in deletions.items():
            store = self.stores.operator[name]
            try:
                deleted, skipped = await self.calls.call(_delete_in, store, wanted, store=store)
            except (StoreError, OSError) as exc:
                ok = False
                report.failed_stores.append(name)
                every = self.settings.retention.sweep_every
                log.warning(
                    "retention_store_failed",
                    store=name,
                    error=str(exc),
                    retry=f"next sweep, in {every:g} s",
                )
                continue
            report.objects += deleted
            report.skipped += skipped
        return ok

    def _vacuum(self) -> None:
        with contextlib.suppress(DataDirError), database.writing(self.db.path):
            self.db.connection.execute(f"PRAGMA incremental_vacuum({VACUUM_PAGES})").fetchall()


def _delete_in(store: Store, wanted: Deletions) -> tuple[int, int]:
    """On a store thread: the keys, each folder's objects page by page, and the shared
    keys still holding their digest. Returns (objects deleted, shared ones left)."""
    deleted = len(wanted.keys)
    store.delete_many(wanted.keys)
    for folder in wanted.folders:
        while page := store.list(folder, LIST_PAGE):
            store.delete_many([info.key for info in page])
            deleted += len(page)
            if len(page) < LIST_PAGE:
                break
    skipped = 0
    for key, digest in wanted.shared:
        info = store.stat(key)
        if info is None:
            continue
        if info.digest != digest:
            # A later run's bytes now, or a store that names them otherwise than it did
            # when they were written (S3: sha256 then, ETag now), so that it cannot tell.
            skipped += 1
            continue
        store.delete(key)
        deleted += 1
    return deleted, skipped


__all__ = ["Deletions", "Retention", "SweepReport"]
