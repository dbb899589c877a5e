"""The HTTP side of the local store: presigned PUT, GET and HEAD on ``/objects/{store}/{key}``.

Bodies are streamed to disk in chunks (never read whole, so ``client_max_size``
does not apply) and whatever their Content-Type says: the stored bytes are
exactly the bytes sent, including ``curl --data-binary`` form-encoded bodies.
A PUT carrying ``Expect: 100-continue`` (``curl -T`` of a large file) has its
URL checked before the client is told to send the body, so a refused upload
costs no transfer. A create-only URL (a WaitingURL) whose object exists is
refused then too, with 409 ``OBJECT_EXISTS``; the store's own check when the
bytes are complete is the one that settles a race. A GET is answered with the
headers of ``downloads``: stored bytes are never rendered as a page of ours.
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import HttpVersion11, web

from orchestrator.api.downloads import download_headers
from orchestrator.api.errors import error_response, response_for
from orchestrator.api.openapi import Answer, Query, operation
from orchestrator.api.server import arriving
from orchestrator.errors import Conflict, NotFound, StoreFull
from orchestrator.stores import UPLOAD_GRACE
from storage import LocalStore, ObjectExists, ObjectInfo
from storage.local import CREATE_ONLY, EXPIRES, SIGNATURE, SignatureInvalid

StoreLookup = Callable[[str], LocalStore | None]
OnWritten = Callable[[str, ObjectInfo], Awaitable[None]]

#: Content types that say nothing about the bytes: curl --data-binary's default.
_NOT_A_TYPE = {"application/x-www-form-urlencoded"}


def add_object_routes(
    app: web.Application,
    stores: StoreLookup,
    on_written: OnWritten | None = None,
    *,
    idle_timeout: float = 15.0,
) -> None:
    """Serve the local stores ``stores(name)`` returns; ``on_written(store, info)``
    after a PUT.

    Refusals are raised (the store's own errors, or the engine's) and answered
    from the one table of ``api.errors``.
    """

    def resolve(request: web.Request) -> tuple[LocalStore, str]:
        name = request.match_info["store"]
        store = stores(name)
        if store is None:
            raise NotFound("STORE_NOT_FOUND", f"no local store {name!r}")
        key = request.match_info["key"]
        store.verify(
            request.method,
            key,
            request.query.get(EXPIRES),
            request.query.get(SIGNATURE),
            create_only=CREATE_ONLY in request.query,
        )
        return store, key

    async def _until(chunks: AsyncIterator[bytes], cut_off: float) -> AsyncIterator[bytes]:
        """The body's chunks, refused past ``cut_off``: a run waits for its input only
        that long (then it ends ERROR), and bytes that would land later are kept by no one."""
        async for chunk in chunks:
            if time.time() > cut_off:
                raise SignatureInvalid(
                    "the URL expired while this upload was still being received: nothing of it "
                    "was kept; ask for a new URL (TTL is storage.url_ttl) and send it faster",
                    expired=True,
                )
            yield chunk

    async def resolve_put(request: web.Request) -> tuple[LocalStore, str]:
        store, key = resolve(request)
        if CREATE_ONLY in request.query:
            if await asyncio.get_running_loop().run_in_executor(None, store.exists, key):
                raise uploaded_already(key)
        return store, key

    async def expect_put(request: web.Request) -> web.StreamResponse | None:
        # Runs before the handler, outside the middlewares: its refusals are answered here.
        try:
            await resolve_put(request)
        except Exception as exc:
            refusal = response_for(request, exc)
            # The client has not sent the body: answer and close, do not read it.
            refusal.force_close()
            return refusal
        if request.version != HttpVersion11:
            return None
        if request.headers.get("Expect", "").lower() != "100-continue":
            return error_response("EXPECTATION_FAILED", "only Expect: 100-continue is known")
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # as aiohttp's own handler: the body has not begun
        return None

    @operation(
        "Upload through a presigned URL (local store)",
        tag="objects",
        params=OBJECT,
        query=(*SIGNED, CREATE_ONLY_QUERY),
        raw_body={"application/octet-stream": {"description": "the exact bytes, of any type"}},
        answers={200: Answer("stored", headers={"ETag": "this version of the object"})},
        errors=(
            "URL_INVALID",
            "STORE_NOT_FOUND",
            "KEY_INVALID",
            "KEY_CONFLICT",
            "OBJECT_EXISTS",
            "EXPECTATION_FAILED",
            "STORAGE_FULL",
            "STORE_UNAVAILABLE",
            "BODY_TIMEOUT",
        ),
    )
    async def put_object(request: web.Request) -> web.Response:
        """The bytes are stored exactly as sent, whatever their Content-Type. A WaitingURL
        (``X-Pipewell-Create-Only``) creates its object once: 409 after."""
        store, key = await resolve_put(request)
        content_type = request.headers.get("Content-Type")
        if content_type is not None and content_type.split(";")[0].strip() in _NOT_A_TYPE:
            content_type = None
        # verify() has checked the expiry is ours and a number.
        cut_off = int(request.query[EXPIRES]) + UPLOAD_GRACE
        try:
            info = await store.write_chunks(
                key,
                _until(arriving(request.content.iter_any(), idle_timeout), cut_off),
                content_type=content_type or None,
                create_only=CREATE_ONLY in request.query,
                # An upload (a create-only WaitingURL, an item's) is hashed as it is
                # stored; a node's output is hashed by its worker as it sends it, and
                # hashing a gigabyte twice would cost a second of CPU.
                hashed=CREATE_ONLY in request.query,
            )
        except ObjectExists as exc:
            raise uploaded_already(key) from exc
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            # Nothing of it was kept (write_chunks removes its partial file): send it again.
            raise StoreFull(
                "the service's store is full: this upload was not kept; send it again once "
                "its operator has freed space"
            ) from exc
        if on_written is not None:
            await on_written(store.name, info)
        # Not S3's MD5: hashing every byte made uploads 1.5x slower (commit 152b085).
        # Size and time identify this version of the object well enough.
        return web.Response(status=200, headers={"ETag": f'"{info.size:x}-{time.time_ns():x}"'})

    @operation(
        "Download through a presigned URL (local store)",
        tag="objects",
        params=OBJECT,
        query=SIGNED,
        answers={
            200: Answer(
                "the bytes, with the download headers: never rendered as a page of ours",
                media_types=("*/*",),
                schema={},
                headers={"Content-Disposition": "inline or attachment, with a safe filename"},
            )
        },
        errors=("URL_INVALID", "STORE_NOT_FOUND", "KEY_INVALID", "OBJECT_NOT_FOUND"),
    )
    async def get_object(request: web.Request) -> web.StreamResponse:
        """HEAD answers the same headers without the bytes."""
        store, key = resolve(request)
        info = await asyncio.get_running_loop().run_in_executor(None, store.stat, key)
        if info is None:
            raise NotFound("OBJECT_NOT_FOUND", f"no object {key!r} in this store")
        return web.FileResponse(
            store.path(key), headers=download_headers(info.content_type, key.rsplit("/", 1)[-1])
        )

    app.router.add_put("/objects/{store}/{key:.+}", put_object, expect_handler=expect_put)
    app.router.add_get("/objects/{store}/{key:.+}", get_object)  # HEAD too


OBJECT = {"store": "a local store's name", "key": "the object's key (may hold '/')"}
SIGNED = (
    Query(EXPIRES, int, "when the URL stops working (seconds since the epoch)", required=True),
    Query(SIGNATURE, str, "the URL's signature", required=True),
)
CREATE_ONLY_QUERY = Query(CREATE_ONLY, str, "a WaitingURL's: the object is created once (signed)")


def uploaded_already(key: str) -> Conflict:
    return Conflict(
        "OBJECT_EXISTS",
        f"object {key!r} was uploaded already, and this URL only creates it: the run "
        "takes the first upload as its input; to send other bytes, submit the flow "
        "again for a new WaitingURL",
    )


__all__ = ["add_object_routes"]
