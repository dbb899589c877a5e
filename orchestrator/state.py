"""Run state in SQLite under the data directory.

One connection, used from one dedicated thread (sqlite3 blocks). Writes are
batched: ``save`` marks a run dirty and a flusher writes every dirty run in
one transaction shortly after, so a burst of log lines costs one write.
``flush`` forces it (shutdown, tests).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

Snapshot = Callable[[], dict[str, Any]]

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id          TEXT PRIMARY KEY,
    status      TEXT NOT NULL,
    finished    INTEGER NOT NULL,
    snapshot    TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX IF NOT EXISTS runs_unfinished ON runs (finished) WHERE finished = 0;
CREATE TABLE IF NOT EXISTS meta (
    key    TEXT PRIMARY KEY,
    value  BLOB NOT NULL
);
"""


class StateStore:
    def __init__(self, path: Path, flush_delay: float = 0.05) -> None:
        self.path = path
        self.flush_delay = flush_delay
        self._db_thread = ThreadPoolExecutor(1, thread_name_prefix="pipewell-sqlite")
        self._conn: sqlite3.Connection | None = None
        # run id → how to snapshot it: taken at flush time, once per batch.
        self._dirty: dict[str, Snapshot] = {}
        self._flush_handle: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await self._call(self._open)

    def _open(self) -> None:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(SCHEMA)
        self._conn = conn

    async def close(self) -> None:
        await self.flush()
        if self._conn is not None:
            await self._call(self._conn.close)
            self._conn = None
        self._db_thread.shutdown(wait=True)

    async def _call(self, fn, *args):  # type: ignore[no-untyped-def]
        return await asyncio.get_running_loop().run_in_executor(self._db_thread, fn, *args)

    # ------------------------------------------------------------ runs

    def save(self, run_id: str, snapshot: Snapshot) -> None:
        """Queue a write of the run (coalesced: many saves, one snapshot, one write)."""
        self._dirty[run_id] = snapshot
        if self._flush_handle is None:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(self.flush_delay, self._schedule_flush)

    def _schedule_flush(self) -> None:
        self._flush_handle = None
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.ensure_future(self.flush())
        else:
            self._flushing.add_done_callback(
                lambda _: self._schedule_flush() if self._dirty else None
            )

    async def flush(self) -> None:
        if not self._dirty:
            return
        batch = {run_id: take() for run_id, take in self._dirty.items()}
        self._dirty = {}
        rows = [
            (
                run_id,
                snap["run"]["Status"],
                int(snap["run"]["Status"] in ("COMPLETE", "ERROR", "STOPPED")),
                json.dumps(snap, separators=(",", ":")),
                snap["plan"]["created_at"],
            )
            for run_id, snap in batch.items()
        ]
        await self._call(self._write_rows, rows)

    def _write_rows(self, rows: list[tuple[Any, ...]]) -> None:
        assert self._conn is not None
        with self._conn:
            self._conn.execute("BEGIN")
            self._conn.executemany(
                """INSERT INTO runs (id, status, finished, snapshot, created_at)
                   VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT(id) DO UPDATE SET status=excluded.status,
                     finished=excluded.finished, snapshot=excluded.snapshot,
                     updated_at=strftime('%Y-%m-%dT%H:%M:%fZ', 'now')""",
                rows,
            )

    async def load(self, run_id: str) -> dict[str, Any] | None:
        if run_id in self._dirty:
            return self._dirty[run_id]()

        def read() -> str | None:
            assert self._conn is not None
            row = self._conn.execute("SELECT snapshot FROM runs WHERE id = ?", (run_id,)).fetchone()
            return row[0] if row else None

        text = await self._call(read)
        return json.loads(text) if text else None

    async def unfinished(self) -> list[dict[str, Any]]:
        def read() -> list[str]:
            assert self._conn is not None
            return [
                row[0]
                for row in self._conn.execute(
                    "SELECT snapshot FROM runs WHERE finished = 0 ORDER BY created_at"
                )
            ]

        return [json.loads(text) for text in await self._call(read)]

    # ------------------------------------------------------------ meta

    async def secret(self, name: str, make) -> bytes:  # type: ignore[no-untyped-def]
        """A persistent secret (e.g. the URL-signing key), made once on first use."""

        def get_or_create() -> bytes:
            assert self._conn is not None
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (name,)).fetchone()
            if row:
                return bytes(row[0])
            value = make()
            self._conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (name, value))
            return value

        return await self._call(get_or_create)


__all__ = ["StateStore"]
