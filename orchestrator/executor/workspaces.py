"""Where an attempt's files are while it runs, and how they get in and out.

- :class:`MountedWorkspace`: a directory on the host bind-mounted into the
  container (``executor.transfer: mount``, an engine on this machine). Inputs
  are downloaded into it, outputs uploaded from it.
- :class:`ArchiveWorkspace`: copied in and out through the Engine API as tar
  streams (``transfer: archive``, an engine elsewhere).

A collection input is a directory of its items (``/pipewell/in/<Name>/``); a
collection output is a directory made empty before the node starts
(``/pipewell/out/<Name>/``) and sent to the store as a tar of its regular files
after (orchestrator.executor.tars).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tarfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Protocol

import docker

from orchestrator import command
from orchestrator.executor.errors import AttemptFailed, EngineNotFound, step
from orchestrator.executor.gate import prepare_gate
from orchestrator.executor.tars import (
    END_OF_ARCHIVE,
    TAR_TYPE,
    Member,
    exactly,
    padding,
)
from orchestrator.executor.transfers import (
    CHUNK,
    SNIFF_BYTES,
    Input,
    OpenCollection,
    Transfers,
    check_output_size,
    inside,
)
from orchestrator.messages import OutputInfo, TaskOutput


class Workspace(Protocol):
    @property
    def directory(self) -> Path | None:
        """The host directory mounted into the container, if there is one."""

    def prepare(self, inputs: list[Input], outputs: list[TaskOutput]) -> None:
        """Every input where the node reads it (its ``container_path``), and an empty
        directory, writable by the node, for each collection output."""

    def take_output(self, spec: TaskOutput, path: str, limit: int | None) -> OutputInfo:
        """Upload the output the node wrote at ``path`` (inside the container), if within
        ``limit`` bytes: a file, or a collection's directory as a tar."""


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

    def prepare(self, inputs: list[Input], outputs: list[TaskOutput]) -> None:
        for output in outputs:
            if output.collection:
                directory = inside(self.root / "out", output.name)
                with step(f"output '{output.name}': make its directory"):
                    directory.mkdir()
                    # Whatever user the image runs as must be able to write in it.
                    directory.chmod(0o777)
        for opened in inputs:
            if isinstance(opened, OpenCollection):
                self._put_collection(opened)
            else:
                self._transfers.download(opened, inside(self.root / "in", opened.file_name))

    def _put_collection(self, collection: OpenCollection) -> None:
        """Each item under its name (a relative path) in the input's directory."""
        directory = inside(self.root / "in", collection.spec.name)
        made: set[Path] = set()
        with step(f"input '{collection.spec.name}': make its directory"):
            _make_directory(directory)
        for item in collection.opened():
            assert item.item is not None
            # Checked before anything was downloaded (spec.check_item_names): plain
            # parts, none of them '.' or '..', so every path stays in the directory.
            parts = item.item.split("/")
            with step(f"{item.what}: make its directory"):
                for end in range(1, len(parts)):
                    parent = directory.joinpath(*parts[:end])
                    if parent not in made:
                        _make_directory(parent)
                        made.add(parent)
            self._transfers.download(item, directory.joinpath(*parts))

    def clear(self) -> None:
        """Empty ``in`` and ``out`` for the next item of a batch run in the same container.

        Called once the item's processes are gone (the batch's loop kills what its
        program left), so nothing changes them meanwhile. Links are removed, never
        followed. AttemptFailed if anything is left: the next item must not see it.
        """
        for sub in ("in", "out"):
            directory = self.root / sub
            with step(f"empty the attempt's {sub} directory"):
                with os.scandir(directory) as entries:
                    for entry in list(entries):
                        if entry.is_dir(follow_symlinks=False):
                            shutil.rmtree(entry.path)
                        else:
                            os.unlink(entry.path)
                with os.scandir(directory) as entries:
                    if next(entries, None) is not None:
                        raise AttemptFailed(f"the attempt's {sub} directory could not be emptied")

    def take_output(self, spec: TaskOutput, path: str, limit: int | None) -> OutputInfo:
        host_path = inside(self.root / "out", path.rsplit("/", 1)[1])
        if spec.collection:
            return self._transfers.upload_directory(host_path, path, spec.name, spec.url, limit)
        return self._transfers.upload_file(host_path, path, spec.name, spec.url, limit, spec.type)


def _make_directory(path: Path) -> None:
    """A directory of inputs: the node's user reads it, only we write it."""
    path.mkdir()
    path.chmod(0o755)


class ArchiveWorkspace:
    def __init__(self, client: docker.DockerClient, container_id: str, transfers: Transfers):
        self._api = client.api
        self._container_id = container_id
        self._transfers = transfers

    @property
    def directory(self) -> Path | None:
        return None

    def prepare(self, inputs: list[Input], outputs: list[TaskOutput]) -> None:
        directories = [command.CONTAINER_ROOT, command.INPUT_DIR, command.OUTPUT_DIR]
        directories += [command.output_path(o.name, "") for o in outputs if o.collection]
        entries = chain(
            (_Entry(path.lstrip("/"), mode=0o777) for path in directories),
            *(_input_entries(opened) for opened in inputs),
        )
        # One archive, one API call, for the directories and every input (the items
        # of a collection are downloaded one by one as the archive is sent).
        names = ", ".join(f"'{i.spec.name}'" for i in inputs) or "none"
        with step(f"copy inputs ({names}) into the container", engine=True):
            self._api.put_archive(self._container_id, "/", _tar_entries(entries))

    def take_output(self, spec: TaskOutput, path: str, limit: int | None) -> OutputInfo:
        if spec.collection:
            return self._take_directory(spec, path, limit)
        what = f"output '{spec.name}': copy out"
        with self._archive(spec.name, path) as archive, step(what, engine=True):
            member = archive.next()
            if member is None or not member.isfile():
                raise AttemptFailed(f"output '{spec.name}': {path} is not a regular file")
            check_output_size(spec.name, member.size, limit)
            body = archive.extractfile(member)
            assert body is not None
            return self._transfers.put(
                spec.name, spec.url, body.read(SNIFF_BYTES), body, member.size, spec.type
            )

    @contextlib.contextmanager
    def _archive(self, name: str, path: str) -> Iterator[tarfile.TarFile]:
        """What Docker archives of ``path`` (output ``name``'s), read as it comes."""
        what = f"output '{name}': copy out"
        try:
            with step(what, engine=True):
                chunks, _stat = self._api.get_archive(self._container_id, path, chunk_size=CHUNK)
        except EngineNotFound as missing:
            raise AttemptFailed(
                f"output '{name}' missing: the command exited 0 but did not write {path}"
            ) from missing
        with step(what, engine=True):
            archive = tarfile.open(
                fileobj=io.BufferedReader(_IterReader(iter(chunks), what), CHUNK), mode="r|"
            )
        with archive:
            yield archive

    def _take_directory(self, spec: TaskOutput, path: str, limit: int | None) -> OutputInfo:
        """A collection output: Docker's archive of its directory read twice, once to
        list its files (the tar's size must be known before it is sent), once to send."""
        what = f"output '{spec.name}': copy out"
        members: list[Member] = []
        size = len(END_OF_ARCHIVE)
        with self._archive(spec.name, path) as archive, step(what, engine=True):
            top = archive.next()
            if top is None or not top.isdir():
                raise AttemptFailed(f"output '{spec.name}': {path} is not a directory")
            files = _ArchivedFiles(top.name)
            while (entry := archive.next()) is not None:
                member = files.member(entry)
                if member is not None:
                    members.append(member)
                    size += member.stored_size
                    # Refused as soon as it is over: a node may write a million files.
                    check_output_size(spec.name, size, limit, at_least=True)
        chunks = self._directory_tar(spec.name, path, members)
        return self._transfers.put_stream(spec.name, spec.url, chunks, size, TAR_TYPE)

    def _directory_tar(self, name: str, path: str, members: list[Member]) -> Iterator[bytes]:
        """The tar of the directory at ``path``, as listed in ``members``."""
        what = f"output '{name}': copy out"
        listed = iter(members)
        with self._archive(name, path) as archive:
            with step(what, engine=True):
                top = archive.next()
            assert top is not None
            files = _ArchivedFiles(top.name)
            while True:
                with step(what, engine=True):
                    entry = archive.next()
                if entry is None:
                    break
                found = files.member(entry)
                if found is None:
                    continue
                if found != next(listed, None):
                    raise AttemptFailed(f"output '{name}': {found.name} changed while it was sent")
                yield found.header()
                if entry.islnk():
                    # Docker sends a second name of a file as a link to the first:
                    # its bytes are fetched again, each item is a file of its own.
                    target = f"{path.rsplit('/', 1)[0]}/{entry.linkname}"
                    yield from self._file_bytes(name, target, found)
                else:
                    with step(what, engine=True):
                        body = archive.extractfile(entry)
                    assert body is not None
                    yield from exactly(body, found, name)
                yield padding(found.size)
        if next(listed, None) is not None:
            raise AttemptFailed(f"output '{name}': a file went away while it was sent")
        yield END_OF_ARCHIVE

    def _file_bytes(self, name: str, path: str, member: Member) -> Iterator[bytes]:
        with self._archive(name, path) as archive:
            with step(f"output '{name}': copy out", engine=True):
                entry = archive.next()
                if entry is None or not entry.isfile() or entry.size != member.size:
                    raise AttemptFailed(f"output '{name}': {member.name} changed while it was sent")
                body = archive.extractfile(entry)
            assert body is not None
            yield from exactly(body, member, name)


class _ArchivedFiles:
    """The regular files of Docker's archive of a directory, as tar members of our own.

    Named relative to the directory (Docker names them after it); links, devices
    and FIFOs skipped, except a hard link, which is a second name of a regular file.
    """

    def __init__(self, top: str) -> None:
        self._prefix = f"{top}/"
        self._sizes: dict[str, int] = {}

    def member(self, entry: tarfile.TarInfo) -> Member | None:
        if not entry.name.startswith(self._prefix):
            return None
        if entry.isfile():
            size = self._sizes[entry.name] = entry.size
        elif entry.islnk() and entry.linkname in self._sizes:
            size = self._sizes[entry.linkname]
        else:
            return None
        return Member(entry.name[len(self._prefix) :], size, int(entry.mtime))


@dataclass(frozen=True)
class _Entry:
    """A member of the archive put into a container: a directory, or a file's bytes."""

    path: str
    size: int = 0
    chunks: Iterator[bytes] | None = None  # None: a directory
    mode: int = 0o755


def _input_entries(opened: Input) -> Iterator[_Entry]:
    """An input's members: its file, or its directory and each item, opened in turn."""
    if not isinstance(opened, OpenCollection):
        yield _Entry(opened.container_path.lstrip("/"), opened.size, opened.chunks(), 0o644)
        return
    directory = opened.container_path.lstrip("/")
    yield _Entry(directory)
    made: set[str] = set()
    for item in opened.opened():
        assert item.item is not None
        # Checked before anything was downloaded (spec.check_item_names): plain parts.
        parts = item.item.split("/")
        for end in range(1, len(parts)):
            parent = "/".join(parts[:end])
            if parent not in made:
                made.add(parent)
                yield _Entry(f"{directory}/{parent}")
        yield _Entry(f"{directory}/{item.item}", item.size, item.chunks(), 0o644)


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


def _tar_entries(entries: Iterable[_Entry]) -> Iterator[bytes]:
    """A tar stream of entries, each asked for once the one before is sent."""
    now = time.time()
    for entry in entries:
        path, size, chunks = entry.path, entry.size, entry.chunks
        info = tarfile.TarInfo(path)
        info.mtime = int(now)
        info.mode = entry.mode
        if chunks is None:
            info.type = tarfile.DIRTYPE
            yield info.tobuf(format=tarfile.PAX_FORMAT)
            continue
        info.size = size
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
        yield padding(size)
    yield END_OF_ARCHIVE


__all__ = ["ArchiveWorkspace", "MountedWorkspace", "Workspace"]
