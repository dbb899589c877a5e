"""scaleout: chain10 and fanout with the service and two ``pipewell worker`` processes on
Redis, against the embedded mode (in-process queue and worker), rounds alternating.

The Redis is a ``redis-server`` on a free loopback port, started for the purpose;
the two workers run on this machine's Docker engine, each with its own identity.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import Any

from bench import chain10
from bench.service import (
    ROOT,
    BenchError,
    Service,
    copy_def,
    fan_flow,
    progress,
    ratio_row,
    redis_server,
)

FAN_WIDTH = 16
FAN_SECONDS = 2
RUN_TIMEOUT = 120


class RedisFleet:
    """A redis-server and two ``pipewell worker`` processes beside a service on it."""

    def __init__(self, service: Service, url: str) -> None:
        self.service = service
        self.url = url
        self.workers: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        for number in (1, 2):
            log = (self.service.tmp / f"worker{number}.log").open("ab")
            argv = [sys.executable, "-m", "orchestrator.cli", "worker", "--queue", self.url,
                    "--name", self.service.worker,
                    "--data-dir", str(self.service.tmp / f"worker{number}")]  # fmt: skip
            self.workers.append(
                subprocess.Popen(
                    argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
                )
            )
            log.close()
        # Both heard from: the service lists them.
        deadline = time.monotonic() + 30
        while (
            len(self.service.http.get(f"{self.service.base}/api/v1/workers").json()["workers"]) < 2
        ):
            if time.monotonic() > deadline:
                raise BenchError("the two workers were not heard from within 30 s")
            time.sleep(0.1)

    def stop(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.workers:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def _fanout(service: Service) -> float:
    defs = [copy_def(exec_line=f"sh -c 'sleep {FAN_SECONDS}; cp ${{in}} ${{out}}'", tier="c-nano")]
    began = time.perf_counter()
    run = service.submit(fan_flow(FAN_WIDTH), defs)
    service.upload(run, b"x")
    done = service.wait(run["ID"], RUN_TIMEOUT)
    if done["Status"] != "COMPLETE":
        raise BenchError(f"fanout run ended {done['Status']}:\n{service.diagnose(run['ID'])}")
    return time.perf_counter() - began


def run(quick: bool) -> list[dict[str, Any]]:
    rounds = 3 if quick else 5
    chains = {"embedded": [], "redis": []}
    fans = {"embedded": [], "redis": []}
    fleet = None
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(redis_server())
        stack.callback(lambda: fleet is not None and fleet.stop())
        on_redis = {"queue": {"url": url}, "worker": {"enabled": False}}
        with Service(label="embedded") as embedded, Service(on_redis, label="redis") as remote:
            fleet = RedisFleet(remote, url)
            fleet.start()
            services = {"embedded": embedded, "redis": remote}
            for service in services.values():  # warm-up, not counted
                chain10._pipewell(service, length=1)
                service.settle()
            progress("scaleout: warm-up done; two workers heard from on Redis")
            for number in range(rounds):
                for name, service in services.items():
                    chains[name].append(chain10._pipewell(service)[0])
                    service.settle()
                progress(
                    f"scaleout chain10 round {number + 1}/{rounds}: embedded "
                    f"{chains['embedded'][-1]:.2f} s, redis {chains['redis'][-1]:.2f} s"
                )
            for number in range(2):
                for name, service in services.items():
                    fans[name].append(_fanout(service))
                    service.settle()
                progress(
                    f"scaleout fanout round {number + 1}/2: embedded "
                    f"{fans['embedded'][-1]:.2f} s, redis {fans['redis'][-1]:.2f} s"
                )
            # Before the service stops: what its workers hold (warm containers) is
            # theirs to remove, and would otherwise look left behind by the service.
            fleet.stop()
    return [
        ratio_row(
            "chain10 on Redis, two worker processes",
            chains["redis"],
            chains["embedded"],
            baseline="the same in embedded mode",
            target=1.10,
        ),
        ratio_row(
            f"fanout ({FAN_WIDTH} x {FAN_SECONDS} s) on Redis, two worker processes",
            fans["redis"],
            fans["embedded"],
            baseline="the same in embedded mode (one worker)",
            target=None,
        ),
    ]
