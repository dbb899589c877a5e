"""The real worker over the real memory queue, on the fake executor (no Docker).

What an attempt reports and in what order, how many run at once, and how the
worker fails: an attempt that fails, an executor that raises, an engine that
goes away, a run cancelled under an attempt, a worker closed mid-attempt. Each
test waits on what the fakes record, never on a sleep.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from orchestrator.config import WorkerSettings
from orchestrator.executor import DockerExecutor, Executor
from orchestrator.messages import (
    AttemptCleanedUp,
    AttemptLog,
    AttemptResult,
    AttemptStarted,
    OutputInfo,
    Task,
    TaskOutput,
    WorkerMessage,
    attempt_key,
)
from orchestrator.worker import Worker
from tests.fakes import KILLED, REFUSED, FakeExecutor, ObservedQueue

StartWorker = Callable[..., Awaitable[Worker]]


def task(
    run_id: str,
    node_id: str,
    tier: str = "c-nano",
    outputs: tuple[str, ...] = (),
    item: str | None = None,
) -> Task:
    return Task(
        run_id=run_id,
        node_id=node_id,
        attempt=1,
        image="fake",
        tier=tier,
        timeout=60,
        outputs=[TaskOutput(name=name, url=f"http://store/{name}") for name in outputs],
        item=item,
    )


def results(messages: list[WorkerMessage]) -> dict[str, AttemptResult]:
    """The results among ``messages``, by their attempt's key (Task.key)."""
    return {
        attempt_key(m.run_id, m.node_id, m.attempt, m.item): m
        for m in messages
        if isinstance(m, AttemptResult)
    }


def has_results(count: int) -> Callable[[list[WorkerMessage]], bool]:
    return lambda messages: len(results(messages)) >= count


@pytest.fixture
async def start() -> AsyncIterator[StartWorker]:
    """Workers on a fake executor, closed at the end (their held attempts let go first)."""
    started: list[tuple[Worker, FakeExecutor]] = []

    async def start(executor: FakeExecutor, queue: ObservedQueue, **settings: Any) -> Worker:
        base: dict[str, Any] = {"name": "w1", "tiers": ["c-nano", "c-small"], "memory": "8g"}
        worker = Worker(WorkerSettings(**{**base, **settings}), queue, executor)
        await worker.start()
        started.append((worker, executor))
        return worker

    yield start
    for worker, executor in started:
        executor.open_gate()
        await worker.close(grace=1)


def test_the_worker_takes_any_executor_of_the_protocol():
    hints = typing.get_type_hints(Worker.__init__)
    assert hints["executor"] is Executor


@pytest.mark.parametrize("implementation", [FakeExecutor, DockerExecutor])
def test_each_executor_has_every_method_of_the_protocol_as_it_is_called(implementation):
    methods = [name for name in vars(Executor) if not name.startswith("_")]
    assert "run" in methods and "kill_run" in methods
    for name in methods:
        wanted = list(inspect.signature(getattr(Executor, name)).parameters)
        assert list(inspect.signature(getattr(implementation, name)).parameters) == wanted, name


async def test_an_attempt_reports_its_start_lines_result_and_removal_in_order(start):
    reported = AttemptResult(
        run_id="r1",
        node_id="a",
        attempt=1,
        ok=True,
        outputs={"out": OutputInfo(size=5, content_type="image/png")},
        timings={"input_transfer": 0.25, "run": 1.5, "output_transfer": 0.125},
    )
    executor = FakeExecutor(
        {"a": lambda _task: reported},
        cleanups={"a": lambda: 0.375},
        logs={"a": ["hello", "world"]},
    )
    queue = ObservedQueue()
    worker = await start(executor, queue)
    sent = task("r1", "a", outputs=("out",))
    await queue.put_task(sent)

    messages = await queue.read(lambda m: any(isinstance(x, AttemptCleanedUp) for x in m))
    assert [m.kind for m in messages] == ["started", "log", "log", "result", "cleaned"]
    started, first, second, result, cleaned = messages
    assert isinstance(started, AttemptStarted) and started.worker == "w1"
    assert isinstance(first, AttemptLog) and isinstance(second, AttemptLog)
    lines = [(m.record.message, m.record.stream, m.record.attempt) for m in (first, second)]
    assert lines == [("hello", "stdout", 1), ("world", "stdout", 1)]
    assert result == reported  # outputs and timings as the executor measured them
    assert isinstance(cleaned, AttemptCleanedUp) and cleaned.remove_seconds == 0.375
    assert executor.tasks == [sent]  # the task as queued, nothing lost on the way
    # Only once its result was sent is the task done (the queue may forget it then).
    kinds = ["started", "log", "log", "result", "done", "cleaned"]
    assert queue.history == [f"{kind} r1/a/1" for kind in kinds]
    assert worker.heartbeat().running == []


async def test_each_item_of_a_node_is_an_attempt_of_its_own_and_every_message_names_it(start):
    """Items of one mapped node share its run, node and attempt number: only the item
    tells their messages, their slots and their done marks apart."""
    items = ["photos/a.jpg", "photos/b.jpg"]
    executor = FakeExecutor(
        {"m": lambda t: "bad frame" if t.item == "photos/b.jpg" else None},
        hold={"m"},
        logs={"m": ["working"]},
    )
    queue = ObservedQueue()
    worker = await start(executor, queue)
    await queue.put_tasks([task("r1", "m", outputs=("out",), item=item) for item in items])
    await executor.until(lambda: len(executor.running) == 2)
    keys = ["r1/m[photos/a.jpg]/1", "r1/m[photos/b.jpg]/1"]
    assert sorted(executor.running) == keys == worker.heartbeat().running
    executor.open_gate()

    messages = await queue.read(lambda m: sum(isinstance(x, AttemptCleanedUp) for x in m) == 2)
    for item in items:
        own = [m for m in messages if m.item == item]
        assert [m.kind for m in own] == ["started", "log", "result", "cleaned"]
    assert all(m.item in items for m in messages)
    reported = results(messages)
    assert sorted(reported) == keys
    assert reported[keys[0]].ok and reported[keys[0]].item == "photos/a.jpg"
    failed = reported[keys[1]]
    assert (failed.ok, failed.error, failed.item) == (False, "bad frame", "photos/b.jpg")
    assert sorted(queue.done) == keys
    assert [t.item for t in executor.tasks] == items


async def test_an_executor_that_raises_on_an_item_fails_that_item(start):
    def explode(_task: Task) -> str | None:
        raise RuntimeError("bug in the executor")

    queue = ObservedQueue()
    await start(FakeExecutor({"m": explode}), queue)
    await queue.put_task(task("r1", "m", item="a.jpg"))
    failed = results(await queue.read(has_results(1)))["r1/m[a.jpg]/1"]
    assert (failed.ok, failed.item) == (False, "a.jpg")
    assert failed.error == "internal error in the worker: RuntimeError: bug in the executor"


async def test_a_node_without_a_behaviour_succeeds_with_each_declared_output(start):
    queue = ObservedQueue()
    await start(FakeExecutor(), queue)
    await queue.put_task(task("r1", "a", outputs=("left", "right")))
    result = results(await queue.read(has_results(1)))["r1/a/1"]
    assert (result.ok, result.error, sorted(result.outputs)) == (True, "", ["left", "right"])


async def test_never_more_attempts_at_once_than_the_worker_has_slots(start):
    nodes = [f"n{i}" for i in range(5)]
    executor = FakeExecutor(hold=nodes)
    queue = ObservedQueue()
    worker = await start(executor, queue, max_parallel=2)
    await queue.put_tasks([task("r1", node) for node in nodes])

    await executor.until(lambda: len(executor.running) == 2)
    assert queue.pending() == 3  # the rest wait in the queue, not in the worker
    assert worker.heartbeat().running == sorted(executor.running)
    for finished in range(1, len(nodes) + 1):
        executor.let_through(1)
        await executor.until(lambda finished=finished: len(executor.ended) == finished)

    reported = results(await queue.read(has_results(len(nodes))))
    assert sorted(reported) == [f"r1/{node}/1" for node in nodes]
    assert all(result.ok for result in reported.values())
    assert executor.most_running == 2
    assert [t.node_id for t in executor.tasks] == nodes  # first queued, first run


async def test_memory_caps_a_tier_while_smaller_tasks_run_beside_it(start):
    """3 GiB: one c-small (2 GiB) at a time; the c-nano ones queued after them
    (0.5 GiB) are not held up, and the takes cancelled as memory comes and goes
    lose no task."""
    big, small = ["s0", "s1", "s2"], ["t0", "t1"]
    executor = FakeExecutor(hold=big + small)
    queue = ObservedQueue()
    await start(executor, queue, memory="3g", max_parallel=4)
    await queue.put_tasks([task("r1", node, tier="c-small") for node in big])
    await queue.put_tasks([task("r1", node) for node in small])

    await executor.until(lambda: len(executor.running) == 3)
    assert sorted(executor.running) == ["r1/s0/1", "r1/t0/1", "r1/t1/1"]  # all 3 GiB
    assert await queue.queued_keys() == {"r1/s1/1", "r1/s2/1"}
    for node in small:
        executor.let_through(node_id=node)
    await executor.until(lambda: len(executor.ended) == 2)
    assert list(executor.running) == ["r1/s0/1"]  # 1 GiB free: s1 still does not fit
    for node, after in zip(big, ["r1/s1/1", "r1/s2/1", None], strict=True):
        executor.let_through(node_id=node)
        await executor.until(lambda after=after: next(iter(executor.running), None) == after)

    reported = results(await queue.read(has_results(5)))
    assert sorted(reported) == [f"r1/{node}/1" for node in big + small]
    assert all(result.ok for result in reported.values())
    assert executor.most_running_of_tier == {"c-small": 1, "c-nano": 2}
    assert [t.node_id for t in executor.tasks] == ["s0", "t0", "t1", "s1", "s2"]


@pytest.mark.parametrize(
    ("outcome", "error", "retryable"),
    [
        ("command exited with code 3: bad input", "command exited with code 3: bad input", True),
        (
            AttemptResult(
                run_id="r1",
                node_id="a",
                attempt=1,
                ok=False,
                error="input 'in' is text/plain, not one of image/png",
                retryable=False,
            ),
            "input 'in' is text/plain, not one of image/png",
            False,
        ),
    ],
    ids=["retryable", "not-retryable"],
)
async def test_a_failed_attempt_is_reported_as_the_executor_says(start, outcome, error, retryable):
    queue = ObservedQueue()
    worker = await start(FakeExecutor({"a": lambda _task: outcome}), queue)
    await queue.put_task(task("r1", "a", outputs=("out",)))
    result = results(await queue.read(has_results(1)))["r1/a/1"]
    assert (result.ok, result.error, result.retryable) == (False, error, retryable)
    assert result.outputs == {}
    assert queue.done == ["r1/a/1"]  # reported: the scheduler decides about a retry
    assert worker.heartbeat().running == []


async def test_an_executor_that_raises_fails_the_attempt_and_the_worker_goes_on(start):
    def explode(_task: Task) -> str | None:
        raise RuntimeError("bug in the executor")

    executor = FakeExecutor({"a": explode})
    queue = ObservedQueue()
    # One slot: the next task runs only if the failed attempt gave it back.
    await start(executor, queue, max_parallel=1)
    await queue.put_tasks([task("r1", "a"), task("r1", "b")])
    reported = results(await queue.read(has_results(2)))
    failed = reported["r1/a/1"]
    assert (failed.ok, failed.retryable) == (False, True)
    assert failed.error == "internal error in the worker: RuntimeError: bug in the executor"
    assert reported["r1/b/1"].ok
    assert queue.done == ["r1/a/1", "r1/b/1"]


async def test_an_engine_that_goes_away_stops_takes_until_it_answers(start):
    lost = "Docker engine unreachable: connection refused"

    def engine_gone(task: Task) -> AttemptResult:
        return AttemptResult(
            run_id=task.run_id,
            node_id=task.node_id,
            attempt=task.attempt,
            ok=False,
            error=lost,
            engine_down=True,
        )

    executor = FakeExecutor({"a": engine_gone})
    asked, answer = threading.Event(), threading.Event()

    def reconnect() -> str | None:
        asked.set()
        answer.wait(5)
        return None

    executor.reconnect = reconnect  # type: ignore[method-assign]
    queue = ObservedQueue()
    worker = await start(executor, queue, max_parallel=1)
    await queue.put_tasks([task("r1", "a"), task("r1", "b")])
    try:
        result = results(await queue.read(has_results(1)))["r1/a/1"]
        assert (result.ok, result.engine_down, result.error) == (False, True, lost)
        assert await asyncio.to_thread(asked.wait, 1)
        # Marked down before the slot was given back: b was not taken meanwhile.
        assert await queue.queued_keys() == {"r1/b/1"}
        assert await worker.engine_problem() == lost
    finally:
        answer.set()
    assert results(await queue.read(has_results(1)))["r1/b/1"].ok
    assert await worker.engine_problem() is None
    assert executor.attempts_of("b") == [1]


async def test_a_cancelled_run_ends_its_running_attempt_and_spares_the_others(start):
    executor = FakeExecutor(hold={"a", "b", "c"})
    queue = ObservedQueue()
    await start(executor, queue, max_parallel=2)
    await queue.put_tasks([task("r1", "a"), task("r2", "b"), task("r1", "c")])
    await executor.until(lambda: len(executor.running) == 2)

    assert queue.drop_run("r0") == 0  # a run that completed: nothing to kill
    assert queue.drop_run("r1", cancel=True) == 1  # c, still queued
    killed = results(await queue.read(has_results(1)))["r1/a/1"]
    assert (killed.ok, killed.error) == (False, KILLED)
    assert executor.killed_runs == ["r1"]
    assert list(executor.running) == ["r2/b/1"]  # the other run's attempt goes on
    assert await queue.queued_keys() == set()

    executor.let_through(1)
    assert results(await queue.read(has_results(1)))["r2/b/1"].ok
    assert executor.attempts_of("c") == []


async def test_a_cancel_reaches_the_executor_before_the_runs_attempt_does(start):
    """A task of the run may already be taken (waiting for capacity) or still on
    its way: the executor is told anyway, and refuses to start it."""
    executor = FakeExecutor()
    queue = ObservedQueue()
    await start(executor, queue)
    queue.drop_run("r1", cancel=True)
    await executor.until(lambda: executor.killed_runs == ["r1"])
    await queue.put_task(task("r1", "late"))
    refused = results(await queue.read(has_results(1)))["r1/late/1"]
    assert (refused.ok, refused.error, refused.retryable) == (False, REFUSED, False)


async def test_a_worker_closed_mid_attempt_reports_nothing_of_it_and_leaves_the_rest(start):
    """The memory queue forgets a task once it is taken: the abandoned attempt is
    neither reported nor done, and the scheduler dispatches it again when it
    resumes. What was not taken stays queued for another worker."""
    executor = FakeExecutor(hold={"a"})
    queue = ObservedQueue()
    worker = await start(executor, queue, max_parallel=1)
    await queue.put_tasks([task("r1", "a"), task("r1", "b")])
    await executor.until(lambda: list(executor.running) == ["r1/a/1"])

    await worker.close(grace=0.05)  # a does not end within it: aborted
    assert executor.aborts == 1
    assert executor.ended == ["r1/a/1"]  # ended by the abort, with ABORTED
    assert "result" not in [m.kind for m in queue.sent]
    assert queue.done == []
    assert queue.unregistered == [worker.id] and queue.offered_tiers() == frozenset()
    assert await queue.queued_keys() == {"r1/b/1"}

    other = FakeExecutor(worker_id="1" * 32)
    await start(other, queue, name="w2")
    assert results(await queue.read(has_results(1)))["r1/b/1"].ok
    assert other.attempts_of("b") == [1] and other.attempts_of("a") == []
    assert queue.done == ["r1/b/1"]


async def test_an_attempt_that_ends_within_the_grace_of_a_close_is_reported(start):
    executor = FakeExecutor(hold={"a"})
    queue = ObservedQueue()
    worker = await start(executor, queue, max_parallel=1)
    await queue.put_tasks([task("r1", "a"), task("r1", "b")])
    await executor.until(lambda: list(executor.running) == ["r1/a/1"])

    closing = asyncio.create_task(worker.close(grace=5))
    await asyncio.wait_for(queue.worker_left.wait(), 1)
    executor.let_through(1)
    await asyncio.wait_for(closing, 1)
    assert executor.aborts == 0
    assert [r.ok for r in results(queue.sent).values()] == [True]
    assert queue.done == ["r1/a/1"]
    assert await queue.queued_keys() == {"r1/b/1"}  # not taken once closing began


# ------------------------------------------------------------------ batches of items


def batch(run_id: str, node_id: str, items: list[str], outputs: tuple[str, ...] = ()) -> Task:
    """Items of one mapped node in one task, as the scheduler batches them."""
    tasks = [task(run_id, node_id, outputs=outputs, item=item) for item in items]
    return tasks[0].model_copy(update={"batch": tasks})


def keys(run_id: str, node_id: str, items: list[str]) -> list[str]:
    return [attempt_key(run_id, node_id, 1, item) for item in items]


async def test_a_batch_runs_its_items_one_after_another_in_one_slot(start):
    items = ["a.jpg", "b.jpg", "c.jpg"]
    executor = FakeExecutor(
        {"m": lambda t: "bad frame" if t.item == "b.jpg" else None},
        hold={"m"},
        logs={"m": ["working"]},
        cleanups={"m": lambda: 0.25},
    )
    queue = ObservedQueue()
    worker = await start(executor, queue, max_parallel=2, memory="1g")
    sent = batch("r1", "m", items, outputs=("out",))
    await queue.put_tasks([sent, task("r1", "n")])
    item_keys = keys("r1", "m", items)
    await executor.until(lambda: len(executor.ended) == 1)  # n, beside the batch
    await executor.until(lambda: list(executor.running) == item_keys[:1])
    # One slot and one c-nano's memory (0.5 GiB of 1) for the three.
    assert (worker.capacity.used_slots, worker.capacity.used_memory) == (1, 512 * 2**20)
    assert worker.heartbeat().running == item_keys[:1]
    # The items whose turn has not come are the worker's too (held): a Redis that lost
    # the batch's entry must not have them sent again.
    assert worker.heartbeat().held == item_keys[1:]
    for number in range(1, 4):
        executor.let_through(1, "m")
        await executor.until(lambda number=number: len(executor.ended) == 1 + number)
        # Never two items of it at once.
        assert len(executor.running) <= 1

    messages = await queue.read(lambda m: sum(isinstance(x, AttemptCleanedUp) for x in m) == 4)
    assert executor.batches == [item_keys]
    assert [t.item for t in executor.tasks if t.node_id == "m"] == items
    for item in items:
        own = [m.kind for m in messages if m.node_id == "m" and m.item == item]
        assert own == ["started", "log", "result", "cleaned"], (item, own)
    reported = results(messages)
    assert [reported[k].ok for k in item_keys] == [True, False, True]
    assert reported[item_keys[1]].error == "bad frame"
    assert reported[item_keys[0]].outputs.keys() == {"out"}
    # The batch's removals (here one per item, 0.25 s each), shared by its items.
    cleaned = [m for m in messages if isinstance(m, AttemptCleanedUp) and m.node_id == "m"]
    assert [m.remove_seconds for m in cleaned] == [0.25] * 3
    # Each item's result goes out as it ends; the batch is done once all three are out.
    history = [h for h in queue.history if "/m" in h]
    results_at = [history.index(f"result {k}") for k in item_keys]
    assert results_at == sorted(results_at)
    assert history.index(f"done {sent.key}") > max(results_at)
    assert queue.done.count(sent.key) == 1
    assert worker.heartbeat().running == worker.heartbeat().held == []
    assert (worker.capacity.used_slots, worker.capacity.used_memory) == (0, 0)


async def test_a_batch_whose_item_result_was_refused_is_not_done(start):
    """The queue refused one item's result: the batch is left for reclaim, undone."""
    items = ["a.jpg", "b.jpg"]
    queue = ObservedQueue()
    queue.refuse_message = lambda m: isinstance(m, AttemptResult) and m.item == "b.jpg"
    await start(FakeExecutor(), queue)
    sent = batch("r1", "m", items)
    await queue.put_task(sent)
    await queue.read(lambda m: sum(isinstance(x, AttemptCleanedUp) for x in m) == 2)
    assert [m.item for m in queue.refused] == ["b.jpg"]
    assert results(queue.sent).keys() == {"r1/m[a.jpg]/1"}
    assert queue.done == []


async def test_a_cancelled_batch_runs_none_of_its_remaining_items(start):
    items = ["a.jpg", "b.jpg", "c.jpg"]
    ran: list[str | None] = []

    def record(t: Task) -> None:
        ran.append(t.item)

    executor = FakeExecutor({"m": record}, hold={"m"})
    queue = ObservedQueue()
    await start(executor, queue)
    sent = batch("r1", "m", items)
    await queue.put_task(sent)
    await executor.until(lambda: list(executor.running) == ["r1/m[a.jpg]/1"])
    queue.drop_run("r1", cancel=True)
    reported = results(await queue.read(has_results(3)))
    item_keys = keys("r1", "m", items)
    assert [(reported[k].error, reported[k].retryable) for k in item_keys] == [
        (KILLED, True),
        (REFUSED, False),
        (REFUSED, False),
    ]
    assert ran == []  # no behaviour ran: the first was killed, the rest refused
    messages = await queue.read(lambda m: sum(isinstance(x, AttemptCleanedUp) for x in m) == 3)
    assert sorted(m.item for m in messages if isinstance(m, AttemptCleanedUp)) == items
    assert queue.done == [sent.key]  # every item reported: the batch is done


async def test_a_worker_closed_mid_batch_leaves_the_rest_to_run_again(start):
    items = ["a.jpg", "b.jpg", "c.jpg"]
    executor = FakeExecutor(hold={"m"})
    queue = ObservedQueue()
    worker = await start(executor, queue, max_parallel=1)
    sent = batch("r1", "m", items)
    await queue.put_task(sent)
    await executor.until(lambda: list(executor.running) == ["r1/m[a.jpg]/1"])
    executor.let_through(1, "m")
    await executor.until(lambda: list(executor.running) == ["r1/m[b.jpg]/1"])

    await worker.close(grace=0.05)  # b does not end within it: aborted
    assert executor.aborts == 1
    assert executor.batches == [["r1/m[a.jpg]/1", "r1/m[b.jpg]/1"]]  # c never began
    reported = results(queue.sent)
    assert list(reported) == ["r1/m[a.jpg]/1"] and reported["r1/m[a.jpg]/1"].ok
    assert [m.item for m in queue.sent if isinstance(m, AttemptStarted)] == ["a.jpg", "b.jpg"]
    assert queue.done == []  # b and c run again when the scheduler resumes


async def test_an_executor_that_raises_mid_batch_fails_the_items_it_left(start):
    def explode(t: Task) -> str | None:
        if t.item == "b.jpg":
            raise RuntimeError("bug in the executor")
        return None

    queue = ObservedQueue()
    await start(FakeExecutor({"m": explode}), queue)
    sent = batch("r1", "m", ["a.jpg", "b.jpg", "c.jpg"])
    await queue.put_task(sent)
    messages = await queue.read(lambda m: sum(isinstance(x, AttemptCleanedUp) for x in m) == 3)
    reported = results(messages)
    error = "internal error in the worker: RuntimeError: bug in the executor"
    assert [(r.ok, r.error) for r in reported.values()] == [(True, ""), (False, error),
                                                             (False, error)]  # fmt: skip
    for item in ("a.jpg", "b.jpg", "c.jpg"):
        own = [m.kind for m in messages if m.item == item]
        assert own == ["started", "result", "cleaned"], (item, own)
    assert queue.done == [sent.key]
