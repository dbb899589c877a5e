"""Single flight: of nodes doing the same work at once, one runs and the others wait.

Keyed by tenant and work key. The first node to claim a key computes it; a node
of another run that claims it meanwhile waits, and is dispatched again when the
first ends, to reuse its outputs (or, if it failed, to compute them itself).
Pure bookkeeping: the scheduler holds it and does what it answers. One service
dispatches every node (Redis workers included), so this is single flight
across workers too.
"""

from __future__ import annotations

#: A node's attempt waiting for another's work: (run ID, node ID, attempt).
Waiter = tuple[str, str, int]


class Flights:
    def __init__(self) -> None:
        self._owners: dict[tuple[str, str], tuple[str, str]] = {}
        self._claims: dict[tuple[str, str], tuple[str, str]] = {}  # (run, node) → (tenant, key)
        self._waiting: dict[tuple[str, str], list[Waiter]] = {}
        # Run → its nodes holding a claim, or waiting: a run's end costs its own.
        self._runs: dict[str, set[tuple[str, str] | str]] = {}

    def claim(self, tenant: str, key: str, run_id: str, node_id: str) -> tuple[str, str] | None:
        """None when this node is the one doing the work (it claimed it now, or before);
        else the (run ID, node ID) that does."""
        owner = self._owners.setdefault((tenant, key), (run_id, node_id))
        if owner != (run_id, node_id):
            return owner
        self._claims[(run_id, node_id)] = (tenant, key)
        self._runs.setdefault(run_id, set()).add(node_id)
        return None

    def wait(self, tenant: str, key: str, waiter: Waiter) -> None:
        self._waiting.setdefault((tenant, key), []).append(waiter)
        self._runs.setdefault(waiter[0], set()).add((tenant, key))

    def release(self, run_id: str, node_id: str) -> list[Waiter]:
        """The node's work ended (done, failed or stopped): who waited for it."""
        work = self._claims.pop((run_id, node_id), None)
        if work is None:
            return []
        if self._owners.get(work) == (run_id, node_id):
            del self._owners[work]
        return self._waiting.pop(work, [])

    def drop_run(self, run_id: str) -> list[Waiter]:
        """The run ended: its claims are released (their waiters returned), its waiters
        forgotten."""
        woken: list[Waiter] = []
        held = self._runs.pop(run_id, set())
        for node_id in [h for h in held if isinstance(h, str)]:
            woken += self.release(run_id, node_id)
        for work in [h for h in held if isinstance(h, tuple)]:
            kept = [w for w in self._waiting.get(work, ()) if w[0] != run_id]
            if kept:
                self._waiting[work] = kept
            else:
                self._waiting.pop(work, None)
        return [w for w in woken if w[0] != run_id]

    def __len__(self) -> int:
        return len(self._owners)


__all__ = ["Flights", "Waiter"]
