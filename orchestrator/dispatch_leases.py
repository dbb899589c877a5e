"""Leases on the attempts sent to a durable queue, so that none is lost with Redis's data.

A Redis that restarts without persistence, or a failover to a replica that had not
received the last writes, forgets tasks no worker has run yet and results the service
has not read yet. Nothing else would ever tell the scheduler: the node would stay READY
or RUNNING for ever.

Every attempt the scheduler sends is leased until a result for it comes back. Once a
lease is older than its term, the scheduler asks the queue where the attempt is
(``TaskQueue.unaccounted``): in a tier's stream (waiting, or taken and not done),
running on a live worker (its heartbeat), or in a message not read yet. An attempt
found nowhere at two looks in a row, a term apart, is lost, and the scheduler
dispatches it again under the same number. Two looks, because a worker that took a
task just before the data went may not have said so in a heartbeat yet.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


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
        # Attempts found nowhere at the last look.
        self._missing: set[str] = set()

    def __len__(self) -> int:
        return len(self._leases)

    def grant(self, key: str, lease: Lease) -> None:
        self._leases[key] = lease
        self._of_run.setdefault(lease.run_id, set()).add(key)
        self._missing.discard(key)

    def end(self, key: str) -> None:
        """A result for the attempt came back (or it was dispatched again)."""
        lease = self._leases.pop(key, None)
        if lease is not None:
            keys = self._of_run[lease.run_id]
            keys.discard(key)
            if not keys:
                del self._of_run[lease.run_id]
        self._missing.discard(key)

    def end_run(self, run_id: str) -> None:
        for key in self._of_run.pop(run_id, ()):
            del self._leases[key]
            self._missing.discard(key)

    def due(self, now: float, term: float) -> set[str]:
        """The attempts sent at least ``term`` seconds ago and not ended."""
        return {key for key, lease in self._leases.items() if now - lease.since >= term}

    def lost(self, missing: Iterable[str]) -> list[Lease]:
        """The attempts found nowhere at this look, given ``missing``, that were found
        nowhere at the last one too: lost (their leases end). The rest are remembered
        for the next look."""
        now_missing = {key for key in missing if key in self._leases}
        confirmed = now_missing & self._missing
        self._missing = now_missing - confirmed
        found = [self._leases[key] for key in sorted(confirmed)]
        for key in confirmed:
            self.end(key)
        return found


__all__ = ["Lease", "Leases"]
