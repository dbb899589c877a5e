"""The built-in nodes' images, built from their sources in ``nodes/`` without a registry.

``pipewell/<name>:latest`` is built from ``nodes/<name>/`` (its Dockerfile
``FROM`` the shared base that ``make setup`` makes). Each image carries the
label ``pipewell.source-hash``: the hash of its folder and of the image ID of
each ``FROM``; an image whose label matches its sources is up to date. One
implementation serves ``make setup`` (through ``pipewell nodes build``), the
CLI, and a worker that meets a built-in image missing on its host.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import requests

NODES_DIR = Path(__file__).resolve().parent.parent / "nodes"
HASH_LABEL = "pipewell.source-hash"
PUBLISHER = "pipewell"
#: Seconds one image's build may take (apt-get inside it included).
BUILD_TIMEOUT = 900.0

Say = Callable[[str], None]


class ImageBuildFailed(Exception):
    """A node image could not be built; the message says why, with the build's last words."""


@dataclass(frozen=True)
class NodeSource:
    name: str
    directory: Path

    @property
    def image(self) -> str:
        return f"{PUBLISHER}/{self.name}:latest"


def node_sources(nodes_dir: Path = NODES_DIR) -> dict[str, NodeSource]:
    """Every ``nodes/<name>/Dockerfile``, by name."""
    if not nodes_dir.is_dir():
        return {}
    return {
        d.name: NodeSource(d.name, d)
        for d in sorted(nodes_dir.iterdir())
        if (d / "Dockerfile").is_file()
    }


def source_for(image: str, nodes_dir: Path = NODES_DIR) -> NodeSource | None:
    """The source of a built-in image name (``pipewell/<name>[:latest]``), if it is here."""
    match = re.fullmatch(rf"{PUBLISHER}/([a-z0-9][a-z0-9._-]*)(?::latest)?", image)
    if match is None:
        return None
    return node_sources(nodes_dir).get(match.group(1))


def source_hash(client: docker.DockerClient, source: NodeSource) -> str:
    """What the image is built from: its files (tests aside) and each FROM's image ID."""
    digest = hashlib.sha256()
    for path in sorted(source.directory.rglob("*")):
        relative = path.relative_to(source.directory).as_posix()
        if not path.is_file() or _ignored(relative):
            continue
        digest.update(f"{relative} {path.stat().st_mode & 0o777:o} ".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    for base in bases_of(source):
        digest.update(f"FROM {base} {_image_id(client, base)}".encode())
    return digest.hexdigest()


def bases_of(source: NodeSource) -> list[str]:
    """The images the Dockerfile builds FROM (earlier stages of its own aside)."""
    stages: set[str] = set()
    bases: list[str] = []
    dockerfile = (source.directory / "Dockerfile").read_text()
    for base, stage in re.findall(
        r"(?im)^\s*FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", dockerfile
    ):
        if base.lower() not in stages:
            bases.append(base)
        if stage:
            stages.add(stage.lower())
    return bases


def _ignored(relative: str) -> bool:
    name = relative.rsplit("/", 1)[-1]
    return "__pycache__" in relative or name.endswith(".pyc") or name.startswith("test_")


def _image_id(client: docker.DockerClient, image: str) -> str:
    try:
        return client.images.get(image).id
    except docker.errors.ImageNotFound:
        return "missing"


def image_state(client: docker.DockerClient, source: NodeSource) -> str:
    """``up to date``, ``outdated`` (its sources changed) or ``missing``."""
    try:
        labels = client.images.get(source.image).labels or {}
    except docker.errors.ImageNotFound:
        return "missing"
    return "up to date" if labels.get(HASH_LABEL) == source_hash(client, source) else "outdated"


def build(
    client: docker.DockerClient,
    source: NodeSource,
    say: Say,
    timeout: float = BUILD_TIMEOUT,
) -> bool:
    """Build the image unless it is up to date; whether it was built."""
    wanted = source_hash(client, source)
    replaced = None
    try:
        current = client.images.get(source.image)
        if (current.labels or {}).get(HASH_LABEL) == wanted:
            return False
        replaced = current.id
    except docker.errors.ImageNotFound:
        pass
    missing = [base for base in bases_of(source) if _image_id(client, base) == "missing"]
    if missing:
        # The engine would pull it from a registry, where anyone may own that name.
        raise ImageBuildFailed(
            f"building {source.image} needs {', '.join(missing)}, which is not on this host "
            "(make setup builds it; a base is never pulled from a registry)"
        )
    say(f"building {source.image} from {source.directory}")
    started = time.monotonic()
    last: list[str] = []
    try:
        for chunk in client.api.build(
            path=str(source.directory),
            tag=source.image,
            labels={HASH_LABEL: wanted},
            rm=True,
            forcerm=True,
            decode=True,
        ):
            if "error" in chunk:
                raise ImageBuildFailed(
                    f"building {source.image} failed: {chunk['error'].strip()}" + _tail(last)
                )
            line = str(chunk.get("stream", "")).strip()
            if line:
                last = [*last[-4:], line]
            if time.monotonic() - started > timeout:
                raise ImageBuildFailed(
                    f"building {source.image} took over {timeout:g} s" + _tail(last)
                )
    except docker.errors.APIError as exc:
        raise ImageBuildFailed(f"building {source.image} failed: {exc.explanation or exc}") from exc
    except requests.RequestException as exc:
        raise ImageBuildFailed(
            f"building {source.image}: the Docker engine did not answer ({type(exc).__name__})"
        ) from exc
    say(f"built {source.image} in {time.monotonic() - started:.1f} s")
    if replaced is not None and replaced != _image_id(client, source.image):
        # The old image goes unless a container still uses it (then the engine refuses).
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(replaced)
    return True


def _tail(lines: list[str]) -> str:
    return ("; last output: " + " | ".join(lines)) if lines else ""


def build_all(
    client: docker.DockerClient,
    sources: Iterable[NodeSource],
    say: Say,
    parallel: int = 2,
) -> list[str]:
    """Build every outdated or missing image, ``parallel`` at once; the failures' messages."""
    failures: list[str] = []

    def one(source: NodeSource) -> None:
        try:
            build(client, source, say)
        except ImageBuildFailed as exc:
            failures.append(str(exc))

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        list(pool.map(one, sources))
    return failures


class MissingImageBuilder:
    """Builds a built-in image a worker's engine lacks, once, however many attempts ask."""

    def __init__(self, client: docker.DockerClient, nodes_dir: Path = NODES_DIR) -> None:
        self.client = client
        self.nodes_dir = nodes_dir
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def source_for(self, image: str) -> NodeSource | None:
        return source_for(image, self.nodes_dir)

    def ensure(self, source: NodeSource, say: Say) -> None:
        """Build it unless another attempt did meanwhile; ImageBuildFailed says why not."""
        with self._guard:
            lock = self._locks.setdefault(source.image, threading.Lock())
        with lock:
            try:
                self.client.images.get(source.image)
                return
            except docker.errors.ImageNotFound:
                pass
            build(self.client, source, say)


__all__ = [
    "HASH_LABEL",
    "NODES_DIR",
    "ImageBuildFailed",
    "MissingImageBuilder",
    "NodeSource",
    "build",
    "build_all",
    "image_state",
    "node_sources",
    "source_for",
]
