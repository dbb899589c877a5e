"""The in-process queue of the one-process ``pipewell dev``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Any

from orchestrator.dispatch_order import NO_TURN, DispatchOrder, Turn
from orchestrator.messages import Task, WorkerHeartbeat, WorkerMessage


class MemoryQueue:
    """In-process queue: tasks taken in the scheduler's turns by the first worker
    offering their tier.

    A take follows ``DispatchOrder``'s turns (priority, then tenants, then runs), not
    the order tasks came: the scheduler lets a few tasks of each turn in ahead of the
    workers' free slots (``takes_in_turn``), and a tenant's task put behind another
    tenant's is still the next one taken when its turn is next.
    """

    durable = False
    lease_term = 0.0
    #: The scheduler may let in a few tasks per turn, not per tier: the take is fair.
    takes_in_turn = True

    def __init__(self) -> None:
        self._tasks: DispatchOrder[Task] = DispatchOrder()
        self._task_added = asyncio.Condition()
        self._messages: asyncio.Queue[WorkerMessage] = asyncio.Queue()
        self._workers: dict[str, frozenset[str]] = {}
        self._heartbeats: dict[str, Callable[[], WorkerHeartbeat]] = {}
        self._cancel_callbacks: list[Callable[[str], None]] = []

    async def put_task(self, task: Task) -> None:
        await self.put_tasks([task])

    async def put_tasks(self, tasks: list[Task], turn: Turn = NO_TURN) -> None:
        priority, tenant = turn
        async with self._task_added:
            for task in tasks:
                self._tasks.add(task.run_id, tenant, priority, task.tier, task)
            self._task_added.notify_all()

    async def take_task(self, tiers: frozenset[str]) -> Task:
        async with self._task_added:
            while True:
                taken = self._tasks.take(tiers.__contains__, 1)
                if taken is not None:
                    return taken[2][0]
                await self._task_added.wait()

    async def task_done(self, task: Task) -> None:
        """Nothing to do: a task taken here is gone from the queue already."""

    async def put_message(self, message: WorkerMessage) -> None:
        self._messages.put_nowait(message)

    def put_message_nowait(self, message: WorkerMessage) -> None:
        self._messages.put_nowait(message)

    async def next_message(self) -> WorkerMessage:
        return await self._messages.get()

    def has_buffered_messages(self) -> bool:
        return not self._messages.empty()

    async def messages_handled(self) -> None:
        """Nothing to acknowledge: the messages die with the process, as its runs' do not."""

    def register_worker(
        self,
        worker: str,
        tiers: frozenset[str],
        heartbeat: Callable[[], WorkerHeartbeat] | None = None,
    ) -> None:
        # One process: a worker is alive while registered; its heartbeat is asked for.
        self._workers[worker] = tiers
        if heartbeat is not None:
            self._heartbeats[worker] = heartbeat

    async def unregister_worker(self, worker: str) -> None:
        self._workers.pop(worker, None)
        self._heartbeats.pop(worker, None)

    def offered_tiers(self) -> frozenset[str]:
        return frozenset().union(*self._workers.values()) if self._workers else frozenset()

    def slots_for(self, tier: str) -> int:
        beats = self._heartbeats.items()
        return sum(beat().slots for worker, beat in beats if tier in self._workers[worker])

    def drop_run(self, run_id: str, *, cancel: bool = False) -> int:
        """Forget queued tasks of a run that ended; returns how many were dropped.

        With ``cancel`` (the run failed or stopped), workers are also told to kill
        what they still run of it.
        """
        dropped = self._tasks.drop(run_id)
        if cancel:
            for callback in self._cancel_callbacks:
                callback(run_id)
        return dropped

    def on_cancel(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(run_id)`` whenever a run ends (a worker kills what it runs of it)."""
        self._cancel_callbacks.append(callback)

    def pending(self) -> int:
        return sum(self._tasks.counts().values())

    async def queued_keys(self) -> set[str]:
        """None survive a restart: the queue lives and dies with the process."""
        return {key for task in self._tasks for key in task.attempt_keys()}

    async def waiting(self) -> dict[str, int]:
        """Tasks not taken yet, per tier."""
        return self._tasks.counts()

    def waiting_in_turn(self, tier: str, priority: int, tenant: str) -> int:
        """Tasks not taken yet of the tenant at that priority and tier."""
        return self._tasks.pending_in_turn(tier, priority, tenant)

    async def unaccounted(self, keys: Collection[str]) -> tuple[set[str], bool]:
        """None lost: the queue lives and dies with the process (never asked)."""
        return set(), True

    async def describe(self) -> dict[str, Any]:
        """The live workers and the tasks waiting per tier (``GET /api/v1/workers``)."""
        now = time.time()
        beats = [beat().model_copy(update={"sent_at": now}) for beat in self._heartbeats.values()]
        return {
            "workers": [worker_view(b) for b in beats],
            "queued": self._tasks.counts(),
        }

    async def dead_workers(self) -> set[str]:
        """None: the workers of one process live and die with it."""
        return set()

    async def check(self) -> None:
        """Nothing to check: it is in this process."""

    async def close(self) -> None:
        """Nothing to release."""


def worker_view(beat: WorkerHeartbeat) -> dict[str, Any]:
    """A worker as the API shows it (its attempts counted, not named: they are tenants')."""
    return {
        "id": beat.worker_id,
        "name": beat.name,
        "tiers": beat.tiers,
        "memory_mib": beat.memory // 2**20,
        "slots": beat.slots,
        "running": len(beat.running),
        "launch": beat.launch,
        "spares": [spare.model_dump() for spare in beat.spares],
        "last_heartbeat": datetime.fromtimestamp(beat.sent_at, UTC).isoformat(),
    }


__all__ = ["MemoryQueue", "worker_view"]
