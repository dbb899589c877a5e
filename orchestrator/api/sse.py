"""Server-Sent Events: the response every stream of every dialect is written to."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


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


__all__ = ["open_stream", "send"]
