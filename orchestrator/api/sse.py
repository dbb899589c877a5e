"""Server-Sent Events: the response every stream of every dialect is written to."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

#: A comment line this often keeps proxies from closing a quiet stream.
HEARTBEAT_SECONDS = 15.0


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


async def send(response: web.StreamResponse, data: Any, *, event: str | None = None) -> None:
    """One event: an optional ``event:`` line, one ``data:`` line of compact JSON."""
    payload = json.dumps(data, separators=(",", ":"), default=str)
    head = f"event: {event}\n" if event else ""
    await response.write(f"{head}data: {payload}\n\n".encode())


async def keep_alive(response: web.StreamResponse) -> None:
    await response.write(b": keep-alive\n\n")


async def run_changes(
    response: web.StreamResponse, updates: AsyncIterator[Any]
) -> AsyncIterator[Any]:
    """The run updates of a watch, its heartbeats written as keep-alives, log lines left out."""
    async for update in updates:
        if update.name == "heartbeat":
            await keep_alive(response)
        elif update.name != "log":
            yield update


__all__ = ["HEARTBEAT_SECONDS", "keep_alive", "open_stream", "run_changes", "send"]
