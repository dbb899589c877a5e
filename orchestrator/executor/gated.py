"""The gated launcher: attempts run in containers started ahead and held at a gate.

An attempt claims a spare of its shape (orchestrator.executor.warm_pool), or
makes a gated container for itself when none is ready; puts its inputs in the
container's mounted directory; then opens the gate with its environment and argv
(orchestrator.executor.gate). The node's program then replaces busybox as PID 1,
with the image's Entrypoint and Cmd applied as Docker applies them.

A batch (items of one run's one node) claims or makes its container the same way,
then opens the gate with the batch's loop instead (``gate.BATCH_LOOP``): each item
then runs as a child of the loop, one program invocation per item, with only its
own files in the container's ``in`` and ``out`` (:class:`BatchContainer`).
"""

from __future__ import annotations

import math
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from orchestrator.executor import spec
from orchestrator.executor.errors import AttemptFailed, step, tolerated
from orchestrator.executor.gate import (
    BUSYBOX,
    GATE_SCRIPT,
    BatchGate,
    gate_command,
    hold_gate,
    open_gate,
)
from orchestrator.executor.launcher import Attempt, LaunchKit, Stopwatch
from orchestrator.executor.logs import BatchLogPump, ItemEnd, LogPump
from orchestrator.executor.protocol import Emit, LaunchMode
from orchestrator.executor.spec import Image, Paths
from orchestrator.executor.transfers import Input
from orchestrator.executor.warm_pool import UNCLAIMED_GRACE, Shape, Spare, WarmPool
from orchestrator.executor.workspaces import MountedWorkspace
from orchestrator.messages import Task
from orchestrator.tiers import TIERS, Tier


@dataclass
class BatchContainer:
    """A gated container running a batch's loop: one item at a time, each its own program.

    ``attempt`` is the container's record (what clean-up removes); its workspace's
    ``in`` and ``out`` hold one item's files at a time (:meth:`clear` between two).
    """

    attempt: Attempt
    workspace: MountedWorkspace
    pump: BatchLogPump
    gate: BatchGate

    @property
    def container_id(self) -> str:
        assert self.attempt.container_id is not None
        return self.attempt.container_id

    def run(self, script: str, emit: Emit, attempt: int) -> ItemEnd:
        """Run one item (its files in place): ``script`` from :func:`gate_command`, its
        lines to ``emit``; how it ends."""
        token = secrets.token_hex(16)
        ended = self.pump.expect(token, emit, attempt)
        with step("send the item to its container"):
            self.gate.run(script, token)
        return ended

    def clear(self) -> None:
        """The item's files gone, for the next; AttemptFailed if they cannot all go."""
        self.workspace.clear()

    def end(self) -> None:
        """No more items: the container's loop, and so the container, exit."""
        self.gate.end()


class GatedLauncher:
    mode: LaunchMode = "gated"

    def __init__(self, kit: LaunchKit, busybox: Path) -> None:
        assert kit.mount_root is not None, "gated containers need their files mounted"
        self.kit = kit
        self.mount_root = kit.mount_root
        self.busybox = busybox
        settings = kit.settings
        self.pool: WarmPool | None = None
        if settings.warm_containers > 0:
            self.pool = WarmPool(
                self._make_spare, self._discard, settings.warm_containers, settings.warm_idle
            )

    def open(self) -> None:
        if self.pool is not None:
            self.pool.open()

    def close(self) -> int:
        if self.pool is None:
            return 0
        # A spare being made is waited for as long as one Docker call may take.
        return self.pool.close(timeout=self.kit.settings.docker_timeout)

    def spares(self) -> dict[Shape, int]:
        return self.pool.ready() if self.pool is not None else {}

    def launch(
        self, attempt: Attempt, tier: Tier, image: Image, inputs: list[Input], paths: Paths,
        emit: Emit,
    ) -> None:  # fmt: skip
        kit, task, timings = self.kit, attempt.task, attempt.timings
        shape = Shape(task.image, image.id, tier.name, spec.user_of(image, task))
        with timings("create"):
            spare = self._claim(shape)
        if spare is None:
            spare = self._make(shape, task, timings)
        attempt.attempt_id, attempt.container_id = spare.attempt_id, spare.container_id
        workspace = MountedWorkspace(spare.directory, kit.transfers)
        attempt.workspace = workspace
        kit.housekeeping.in_flight.own(spare.container_id, task.run_id)
        with timings("input_transfer"):
            workspace.prepare(inputs, task.outputs)
        kit.housekeeping.in_flight.check_run_live(task)
        script = gate_command(spec.environment(task, paths), spec.program(task, image, paths))
        with timings("start"):
            attempt.pump = LogPump.attach(kit.client, spare.container_id, emit, task.attempt)
            with step("open the container's gate"):
                open_gate(workspace.gate, script, lambda: self.running(spare.container_id))
        wanted = spec.container_name(task, spare.attempt_id)
        if spare.name != wanted:
            # Labels cannot change: the name says whose attempt a spare runs.
            with tolerated("rename", "only the name is lost; the attempt runs on"):
                kit.client.api.rename(spare.container_id, wanted)

    def start_batch(self, attempt: Attempt, tier: Tier, image: Image, emit: Emit) -> BatchContainer:
        """A container for a batch (``attempt.task``, one run's one node), its loop running
        and waiting for the first item. Fills ``attempt`` as :meth:`launch` does; raises
        AttemptFailed, leaving what it made in ``attempt`` for clean-up."""
        kit, task, timings = self.kit, attempt.task, attempt.timings
        shape = Shape(task.image, image.id, tier.name, spec.user_of(image, task))
        with timings("create"):
            spare = self._claim(shape)
        if spare is None:
            spare = self._make(shape, task, timings)
        attempt.attempt_id, attempt.container_id = spare.attempt_id, spare.container_id
        workspace = MountedWorkspace(spare.directory, kit.transfers)
        attempt.workspace = workspace
        kit.housekeeping.in_flight.own(spare.container_id, task.run_id)
        kit.housekeeping.in_flight.check_run_live(task)
        with timings("start"):
            with step("make the batch's gate"):
                gate = BatchGate(workspace.gate)
            try:
                pump = BatchLogPump.attach(kit.client, spare.container_id, emit, task.attempt)
                attempt.pump = pump
                with step("open the container's gate"):
                    gate.open(lambda: self.running(spare.container_id))
            except BaseException:
                gate.close()
                raise
        wanted = spec.container_name(task, spare.attempt_id)
        if spare.name != wanted:
            with tolerated("rename", "only the name is lost; the batch runs on"):
                kit.client.api.rename(spare.container_id, wanted)
        return BatchContainer(attempt, workspace, pump, gate)

    def _claim(self, shape: Shape) -> Spare | None:
        """A ready spare of ``shape``, now holding for this attempt; None when there is none."""
        while self.pool is not None and (spare := self.pool.claim(shape)) is not None:
            if self.running(spare.container_id) and self._hold(spare):
                return spare
            # Killed while it waited (an engine restart, an operator): next one.
            self._discard(spare)
        return None

    def _hold(self, spare: Spare) -> bool:
        """Whether the spare took its claim (it then waits for its gate without a limit)."""
        try:
            hold_gate(spare.directory / "gate", lambda: self.running(spare.container_id))
        except OSError:
            return False
        return True

    def _make_spare(self, shape: Shape) -> Spare:
        return self._make(shape, None, Stopwatch())

    def _make(self, shape: Shape, task: Task | None, timings: Stopwatch) -> Spare:
        """Create and start a gated container: for ``task``, or a spare when None."""
        kit = self.kit
        attempt_id = uuid.uuid4().hex
        kit.housekeeping.in_flight.begin(attempt_id)
        directory: Path | None = None
        container_id: str | None = None
        try:
            directory = MountedWorkspace.create(
                self.mount_root, attempt_id, kit.transfers, gated=True
            ).root
            if task is None:
                # Past warm_idle the pool removes it; past this it exits by itself,
                # and its label tells any service on the engine it may go.
                wait = math.ceil(kit.settings.warm_idle + UNCLAIMED_GRACE)
                name, deadline = spec.spare_name(attempt_id), time.time() + wait
            else:
                wait, name, deadline = 0, spec.container_name(task, attempt_id), None
            options = spec.sandbox(TIERS[shape.tier], shape.user)
            options.update(
                entrypoint=[BUSYBOX, "sh", "-c", GATE_SCRIPT],
                # $0, then how long to wait unclaimed (0: no limit, for its own task).
                command=["pipewell-gate", str(wait)],
                labels=spec.labels(kit.worker, kit.worker_id, attempt_id, task, deadline=deadline),
                name=name,
                volumes=spec.mounts(directory, busybox=self.busybox),
            )
            with timings("create"), step("create container", engine=True):
                container_id = kit.client.containers.create(shape.image, **options).id
            with timings("start"), step("start container", engine=True):
                kit.client.api.start(container_id)
            return Spare(shape, attempt_id, container_id, name, directory)
        except BaseException:
            kit.housekeeping.dispose(container_id, directory, attempt_id)
            raise

    def _discard(self, spare: Spare) -> None:
        self.kit.housekeeping.dispose(spare.container_id, spare.directory, spare.attempt_id)

    def running(self, container_id: str) -> bool:
        """Whether the engine says the container runs (False when gone or unanswered)."""
        try:
            with step("inspect the container", engine=True):
                state = self.kit.client.api.inspect_container(container_id)["State"]
        except AttemptFailed:  # gone, or no answer: either way it is not waiting for us
            return False
        return bool(state.get("Running"))


__all__ = ["BatchContainer", "GatedLauncher"]
