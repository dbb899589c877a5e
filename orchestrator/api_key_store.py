"""API keys: 64 hex characters shown once; only their SHA-256 is kept.

Keys live in the service's SQLite database, so ``pipewell keys`` on the same
data directory manages the keys of a running service, and a revocation is
seen on the key's very next use (every request looks its key up).
Synchronous on purpose: the CLI calls it directly, the service on its database's
thread (``Database.run``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from orchestrator.database import write_failure, writing
from orchestrator.errors import KeyExists, KeyInvalid, NotFound
from orchestrator.models import DEFAULT_TENANT, NAME_RULE, is_name

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class KeyInfo:
    name: str
    tenant: str
    masked: str
    created_at: str
    last_used: str | None
    revoked: bool
    admin: bool = False

    def public(self) -> dict[str, object]:
        """The key as the admin API shows it: never the raw key."""
        return {
            "name": self.name,
            "tenant": self.tenant,
            "masked": self.masked,
            "admin": self.admin,
            "created_at": self.created_at,
            "last_used": self.last_used,
            "revoked": self.revoked,
        }


@dataclass(frozen=True)
class Principal:
    """Who a valid key speaks for."""

    key_name: str
    tenant: str
    admin: bool


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class KeyStore:
    def __init__(self, conn: sqlite3.Connection, database: Path) -> None:
        self._path = database
        self._conn = conn
        # Whether recording a key's use fails (said once in the log, not per request).
        self._use_unrecorded = False

    def _execute(self, query: str, args: tuple[object, ...] = ()) -> tuple[list[Any], int]:
        """Rows and row count of one statement."""
        cursor = self._conn.execute(query, args)
        return cursor.fetchall(), cursor.rowcount

    def create(self, name: str, tenant: str = DEFAULT_TENANT, *, admin: bool = False) -> str:
        """Make a key and return it raw: the only time anyone sees it."""
        if not name.strip() or len(name) > 100:
            raise KeyInvalid("a key needs a name of 1 to 100 characters")
        if not is_name(tenant):
            # The tenant names the namespace of its objects in the service's stores.
            raise KeyInvalid(f"a key's tenant is a name: {NAME_RULE}")
        raw = secrets.token_hex(32)
        try:
            with writing(self._path):
                self._execute(
                    "INSERT INTO api_keys (name, tenant, sha256, masked, created_at, admin) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (name, tenant, _hash(raw), f"{raw[:8]}…{raw[-4:]}", _now(), int(admin)),
                )
        except sqlite3.IntegrityError as exc:
            raise KeyExists(f"a key named {name!r} exists already; pick another name") from exc
        return raw

    def list(self) -> list[KeyInfo]:
        rows, _ = self._execute(
            "SELECT name, tenant, masked, created_at, last_used, revoked_at, admin FROM api_keys "
            "ORDER BY created_at, name"
        )
        return [KeyInfo(r[0], r[1], r[2], r[3], r[4], r[5] is not None, bool(r[6])) for r in rows]

    def get(self, name: str) -> KeyInfo | None:
        return next((k for k in self.list() if k.name == name), None)

    def revoke(self, name: str) -> None:
        with writing(self._path):
            _, changed = self._execute(
                "UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (_now(), name),
            )
        if changed == 0:
            raise NotFound(
                "API_KEY_NOT_FOUND", f"no active key named {name!r} (see 'pipewell keys list')"
            )

    def authenticate(self, raw: str) -> Principal | None:
        """Who an active key speaks for, or None; records its use."""
        digest = _hash(raw)
        rows, _ = self._execute(
            "SELECT sha256, tenant, name, admin FROM api_keys "
            "WHERE sha256 = ? AND revoked_at IS NULL",
            (digest,),
        )
        row = rows[0] if rows else None
        # The lookup is by hash; the comparison guards the match itself.
        if row is None or not hmac.compare_digest(row[0], digest):
            return None
        self._record_use(str(row[2]))
        return Principal(key_name=str(row[2]), tenant=str(row[1]), admin=bool(row[3]))

    def _record_use(self, name: str) -> None:
        """Best effort: a data directory that takes no writes must not turn away every key."""
        try:
            self._execute("UPDATE api_keys SET last_used = ? WHERE name = ?", (_now(), name))
        except sqlite3.OperationalError as exc:
            if not self._use_unrecorded:
                log.warning("key_use_not_recorded", error=str(write_failure(exc, self._path)))
            self._use_unrecorded = True
        else:
            self._use_unrecorded = False


__all__ = ["KeyInfo", "KeyStore", "Principal"]
