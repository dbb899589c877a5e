"""What a node's container is: its sandbox, user, labels, name, mounts, environment and argv.

Pure: nothing here talks to Docker. Both launchers build their containers from
these functions, so a gated container and a plain one differ only in how their
program starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.types

from orchestrator import command
from orchestrator.executor.errors import AttemptFailed
from orchestrator.executor.gate import BUSYBOX, GATE_DIR
from orchestrator.messages import Task
from orchestrator.models import NAME_RULE, is_name
from orchestrator.tiers import Tier

LABEL_RUN = "pipewell.run_id"
LABEL_NODE = "pipewell.node_id"
LABEL_ATTEMPT = "pipewell.attempt"
#: The worker's display name (worker.name), shared by the services of one host.
LABEL_WORKER = "pipewell.worker"
#: The worker's identity (orchestrator.identity): what leftover clean-up matches.
LABEL_WORKER_ID = "pipewell.worker_id"
#: One per attempt: tells an attempt in flight from one that left its container behind.
LABEL_ATTEMPT_ID = "pipewell.attempt_id"
#: A spare's deadline (Unix seconds): unclaimed by then, it has exited, and any
#: service on the engine may remove it (its own may have been killed).
LABEL_DEADLINE = "pipewell.unclaimed_deadline"
#: The name of a spare until an attempt claims it.
SPARE_PREFIX = "pipewell-warm-"
#: Who a node runs as when its image names no user or names root: nobody:nogroup.
UNPRIVILEGED_USER = "65534:65534"
#: Pipewell streams and keeps a node's logs itself: Docker's own copy (json-file) is capped.
DOCKER_LOG_CAPS = {"max-size": "10m", "max-file": "1"}

ImageConfig = dict[str, Any]


@dataclass(frozen=True)
class Image:
    """An image as the engine has it: its ID and Config (User, Entrypoint, Cmd)."""

    name: str
    id: str
    config: ImageConfig


@dataclass(frozen=True)
class Paths:
    """Where each input and output of an attempt is inside its container."""

    inputs: dict[str, str]
    outputs: dict[str, str]


def check_names(task: Task) -> None:
    """Refuse a task whose input, output or flag names are not identifiers.

    Validation refuses such flows; a task also comes from a queue, so the worker
    checks again before any name becomes a path or an environment variable.
    """
    for kind, names in (
        ("input", [i.name for i in task.inputs]),
        ("output", [o.name for o in task.outputs]),
        ("flag", list(task.flags)),
    ):
        for name in names:
            if not is_name(name):
                raise AttemptFailed(
                    f"{kind} name {name[:80]!r} is not a valid name: {NAME_RULE}",
                    retryable=False,
                )


def container_user(image_user: str, *, run_as_root: bool) -> str | None:
    """The user a node's container runs as; None keeps the image's own.

    The container is the sandbox: an image that names no user, or names root,
    runs as nobody unless its NodeDef asks for root (RunAsRoot).
    """
    if run_as_root:
        return "0"
    if image_user.split(":", 1)[0] in ("", "root", "0"):
        return UNPRIVILEGED_USER
    return None


def user_of(image: Image, task: Task) -> str | None:
    return container_user(image.config.get("User") or "", run_as_root=task.run_as_root)


def container_name(task: Task, attempt_id: str) -> str:
    """Whose attempt a container runs, for ``docker ps`` (unique: the attempt id ends it)."""
    return f"pipewell-{task.run_id}-{task.node_id}-{task.attempt}-{attempt_id[:8]}"


def spare_name(attempt_id: str) -> str:
    return f"{SPARE_PREFIX}{attempt_id[:12]}"


def labels(
    worker: str,
    worker_id: str,
    attempt_id: str,
    task: Task | None,
    *,
    deadline: float | None = None,
) -> dict[str, str]:
    """A spare's run is not known yet: its run label is empty, and it carries its deadline."""
    found = {
        LABEL_RUN: task.run_id if task else "",
        LABEL_WORKER: worker,
        LABEL_WORKER_ID: worker_id,
        LABEL_ATTEMPT_ID: attempt_id,
    }
    if task is not None:
        found.update({LABEL_NODE: task.node_id, LABEL_ATTEMPT: str(task.attempt)})
    if deadline is not None:
        found[LABEL_DEADLINE] = str(int(deadline))
    return found


def sandbox(tier: Tier, user: str | None) -> dict[str, Any]:
    """What every node container gets: its tier's limits, no network, no privileges."""
    return dict(
        user=user,
        nano_cpus=tier.cpus * 1_000_000_000,
        mem_limit=tier.memory,
        # Equal to mem_limit: no swap, so the limit is the limit.
        memswap_limit=tier.memory,
        pids_limit=tier.pids,
        network_mode="none",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        privileged=False,
        log_config=docker.types.LogConfig(type="json-file", config=dict(DOCKER_LOG_CAPS)),
        detach=True,
    )


def mounts(directory: Path, *, busybox: Path | None = None) -> dict[str, dict[str, str]]:
    """An attempt directory's ``in`` (read-only) and ``out``; with the gate when ``busybox``."""
    volumes = {
        str(directory / "in"): {"bind": command.INPUT_DIR, "mode": "ro"},
        str(directory / "out"): {"bind": command.OUTPUT_DIR, "mode": "rw"},
    }
    if busybox is not None:
        volumes[str(directory / "gate")] = {"bind": GATE_DIR, "mode": "ro"}
        volumes[str(busybox)] = {"bind": BUSYBOX, "mode": "ro"}
    return volumes


def environment(task: Task, paths: Paths) -> dict[str, str]:
    env = command.node_environment(paths.inputs, paths.outputs, task.flags)
    env.update(
        PIPEWELL_RUN_ID=task.run_id,
        PIPEWELL_NODE_ID=task.node_id,
        PIPEWELL_ATTEMPT=str(task.attempt),
    )
    return env


def node_args(task: Task, paths: Paths) -> list[str] | None:
    """The NodeDef's Exec, expanded; None leaves the image's Cmd."""
    if task.argv is None:
        return None
    return command.expand_argv(
        task.argv, command.placeholder_values(paths.inputs, paths.outputs, task.flags)
    )


def program(task: Task, image: Image, paths: Paths) -> list[str]:
    """What Docker would run: the image's Entrypoint, then the Exec or the image's Cmd."""
    args = node_args(task, paths)
    if args is None:
        args = list(image.config.get("Cmd") or [])
    argv = list(image.config.get("Entrypoint") or []) + args
    if not argv:
        raise AttemptFailed(
            f"image {task.image} names no command and the NodeDef's Exec is empty",
            retryable=False,
        )
    return argv


__all__ = [
    "LABEL_ATTEMPT_ID",
    "LABEL_DEADLINE",
    "LABEL_RUN",
    "LABEL_WORKER",
    "LABEL_WORKER_ID",
    "SPARE_PREFIX",
    "UNPRIVILEGED_USER",
    "Image",
    "Paths",
    "check_names",
    "container_name",
    "container_user",
    "environment",
    "labels",
    "mounts",
    "node_args",
    "program",
    "sandbox",
    "spare_name",
    "user_of",
]
