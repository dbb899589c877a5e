"""Shared fixtures: the real service (production app factory) on a real port, real Docker."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from orchestrator.api.app import create_app
from tests.helpers import service_settings

StartService = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def start_service(tmp_path: Path, aiohttp_client) -> StartService:  # type: ignore[no-untyped-def]
    """Start the service built by ``create_app``; closed by aiohttp_client at teardown."""

    async def start(data_dir: Path | None = None, **overrides: Any) -> TestClient:
        settings = service_settings(data_dir or tmp_path / "data", **overrides)
        server = TestServer(create_app(settings), host="127.0.0.1", port=settings.port)
        return await aiohttp_client(server)

    return start
