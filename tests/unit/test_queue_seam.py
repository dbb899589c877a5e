"""The seam between the scheduler and workers: the memory queue itself, and a worker
on a queue that fails (no Docker). Each test waits on what it hands out, never on
a sleep.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from orchestrator import worker as worker_module
from orchestrator.config import WorkerSettings
from orchestrator.messages import AttemptLog, AttemptResult, Task, WorkerHeartbeat
from orchestrator.queue import MemoryQueue
from orchestrator.tiers import GIB
from orchestrator.worker import Worker
from tests.fakes import FakeExecutor, ObservedQueue

NANO = frozenset({"c-nano"})
SMALL = frozenset({"c-small"})


def task(run_id: str, node_id: str, tier: str = "c-nano") -> Task:
    return Task(run_id=run_id, node_id=node_id, attempt=1, image="fake", tier=tier, timeout=60)


# ------------------------------------------------------------ the memory queue


async def test_a_take_gets_a_task_of_the_tiers_it_asks_for_the_tiers_in_turn():
    queue = MemoryQueue()
    await queue.put_tasks([task("r1", "n1"), task("r1", "s1", "c-small"), task("r1", "n2")])
    assert (await queue.take_task(NANO | SMALL)).key == "r1/n1/1"
    assert (await queue.take_task(NANO)).key == "r1/n2/1"  # past the c-small one
    assert (await queue.take_task(NANO | SMALL)).key == "r1/s1/1"
    assert queue.pending() == 0 and await queue.queued_keys() == set()


async def test_a_take_follows_the_turns_not_the_order_tasks_came():
    queue = MemoryQueue()
    await queue.put_tasks([task("big", f"n{n}") for n in range(50)], (0, "big"))
    assert (await queue.take_task(NANO)).key == "big/n0/1"
    await queue.put_tasks([task("small", "n")], (0, "small"))
    await queue.put_tasks([task("urgent", "n")], (10, "big"))
    assert queue.waiting_in_turn("c-nano", 0, "big") == 49
    # The higher priority first, then the small tenant before the big one's 49.
    assert (await queue.take_task(NANO)).key == "urgent/n/1"
    assert (await queue.take_task(NANO)).key == "small/n/1"
    assert (await queue.take_task(NANO)).key == "big/n1/1"
    assert await queue.waiting() == {"c-nano": 48}
    assert queue.waiting_in_turn("c-nano", 0, "small") == 0


async def test_a_waiting_take_is_handed_a_task_of_its_tiers_only():
    queue = MemoryQueue()
    take = asyncio.create_task(queue.take_task(SMALL))
    await queue.put_task(task("r1", "nano"))
    await queue.put_task(task("r1", "small", "c-small"))
    assert (await asyncio.wait_for(take, 1)).key == "r1/small/1"
    assert await queue.queued_keys() == {"r1/nano/1"}


async def test_a_take_that_times_out_leaves_the_next_task_to_the_next_take():
    queue = MemoryQueue()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(queue.take_task(NANO), 0.01)
    await queue.put_task(task("r1", "a"))
    assert (await asyncio.wait_for(queue.take_task(NANO), 1)).key == "r1/a/1"
    assert queue.pending() == 0


async def test_dropping_a_run_forgets_its_queued_tasks_and_a_cancel_tells_the_workers():
    queue = MemoryQueue()
    told: list[str] = []
    queue.on_cancel(told.append)
    await queue.put_tasks([task("r1", "a"), task("r2", "b"), task("r1", "c", "c-small")])
    assert queue.drop_run("r1") == 2  # completed: nothing of it runs anywhere
    assert told == []
    assert await queue.queued_keys() == {"r2/b/1"}
    assert queue.drop_run("r2", cancel=True) == 1
    assert queue.drop_run("r3", cancel=True) == 0  # nothing queued: still told
    assert told == ["r2", "r3"]
    assert await queue.queued_keys() == set()


async def test_the_queue_lists_live_workers_and_what_waits_per_tier():
    queue = MemoryQueue()
    beat = WorkerHeartbeat(
        worker_id="w" * 32,
        name="w1",
        tiers=["c-nano"],
        memory=3 * GIB,
        slots=2,
        running=["r1/a/1"],
    )
    queue.register_worker(beat.worker_id, NANO, lambda: beat)
    await queue.put_tasks([task("r1", "b"), task("r1", "c", "c-small")])
    described = await queue.describe()
    [worker] = described["workers"]
    assert (worker["id"], worker["name"], worker["tiers"]) == ("w" * 32, "w1", ["c-nano"])
    assert (worker["memory_mib"], worker["slots"], worker["running"]) == (3072, 2, 1)
    assert described["queued"] == {"c-nano": 1, "c-small": 1}
    assert queue.offered_tiers() == NANO

    await queue.unregister_worker(beat.worker_id)
    assert (await queue.describe())["workers"] == []
    assert queue.offered_tiers() == frozenset()


# ------------------------------------------------------------ a worker on a failing queue


@pytest.fixture
async def start() -> AsyncIterator[Callable[..., Awaitable[Worker]]]:
    started: list[Worker] = []

    async def start(executor: FakeExecutor, queue: ObservedQueue, **settings: Any) -> Worker:
        base: dict[str, Any] = {"name": "w1", "tiers": ["c-nano"], "memory": "4g"}
        worker = Worker(WorkerSettings(**{**base, **settings}), queue, executor)
        await worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        await worker.close(grace=1)


async def test_a_message_the_queue_refuses_is_lost_alone(start):
    """The attempt's other lines, its result and the tasks after it still go out."""
    queue = ObservedQueue()
    queue.refuse_message = lambda m: isinstance(m, AttemptLog) and m.record.message == "one"
    await start(FakeExecutor(logs={"a": ["one", "two"]}), queue, max_parallel=1)
    await queue.put_tasks([task("r1", "a"), task("r1", "b")])

    messages = await queue.read(lambda m: sum(isinstance(x, AttemptResult) for x in m) == 2)
    lines = [m.record.message for m in messages if isinstance(m, AttemptLog)]
    assert lines == ["two"]
    assert [m.record.message for m in queue.refused if isinstance(m, AttemptLog)] == ["one"]
    assert [(m.node_id, m.ok) for m in messages if isinstance(m, AttemptResult)] == [
        ("a", True),
        ("b", True),
    ]
    assert queue.done == ["r1/a/1", "r1/b/1"]


async def test_a_take_the_queue_fails_is_tried_again(start, monkeypatch):
    monkeypatch.setattr(worker_module, "TAKE_RETRY", 0.01)
    queue = ObservedQueue()
    queue.refuse_takes = 2
    executor = FakeExecutor()
    await start(executor, queue)
    await queue.put_task(task("r1", "a"))
    # Each refusal logs a traceback, which a loaded machine can take a while to render.
    messages = await queue.read(lambda m: any(isinstance(x, AttemptResult) for x in m), 20)
    assert [(m.node_id, m.ok) for m in messages if isinstance(m, AttemptResult)] == [("a", True)]
    assert queue.refuse_takes == 0  # both refusals were met on the way
    assert executor.attempts_of("a") == [1]


async def test_a_result_the_queue_refuses_leaves_its_task_undone_for_reclaim(start):
    """Marked done, the task would be acked on Redis and its node left RUNNING for ever
    with no result coming: it stays pending instead, for the queue to hand out again."""
    queue = ObservedQueue()
    queue.refuse_message = lambda m: isinstance(m, AttemptResult) and m.node_id == "a"
    await start(FakeExecutor(), queue, max_parallel=1)
    await queue.put_tasks([task("r1", "a"), task("r1", "b")])

    messages = await queue.read(lambda m: any(isinstance(x, AttemptResult) for x in m))
    assert [(m.node_id, m.ok) for m in messages if isinstance(m, AttemptResult)] == [("b", True)]
    assert [m.node_id for m in queue.refused] == ["a"]
    await asyncio.wait_for(queue.marked_done.wait(), 1)  # b's done-mark follows its result
    assert queue.done == ["r1/b/1"]
