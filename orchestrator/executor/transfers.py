"""Bytes between the stores and an attempt: presigned GETs of inputs, PUTs of outputs.

Streamed both ways (no whole file in memory); each input's type is sniffed from
its first bytes and checked against what the node accepts before the node runs.
"""

from __future__ import annotations

import io
import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from orchestrator.config import ExecutorSettings
from orchestrator.executor.errors import AttemptFailed, step
from orchestrator.messages import OutputInfo, TaskInput
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


def check_output_size(name: str, size: int, limit: int | None) -> None:
    """Refuse an output over its node's limit before a byte of it is copied.

    A sparse file costs its node nothing to write and the store its whole size.
    """
    if limit is not None and size > limit:
        raise AttemptFailed(
            f"output '{name}' is {_size(size)}, over this node's limit of {_size(limit)} "
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
    """An input whose download has begun: its size, first bytes and sniffed type known."""

    spec: TaskInput
    response: requests.Response
    size: int
    head: bytes
    content_type: str
    suffix: str

    @property
    def file_name(self) -> str:
        return f"{self.spec.name}{self.suffix}"

    def chunks(self) -> Iterator[bytes]:
        yield self.head
        yield from self.response.iter_content(CHUNK)

    def close(self) -> None:
        self.response.close()


class SizedBody:
    """Head bytes then the rest of a stream, with a length so requests sends Content-Length."""

    def __init__(self, head: bytes, rest: BinaryIO | io.BufferedIOBase, size: int) -> None:
        self._head = head
        self._rest = rest
        self._size = size

    def __len__(self) -> int:
        return self._size

    def read(self, n: int = -1) -> bytes:
        if self._head:
            data, self._head = self._head, b""
            return data
        return self._rest.read(CHUNK if n is None or n < 0 else max(n, CHUNK))


class Transfers:
    """HTTP to the stores, one session per thread (an attempt holds its thread)."""

    def __init__(self, settings: ExecutorSettings) -> None:
        self.settings = settings
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
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

    def open_input(self, spec: TaskInput) -> OpenInput:
        """Start an input's download and check its type; the caller closes it."""
        with step(f"input '{spec.name}': download"):
            response = self._session().get(
                spec.url, stream=True, timeout=(10, self.settings.transfer_timeout)
            )
            if response.status_code != 200:
                response.close()
                raise AttemptFailed(
                    f"input '{spec.name}': the store answered HTTP {response.status_code}"
                )
            length = response.headers.get("Content-Length")
            if length is None:
                response.close()
                raise AttemptFailed(f"input '{spec.name}': the store sent no Content-Length")
            size = int(length)
            head = response.raw.read(min(size, SNIFF_BYTES), decode_content=True)
        content_type = sniff(head)
        if not input_type_ok(content_type, spec.types):
            response.close()
            raise AttemptFailed(
                f"input '{spec.name}' is {content_type}, but this node accepts "
                f"{', '.join(spec.types or [])}",
                retryable=False,
            )
        return OpenInput(spec, response, size, head, content_type, extension_for(content_type))

    def download(self, item: OpenInput, target: Path) -> None:
        """The rest of an input into ``target``, every announced byte or a failure."""
        with step(f"input '{item.spec.name}': download"), target.open("wb") as handle:
            received = 0
            for chunk in item.chunks():
                received += len(chunk)
                handle.write(chunk)
            if received != item.size:
                raise AttemptFailed(
                    f"input '{item.spec.name}': the store sent {received} of {item.size} bytes"
                )
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
        with step(f"output '{name}': upload"):
            response = self._session().put(
                url,
                data=SizedBody(head, rest, size),
                headers={"Content-Type": content_type},
                timeout=(10, self.settings.transfer_timeout),
            )
            if response.status_code not in (200, 201, 204):
                raise AttemptFailed(
                    f"output '{name}': the store refused the upload (HTTP {response.status_code})"
                )
        return OutputInfo(size=size, content_type=content_type)


__all__ = [
    "CHUNK",
    "OpenInput",
    "Transfers",
    "check_output_size",
    "input_type_ok",
    "inside",
    "output_type",
]
