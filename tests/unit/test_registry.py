"""Saved flows in SQLite: versions, lookups by every kind of ref, tenants, profiles, tasks."""

from __future__ import annotations

import sqlite3

from orchestrator.api_key_store import KeyStore
from orchestrator.database import connect
from orchestrator.errors import InvalidInvocation
from orchestrator.models import FlowRun, FlowSubmission, NodeState, NodeStatus, RunStatus
from orchestrator.registry import FlowRegistry
from orchestrator.service.executions import failure_message, text_of, wait_seconds


def submission(name: str, image: str = "x:1") -> FlowSubmission:
    return FlowSubmission.model_validate(
        {
            "Flow": {
                "Name": name,
                "Nodes": [{"ID": "n", "Uses": "t/n", "Inputs": [], "Outputs": []}],
            },
            "NodeDefs": [{"Publisher": "t", "Name": "n", "Image": image}],
        }
    )


def test_versions_refs_tenants_and_deletion(tmp_path):
    registry = FlowRegistry(connect(tmp_path / "db.sqlite3"), tmp_path / "db.sqlite3")
    first, created = registry.save("acme", submission("f"))
    assert created and first.version == 1 and len(first.graph_id) == 26
    same, created = registry.save("acme", submission("f"))
    assert not created and same.graph_id == first.graph_id
    second, created = registry.save("acme", submission("f", image="x:2"))
    assert created and second.version == 2 and second.graph_id > first.graph_id
    other, _ = registry.save("globex", submission("f"))
    assert other.version == 1

    assert registry.find("acme", first.graph_id).version == 1
    assert registry.find("acme", "f").graph_id == second.graph_id
    assert registry.find("acme", "f", version=1).graph_id == first.graph_id
    assert registry.find("acme", str(second.seq)).graph_id == second.graph_id
    assert registry.find("globex", first.graph_id) is None
    assert registry.find("globex", str(first.seq)) is None
    assert [f.version for f in registry.list("acme")] == [1, 2]

    assert registry.delete("acme", second.graph_id)
    assert not registry.delete("acme", second.graph_id)
    assert registry.find("acme", second.graph_id) is None
    assert registry.find("acme", "f").graph_id == first.graph_id  # the latest still live
    assert registry.by_seq("acme", second.seq).graph_id == second.graph_id  # for its tasks
    # Saving the deleted content again makes a new version, not the deleted one.
    third, created = registry.save("acme", submission("f", image="x:2"))
    assert created and third.version == 3


def test_profiles_follow_new_versions_and_tasks_are_per_tenant(tmp_path):
    registry = FlowRegistry(connect(tmp_path / "db.sqlite3"), tmp_path / "db.sqlite3")
    first, _ = registry.save("acme", submission("f"))
    assert registry.put_config(first.graph_id, "fast", {"n": {"level": "1"}})
    assert not registry.put_config(first.graph_id, "fast", {"n": {"level": "2"}})
    second, _ = registry.save("acme", submission("f", image="x:2"))
    assert registry.configs(second.graph_id) == {"fast": {"n": {"level": "2"}}}
    assert registry.delete_config(first.graph_id, "fast")
    assert registry.config(first.graph_id, "fast") is None
    assert registry.config(second.graph_id, "fast") == {"n": {"level": "2"}}

    task = registry.add_task("acme", "a" * 32, first.seq, {"start_node_id": "n"})
    again = registry.add_task("acme", "b" * 32, first.seq, {})
    assert again.id == task.id + 1
    assert registry.task("acme", task.id).request == {"start_node_id": "n"}
    assert registry.task("globex", task.id) is None


def test_admin_column_is_added_to_an_older_key_table(tmp_path):
    database = tmp_path / "db.sqlite3"
    with sqlite3.connect(database) as conn:
        conn.execute(
            "CREATE TABLE api_keys (name TEXT PRIMARY KEY, tenant TEXT NOT NULL, sha256 TEXT "
            "NOT NULL UNIQUE, masked TEXT NOT NULL, created_at TEXT NOT NULL, last_used TEXT, "
            "revoked_at TEXT)"
        )
    conn = connect(database)
    keys = KeyStore(conn, database)
    raw = keys.create("root", admin=True)
    principal = keys.authenticate(raw)
    assert principal is not None and principal.admin and principal.tenant == "default"
    assert keys.authenticate("0" * 64) is None
    conn.close()


def test_wait_seconds_and_messages():
    assert wait_seconds(None) == 30 and wait_seconds(2) == 2.0
    for bad in (0, -1, 3601, "5", True):
        try:
            wait_seconds(bad)
        except InvalidInvocation as exc:
            assert exc.code == "TIMEOUT_INVALID"
        else:
            raise AssertionError(bad)
    run = FlowRun(
        id="0" * 32,
        status=RunStatus.ERROR,
        node_state={
            "a": NodeState(status=NodeStatus.STOPPED, error="stopped: node 'b' failed"),
            "b": NodeState(status=NodeStatus.ERROR, error="command exited with code 3"),
        },
    )
    assert failure_message(run) == "node 'b' failed: command exited with code 3"
    assert text_of({"text": "hi"}) == "hi"
    assert text_of({"a": [1, 2]}) == '{"a":[1,2]}'
    assert text_of({"url": "u", "content_type": "image/png", "size": 3}).startswith('{"url"')
