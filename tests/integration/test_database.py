"""The data directory's database: one schema, brought up to date by numbered steps."""

from __future__ import annotations

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
    assert version(path) == len(MIGRATIONS) == 2
    found = tables(path)
    assert {"runs", "meta", "flows", "flow_configs", "tasks", "api_keys"} <= set(found)
    assert "admin" in found["api_keys"]
    connect(path).close()  # again: nothing to do, nothing changes
    assert version(path) == 2


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
    assert version(path) == 2


def test_a_database_of_a_newer_pipewell_is_refused_saying_so(tmp_path: Path):
    path = tmp_path / "pipewell.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(ConfigError, match="schema version 99, made by a newer Pipewell"):
        connect(path)
