"""What both launchers share: the interface the executor calls, and the attempt record.

A launcher gets an attempt's container running its node's program, inputs in
place and its output attached: the plain launcher creates and starts a container
per attempt, the gated one opens the gate of a container started ahead
(orchestrator.executor.gated). Everything after that (waiting, the exit, the
outputs, clean-up) is the executor's and the same for both.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import docker

from orchestrator.config import ExecutorSettings
from orchestrator.executor.housekeeping import Housekeeping
from orchestrator.executor.logs import LogPump
from orchestrator.executor.protocol import Emit, LaunchMode
from orchestrator.executor.spec import Image, Paths
from orchestrator.executor.transfers import Input, Transfers
from orchestrator.executor.warm_pool import Shape
from orchestrator.executor.workspaces import Workspace
from orchestrator.messages import Task
from orchestrator.tiers import Tier


class Stopwatch:
    """Seconds spent per phase of an attempt, summed when a phase recurs."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - began
            self.totals[phase] = round(self.totals.get(phase, 0.0) + elapsed, 4)


@dataclass(frozen=True)
class LaunchKit:
    """What a launcher works with: the engine, the settings, whose containers, where files go."""

    client: docker.DockerClient
    settings: ExecutorSettings
    worker: str
    worker_id: str
    #: Where attempt directories are made; None when files go through the Engine API.
    mount_root: Path | None
    transfers: Transfers
    housekeeping: Housekeeping


@dataclass
class Attempt:
    """One attempt's container and files, filled in by its launcher as it makes them.

    Whatever is set when the attempt ends is what its clean-up removes, also
    when the launch failed half-way.
    """

    task: Task
    attempt_id: str = ""
    container_id: str | None = None
    workspace: Workspace | None = None
    pump: LogPump | None = None
    timings: Stopwatch = field(default_factory=Stopwatch)


class Launcher(Protocol):
    mode: LaunchMode

    def open(self) -> None:
        """Start background work (the gated launcher's spares)."""

    def close(self) -> int:
        """Stop background work and remove what it made; how many containers."""

    def spares(self) -> dict[Shape, int]:
        """Containers ready ahead of demand, per shape."""

    def launch(
        self, attempt: Attempt, tier: Tier, image: Image, inputs: list[Input], paths: Paths,
        emit: Emit,
    ) -> None:  # fmt: skip
        """Get the attempt's program running with its inputs in place (and an empty directory
        for each collection output), its output attached.

        Fills ``attempt`` as it goes (container, workspace, log pump); raises
        AttemptFailed, leaving what it made in ``attempt`` for clean-up.
        """


__all__ = ["Attempt", "LaunchKit", "Launcher", "Stopwatch"]
