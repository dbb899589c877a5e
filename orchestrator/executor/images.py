"""A node's image on this worker's engine: inspected, built from its source, or pulled.

A built-in node's image (its source in ``nodes/``) is built here when missing;
any other is pulled, but only from the registries the operator allows, since the
engine connects wherever an image name points.
"""

from __future__ import annotations

import time

import docker
import docker.errors

from orchestrator.config import ExecutorSettings
from orchestrator.executor.errors import AttemptFailed, EngineNotFound, step
from orchestrator.executor.protocol import Emit
from orchestrator.executor.spec import Image
from orchestrator.messages import Task
from orchestrator.models import LogRecord
from orchestrator.node_images import ImageBuildFailed, MissingImageBuilder


def registry_of(image: str) -> str:
    """The registry Docker pulls ``image`` from: its first component when that names a host."""
    first, slash, _ = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first.lower()
    return "docker.io"


def image_id(client: docker.DockerClient, name: str) -> str | None:
    """The ID the engine gives the image ``name`` now; None when it has no such image."""
    try:
        return str(client.images.get(name).id)
    except docker.errors.ImageNotFound:
        return None


class Images:
    def __init__(self, client: docker.DockerClient, settings: ExecutorSettings) -> None:
        self.client = client
        self.settings = settings
        self.builder = MissingImageBuilder(client)

    def get(self, task: Task, emit: Emit) -> Image:
        """The task's image as the engine has it; built or pulled first if it is missing."""
        try:
            attrs = self._inspect(task.image)
        except EngineNotFound:
            attrs = self._build_or_pull(task, emit)
        return Image(task.image, attrs["Id"], attrs.get("Config") or {})

    def _inspect(self, image: str) -> dict:  # type: ignore[type-arg]
        with step(f"inspect image {image}", engine=True):
            return self.client.images.get(image).attrs

    def _build_or_pull(self, task: Task, emit: Emit) -> dict:  # type: ignore[type-arg]
        source = self.builder.source_for(task.image)
        if source is None:
            return self._pull(task.image)

        def say(line: str) -> None:
            emit(LogRecord(message=line, stream="pipewell", attempt=task.attempt))

        say(f"image {task.image} is missing on this worker: building it from its source")
        try:
            self.builder.ensure(source, say)
        except ImageBuildFailed as exc:
            raise AttemptFailed(f"image {task.image} not found locally, and {exc}") from exc
        return self._inspect(task.image)

    def _pull(self, image: str) -> dict:  # type: ignore[type-arg]
        registry = registry_of(image)
        if registry not in self.settings.pull_registries:
            allowed = ", ".join(self.settings.pull_registries) or "none"
            raise AttemptFailed(
                f"image {image} not found locally, and pulling from {registry} is not allowed "
                f"here (executor.pull_registries: {allowed}); load the image on the worker, "
                "or ask the operator to allow its registry",
                retryable=False,
            )
        repository, _, tag = (
            image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
        )
        deadline = time.monotonic() + self.settings.pull_timeout
        with step(f"image {image} not found locally and could not be pulled", engine=True):
            # Streamed so the pull can be abandoned at pull_timeout between progress lines.
            for progress in self.client.api.pull(
                repository, tag=tag or "latest", stream=True, decode=True
            ):
                if "error" in progress:
                    raise AttemptFailed(
                        f"image {image} not found locally and could not be pulled: "
                        f"{progress['error']}"
                    )
                if time.monotonic() > deadline:
                    raise AttemptFailed(
                        f"image {image} not found locally and its pull took over "
                        f"{self.settings.pull_timeout:g} s (executor.pull_timeout)"
                    )
        return self._inspect(image)


__all__ = ["Images", "image_id", "registry_of"]
