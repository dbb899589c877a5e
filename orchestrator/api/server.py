"""The HTTP server around the app: how many connections it holds, and for how long.

A request body that stops coming (``arriving``) is refused after ``idle_timeout``
of silence, with nothing of it kept.

A connection costs a file descriptor from the moment it is accepted. One that
never finishes its request (half a header, then nothing) is closed after
``idle_timeout``, as is one idle between requests; past ``max_connections`` (by
default the process's file limit less a reserve for the database, the stores
and the Docker engine), a new connection is closed at once, so the service
keeps descriptors for the clients it serves and for itself, and the accept loop
never meets EMFILE.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import AsyncIterator
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from orchestrator.config import Settings
from orchestrator.errors import BodyTimeout

log = structlog.get_logger(__name__)

#: Descriptors kept out of the connections' reach (or a quarter of the limit, if
#: more): the database, the stores, attempts' files, the Docker engine's sockets,
#: and connections accepted over the limit until they are closed.
FD_RESERVE = 128
#: Connections asyncio may accept at once (the listening socket's backlog) before
#: those over the limit are closed: they hold descriptors meanwhile.
ACCEPT_BURST = 128
#: Seconds between two log lines about connections refused at the limit.
REFUSED_LOG_EVERY = 60.0


async def arriving(chunks: AsyncIterator[bytes], idle: float) -> AsyncIterator[bytes]:
    """A body's chunks; BodyTimeout when the next one does not come within ``idle`` s
    (a client that sends headers and then a trickle, or nothing, holds a connection
    and a handler for no one)."""
    iterator = aiter(chunks)
    while True:
        try:
            async with asyncio.timeout(idle):
                chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise BodyTimeout(idle) from None
        yield chunk


async def read_body(chunks: AsyncIterator[bytes], idle: float, limit: int) -> bytes:
    """A whole body of ``limit`` bytes at most (413 past it), read as ``arriving``."""
    parts, size = [], 0
    async for chunk in arriving(chunks, idle):
        size += len(chunk)
        if size > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
        parts.append(chunk)
    return b"".join(parts)


def max_connections(settings: Settings) -> int:
    """``max_connections``, or (auto) the file limit less FD_RESERVE + ACCEPT_BURST (or
    less a quarter of it, if more), at least 16."""
    if settings.max_connections != "auto":
        return settings.max_connections
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(16, soft - max(FD_RESERVE + ACCEPT_BURST, soft // 4))


class _Refused(asyncio.Protocol):
    """A connection over the limit: closed as soon as it is made, nothing read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.abort()  # type: ignore[attr-defined]


class _BoundedServer:
    """aiohttp's protocol factory, handing out at most ``limit`` live connections."""

    def __init__(self, server: Server, limit: int) -> None:
        self._server = server
        self._limit = limit
        # RequestHandler has __slots__ without __weakref__: a plain set, pruned as we go.
        self._handlers: set[RequestHandler] = set()
        self._refused = 0
        self._logged_at = 0.0

    def _live(self) -> int:
        # asyncio accepts a burst of connections, calling this factory for each,
        # before any of them is "made": the server's own count lags behind. A handler
        # is live from its creation until its connection is lost (aiohttp then drops
        # its manager).
        self._handlers = {h for h in self._handlers if h._manager is not None}
        return len(self._handlers)

    def __call__(self) -> asyncio.Protocol:
        if self._live() < self._limit:
            handler = self._server()
            self._handlers.add(handler)
            return handler
        self._refused += 1
        now = time.monotonic()
        if now - self._logged_at >= REFUSED_LOG_EVERY:
            # Once a minute, whatever the rate: a flood of connections is not a flood of lines.
            log.warning(
                "connections_refused",
                count=self._refused,
                limit=self._limit,
                fix="raise max_connections (and the file limit: ulimit -n), or find the client",
            )
            self._logged_at, self._refused = now, 0
        return _Refused()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


class BoundedRunner(web.AppRunner):
    """An AppRunner whose connections are bounded in number and in idle time."""

    def __init__(self, app: web.Application, settings: Settings, **kwargs: Any) -> None:
        # lingering_time: after an answer given before its body was read (a 408, a 413),
        # the rest of the body is read and dropped this long at most (aiohttp: 10 s).
        super().__init__(
            app,
            keepalive_timeout=settings.idle_timeout,
            lingering_time=settings.idle_timeout,
            **kwargs,
        )
        self._limit = max_connections(settings)

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        return _BoundedServer(server, self._limit)  # type: ignore[return-value]


__all__ = ["BoundedRunner", "max_connections"]
