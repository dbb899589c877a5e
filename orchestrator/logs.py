"""Where the service's log lines go, and in which form.

One JSON object per line for machines (the default when the output is not a
terminal), coloured key=value lines for people at a terminal. Lines of the
standard library's loggers (aiohttp, asyncio) take the same form. Each line
carries what the code bound in context: ``run_id``, ``node_id`` and ``attempt``
while an attempt runs or its messages are handled.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Literal, TextIO

import structlog
from aiohttp.http_exceptions import HttpProcessingError

LogFormat = Literal["auto", "json", "console"]


class _Once(logging.Filter):
    """Lets a message through once per ``every`` seconds, saying how many were held back.

    asyncio logs "socket.accept() out of system resource" each time an accept
    fails for want of descriptors: a flood of connections made that hundreds of
    thousands of lines a minute.
    """

    def __init__(self, starts: str, every: float = 60.0) -> None:
        super().__init__()
        self.starts, self.every = starts, every
        self._last, self._held = -every, 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.starts):
            return True
        now = time.monotonic()
        if now - self._last < self.every:
            self._held += 1
            return False
        if self._held:
            record.msg = f"{record.msg} ({self._held} more like it in the last {self.every:g} s)"
        self._last, self._held = now, 0
        record.exc_info = record.exc_text = None
        return True


class _MalformedRequests(logging.Filter):
    """aiohttp logs a request its parser refused, at error level, with the raw line it
    choked on: an API key (``Authorization``, ``x-api-key``) or a presigned URL's
    signature may be in it. The line says what was wrong and from where, never what.

    A client's malformed request is not the service's error: logged at info.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        refused = record.exc_info[1] if record.exc_info else None
        if isinstance(refused, HttpProcessingError):
            # The first line names the fault ("Invalid header value char"); the
            # raw bytes follow it on the next ones.
            reason = (refused.message or "").strip().split("\n", 1)[0].rstrip(": ")
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "malformed request from %s refused: %s: %s"
            record.args = (remote, type(refused).__name__, reason[:200])
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
            return logging.getLogger().isEnabledFor(logging.INFO)
        return True


def configure_logging(
    level: str, log_format: LogFormat = "auto", stream: TextIO | None = None
) -> None:
    stream = stream or sys.stderr
    terminal = stream.isatty()
    as_json = log_format == "json" or (log_format == "auto" and not terminal)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor
    if as_json:
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        # Without locals: a frame's locals may hold a presigned URL or an API key,
        # and rendering them costs long enough to stall the loop under a burst.
        renderer = structlog.dev.ConsoleRenderer(
            colors=terminal,
            exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False),
        )
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(numeric)
    # Both would print presigned URLs, signatures included: aiohttp's access log
    # and urllib3's retry warnings.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    running = logging.getLogger("asyncio")
    if not any(isinstance(f, _Once) for f in running.filters):
        running.addFilter(_Once("socket.accept() out of system resource"))
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _MalformedRequests) for f in server.filters):
        server.addFilter(_MalformedRequests())


__all__ = ["LogFormat", "configure_logging"]
