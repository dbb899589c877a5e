"""The dispatch order: priority first, then tenants in turn, then a tenant's runs in turn,
per tier; a full tier never holds up another's."""

from __future__ import annotations

from orchestrator.dispatch_order import DispatchOrder


def drain(order: DispatchOrder[str], most: int = 1, room=lambda tier: True) -> list[str]:
    taken = []
    while (turn := order.take(room, most)) is not None:
        taken += turn[2]
    return taken


def test_a_tenant_with_thousands_queued_and_one_with_one_take_turns():
    order: DispatchOrder[str] = DispatchOrder()
    for n in range(10_000):
        order.add("big-run", "big", 0, "c-small", f"big-{n}")
    order.add("small-run", "small", 0, "c-small", "small-0")
    first = [order.take(lambda tier: True, 64)[2] for _ in range(2)]
    assert first[0] == [f"big-{n}" for n in range(64)]
    assert first[1] == ["small-0"]  # the next turn, not after 10,000
    assert order.pending("c-small") == 10_000 - 64


def test_higher_priority_goes_first_and_equal_priority_runs_take_turns():
    order: DispatchOrder[str] = DispatchOrder()
    for run in ("a1", "a2"):
        for n in range(3):
            order.add(run, "a", 0, "c-nano", f"{run}-{n}")
    order.add("urgent", "b", 10, "c-nano", "urgent-0")
    assert drain(order) == ["urgent-0", "a1-0", "a2-0", "a1-1", "a2-1", "a1-2", "a2-2"]
    assert not order and order.counts() == {}


def test_a_full_tier_does_not_hold_up_another_and_drop_forgets_a_run():
    order: DispatchOrder[str] = DispatchOrder()
    order.add("r1", "t", 0, "c-large", "large")
    order.add("r1", "t", 0, "c-nano", "nano")
    order.add("r2", "t", 0, "c-nano", "other")
    assert drain(order, room=lambda tier: tier == "c-nano") == ["nano", "other"]
    assert order.pending("c-large") == 1
    assert order.drop("r1") == 1
    assert not order and order.take(lambda tier: True, 1) is None


def test_a_tenant_at_its_quota_of_runs_waits_until_one_of_them_ends():
    order: DispatchOrder[str] = DispatchOrder(running_limit=lambda tenant: 2)
    for run in ("r1", "r2", "r3"):
        for n in range(2):
            order.add(run, "t", 0, "c-nano", f"{run}-{n}")
    order.add("o1", "other", 0, "c-nano", "o1-0")
    taken = drain(order)
    # r3 waits: t has r1 and r2 started; the other tenant is not held back by it.
    assert taken == ["r1-0", "o1-0", "r2-0", "r1-1", "r2-1"]
    assert order.started("t") == 2 and order.pending("c-nano") == 2
    order.ended("r1", "t")
    assert drain(order) == ["r3-0", "r3-1"]


def test_a_tenant_that_comes_with_work_goes_before_the_one_served_last():
    order: DispatchOrder[str] = DispatchOrder()
    for n in range(5):
        order.add("big-run", "big", 0, "c-nano", f"big-{n}")
    assert order.take(lambda tier: True, 1)[2] == ["big-0"]
    order.add("small-1", "small", 0, "c-nano", "small-1")
    assert order.take(lambda tier: True, 1)[2] == ["small-1"]  # not after big-1
    # Back just after its own turn: after everyone else's.
    order.add("small-2", "small", 0, "c-nano", "small-2")
    assert drain(order) == ["big-1", "small-2", "big-2", "big-3", "big-4"]


def test_a_turn_without_room_is_passed_over_and_keeps_its_place():
    order: DispatchOrder[str] = DispatchOrder()
    for tenant in ("a", "b"):
        for n in range(2):
            order.add(f"{tenant}-run", tenant, 0, "c-nano", f"{tenant}-{n}")
    full = {"a"}

    def turn_has_room(tier: str, priority: int, tenant: str) -> bool:
        return tenant not in full

    assert order.take(lambda tier: True, 1, turn_has_room)[2] == ["b-0"]
    full.clear()
    assert drain(order) == ["a-0", "b-1", "a-1"]
    assert order.pending_in_turn("c-nano", 0, "a") == 0
