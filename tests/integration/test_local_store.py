"""The local store over the real HTTP server: exact bytes, signatures, streaming, restarts."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web

from orchestrator.api.errors import error_middleware
from orchestrator.api.objects import add_object_routes
from storage import (
    KeyConflict,
    LocalStore,
    ObjectExists,
    ObjectInfo,
    ObjectNotFound,
    SignatureInvalid,
)

SECRET = b"k" * 32
EVERY_BYTE = bytes(range(256)) * 64
CURL = shutil.which("curl")


class Served:
    """A LocalStore behind the real object routes, and what ``on_written`` saw."""

    def __init__(self, store: LocalStore, written: list[tuple[str, str]], base: str) -> None:
        self.store = store
        self.written = written
        self.base = base


@pytest.fixture
async def served(tmp_path, aiohttp_server) -> Served:
    written: list[tuple[str, str]] = []
    digests: dict[str, str | None] = {}

    async def on_written(store: str, info: ObjectInfo) -> None:
        written.append((store, info.key))
        digests[info.key] = info.digest

    # 1 MiB body limit: any upload above it only works if the handler streams.
    # The routes raise their refusals; the service's error middleware answers them.
    app = web.Application(client_max_size=1024 * 1024, middlewares=[error_middleware])
    holder: dict[str, LocalStore] = {}
    add_object_routes(app, holder.get, on_written)
    server = await aiohttp_server(app)
    base = str(server.make_url("")).rstrip("/")
    holder["default"] = LocalStore("default", tmp_path / "objects", base, SECRET)
    return Served(holder["default"], written, base)


@pytest.fixture
async def store_server(served):
    return served.store, served.written


def leftovers(store: LocalStore) -> list[Path]:
    return list(store.tmp.iterdir())


async def raw_request(
    url: str, head: str, body: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Send a PUT's request line and headers (and ``body``) on a raw connection."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    target = f"{parts.path}?{parts.query}"
    writer.write(f"PUT {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n{head}\r\n".encode() + body)
    await writer.drain()
    return reader, writer


async def eventually(condition: Callable[[], object], timeout: float = 5.0) -> bool:
    """Whether ``condition()`` becomes true within ``timeout`` seconds (polled)."""
    for _ in range(int(timeout / 0.02)):
        if condition():
            return True
        await asyncio.sleep(0.02)
    return bool(condition())


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)


# ------------------------------------------------------------------ exact bytes


async def test_put_then_get_returns_exact_bytes(store_server):
    store, written = store_server
    async with aiohttp.ClientSession() as session:
        body = EVERY_BYTE + b"a=1&b=2"
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        async with session.put(store.put_url("r/in", 60), data=body, headers=headers) as response:
            assert response.status == 200
            assert response.headers["ETag"].startswith(f'"{len(body):x}-')
        async with session.get(store.get_url("r/in", 60)) as response:
            assert response.status == 200
            assert await response.read() == body
            assert response.headers["Content-Type"] == "application/octet-stream"
        async with session.head(store.get_url("r/in", 60)) as response:
            assert response.status == 200
            assert int(response.headers["Content-Length"]) == len(body)
    assert (store.path("r/in")).read_bytes() == body
    assert written == [("default", "r/in")]
    assert leftovers(store) == []


async def test_content_type_is_kept_and_served(store_server):
    store, _ = store_server
    async with aiohttp.ClientSession() as session:
        headers = {"Content-Type": "image/png"}
        url = store.put_url("typed/obj.bin", 60)
        async with session.put(url, data=b"\x89PNG\r\n", headers=headers) as response:
            assert response.status == 200
        async with session.get(store.get_url("typed/obj.bin", 60)) as response:
            assert response.headers["Content-Type"] == "image/png"
            assert await response.read() == b"\x89PNG\r\n"
    info = store.stat("typed/obj.bin")
    assert (info.size, info.content_type) == (6, "image/png")
    # Overwritten without a type: the old type does not stick to the new bytes.
    async with aiohttp.ClientSession() as session:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        url = store.put_url("typed/obj.bin", 60)
        async with session.put(url, data=b"plain", headers=headers) as response:
            assert response.status == 200
    assert store.stat("typed/obj.bin").content_type is None


async def test_keys_with_every_allowed_character_round_trip(store_server):
    store, written = store_server
    key = "runs/a b+c=d@e,f:g~h/x.y_z-1"
    url = store.put_url(key, 60)
    assert " " not in url and "%20" in url and "%2B" in url
    async with aiohttp.ClientSession() as session:
        async with session.put(url, data=b"odd key") as response:
            assert response.status == 200, await response.text()
        async with session.get(store.get_url(key, 60)) as response:
            assert await response.read() == b"odd key"
    assert store.path(key).read_bytes() == b"odd key"
    assert written == [("default", key)]


# ------------------------------------------------------------------ refusals


async def test_wrong_method_altered_and_expired_urls_are_403(store_server):
    store, written = store_server
    async with aiohttp.ClientSession() as session:
        async with session.get(store.put_url("k", 60)) as response:
            assert response.status == 403
        async with session.put(store.get_url("k", 60), data=b"x") as response:
            assert response.status == 403
        altered = store.put_url("k", 60).replace("/k?", "/other?")
        async with session.put(altered, data=b"x") as response:
            assert response.status == 403
            body = await response.json()
            assert body["code"] == "URL_INVALID" and "does not match" in body["message"]
        flipped = store.put_url("k", 60)
        flipped = flipped[:-1] + ("0" if flipped[-1] != "0" else "1")
        async with session.put(flipped, data=b"x") as response:
            assert response.status == 403
        later = store.put_url("k", 60).replace("Expires=", "Expires=9")
        async with session.put(later, data=b"x") as response:
            assert response.status == 403
        expired = store.put_url("k", -1)
        async with session.put(expired, data=b"x") as response:
            assert response.status == 403
            body = await response.json()
            assert body["code"] == "URL_INVALID" and body["expired"] is True
            assert "expired" in body["message"]
        unsigned = store.put_url("k", 60).split("?")[0]
        async with session.put(unsigned, data=b"x") as response:
            assert response.status == 403
            assert "not signed" in (await response.json())["message"]
    assert not store.exists("k")
    assert written == []


async def test_a_url_expires_after_its_ttl(store_server):
    store, _ = store_server
    url = store.put_url("soon", 1)
    async with aiohttp.ClientSession() as session:
        async with session.put(url, data=b"in time") as response:
            assert response.status == 200
        await asyncio.sleep(2.1)
        async with session.put(url, data=b"too late") as response:
            assert response.status == 403
            assert (await response.json())["expired"] is True
    assert store.path("soon").read_bytes() == b"in time"


async def test_unknown_store_and_missing_object_are_404(served):
    store = served.store
    async with aiohttp.ClientSession() as session:
        url = store.get_url("nothing/here", 60)
        async with session.get(url) as response:
            assert response.status == 404
            assert (await response.json())["code"] == "OBJECT_NOT_FOUND"
        other = url.replace("/objects/default/", "/objects/elsewhere/")
        async with session.get(other) as response:
            assert response.status == 404
            assert (await response.json())["code"] == "STORE_NOT_FOUND"


def test_verify_accepts_head_for_get_and_names_the_problem(tmp_path):
    store = LocalStore("s", tmp_path, "http://h", SECRET)
    query = dict(p.split("=") for p in store.get_url("a/b", 60).split("?")[1].split("&"))
    expires, signature = query["X-Pipewell-Expires"], query["X-Pipewell-Signature"]
    store.verify("GET", "a/b", expires, signature)
    store.verify("HEAD", "a/b", expires, signature)
    with pytest.raises(SignatureInvalid, match="does not match"):
        store.verify("PUT", "a/b", expires, signature)
    with pytest.raises(SignatureInvalid, match="does not match"):
        store.verify("GET", "a/c", expires, signature)
    with pytest.raises(SignatureInvalid, match="does not match"):
        LocalStore("s", tmp_path, "http://h", b"other").verify("GET", "a/b", expires, signature)
    with pytest.raises(SignatureInvalid, match="not a number"):
        store.verify("GET", "a/b", "soon", signature)
    with pytest.raises(SignatureInvalid, match="not signed"):
        store.verify("GET", "a/b", expires, None)
    with pytest.raises(SignatureInvalid, match="does not match"):
        store.verify("GET", "a/b", expires, "é" * 64)


# ------------------------------------------------------------------ create-only URLs


async def test_a_create_only_url_creates_once_and_its_flag_is_signed(store_server):
    store, written = store_server
    url = store.put_url("in/put", 60, create_only=True)
    assert "X-Pipewell-Create-Only=1" in url
    async with aiohttp.ClientSession() as session:
        async with session.put(url, data=b"first", headers={"Content-Type": "text/csv"}) as r:
            assert r.status == 200
        async with session.put(url, data=b"second") as response:
            assert response.status == 409
            body = await response.json()
            assert body["code"] == "OBJECT_EXISTS" and "'in/put'" in body["message"]
        stripped = url.replace("&X-Pipewell-Create-Only=1", "")
        added = store.put_url("in/put", 60) + "&X-Pipewell-Create-Only=0"
        for altered in (stripped, added):
            async with session.put(altered, data=b"second") as response:
                assert response.status == 403
                assert "does not match" in (await response.json())["message"]
        # The worker's own output URLs are not create-only: a retried attempt overwrites.
        async with session.put(store.put_url("out/put", 60), data=b"attempt 1") as response:
            assert response.status == 200
        async with session.put(store.put_url("out/put", 60), data=b"attempt 2") as response:
            assert response.status == 200
    assert store.path("in/put").read_bytes() == b"first"
    assert store.stat("in/put").content_type == "text/csv"
    assert store.path("out/put").read_bytes() == b"attempt 2"
    assert written == [("default", "in/put"), ("default", "out/put"), ("default", "out/put")]
    # An upload is hashed as it is stored, and known without reading it again; a node's
    # output is hashed by its worker as it sends it, not here a second time.
    assert store.stat("in/put").digest == f"sha256:{hashlib.sha256(b'first').hexdigest()}"
    assert store.stat("out/put").digest is None
    assert leftovers(store) == []


async def test_a_refused_create_only_put_is_answered_before_the_body(served):
    store = served.store
    store.write("taken", io.BytesIO(b"kept"))
    head = "Content-Length: 5\r\nExpect: 100-continue\r\n"
    reader, writer = await raw_request(store.put_url("taken", 60, create_only=True), head)
    assert (await read_head(reader)).startswith(b"HTTP/1.1 409")
    writer.close()
    await writer.wait_closed()
    assert store.path("taken").read_bytes() == b"kept"
    assert served.written == []


async def test_racing_create_only_writes_store_exactly_one(tmp_path):
    store = LocalStore("s", tmp_path, "http://h", SECRET)

    async def body(tag: bytes):
        for _ in range(4):
            yield tag * 300_000
            await asyncio.sleep(0)

    async def write(tag: bytes) -> bytes | None:
        try:
            await store.write_chunks("race", body(tag), create_only=True)
        except ObjectExists:
            return None
        return tag

    winners = [t for t in await asyncio.gather(*(write(bytes([65 + i])) for i in range(8))) if t]
    assert len(winners) == 1
    assert store.path("race").read_bytes() == winners[0] * 1_200_000
    assert leftovers(store) == []
    # A create-only key under an object, or over other objects, is still a conflict.
    with pytest.raises(KeyConflict):
        await store.write_chunks("race/under", body(b"x"), create_only=True)
    store.write("dir/child", io.BytesIO(b"x"))
    with pytest.raises(KeyConflict):
        await store.write_chunks("dir", body(b"x"), create_only=True)
    assert leftovers(store) == []


# ------------------------------------------------------------------ what a GET says


@pytest.mark.parametrize(
    ("content_type", "disposition"),
    [
        ("text/html", "attachment"),
        ("image/svg+xml", "attachment"),
        (None, "attachment"),
        ("image/png", "inline"),
    ],
)
async def test_gets_are_never_sniffed_nor_rendered_as_pages(
    store_server, content_type, disposition
):
    store, _ = store_server
    store.write("a b/page.x", io.BytesIO(b"<svg onload=alert(1)>"), content_type=content_type)
    served_type = content_type or "application/octet-stream"
    async with aiohttp.ClientSession() as session:
        for method in ("GET", "HEAD"):
            async with session.request(method, store.get_url("a b/page.x", 60)) as response:
                assert response.status == 200
                assert response.headers["Content-Type"] == served_type
                assert response.headers["X-Content-Type-Options"] == "nosniff"
                assert response.headers["Content-Disposition"] == (
                    f'{disposition}; filename="page.x"'
                )


# ------------------------------------------------------------------ streaming


async def test_large_upload_streams_past_the_body_limit(store_server):
    store, _ = store_server
    blob = os.urandom(20 * 1024 * 1024)  # the app's client_max_size is 1 MiB

    async def chunks():
        for start in range(0, len(blob), 1 << 20):
            yield blob[start : start + (1 << 20)]

    async with aiohttp.ClientSession() as session:
        async with session.put(store.put_url("big", 60), data=chunks()) as response:
            assert response.status == 200
        async with session.get(store.get_url("big", 60)) as response:
            assert int(response.headers["Content-Length"]) == len(blob)
            assert await response.read() == blob
    info = store.stat("big")
    assert info is not None and info.size == len(blob)
    assert store.path("big").read_bytes() == blob
    assert leftovers(store) == []


async def test_an_interrupted_upload_leaves_nothing(served):
    store = served.store
    reader, writer = await raw_request(
        store.put_url("cut/short", 60), "Content-Length: 3000000\r\n", os.urandom(1_500_000)
    )
    assert await eventually(lambda: leftovers(store)), "the upload never reached tmp/"
    writer.close()
    await writer.wait_closed()
    assert await eventually(lambda: not leftovers(store)), leftovers(store)
    assert store.stat("cut/short") is None
    assert not store.path("cut").exists()
    assert served.written == []


async def test_expect_100_continue_checks_the_url_before_the_body(served):
    store = served.store
    head = "Content-Length: 5\r\nExpect: 100-continue\r\n"
    # A refused URL: the answer comes without the body ever being sent.
    reader, writer = await raw_request(store.put_url("e", -1), head)
    status = await read_head(reader)
    assert status.startswith(b"HTTP/1.1 403"), status
    writer.close()
    await writer.wait_closed()
    # A good URL: 100 Continue first, then the body, then 200.
    reader, writer = await raw_request(store.put_url("e", 60), head)
    assert (await read_head(reader)).startswith(b"HTTP/1.1 100 Continue")
    writer.write(b"hello")
    await writer.drain()
    assert (await read_head(reader)).startswith(b"HTTP/1.1 200")
    writer.close()
    await writer.wait_closed()
    assert store.path("e").read_bytes() == b"hello"
    assert served.written == [("default", "e")]


# ------------------------------------------------------------------ the store's own API


def test_write_stat_read_delete(tmp_path):
    store = LocalStore("s", tmp_path / "s", "http://h", SECRET)
    info = store.write("a/b/c", io.BytesIO(EVERY_BYTE), content_type="text/csv")
    assert (info.key, info.size, info.content_type) == ("a/b/c", len(EVERY_BYTE), "text/csv")
    assert store.stat("a/b/c") == info
    with store.open_read("a/b/c") as handle:
        assert handle.read() == EVERY_BYTE
    assert store.exists("a/b/c")
    assert store.stat("a/b") is None  # a prefix, not an object
    with pytest.raises(ObjectNotFound):
        store.open_read("a/b")
    store.delete("a/b/c")
    store.delete("a/b/c")  # a missing key is not an error
    assert store.stat("a/b/c") is None and not store.exists("a/b/c")
    with pytest.raises(ObjectNotFound):
        store.open_read("a/b/c")
    # Emptied prefixes go with the object, so a prefix can become an object.
    store.write("a", io.BytesIO(b"now a file"))
    assert store.path("a").read_bytes() == b"now a file"
    # a/b/c's sidecar went with it; a's holds only its hash (no type was given).
    sidecars = list((tmp_path / "s" / "meta").rglob("*.json"))
    assert len(sidecars) == 1
    assert store.stat("a") == ObjectInfo(
        "a", 10, None, f"sha256:{hashlib.sha256(b'now a file').hexdigest()}"
    )


def test_a_copy_is_a_link_that_outlives_its_source(tmp_path):
    store = LocalStore("s", tmp_path / "s", "http://h", SECRET)
    first = store.write("runs/1/out", io.BytesIO(b"result"), content_type="text/plain")
    copied = store.copy("runs/1/out", "runs/2/out")
    assert copied == ObjectInfo("runs/2/out", 6, "text/plain", first.digest)
    assert store.path("runs/2/out").stat().st_ino == store.path("runs/1/out").stat().st_ino
    store.delete("runs/1/out")
    assert store.stat("runs/2/out") == copied
    assert store.path("runs/2/out").read_bytes() == b"result"
    with pytest.raises(ObjectNotFound):
        store.copy("runs/1/out", "runs/3/out")
    # A write replaces the name, never the bytes in place: an earlier copy keeps its own.
    store.write("runs/2/out", io.BytesIO(b"other"))
    store.copy("runs/2/out", "runs/4/out")
    store.write("runs/2/out", io.BytesIO(b"third"))
    assert store.path("runs/4/out").read_bytes() == b"other"
    assert leftovers(store) == []


def test_a_store_that_does_not_hash_keeps_no_digest(tmp_path):
    store = LocalStore("s", tmp_path / "s", "http://h", SECRET, hash_objects=False)
    assert store.write("k", io.BytesIO(b"bytes")).digest is None
    assert store.stat("k") == ObjectInfo("k", 5, None, None)


def test_keys_that_cannot_share_a_filesystem_conflict(tmp_path):
    store = LocalStore("s", tmp_path, "http://h", SECRET)
    store.write("x", io.BytesIO(b"file"))
    with pytest.raises(KeyConflict, match="'x/y'"):
        store.write("x/y", io.BytesIO(b"under a file"))
    store.write("p/q", io.BytesIO(b"deep"))
    with pytest.raises(KeyConflict):
        store.write("p", io.BytesIO(b"over a directory"))
    assert store.path("x").read_bytes() == b"file"
    assert store.path("p/q").read_bytes() == b"deep"
    assert leftovers(store) == []


def test_sidecars_of_look_alike_keys_do_not_collide(tmp_path):
    store = LocalStore("s", tmp_path, "http://h", SECRET)
    store.write("m", io.BytesIO(b"1"), content_type="text/plain")
    store.write("m.json/n", io.BytesIO(b"2"), content_type="image/png")
    assert store.stat("m").content_type == "text/plain"
    assert store.stat("m.json/n").content_type == "image/png"


def test_a_failing_source_leaves_nothing(tmp_path):
    store = LocalStore("s", tmp_path, "http://h", SECRET)
    store.write("keep", io.BytesIO(b"old bytes"))

    class Broken(io.RawIOBase):
        sent = False

        def readable(self) -> bool:
            return True

        def readinto(self, buffer):  # type: ignore[no-untyped-def]
            if self.sent:
                raise OSError("source went away")
            self.sent = True
            buffer[:4] = b"half"
            return 4

    with pytest.raises(OSError, match="source went away"):
        store.write("keep", Broken())
    assert store.path("keep").read_bytes() == b"old bytes"
    assert leftovers(store) == []


def test_stale_uploads_are_swept_when_a_store_opens(tmp_path):
    LocalStore("s", tmp_path, "http://h", SECRET)
    stale = tmp_path / "tmp" / ".upload-stale"
    fresh = tmp_path / "tmp" / ".upload-fresh"
    stale.write_bytes(b"crashed")
    fresh.write_bytes(b"in progress")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    LocalStore("s", tmp_path, "http://h", SECRET)
    assert sorted(p.name for p in (tmp_path / "tmp").iterdir()) == [".upload-fresh"]


async def test_objects_survive_a_new_store_on_the_same_root(store_server, tmp_path):
    store, _ = store_server
    async with aiohttp.ClientSession() as session:
        url = store.put_url("keep/me", 60)
        headers = {"Content-Type": "text/plain"}
        async with session.put(url, data=b"still here", headers=headers) as response:
            assert response.status == 200
    again = LocalStore("default", tmp_path / "objects", "http://unused", SECRET)
    with again.open_read("keep/me") as handle:
        assert handle.read() == b"still here"
    assert again.stat("keep/me").content_type == "text/plain"
    # URLs signed before the restart still verify: the secret is the service's.
    url = store.get_url("keep/me", 60)
    query = dict(part.split("=") for part in url.split("?")[1].split("&"))
    again.verify("GET", "keep/me", query["X-Pipewell-Expires"], query["X-Pipewell-Signature"])


# ------------------------------------------------------------------ curl


async def run_curl(*args: str) -> tuple[subprocess.CompletedProcess[bytes], float]:
    started = time.monotonic()
    result = await asyncio.to_thread(
        subprocess.run,
        # If the server never said 100 Continue, curl would wait 20 s before sending.
        ["curl", "-sS", "--fail-with-body", "--expect100-timeout", "20", *args],
        capture_output=True,
        timeout=60,
    )
    return result, time.monotonic() - started


@pytest.mark.skipif(CURL is None, reason="curl is not installed (apt-get install curl)")
@pytest.mark.parametrize(
    "style",
    [
        ["-T"],
        ["-H", "Expect: 100-continue", "-T"],
        ["-X", "PUT", "--data-binary"],
        ["-H", "Expect: 100-continue", "-X", "PUT", "--data-binary"],
    ],
    ids=["T", "T-expect", "data-binary", "data-binary-expect"],
)
async def test_curl_uploads_store_exact_bytes(served, tmp_path, style):
    store = served.store
    source = tmp_path / "blob.bin"
    # Over 1 MiB, with bytes a form decoder would mangle (& = % + CR LF).
    source.write_bytes(EVERY_BYTE * 80 + b"\r\n&x=y%20+z")
    arg = f"@{source}" if "--data-binary" in style else str(source)
    result, took = await run_curl(*style, arg, store.put_url("curl/obj", 60))
    assert result.returncode == 0, result.stderr
    assert took < 10
    assert store.path("curl/obj").read_bytes() == source.read_bytes()
    assert store.stat("curl/obj").content_type is None
    result, _ = await run_curl("-o", str(tmp_path / "back.bin"), store.get_url("curl/obj", 60))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()
    assert served.written == [("default", "curl/obj")]


@pytest.mark.skipif(CURL is None, reason="curl is not installed (apt-get install curl)")
async def test_curl_with_an_expired_url_is_refused_before_sending(served, tmp_path):
    store = served.store
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(8 * 1024 * 1024))
    result, took = await run_curl("-T", str(source), store.put_url("late", -1))
    assert result.returncode == 22  # --fail-with-body: HTTP error
    assert b'"URL_INVALID"' in result.stdout and b"expired" in result.stdout
    assert took < 10
    assert store.stat("late") is None
    assert served.written == []


def test_objects_under_a_prefix_are_listed_in_key_order_up_to_a_limit(tmp_path):
    store = LocalStore("default", tmp_path / "objects", "http://127.0.0.1:1", SECRET)
    for key in ("c/items/b.txt", "c/items/a/z.txt", "c/items.bundle", "c/other/x"):
        store.write(key, io.BytesIO(key.encode()))
    listed = store.list("c/items", 10)
    assert [(i.key, i.size) for i in listed] == [("c/items/a/z.txt", 15), ("c/items/b.txt", 13)]
    assert [i.key for i in store.list("c/items", 1)] == ["c/items/a/z.txt"]
    assert store.list("c/none", 10) == []


def test_sizes_count_a_tenants_bytes_once_and_delete_many_leaves_no_folder(tmp_path):
    store = LocalStore("s", tmp_path / "s", "http://h", SECRET)
    store.write("tenants/a/r1/out", io.BytesIO(b"x" * 100))
    store.copy("tenants/a/r1/out", "tenants/a/r2/out")  # a link: stored once
    store.write("tenants/b/r3/out", io.BytesIO(b"y" * 7))
    assert store.sizes("tenants") == {"a": 100, "b": 7}
    assert store.sizes("nothing-here") == {}
    store.delete_many(["tenants/a/r1/out", "tenants/a/r2/out", "tenants/a/never"])
    assert store.sizes("tenants") == {"b": 7}
    assert not (store.objects / "tenants" / "a").exists()
