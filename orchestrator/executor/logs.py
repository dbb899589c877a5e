"""A running container's output, cut into log lines as it comes (the live log)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator

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
    ) -> LogPump:
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


__all__ = ["LogPump"]
