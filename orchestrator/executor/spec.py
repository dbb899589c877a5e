"""What a node's container is: its sandbox, user, labels, name, mounts, environment and argv.

Pure: nothing here talks to Docker. Both launchers build their containers from
these functions, so a gated container and a plain one differ only in how their
program starts.
"""

from __future__ import annotations

import re
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
#: The item of a mapped node an attempt is for (absent on a node's own attempt).
LABEL_ITEM = "pipewell.item"
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

#: An item of a collection input: a relative path of plain parts.
_ITEM_PART = re.compile(r"[A-Za-z0-9._-]+")
ITEM_NAME_RULE = (
    "a relative path of parts made of letters, digits, '.', '_' and '-', joined by '/' "
    "(no empty, '.' or '..' part)"
)
#: The longest file name a Linux file system takes: a longer part could never be written.
MAX_ITEM_PART = 255


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
    """Refuse a task whose input, output or flag names are not identifiers, or whose
    collection inputs name items that are not safe relative paths.

    Validation refuses such flows; a task also comes from a queue, so the worker
    checks again before any name becomes a path or an environment variable, and
    before anything is downloaded.
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
    for collection in task.inputs:
        if collection.items is not None:
            check_item_names(collection.name, [item.name for item in collection.items])


def is_item_name(name: str) -> bool:
    """Whether ``name`` is an item name of :data:`ITEM_NAME_RULE`."""
    parts = name.split("/")
    return all(
        part not in (".", "..") and len(part) <= MAX_ITEM_PART and _ITEM_PART.fullmatch(part)
        for part in parts
    )


def check_item_names(input_name: str, names: list[str]) -> None:
    """Refuse a collection input whose items could not each be a file of their own.

    Item names become paths under the input's directory: nothing may climb out of
    it, and no two items may want one place (the same name twice, or ``a`` as a
    file and ``a/b`` needing it as a directory).
    """
    seen: set[str] = set()
    directories: set[str] = set()
    for name in names:
        if not is_item_name(name):
            raise AttemptFailed(
                f"input '{input_name}': item name {name[:80]!r} is not valid: {ITEM_NAME_RULE}",
                retryable=False,
            )
        if name in seen:
            raise AttemptFailed(
                f"input '{input_name}': item {name[:80]!r} is listed twice", retryable=False
            )
        seen.add(name)
        parts = name.split("/")
        directories.update("/".join(parts[:end]) for end in range(1, len(parts)))
    clashes = sorted(seen & directories)
    if clashes:
        raise AttemptFailed(
            f"input '{input_name}': item {clashes[0][:80]!r} is a file, and other items are "
            "in a directory of that name",
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
        if task.item is not None:
            found[LABEL_ITEM] = task.item
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
    "ITEM_NAME_RULE",
    "LABEL_ATTEMPT_ID",
    "LABEL_DEADLINE",
    "LABEL_ITEM",
    "LABEL_RUN",
    "LABEL_WORKER",
    "LABEL_WORKER_ID",
    "SPARE_PREFIX",
    "UNPRIVILEGED_USER",
    "Image",
    "Paths",
    "check_item_names",
    "check_names",
    "container_name",
    "container_user",
    "environment",
    "is_item_name",
    "labels",
    "mounts",
    "node_args",
    "program",
    "sandbox",
    "spare_name",
    "user_of",
]
