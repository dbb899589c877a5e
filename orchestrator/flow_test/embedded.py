"""The service ``pipewell test`` starts for itself when no ``--server`` is given.

The whole service (API, scheduler, worker, local store) on a loopback port the
system picks, in this process, with a data directory of its own: a test never
disturbs a ``pipewell dev`` already running in ``./.pipewell``.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web

from orchestrator.config import load_settings


@asynccontextmanager
async def embedded_service(config: Path | None, data_dir: Path) -> AsyncIterator[str]:
    """Serve until the block ends; yields the service's URL."""
    from orchestrator.api.app import create_app
    from orchestrator.api.server import BoundedRunner

    # Bound before the settings are made: presigned URLs carry the port.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    settings = load_settings(config, host="127.0.0.1", port=port, data_dir=data_dir, auth="none")
    # The config's public_url names the operator's service, not this one.
    settings = settings.model_copy(update={"public_url": None})
    runner = BoundedRunner(create_app(settings), settings, access_log=None, shutdown_timeout=5)
    try:
        await runner.setup()
        await web.SockSite(runner, listener).start()
        yield settings.base_url
    finally:
        await runner.cleanup()
        listener.close()


__all__ = ["embedded_service"]
