"""Shared fixtures: the real service (production app factory) on a real port, real Docker."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import docker
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from moto.server import ThreadedMotoServer

from orchestrator.api.app import create_app
from tests.helpers import CHROMIUM, CHROMIUM_ARGS, free_port, prewarm, service_settings

StartService = Callable[..., Awaitable[TestClient]]

#: When this test session began (Unix seconds): containers made since are its own.
SESSION_BEGAN = time.time()
#: Seconds a container of the session may take to go once the last test ended.
LEFTOVER_GRACE = 10.0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session if its tests left a container of Pipewell's behind (any state).

    Every service a test starts removes what it made when it stops, and spares of
    a killed one are removed by the next service on the engine (their deadline):
    a container still here means something leaks.
    """
    if not any(item.get_closest_marker("docker") for item in session.items):
        return
    deadline = time.monotonic() + LEFTOVER_GRACE
    while (left := _session_containers()) and time.monotonic() < deadline:
        time.sleep(0.5)
    if left:
        names = ", ".join(f"{c['Names'][0].lstrip('/')} ({c['State']})" for c in left)
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"containers left behind by the tests: {names}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _session_containers() -> list[dict[str, Any]]:
    engine = docker.from_env()
    try:
        found = engine.api.containers(all=True, filters={"name": "pipewell-"})
    finally:
        engine.close()
    return [c for c in found if c["Created"] >= SESSION_BEGAN - 1]


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


#: The launch modes every engine guarantee is tested in (executor settings of each).
LAUNCHES: dict[str, dict[str, Any]] = {
    "plain": {"launch": "plain"},
    "gated": {"launch": "gated", "warm_containers": 0},  # each attempt makes its own
    "gated-spare": {"launch": "gated"},  # a spare of the node's shape is ready first
}


class Launched:
    """A service in one launch mode; ``ready`` makes sure a spare waits for the given defs."""

    def __init__(self, mode: str, start_service: StartService) -> None:
        self.mode = mode
        self._start_service = start_service

    async def start(self, data_dir: Path | None = None, **overrides: Any) -> TestClient:
        executor = {**LAUNCHES[self.mode], **overrides.pop("executor", {})}
        return await self._start_service(data_dir, executor=executor, **overrides)

    async def ready(self, client: TestClient, *defs: dict[str, Any]) -> None:
        """In gated-spare mode: a spare of each def's image, tier and user is ready."""
        await self.ready_at(client.session, str(client.make_url("")).rstrip("/"), *defs)

    async def ready_at(
        self, session: aiohttp.ClientSession, base: str, *defs: dict[str, Any]
    ) -> None:
        """``ready`` for a service at ``base`` (a ``pipewell dev`` process)."""
        if self.mode != "gated-spare":
            return
        for node_def in defs:
            await prewarm(session, base, node_def)

    def config_file(self, directory: Path) -> Path:
        """A configuration file of this launch mode, for a ``pipewell dev`` process."""
        path = directory / f"launch-{self.mode}.yaml"
        path.write_text(yaml.safe_dump({"executor": LAUNCHES[self.mode]}))
        return path


@pytest.fixture(params=list(LAUNCHES))
def launched(request, start_service: StartService) -> Launched:  # type: ignore[no-untyped-def]
    return Launched(request.param, start_service)
