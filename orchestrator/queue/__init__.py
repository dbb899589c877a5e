"""The queue between the scheduler and workers: one async interface, two backends.

The scheduler puts ``Task``s and reads worker messages; a worker registers the
tiers it offers, takes tasks for them, puts messages back and marks each task
done once its result is sent. Neither side knows the other: they meet here and
in ``orchestrator.messages``.

- ``MemoryQueue`` (``memory``): one process, ``pipewell dev`` as it always was.
- ``RedisQueue`` (``redis_streams``): Redis Streams with consumer groups, for
  workers on any number of Docker hosts. Imported only when used.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, Protocol

from orchestrator.dispatch_order import NO_TURN, Turn
from orchestrator.messages import Task, WorkerHeartbeat, WorkerMessage
from orchestrator.queue.memory import MemoryQueue

if TYPE_CHECKING:
    from orchestrator.config import QueueSettings


class TaskQueue(Protocol):
    async def put_task(self, task: Task) -> None: ...

    async def put_tasks(self, tasks: list[Task], turn: Turn = NO_TURN) -> None:
        """Queue several tasks at once, in order (one round trip where the queue is
        remote), all of one turn: (priority, tenant)."""

    async def take_task(self, tiers: frozenset[str]) -> Task: ...

    async def task_done(self, task: Task) -> None:
        """The task's result is sent: it will not be handed to another worker."""

    async def put_message(self, message: WorkerMessage) -> None: ...

    async def next_message(self) -> WorkerMessage: ...

    #: Whether messages outlive the service (Redis): then they are acknowledged only
    #: once what they changed is on disk (``messages_handled``), and one handed out
    #: before a crash comes again.
    durable: bool = False

    #: Whether a worker's take follows the turns (``dispatch_order``) of the tasks put
    #: (the in-process queue), or the order they came (Redis). A queue that takes in
    #: turn is let a few tasks of each turn ahead (``waiting_in_turn``), not of each tier.
    takes_in_turn: bool = False

    def has_buffered_messages(self) -> bool:
        """Whether ``next_message`` has one at hand (read, not yet handed out)."""
        ...

    async def messages_handled(self) -> None:
        """Every message handed out so far is handled and its changes are written."""
        ...

    def register_worker(
        self,
        worker: str,
        tiers: frozenset[str],
        heartbeat: Callable[[], WorkerHeartbeat] | None = None,
    ) -> None: ...

    async def unregister_worker(self, worker: str) -> None:
        """Stop heartbeating and leave the list of live workers (bounded: Redis may be gone)."""

    def offered_tiers(self) -> frozenset[str]: ...

    def slots_for(self, tier: str) -> int:
        """Attempts the live workers that take ``tier`` can run at once, in all."""
        ...

    def drop_run(self, run_id: str, *, cancel: bool = False) -> int: ...

    def on_cancel(self, callback: Callable[[str], None]) -> None: ...

    async def queued_keys(self) -> set[str]:
        """``Task.key`` of every task the queue holds (waiting, or taken and not done)."""

    async def waiting(self) -> dict[str, int]:
        """Tasks not taken by a worker yet, per tier (tiers with none left out)."""
        ...

    def waiting_in_turn(self, tier: str, priority: int, tenant: str) -> int:
        """Tasks not taken yet of one turn (only where ``takes_in_turn``)."""
        ...

    #: Seconds after which a durable queue is asked where an attempt sent is
    #: (``unaccounted``): the workers' heartbeat interval. Unused where not durable.
    lease_term: float = 0.0

    async def unaccounted(self, keys: Collection[str]) -> tuple[set[str], bool]:
        """Of the attempts ``keys``, those the queue holds nowhere: not in a tier's
        stream, not running on a live worker; and whether every message there was at
        the previous look has been handed out since (else a result or a heartbeat
        about them may still be on its way)."""
        ...

    async def describe(self) -> dict[str, Any]:
        """Live workers and queued tasks per tier, for the API."""

    async def dead_workers(self) -> set[str]:
        """Identities of workers that stopped heartbeating (their containers may be left)."""

    async def check(self) -> None:
        """Raise ConfigError for a queue that cannot work as configured (Redis refusing
        the password or showing an untrusted certificate); wait out the rest."""
        ...

    async def close(self) -> None: ...


def open_queue(settings: QueueSettings, *, consumer: str) -> TaskQueue:
    """The queue of ``settings`` as ``consumer``: Redis at its URL, else in-process."""
    if settings.url is None:
        return MemoryQueue()
    from orchestrator.queue.redis_streams import RedisQueue

    return RedisQueue(settings.redis(), consumer=consumer, reclaim_after=settings.reclaim_after)


__all__ = ["MemoryQueue", "TaskQueue", "open_queue"]
