"""Tasks started to run on their own (retries, deadlines, heartbeats, sweeps), kept track of.

An untracked task can vanish with its error unseen, or outlive what started it.
Each owner keeps one ``Background``: its tasks' failures are logged, and
``close`` cancels what is left and waits for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

log = structlog.get_logger(__name__)


class Background:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def cancel(self, name: str) -> None:
        """Cancel the tasks called ``name``."""
        for task in list(self._tasks):
            if task.get_name() == name:
                task.cancel()

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background_task_failed", task=task.get_name(), exc_info=task.exception())

    async def close(self) -> None:
        """Cancel every task left and wait for them (their failures were logged as they ended)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def every(seconds: float, step: Callable[[], Awaitable[Any]], what: str) -> None:
    """``step()`` now, then every ``seconds``, for as long as the task runs: a failure is
    logged (``<what>_failed``) and the next turn comes all the same."""
    while True:
        try:
            await step()
        except Exception:
            log.exception(f"{what}_failed")
        await asyncio.sleep(seconds)


def describe_pending() -> list[str]:
    """Each unfinished task of this loop but the caller's, with where it waits: its name,
    then each awaited coroutine's function and line (what a hung shutdown is stuck on)."""
    me = asyncio.current_task()
    described = []
    for task in asyncio.all_tasks():
        if task is me:
            continue
        where = []
        awaited: Any = task.get_coro()
        while awaited is not None:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is not None:
                where.append(f"{frame.f_code.co_qualname}:{frame.f_lineno}")
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
        described.append(f"{task.get_name()}: {' > '.join(where) or 'not started'}")
    return sorted(described)


__all__ = ["Background", "describe_pending", "every"]
