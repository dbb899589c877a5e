"""The order in which attempts leave the scheduler for the queue: by tier, then by
priority, then tenant by tenant, then run by run.

The scheduler keeps the attempts it has marked queued here and lets only a few per
tier into the task queue at a time (a share of the slots of that tier's workers,
``scheduler.AHEAD_SHARE``), so the queue (in memory or in Redis) never holds a
backlog in the order it came. Whose attempts go next is decided here, when a worker
has room:

- a higher ``Priority`` first (within a tier; a tier's work never waits for another's);
- at equal priority, tenants take turns, a batch each: a tenant with 10,000 queued
  items and one with a single node alternate, so the single node goes next. A tenant
  that comes (back) with work goes before the tenant served last, not after it: a
  tenant that runs one node at a time does not wait a turn of the busy one's first,
  and one that comes back just after its own turn waits for everyone else's;
- within a tenant, its runs take turns, a batch each: a big run never holds back
  the tenant's other runs;
- a tenant has at most its quota of runs started (``quotas.running``): a run is
  started when its first attempt leaves here, and until one of them ends the
  tenant's other runs wait their turn here (queued), their nodes READY.

The in-process task queue keeps its tasks in one of these too (no quotas there), so
that a worker's take follows the same turns (``orchestrator.queue.memory``).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

P = TypeVar("P")

#: Runs of one tenant at one priority, each with its attempts in the order they came.
Runs = OrderedDict[str, deque[P]]


#: Whose attempts they are, for the turns: (priority, tenant).
Turn = tuple[int, str]
NO_TURN: Turn = (0, "")
#: Whether a turn (tier, priority, tenant) may have its next attempts taken now.
TurnHasRoom = Callable[[str, int, str], bool]


class DispatchOrder(Generic[P]):
    def __init__(self, running_limit: Callable[[str], int | None] | None = None) -> None:
        # Most runs a tenant may have started and not ended (a None answer: any number);
        # None: no quotas here, and no runs counted as started.
        self._running_limit = running_limit
        # tenant → its runs started and not ended, in the order they started
        self._started: dict[str, dict[str, None]] = {}
        # tier → priority → tenant → run → attempts
        self._tiers: dict[str, dict[int, OrderedDict[str, Runs[P]]]] = {}
        # run → (tenant, priority, tiers it has attempts in), to drop a run at once
        self._runs: dict[str, tuple[str, int, set[str]]] = {}
        self._counts: dict[str, int] = {}
        # (tier, priority, tenant) → its attempts here
        self._turn_counts: dict[tuple[str, int, str], int] = {}
        # (tier, priority) → the tenant whose turn was taken last there
        self._served_last: dict[tuple[str, int], str] = {}
        # Tiers in turn, so that one tier's backlog never holds up another's.
        self._rotation: deque[str] = deque()

    def __bool__(self) -> bool:
        return bool(self._runs)

    def add(self, run_id: str, tenant: str, priority: int, tier: str, pending: P) -> None:
        levels = self._tiers.setdefault(tier, {})
        if tier not in self._rotation:
            self._rotation.append(tier)
        tenants = levels.setdefault(priority, OrderedDict())
        runs = tenants.get(tenant)
        if runs is None:
            runs = tenants[tenant] = OrderedDict()
            served_last = self._served_last.get((tier, priority))
            if served_last in tenants and served_last != tenant:
                tenants.move_to_end(served_last)  # the newcomer goes just before it
        runs.setdefault(run_id, deque()).append(pending)
        self._runs.setdefault(run_id, (tenant, priority, set()))[2].add(tier)
        self._counts[tier] = self._counts.get(tier, 0) + 1
        turn = (tier, priority, tenant)
        self._turn_counts[turn] = self._turn_counts.get(turn, 0) + 1

    def take(
        self,
        tier_has_room: Callable[[str], bool],
        most: int,
        turn_has_room: TurnHasRoom | None = None,
    ) -> tuple[str, str, list[P]] | None:
        """Up to ``most`` attempts of the run whose turn it is, in the first tier (in
        turn) that has work and room: (run, tier, attempts); None when none has both.
        With ``turn_has_room``, a tenant whose turn has no room is passed over, keeping
        its place."""
        for _ in range(len(self._rotation)):
            tier = self._rotation[0]
            self._rotation.rotate(-1)
            if not tier_has_room(tier):
                continue
            found = self._next_run(tier, turn_has_room)
            if found is None:
                continue  # every tenant with work there is at its quota or has no room
            priority, tenant, runs, run_id = found
            waiting = runs[run_id]
            runs.move_to_end(run_id)  # the tenant's next run's turn
            if self._running_limit is not None:
                self._started.setdefault(tenant, {})[run_id] = None
            batch = [waiting.popleft() for _ in range(min(most, len(waiting)))]
            self._counts[tier] -= len(batch)
            self._turn_counts[(tier, priority, tenant)] -= len(batch)
            if not waiting:
                self._forget(tier, priority, tenant, run_id)
            return run_id, tier, batch
        return None

    def _next_run(
        self, tier: str, turn_has_room: TurnHasRoom | None
    ) -> tuple[int, str, Runs[P], str] | None:
        """The run whose turn it is: highest priority first, tenants in turn, runs in
        turn; a tenant at its quota only with a run it has started already."""
        levels = self._tiers[tier]
        for priority in sorted(levels, reverse=True):
            tenants = levels[priority]
            for tenant, runs in tenants.items():
                if turn_has_room is not None and not turn_has_room(tier, priority, tenant):
                    continue
                run_id = self._startable(tenant, runs)
                if run_id is not None:
                    tenants.move_to_end(tenant)  # the next tenant's turn
                    self._served_last[(tier, priority)] = tenant
                    return priority, tenant, runs, run_id
        return None

    def _startable(self, tenant: str, runs: Runs[P]) -> str | None:
        """The tenant's run whose turn it is; at its quota, one of its started runs with
        work here, if any (looked for among those, not among its queued runs)."""
        limit = self._running_limit(tenant) if self._running_limit is not None else None
        started = self._started.get(tenant, {})
        if limit is None or len(started) < limit:
            return next(iter(runs))
        return next((r for r in started if r in runs), None)

    def ended(self, run_id: str, tenant: str) -> None:
        """A run ended: its tenant may start another."""
        started = self._started.get(tenant)
        if started is not None:
            started.pop(run_id, None)
            if not started:
                del self._started[tenant]

    def started(self, tenant: str) -> int:
        """Runs of the tenant started (an attempt of theirs sent) and not ended."""
        return len(self._started.get(tenant, ()))

    def drop(self, run_id: str) -> int:
        """Forget a run's attempts (it ended); returns how many there were."""
        found = self._runs.get(run_id)
        if found is None:
            return 0
        tenant, priority, tiers = found
        dropped = 0
        for tier in list(tiers):
            waiting = self._tiers[tier][priority][tenant][run_id]
            dropped += len(waiting)
            self._counts[tier] -= len(waiting)
            self._turn_counts[(tier, priority, tenant)] -= len(waiting)
            self._forget(tier, priority, tenant, run_id)
        return dropped

    def pending(self, tier: str) -> int:
        """Attempts of ``tier`` waiting here (not yet in the task queue)."""
        return self._counts.get(tier, 0)

    def pending_in_turn(self, tier: str, priority: int, tenant: str) -> int:
        """Attempts of the tenant at that priority and tier waiting here."""
        return self._turn_counts.get((tier, priority, tenant), 0)

    def __iter__(self) -> Iterator[P]:
        """Every attempt waiting here, in no particular order."""
        for levels in self._tiers.values():
            for tenants in levels.values():
                for runs in tenants.values():
                    for waiting in runs.values():
                        yield from waiting

    def counts(self) -> dict[str, int]:
        return {tier: count for tier, count in self._counts.items() if count}

    def _forget(self, tier: str, priority: int, tenant: str, run_id: str) -> None:
        levels = self._tiers[tier]
        runs = levels[priority][tenant]
        del runs[run_id]
        if not runs:
            del levels[priority][tenant]
            del self._turn_counts[(tier, priority, tenant)]
            if not levels[priority]:
                del levels[priority]  # its tenant served last is kept: a few per tier
                if not levels:
                    del self._tiers[tier]
                    self._rotation.remove(tier)
        tiers = self._runs[run_id][2]
        tiers.discard(tier)
        if not tiers:
            del self._runs[run_id]


__all__ = ["DispatchOrder"]
