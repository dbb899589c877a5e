"""Run state in SQLite under the data directory.

Reached through the service's ``Database`` (one connection, one thread). Writes
are batched: ``save`` marks a run dirty and a writer task writes every dirty run in
one transaction shortly after, so a burst of log lines costs one write.
``flush`` forces it (shutdown, tests).

A run stays dirty until a write of its latest change succeeds. A write that
fails (the disk is full, the directory was made immutable) is logged and
retried with backoff while the runs go on in memory. ``save_now`` is for a new
run, accepted only once it is on disk: it raises DataDirError instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

import structlog

from orchestrator import database
from orchestrator.errors import DataDirError
from orchestrator.models import DEFAULT_TENANT

log = structlog.get_logger(__name__)

Snapshot = Callable[[], dict[str, Any]]

#: Seconds before the first retry of a failed write, doubled up to the second.
RETRY_FIRST, RETRY_MAX = 0.25, 5.0
#: While writes keep failing, the log says so again this often (seconds).
REPORT_EVERY = 60.0


class StateStore:
    def __init__(self, db: database.Database, flush_delay: float = 0.05) -> None:
        self.db = db
        self.flush_delay = flush_delay
        # run id → (change number, how to snapshot it). The snapshot is taken at
        # write time, once per batch; the number tells whether the run changed
        # again while it was being written.
        self._dirty: dict[str, tuple[int, Snapshot]] = {}
        self._changes = itertools.count()
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

    def save(self, run_id: str, snapshot: Snapshot) -> None:
        """Queue a write of the run (coalesced: many saves, one snapshot, one write)."""
        self._dirty[run_id] = (next(self._changes), snapshot)
        self._wanted.set()

    async def save_now(self, run_id: str, snapshot: Snapshot) -> None:
        """Write a new run at once, with every dirty one; DataDirError if it is not on disk.

        A run that failed here is not kept: its caller refuses it.
        """
        await self.flush({run_id: snapshot})

    async def flush(self, new: dict[str, Snapshot] | None = None) -> None:
        """Write every dirty run (and ``new``) in one transaction; raise DataDirError."""
        async with self._write_lock:
            taken = dict(self._dirty)
            batch = {run_id: take for run_id, (_, take) in taken.items()} | (new or {})
            if not batch:
                return
            rows = [_row(run_id, take()) for run_id, take in batch.items()]
            try:
                await self.db.run(self._write_rows, rows)
            except DataDirError as exc:
                if self._failing_since is None:
                    self._failing_since = self._reported_at = time.monotonic()
                    log.error(
                        "state_write_failed",
                        error=str(exc),
                        unwritten_runs=len(taken),
                        retry="with backoff until it succeeds",
                    )
                raise
            for run_id, (change, _) in taken.items():
                if self._dirty.get(run_id, (None,))[0] == change:
                    del self._dirty[run_id]
            if self._failing_since is not None:
                log.info(
                    "state_writes_resumed",
                    written_runs=len(batch),
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
                    log.exception("state_write_crashed", unwritten_runs=len(self._dirty))
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
                unwritten_runs=len(self._dirty),
            )

    def _write_rows(self, rows: list[tuple[Any, ...]]) -> None:
        conn = self.db.connection
        with database.writing(self.db.path), conn:
            conn.execute("BEGIN")
            conn.executemany(
                """INSERT INTO runs (id, status, finished, snapshot, created_at, tenant, flow,
                                     started_at, finished_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(id) DO UPDATE SET status=excluded.status,
                     finished=excluded.finished, snapshot=excluded.snapshot,
                     finished_at=excluded.finished_at,
                     updated_at=strftime('%Y-%m-%dT%H:%M:%fZ', 'now')""",
                rows,
            )

    async def load(self, run_id: str) -> dict[str, Any] | None:
        if run_id in self._dirty:
            return self._dirty[run_id][1]()

        def read() -> str | None:
            row = self.db.connection.execute(
                "SELECT snapshot FROM runs WHERE id = ?", (run_id,)
            ).fetchone()
            return row[0] if row else None

        text = await self.db.run(read)
        return json.loads(text) if text else None

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

    async def unfinished(self) -> list[dict[str, Any]]:
        def read() -> list[str]:
            return [
                row[0]
                for row in self.db.connection.execute(
                    "SELECT snapshot FROM runs WHERE finished = 0 ORDER BY created_at"
                )
            ]

        return [json.loads(text) for text in await self.db.run(read)]

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


def _row(run_id: str, snap: dict[str, Any]) -> tuple[Any, ...]:
    run, plan = snap["run"], snap["plan"]
    return (
        run_id,
        run["Status"],
        int(run["Status"] in ("COMPLETE", "ERROR", "STOPPED")),
        json.dumps(snap, separators=(",", ":")),
        plan["created_at"],
        plan.get("tenant", DEFAULT_TENANT),
        plan["submission"]["Flow"]["Name"],
        run.get("StartedAt"),
        run.get("FinishedAt"),
    )


__all__ = ["StateStore"]
