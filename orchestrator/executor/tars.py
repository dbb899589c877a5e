"""Collection outputs as tar streams, made while they are sent, their size known first.

A collection output is a directory the node wrote; the store takes it as one
uncompressed POSIX (pax) tar of the directory's regular files, named by their
path in it, which the service expands into items. The files are listed first
and every member's header is made from the listing, so the tar's exact size is
known before its first byte is sent: the store is told its Content-Length (a
presigned S3 PUT needs one) and the node's output limit is checked before a
byte is copied. The data is read in chunks as the upload asks for it, never
held whole.

The directory was written by the node: nothing in it is followed. Symbolic
links, devices, FIFOs and sockets are skipped, and every directory and file is
opened relative to its parent's descriptor, without following a link.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from orchestrator.executor.errors import AttemptFailed, step

TAR_TYPE = "application/x-tar"
BLOCK = tarfile.BLOCKSIZE
#: Two zero blocks end a tar.
END_OF_ARCHIVE = bytes(2 * BLOCK)
CHUNK = 1024 * 1024
#: Directories nested deeper than this are refused: each level being walked holds a
#: file descriptor, and no item name could be that long anyway.
MAX_DEPTH = 100


@dataclass(frozen=True)
class Member:
    """A regular file of a collection output, as its tar will hold it."""

    #: Its path relative to the output's directory, parts joined by '/'.
    name: str
    size: int
    mtime: int

    def header(self) -> bytes:
        """Its pax header: the same bytes each time, so sizes counted before are kept."""
        info = tarfile.TarInfo(self.name)
        info.type = tarfile.REGTYPE
        info.size = self.size
        info.mtime = self.mtime
        info.mode = 0o644
        # A name that is not UTF-8 goes as its bytes (pax hdrcharset=BINARY): the
        # service decides what item it becomes.
        return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")

    @property
    def stored_size(self) -> int:
        """Bytes it takes in the tar: its header, its data, the data's padding."""
        return len(self.header()) + self.size + len(padding(self.size))


def padding(size: int) -> bytes:
    """Zeros that fill a member's last block."""
    return bytes(-size % BLOCK)


def tar_size(members: list[Member]) -> int:
    return sum(member.stored_size for member in members) + len(END_OF_ARCHIVE)


# ------------------------------------------------------------ a mounted directory


def open_directory(path: os.PathLike[str] | str, name: str, container_path: str) -> int:
    """A descriptor of an output's directory on the host; the caller closes it.

    Missing, it is the failure of a missing output file; a link or a file in its
    place is not followed.
    """
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError as exc:
        raise AttemptFailed(
            f"output '{name}' missing: the command exited 0 but did not write {container_path}"
        ) from exc
    except OSError as exc:  # ENOTDIR, ELOOP: something else is in its place
        raise AttemptFailed(f"output '{name}': {container_path} is not a directory") from exc


@dataclass(frozen=True)
class _Found:
    """A regular file found by the walk: valid until the walk goes on."""

    relative: str
    directory_fd: int
    file_name: str
    status: os.stat_result


def _regular_files(
    directory_fd: int, name: str, prefix: str = "", depth: int = 0
) -> Iterator[_Found]:
    """Every regular file beneath ``directory_fd``, in name order, directories descended
    where they come; links and special files skipped, never followed."""
    if depth > MAX_DEPTH:
        raise AttemptFailed(
            f"output '{name}': directories nested over {MAX_DEPTH} deep", retryable=False
        )
    with os.scandir(directory_fd) as listing:
        entries = sorted(listing, key=lambda entry: entry.name)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            try:
                child = os.open(
                    entry.name,
                    os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                    dir_fd=directory_fd,
                )
            except OSError as exc:
                raise AttemptFailed(
                    f"output '{name}': {prefix}{entry.name} changed while it was read"
                ) from exc
            try:
                yield from _regular_files(child, name, f"{prefix}{entry.name}/", depth + 1)
            finally:
                os.close(child)
        elif entry.is_file(follow_symlinks=False):
            found = entry.stat(follow_symlinks=False)
            yield _Found(f"{prefix}{entry.name}", directory_fd, entry.name, found)


def directory_members(directory_fd: int, name: str) -> Iterator[Member]:
    """The members of the tar of an output's directory (opened by :func:`open_directory`)."""
    walk = _regular_files(directory_fd, name)
    try:
        while True:
            with step(f"output '{name}': list its directory"):
                found = next(walk, None)
            if found is None:
                return
            yield Member(found.relative, found.status.st_size, int(found.status.st_mtime))
    finally:
        walk.close()


def directory_tar(directory_fd: int, name: str, members: list[Member]) -> Iterator[bytes]:
    """The tar of an output's directory, as listed by :func:`directory_members`.

    The directory is walked again as it is sent: a file that is not the one
    listed (another size, another kind, gone) fails the upload, since the size
    the store was told would be wrong.
    """
    walk = _regular_files(directory_fd, name)
    try:
        for member in members:
            changed = AttemptFailed(f"output '{name}': {member.name} changed while it was sent")
            with step(f"output '{name}': read {member.name}"):
                found = next(walk, None)
                if found is None or (found.relative, found.status.st_size) != (
                    member.name,
                    member.size,
                ):
                    raise changed
                fd = os.open(
                    found.file_name,
                    os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK,
                    dir_fd=found.directory_fd,
                )
            with os.fdopen(fd, "rb") as handle:
                opened = os.fstat(handle.fileno())
                if not stat.S_ISREG(opened.st_mode) or not os.path.samestat(opened, found.status):
                    raise changed
                yield member.header()
                yield from exactly(handle, member, name)
            yield padding(member.size)
        with step(f"output '{name}': list its directory"):
            if next(walk, None) is not None:
                raise AttemptFailed(f"output '{name}': a file appeared while it was sent")
    finally:
        walk.close()  # its directories' descriptors, also when the upload stops half-way
    yield END_OF_ARCHIVE


def exactly(handle: BinaryIO, member: Member, name: str) -> Iterator[bytes]:
    """``member.size`` bytes of ``handle`` (output ``name``'s) in chunks; fewer fail the upload."""
    left = member.size
    while left:
        with step(f"output '{name}': read {member.name}"):
            chunk = handle.read(min(CHUNK, left))
        if not chunk:
            raise AttemptFailed(f"output '{name}': {member.name} shrank while it was sent")
        left -= len(chunk)
        yield chunk


__all__ = [
    "END_OF_ARCHIVE",
    "MAX_DEPTH",
    "TAR_TYPE",
    "Member",
    "directory_members",
    "directory_tar",
    "exactly",
    "open_directory",
    "padding",
    "tar_size",
]
