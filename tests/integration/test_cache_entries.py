"""Cache entries in the real SQLite database: found per tenant, written in batches,
kept ttl after they were made or last reused, then swept."""

from __future__ import annotations

import asyncio

from orchestrator.cache import CachedOutput, Entry, ResultCache
from orchestrator.config import CacheSettings
from orchestrator.database import Database

OUT = CachedOutput(store="default", key="r1/out", digest="sha256:ab", size=3, content_type="x/y")


def entry(key: str = "k", tenant: str = "acme", image: str = "sha256:img") -> Entry:
    return Entry(tenant, key, image, "r1", "n0", {"out": OUT})


async def test_entries_expire_unless_reused_and_are_swept(tmp_path):
    db = Database(tmp_path / "state.sqlite3")
    await db.open()
    cache = ResultCache(db, CacheSettings(ttl=0.5))
    try:
        cache.record(entry("kept"))
        cache.record(entry("dropped"))
        # Found before it is written (a result a moment ago), and by its tenant only.
        assert (await cache.entries("acme", ["kept"]))["kept"]["sha256:img"] == entry("kept")
        assert await cache.entries("globex", ["kept", "dropped"]) == {}
        await cache.flush()
        found = await cache.entries("acme", ["kept", "dropped", "other"])
        assert set(found) == {"kept", "dropped"}
        assert found["kept"]["sha256:img"].outputs == {"out": OUT}

        await asyncio.sleep(0.3)
        cache.reused(found["kept"]["sha256:img"])
        await cache.flush()
        await asyncio.sleep(0.3)  # 0.6 s after both were made, 0.3 s after the reuse
        assert set(await cache.entries("acme", ["kept", "dropped"])) == {"kept"}
        assert await cache.entry("acme", "dropped", "sha256:img") is None
        assert await cache.collect() == 1
        assert await cache.count("acme") == 1

        await cache.forget(found["kept"]["sha256:img"])
        assert await cache.count("acme") == 0
    finally:
        await cache.close()
        await db.close()
