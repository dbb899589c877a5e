"""Collections through the engine, no Docker (``tests.engine``): a zip expanded into
items, a node mapped over them item by item, chained maps without a barrier, a gather,
a node's collection output, partial failure against MinSuccess, Concurrency, retries
per item, and a restart in the middle of a map that loses and repeats no item."""

from __future__ import annotations

import asyncio
import io
import tarfile
import zipfile
from typing import Any

import pytest

from orchestrator.errors import CollectionRefused
from orchestrator.messages import AttemptResult, Task
from orchestrator.models import NodeStatus, RunStatus
from orchestrator.runtime import RunState
from storage import Store
from tests.engine import Engine, key_of_put_url, submission
from tests.fakes import FakeExecutor

ROOMY = {"max_parallel": 4, "memory": "4g"}

DEFS = [
    {"Publisher": "t", "Name": "each", "Image": "fake", "Tier": "c-nano",
     "Inputs": [{"Name": "in"}], "Outputs": [{"Name": "out"}]},
    {"Publisher": "t", "Name": "gather", "Image": "fake", "Tier": "c-nano",
     "Inputs": [{"Name": "all", "Collection": True}], "Outputs": [{"Name": "sheet"}]},
    {"Publisher": "t", "Name": "split", "Image": "fake", "Tier": "c-nano",
     "Inputs": [{"Name": "in"}], "Outputs": [{"Name": "parts", "Collection": True}]},
]  # fmt: skip


def each(node_id: str, source: str, target: str, **fields: Any) -> dict[str, Any]:
    return {
        "ID": node_id,
        "Uses": "t/each",
        "Inputs": [{"Name": "in", "Edge": source}],
        "Outputs": [{"Name": "out", "Edge": target}],
        **fields,
    }


GATHER = {
    "ID": "c",
    "Uses": "t/gather",
    "Inputs": [{"Name": "all", "Edge": "marked"}],
    "Outputs": [{"Name": "sheet", "Edge": "sheet"}],
}
#: photos (a zip) → a: upper-case each → b: add "!" to each → c: all of them in one text.
PIPELINE = [each("a", "photos", "small"), each("b", "small", "marked"), GATHER]


def flow(nodes: list[dict[str, Any]], **fields: Any):  # -> FlowSubmission
    fields.setdefault("Collections", ["photos"])
    return submission(nodes, DEFS, name="batch", **fields)


def zipped(files: dict[str, bytes]) -> bytes:
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return data.getvalue()


def tarred(files: dict[str, bytes]) -> bytes:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as archive:
        for name, content in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(content)
            archive.addfile(member, io.BytesIO(content))
    return data.getvalue()


PHOTOS = {"cat.jpg": b"cat", "dog.jpg": b"dog", "more/eel.jpg": b"eel"}


def read(store: Store, url: str) -> bytes:
    with store.open_read(key_of_put_url(url)) as reader:
        return reader.read()


def write(store: Store, url: str, data: bytes) -> None:
    store.write(key_of_put_url(url), io.BytesIO(data), content_type="text/plain")


def nodes_of(store: Store, fail: dict[str, str] | None = None):  # -> dict[str, Behaviour]
    """a: upper-cases its item; b: adds "!"; c: writes "name=content" of every item it
    gathers; split: a tar of three parts. ``fail``: item → error of a's attempts on it."""

    def upper(task: Task) -> str | AttemptResult | None:
        if fail and task.item in fail:
            return AttemptResult(
                run_id=task.run_id, node_id=task.node_id, attempt=task.attempt,
                item=task.item, ok=False, error=fail[task.item], retryable=False,
            )  # fmt: skip
        write(store, task.outputs[0].url, read(store, task.inputs[0].url).upper())
        return None

    def bang(task: Task) -> None:
        write(store, task.outputs[0].url, read(store, task.inputs[0].url) + b"!")

    def gather(task: Task) -> None:
        items = task.inputs[0].items or []
        lines = sorted(f"{i.name}={read(store, i.url).decode()}" for i in items)
        write(store, task.outputs[0].url, "\n".join(lines).encode())

    def split(task: Task) -> None:
        assert task.outputs[0].collection
        write(store, task.outputs[0].url, tarred({"p1.txt": b"one", "sub/p2.txt": b"two"}))

    return {"a": upper, "b": bang, "c": gather, "split": split}


def text(engine: Engine, run: RunState, edge: str) -> str:
    return engine.read(run, edge)[0].decode()


async def test_a_zip_is_mapped_item_by_item_through_two_nodes_and_gathered(engine):
    started = await engine(FakeExecutor(), worker=ROOMY)
    started.executor.behaviours = nodes_of(started.stores.default)
    run = await started.submit(
        flow(PIPELINE), inputs={"photos": (zipped(PHOTOS), "application/zip")}
    )
    await started.settled(run)
    assert run.status == RunStatus.COMPLETE, run.run.node_state
    assert text(started, run, "sheet").splitlines() == [
        "cat.jpg=CAT!",
        "dog.jpg=DOG!",
        "more/eel.jpg=EEL!",
    ]
    state = run.state("a")
    assert state.status == NodeStatus.COMPLETE
    assert state.items is not None
    assert (state.items.total, state.items.counts) == (3, {"COMPLETE": 3})
    assert run.run.artifacts["small"].items == 3
    assert run.run.artifacts["photos"].items == 3
    # Every item its own attempt, with the item as an ordinary file input.
    a_items = sorted(t.item for t in started.executor.tasks if t.node_id == "a")
    assert a_items == ["cat.jpg", "dog.jpg", "more/eel.jpg"]
    assert [t.item for t in started.executor.tasks if t.node_id == "c"] == [None]
    # The items are objects of their own, the zip is gone.
    photos = run.artifact_for("photos").object_name
    store = started.stores.default
    assert store.stat(f"{photos}/more/eel.jpg").size == 3
    assert store.stat(f"{photos}.bundle") is None
    # An item a node made is named by its input's item, and reported as its worker said.
    member = run.collections["marked"].items["dog.jpg"]
    assert member.object_name == f"{run.artifact_for('marked').object_name}/dog.jpg"
    assert store.stat(member.object_name).size == 4
    assert (member.size, member.content_type) == (1, "text/plain")  # the fake's report


async def test_an_items_next_step_starts_before_the_first_step_ends_for_the_others(engine):
    """No barrier between chained maps: item 1's b runs while a still holds items 2 and 3
    (three items on four slots: each a task of its own, batches being no bigger than
    the slots leave)."""
    started = await engine(FakeExecutor(hold=["a"]), worker=ROOMY)
    executor = started.executor
    executor.behaviours = nodes_of(started.stores.default)
    run = await started.submit(
        flow(PIPELINE), inputs={"photos": (zipped(PHOTOS), "application/zip")}
    )
    at_once = 3
    await executor.until(lambda: len(executor.running) == at_once)
    executor.let_through(1, "a")
    await executor.until(lambda: any(t.node_id == "b" for t in executor.tasks))
    done_b = [t.item for t in executor.tasks if t.node_id == "b"]
    assert len(done_b) == 1
    a_ended = [key for key in executor.ended if "/a[" in key]
    assert len(a_ended) == 1  # a's other two items have not ended
    assert run.state("c").status == NodeStatus.IDLE  # the gather waits for them all
    executor.open_gate()
    await started.settled(run)
    assert run.status == RunStatus.COMPLETE


async def test_failed_items_within_min_success_leave_the_run_complete_and_listed(engine):
    started = await engine(FakeExecutor(), worker=ROOMY)
    started.executor.behaviours = nodes_of(started.stores.default, {"dog.jpg": "not a photo"})
    nodes = [each("a", "photos", "small", Map={"MinSuccess": 0.6}), each("b", "small", "marked"),
             GATHER]  # fmt: skip
    run = await started.submit(flow(nodes), inputs={"photos": (zipped(PHOTOS), "application/zip")})
    await started.settled(run)
    assert run.status == RunStatus.COMPLETE, run.run.node_state
    a = run.state("a")
    assert a.items is not None and a.items.counts == {"COMPLETE": 2, "ERROR": 1}
    assert a.error.startswith("1 of 3 items failed (60% must succeed")
    assert "dog.jpg: not a photo" in a.error
    assert text(started, run, "sheet").splitlines() == ["cat.jpg=CAT!", "more/eel.jpg=EEL!"]
    page, after = run.item_page("a", NodeStatus.ERROR, None, 10)
    assert [(i.name, i.error, i.attempt) for i in page] == [("dog.jpg", "not a photo", 1)]
    assert after is None


async def test_an_item_that_fails_for_good_ends_the_run_at_the_default_min_success(engine):
    started = await engine(FakeExecutor(), worker={"max_parallel": 1, "memory": "4g"})
    started.executor.behaviours = nodes_of(started.stores.default, {"cat.jpg": "broken"})
    run = await started.submit(
        flow(PIPELINE), inputs={"photos": (zipped(PHOTOS), "application/zip")}
    )
    await started.settled(run)
    assert run.status == RunStatus.ERROR
    a = run.state("a")
    assert a.status == NodeStatus.ERROR
    assert "cat.jpg: broken" in a.error and "100% must succeed" in a.error
    assert run.state("c").status == NodeStatus.IDLE
    assert "sheet" not in run.run.artifacts


async def test_an_item_is_retried_on_its_own_and_concurrency_bounds_the_node(engine):
    started = await engine(FakeExecutor(), worker=ROOMY)
    store = started.stores.default
    upper = nodes_of(store)["a"]

    def flaky(task: Task) -> str | AttemptResult | None:
        if task.item == "dog.jpg" and task.attempt == 1:
            return "flaky"
        return upper(task)

    started.executor.behaviours = {"a": flaky}
    nodes = [each("a", "photos", "small", Map={"Concurrency": 1})]
    run = await started.submit(flow(nodes), inputs={"photos": (zipped(PHOTOS), "application/zip")})
    await started.settled(run)
    assert run.status == RunStatus.COMPLETE, run.run.node_state
    assert started.executor.most_running == 1
    attempts = sorted((t.item, t.attempt) for t in started.executor.tasks)
    assert attempts == [("cat.jpg", 1), ("dog.jpg", 1), ("dog.jpg", 2), ("more/eel.jpg", 1)]
    dog = run.item("a", "dog.jpg")
    assert dog is not None and (dog.status, dog.attempt, dog.error) == (NodeStatus.COMPLETE, 2, "")


async def test_a_nodes_collection_output_is_expanded_into_items_and_mapped(engine):
    started = await engine(FakeExecutor(), worker=ROOMY)
    started.executor.behaviours = nodes_of(started.stores.default)
    nodes = [
        {"ID": "split", "Uses": "t/split", "Inputs": [{"Name": "in", "Edge": "doc"}],
         "Outputs": [{"Name": "parts", "Edge": "photos"}]},
        each("a", "photos", "small"), each("b", "small", "marked"), GATHER,
    ]  # fmt: skip
    run = await started.submit(
        flow(nodes, Collections=[]), inputs={"doc": (b"a document", "text/plain")}
    )
    await started.settled(run)
    assert run.status == RunStatus.COMPLETE, run.run.node_state
    assert text(started, run, "sheet").splitlines() == ["p1.txt=ONE!", "sub/p2.txt=TWO!"]
    assert "2 items" in run.state("split").logs[-1].message


async def test_an_empty_collection_maps_nothing_and_gathers_an_empty_folder(engine):
    started = await engine(FakeExecutor(), worker=ROOMY)
    started.executor.behaviours = nodes_of(started.stores.default)
    run = await started.submit(flow(PIPELINE), inputs={"photos": (zipped({}), "application/zip")})
    await started.settled(run)
    assert run.status == RunStatus.COMPLETE, run.run.node_state
    assert run.state("a").items.total == 0  # type: ignore[union-attr]
    assert text(started, run, "sheet") == ""
    assert [t.node_id for t in started.executor.tasks] == ["c"]


async def test_an_upload_that_is_no_archive_is_refused_and_no_run_is_made(engine):
    started = await engine(FakeExecutor(), worker=ROOMY)
    with pytest.raises(CollectionRefused) as refused:
        await started.submit(flow(PIPELINE), inputs={"photos": (b"just text", "text/plain")})
    assert refused.value.code == "COLLECTION_INVALID"
    assert refused.value.reason == "ARCHIVE_UNKNOWN"
    assert "text/plain, not a zip or tar" in str(refused.value)
    assert started.scheduler.runs == {}


ONE_SLOT = {"max_parallel": 1, "memory": "4g"}


@pytest.mark.parametrize("per_container", [1, 8])
async def test_a_restart_in_the_middle_of_a_map_runs_each_item_once(engine, per_container):
    """Three items as three tasks on four slots, or as one batch on one slot."""
    started = await engine(
        FakeExecutor(hold=["a"]),
        worker=ROOMY if per_container == 1 else ONE_SLOT,
        executor_settings={"items_per_container": per_container},
    )
    store = started.stores.default
    started.executor.behaviours = nodes_of(store)
    nodes = [each("a", "photos", "small")]
    run = await started.submit(flow(nodes), inputs={"photos": (zipped(PHOTOS), "application/zip")})
    executor = started.executor
    await executor.until(lambda: len(executor.running) == (3 if per_container == 1 else 1))
    executor.let_through(1, "a")
    await started.until(run, lambda: (run.state("a").items.counts or {}).get("COMPLETE") == 1)  # type: ignore[union-attr]
    await started.state.flush()
    first = next(t.item for t in executor.tasks if t.key in executor.ended)
    again = FakeExecutor()
    again.behaviours = nodes_of(store)
    await started.restart(again)
    resumed = started.scheduler.runs[run.id]
    await started.settled(resumed)
    assert resumed.status == RunStatus.COMPLETE, resumed.run.node_state
    rerun = sorted(t.item for t in again.tasks)
    assert first not in rerun and len(rerun) == 2
    small = resumed.artifact_for("small").object_name
    for name, content in PHOTOS.items():
        with store.open_read(f"{small}/{name}") as reader:
            assert reader.read() == content.upper()
    assert resumed.run.artifacts["small"].items == 3


@pytest.mark.parametrize(
    ("per_container", "worker", "sizes"),
    [
        (1, ONE_SLOT, []),  # every item a task of its own
        (8, ONE_SLOT, [5]),  # all five in one container
        (2, ONE_SLOT, [2, 2]),  # at most two a container, the fifth alone
        (8, ROOMY, [2, 2]),  # five items spread over four slots: two a container
    ],
)
async def test_a_maps_items_run_in_batches_as_big_as_the_slots_leave(
    engine, per_container, worker, sizes
):
    started = await engine(
        FakeExecutor(), worker=worker, executor_settings={"items_per_container": per_container}
    )
    executor = started.executor
    executor.behaviours = nodes_of(started.stores.default)
    photos = {f"p{n}.jpg": f"photo {n}".encode() for n in range(5)}
    run = await started.submit(
        flow([each("a", "photos", "small")]),
        inputs={"photos": (zipped(photos), "application/zip")},
    )
    await started.settled(run)
    assert run.status == RunStatus.COMPLETE, run.run.node_state
    # Batches of at most per_container items and no more than the node's items over the
    # slots (a lone item left over is a task of its own), each batch's items in turn.
    assert sorted((len(ran) for ran in executor.batches), reverse=True) == sizes
    batched = {key for ran in executor.batches for key in ran}
    lone = [t.key for t in executor.tasks if t.key not in batched]
    assert len(lone) == 5 - sum(sizes)
    assert executor.most_running <= len(sizes) + len(lone)
    assert sorted(t.item for t in executor.tasks) == sorted(photos)
    small = run.artifact_for("small").object_name
    for name, content in photos.items():
        with started.stores.default.open_read(f"{small}/{name}") as reader:
            assert reader.read() == content.upper()


async def test_a_maps_items_are_streamed_as_progress_not_an_event_per_item(engine):
    """Forty items, each started and ended, make eighty changes of the mapped node:
    a watcher gets a few status events (its progress a few times a second), and the
    whole run, items counted, at the end."""
    started = await engine(FakeExecutor(), worker=ROOMY)
    started.executor.behaviours = nodes_of(started.stores.default)
    photos = {f"p{n:02}.jpg": b"x" for n in range(40)}
    run = await started.submit(
        flow([each("a", "photos", "small")]),
        inputs={"photos": (zipped(photos), "application/zip")},
    )
    events = []
    async with started.events.subscribe(run.id) as changes:
        while not events or events[-1] != "end":
            events.append((await asyncio.wait_for(changes.get(), 10)).name)
    assert run.status == RunStatus.COMPLETE
    assert 1 <= events.count("status") < 20, (events.count("status"), events)
    assert run.state("a").items.counts == {"COMPLETE": 40}  # type: ignore[union-attr]
