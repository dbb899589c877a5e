"""Run state in SQLite under the data directory.

Reached through the service's ``Database`` (one connection, one thread). Writes
are batched: ``save`` marks a run dirty and a writer task writes every dirty run in
one transaction shortly after, so a burst of log lines costs one write. A write
is of what changed (``RunState.take_write``): the run's own fields, the nodes and
artifacts that changed, each a row of its own, and the plan the first time; a
10,000-node run whose one node changed writes that node. ``flush`` forces it
(shutdown, tests).

A run stays dirty until a write of its latest change succeeds. A write that
fails (the disk is full, the directory was made immutable) is logged and
retried with backoff while the runs go on in memory. ``save_now`` is for a new
run, accepted only once it is on disk: it raises DataDirError instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any, Protocol

import structlog

from orchestrator import database
from orchestrator.errors import DataDirError
from orchestrator.runtime import RunWrite

log = structlog.get_logger(__name__)


class Persisted(Protocol):
    """A run as the state store takes it: its changes since the last write, or all of it."""

    def take_write(self) -> RunWrite: ...

    def snapshot(self) -> dict[str, Any]: ...


#: Seconds before the first retry of a failed write, doubled up to the second.
RETRY_FIRST, RETRY_MAX = 0.25, 5.0
#: While writes keep failing, the log says so again this often (seconds).
REPORT_EVERY = 60.0


class StateStore:
    def __init__(self, db: database.Database, flush_delay: float = 0.05) -> None:
        self.db = db
        self.flush_delay = flush_delay
        # Runs changed since their last write was taken; their changes are taken at
        # write time, once per batch.
        self._dirty: dict[str, Persisted] = {}
        # Writes taken that failed: written again, with whatever came after them.
        self._failed: dict[str, tuple[Persisted, RunWrite]] = {}
        self._wanted = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._writer: asyncio.Task[None] | None = None
        self._failing_since: float | None = None
        self._reported_at = 0.0

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name="pipewell-state-writer")

    async def close(self) -> None:
        """Stop the writer and write what is dirty (the database stays open: not ours)."""
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        try:
            await self.flush()
        except DataDirError as exc:
            log.error("state_lost_at_shutdown", runs=sorted(self._dirty), error=str(exc))

    # ------------------------------------------------------------ runs

    def save(self, run_id: str, run: Persisted) -> None:
        """Queue a write of the run's changes (coalesced: many saves, one write)."""
        self._dirty[run_id] = run
        self._wanted.set()

    async def save_now(self, run_id: str, run: Persisted) -> None:
        """Write a new run at once, with every dirty one; DataDirError if it is not on disk.

        A run that failed here is not kept: its caller refuses it.
        """
        await self.flush({run_id: run})

    async def flush(self, new: dict[str, Persisted] | None = None) -> None:
        """Write every dirty run (and ``new``) in one transaction; raise DataDirError."""
        async with self._write_lock:
            taken, self._dirty = {**self._dirty, **(new or {})}, {}
            failed, self._failed = self._failed, {}
            writes = {
                run_id: run.take_write().after(failed.pop(run_id, (None, None))[1])
                for run_id, run in taken.items()
            } | {run_id: write for run_id, (_, write) in failed.items()}
            if not writes:
                return
            try:
                await self.db.run(self._write, list(writes.values()))
            except DataDirError as exc:
                sources = {**{r: s for r, (s, _) in failed.items()}, **taken}
                refused = set(new or ())  # a new run refused is not kept
                self._failed = {
                    run_id: (sources[run_id], write)
                    for run_id, write in writes.items()
                    if run_id not in refused
                }
                if self._failing_since is None:
                    self._failing_since = self._reported_at = time.monotonic()
                    log.error(
                        "state_write_failed",
                        error=str(exc),
                        unwritten_runs=len(self._failed),
                        retry="with backoff until it succeeds",
                    )
                raise
            for run_id, write in writes.items():
                if write.partial:  # the rest of its nodes in the next batch
                    self._dirty.setdefault(run_id, taken.get(run_id) or failed[run_id][0])
                    self._wanted.set()
            if self._failing_since is not None:
                log.info(
                    "state_writes_resumed",
                    written_runs=len(writes),
                    failed_for_seconds=round(time.monotonic() - self._failing_since, 1),
                )
                self._failing_since = None

    async def _write_loop(self) -> None:
        delay = RETRY_FIRST
        while True:
            await self._wanted.wait()
            await asyncio.sleep(self.flush_delay)  # gather a burst of saves into one write
            self._wanted.clear()
            try:
                await self.flush()
            except Exception as exc:  # the writer must outlive any failure
                if not isinstance(exc, DataDirError):
                    log.exception("state_write_crashed", unwritten_runs=len(self._failed))
                self._report_still_failing(exc)
                self._wanted.set()  # the runs are still dirty
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
            else:
                delay = RETRY_FIRST

    def _report_still_failing(self, exc: Exception) -> None:
        now = time.monotonic()
        if self._failing_since is not None and now - self._reported_at >= REPORT_EVERY:
            self._reported_at = now
            log.error(
                "state_write_still_failing",
                error=str(exc),
                failing_for_seconds=round(now - self._failing_since),
                unwritten_runs=len(self._failed),
            )

    def _write(self, writes: list[RunWrite]) -> None:
        conn = self.db.connection
        with database.writing(self.db.path), conn:
            conn.execute("BEGIN")
            conn.executemany(
                """INSERT INTO runs (id, status, finished, snapshot, plan, created_at, tenant,
                                     flow, started_at, finished_at, expires_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(id) DO UPDATE SET status=excluded.status,
                     finished=excluded.finished, snapshot=excluded.snapshot,
                     plan=coalesce(excluded.plan, runs.plan),
                     finished_at=excluded.finished_at, expires_at=excluded.expires_at,
                     updated_at=strftime('%Y-%m-%dT%H:%M:%fZ', 'now')""",
                [
                    (w.run_id, w.status, int(w.finished), w.run, w.plan, w.created_at, w.tenant,
                     w.flow, w.started_at, w.finished_at, w.expires_at)
                    for w in writes
                ],
            )  # fmt: skip
            conn.executemany(
                "INSERT OR REPLACE INTO run_nodes (run_id, node_id, state) VALUES (?, ?, ?)",
                [(w.run_id, node, state) for w in writes for node, state in w.nodes.items()],
            )
            conn.executemany(
                "INSERT OR IGNORE INTO run_artifacts (run_id, edge, artifact) VALUES (?, ?, ?)",
                [(w.run_id, edge, a) for w in writes for edge, a in w.artifacts.items()],
            )
            conn.executemany(
                "INSERT OR IGNORE INTO run_members (run_id, edge, item, info) VALUES (?, ?, ?, ?)",
                [(w.run_id, e, i, info) for w in writes for (e, i), info in w.members.items()],
            )
            conn.executemany(
                """INSERT INTO run_items (run_id, node_id, item, state) VALUES (?, ?, ?, ?)
                   ON CONFLICT (run_id, node_id, item) DO UPDATE SET state = excluded.state""",
                [(w.run_id, n, i, state) for w in writes for (n, i), state in w.items.items()],
            )

    def _read(
        self, run_id: str, run_text: str, plan_text: str | None, *, items: bool = False
    ) -> dict[str, Any]:
        """A run's snapshot from its rows. One written before runs were written by their
        changes (no plan column) holds all of it in ``snapshot``. With ``items``, its
        collections' and mapped nodes' items too (what resuming it needs; a status read
        does not)."""
        if plan_text is None:
            return json.loads(run_text)
        conn = self.db.connection
        run = json.loads(run_text)
        plan = json.loads(plan_text)
        rows = conn.execute("SELECT node_id, state FROM run_nodes WHERE run_id = ?", (run_id,))
        states = dict(rows.fetchall())
        # In the flow's order, as the FlowRun has them (rows come in key order).
        order = [node["ID"] for node in plan["submission"]["Flow"]["Nodes"]]
        run["NodeState"] = {n: json.loads(states[n]) for n in order if n in states}
        rows = conn.execute(
            "SELECT edge, artifact FROM run_artifacts WHERE run_id = ? ORDER BY rowid", (run_id,)
        )
        run["Artifacts"] = {edge: json.loads(artifact) for edge, artifact in rows}
        snapshot: dict[str, Any] = {"plan": plan, "run": run}
        if items:
            members: dict[str, list[Any]] = {}
            rows = conn.execute(
                "SELECT edge, info FROM run_members WHERE run_id = ? ORDER BY rowid", (run_id,)
            )
            for edge, info in rows:
                members.setdefault(edge, []).append(json.loads(info))
            states: dict[str, dict[str, Any]] = {}
            rows = conn.execute(
                "SELECT node_id, item, state FROM run_items WHERE run_id = ? ORDER BY rowid",
                (run_id,),
            )
            for node_id, item, state in rows:
                states.setdefault(node_id, {})[item] = json.loads(state)
            snapshot.update(members=members, items=states)
        return snapshot

    async def load(self, run_id: str, *, items: bool = False) -> dict[str, Any] | None:
        """A run's snapshot as last written (or about to be); with ``items``, its
        collections' and mapped nodes' items too."""
        pending = self._dirty.get(run_id) or self._failed.get(run_id, (None,))[0]
        if pending is not None:
            if not items:
                return pending.snapshot()
            await self.flush()  # its items are in its rows once written

        def read() -> dict[str, Any] | None:
            row = self.db.connection.execute(
                "SELECT snapshot, plan FROM runs WHERE id = ?", (run_id,)
            ).fetchone()
            return self._read(run_id, *row, items=items) if row else None

        return await self.db.run(read)

    async def add_retry(self, run_id: str, retry_id: str) -> None:
        """Name ``retry_id`` among the runs that retried the stored run ``run_id``."""

        def write() -> None:
            with database.writing(self.db.path):
                self.db.connection.execute(
                    """UPDATE runs SET snapshot = json_set(snapshot, '$.RetriedBy',
                           json_insert(coalesce(json_extract(snapshot, '$.RetriedBy'),
                                                json('[]')), '$[#]', ?))
                       WHERE id = ?""",
                    (retry_id, run_id),
                )

        await self.db.run(write)

    async def recent(self, tenant: str, limit: int) -> list[dict[str, Any]]:
        """The tenant's newest runs, newest first: ID, Flow, Status, StartedAt, FinishedAt."""
        with contextlib.suppress(DataDirError):  # writes failing: list what is on disk
            await self.flush()  # a run accepted a moment ago is listed too

        def read() -> list[dict[str, Any]]:
            rows = self.db.connection.execute(
                "SELECT id, flow, status, started_at, finished_at FROM runs WHERE tenant = ? "
                "ORDER BY created_at DESC, id LIMIT ?",
                (tenant, limit),
            )
            names = ("ID", "Flow", "Status", "StartedAt", "FinishedAt")
            return [dict(zip(names, row, strict=True)) for row in rows]

        return await self.db.run(read)

    async def item_page(
        self, run_id: str, node_id: str, status: str | None, after: str | None, limit: int
    ) -> list[tuple[str, dict[str, Any]]]:
        """A mapped node's items as last written, in the order they came, after ``after``:
        (name, row) pairs, at most ``limit``."""
        with contextlib.suppress(DataDirError):
            await self.flush()

        def read() -> list[tuple[str, dict[str, Any]]]:
            query = "SELECT item, state FROM run_items WHERE run_id = ? AND node_id = ?"
            args: list[Any] = [run_id, node_id]
            if after is not None:
                query += (
                    " AND rowid > coalesce((SELECT rowid FROM run_items WHERE run_id = ? AND "
                    "node_id = ? AND item = ?), 0)"
                )
                args += [run_id, node_id, after]
            if status is not None:
                query += " AND json_extract(state, '$.Status') = ?"
                args.append(status)
            query += " ORDER BY rowid LIMIT ?"
            rows = self.db.connection.execute(query, (*args, limit))
            return [(item, json.loads(state)) for item, state in rows]

        return await self.db.run(read)

    async def member_page(
        self, run_id: str, edge: str, after: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """A collection's items as last written, in the order they came, after ``after``."""
        with contextlib.suppress(DataDirError):
            await self.flush()

        def read() -> list[dict[str, Any]]:
            query = "SELECT info FROM run_members WHERE run_id = ? AND edge = ?"
            args: list[Any] = [run_id, edge]
            if after is not None:
                query += (
                    " AND rowid > coalesce((SELECT rowid FROM run_members WHERE run_id = ? AND "
                    "edge = ? AND item = ?), 0)"
                )
                args += [run_id, edge, after]
            query += " ORDER BY rowid LIMIT ?"
            rows = self.db.connection.execute(query, (*args, limit))
            return [json.loads(info) for (info,) in rows]

        return await self.db.run(read)

    async def unfinished(self) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
            rows = self.db.connection.execute(
                "SELECT id, snapshot, plan FROM runs WHERE finished = 0 ORDER BY created_at"
            ).fetchall()
            return [self._read(*row, items=True) for row in rows]

        return await self.db.run(read)

    # ------------------------------------------------------------ meta

    async def secret(self, name: str, make) -> bytes:  # type: ignore[no-untyped-def]
        """A persistent secret (e.g. the URL-signing key), made once on first use."""

        def get_or_create() -> bytes:
            conn = self.db.connection
            with database.writing(self.db.path):
                row = conn.execute("SELECT value FROM meta WHERE key = ?", (name,))
                found = row.fetchone()
                if found:
                    return bytes(found[0])
                value = make()
                conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (name, value))
                return value

        return await self.db.run(get_or_create)


__all__ = ["StateStore"]
