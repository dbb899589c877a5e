"""The data directory's database: one schema, brought up to date by numbered steps."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator.api_key_store import KeyStore
from orchestrator.database import MIGRATIONS, Database, connect
from orchestrator.errors import ConfigError
from orchestrator.models import FlowSubmission
from orchestrator.runtime import RunState, plan_run
from orchestrator.state import StateStore


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
    assert version(path) == len(MIGRATIONS) == 7
    found = tables(path)
    assert {"runs", "meta", "flows", "flow_configs", "tasks", "api_keys"} <= set(found)
    assert {"run_nodes", "run_artifacts"} <= set(found) and "plan" in found["runs"]
    assert {"run_members", "run_items", "cache_entries"} <= set(found)
    assert "admin" in found["api_keys"]
    connect(path).close()  # again: nothing to do, nothing changes
    assert version(path) == 7


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
    assert version(path) == 7


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
        conn.execute("DROP TABLE run_nodes")
        conn.execute("DROP TABLE run_artifacts")
        conn.execute("DROP TABLE run_members")
        conn.execute("DROP TABLE run_items")
        conn.execute("DROP TABLE cache_entries")
        conn.execute("DROP TABLE kept_objects")
        for index in ("runs_expiry", "runs_expiry_unset"):
            conn.execute(f"DROP INDEX {index}")
        for column in ("tenant", "flow", "started_at", "finished_at", "plan", "expires_at"):
            conn.execute(f"ALTER TABLE runs DROP COLUMN {column}")
        conn.execute(
            "INSERT INTO runs (id, status, finished, snapshot, created_at) VALUES (?, ?, ?, ?, ?)",
            ("r1", "COMPLETE", 1, json.dumps(snapshot), "2026-11-01T10:00:00Z"),
        )
        conn.execute("PRAGMA user_version = 2")
    connect(path).close()
    assert version(path) == 7
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT tenant, flow, started_at, finished_at FROM runs").fetchone()
    assert row == ("acme", "thumbs", "2026-11-01T10:00:00Z", "2026-11-01T10:00:05Z")


def test_a_database_of_a_newer_pipewell_is_refused_saying_so(tmp_path: Path):
    path = tmp_path / "pipewell.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(ConfigError, match="schema version 99, made by a newer Pipewell"):
        connect(path)


async def test_a_run_written_whole_by_version_3_is_read_and_then_written_by_its_changes(
    tmp_path: Path,
):
    path = tmp_path / "pipewell.sqlite3"
    submission = FlowSubmission.model_validate(
        {
            "Flow": {
                "Name": "two",
                "Nodes": [
                    {"ID": f"n{i}", "Uses": "t/copy", "Inputs": [{"Name": "in", "Edge": "src"}],
                     "Outputs": [{"Name": "out", "Edge": f"o{i}"}]}
                    for i in range(2)
                ],
            },
            "NodeDefs": [{"Publisher": "t", "Name": "copy", "Image": "pipewell/busybox:latest"}],
        }
    )  # fmt: skip
    plan = plan_run(submission, run_id="a" * 32, now=datetime(2026, 11, 1, tzinfo=UTC))
    run = RunState(plan, plan.defs())
    run.start([])
    run.artifact_arrived("src")
    run.dispatched("n1")
    old = run.snapshot()
    connect(path).close()
    with sqlite3.connect(path) as conn:  # as version 3 wrote it: all of it in snapshot
        conn.execute(
            "INSERT INTO runs (id, status, finished, snapshot, created_at, tenant, flow) "
            "VALUES (?, 'RUNNING', 0, ?, '2026-11-01T00:00:00Z', 'default', 'two')",
            (run.id, json.dumps(old)),
        )
    db = Database(path)
    await db.open()
    try:
        state = StateStore(db)
        assert await state.load(run.id) == old
        [unfinished] = await state.unfinished()
        assert unfinished == old

        resumed = RunState.restore(unfinished)
        await state.save_now(run.id, resumed)  # the first write: all of it, by rows
        resumed.attempt_started("n1", 1)
        state.save(run.id, resumed)
        await state.flush()
        assert await state.load(run.id) == resumed.snapshot()
        with sqlite3.connect(path) as conn:
            nodes = conn.execute("SELECT node_id FROM run_nodes ORDER BY node_id").fetchall()
            artifacts = conn.execute("SELECT edge FROM run_artifacts").fetchall()
            whole = conn.execute("SELECT plan IS NOT NULL, snapshot FROM runs").fetchone()
        assert nodes == [("n0",), ("n1",)] and artifacts == [("src",)]
        assert whole[0] and "NodeState" not in json.loads(whole[1])
    finally:
        await db.close()
