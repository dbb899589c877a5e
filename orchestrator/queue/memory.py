"""The in-process queue of the one-process ``pipewell dev``."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from orchestrator.messages import Task, WorkerHeartbeat, WorkerMessage


class MemoryQueue:
    """In-process queue: FIFO tasks, taken by the first worker offering their tier."""

    def __init__(self) -> None:
        self._tasks: deque[Task] = deque()
        self._task_added = asyncio.Condition()
        self._messages: asyncio.Queue[WorkerMessage] = asyncio.Queue()
        self._workers: dict[str, frozenset[str]] = {}
        self._heartbeats: dict[str, Callable[[], WorkerHeartbeat]] = {}
        self._cancel_callbacks: list[Callable[[str], None]] = []

    async def put_task(self, task: Task) -> None:
        async with self._task_added:
            self._tasks.append(task)
            self._task_added.notify_all()

    async def take_task(self, tiers: frozenset[str]) -> Task:
        async with self._task_added:
            while True:
                for task in self._tasks:
                    if task.tier in tiers:
                        self._tasks.remove(task)
                        return task
                await self._task_added.wait()

    async def task_done(self, task: Task) -> None:
        """Nothing to do: a task taken here is gone from the queue already."""

    async def put_message(self, message: WorkerMessage) -> None:
        self._messages.put_nowait(message)

    def put_message_nowait(self, message: WorkerMessage) -> None:
        self._messages.put_nowait(message)

    async def next_message(self) -> WorkerMessage:
        return await self._messages.get()

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

    def drop_run(self, run_id: str, *, cancel: bool = False) -> int:
        """Forget queued tasks of a run that ended; returns how many were dropped.

        With ``cancel`` (the run failed or stopped), workers are also told to kill
        what they still run of it.
        """
        before = len(self._tasks)
        self._tasks = deque(t for t in self._tasks if t.run_id != run_id)
        if cancel:
            for callback in self._cancel_callbacks:
                callback(run_id)
        return before - len(self._tasks)

    def on_cancel(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(run_id)`` whenever a run ends (a worker kills what it runs of it)."""
        self._cancel_callbacks.append(callback)

    def pending(self) -> int:
        return len(self._tasks)

    async def queued_keys(self) -> set[str]:
        """None survive a restart: the queue lives and dies with the process."""
        return {task.key for task in self._tasks}

    async def describe(self) -> dict[str, Any]:
        """The live workers and the tasks waiting per tier (``GET /api/v1/workers``)."""
        now = time.time()
        beats = [beat().model_copy(update={"sent_at": now}) for beat in self._heartbeats.values()]
        return {
            "workers": [worker_view(b) for b in beats],
            "queued": dict(Counter(t.tier for t in self._tasks)),
        }

    async def dead_workers(self) -> set[str]:
        """None: the workers of one process live and die with it."""
        return set()

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
