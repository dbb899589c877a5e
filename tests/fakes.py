"""A fake executor: the worker's I/O edge, replaced for fast fault-injection tests.

Only the executor is fake: the scheduler, the worker, the queue, the state
store (SQLite) and the local store are the real ones. The real executor is
tested against the real Docker engine elsewhere.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from orchestrator.executor import Cleanup, Emit, LaunchMode
from orchestrator.messages import AttemptResult, OutputInfo, SpareCount, Task

#: What a node does: return an error text to fail the attempt, None to succeed, or raise.
Behaviour = Callable[[Task], str | None]


class FakeExecutor:
    """Runs each task by its node's behaviour (success by default), in the worker's threads.

    Implements orchestrator.executor.Executor (the worker takes it as one).
    """

    launch: LaunchMode = "plain"

    def __init__(
        self,
        behaviours: dict[str, Behaviour] | None = None,
        cleanups: dict[str, Callable[[], float]] | None = None,
    ) -> None:
        self.behaviours = behaviours or {}
        # What removing a node's container does (instant by default).
        self.cleanups = cleanups or {}
        self.worker_id = "0" * 32
        self.tasks: list[Task] = []
        self.killed_runs: list[str] = []
        self._lock = threading.Lock()

    def run(self, task: Task, emit: Emit) -> tuple[AttemptResult, Cleanup]:
        with self._lock:
            self.tasks.append(task)
        behaviour = self.behaviours.get(task.node_id, lambda _task: None)
        error = behaviour(task)  # may raise: the worker must survive an executor bug
        result = AttemptResult(
            run_id=task.run_id, node_id=task.node_id, attempt=task.attempt, ok=error is None
        )
        if error is None:
            result.outputs = {
                o.name: OutputInfo(size=1, content_type="text/plain") for o in task.outputs
            }
        else:
            result.error = error
        return result, self.cleanups.get(task.node_id, lambda: 0.0)

    def attempts_of(self, node_id: str) -> list[int]:
        with self._lock:
            return [t.attempt for t in self.tasks if t.node_id == node_id]

    def open(self) -> None:
        pass

    def remove_leftovers(self) -> int:
        return 0

    def remove_containers_of(self, worker_ids: set[str]) -> int:
        return 0

    def remove_expired_spares(self) -> int:
        return 0

    def spares(self) -> list[SpareCount]:
        return []

    def kill_run(self, run_id: str) -> int:
        self.killed_runs.append(run_id)
        return 0

    def abort_all(self) -> int:
        return 0

    def close(self) -> int:
        return 0

    def ping(self) -> str | None:
        return None

    def reconnect(self) -> str | None:
        return None
