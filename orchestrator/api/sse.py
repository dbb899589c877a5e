"""Server-Sent Events: the response every stream of every dialect is written to."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

#: A comment line this often keeps proxies from closing a quiet stream.
HEARTBEAT_SECONDS = 15.0
#: Seconds a stream waits for its reader to take what was written before closing it.
WRITE_TIMEOUT = 60.0


async def open_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    return response


async def send(
    response: web.StreamResponse, data: Any, *, event: str | None = None, encoded: str | None = None
) -> None:
    """One event: an optional ``event:`` line, one ``data:`` line of compact JSON.

    ``encoded``: that JSON made already (once, for every stream of a run's event).
    """
    payload = (
        encoded if encoded is not None else json.dumps(data, separators=(",", ":"), default=str)
    )
    head = f"event: {event}\n" if event else ""
    await _write(response, f"{head}data: {payload}\n\n".encode())


async def keep_alive(response: web.StreamResponse) -> None:
    await _write(response, b": keep-alive\n\n")


async def _write(response: web.StreamResponse, chunk: bytes) -> None:
    """Write, or give the reader up: one that takes nothing for WRITE_TIMEOUT s is gone,
    and what the stream would hold for it meanwhile is not the service's to keep."""
    try:
        await asyncio.wait_for(response.write(chunk), WRITE_TIMEOUT)
    except TimeoutError:
        raise ConnectionResetError(
            f"the reader took nothing for {WRITE_TIMEOUT:g} s; the stream is closed"
        ) from None


async def run_changes(
    response: web.StreamResponse, updates: AsyncIterator[Any]
) -> AsyncIterator[Any]:
    """The run updates of a watch, its heartbeats written as keep-alives, log lines left out."""
    async for update in updates:
        if update.name == "heartbeat":
            await keep_alive(response)
        elif update.name != "log":
            yield update


__all__ = ["HEARTBEAT_SECONDS", "WRITE_TIMEOUT", "keep_alive", "open_stream", "run_changes", "send"]
