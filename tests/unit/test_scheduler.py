"""The scheduler's core loop, no Docker: the real queue, worker, state store and local
store around it, a fake executor at the worker's edge (``tests.engine``).

Nodes run in dependency order, failures are retried or end the run saying why, a
cancel stops what runs and drops what waits, a dispatch that fails is a failed
attempt, stale results change nothing, an upload that never comes ends the run,
readers see a run through a view that cannot change it, and a new scheduler
resumes what the last one left.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator import scheduler as scheduler_module
from orchestrator.messages import AttemptResult, Task
from orchestrator.models import Artifact, NodeStatus, RunStatus
from orchestrator.runtime import LiveRun, RunState
from storage import StoreUnavailable
from tests.engine import Engine, node, submission, writing
from tests.fakes import FakeExecutor

#: Room for several attempts at once, whatever the machine.
ROOMY = {"max_parallel": 4, "memory": "4g"}

CHAIN3 = [node("a", [], ["ab"]), node("b", ["ab"], ["bc"]), node("c", ["bc"], ["out"])]
DIAMOND = [
    node("a", [], ["left", "right"]),
    node("b", ["left"], ["bl"]),
    node("c", ["right"], ["cr"]),
    node("d", ["bl", "cr"], ["out"]),
]


def flaky(task: Task) -> str | None:
    return "flaky: try again" if task.attempt == 1 else None


def messages(run: RunState, node_id: str) -> list[str]:
    return [line.message for line in run.state(node_id).logs]


async def settle(predicate: Callable[[], bool]) -> None:
    """Wait until ``predicate()`` holds of what the event loop does: checked at each turn
    of the loop, as what it reads (the queue's turns) has no event to wait on."""
    async with asyncio.timeout(5):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0)


def running(executor: FakeExecutor) -> set[str]:
    return {task.node_id for task in executor.running.values()}


# ------------------------------------------------------------ order


async def test_a_chain_runs_in_order_and_completes_with_its_artifacts(engine):
    executor = FakeExecutor()
    # What had ended when each attempt began: a node begins only once its input is made.
    ended_before: dict[str, list[str]] = {}

    def note(task: Task) -> None:
        ended_before[task.node_id] = [key.split("/")[1] for key in executor.ended]

    executor.behaviours = {n: note for n in "abc"}
    started = await engine(executor)
    run = await started.settled(await started.run(CHAIN3))

    assert run.status == RunStatus.COMPLETE
    assert ended_before == {"a": [], "b": ["a"], "c": ["a", "b"]}
    assert [(t.node_id, t.attempt) for t in executor.tasks] == [("a", 1), ("b", 1), ("c", 1)]
    for node_id in "abc":
        state = run.state(node_id)
        assert (state.status, state.attempt, state.error) == (NodeStatus.COMPLETE, 1, "")
        assert "attempt 1 succeeded: out0 1 B text/plain" in messages(run, node_id)
    key = f"tenants/default/{run.id}"
    assert run.run.artifacts == {
        edge: Artifact(store_name="default", object_name=f"{key}/{edge}", edge_name=edge)
        for edge in ("ab", "bc", "out")
    }
    assert run.run.finished_at is not None
    await started.state.flush()
    stored = await started.state.load(run.id)
    assert stored is not None
    assert stored["run"]["Status"] == "COMPLETE"
    assert set(stored["run"]["Artifacts"]) == {"ab", "bc", "out"}


async def test_a_diamond_runs_both_branches_at_once_and_joins_them(engine):
    executor = FakeExecutor(hold={"b", "c"})
    started = await engine(executor, worker=ROOMY)
    run = await started.run(DIAMOND)

    await executor.until(lambda: running(executor) == {"b", "c"})
    executor.let_through(node_id="b")
    await started.until(run, lambda: run.state("b").status == NodeStatus.COMPLETE)
    assert run.state("d").status == NodeStatus.IDLE  # still waits for c
    assert executor.attempts_of("d") == []
    executor.let_through(node_id="c")
    await started.settled(run)

    assert run.status == RunStatus.COMPLETE
    assert {n: executor.attempts_of(n) for n in "abcd"} == {n: [1] for n in "abcd"}
    assert executor.tasks[-1].node_id == "d"
    assert [i.name for i in executor.tasks[-1].inputs] == ["in0", "in1"]
    assert set(run.run.artifacts) == {"left", "right", "bl", "cr", "out"}


async def test_another_tenants_node_takes_the_next_free_slot_before_a_queued_backlog(engine):
    big_nodes = [f"b{n}" for n in range(6)]  # not the same work: none waits for another
    executor = FakeExecutor(hold=big_nodes)
    # One slot: a big run's node runs, two more wait in the queue (its turn's share),
    # the rest in the scheduler.
    started = await engine(executor, worker={"max_parallel": 1, "memory": "4g"})
    big = [await started.run([node(n, [], ["out"])]) for n in big_nodes]
    await executor.until(lambda: len(executor.running) == 1)
    await settle(lambda: started.queue.waiting_in_turn("c-small", 0, "default") == 2)
    small = await started.submit(submission([node("s", [], ["so"])]), tenant="small")
    await settle(lambda: started.queue.waiting_in_turn("c-small", 0, "small") == 1)
    assert started.queue.waiting_in_turn("c-small", 0, "default") == 2
    executor.let_through()
    await started.settled(small)
    # The small tenant's node went next, before the two big tasks queued before it.
    assert [t.run_id for t in executor.tasks[:2]] == [big[0].id, small.id]
    executor.open_gate()
    for run in big:
        assert (await started.settled(run)).status == RunStatus.COMPLETE
    assert small.status == RunStatus.COMPLETE


# ------------------------------------------------------------ failures


async def test_a_retryable_failure_is_run_again_after_the_backoff(engine):
    began: dict[int, float] = {}

    def flaky_timed(task: Task) -> str | None:
        began[task.attempt] = time.monotonic()
        return flaky(task)

    delay = 0.02
    retry = {"backoff_base": delay, "backoff_max": delay}
    started = await engine(FakeExecutor({"a": flaky_timed}), retry=retry)
    run = await started.settled(await started.run([node("a", [], ["out"])], MaxAttempts=3))

    assert run.status == RunStatus.COMPLETE
    assert started.executor.attempts_of("a") == [1, 2]
    a = run.state("a")
    assert (a.status, a.attempt, a.error) == (NodeStatus.COMPLETE, 2, "")
    assert "attempt 1 of 3 failed: flaky: try again; retrying in 0.02 s" in messages(run, "a")
    assert began[2] - began[1] >= delay


async def test_a_failure_that_is_not_retryable_ends_the_run_and_stops_the_others(engine):
    def refused(task: Task) -> AttemptResult:
        return AttemptResult(
            run_id=task.run_id,
            node_id=task.node_id,
            attempt=task.attempt,
            ok=False,
            error="bad input: not a JPEG",
            retryable=False,
        )

    executor = FakeExecutor({"a": refused}, hold={"a", "b", "queued"})
    # Two slots: a and b run, "queued" waits in the queue; c waits for a's output.
    started = await engine(executor, worker={"max_parallel": 2, "memory": "4g"})
    nodes = [
        node("a", [], ["ac"]),
        node("b", [], ["bo"]),
        node("queued", [], ["qo"]),
        node("c", ["ac"], ["co"]),
    ]
    run = await started.run(nodes, MaxAttempts=3)
    await executor.until(lambda: running(executor) == {"a", "b"})
    executor.let_through(node_id="a")
    await started.settled(run)

    assert run.status == RunStatus.ERROR
    a = run.state("a")
    assert (a.status, a.attempt, a.error) == (NodeStatus.ERROR, 1, "bad input: not a JPEG")
    assert "attempt 1 of 3 failed: bad input: not a JPEG (not retryable)" in messages(run, "a")
    for other in ("b", "queued"):
        state = run.state(other)
        assert (state.status, state.error) == (
            NodeStatus.STOPPED,
            "stopped: node 'a' failed, which ended the run",
        ), other
    assert run.state("c").status == NodeStatus.IDLE  # never dispatched
    assert [n for n, s in run.run.node_state.items() if s.status == NodeStatus.ERROR] == ["a"]
    assert executor.attempts_of("a") == [1]  # not retried, whatever MaxAttempts says
    assert await started.queue.queued_keys() == set()
    # b is killed; its result comes after the run ended and changes nothing.
    await executor.until(lambda: f"{run.id}/b/1" in executor.ended)
    await started.queue.caught_up()
    assert run.state("b").status == NodeStatus.STOPPED
    assert run.state("b").error == "stopped: node 'a' failed, which ended the run"


# ------------------------------------------------------------ cancel


async def test_a_cancel_stops_running_and_queued_attempts_and_drops_queued_tasks(engine):
    executor = FakeExecutor(hold={"a", "b"})
    # One slot: a runs, b waits in the queue.
    started = await engine(executor, worker={"max_parallel": 1, "memory": "4g"})
    run = await started.run([node("a", [], ["ao"]), node("b", [], ["bo"])])
    await started.until(run, lambda: run.state("a").status == NodeStatus.RUNNING)
    assert run.state("b").status == NodeStatus.READY
    assert await started.queue.queued_keys() == {f"{run.id}/b/1"}

    stopped = await started.scheduler.cancel(run.id)

    assert stopped is not None and stopped.status == RunStatus.STOPPED
    assert stopped.finished_at is not None
    for node_id in "ab":
        state = run.state(node_id)
        assert (state.status, state.error) == (
            NodeStatus.STOPPED,
            "stopped: the run was cancelled on request",
        )
    assert await started.queue.queued_keys() == set()
    await executor.until(lambda: f"{run.id}/a/1" in executor.ended)  # killed where it ran
    assert run.id in executor.killed_runs
    await started.queue.caught_up()
    assert run.state("a").status == NodeStatus.STOPPED  # its result changed nothing
    assert executor.attempts_of("b") == []
    assert run.status == RunStatus.STOPPED
    # b's queue time is forgotten with the run: it never started, and would stay for good.
    assert not [key for key in started.scheduler._queued_at if key[0] == run.id]


# ------------------------------------------------------------ faults while dispatching


def fail_put_url_once(started: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    store = started.stores.default
    real = store.put_url
    failed: list[str] = []

    def put_url(key: str, ttl: float, **kwargs: Any) -> str:
        if not failed:
            failed.append(key)
            raise StoreUnavailable("store 'default': presign failed: the backend is down")
        return real(key, ttl, **kwargs)

    monkeypatch.setattr(store, "put_url", put_url)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("presign", "store 'default': presign failed: the backend is down"),
        ("queue", "QueueRefused: put refused"),
    ],
)
async def test_a_dispatch_that_fails_fails_the_attempt_which_is_retried(
    engine, monkeypatch, fault, reason
):
    started = await engine()
    if fault == "presign":
        fail_put_url_once(started, monkeypatch)
    else:
        started.queue.refuse_puts = 1
    run = await started.settled(await started.run([node("a", [], ["out"])], MaxAttempts=3))

    assert run.status == RunStatus.COMPLETE
    assert started.executor.attempts_of("a") == [2]  # attempt 1 never reached a worker
    assert run.state("a").attempt == 2
    said = f"attempt 1 of 3 failed: could not dispatch the attempt: {reason}; retrying in 0.01 s"
    assert said in messages(run, "a")


async def test_a_queue_that_keeps_refusing_ends_the_node_in_error_not_ready(engine):
    started = await engine()
    started.queue.refuse_puts = 100
    run = await started.settled(await started.run([node("a", [], ["out"])], MaxAttempts=2))

    assert run.status == RunStatus.ERROR
    a = run.state("a")
    assert (a.status, a.attempt) == (NodeStatus.ERROR, 2)
    assert a.error == "could not dispatch the attempt: QueueRefused: put refused"
    assert started.queue.pending() == 0
    assert started.executor.tasks == []
    assert not [key for key in started.scheduler._queued_at if key[0] == run.id]


# ------------------------------------------------------------ stale results


async def test_a_result_of_an_old_attempt_or_a_duplicate_changes_nothing(engine):
    executor = FakeExecutor({"a": flaky, "b": flaky}, hold={"b"})
    started = await engine(executor)
    run = await started.run([node("a", [], ["ab"]), node("b", ["ab"], ["out"])], MaxAttempts=3)
    executor.let_through(node_id="b")  # its first attempt, which fails
    await executor.until(lambda: f"{run.id}/b/2" in executor.running)  # held at the gate
    await started.until(run, lambda: run.state("b").status == NodeStatus.RUNNING)

    def result(node_id: str, attempt: int, ok: bool) -> AttemptResult:
        return AttemptResult(
            run_id=run.id,
            node_id=node_id,
            attempt=attempt,
            ok=ok,
            error="" if ok else "late",
            retryable=False,
        )

    for stale in (
        result("b", 1, ok=True),  # b's old attempt, succeeding late
        result("a", 1, ok=False),  # a's old attempt, failing late
        result("a", 2, ok=True),  # a's result again
        result("a", 2, ok=False),  # a's result again, saying otherwise
    ):
        await started.queue.put_message(stale)
    await started.queue.caught_up()

    assert run.status == RunStatus.RUNNING
    b = run.state("b")
    assert (b.status, b.attempt, b.error) == (NodeStatus.RUNNING, 2, "flaky: try again")
    assert "out" not in run.run.artifacts
    a = run.state("a")
    assert (a.status, a.attempt, a.error) == (NodeStatus.COMPLETE, 2, "")
    assert executor.attempts_of("b") == [1, 2]  # not dispatched again

    executor.open_gate()
    await started.settled(run)
    assert run.status == RunStatus.COMPLETE
    assert executor.attempts_of("b") == [1, 2]


# ------------------------------------------------------------ upload deadlines


async def test_an_upload_that_never_comes_ends_the_run_naming_its_edge(engine, monkeypatch):
    # The grace is for S3's whole-second URLs; this test's URLs live 50 ms.
    monkeypatch.setattr(scheduler_module, "UPLOAD_GRACE", 0.0)
    executor = FakeExecutor(hold={"other"})
    started = await engine(executor, storage={"url_ttl": 0.05})
    run = await started.run([node("a", ["src"], ["ao"]), node("other", [], ["oo"])])
    assert [w.artifact.edge_name for w in run.run.waiting_urls] == ["src"]

    await started.settled(run, seconds=2)

    assert run.status == RunStatus.ERROR
    assert re.fullmatch(
        r"edge 'src' was not uploaded before its WaitingURL expired at \S+Z: submit the flow "
        r"again for new WaitingURLs and upload before their TTL",
        run.run.error or "",
    ), run.run.error
    a = run.state("a")
    assert a.status == NodeStatus.ERROR
    assert re.fullmatch(
        r"input 'in0' \(edge 'src'\) was not uploaded before its URL expired at \S+Z", a.error
    ), a.error
    other = run.state("other")
    assert (other.status, other.error) == (
        NodeStatus.STOPPED,
        "stopped: an input was not uploaded in time",
    )
    assert run.run.waiting_urls == []
    assert executor.attempts_of("a") == []


# ------------------------------------------------------------ the live view


async def test_live_is_the_run_while_the_scheduler_holds_it(engine):
    executor = FakeExecutor(hold={"a"})
    started = await engine(executor)
    run = await started.run([node("a", [], ["out"])])

    live = started.scheduler.live(run.id)
    assert live is run
    assert live.status == RunStatus.RUNNING
    executor.open_gate()
    await started.settled(run)
    ended = started.scheduler.live(run.id)
    assert ended is not None and ended.status == RunStatus.COMPLETE  # held a while after
    started.scheduler.runs.pop(run.id)
    assert started.scheduler.live(run.id) is None


#: What the view offers readers: anything else of a RunState is the scheduler's alone.
OFFERED = frozenset(name for name in vars(LiveRun) if not name.startswith("_"))


def test_the_live_view_offers_nothing_that_changes_a_run():
    # Every method that changes a run is marked (``runtime._changes`` wraps it).
    changing = {name for name, member in vars(RunState).items() if hasattr(member, "__wrapped__")}
    assert {"start", "cancel", "attempt_failed", "attempt_succeeded", "add_log"} <= changing
    assert OFFERED == {
        "id",
        "status",
        "tenant",
        "flow",
        "run",
        "json",
        "delta_json",
        "terminal_edges",
        # Collections, read by their pages (service.collections): typed as Mappings.
        "plan",
        "maps",
        "collections",
        "artifact_for",
        "item_page",
    }
    assert not OFFERED & changing


class ViewOnly:
    """A run seen only through what LiveRun declares: a reader asking for more fails."""

    def __init__(self, run: RunState) -> None:
        self._run = run

    def __getattr__(self, name: str) -> Any:
        if name not in OFFERED:
            raise AttributeError(f"a reader asked the live view for {name!r}")
        return getattr(self._run, name)


async def test_readers_need_no_more_of_a_live_run_than_its_view(engine, monkeypatch):
    executor = FakeExecutor()
    started = await engine(executor)
    executor.behaviours["a"] = writing(started.stores.default, {"out0": (b"hi", "text/plain")})
    run = await started.settled(await started.run([node("a", [], ["out"])]))
    view = ViewOnly(run)
    monkeypatch.setattr(started.scheduler, "live", lambda i: view if i == run.id else None)
    runs = started.service.runs

    assert await runs.get(run.id) is run.run
    assert await runs.status_json(run.id) == run.json()
    record = await runs.resolve(run.id, "default")
    assert (record.run, record.tenant, record.flow) == (run.run, "default", run.flow)
    assert await runs.flow_of(run.id) == run.flow
    assert await runs.terminal_edges(run.id) == ["out"]
    assert runs.delta_json(run.id, ({"a"}, [])) is None  # a small run is sent whole
    updates = [update async for update in runs.watch(run.id, timeout=1)]
    assert [(u.name, u.run) for u in updates] == [("end", run.run)]
    outcome = await started.service.executions.outcome(run.run)
    assert outcome.outputs == {"out": {"text": "hi"}}


# ------------------------------------------------------------ resume


async def test_a_run_saved_mid_flight_is_resumed_by_a_new_scheduler_and_completes(engine):
    started = await engine(FakeExecutor(hold={"b"}))
    run = await started.run(CHAIN3)
    await started.until(run, lambda: run.state("b").status == NodeStatus.RUNNING)

    await started.restart()

    resumed = started.scheduler.runs[run.id]
    assert resumed is not run
    await started.settled(resumed)
    assert resumed.status == RunStatus.COMPLETE
    # a was done before; b's interrupted attempt runs again under its number; then c.
    assert [(t.node_id, t.attempt) for t in started.executor.tasks] == [("b", 1), ("c", 1)]
    assert "service restarted: dispatching this node again" in messages(resumed, "b")
    assert set(resumed.run.artifacts) == {"ab", "bc", "out"}
    await started.state.flush()
    stored = await started.state.load(run.id)
    assert stored is not None and stored["run"]["Status"] == "COMPLETE"
