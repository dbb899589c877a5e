"""The HTTP side of the local store: presigned PUT, GET and HEAD on ``/objects/{store}/{key}``.

Bodies are streamed to disk in chunks (never read whole, so ``client_max_size``
does not apply) and whatever their Content-Type says: the stored bytes are
exactly the bytes sent, including ``curl --data-binary`` form-encoded bodies.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from orchestrator.api.errors import error_response
from storage import LocalStore, SignatureInvalid, StoreError
from storage.local import EXPIRES, SIGNATURE

# Writes are batched into blocks of this size and done off the event loop.
WRITE_BLOCK = 1024 * 1024

StoreLookup = Callable[[str], LocalStore | None]
OnWritten = Callable[[str, str], Awaitable[None]]


def add_object_routes(
    app: web.Application, stores: StoreLookup, on_written: OnWritten | None = None
) -> None:
    async def resolve(request: web.Request) -> tuple[LocalStore, str] | web.Response:
        store = stores(request.match_info["store"])
        if store is None:
            return error_response(404, "STORE_NOT_FOUND", "no local store by that name")
        key = request.match_info["key"]
        try:
            store.verify(
                request.method, key, request.query.get(EXPIRES), request.query.get(SIGNATURE)
            )
        except SignatureInvalid as exc:
            return error_response(403, "URL_INVALID", str(exc))
        except StoreError as exc:
            return error_response(400, "KEY_INVALID", str(exc))
        return store, key

    async def put_object(request: web.Request) -> web.Response:
        resolved = await resolve(request)
        if isinstance(resolved, web.Response):
            return resolved
        store, key = resolved
        loop = asyncio.get_running_loop()
        handle, temp = await loop.run_in_executor(None, store.begin_write, key)
        try:
            block = bytearray()
            async for chunk in request.content.iter_any():
                block += chunk
                if len(block) >= WRITE_BLOCK:
                    await loop.run_in_executor(None, handle.write, bytes(block))
                    block.clear()
            if block:
                await loop.run_in_executor(None, handle.write, bytes(block))
            await loop.run_in_executor(None, handle.close)
            content_type = request.headers.get("Content-Type")
            if content_type in (None, "application/x-www-form-urlencoded"):
                content_type = None  # curl's default, not a statement about the bytes
            info = await loop.run_in_executor(None, store.commit_write, key, temp, content_type)
        except BaseException:
            handle.close()
            temp.unlink(missing_ok=True)
            raise
        if on_written is not None:
            await on_written(store.name, key)
        # Not S3's MD5 (hashing every byte halved upload speed): size and time
        # identify this version of the object well enough for a client.
        return web.Response(status=200, headers={"ETag": f'"{info.size:x}-{time.time_ns():x}"'})

    async def get_object(request: web.Request) -> web.StreamResponse:
        resolved = await resolve(request)
        if isinstance(resolved, web.Response):
            return resolved
        store, key = resolved
        info = await asyncio.get_running_loop().run_in_executor(None, store.stat, key)
        if info is None:
            return error_response(404, "OBJECT_NOT_FOUND", f"no object {key!r} in this store")
        return web.FileResponse(
            store.path(key),
            headers={"Content-Type": info.content_type or "application/octet-stream"},
        )

    app.router.add_put("/objects/{store}/{key:.+}", put_object)
    app.router.add_get("/objects/{store}/{key:.+}", get_object)  # HEAD too


__all__ = ["add_object_routes"]
