"""API keys: 64 hex characters shown once; only their SHA-256 is kept.

Keys live in the service's SQLite database, so ``pipewell keys`` on the same
data directory manages the keys of a running service, and a revocation is
seen on the key's very next use (every request looks its key up).
Synchronous on purpose: the CLI calls it directly, the service from a thread.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    name        TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    sha256      TEXT NOT NULL UNIQUE,
    masked      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    last_used   TEXT,
    revoked_at  TEXT
);
"""


class KeyOperationError(Exception):
    """A key operation that cannot be done, with the message to show."""


@dataclass(frozen=True)
class KeyInfo:
    name: str
    tenant: str
    masked: str
    created_at: str
    last_used: str | None
    revoked: bool


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class KeyStore:
    def __init__(self, database: Path) -> None:
        database.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(database, check_same_thread=False, isolation_level=None,
                                     timeout=10)  # fmt: skip
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(SCHEMA)

    def close(self) -> None:
        self._conn.close()

    def create(self, name: str, tenant: str = "default") -> str:
        """Make a key and return it raw: the only time anyone sees it."""
        if not name.strip():
            raise KeyOperationError("a key needs a non-empty --name")
        raw = secrets.token_hex(32)
        try:
            self._conn.execute(
                "INSERT INTO api_keys (name, tenant, sha256, masked, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, tenant, _hash(raw), f"{raw[:8]}…{raw[-4:]}", _now()),
            )
        except sqlite3.IntegrityError as exc:
            raise KeyOperationError(
                f"a key named {name!r} exists already; pick another name"
            ) from exc
        return raw

    def list(self) -> list[KeyInfo]:
        rows = self._conn.execute(
            "SELECT name, tenant, masked, created_at, last_used, revoked_at FROM api_keys "
            "ORDER BY created_at, name"
        )
        return [KeyInfo(r[0], r[1], r[2], r[3], r[4], r[5] is not None) for r in rows]

    def revoke(self, name: str) -> None:
        cursor = self._conn.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
            (_now(), name),
        )
        if cursor.rowcount == 0:
            raise KeyOperationError(f"no active key named {name!r} (see 'pipewell keys list')")

    def authenticate(self, raw: str) -> str | None:
        """The tenant of an active key, or None; records its use."""
        digest = _hash(raw)
        row = self._conn.execute(
            "SELECT sha256, tenant, name FROM api_keys WHERE sha256 = ? AND revoked_at IS NULL",
            (digest,),
        ).fetchone()
        # The lookup is by hash; the comparison guards the match itself.
        if row is None or not hmac.compare_digest(row[0], digest):
            return None
        self._conn.execute("UPDATE api_keys SET last_used = ? WHERE name = ?", (_now(), row[2]))
        return str(row[1])


__all__ = ["KeyOperationError", "KeyInfo", "KeyStore"]
