"""The data directory's database: one schema, brought up to date by numbered steps."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from orchestrator.api_key_store import KeyStore
from orchestrator.database import MIGRATIONS, connect
from orchestrator.errors import ConfigError


def tables(path: Path) -> dict[str, set[str]]:
    with sqlite3.connect(path) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {n: {c[1] for c in conn.execute(f"PRAGMA table_info({n})")} for n in names}


def version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA user_version").fetchone()[0]


def test_a_new_database_gets_every_step(tmp_path: Path):
    path = tmp_path / "pipewell.sqlite3"
    connect(path).close()
    assert version(path) == len(MIGRATIONS) == 3
    found = tables(path)
    assert {"runs", "meta", "flows", "flow_configs", "tasks", "api_keys"} <= set(found)
    assert "admin" in found["api_keys"]
    connect(path).close()  # again: nothing to do, nothing changes
    assert version(path) == 3


def test_a_database_from_before_admin_keys_is_upgraded_and_keeps_its_keys(tmp_path: Path, capsys):
    path = tmp_path / "pipewell.sqlite3"
    with sqlite3.connect(path) as conn:  # as an early version left it: no admin, no version
        conn.execute(
            "CREATE TABLE api_keys (name TEXT PRIMARY KEY, tenant TEXT NOT NULL, sha256 TEXT "
            "NOT NULL UNIQUE, masked TEXT NOT NULL, created_at TEXT NOT NULL, last_used TEXT, "
            "revoked_at TEXT)"
        )
        conn.execute(
            "INSERT INTO api_keys VALUES "
            "('old', 'acme', 'h', 'abcd…1234', '2026-01-01', NULL, NULL)"
        )
    conn = connect(path)
    try:
        [key] = KeyStore(conn, path).list()
        assert (key.name, key.tenant, key.admin) == ("old", "acme", False)
    finally:
        conn.close()
    assert version(path) == 3


def test_runs_of_a_version_2_database_get_their_listing_columns(tmp_path: Path):
    path = tmp_path / "pipewell.sqlite3"
    connect(path).close()
    snapshot = {
        "plan": {"tenant": "acme", "created_at": "2026-11-01T10:00:00Z",
                 "submission": {"Flow": {"Name": "thumbs"}}},
        "run": {"Status": "COMPLETE", "StartedAt": "2026-11-01T10:00:00Z",
                "FinishedAt": "2026-11-01T10:00:05Z"},
    }  # fmt: skip
    with sqlite3.connect(path) as conn:  # as version 2 left it
        conn.execute("DROP INDEX runs_by_tenant")
        for column in ("tenant", "flow", "started_at", "finished_at"):
            conn.execute(f"ALTER TABLE runs DROP COLUMN {column}")
        conn.execute(
            "INSERT INTO runs (id, status, finished, snapshot, created_at) VALUES (?, ?, ?, ?, ?)",
            ("r1", "COMPLETE", 1, json.dumps(snapshot), "2026-11-01T10:00:00Z"),
        )
        conn.execute("PRAGMA user_version = 2")
    connect(path).close()
    assert version(path) == 3
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT tenant, flow, started_at, finished_at FROM runs").fetchone()
    assert row == ("acme", "thumbs", "2026-11-01T10:00:00Z", "2026-11-01T10:00:05Z")


def test_a_database_of_a_newer_pipewell_is_refused_saying_so(tmp_path: Path):
    path = tmp_path / "pipewell.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(ConfigError, match="schema version 99, made by a newer Pipewell"):
        connect(path)
