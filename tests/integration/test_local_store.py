"""The local store over the real HTTP server: exact bytes, signatures, streaming, restarts."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time

import aiohttp
import pytest
from aiohttp import web

from orchestrator.api.objects import add_object_routes
from storage import LocalStore

SECRET = b"k" * 32
EVERY_BYTE = bytes(range(256)) * 64


@pytest.fixture
async def store_server(tmp_path, aiohttp_server):
    """A LocalStore served by the real object routes; records what was written."""
    written: list[tuple[str, str]] = []

    async def on_written(store: str, key: str) -> None:
        written.append((store, key))

    app = web.Application(client_max_size=1024 * 1024)
    holder: dict[str, LocalStore] = {}
    add_object_routes(app, holder.get, on_written)
    server = await aiohttp_server(app)
    base = str(server.make_url("")).rstrip("/")
    holder["default"] = LocalStore("default", tmp_path / "objects", base, SECRET)
    return holder["default"], written


async def test_put_then_get_returns_exact_bytes(store_server):
    store, written = store_server
    async with aiohttp.ClientSession() as session:
        body = EVERY_BYTE + b"a=1&b=2"
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        async with session.put(store.put_url("r/in", 60), data=body, headers=headers) as response:
            assert response.status == 200
        async with session.get(store.get_url("r/in", 60)) as response:
            assert response.status == 200
            assert await response.read() == body
            assert response.headers["Content-Type"] == "application/octet-stream"
        async with session.head(store.get_url("r/in", 60)) as response:
            assert response.status == 200
            assert int(response.headers["Content-Length"]) == len(body)
    assert (store.path("r/in")).read_bytes() == body
    assert written == [("default", "r/in")]


async def test_wrong_method_altered_and_expired_urls_are_403(store_server):
    store, written = store_server
    async with aiohttp.ClientSession() as session:
        async with session.get(store.put_url("k", 60)) as response:
            assert response.status == 403
        altered = store.put_url("k", 60).replace("/k?", "/other?")
        async with session.put(altered, data=b"x") as response:
            assert response.status == 403
            assert (await response.json())["code"] == "URL_INVALID"
        expired = store.put_url("k", -1)
        async with session.put(expired, data=b"x") as response:
            assert response.status == 403
            assert "expired" in (await response.json())["message"]
        unsigned = store.put_url("k", 60).split("?")[0]
        async with session.put(unsigned, data=b"x") as response:
            assert response.status == 403
    assert not store.exists("k")
    assert written == []


async def test_large_upload_streams_past_the_body_limit(store_server):
    store, _ = store_server
    blob = os.urandom(20 * 1024 * 1024)  # the app's client_max_size is 1 MiB

    async def chunks():
        for start in range(0, len(blob), 1 << 20):
            yield blob[start : start + (1 << 20)]

    async with aiohttp.ClientSession() as session:
        async with session.put(store.put_url("big", 60), data=chunks()) as response:
            assert response.status == 200
    info = store.stat("big")
    assert info is not None and info.size == len(blob)
    assert store.path("big").read_bytes() == blob


async def test_objects_survive_a_new_store_on_the_same_root(store_server, tmp_path):
    store, _ = store_server
    async with aiohttp.ClientSession() as session:
        async with session.put(store.put_url("keep/me", 60), data=b"still here") as response:
            assert response.status == 200
    again = LocalStore("default", tmp_path / "objects", "http://unused", SECRET)
    with again.open_read("keep/me") as handle:
        assert handle.read() == b"still here"
    # URLs signed before the restart still verify: the secret is the service's.
    url = store.get_url("keep/me", 60)
    query = dict(part.split("=") for part in url.split("?")[1].split("&"))
    again.verify("GET", "keep/me", query["X-Pipewell-Expires"], query["X-Pipewell-Signature"])


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("style", [["-T"], ["-X", "PUT", "--data-binary"]])
async def test_curl_uploads_store_exact_bytes(store_server, tmp_path, style):
    store, _ = store_server
    source = tmp_path / "blob.bin"
    source.write_bytes(EVERY_BYTE * 8 + b"\r\n&x=y%20")
    arg = str(source) if style == ["-T"] else f"@{source}"
    url = store.put_url("curl/obj", 60)
    started = time.monotonic()
    result = await asyncio.to_thread(
        subprocess.run,
        ["curl", "-sS", "--fail-with-body", *style, arg, url],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 10
    assert store.path("curl/obj").read_bytes() == source.read_bytes()
