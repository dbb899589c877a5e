"""The plain launcher: a container created and started for each attempt, as ``docker run`` does.

Docker applies the image's Entrypoint and Cmd itself; the attempt's files are
mounted (an engine on this machine) or copied in through the Engine API.
"""

from __future__ import annotations

import uuid

from orchestrator.executor import spec
from orchestrator.executor.errors import step
from orchestrator.executor.launcher import Attempt, LaunchKit
from orchestrator.executor.logs import LogPump
from orchestrator.executor.protocol import Emit, LaunchMode
from orchestrator.executor.spec import Image, Paths
from orchestrator.executor.transfers import Input
from orchestrator.executor.warm_pool import Shape
from orchestrator.executor.workspaces import ArchiveWorkspace, MountedWorkspace
from orchestrator.tiers import Tier


class PlainLauncher:
    mode: LaunchMode = "plain"

    def __init__(self, kit: LaunchKit) -> None:
        self.kit = kit

    def open(self) -> None:
        """Nothing runs ahead of demand."""

    def close(self) -> int:
        return 0

    def spares(self) -> dict[Shape, int]:
        return {}

    def launch(
        self, attempt: Attempt, tier: Tier, image: Image, inputs: list[Input], paths: Paths,
        emit: Emit,
    ) -> None:  # fmt: skip
        kit, task, timings = self.kit, attempt.task, attempt.timings
        in_flight = kit.housekeeping.in_flight
        attempt.attempt_id = uuid.uuid4().hex
        in_flight.begin(attempt.attempt_id)
        mounted = None
        if kit.mount_root is not None:
            mounted = MountedWorkspace.create(
                kit.mount_root, attempt.attempt_id, kit.transfers, gated=False
            )
            attempt.workspace = mounted
        options = spec.sandbox(tier, spec.user_of(image, task))
        options.update(
            command=spec.node_args(task, paths),
            environment=spec.environment(task, paths),
            labels=spec.labels(kit.worker, kit.worker_id, attempt.attempt_id, task),
            name=spec.container_name(task, attempt.attempt_id),
        )
        if mounted is not None:
            options["volumes"] = spec.mounts(mounted.root)
        # Created before the input bodies land: Docker syncs the filesystem when
        # it creates a container, and gigabytes of fresh dirty pages make that slow.
        with timings("create"), step("create container", engine=True):
            container_id = kit.client.containers.create(task.image, **options).id
        attempt.container_id = container_id
        in_flight.own(container_id, task.run_id)
        workspace = mounted or ArchiveWorkspace(kit.client, container_id, kit.transfers)
        attempt.workspace = workspace
        with timings("input_transfer"):
            workspace.prepare(inputs, task.outputs)
        in_flight.check_run_live(task)
        with timings("start"):
            attempt.pump = LogPump.attach(kit.client, container_id, emit, task.attempt)
            with step("start container", engine=True):
                kit.client.api.start(container_id)


__all__ = ["PlainLauncher"]
