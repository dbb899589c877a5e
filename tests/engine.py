"""The engine without Docker, for fast tests: the real scheduler, service layer, worker,
memory queue (observed), state store (SQLite) and local store, on a fake executor.

Wired as ``pipewell dev`` wires them (``orchestrator.api.app``), less HTTP. Tests
wait on what the run publishes (``Engine.until``) or what the fakes record, never
on a sleep.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from orchestrator.config import Settings
from orchestrator.database import Database
from orchestrator.events import EventBus
from orchestrator.messages import Task
from orchestrator.models import DEFAULT_TENANT, FlowSubmission, NodeDef
from orchestrator.run_ids import RunIds
from orchestrator.runtime import RunState
from orchestrator.scheduler import Scheduler
from orchestrator.service import Service
from orchestrator.state import StateStore
from orchestrator.stores import StoreCalls, StoreRegistry
from orchestrator.worker import Worker
from storage import Store
from tests.fakes import Behaviour, FakeExecutor, ObservedQueue
from tests.helpers import service_settings

#: The NodeDef every node of ``node()`` uses unless a test gives its own.
USES = "t/n"


def node(node_id: str, inputs: list[str], outputs: list[str], uses: str = USES) -> dict[str, Any]:
    """A node reading ``inputs`` as in0, in1… and writing ``outputs`` as out0, out1…"""
    return {
        "ID": node_id,
        "Uses": uses,
        "Inputs": [{"Name": f"in{i}", "Edge": e} for i, e in enumerate(inputs)],
        "Outputs": [{"Name": f"out{i}", "Edge": e} for i, e in enumerate(outputs)],
    }


def submission(
    nodes: list[dict[str, Any]],
    defs: list[dict[str, Any]] | None = None,
    *,
    name: str = "faults",
    **flow_fields: Any,
) -> FlowSubmission:
    """A flow of ``nodes`` with ``defs`` (default: the one NodeDef ``t/n``, image "fake")."""
    flow = {"Name": name, "Nodes": nodes, **flow_fields}
    defs = defs if defs is not None else [nodedef()]
    return FlowSubmission.model_validate({"Flow": flow, "NodeDefs": defs})


def nodedef(name: str = "n", **fields: Any) -> dict[str, Any]:
    return {"Publisher": "t", "Name": name, "Image": "fake", **fields}


CHAIN = [node("a", [], ["mid"]), node("b", ["mid"], ["out"])]


class Engine:
    """Scheduler, service layer and one worker over a memory queue."""

    def __init__(
        self,
        settings: Settings,
        executor: FakeExecutor,
        catalog: dict[str, NodeDef] | None = None,
    ) -> None:
        self.settings = settings
        self.executor = executor
        self.catalog = catalog or {}
        # Workers of the engine before a restart, closed with this one.
        self._retired: list[tuple[Worker, FakeExecutor]] = []

    async def start(self) -> None:
        self.db = Database(self.settings.data_dir / "state.sqlite3")
        await self.db.open()
        self.state = StateStore(self.db)
        self.state.start()
        self.stores = StoreRegistry(self.settings, b"k" * 32)
        self.calls = StoreCalls(self.stores, name="test-store")
        self.events = EventBus()
        await self._start_engine()

    async def _start_engine(self) -> None:
        self.queue = ObservedQueue()
        self.scheduler = Scheduler(
            self.settings,
            self.state,
            self.queue,
            self.events,
            self.stores,
            self.calls,
            self.catalog,
        )
        self.service = Service(
            self.settings,
            self.scheduler,
            self.state,
            self.stores,
            self.calls,
            self.events,
            self.queue,
            self.db,
            self.catalog,
            RunIds(b"r" * 32),
        )
        self.submissions = self.service.submissions
        self.worker = Worker(self.settings.worker, self.queue, self.executor)
        # Worker first, as the app starts them: resumed runs find their tiers offered.
        await self.worker.start()
        await self.scheduler.start()

    async def restart(self, executor: FakeExecutor | None = None) -> None:
        """A new scheduler, queue and worker over the same database and stores, as after
        the service went down: the old scheduler stops where it was, and what its worker
        still runs reaches no one (its queue went with it)."""
        await self.scheduler.close()
        await self.service.close()
        self._retired.append((self.worker, self.executor))
        self.executor = executor or FakeExecutor()
        await self._start_engine()

    async def close(self) -> None:
        # Held attempts let go first: a worker waits for them before it aborts them.
        for worker, executor in [*self._retired, (self.worker, self.executor)]:
            executor.open_gate()
            await worker.close(grace=1)
        await self.scheduler.close()
        await self.service.close()
        self.calls.close()
        await self.state.close()
        await self.db.close()
        self.stores.close()

    async def submit(
        self,
        flow: FlowSubmission,
        *,
        tenant: str = DEFAULT_TENANT,
        inputs: dict[str, tuple[bytes, str]] | None = None,
    ) -> RunState:
        """Submit ``flow``: the run as the scheduler holds it."""
        flow_run = await self.submissions.submit(flow, tenant=tenant, inputs=inputs)
        return self.scheduler.runs[flow_run.id]

    async def run(self, nodes: list[dict[str, Any]], **def_fields: Any) -> RunState:
        """Submit a flow of ``nodes`` whose NodeDef ``t/n`` has ``def_fields``."""
        return await self.submit(submission(nodes, [nodedef(**def_fields)]))

    async def settled(self, run: RunState, seconds: float = 10.0) -> RunState:
        """The run once it is finished; AssertionError if it is not within ``seconds``."""
        await self.until(run, lambda: run.status.finished, seconds)
        return run

    async def until(
        self, run: RunState, predicate: Callable[[], bool], seconds: float = 10.0
    ) -> None:
        """Wait until ``predicate()`` holds, checked at each event the run publishes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        # Subscribed before the first check: a change in between is not missed.
        async with self.events.subscribe(run.id) as changes:
            while not predicate():
                try:
                    await asyncio.wait_for(changes.get(), deadline - loop.time())
                except TimeoutError:
                    raise AssertionError(
                        f"not within {seconds} s; run in {run.status}: {run.run.node_state}"
                    ) from None

    def read(self, run: RunState, edge: str) -> tuple[bytes, str | None]:
        """The bytes and content type of the object on ``edge`` in the default store."""
        key = run.artifact_for(edge).object_name
        info = self.stores.default.stat(key)
        assert info is not None, f"no object on edge {edge!r} ({key})"
        with self.stores.default.open_read(key) as reader:
            return reader.read(), info.content_type


def key_of_put_url(url: str) -> str:
    """The object key a local store's presigned URL names (its path past the store)."""
    path = urlsplit(url).path
    _objects, _store, key = path.lstrip("/").split("/", 2)
    return unquote(key)


def writing(store: Store, contents: dict[str, tuple[bytes, str]]) -> Behaviour:
    """A node that writes its outputs (by name: bytes, content type) as a container would
    through their presigned PUTs; outputs not named are left unwritten."""

    def write(task: Task) -> None:
        for output in task.outputs:
            if output.name in contents:
                data, content_type = contents[output.name]
                key = key_of_put_url(output.url)
                store.write(key, io.BytesIO(data), content_type=content_type)

    return write


StartEngine = Callable[..., Any]


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[StartEngine]:
    """Start an engine: ``await engine(executor, catalog=..., executor_settings=...,
    **settings overrides)``.

    Retries back off by a few milliseconds, so a retry costs a test next to nothing.
    """
    started: list[Engine] = []

    async def start(
        executor: FakeExecutor | None = None,
        *,
        catalog: dict[str, NodeDef] | None = None,
        executor_settings: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> Engine:
        overrides.setdefault("retry", {"backoff_base": 0.01, "backoff_max": 0.05})
        if executor_settings is not None:  # the settings' section ("executor" is the fake)
            overrides["executor"] = executor_settings
        settings = service_settings(tmp_path / f"data{len(started)}", **overrides)
        made = Engine(settings, executor or FakeExecutor(), catalog)
        await made.start()
        started.append(made)
        return made

    yield start
    for made in started:
        await made.close()


__all__ = [
    "CHAIN",
    "USES",
    "Engine",
    "StartEngine",
    "engine",
    "key_of_put_url",
    "node",
    "nodedef",
    "submission",
    "writing",
]
