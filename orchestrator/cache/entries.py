"""Cache entries in the service's database: a node's outputs by work key and image ID.

An entry names the objects a run's node wrote; it owns none of them. A hit copies
them inside their store to the new run's keys, so an entry whose objects were
deleted since is a miss (and is forgotten), never an error. Entries expire
``cache.ttl`` seconds after they were made or last reused; a sweep forgets them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import structlog

from orchestrator import database
from orchestrator.config import CacheSettings
from orchestrator.errors import DataDirError

log = structlog.get_logger(__name__)

#: Keys one lookup asks for at most (SQLite's bound parameters).
LOOKUP_SLICE = 500
#: Seconds new entries wait to be written together: one transaction (one fsync) for
#: a burst of results, not one per item of a map.
FLUSH_DELAY = 0.1


@dataclass(frozen=True)
class CachedOutput:
    """One output of the cached work, where its run stored it."""

    store: str
    key: str
    digest: str | None  # of its bytes, as the worker hashed them
    size: int = 0
    content_type: str = ""
    # What the store said of the object when the entry was made: a key written again
    # since (a Key template without the run's ID) says otherwise, and is a miss.
    stored: str | None = None


@dataclass(frozen=True)
class Entry:
    tenant: str
    key: str
    image_id: str
    run_id: str
    node_id: str
    outputs: dict[str, CachedOutput] = field(default_factory=dict)  # by output name


class ResultCache:
    """Entries on the database's one thread (orchestrator.database.Database.run)."""

    def __init__(self, db: database.Database, settings: CacheSettings) -> None:
        self.db = db
        self.settings = settings
        # Entries made and not yet written (looked up like written ones), and the
        # task that writes them.
        self._unwritten: dict[tuple[str, str, str], tuple[Entry, float]] = {}
        # Entries reused since the last write: kept ttl from then.
        self._reused: dict[tuple[str, str, str], float] = {}
        self._writer: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    async def entries(self, tenant: str, keys: Iterable[str]) -> dict[str, dict[str, Entry]]:
        """Work key → image ID → its unexpired entry (keys with none left out)."""
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        found: dict[str, dict[str, Entry]] = {}
        asked = set(wanted)
        for (owner, key, image_id), (entry, _made) in self._unwritten.items():
            if owner == tenant and key in asked:
                found.setdefault(key, {})[image_id] = entry

        def read() -> None:
            now = time.time()
            for start in range(0, len(wanted), LOOKUP_SLICE):
                part = wanted[start : start + LOOKUP_SLICE]
                marks = ",".join("?" * len(part))
                rows = self.db.connection.execute(
                    "SELECT key, image_id, run_id, node_id, outputs FROM cache_entries "  # noqa: S608
                    f"WHERE tenant = ? AND key IN ({marks}) AND expires_at > ?",
                    (tenant, *part, now),
                )
                for key, image_id, run_id, node_id, outputs in rows:
                    if image_id not in found.get(key, {}):
                        found.setdefault(key, {})[image_id] = _entry(
                            tenant, key, image_id, run_id, node_id, outputs
                        )

        await self.db.run(read)
        return found

    async def entry(self, tenant: str, key: str, image_id: str) -> Entry | None:
        unwritten = self._unwritten.get((tenant, key, image_id))
        if unwritten is not None:
            return unwritten[0]

        def read() -> Entry | None:
            row = self.db.connection.execute(
                "SELECT run_id, node_id, outputs FROM cache_entries "
                "WHERE tenant = ? AND key = ? AND image_id = ? AND expires_at > ?",
                (tenant, key, image_id, time.time()),
            ).fetchone()
            return None if row is None else _entry(tenant, key, image_id, *row)

        return await self.db.run(read)

    def record(self, entry: Entry) -> None:
        """Keep ``entry`` (replacing one of the same key and image: the latest work wins),
        written with the others made within FLUSH_DELAY."""
        self._unwritten[(entry.tenant, entry.key, entry.image_id)] = (entry, time.time())
        self._write_soon()

    def reused(self, entry: Entry) -> None:
        """The entry served a run: it is kept ``ttl`` from now (written with the others)."""
        self._reused[(entry.tenant, entry.key, entry.image_id)] = time.time()
        self._write_soon()

    def _write_soon(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_later(), name="cache-entries")

    async def _write_later(self) -> None:
        await asyncio.sleep(FLUSH_DELAY)
        await self.flush()

    async def flush(self) -> None:
        """Write the entries made so far. One that cannot be written (a full disk) is
        dropped: a later run computes its work again."""
        if not self._unwritten and not self._reused:
            return
        entries, self._unwritten = list(self._unwritten.values()), {}
        reused, self._reused = self._reused, {}
        ttl = self.settings.ttl
        rows = [
            (e.tenant, e.key, e.image_id, e.run_id, e.node_id,
             json.dumps({name: asdict(o) for name, o in e.outputs.items()}),
             made, made + ttl)
            for e, made in entries
        ]  # fmt: skip

        def write() -> None:
            conn = self.db.connection
            with database.writing(self.db.path), conn:
                conn.execute("BEGIN")
                conn.executemany(
                    """INSERT OR REPLACE INTO cache_entries (tenant, key, image_id, run_id,
                           node_id, outputs, created_at, expires_at)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                    rows,
                )
                conn.executemany(
                    "UPDATE cache_entries SET expires_at = ? "
                    "WHERE tenant = ? AND key = ? AND image_id = ?",
                    [(at + ttl, *which) for which, at in reused.items()],
                )

        try:
            await self.db.run(write)
        except DataDirError as exc:
            log.warning("cache_entries_not_written", entries=len(rows), error=str(exc))

    async def close(self) -> None:
        """Write what is left (a pending write is waited for: FLUSH_DELAY at most)."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer
        await self.flush()

    async def forget(self, entry: Entry) -> None:
        """Its objects are gone: the entry is of no use."""
        self._unwritten.pop((entry.tenant, entry.key, entry.image_id), None)

        def write() -> None:
            with database.writing(self.db.path):
                self.db.connection.execute(
                    "DELETE FROM cache_entries WHERE tenant = ? AND key = ? AND image_id = ?",
                    (entry.tenant, entry.key, entry.image_id),
                )

        await self.db.run(write)

    async def collect(self) -> int:
        """Forget expired entries; how many."""

        def write() -> int:
            with database.writing(self.db.path):
                cursor = self.db.connection.execute(
                    "DELETE FROM cache_entries WHERE expires_at <= ?", (time.time(),)
                )
                return cursor.rowcount

        return await self.db.run(write)

    async def count(self, tenant: str) -> int:
        def read() -> int:
            row = self.db.connection.execute(
                "SELECT count(*) FROM cache_entries WHERE tenant = ?", (tenant,)
            ).fetchone()
            return int(row[0])

        return await self.db.run(read)


def _entry(tenant: str, key: str, image_id: str, run_id: str, node_id: str, outputs: str) -> Entry:
    cached = {name: CachedOutput(**o) for name, o in json.loads(outputs).items()}
    return Entry(tenant, key, image_id, run_id, node_id, cached)


__all__ = ["CachedOutput", "Entry", "LOOKUP_SLICE", "ResultCache"]
