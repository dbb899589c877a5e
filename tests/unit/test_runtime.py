"""The run state machine, with no I/O: dispatch order, retries, statuses, persistence."""

from datetime import UTC, datetime

from orchestrator.models import FlowSubmission, LogRecord, NodeStatus, RunStatus, StoreInput
from orchestrator.runtime import RunState, Transition, plan_run

NOW = datetime(2026, 3, 3, 10, 30, tzinfo=UTC)


def _submission(nodes, defs=None, wells=None):
    defs = defs or [
        {"Publisher": "t", "Name": "copy", "Image": "pipewell/busybox:latest", "MaxAttempts": 2}
    ]
    flow = {"Name": "f", "Nodes": nodes}
    if wells is not None:
        flow["DataWells"] = wells
    return FlowSubmission.model_validate({"Flow": flow, "NodeDefs": defs})


def _node(node_id, inputs, outputs):
    return {
        "ID": node_id,
        "Uses": "t/copy",
        "Inputs": [{"Name": f"in{i}", "Edge": e} for i, e in enumerate(inputs)],
        "Outputs": [{"Name": f"out{i}", "Edge": e} for i, e in enumerate(outputs)],
    }


def _state(submission, run_id="0" * 32):
    plan = plan_run(submission, run_id=run_id, now=NOW)
    return RunState(plan, plan.defs())


def test_chain_waits_for_upload_then_runs_in_order():
    run = _state(_submission([_node("b", ["mid"], ["out"]), _node("a", ["src"], ["mid"])]))
    transition = run.start([])
    assert transition.dispatch == []
    assert run.status == RunStatus.WAITING
    assert run.pending_uploads() == ["src"]
    assert run.plan.edge("src").key == f"tenants/default/{'0' * 32}/src"

    assert run.artifact_arrived("src").dispatch == ["a"]
    assert run.dispatched("a") == 1
    assert run.status == RunStatus.RUNNING
    assert run.attempt_started("a", 1)
    assert run.state("a").status == NodeStatus.RUNNING

    assert run.attempt_succeeded("a", 1).dispatch == ["b"]
    assert "mid" in run.run.artifacts
    run.dispatched("b")
    run.attempt_started("b", 1)
    transition = run.attempt_succeeded("b", 1)
    assert transition.finished
    assert run.status == RunStatus.COMPLETE
    assert run.run.artifacts["out"].object_name == f"tenants/default/{'0' * 32}/out"


def test_parallel_branches_are_ready_together():
    run = _state(_submission([_node("x", ["src"], ["o1"]), _node("y", ["src"], ["o2"])]))
    run.start([])
    assert sorted(run.artifact_arrived("src").dispatch) == ["x", "y"]


def test_failure_retries_until_max_attempts_then_errors_the_run():
    run = _state(_submission([_node("a", ["src"], ["out"])]))
    run.start([])
    run.artifact_arrived("src")
    run.dispatched("a")
    retry = run.attempt_failed("a", 1, "command exited with code 3", retryable=True, retry_delay=2)
    assert retry.retry_after == 2
    assert run.state("a").status == NodeStatus.RETRYING
    assert run.status == RunStatus.RUNNING
    assert run.dispatched("a") == 2
    final = run.attempt_failed("a", 2, "command exited with code 3", retryable=True, retry_delay=4)
    assert final.finished and final.retry_after is None
    assert run.state("a").status == NodeStatus.ERROR
    assert run.state("a").error == "command exited with code 3"
    assert run.status == RunStatus.ERROR


def test_non_retryable_failure_errors_at_once():
    run = _state(_submission([_node("a", ["src"], ["out"])]))
    run.start([])
    run.artifact_arrived("src")
    run.dispatched("a")
    transition = run.attempt_failed("a", 1, "input is text/plain", retryable=False, retry_delay=1)
    assert transition.finished
    assert run.state("a").attempt == 1
    assert run.status == RunStatus.ERROR


def test_stale_results_of_an_old_attempt_are_ignored():
    run = _state(_submission([_node("a", ["src"], ["out"])]))
    run.start([])
    run.artifact_arrived("src")
    run.dispatched("a")
    run.attempt_failed("a", 1, "boom", retryable=True, retry_delay=0)
    run.dispatched("a")
    assert run.attempt_succeeded("a", 1).dispatch == []
    assert run.state("a").status == NodeStatus.READY


def test_logs_are_capped_keeping_head_and_tail():
    plan = plan_run(_submission([_node("a", ["src"], ["out"])]), run_id="1" * 32, now=NOW)
    run = RunState(plan, plan.defs(), max_log_lines=20)
    for i in range(100):
        run.add_log("a", LogRecord(message=str(i)))
    messages = [r.message for r in run.state("a").logs]
    assert len(messages) == 20
    assert messages[:5] == ["0", "1", "2", "3", "4"]
    assert messages[-1] == "99"


def test_snapshot_round_trip_keeps_everything():
    run = _state(_submission([_node("a", ["src"], ["out"])]))
    run.start([])
    run.artifact_arrived("src")
    run.dispatched("a")
    restored = RunState.restore(run.snapshot())
    assert restored.run == run.run
    assert restored.plan.edges == run.plan.edges
    assert restored.active_nodes() == ["a"]
    assert restored.redispatched("a") == 1


def test_static_well_is_present_from_the_start():
    sub = _submission(
        [_node("a", ["lut"], ["out"])],
        wells=[{"Edge": "lut", "Source": "static", "Key": "luts/one.bin"}, {"Edge": "out"}],
    )
    run = _state(sub)
    assert run.start([]).dispatch == ["a"]
    assert run.run.artifacts["lut"].object_name == "tenants/default/luts/one.bin"
    assert run.pending_uploads() == []


def test_object_keys_in_the_services_stores_live_under_the_tenant():
    sub = _submission(
        [_node("a", ["lut"], ["out"])],
        wells=[
            {"Edge": "lut", "Source": "static", "Key": "luts/one.bin", "Store": "own"},
            {"Edge": "out"},
        ],
    )
    sub.flow.stores = [StoreInput(name="own", type="s3", params={"bucket": "b"})]
    plan = plan_run(sub, run_id="1" * 32, now=NOW, tenant="acme")
    # The service's store: the tenant's namespace. The flow's own store: its own keys.
    assert plan.edge("out").key == f"tenants/acme/{'1' * 32}/out"
    assert plan.edge("lut").key == "luts/one.bin"
    odd = plan_run(sub, run_id="1" * 32, now=NOW, tenant="a b/../c")
    assert odd.edge("out").key.startswith("tenants/~")
    assert ".." not in odd.edge("out").key


def test_a_final_failure_cancels_active_siblings_but_not_finished_ones():
    run = _state(_submission([_node("x", ["src"], ["o1"]), _node("y", ["src"], ["o2"]),
                              _node("z", ["src"], ["o3"])]))  # fmt: skip
    run.start([])
    run.artifact_arrived("src")
    for node in ("x", "y", "z"):
        run.dispatched(node)
    run.attempt_succeeded("z", 1)
    run.attempt_failed("x", 1, "boom", retryable=False, retry_delay=0)
    assert run.state("x").status == NodeStatus.ERROR
    assert run.state("y").status == NodeStatus.STOPPED
    assert run.state("y").error == "stopped: node 'x' failed, which ended the run"
    assert run.state("z").status == NodeStatus.COMPLETE
    assert run.active_nodes() == []


def test_an_upload_that_never_came_ends_the_run_with_its_reason():
    run = _state(
        _submission(
            [_node("a", ["src1"], ["o1"]), _node("b", ["src2", "src1"], ["o2"])],
        )
    )
    run.start([])
    run.artifact_arrived("src1")
    run.dispatched("a")
    expired = datetime(2026, 3, 3, 11, 30, 5, 123456, tzinfo=UTC)
    # An edge that did arrive is not expired, whatever the scheduler says.
    assert run.uploads_expired({"src1": expired}) == Transition()
    assert run.status == RunStatus.RUNNING

    transition = run.uploads_expired({"src2": expired, "src1": expired})
    assert transition.finished and transition.dispatch == []
    assert run.status == RunStatus.ERROR
    assert run.run.error == (
        "edge 'src2' was not uploaded before its WaitingURL expired at 2026-03-03T11:30:05Z: "
        "submit the flow again for new WaitingURLs and upload before their TTL"
    )
    assert run.state("b").status == NodeStatus.ERROR
    assert run.state("b").error == (
        "input 'in0' (edge 'src2') was not uploaded before its URL expired at 2026-03-03T11:30:05Z"
    )
    assert run.state("a").status == NodeStatus.STOPPED
    assert run.state("a").error == "stopped: an input was not uploaded in time"
    assert run.run.waiting_urls == []
    # Recorded once; a finished run ignores later news, and the reason is persisted.
    assert run.uploads_expired({"src2": expired}) == Transition()
    assert run.artifact_arrived("src2") == Transition()
    assert RunState.restore(run.snapshot()).run.error == run.run.error


def _fresh(run):
    """The FlowRun serialized now, as the status endpoint did before it was cached."""
    return run.run.model_dump_json().encode()


def test_the_cached_json_follows_every_change():
    run = _state(_submission([_node("b", ["mid"], ["out"]), _node("a", ["src"], ["mid"])]))
    steps = [
        lambda: run.start([]),
        lambda: run.artifact_arrived("src"),
        lambda: run.dispatched("a"),
        lambda: run.attempt_started("a", 1),
        lambda: run.add_log("a", LogRecord(message="working", timestamp=NOW)),
        lambda: run.record_timings("a", {"run": 0.5}),
        lambda: run.attempt_failed("a", 1, "exit 1", retryable=True, retry_delay=1),
        lambda: run.dispatched("a"),
        lambda: run.record_timings("a", {"presign": 0.1}, replace=True),
        lambda: run.attempt_started("a", 2),
        lambda: run.attempt_succeeded("a", 2),
        lambda: run.redispatched("b"),
        lambda: run.cancel(),
        lambda: run.mark_finished(NOW),
    ]
    seen = [run.json()]
    for step in steps:
        assert run.json() is seen[-1]  # unchanged: the same bytes, not made again
        step()
        assert run.json() == _fresh(run)
        seen.append(run.json())
    assert b'"working"' in seen[-1] and b'"STOPPED"' in seen[-1]
    assert b'"presign":0.1' in seen[-1] and b'"run":0.5' not in seen[-1]


def test_a_direct_change_shows_once_declared():
    run = _state(_submission([_node("a", ["src"], ["out"])]))
    before = run.json()
    run.run.error = "set directly"
    run.changed()
    assert run.json() != before and run.json() == _fresh(run)


def test_the_cached_json_follows_failures_and_expiry():
    run = _state(_submission([_node("a", ["src"], ["out"])]))
    run.start([])
    before = run.json()
    run.uploads_expired({"src": NOW})
    assert run.json() != before and run.json() == _fresh(run)
    other = _state(_submission([_node("a", ["src"], ["out"])]))
    other.start([])
    before = other.json()
    other.fail("the engine gave up")
    assert other.json() != before and other.json() == _fresh(other)


def _status_from_every_node(run):
    """The run's status as the nodes say it, looking at each (what the counts stand for)."""
    states = [run.state(n).status for n in run.plan.order]
    if any(s == NodeStatus.ERROR for s in states):
        return RunStatus.ERROR
    if all(s == NodeStatus.COMPLETE for s in states):
        return RunStatus.COMPLETE
    if any(s not in (NodeStatus.IDLE, NodeStatus.COMPLETE) for s in states):
        return RunStatus.RUNNING
    return RunStatus.WAITING if run.pending_uploads() else RunStatus.RUNNING


def test_the_runs_status_follows_its_nodes_through_every_event_and_a_restore():
    nodes = [_node(f"n{i}", ["src"], [f"o{i}"]) for i in range(50)]
    nodes.append(_node("last", ["o0"], ["end"]))
    run = _state(_submission(nodes))
    run.start([])
    assert run.status == _status_from_every_node(run) == RunStatus.WAITING
    for node_id in run.artifact_arrived("src").dispatch:
        run.dispatched(node_id)
        assert run.status == _status_from_every_node(run)
    for i in range(50):
        run.attempt_started(f"n{i}", 1)
        if i % 2:
            run.attempt_succeeded(f"n{i}", 1)
        else:
            run.attempt_failed(f"n{i}", 1, "flaky", retryable=True, retry_delay=1)
        assert run.status == _status_from_every_node(run) == RunStatus.RUNNING
    restored = RunState.restore(run.snapshot(), run.defs)
    assert restored.status == _status_from_every_node(restored)
    for i in range(0, 50, 2):  # the retries succeed
        restored.dispatched(f"n{i}")
        restored.attempt_started(f"n{i}", 2)
        restored.attempt_succeeded(f"n{i}", 2)
    restored.dispatched("last")
    restored.attempt_started("last", 1)
    assert restored.attempt_succeeded("last", 1).finished
    assert restored.status == _status_from_every_node(restored) == RunStatus.COMPLETE


def test_a_change_is_written_and_serialized_by_what_it_changed():
    """A 1,000-node fan-out: after the first write (all of it), one node's change writes
    that node alone, and the FlowRun's JSON made from kept pieces is the whole run's."""
    run = _state(_submission([_node(f"n{i}", ["src"], [f"o{i}"]) for i in range(1000)]))
    run.start([])
    first = run.take_write()
    assert first.plan is not None and len(first.nodes) == 1000 and first.artifacts == {}
    assert run.json() == run.run.model_dump_json().encode()

    ready = run.artifact_arrived("src").dispatch
    assert len(ready) == 1000
    arrival = run.take_write()
    assert (arrival.plan, arrival.nodes, list(arrival.artifacts)) == (None, {}, ["src"])

    run.dispatched("n7")
    run.attempt_started("n7", 1)
    run.add_log("n7", LogRecord(message="hello"))
    run.attempt_succeeded("n7", 1)
    change = run.take_write()
    assert set(change.nodes) == {"n7"} and list(change.artifacts) == ["o7"]
    assert '"Status":"COMPLETE"' in change.nodes["n7"] and "hello" in change.nodes["n7"]
    assert run.json() == run.run.model_dump_json().encode()
    assert run.take_write().nodes == {}  # nothing changed since


def test_a_write_that_failed_is_written_again_with_what_came_after():
    run = _state(_submission([_node("a", ["src"], ["mid"]), _node("b", ["mid"], ["out"])]))
    run.start([])
    lost = run.take_write()  # as if its transaction failed
    run.artifact_arrived("src")
    run.dispatched("a")
    merged = run.take_write().after(lost)
    assert merged.plan == lost.plan
    assert set(merged.nodes) == {"a", "b"} and '"Attempt":1' in merged.nodes["a"]
    assert list(merged.artifacts) == ["src"]


def test_many_nodes_changed_at_once_are_written_in_slices_and_restored_from_any():
    run = _state(_submission([_node(f"n{i}", ["src"], [f"o{i}"]) for i in range(2500)]))
    run.start([])
    writes = [run.take_write(most_nodes=1000) for _ in range(3)]
    assert [len(w.nodes) for w in writes] == [1000, 1000, 500]
    assert [w.partial for w in writes] == [True, True, False]
    assert set().union(*(w.nodes for w in writes)) == set(run.run.node_state)

    # Stopped after the first slice: the nodes not written yet come back as they began.
    run.dispatched("n3")
    snapshot = run.snapshot()
    kept = dict(list(snapshot["run"]["NodeState"].items())[:10])
    snapshot["run"]["NodeState"] = kept
    restored = RunState.restore(snapshot)
    assert list(restored.run.node_state) == list(run.run.node_state)
    assert restored.state("n3").status == NodeStatus.READY
    assert restored.state("n2400").status == NodeStatus.IDLE
    assert restored.state("n2400").max_attempts == 2


def test_a_transition_names_the_nodes_its_change_made_ready_not_every_ready_one():
    """An event costs what it changes: a result names its own consumers alone, even
    while 999 other nodes wait, ready, to be dispatched."""
    nodes = [_node("root", ["src"], ["mid"]), _node("tail", ["mid"], ["out"])]
    nodes += [_node(f"w{i}", ["src"], [f"o{i}"]) for i in range(999)]
    run = _state(_submission(nodes))
    run.start([])
    ready = run.artifact_arrived("src").dispatch
    assert len(ready) == 1000 and ready[0] == "root"
    run.dispatched("root")
    run.attempt_started("root", 1)
    assert run.attempt_succeeded("root", 1).dispatch == ["tail"]
    assert len(run.ready_nodes()) == 1000  # the 999 not dispatched yet, and tail
