"""Where an attempt's files are while it runs, and how they get in and out.

- :class:`MountedWorkspace`: a directory on the host bind-mounted into the
  container (``executor.transfer: mount``, an engine on this machine). Inputs
  are downloaded into it, outputs uploaded from it.
- :class:`ArchiveWorkspace`: copied in and out through the Engine API as tar
  streams (``transfer: archive``, an engine elsewhere).
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import docker

from orchestrator import command
from orchestrator.executor.errors import AttemptFailed, EngineNotFound, step
from orchestrator.executor.gate import prepare_gate
from orchestrator.executor.transfers import (
    CHUNK,
    SNIFF_BYTES,
    OpenInput,
    Transfers,
    check_output_size,
    inside,
)
from orchestrator.messages import OutputInfo, TaskOutput


class Workspace(Protocol):
    @property
    def directory(self) -> Path | None:
        """The host directory mounted into the container, if there is one."""

    def put_inputs(self, inputs: list[OpenInput]) -> None:
        """Every input where the node reads it (``command.input_path``)."""

    def take_output(self, spec: TaskOutput, path: str, limit: int | None) -> OutputInfo:
        """Upload the output the node wrote at ``path`` (inside the container), if within
        ``limit`` bytes."""


class MountedWorkspace:
    def __init__(self, root: Path, transfers: Transfers) -> None:
        self.root = root
        self._transfers = transfers

    @property
    def directory(self) -> Path | None:
        return self.root

    @classmethod
    def create(
        cls, root: Path, attempt_id: str, transfers: Transfers, *, gated: bool
    ) -> MountedWorkspace:
        """A new attempt directory under ``root``: ``in``, ``out`` and, gated, the gate."""
        path = root / attempt_id
        for sub in ("in", "out"):
            (path / sub).mkdir(parents=True)
        # Whatever user the image runs as must be able to write its outputs.
        (path / "out").chmod(0o777)
        (path / "in").chmod(0o755)
        if gated:
            prepare_gate(path / "gate")
        return cls(path, transfers)

    @property
    def gate(self) -> Path:
        return self.root / "gate"

    def put_inputs(self, inputs: list[OpenInput]) -> None:
        for item in inputs:
            self._transfers.download(item, inside(self.root / "in", item.file_name))

    def take_output(self, spec: TaskOutput, path: str, limit: int | None) -> OutputInfo:
        host_path = inside(self.root / "out", path.rsplit("/", 1)[1])
        return self._transfers.upload_file(host_path, path, spec.name, spec.url, limit, spec.type)


class ArchiveWorkspace:
    def __init__(self, client: docker.DockerClient, container_id: str, transfers: Transfers):
        self._api = client.api
        self._container_id = container_id
        self._transfers = transfers

    @property
    def directory(self) -> Path | None:
        return None

    def put_inputs(self, inputs: list[OpenInput]) -> None:
        root = command.CONTAINER_ROOT.lstrip("/")
        entries: list[tuple[str, int, Iterator[bytes] | None]] = [
            (root, 0, None),
            (command.INPUT_DIR.lstrip("/"), 0, None),
            (command.OUTPUT_DIR.lstrip("/"), 0, None),
        ]
        entries += [
            (command.input_path(i.spec.name, i.suffix).lstrip("/"), i.size, i.chunks())
            for i in inputs
        ]
        # One archive, one API call, for the directories and every input.
        names = ", ".join(f"'{i.spec.name}'" for i in inputs) or "none"
        with step(f"copy inputs ({names}) into the container", engine=True):
            self._api.put_archive(self._container_id, "/", _tar_entries(entries))

    def take_output(self, spec: TaskOutput, path: str, limit: int | None) -> OutputInfo:
        what = f"output '{spec.name}': copy out"
        try:
            with step(what, engine=True):
                chunks, _stat = self._api.get_archive(self._container_id, path, chunk_size=CHUNK)
        except EngineNotFound as missing:
            raise AttemptFailed(
                f"output '{spec.name}' missing: the command exited 0 but did not write {path}"
            ) from missing
        with (
            step(what, engine=True),
            tarfile.open(
                fileobj=io.BufferedReader(_IterReader(iter(chunks), what), CHUNK), mode="r|"
            ) as archive,
        ):
            member = archive.next()
            if member is None or not member.isfile():
                raise AttemptFailed(f"output '{spec.name}': {path} is not a regular file")
            check_output_size(spec.name, member.size, limit)
            body = archive.extractfile(member)
            assert body is not None
            return self._transfers.put(
                spec.name, spec.url, body.read(SNIFF_BYTES), body, member.size, spec.type
            )


class _IterReader(io.RawIOBase):
    """A file object over an iterator of byte chunks (Docker's archive stream)."""

    def __init__(self, chunks: Iterator[bytes], what: str) -> None:
        self._chunks = chunks
        self._what = what
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:  # type: ignore[no-untyped-def]
        while not self._buffer:
            # Read while the store's upload sends it: the engine's error must not
            # pass for the store's.
            with step(self._what, engine=True):
                try:
                    self._buffer = next(self._chunks)
                except StopIteration:
                    return 0
        n = min(len(target), len(self._buffer))
        target[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


def _tar_entries(entries: list[tuple[str, int, Iterator[bytes] | None]]) -> Iterator[bytes]:
    """A tar stream of (path, size, chunks) entries; chunks None makes a directory."""
    now = time.time()
    for path, size, chunks in entries:
        info = tarfile.TarInfo(path)
        info.mtime = int(now)
        if chunks is None:
            info.type = tarfile.DIRTYPE
            info.mode = 0o777
            yield info.tobuf(format=tarfile.PAX_FORMAT)
            continue
        info.size = size
        info.mode = 0o644
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        sent = 0
        # Raised inside Docker's request, a store error would pass for the engine's.
        with step(f"{path}: reading it from the store"):
            for chunk in chunks:
                sent += len(chunk)
                if sent > size:
                    raise AttemptFailed(f"{path}: the store sent more bytes than announced")
                yield chunk
        if sent != size:
            raise AttemptFailed(f"{path}: the store sent {sent} of {size} bytes")
        if size % 512:
            yield b"\0" * (512 - size % 512)
    yield b"\0" * 1024


__all__ = ["ArchiveWorkspace", "MountedWorkspace", "Workspace"]
