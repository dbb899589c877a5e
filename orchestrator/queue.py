"""The queue between the scheduler and workers.

The scheduler puts ``Task``s and reads worker messages; a worker registers the
tiers it offers, takes tasks for them and puts messages back. Neither side
knows the other: they meet here and in ``orchestrator.messages``.

``MemoryQueue`` serves the one-process ``pipewell dev``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Protocol

from orchestrator.messages import Task, WorkerMessage


class TaskQueue(Protocol):
    async def put_task(self, task: Task) -> None: ...

    async def take_task(self, tiers: frozenset[str]) -> Task: ...

    async def put_message(self, message: WorkerMessage) -> None: ...

    async def next_message(self) -> WorkerMessage: ...

    def register_worker(self, worker: str, tiers: frozenset[str]) -> None: ...

    def unregister_worker(self, worker: str) -> None: ...

    def offered_tiers(self) -> frozenset[str]: ...

    def drop_run(self, run_id: str, *, cancel: bool = False) -> int: ...

    def on_cancel(self, callback: Callable[[str], None]) -> None: ...


class MemoryQueue:
    """In-process queue: FIFO tasks, taken by the first worker offering their tier."""

    def __init__(self) -> None:
        self._tasks: deque[Task] = deque()
        self._task_added = asyncio.Condition()
        self._messages: asyncio.Queue[WorkerMessage] = asyncio.Queue()
        self._workers: dict[str, frozenset[str]] = {}
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

    async def put_message(self, message: WorkerMessage) -> None:
        self._messages.put_nowait(message)

    def put_message_nowait(self, message: WorkerMessage) -> None:
        self._messages.put_nowait(message)

    async def next_message(self) -> WorkerMessage:
        return await self._messages.get()

    def register_worker(self, worker: str, tiers: frozenset[str]) -> None:
        self._workers[worker] = tiers

    def unregister_worker(self, worker: str) -> None:
        self._workers.pop(worker, None)

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


__all__ = ["MemoryQueue", "TaskQueue"]
