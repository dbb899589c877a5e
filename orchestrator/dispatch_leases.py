"""Leases on the attempts sent to a durable queue, so that none is lost with Redis's data.

A Redis that restarts without persistence, or a failover to a replica that had not
received the last writes, forgets tasks no worker has run yet and results the service
has not read yet. Nothing else would ever tell the scheduler: the node would stay READY
or RUNNING for ever.

Every attempt the scheduler sends is leased until a result for it comes back. Once a
lease is older than its term (the workers' heartbeat interval), the scheduler asks the
queue at each term where the attempt is (``TaskQueue.unaccounted``): in a tier's
stream (waiting, or taken and not done), or running on a live worker (its latest
heartbeat). An attempt found nowhere at three looks in a row, with every message
there was at the look before read since, is lost, and the scheduler dispatches it
again under the same number. Three looks: a worker that took a task just before the
data went says so in its next heartbeat, sent within a term, so before the second
look, and read by the third; reading up to the look before, not to the end, so that
a service always busy reading still finds them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: Looks in a row an attempt must be found nowhere at to be lost.
LOOKS = 3


@dataclass(frozen=True, slots=True)
class Lease:
    run_id: str
    node_id: str
    attempt: int
    item: str | None
    #: When the attempt was sent (time.monotonic()).
    since: float


class Leases:
    def __init__(self) -> None:
        self._leases: dict[str, Lease] = {}
        self._of_run: dict[str, set[str]] = {}
        # Attempts found nowhere at the last looks: how many looks in a row.
        self._missing: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._leases)

    def grant(self, key: str, lease: Lease) -> None:
        self._leases[key] = lease
        self._of_run.setdefault(lease.run_id, set()).add(key)
        self._missing.pop(key, None)

    def end(self, key: str) -> None:
        """A result for the attempt came back (or it was dispatched again)."""
        lease = self._leases.pop(key, None)
        if lease is not None:
            keys = self._of_run[lease.run_id]
            keys.discard(key)
            if not keys:
                del self._of_run[lease.run_id]
        self._missing.pop(key, None)

    def end_run(self, run_id: str) -> None:
        for key in self._of_run.pop(run_id, ()):
            del self._leases[key]
            self._missing.pop(key, None)

    def due(self, now: float, term: float) -> set[str]:
        """The attempts sent at least ``term`` seconds ago and not ended."""
        return {key for key, lease in self._leases.items() if now - lease.since >= term}

    def lost(self, missing: Iterable[str], caught_up: bool) -> list[Lease]:
        """The attempts found nowhere at this look (``missing``) and the two before it,
        when every message there was at the last look has been read since
        (``caught_up``): lost, and their leases end. The rest are counted for the
        next look (an attempt found again starts from nothing)."""
        looks = {key: self._missing.get(key, 0) + 1 for key in missing if key in self._leases}
        confirmed = {k for k, n in looks.items() if n >= LOOKS} if caught_up else set()
        self._missing = {k: n for k, n in looks.items() if k not in confirmed}
        found = [self._leases[key] for key in sorted(confirmed)]
        for key in confirmed:
            self.end(key)
        return found


__all__ = ["Lease", "Leases"]
