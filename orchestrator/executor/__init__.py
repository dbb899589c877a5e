"""The worker's executor: runs each attempt of a node as a Docker container.

The worker depends on the :class:`Executor` protocol alone (``protocol``, a
leaf). :class:`DockerExecutor` implements it on a real engine from one module
per responsibility:

- ``spec``: what a node's container is (sandbox, user, labels, mounts, env, argv)
- ``images``: the node's image, inspected, built from its source or pulled
- ``transfers``: inputs from and outputs to the stores, streamed over HTTP
- ``tars``: a collection output's directory as the tar its upload sends
- ``workspaces``: where an attempt's files are (mounted, or copied through the API)
- ``logs``: the container's output cut into live log lines
- ``housekeeping``: whose containers are whose; kills, leftovers, expired spares
- ``gate`` and ``warm_pool``: containers started ahead of their attempt
- ``plain`` and ``gated``: the two launchers, behind ``launcher.Launcher``
- ``errors``: how an attempt fails; Docker's errors translated in one place
"""

from orchestrator.executor.docker_executor import DockerExecutor, connect_docker
from orchestrator.executor.errors import AttemptFailed, EngineUnreachable
from orchestrator.executor.images import image_id, registry_of
from orchestrator.executor.protocol import (
    BeginItem,
    Cleanup,
    Emit,
    EndItem,
    Executor,
    LaunchMode,
)
from orchestrator.executor.spec import container_user
from orchestrator.executor.transfers import input_type_ok, inside

__all__ = [
    "AttemptFailed",
    "BeginItem",
    "Cleanup",
    "DockerExecutor",
    "Emit",
    "EndItem",
    "EngineUnreachable",
    "Executor",
    "LaunchMode",
    "connect_docker",
    "container_user",
    "input_type_ok",
    "image_id",
    "inside",
    "registry_of",
]
