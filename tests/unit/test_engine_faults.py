"""Faults injected into the engine: the real scheduler, worker, queue and stores, a fake executor.

The rule under test: every failure while dispatching or handling a result
ends as a failed attempt (retried, with an Error saying what failed) or a run
ERROR saying why, within bounded time; a run never waits without a visible
reason, and a worker never stalls on a task it cannot hold.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from orchestrator.logs import configure_logging
from orchestrator.messages import AttemptResult, Task
from orchestrator.models import RunStatus
from storage import StoreUnavailable
from tests.engine import CHAIN, Engine, node
from tests.fakes import FakeExecutor
from tests.helpers import service_settings


def fail_presign_of(engine: Engine, edge: str, times: int) -> list[int]:
    """Make presigning a GET of ``edge``'s object fail ``times`` times; returns the count."""
    store = engine.stores.default
    real = store.get_url
    failures = [0]

    def get_url(key: str, ttl: float, *, internal: bool = False) -> str:
        if key.endswith(f"/{edge}") and failures[0] < times:
            failures[0] += 1
            raise StoreUnavailable("store 'default': presign failed: the backend is down")
        return real(key, ttl, internal=internal)

    store.get_url = get_url  # type: ignore[method-assign]
    return failures


async def test_a_presign_that_keeps_failing_fails_the_node_and_the_run(engine):
    started = await engine()
    fail_presign_of(started, "mid", times=100)
    run = await started.settled(await started.run(CHAIN, MaxAttempts=2))
    assert run.status == RunStatus.ERROR
    b = run.state("b")
    assert (b.status, b.attempt) == ("ERROR", 2)
    assert b.error == (
        "could not dispatch the attempt: store 'default': presign failed: the backend is down"
    )
    assert started.executor.attempts_of("b") == []  # nothing was queued for it


async def test_a_presign_that_fails_once_is_retried(engine):
    started = await engine()
    failures = fail_presign_of(started, "mid", times=1)
    run = await started.settled(await started.run(CHAIN, MaxAttempts=3))
    assert run.status == RunStatus.COMPLETE
    assert failures == [1]
    assert started.executor.attempts_of("b") == [2]
    assert any("could not dispatch" in line.message for line in run.state("b").logs)


async def test_an_executor_that_raises_fails_the_attempt_not_the_worker(engine):
    def explode(task: Task) -> str | None:
        raise RuntimeError("bug in the executor")

    started = await engine(FakeExecutor({"a": explode}))
    run = await started.settled(await started.run(CHAIN, MaxAttempts=2))
    assert run.state("a").error == "internal error in the worker: RuntimeError: bug in the executor"
    assert started.executor.attempts_of("a") == [1, 2]
    # The worker goes on taking tasks.
    again = await started.settled(await started.run([node("c", [], ["out"])]))
    assert again.status == RunStatus.COMPLETE


async def test_duplicate_and_late_results_change_nothing(engine):
    started = await engine()
    run = await started.settled(await started.run(CHAIN))
    assert run.status == RunStatus.COMPLETE
    for attempt, ok in ((1, True), (1, False), (7, True)):
        await started.queue.put_message(
            AttemptResult(run_id=run.id, node_id="a", attempt=attempt, ok=ok, error="late")
        )
    await started.queue.caught_up()
    assert run.status == RunStatus.COMPLETE
    assert run.state("a").error == ""
    assert started.executor.attempts_of("b") == [1]  # b was not run again


async def test_a_failure_while_handling_a_result_ends_the_run_saying_why(engine, monkeypatch):
    started = await engine()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("broken bookkeeping")

    run = await started.run([node("a", [], ["out"])])
    monkeypatch.setattr(run, "attempt_succeeded", broken)
    await started.settled(run)
    assert run.status == RunStatus.ERROR
    assert "failed on a 'result' message of node 'a'" in (run.run.error or "")


async def test_a_tier_no_worker_offers_waits_with_a_reason(engine):
    started = await engine(worker={"tiers": ["c-nano"]})
    run = await started.run([node("a", [], ["out"])], Tier="c-small")

    def said_and_queued() -> bool:
        # Said before the task is queued: both are waited for.
        said = any("no worker offers tier c-small" in x.message for x in run.state("a").logs)
        return said and started.queue.pending() == 1

    await started.until(run, said_and_queued)
    assert run.status == RunStatus.RUNNING
    assert run.state("a").status == "READY"
    assert await started.queue.queued_keys() == {f"{run.id}/a/1"}  # waiting, not dropped


def test_a_worker_refuses_tiers_it_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="cannot hold m-4xlarge"):
        service_settings(tmp_path, worker={"tiers": ["c-nano", "m-4xlarge"], "memory": "1g"})


async def test_a_task_that_does_not_fit_now_does_not_hold_up_smaller_ones(engine):
    executor = FakeExecutor(hold={"big1"})
    # 3 GiB: one c-small (2 GiB) at a time, and room for c-nano (0.5 GiB) beside it.
    started = await engine(executor, worker={"memory": "3g", "tiers": ["c-nano", "c-small"]})
    first = await started.run([node("big1", [], ["o"])], Tier="c-small")
    try:
        await executor.until(lambda: [t.node_id for t in executor.running.values()] == ["big1"])
        second = await started.run([node("big2", [], ["o"])], Tier="c-small")
        small = await started.run([node("small", [], ["o"])], Tier="c-nano")
        await started.settled(small, seconds=3)
        assert small.status == RunStatus.COMPLETE
        assert second.state("big2").status == "READY"  # still queued: it fits later
        assert await started.queue.queued_keys() == {f"{second.id}/big2/1"}
    finally:
        executor.open_gate()
    await started.settled(first)
    await started.settled(second)
    assert second.status == RunStatus.COMPLETE


async def test_a_slot_is_free_again_while_its_container_is_being_removed(engine):
    """Removal follows the result and may be slow (a busy engine): the next task
    must not wait for it, since the container has already exited."""
    removing = threading.Event()

    def slow_removal() -> float:
        removing.wait(10)
        return 10.0

    executor = FakeExecutor(cleanups={"a": slow_removal})
    started = await engine(executor, worker={"max_parallel": 1})
    try:
        first = await started.run([node("a", [], ["o"])])
        await started.settled(first, seconds=3)
        second = await started.run([node("b", [], ["o"])])
        await started.settled(second, seconds=3)
        assert second.status == RunStatus.COMPLETE
        assert not removing.is_set()  # a's container is still being removed
    finally:
        removing.set()


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The service's JSON log configuration, writing here; the test run's own restored after."""
    saved, root = structlog.get_config(), logging.getLogger()
    handlers, level = root.handlers[:], root.level
    written = io.StringIO()
    configure_logging("info", "json", written)
    yield written
    structlog.configure(**saved)
    root.handlers, root.level = handlers, level


async def test_each_log_line_about_an_attempt_names_its_run_node_and_attempt(engine, json_log):
    def says_something(task: Task) -> str | None:
        structlog.get_logger("test").info("executor_working")  # in the worker's thread
        return "out of luck" if task.attempt == 1 else None

    started = await engine(FakeExecutor({"b": says_something}))
    run = await started.settled(await started.run(CHAIN, MaxAttempts=2))
    assert run.status == RunStatus.COMPLETE
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    about_b = [
        (line["attempt"], line["event"], line.get("outcome"))
        for line in lines
        if line.get("node_id") == "b" and line.get("run_id") == run.id
    ]
    # The worker's thread and the scheduler log concurrently: compared per attempt.
    assert sorted(about_b[:6]) == [
        (1, "attempt_finished", "failed"),
        (1, "attempt_started", None),
        (1, "executor_working", None),
        (2, "attempt_finished", "succeeded"),
        (2, "attempt_started", None),
        (2, "executor_working", None),
    ], about_b
    # The run ends while b's result is handled: that line says so too.
    assert about_b[6:] == [(2, "run_finished", None)]
    failed = next(line for line in lines if line.get("outcome") == "failed")
    assert (failed["level"], failed["error"]) == ("info", "out of luck")


async def test_a_wide_fan_out_dispatches_each_node_once_while_results_come_in(engine):
    """The upload that makes 400 nodes ready is handled while the results of the first
    ones come in: no node is dispatched twice (an attempt that no failure asked for)."""
    started = await engine()
    width = 400
    nodes = [node(f"b{i}", ["src"], [f"o{i}"]) for i in range(width)]
    run = await started.run(nodes, MaxAttempts=3)
    artifact = run.artifact_for("src")
    started.stores.default.write(artifact.object_name, io.BytesIO(b"x"))
    await started.scheduler.object_written(artifact.store_name, artifact.object_name)
    await started.settled(run, seconds=60)
    assert run.status == RunStatus.COMPLETE
    attempts = {node_id: state.attempt for node_id, state in run.run.node_state.items()}
    assert set(attempts.values()) == {1}, {n: a for n, a in attempts.items() if a != 1}
    assert sorted(started.executor.attempts_of("b7")) == [1]
    assert len(started.executor.tasks) == width
