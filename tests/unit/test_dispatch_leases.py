"""Leases on attempts sent to a durable queue: one found nowhere at two looks in a row
is lost; one found again, or whose result came, is not."""

from __future__ import annotations

from orchestrator.dispatch_leases import Lease, Leases


def lease(node_id: str, since: float = 0.0, run_id: str = "r1") -> Lease:
    return Lease(run_id, node_id, 1, None, since)


def test_an_attempt_found_nowhere_twice_in_a_row_is_lost_once():
    leases = Leases()
    for node_id in "abc":
        leases.grant(f"r1/{node_id}/1", lease(node_id))
    assert leases.lost({"r1/a/1", "r1/b/1"}) == []  # first look: maybe not said yet
    # b was found at the second look (a worker's heartbeat came): not lost.
    assert leases.lost({"r1/a/1", "r1/c/1"}) == [lease("a")]
    assert leases.lost({"r1/c/1"}) == [lease("c")]
    assert len(leases) == 1 and leases.due(10.0, 1.0) == {"r1/b/1"}


def test_a_result_or_the_runs_end_ends_the_lease():
    leases = Leases()
    leases.grant("r1/a/1", lease("a"))
    leases.grant("r2/a/1", lease("a", run_id="r2"))
    leases.grant("r2/b/1", lease("b", since=5.0, run_id="r2"))
    assert leases.lost({"r1/a/1", "r2/a/1"}) == []
    leases.end("r1/a/1")  # its result came
    leases.end_run("r2")
    assert leases.lost({"r1/a/1", "r2/a/1"}) == [] and len(leases) == 0


def test_only_attempts_sent_a_term_ago_are_due():
    leases = Leases()
    leases.grant("r1/a/1", lease("a", since=0.0))
    leases.grant("r1/b/1", lease("b", since=9.5))
    assert leases.due(10.0, 1.0) == {"r1/a/1"}
