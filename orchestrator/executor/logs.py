"""A running container's output, cut into log lines as it comes (the live log)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from typing import Self

import docker
import docker.errors
import requests

from orchestrator.executor.errors import step
from orchestrator.executor.protocol import Emit
from orchestrator.models import LogRecord

MAX_LINE = 8192


class LogPump:
    """Reads a container's attach stream in its own thread, cutting it into log lines."""

    def __init__(
        self, stream: Iterator[tuple[bytes | None, bytes | None]], emit: Emit, attempt: int
    ) -> None:
        self._stream = stream
        self._emit = emit
        self._attempt = attempt
        self._partial = {"stdout": b"", "stderr": b""}
        self.stderr_tail: deque[str] = deque(maxlen=5)
        self._thread = threading.Thread(target=self._pump, name="pipewell-logs", daemon=True)

    @classmethod
    def attach(
        cls, client: docker.DockerClient, container_id: str, emit: Emit, attempt: int
    ) -> Self:
        """Attached before the program starts, so no line is missed; pumping already."""
        with step("attach to the container", engine=True):
            stream = client.api.attach(
                container_id, stdout=True, stderr=True, stream=True, logs=True, demux=True
            )
        pump = cls(stream, emit, attempt)
        pump._thread.start()
        return pump

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def alive(self) -> bool:
        """Whether the container's output is still being read (it has not ended)."""
        return self._thread.is_alive()

    def _pump(self) -> None:
        try:
            for stdout, stderr in self._stream:
                if stdout:
                    self._feed("stdout", stdout)
                if stderr:
                    self._feed("stderr", stderr)
        except (docker.errors.APIError, requests.RequestException, OSError, ValueError):
            pass  # the container went away; what was read is already emitted
        for stream_name, rest in self._partial.items():
            if rest:
                self._line(stream_name, rest)

    def _feed(self, stream_name: str, data: bytes) -> None:
        buffer = self._partial[stream_name] + data
        *lines, self._partial[stream_name] = buffer.split(b"\n")
        for line in lines:
            self._line(stream_name, line)
        if len(self._partial[stream_name]) > MAX_LINE:
            self._line(stream_name, self._partial[stream_name])
            self._partial[stream_name] = b""

    def _line(self, stream_name: str, raw: bytes) -> None:
        text = raw.rstrip(b"\r").decode("utf-8", errors="replace")[:MAX_LINE]
        if stream_name == "stderr" and text.strip():
            self.stderr_tail.append(text.strip())
        self._emit(LogRecord(message=text, stream=stream_name, attempt=self._attempt))


class ItemEnd:
    """How an item of a batch ended, as its container's output said: its exit status,
    or None when the output ended first (the container exited, or was killed)."""

    def __init__(self) -> None:
        self.status: int | None = None
        self._ended = threading.Event()

    def set(self, status: int | None) -> None:
        if not self._ended.is_set():
            self.status = status
            self._ended.set()

    def wait(self, timeout: float) -> bool:
        """Whether the item ended within ``timeout`` seconds."""
        return self._ended.wait(timeout)


class BatchLogPump(LogPump):
    """The log pump of a container that runs a batch's items one after another.

    The container's output is one stream for all its items: each line goes to the item
    running (:meth:`expect` names it). An item ends with its marker, ``<token>
    <status>`` and a newline, on stdout and on stderr (orchestrator.executor.gate.
    BATCH_LOOP): once both are read, every line of the item has been, on either stream,
    and the next item's lines cannot be taken for its. A marker is swallowed; what
    precedes it on its line is the last line the item left unfinished. A marker of
    another token is an ordinary line.
    """

    def __init__(
        self, stream: Iterator[tuple[bytes | None, bytes | None]], emit: Emit, attempt: int
    ) -> None:
        super().__init__(stream, emit, attempt)
        self._lock = threading.Lock()
        self._marker = b""
        self._marked: set[str] = set()
        self._end = ItemEnd()

    def expect(self, token: str, emit: Emit, attempt: int) -> ItemEnd:
        """Lines from now on are this item's, until its marker; how it ends."""
        with self._lock:
            self._emit, self._attempt = emit, attempt
            self._marker = f"{token} ".encode()
            self._marked = set()
            self.stderr_tail.clear()
            self._end = ItemEnd()
            if not self._thread.is_alive():
                self._end.set(None)  # the container's output has ended already
            return self._end

    def _pump(self) -> None:
        super()._pump()
        with self._lock:
            self._end.set(None)

    def _line(self, stream_name: str, raw: bytes) -> None:
        with self._lock:
            marker = self._marker
            at = raw.rfind(marker) if marker else -1
            if at >= 0 and raw[at + len(marker) :].isdigit():
                if at:  # the item's last line, unfinished
                    LogPump._line(self, stream_name, raw[:at])
                self._marked.add(stream_name)
                if len(self._marked) == 2:
                    self._end.set(int(raw[at + len(marker) :]))
                return
            LogPump._line(self, stream_name, raw)


__all__ = ["BatchLogPump", "ItemEnd", "LogPump"]
