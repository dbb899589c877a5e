"""Saved flows, their config profiles, and Scade's integer task ids, in SQLite.

A saved flow is immutable: the validated submission with every NodeDef it
uses written into it, so a later change of the catalog does not change it.
Saving a changed flow under the same name makes a new ``graph_id`` (a ULID)
and the next version; an unchanged one answers the version it already is.
Everything is scoped to a tenant: another tenant's id is simply not found.

Synchronous on purpose, like the key store: the service calls it on its
database's thread (``Database.run``).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ulid import ULID

from orchestrator.database import writing
from orchestrator.models import FlowSubmission

GRAPH_ID_LENGTH = 26
#: SQLite integers are 64-bit: a longer number is no id (and would overflow).
MAX_ID_DIGITS = 18
#: node id → flag name → value.
FlagProfile = dict[str, dict[str, str]]


def parse_id(text: str) -> int | None:
    """``text`` as an integer id, or None: ASCII digits only, at most MAX_ID_DIGITS.

    ``str.isdigit`` alone also takes '¹', which ``int`` refuses, and '٣', which it
    reads as 3: neither is an id anyone was given.
    """
    if text.isascii() and text.isdigit() and len(text) <= MAX_ID_DIGITS:
        return int(text)
    return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class SavedFlow:
    seq: int
    graph_id: str
    tenant: str
    name: str
    version: int
    created_at: str
    submission: FlowSubmission

    def summary(self) -> dict[str, Any]:
        return {
            "graph_id": self.graph_id,
            "id": self.seq,
            "name": self.name,
            "version": self.version,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class TaskRecord:
    id: int
    execution_id: str
    flow_seq: int
    request: dict[str, Any]
    created_at: str


class FlowRegistry:
    def __init__(self, conn: sqlite3.Connection, database: Path) -> None:
        self._path = database
        self._conn = conn

    # ------------------------------------------------------------ flows

    def save(self, tenant: str, submission: FlowSubmission) -> tuple[SavedFlow, bool]:
        """Store a compiled submission; returns it and whether it is a new version."""
        text = submission.model_dump_json(exclude_none=True)
        digest = hashlib.sha256(text.encode()).hexdigest()
        name = submission.flow.name
        with writing(self._path), self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            latest = self._conn.execute(
                "SELECT * FROM flows WHERE tenant = ? AND name = ? ORDER BY version DESC LIMIT 1",
                (tenant, name),
            ).fetchone()
            if latest is not None and latest[5] == digest and latest[8] is None:
                return self._row(latest), False
            version = latest[4] + 1 if latest is not None else 1
            graph_id = str(ULID())
            self._conn.execute(
                "INSERT INTO flows (graph_id, tenant, name, version, digest, submission, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (graph_id, tenant, name, version, digest, text, _now()),
            )
            if latest is not None:
                # A new version starts with the profiles of the one before it.
                self._conn.execute(
                    "INSERT INTO flow_configs (graph_id, config_id, flags, updated_at) "
                    "SELECT ?, config_id, flags, updated_at FROM flow_configs WHERE graph_id = ?",
                    (graph_id, latest[1]),
                )
            row = self._conn.execute("SELECT * FROM flows WHERE graph_id = ?", (graph_id,))
            return self._row(row.fetchone()), True

    def find(self, tenant: str, ref: str, version: int | None = None) -> SavedFlow | None:
        """By graph_id, by the integer id (Scade's), or by name (latest or ``version``)."""
        live = "tenant = ? AND deleted_at IS NULL"
        if version is None and len(ref) == GRAPH_ID_LENGTH:
            row = self._one(f"SELECT * FROM flows WHERE {live} AND graph_id = ?", tenant, ref)
            if row is not None:
                return row
        if version is None and (seq := parse_id(ref)) is not None:
            row = self._one(f"SELECT * FROM flows WHERE {live} AND seq = ?", tenant, seq)
            if row is not None:
                return row
        if version is not None:
            return self._one(
                f"SELECT * FROM flows WHERE {live} AND name = ? AND version = ?",
                tenant,
                ref,
                version,
            )
        return self._one(
            f"SELECT * FROM flows WHERE {live} AND name = ? ORDER BY version DESC LIMIT 1",
            tenant,
            ref,
        )

    def by_seq(self, tenant: str, seq: int) -> SavedFlow | None:
        """Also a deleted flow: a task keeps describing the flow it ran."""
        return self._one("SELECT * FROM flows WHERE tenant = ? AND seq = ?", tenant, seq)

    def list(self, tenant: str, name: str | None = None) -> list[SavedFlow]:
        query = "SELECT * FROM flows WHERE tenant = ? AND deleted_at IS NULL"
        args: list[Any] = [tenant]
        if name is not None:
            query += " AND name = ?"
            args.append(name)
        rows = self._conn.execute(query + " ORDER BY name, version", args)
        return [self._row(r) for r in rows]

    def delete(self, tenant: str, graph_id: str) -> bool:
        with writing(self._path):
            cursor = self._conn.execute(
                "UPDATE flows SET deleted_at = ? WHERE tenant = ? AND graph_id = ? "
                "AND deleted_at IS NULL",
                (_now(), tenant, graph_id),
            )
        return cursor.rowcount > 0

    def _one(self, query: str, *args: Any) -> SavedFlow | None:
        row = self._conn.execute(query, args).fetchone()
        return self._row(row) if row is not None else None

    @staticmethod
    def _row(row: tuple[Any, ...]) -> SavedFlow:
        return SavedFlow(
            seq=row[0],
            graph_id=row[1],
            tenant=row[2],
            name=row[3],
            version=row[4],
            created_at=row[7],
            submission=FlowSubmission.model_validate_json(row[6]),
        )

    # ------------------------------------------------------------ config profiles

    def put_config(self, graph_id: str, config_id: str, flags: FlagProfile) -> bool:
        """Create or replace a profile; True when it is new."""
        exists = self.config(graph_id, config_id) is not None
        with writing(self._path):
            self._conn.execute(
                "INSERT INTO flow_configs (graph_id, config_id, flags, updated_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (graph_id, config_id) DO UPDATE SET "
                "flags = excluded.flags, updated_at = excluded.updated_at",
                (graph_id, config_id, json.dumps(flags), _now()),
            )
        return not exists

    def config(self, graph_id: str, config_id: str) -> FlagProfile | None:
        row = self._conn.execute(
            "SELECT flags FROM flow_configs WHERE graph_id = ? AND config_id = ?",
            (graph_id, config_id),
        ).fetchone()
        return json.loads(row[0]) if row else None

    def configs(self, graph_id: str) -> dict[str, FlagProfile]:
        rows = self._conn.execute(
            "SELECT config_id, flags FROM flow_configs WHERE graph_id = ? ORDER BY config_id",
            (graph_id,),
        )
        return {r[0]: json.loads(r[1]) for r in rows}

    def delete_config(self, graph_id: str, config_id: str) -> bool:
        with writing(self._path):
            cursor = self._conn.execute(
                "DELETE FROM flow_configs WHERE graph_id = ? AND config_id = ?",
                (graph_id, config_id),
            )
        return cursor.rowcount > 0

    # ------------------------------------------------------------ Scade tasks

    def add_task(
        self, tenant: str, execution_id: str, flow_seq: int, request: dict[str, Any]
    ) -> TaskRecord:
        created = _now()
        with writing(self._path):
            cursor = self._conn.execute(
                "INSERT INTO tasks (tenant, execution_id, flow_seq, request, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (tenant, execution_id, flow_seq, json.dumps(request), created),
            )
        assert cursor.lastrowid is not None
        return TaskRecord(cursor.lastrowid, execution_id, flow_seq, request, created)

    def task(self, tenant: str, task_id: int) -> TaskRecord | None:
        row = self._conn.execute(
            "SELECT id, execution_id, flow_seq, request, created_at FROM tasks "
            "WHERE tenant = ? AND id = ?",
            (tenant, task_id),
        ).fetchone()
        if row is None:
            return None
        return TaskRecord(row[0], row[1], row[2], json.loads(row[3]), row[4])


__all__ = [
    "GRAPH_ID_LENGTH",
    "MAX_ID_DIGITS",
    "FlagProfile",
    "FlowRegistry",
    "SavedFlow",
    "parse_id",
    "TaskRecord",
]
