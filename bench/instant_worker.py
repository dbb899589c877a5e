"""A ``pipewell worker`` whose attempts start no container, for the bigrun benchmark.

    python -m bench.instant_worker --queue redis://... [--slots 32]

The real Worker, on the real Redis queue, with an executor that ends each attempt at
once: it writes one byte to each output through its presigned URL (the real store,
over HTTP) and reports success. What is left to measure is the service's own cost of
a run: submission, dispatch, results, state writes and events. Docker's cost per
container is measured by the other benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading

import requests

from orchestrator.config import QueueSettings, WorkerSettings
from orchestrator.executor import Cleanup, Emit
from orchestrator.messages import AttemptResult, OutputInfo, Task
from orchestrator.queue import open_queue
from orchestrator.worker import Worker
from tests.fakes import FakeExecutor


class InstantExecutor(FakeExecutor):
    """The tests' fake executor (orchestrator.executor.Executor without the engine),
    whose attempts write one byte to each output through its URL."""

    def __init__(self, worker_id: str) -> None:
        super().__init__()
        self.worker_id = worker_id
        self._local = threading.local()

    def _http(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def run(self, task: Task, emit: Emit) -> tuple[AttemptResult, Cleanup]:
        outputs = {}
        for output in task.outputs:
            answer = self._http().put(output.url, data=b"x", timeout=30)
            answer.raise_for_status()
            outputs[output.name] = OutputInfo(size=1, content_type="text/plain")
        result = AttemptResult(
            run_id=task.run_id,
            node_id=task.node_id,
            attempt=task.attempt,
            item=task.item,
            ok=True,
            outputs=outputs,
        )
        return result, lambda: 0.0


async def serve(url: str, name: str, slots: int) -> None:
    worker_id = f"{abs(hash(name)):032x}"[:32]
    queue = open_queue(QueueSettings(url=url, reclaim_after=30), consumer=worker_id)
    settings = WorkerSettings(name=name, max_parallel=slots, tiers=["c-nano"])
    worker = Worker(settings, queue, InstantExecutor(worker_id))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await worker.start()
    try:
        await stop.wait()
    finally:
        await worker.close(grace=5)
        await queue.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue", required=True)
    parser.add_argument("--name", default="bench-instant")
    parser.add_argument("--slots", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(serve(args.queue, args.name, args.slots))


if __name__ == "__main__":
    main()
