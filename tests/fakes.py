"""Fakes at the worker's two seams, for fast fault-injection tests without Docker.

``FakeExecutor`` replaces the worker's I/O edge (the executor); ``ObservedQueue``
is the real memory queue with what a test needs to see and break at its seam.
The scheduler, the worker, the state store (SQLite) and the local store stay
the real ones. The real executor is tested against the real Docker engine
elsewhere.

Tests wait on what these record (``FakeExecutor.until``, ``ObservedQueue.caught_up``),
never on a sleep: a slow machine only makes them slower, not wrong.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Collection

from orchestrator.dispatch_order import NO_TURN, Turn
from orchestrator.executor import BeginItem, Cleanup, Emit, EndItem, LaunchMode
from orchestrator.messages import (
    AttemptResult,
    OutputInfo,
    SpareCount,
    Task,
    WorkerMessage,
    attempt_key,
)
from orchestrator.models import LogRecord
from orchestrator.queue import MemoryQueue

#: What a node does: return an error text to fail the attempt, None to succeed, a
#: whole result to report it as it is (retryable, engine_down, timings), or raise.
Behaviour = Callable[[Task], str | AttemptResult | None]

#: Seconds a held attempt waits for the test at most: a test that fails before
#: letting it through must not leave the worker's thread (and pytest) hanging.
HOLD_LIMIT = 10.0

#: What the Docker executor reports for these, so that tests read the same.
KILLED = "command exited with code 137 (killed by SIGKILL)"
REFUSED = "cancelled: the run ended before this node started"
ABORTED = "the worker is shutting down; the node will run again"


class FakeExecutor:
    """Runs each task by its node's behaviour (success by default), in the worker's threads.

    Implements orchestrator.executor.Executor (the worker takes it as one), and
    what the Docker executor does around a run: an attempt of a run that ended
    (``kill_run``) is refused, and a held one ends at once, killed, when its run
    ends or the worker aborts (``abort_all``).

    Attempts of the nodes in ``hold`` wait at a gate until the test lets them
    through (``let_through``), so a test decides when they end and sees how many
    run at once (``running``, ``most_running``).

    A batch (``run_batch``) runs its items one after another, each as ``run`` runs
    a lone attempt; ``batches`` records the items (their Task.key) each batch ran.
    """

    launch: LaunchMode = "plain"

    def __init__(
        self,
        behaviours: dict[str, Behaviour] | None = None,
        cleanups: dict[str, Callable[[], float]] | None = None,
        *,
        hold: Collection[str] = (),
        logs: dict[str, list[str]] | None = None,
        worker_id: str = "0" * 32,
    ) -> None:
        self.behaviours = behaviours or {}
        # What removing a node's container does (instant by default).
        self.cleanups = cleanups or {}
        self.hold = frozenset(hold)
        # Lines each node prints (stdout) before it ends.
        self.logs = logs or {}
        self.worker_id = worker_id
        self.tasks: list[Task] = []
        self.killed_runs: list[str] = []
        self.aborts = 0
        self.running: dict[str, Task] = {}  # Task.key -> task, while in run()
        self.most_running = 0
        self.most_running_of_tier: dict[str, int] = {}
        self.ended: list[str] = []  # Task.key, as run() returns
        # Per batch run (run_batch), in the order they began: its items that ran.
        self.batches: list[list[str]] = []
        # Held attempts that may go on: of one node, or (None) of any.
        self._permits: Counter[str | None] = Counter()
        self._open = False
        self._aborting = False
        # One lock for all of it: every change is announced to waiters (``until``).
        self._changed = threading.Condition()

    # ------------------------------------------------------------ the test's side

    def let_through(self, count: int = 1, node_id: str | None = None) -> None:
        """Let ``count`` held attempts of ``node_id`` (None: any, the first to ask) go on."""
        with self._changed:
            self._permits[node_id] += count
            self._changed.notify_all()

    def open_gate(self) -> None:
        """Let every held attempt go on, now and from now on."""
        with self._changed:
            self._open = True
            self._changed.notify_all()

    async def until(self, predicate: Callable[[], bool], seconds: float = 5.0) -> None:
        """Wait until ``predicate()`` holds of this executor (checked at each change of it).

        The predicate runs in a thread under the executor's lock: it may read
        this object only, not the event loop's state.
        """
        met = await asyncio.to_thread(self._wait_for, predicate, seconds)
        if not met:
            raise AssertionError(
                f"not within {seconds} s: running {sorted(self.running)}, "
                f"ended {self.ended}, killed runs {self.killed_runs}"
            )

    def _wait_for(self, predicate: Callable[[], bool], seconds: float) -> bool:
        with self._changed:
            return self._changed.wait_for(predicate, seconds)

    def attempts_of(self, node_id: str) -> list[int]:
        with self._changed:
            return [t.attempt for t in self.tasks if t.node_id == node_id]

    # ------------------------------------------------------------ the executor

    def run(self, task: Task, emit: Emit) -> tuple[AttemptResult, Cleanup]:
        cleanup = self.cleanups.get(task.node_id, lambda: 0.0)
        with self._changed:
            self.tasks.append(task)
            self.running[task.key] = task
            self.most_running = max(self.most_running, len(self.running))
            same_tier = sum(1 for t in self.running.values() if t.tier == task.tier)
            self.most_running_of_tier[task.tier] = max(
                self.most_running_of_tier.get(task.tier, 0), same_tier
            )
            self._changed.notify_all()
        try:
            stopped = self._stopped(task)
            if stopped is not None:
                return stopped, cleanup
            for line in self.logs.get(task.node_id, []):
                emit(LogRecord(message=line, stream="stdout", attempt=task.attempt))
            behaviour = self.behaviours.get(task.node_id, lambda _task: None)
            outcome = behaviour(task)  # may raise: the worker must survive an executor bug
            return self._result(task, outcome), cleanup
        finally:
            with self._changed:
                del self.running[task.key]
                self.ended.append(task.key)
                self._changed.notify_all()

    def run_batch(self, task: Task, begin: BeginItem, end: EndItem) -> Cleanup:
        """Each item in turn, as ``run`` runs it, until ``begin`` says stop. A behaviour
        that raises ends the batch there (an executor bug: the worker fails the rest)."""
        with self._changed:
            ran: list[str] = []
            self.batches.append(ran)
        cleanups: list[Cleanup] = []
        for item in task.batch or [task]:
            emit = begin(item)
            if emit is None:
                break
            with self._changed:
                ran.append(item.key)
            result, cleanup = self.run(item, emit)
            cleanups.append(cleanup)
            end(result)
        return lambda: sum(cleanup() for cleanup in cleanups)

    def _stopped(self, task: Task) -> AttemptResult | None:
        """Why the attempt ends before its behaviour runs (a kill, an abort), if it does."""
        with self._changed:
            if task.run_id in self.killed_runs:
                return self._failed(task, REFUSED, retryable=False)
            if task.node_id not in self.hold:
                return None
            self._changed.wait_for(
                lambda: (
                    self._open
                    or self._permit_for(task) is not False
                    or self._aborting
                    or task.run_id in self.killed_runs
                ),
                HOLD_LIMIT,
            )
            if task.run_id in self.killed_runs:
                return self._failed(task, KILLED)
            if self._aborting:
                return self._failed(task, ABORTED)
            if self._open:
                return None
            permit = self._permit_for(task)
            if permit is not False:
                self._permits[permit] -= 1
                return None
            return self._failed(task, f"held over {HOLD_LIMIT:g} s: the test never let it through")

    def _permit_for(self, task: Task) -> str | None | bool:
        """Which permit lets ``task`` go on (its node's first), False if none does."""
        for key in (task.node_id, None):
            if self._permits[key] > 0:
                return key
        return False

    @staticmethod
    def _failed(task: Task, error: str, *, retryable: bool = True) -> AttemptResult:
        return AttemptResult.of(task, ok=False, error=error, retryable=retryable)

    @staticmethod
    def _result(task: Task, outcome: str | AttemptResult | None) -> AttemptResult:
        if isinstance(outcome, AttemptResult):
            return outcome
        if outcome is not None:
            return FakeExecutor._failed(task, outcome)
        outputs = {o.name: OutputInfo(size=1, content_type="text/plain") for o in task.outputs}
        return AttemptResult.of(task, ok=True, outputs=outputs)

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
        with self._changed:
            self.killed_runs.append(run_id)
            killed = sum(1 for t in self.running.values() if t.run_id == run_id)
            self._changed.notify_all()
        return killed

    def abort_all(self) -> int:
        with self._changed:
            self.aborts += 1
            self._aborting = True
            self._changed.notify_all()
            return len(self.running)

    def close(self) -> int:
        return 0

    def ping(self) -> str | None:
        return None

    def reconnect(self) -> str | None:
        return None


class QueueRefused(RuntimeError):
    """What a test makes the queue raise (a queue fault that retrying does not cure)."""


class ObservedQueue(MemoryQueue):
    """The real memory queue, with what a test needs to see and break at its seam.

    - ``sent``: every message put, ``done``: keys of the tasks marked done, in order;
      ``history``: both as one sequence ("result r/n/1", "done r/n/1"; an item's
      attempt as its Task.key, "result r/n[a.jpg]/1").
    - ``read()``: takes messages as the scheduler would, until the test has what it waits for.
    - ``caught_up()``: waits until the reader of messages (the scheduler) has
      handled every message put so far, and asks for the next.
    - ``unregistered``: workers that left, ``worker_left`` set as one does.
    - ``refuse_message`` / ``refuse_takes`` / ``refuse_puts``: faults, raised as
      ``QueueRefused`` (the next ``refuse_takes`` takes, the next ``refuse_puts`` puts).
    """

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[WorkerMessage] = []
        self.done: list[str] = []
        self.history: list[str] = []
        self.refuse_message: Callable[[WorkerMessage], bool] = lambda _message: False
        self.refuse_takes = 0
        self.refuse_puts = 0
        self.refused: list[WorkerMessage] = []
        self.unregistered: list[str] = []
        self.worker_left = asyncio.Event()
        self.marked_done = asyncio.Event()
        self._put = 0
        self._taken = 0
        self._reader_waits = asyncio.Event()

    async def take_task(self, tiers: frozenset[str]) -> Task:
        if self.refuse_takes > 0:
            self.refuse_takes -= 1
            raise QueueRefused("take refused")
        return await super().take_task(tiers)

    async def put_tasks(self, tasks: list[Task], turn: Turn = NO_TURN) -> None:
        if self.refuse_puts > 0:
            self.refuse_puts -= 1
            raise QueueRefused("put refused")
        await super().put_tasks(tasks, turn)

    async def task_done(self, task: Task) -> None:
        self.done.append(task.key)
        self.history.append(f"done {task.key}")
        self.marked_done.set()
        await super().task_done(task)

    async def put_message(self, message: WorkerMessage) -> None:
        if self.refuse_message(message):
            self.refused.append(message)
            raise QueueRefused(f"{message.kind} message refused")
        self._count_put(message)
        await super().put_message(message)

    def put_message_nowait(self, message: WorkerMessage) -> None:
        self._count_put(message)
        super().put_message_nowait(message)

    def _count_put(self, message: WorkerMessage) -> None:
        self.sent.append(message)
        key = attempt_key(message.run_id, message.node_id, message.attempt, message.item)
        self.history.append(f"{message.kind} {key}")
        self._put += 1
        self._reader_waits.clear()

    async def next_message(self) -> WorkerMessage:
        # Asked again with all taken: whatever it took before is handled.
        if self._taken == self._put:
            self._reader_waits.set()
        message = await super().next_message()
        self._taken += 1
        return message

    async def read(
        self, until: Callable[[list[WorkerMessage]], bool], seconds: float = 5.0
    ) -> list[WorkerMessage]:
        """Messages taken in order until ``until(taken)``; AssertionError after ``seconds``."""
        taken: list[WorkerMessage] = []
        try:
            async with asyncio.timeout(seconds):
                while not until(taken):
                    taken.append(await self.next_message())
        except TimeoutError:
            raise AssertionError(f"not within {seconds} s; taken: {taken}") from None
        return taken

    async def caught_up(self, seconds: float = 5.0) -> None:
        """Once every message put so far is handled; AssertionError after ``seconds``."""
        try:
            await asyncio.wait_for(self._reader_waits.wait(), seconds)
        except TimeoutError:
            raise AssertionError(
                f"the reader handled {self._taken} of {self._put} messages within {seconds} s"
            ) from None

    async def unregister_worker(self, worker: str) -> None:
        self.unregistered.append(worker)
        self.worker_left.set()
        await super().unregister_worker(worker)
