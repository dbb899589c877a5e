"""Leases on attempts sent to a durable queue: one found nowhere at three looks in a
row, with the messages read up to the look before, is lost; one found again, or whose
result came, is not."""

from __future__ import annotations

from orchestrator.dispatch_leases import Lease, Leases


def lease(node_id: str, since: float = 0.0, run_id: str = "r1") -> Lease:
    return Lease(run_id, node_id, 1, None, since)


def test_an_attempt_found_nowhere_three_looks_in_a_row_is_lost_once():
    leases = Leases()
    for node_id in "abc":
        leases.grant(f"r1/{node_id}/1", lease(node_id))
    assert leases.lost({"r1/a/1", "r1/b/1", "r1/c/1"}, True) == []
    assert leases.lost({"r1/a/1", "r1/b/1", "r1/c/1"}, True) == []
    # b was found at the third look (a worker's heartbeat said it runs it): not lost.
    assert leases.lost({"r1/a/1", "r1/c/1"}, True) == [lease("a"), lease("c")]
    assert leases.lost({"r1/b/1"}, True) == []  # b counts from nothing again
    assert len(leases) == 1 and leases.due(10.0, 1.0) == {"r1/b/1"}


def test_nothing_is_lost_while_messages_of_the_look_before_are_unread():
    leases = Leases()
    leases.grant("r1/a/1", lease("a"))
    for _ in range(5):
        assert leases.lost({"r1/a/1"}, False) == []
    assert leases.lost({"r1/a/1"}, True) == [lease("a")]


def test_a_result_or_the_runs_end_ends_the_lease():
    leases = Leases()
    leases.grant("r1/a/1", lease("a"))
    leases.grant("r2/a/1", lease("a", run_id="r2"))
    leases.grant("r2/b/1", lease("b", since=5.0, run_id="r2"))
    for _ in range(2):
        assert leases.lost({"r1/a/1", "r2/a/1"}, True) == []
    leases.end("r1/a/1")  # its result came
    leases.end_run("r2")
    assert leases.lost({"r1/a/1", "r2/a/1"}, True) == [] and len(leases) == 0


def test_only_attempts_sent_a_term_ago_are_due():
    leases = Leases()
    leases.grant("r1/a/1", lease("a", since=0.0))
    leases.grant("r1/b/1", lease("b", since=9.5))
    assert leases.due(10.0, 1.0) == {"r1/a/1"}
