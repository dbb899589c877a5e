"""What a worker needs of an executor: the seam between them.

A leaf: it imports only the queue's messages and the models. The Docker
executor implements it on a real engine; the tests' fake executor implements
it to inject faults without one. Every method blocks: the worker calls them
from its threads, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

from orchestrator.messages import AttemptResult, SpareCount, Task
from orchestrator.models import LogRecord

#: Hands one log line of a running attempt to the worker (from any thread).
Emit = Callable[[LogRecord], None]
#: Removes an ended attempt's container and files; returns the seconds it took.
Cleanup = Callable[[], float]
#: An item of a batch is about to run (its Task): the worker reports it started and
#: gives the Emit its log lines go to; None when the worker is shutting down, and
#: then neither this item nor the rest of the batch run (they are left to run again).
BeginItem = Callable[[Task], Emit | None]
#: An item of a batch has ended: its result, reported at once (its container may run
#: the next item meanwhile).
EndItem = Callable[[AttemptResult], None]
#: gated: attempts run in containers started ahead and held at a gate (warm
#: spares among them); plain: a container is created and started per attempt.
LaunchMode = Literal["gated", "plain"]


class Executor(Protocol):
    #: The worker's identity (orchestrator.identity): whose containers are whose.
    worker_id: str
    #: How attempts start on this executor.
    launch: LaunchMode

    def open(self) -> None:
        """Start background work (making spares); before the first ``run``."""

    def run(self, task: Task, emit: Emit) -> tuple[AttemptResult, Cleanup]:
        """Run one attempt to its end; never raises, the result says what happened.

        The cleanup is called after the result is reported, so removing the
        container is not on the flow's critical path.
        """

    def run_batch(self, task: Task, begin: BeginItem, end: EndItem) -> Cleanup:
        """Run the items of a batch (``task.batch``: one run's one node) one after another.

        Each item is an attempt of its own: ``begin(item)`` before it runs, its log
        lines to the Emit that returns, ``end(result)`` as soon as it has ended, one
        call each per item, in order. Items of a run that ended meanwhile are ended
        refused, as ``run`` refuses an attempt; once ``begin`` answers None no further
        item runs. Never raises. The cleanup (called after the last result is
        reported) removes every container and file the batch used.
        """

    def kill_run(self, run_id: str) -> int:
        """Kill this worker's containers of a run that has ended; how many."""

    def abort_all(self) -> int:
        """Shutting down: kill every container of this worker so its attempts end now."""

    def close(self) -> int:
        """Stop background work and remove what it made (spares); how many were removed."""

    def ping(self) -> str | None:
        """None when the engine answers, else what is wrong."""

    def reconnect(self) -> str | None:
        """After an outage: None once the engine answers and leftovers are removed."""

    def remove_leftovers(self) -> int:
        """Remove containers and files earlier attempts of this worker left behind."""

    def remove_containers_of(self, worker_ids: set[str]) -> int:
        """Remove the containers of other workers known to be dead (same engine)."""

    def remove_expired_spares(self) -> int:
        """Remove spares of any worker on the engine whose deadline has passed."""

    def spares(self) -> list[SpareCount]:
        """Spares ready now, per image and tier."""


__all__ = ["BeginItem", "Cleanup", "Emit", "EndItem", "Executor", "LaunchMode"]
