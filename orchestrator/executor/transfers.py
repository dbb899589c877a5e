"""Bytes between the stores and an attempt: presigned GETs of inputs, PUTs of outputs.

Streamed both ways (no whole file in memory); each input's type is sniffed from
its first bytes and checked against what the node accepts before the node runs,
and so is each item of a collection input. Every PUT hashes its bytes (sha256)
as they are sent.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from orchestrator import command
from orchestrator.config import ExecutorSettings
from orchestrator.executor.errors import AttemptFailed, step
from orchestrator.executor.tars import (
    END_OF_ARCHIVE,
    TAR_TYPE,
    Member,
    directory_members,
    directory_tar,
    open_directory,
)
from orchestrator.messages import ItemURL, OutputInfo, TaskInput
from orchestrator.mime import extension_for, matches, sniff

CHUNK = 1024 * 1024
SNIFF_BYTES = 8192

# Families the sniffer recognises: an unrecognised binary cannot be one of them.
_SNIFFABLE_PREFIXES = ("image/", "video/", "audio/", "font/", "text/")


def input_type_ok(actual: str, accepted: list[str] | None) -> bool:
    """Whether a sniffed type satisfies an input's ``Type`` list.

    Sniffing cannot tell CSV from plain text, nor name every binary format, so
    plain text satisfies any ``text/*`` type and an unrecognised binary is only
    refused when every accepted type is one the sniffer would have recognised.
    """
    if matches(actual, accepted):
        return True
    assert accepted is not None
    if actual == "text/plain" and any(t.lower().startswith("text/") for t in accepted):
        return True
    if actual == "application/octet-stream":
        return not all(
            t.lower().startswith(_SNIFFABLE_PREFIXES) or t.lower() == "application/json"
            for t in accepted
        )
    return False


def output_type(sniffed: str, declared: str | None) -> str:
    """What an output is stored and served as: the one type its NodeDef declares,
    unless its bytes contradict it (the rule an input is held to), else the sniffed one.

    The sniffer names plain text where a node writes CSV, YAML or Markdown: the
    node's word is the better one then, and a client saves ``.csv``, not ``.txt``.
    """
    if declared is not None and input_type_ok(sniffed, [declared]):
        return declared
    return sniffed


def inside(directory: Path, file_name: str) -> Path:
    """``directory / file_name``, refused unless it is a plain file name in that directory."""
    if not file_name or file_name in (".", "..") or "/" in file_name or "\0" in file_name:
        raise AttemptFailed(
            f"refusing the file name {file_name[:80]!r}: it would leave {directory}",
            retryable=False,
        )
    return directory / file_name


def check_output_size(name: str, size: int, limit: int | None, *, at_least: bool = False) -> None:
    """Refuse an output over its node's limit before a byte of it is copied.

    A sparse file costs its node nothing to write and the store its whole size.
    ``at_least``: ``size`` is what was counted so far, of an output still being listed.
    """
    if limit is not None and size > limit:
        measure = "at least " if at_least else ""
        raise AttemptFailed(
            f"output '{name}' is {measure}{_size(size)}, over this node's limit of {_size(limit)} "
            "(its NodeDef's MaxOutputBytes, else 4 times its tier's memory, at most the "
            "operator's executor.max_output_bytes); it was not stored",
            retryable=False,
        )


def _size(count: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


@dataclass
class OpenInput:
    """An input (or one item of a collection input) whose download has begun: its size,
    first bytes and sniffed type known."""

    spec: TaskInput
    response: requests.Response
    size: int
    head: bytes
    content_type: str
    suffix: str
    #: The item of the collection input this is; None for a file input.
    item: str | None = None

    @property
    def what(self) -> str:
        """How messages name it."""
        return _input_label(self.spec.name, self.item)

    @property
    def file_name(self) -> str:
        return f"{self.spec.name}{self.suffix}"

    @property
    def container_path(self) -> str:
        """Where the node reads it (``${Name}``, ``INPUT_<NAME>``)."""
        return command.input_path(self.spec.name, self.suffix)

    def chunks(self) -> Iterator[bytes]:
        yield self.head
        yield from self.response.iter_content(CHUNK)

    def close(self) -> None:
        self.response.close()


class OpenCollection:
    """A collection input (a gather): a directory of items, each opened as it is put there.

    Opened one at a time, not all before the launch as file inputs are: a thousand
    downloads begun at once would hold a thousand connections. Each item's type is
    checked as it is opened, before a byte of it is kept.
    """

    def __init__(self, spec: TaskInput, transfers: Transfers) -> None:
        assert spec.items is not None, "a collection input lists its items"
        self.spec = spec
        self.items: list[ItemURL] = spec.items
        self._transfers = transfers
        self._open: OpenInput | None = None

    @property
    def container_path(self) -> str:
        """The directory the node reads its items in (``${Name}``, ``INPUT_<NAME>``)."""
        return command.input_path(self.spec.name, "")

    def opened(self) -> Iterator[OpenInput]:
        """Each item, its download begun; closed once the caller asks for the next."""
        for item in self.items:
            self._open = self._transfers.open_item(self.spec, item)
            try:
                yield self._open
            finally:
                self.close()

    def close(self) -> None:
        if self._open is not None:
            self._open.close()
            self._open = None


#: An input as the workspaces put it in place.
Input = OpenInput | OpenCollection


def _input_label(name: str, item: str | None) -> str:
    return f"input '{name}'" if item is None else f"input '{name}' item '{item}'"


class HashedBody:
    """An upload's body: chunks sent as the connection asks for them, hashed and counted.

    Its length is announced, so requests sends Content-Length (a presigned S3 PUT
    needs one); a source that ends before it fails the upload instead of leaving the
    store waiting for bytes that never come, and one that goes on past it fails too.
    """

    def __init__(self, chunks: Iterator[bytes], size: int, what: str) -> None:
        self._chunks = chunks
        self._size = size
        self._what = what
        self._hash = hashlib.sha256()
        self.sent = 0
        self._ended = False

    def __len__(self) -> int:
        return self._size

    def read(self, n: int = -1) -> bytes:
        while self.sent < self._size:
            chunk = next(self._chunks, None)
            if chunk is None:
                raise AttemptFailed(
                    f"{self._what}: only {self.sent} of the {self._size} bytes announced were "
                    "there to send"
                )
            if chunk:
                self.sent += len(chunk)
                if self.sent > self._size:
                    raise AttemptFailed(f"{self._what}: more than the {self._size} bytes announced")
                self._hash.update(chunk)
                return chunk
        if not self._ended:
            # Run the source to its end: its last checks come after its last byte.
            self._ended = True
            if any(self._chunks):
                raise AttemptFailed(f"{self._what}: more than the {self._size} bytes announced")
        return b""

    def sha256(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> None:
        """Let the source go (its files, its connection), also when the upload stopped."""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


class Transfers:
    """HTTP to the stores, one session per thread (an attempt holds its thread)."""

    def __init__(self, settings: ExecutorSettings) -> None:
        self.settings = settings
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            # What the environment says of a URL (proxies, no_proxy, a CA bundle, netrc)
            # is read once per origin (_environment), not at every request: requests
            # reads the whole environment twice per request, a third of its own cost
            # per item of a batch.
            session.trust_env = False
            self._local.environment = {}
            # Retry only failed connects (nothing sent yet): the service may still be
            # starting up. About 3 s in all: a service shutting down must not hold
            # its last attempts for long.
            retry = Retry(
                total=None,
                connect=5,
                read=0,
                status=0,
                other=0,
                backoff_factor=0.1,
                allowed_methods=None,
            )
            session.mount("http://", HTTPAdapter(max_retries=retry))
            session.mount("https://", HTTPAdapter(max_retries=retry))
        return session

    def _environment(self, url: str) -> dict[str, Any]:
        """The settings the environment gives requests to ``url`` (as ``trust_env`` would
        have them: proxies, verify, cert, auth from netrc), once per origin and thread."""
        self._session()
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        known: dict[str, dict[str, Any]] = self._local.environment
        found = known.get(origin)
        if found is None:
            reader = requests.Session()  # trust_env, as requests has it by default
            try:
                merged = reader.merge_environment_settings(origin, {}, None, None, None)
            finally:
                reader.close()
            found = known[origin] = {
                "proxies": merged["proxies"],
                "verify": merged["verify"],
                "cert": merged["cert"],
                "auth": requests.utils.get_netrc_auth(origin),
            }
        return found

    def open_input(self, spec: TaskInput) -> Input:
        """Start an input's download and check its type; the caller closes it.

        A collection input downloads nothing yet: its items are opened one by one
        as they are put in place (:meth:`OpenCollection.opened`).
        """
        if spec.items is not None:
            return OpenCollection(spec, self)
        return self._open(spec, spec.url, None)

    def open_item(self, spec: TaskInput, item: ItemURL) -> OpenInput:
        """Start the download of one item of a collection input and check its type."""
        return self._open(spec, item.url, item.name)

    def _open(self, spec: TaskInput, url: str, item: str | None) -> OpenInput:
        what = _input_label(spec.name, item)
        with step(f"{what}: download"):
            response = self._session().get(
                url,
                stream=True,
                timeout=(10, self.settings.transfer_timeout),
                **self._environment(url),
            )
            if response.status_code != 200:
                response.close()
                raise AttemptFailed(f"{what}: the store answered HTTP {response.status_code}")
            length = response.headers.get("Content-Length")
            if length is None:
                response.close()
                raise AttemptFailed(f"{what}: the store sent no Content-Length")
            size = int(length)
            head = response.raw.read(min(size, SNIFF_BYTES), decode_content=True)
        content_type = sniff(head)
        if not input_type_ok(content_type, spec.types):
            response.close()
            raise AttemptFailed(
                f"{what} is {content_type}, but this node accepts {', '.join(spec.types or [])}",
                retryable=False,
            )
        # An item keeps its own name: only a file input gets an extension from its type.
        suffix = extension_for(content_type) if item is None else ""
        return OpenInput(spec, response, size, head, content_type, suffix, item)

    def download(self, item: OpenInput, target: Path) -> None:
        """The rest of an input into ``target``, every announced byte or a failure."""
        with step(f"{item.what}: download"), target.open("wb") as handle:
            received = 0
            for chunk in item.chunks():
                received += len(chunk)
                handle.write(chunk)
            if received != item.size:
                raise AttemptFailed(f"{item.what}: the store sent {received} of {item.size} bytes")
        target.chmod(0o644)

    def upload_file(
        self,
        host_path: Path,
        path: str,
        name: str,
        url: str,
        limit: int | None,
        declared: str | None = None,
    ) -> OutputInfo:
        """PUT an output the container wrote into its mounted directory.

        The container controls that directory: a symlink, a FIFO or a directory
        in the output's place must not make us read anything else, or block.
        """
        try:
            fd = os.open(host_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError as exc:
            raise AttemptFailed(
                f"output '{name}' missing: the command exited 0 but did not write {path}"
            ) from exc
        except OSError as exc:
            raise AttemptFailed(f"output '{name}': {path} is not a regular file") from exc
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise AttemptFailed(f"output '{name}': {path} is not a regular file")
        with os.fdopen(fd, "rb") as handle:
            check_output_size(name, info.st_size, limit)
            head = handle.read(SNIFF_BYTES)
            return self.put(name, url, head, handle, info.st_size, declared)

    def upload_directory(
        self, host_path: Path, path: str, name: str, url: str, limit: int | None
    ) -> OutputInfo:
        """PUT a collection output, the directory the container wrote, as a tar of its
        regular files (orchestrator.executor.tars), if within ``limit`` bytes."""
        fd = open_directory(host_path, name, path)
        try:
            members: list[Member] = []
            size = len(END_OF_ARCHIVE)
            for member in directory_members(fd, name):
                members.append(member)
                size += member.stored_size
                # Refused as soon as it is over: a node may write a million files.
                check_output_size(name, size, limit, at_least=True)
            return self.put_stream(name, url, directory_tar(fd, name, members), size, TAR_TYPE)
        finally:
            os.close(fd)

    def put(
        self,
        name: str,
        url: str,
        head: bytes,
        rest: BinaryIO | io.BufferedIOBase,
        size: int,
        declared: str | None = None,
    ) -> OutputInfo:
        """PUT ``head`` then ``rest`` (``size`` bytes in all) to an output's presigned URL,
        as its ``declared`` type when its bytes do not contradict it."""
        content_type = output_type(sniff(head), declared)
        rest_chunks = iter(lambda: rest.read(CHUNK), b"")
        return self.put_stream(name, url, chain([head], rest_chunks), size, content_type)

    def put_stream(
        self, name: str, url: str, chunks: Iterator[bytes], size: int, content_type: str
    ) -> OutputInfo:
        """PUT ``chunks`` (``size`` bytes in all) to an output's presigned URL as they come,
        hashing them as they are sent."""
        what = f"output '{name}': upload"
        body = HashedBody(chunks, size, what)
        try:
            with step(what):
                response = self._session().put(
                    url,
                    data=body,
                    headers={"Content-Type": content_type},
                    timeout=(10, self.settings.transfer_timeout),
                    **self._environment(url),
                )
                if response.status_code not in (200, 201, 204):
                    raise AttemptFailed(
                        f"output '{name}': the store refused the upload "
                        f"(HTTP {response.status_code})"
                    )
        finally:
            body.close()
        if body.sent != size:  # the store answered before it had every byte
            raise AttemptFailed(f"{what}: the store took {body.sent} of {size} bytes")
        return OutputInfo(size=size, content_type=content_type, sha256=body.sha256())


__all__ = [
    "CHUNK",
    "HashedBody",
    "Input",
    "OpenCollection",
    "OpenInput",
    "Transfers",
    "check_output_size",
    "input_type_ok",
    "inside",
    "output_type",
]
