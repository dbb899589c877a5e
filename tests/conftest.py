"""Shared fixtures: the real service (production app factory) on a real port, real Docker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from moto.server import ThreadedMotoServer

from orchestrator.api.app import create_app
from tests.helpers import CHROMIUM, CHROMIUM_ARGS, free_port, service_settings

StartService = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def start_service(tmp_path: Path, aiohttp_client) -> StartService:  # type: ignore[no-untyped-def]
    """Start the service built by ``create_app``; closed by aiohttp_client at teardown."""

    async def start(data_dir: Path | None = None, **overrides: Any) -> TestClient:
        settings = service_settings(data_dir or tmp_path / "data", **overrides)
        server = TestServer(create_app(settings), host="127.0.0.1", port=settings.port)
        return await aiohttp_client(server)

    return start


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 server on a free port, one per test module (it keeps nothing on disk)."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
async def browser() -> AsyncIterator:  # type: ignore[type-arg]
    """Debian's Chromium driven by Playwright (no browser download: executable_path)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()
