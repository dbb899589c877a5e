"""The embedded store: files under a directory, presigned URLs served by the service.

A URL is ``{base}/objects/{store}/{key}?X-Pipewell-Expires=…&X-Pipewell-Signature=…``;
the signature is an HMAC-SHA256 over method, store, key and expiry with a
secret the service keeps in its state, so URLs outlive a restart. A create-only
PUT URL (a WaitingURL) also carries ``X-Pipewell-Create-Only=1``, and the flag
is signed too: removing it makes an altered URL, not one that may overwrite.

Layout under ``root``::

    data/<key>                    the object's bytes, exactly as sent
    meta/<h[:2]>/<h>.json         its content type and the sha256 of its bytes (hashed
                                  as they were written), h = sha256(key): outside the
                                  key space, and no key can collide with another's sidecar
    tmp/.upload-*                 uploads in progress (same filesystem as data/)

An object is written to ``tmp/`` and renamed into place, so a reader never
sees half an object and a failed upload leaves nothing behind. A create-only
write is hard-linked into place instead, which fails if the name exists: of
uploads racing on one create-only URL exactly one wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import stat as stat_mode
import tempfile
import time
from collections.abc import AsyncIterable
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from storage.base import (
    ObjectExists,
    ObjectInfo,
    ObjectNotFound,
    SignatureInvalid,
    Store,
    StoreError,
    check_key,
)

EXPIRES = "X-Pipewell-Expires"
SIGNATURE = "X-Pipewell-Signature"
#: Present (and signed) on PUT URLs that may create their object, never replace it.
CREATE_ONLY = "X-Pipewell-Create-Only"
#: Blocks written to disk at once, off the event loop, by ``write_chunks``.
WRITE_BLOCK = 1024 * 1024
_TEMP_PREFIX = ".upload-"
#: Uploads a crashed process left in tmp/ are removed when a store opens, once this old.
_STALE_TEMP_SECONDS = 3600.0


class KeyConflict(StoreError):
    """The key cannot be a file here: a prefix of it is an object, or it is a prefix of one.

    S3 allows ``a`` and ``a/b`` side by side; a filesystem does not.
    """


class LocalStore(Store):
    def __init__(
        self,
        name: str,
        root: Path,
        public_base_url: str,
        secret: bytes,
        internal_base_url: str | None = None,
        *,
        hash_objects: bool = True,
    ) -> None:
        """``hash_objects``: keep the sha256 of each object written (what the result
        cache knows an input by); off, objects have no digest."""
        if not secret:
            raise StoreError(f"store {name!r}: the local store needs a non-empty signing secret")
        self.name = name
        self.root = Path(root)
        self.objects = self.root / "data"
        self.meta = self.root / "meta"
        self.tmp = self.root / "tmp"
        for directory in (self.objects, self.meta, self.tmp):
            directory.mkdir(parents=True, exist_ok=True)
        self.public_base_url = public_base_url.rstrip("/")
        self.internal_base_url = (internal_base_url or public_base_url).rstrip("/")
        self._secret = secret
        self.hash_objects = hash_objects
        self._remove_stale_uploads()

    def _remove_stale_uploads(self) -> None:
        cutoff = time.time() - _STALE_TEMP_SECONDS
        for temp in self.tmp.glob(_TEMP_PREFIX + "*"):
            with contextlib.suppress(OSError):
                if temp.stat().st_mtime < cutoff:
                    temp.unlink()

    # ------------------------------------------------------------ signing

    def _signature(self, method: str, key: str, expires: int, create_only: bool = False) -> str:
        message = f"{method}\n{self.name}\n{key}\n{expires}"
        if create_only:
            # Signed, so stripping the flag breaks the signature. URLs without it
            # sign exactly what they always did: those issued before still verify.
            message += "\ncreate-only"
        return hmac.new(self._secret, message.encode(), hashlib.sha256).hexdigest()

    def _url(
        self, method: str, key: str, ttl: float, internal: bool, create_only: bool = False
    ) -> str:
        check_key(key)
        expires = int(time.time() + ttl)
        base = self.internal_base_url if internal else self.public_base_url
        query = {EXPIRES: expires, SIGNATURE: self._signature(method, key, expires, create_only)}
        if create_only:
            query[CREATE_ONLY] = 1
        path = f"/objects/{quote(self.name, safe='')}/{quote(key, safe='/')}"
        return f"{base}{path}?{urlencode(query)}"

    def put_url(
        self, key: str, ttl: float, *, internal: bool = False, create_only: bool = False
    ) -> str:
        return self._url("PUT", key, ttl, internal, create_only)

    def get_url(self, key: str, ttl: float, *, internal: bool = False) -> str:
        return self._url("GET", key, ttl, internal)

    def verify(
        self,
        method: str,
        key: str,
        expires: str | None,
        signature: str | None,
        *,
        create_only: bool = False,
    ) -> None:
        """Raise SignatureInvalid unless we signed this URL for this method and key
        (and, for ``create_only``, as a create-only URL).

        A GET URL also answers HEAD. The signature is checked before the expiry,
        so "expired" is only ever said of a URL we really issued.
        """
        if method == "HEAD":
            method = "GET"
        if not expires or not signature:
            raise SignatureInvalid("the URL is not signed: ask the service for a presigned URL")
        try:
            expires_at = int(expires)
        except ValueError as exc:
            raise SignatureInvalid("the URL's expiry is not a number") from exc
        expected = self._signature(method, key, expires_at, create_only)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise SignatureInvalid(
                "the URL's signature does not match (altered, or meant for another method)"
            )
        if expires_at < time.time():
            raise SignatureInvalid(
                "the URL has expired: ask for a new one (TTL is storage.url_ttl)", expired=True
            )
        check_key(key)  # we never sign a bad key; defence in depth

    def key_of_url(self, url: str) -> str | None:
        parts = urlsplit(url)
        prefix = f"/objects/{quote(self.name, safe='')}/"
        if parts.scheme not in ("http", "https") or not parts.path.startswith(prefix):
            return None
        # Any host: clients reach the service under names of their own. The signature
        # is what says the URL is ours.
        key = unquote(parts.path[len(prefix) :])
        query = dict(parse_qsl(parts.query))
        self.verify("GET", key, query.get(EXPIRES), query.get(SIGNATURE))
        return key

    # ------------------------------------------------------------ objects

    def path(self, key: str) -> Path:
        """Where the object's bytes live (whether or not it exists)."""
        return self.objects / check_key(key)

    def _meta_path(self, key: str) -> Path:
        digest = hashlib.sha256(check_key(key).encode()).hexdigest()
        return self.meta / digest[:2] / f"{digest}.json"

    def _legacy_meta_path(self, key: str) -> Path:
        # Before the hashed layout, sidecars were meta/<key>.json. Still read, and removed.
        return self.meta / (check_key(key) + ".json")

    def _meta(self, key: str) -> dict[str, str]:
        for meta in (self._meta_path(key), self._legacy_meta_path(key)):
            try:
                found = json.loads(meta.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(found, dict):
                return found
        return {}

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            status = self.path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat_mode.S_ISREG(status.st_mode):
            return None  # a directory: the prefix of other keys, not an object
        meta = self._meta(key)
        sha256 = meta.get("sha256")
        return ObjectInfo(
            key=key,
            size=status.st_size,
            content_type=meta.get("content_type"),
            digest=f"sha256:{sha256}" if sha256 else None,
        )

    def list(self, prefix: str, limit: int) -> list[ObjectInfo]:
        folder = self.path(prefix)
        found: list[ObjectInfo] = []
        for directory, folders, files in os.walk(folder):
            folders.sort()
            base = Path(directory).relative_to(self.objects).as_posix()
            for name in sorted(files):
                status = os.stat(Path(directory, name), follow_symlinks=False)
                if stat_mode.S_ISREG(status.st_mode):
                    found.append(ObjectInfo(key=f"{base}/{name}", size=status.st_size))
        found.sort(key=lambda info: info.key)  # a walk visits a folder's files first
        return found[:limit]

    def sizes(self, prefix: str) -> dict[str, int]:
        try:
            children = [entry for entry in os.scandir(self.path(prefix)) if entry.is_dir()]
        except (FileNotFoundError, NotADirectoryError):
            return {}
        found = {}
        for child in children:
            # A copy is a hard link (``copy``): its bytes are stored once.
            seen: set[int] = set()
            total = 0
            for directory, _, files in os.walk(child.path):
                for name in files:
                    with contextlib.suppress(OSError):
                        status = os.lstat(os.path.join(directory, name))
                        if stat_mode.S_ISREG(status.st_mode) and status.st_ino not in seen:
                            seen.add(status.st_ino)
                            total += status.st_size
            found[child.name] = total
        return found

    def open_read(self, key: str) -> BinaryIO:
        try:
            return self.path(key).open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise ObjectNotFound(key) from exc

    def _begin_write(self, key: str) -> tuple[BinaryIO, Path]:
        self.path(key)  # check the key before touching the disk
        fd, temp = tempfile.mkstemp(dir=self.tmp, prefix=_TEMP_PREFIX)
        return os.fdopen(fd, "wb"), Path(temp)

    def _commit_write(
        self,
        key: str,
        temp: Path,
        content_type: str | None,
        create_only: bool = False,
        sha256: str | None = None,
    ) -> ObjectInfo:
        target = self.path(key)
        for attempt in (1, 2):
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                if create_only:
                    self._link_new(temp, target, key)
                else:
                    os.replace(temp, target)
                break
            except FileNotFoundError:
                if attempt == 2:  # a delete pruned the directory between the two calls
                    raise
            except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
                raise KeyConflict(
                    f"store {self.name!r}: cannot store {key!r}: a prefix of it is an object, "
                    "or it is the prefix of other objects"
                ) from exc
        size = target.stat().st_size
        self._write_meta(key, content_type, sha256)
        digest = f"sha256:{sha256}" if sha256 else None
        return ObjectInfo(key=key, size=size, content_type=content_type, digest=digest)

    def _write_meta(self, key: str, content_type: str | None, sha256: str | None) -> None:
        meta = self._meta_path(key)
        if content_type or sha256:
            fields = {"key": key, "content_type": content_type, "sha256": sha256}
            meta.parent.mkdir(parents=True, exist_ok=True)
            fd, staged = tempfile.mkstemp(dir=meta.parent, suffix=".tmp")
            with os.fdopen(fd, "w") as handle:
                json.dump({k: v for k, v in fields.items() if v}, handle)
            os.replace(staged, meta)
        else:
            meta.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self._legacy_meta_path(key).unlink(missing_ok=True)

    @staticmethod
    def _link_new(temp: Path, target: Path, key: str) -> None:
        """Put ``temp`` at ``target`` unless something is there already.

        link, unlike replace, fails when the name exists, atomically: of two
        uploads racing on one create-only URL, exactly one wins.
        """
        try:
            os.link(temp, target)
        except FileExistsError as exc:
            if target.is_dir():
                raise  # the prefix of other keys: a KeyConflict, as for any write
            raise ObjectExists(key) from exc
        temp.unlink()

    def _hasher(self) -> hashlib._Hash | None:
        return hashlib.sha256() if self.hash_objects else None

    def write(self, key: str, data: BinaryIO, *, content_type: str | None = None) -> ObjectInfo:
        handle, temp = self._begin_write(key)
        digest = self._hasher()
        try:
            with handle:
                while block := data.read(WRITE_BLOCK):
                    if digest is not None:
                        digest.update(block)
                    handle.write(block)
            sha256 = digest.hexdigest() if digest is not None else None
            return self._commit_write(key, temp, content_type, sha256=sha256)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def copy(self, source: str, target: str) -> ObjectInfo:
        """A hard link: objects are never changed in place (a write replaces the name),
        so the copy costs no bytes and outlives the source's deletion."""
        info = self.stat(source)
        if info is None:
            raise ObjectNotFound(source)
        self.path(target)
        fd, staged = tempfile.mkstemp(dir=self.tmp, prefix=_TEMP_PREFIX)
        os.close(fd)
        temp = Path(staged)
        try:
            temp.unlink()
            try:
                os.link(self.path(source), temp)
            except FileNotFoundError as exc:  # deleted since the stat
                raise ObjectNotFound(source) from exc
            sha256 = info.digest.removeprefix("sha256:") if info.digest else None
            return self._commit_write(target, temp, info.content_type, sha256=sha256)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    async def write_chunks(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str | None = None,
        create_only: bool = False,
        hashed: bool = True,
    ) -> ObjectInfo:
        """``write`` for bytes arriving on the event loop (an HTTP body).

        ``create_only``: raise ObjectExists, storing nothing, if ``key`` exists
        when the bytes are complete. ``hashed``: keep their sha256 (if the store
        hashes at all); off for bytes whose sender hashes them itself.

        Chunks are gathered into blocks of ``WRITE_BLOCK`` bytes; each block is
        written in the default executor while the next one is being received,
        so the loop never waits on the disk and at most two blocks are in memory.
        If ``chunks`` fails (the client went away) nothing is stored.
        """
        loop = asyncio.get_running_loop()
        handle, temp = await loop.run_in_executor(None, self._begin_write, key)
        digest = self._hasher() if hashed else None

        def hash_and_write(block: bytearray) -> None:
            # On the executor's thread, a block at a time: hashlib lets go of the GIL
            # for big updates, so hashing costs the loop nothing.
            if digest is not None:
                digest.update(block)
            handle.write(block)

        pending: asyncio.Future[None] | None = None
        try:
            block = bytearray()
            async for chunk in chunks:
                block += chunk
                if len(block) >= WRITE_BLOCK:
                    if pending is not None:
                        await pending
                    pending = loop.run_in_executor(None, hash_and_write, block)
                    block = bytearray()
            if pending is not None:
                await pending
                pending = None
            if block:
                await loop.run_in_executor(None, hash_and_write, block)
            await loop.run_in_executor(None, handle.close)
            sha256 = digest.hexdigest() if digest is not None else None
            return await loop.run_in_executor(
                None, self._commit_write, key, temp, content_type, create_only, sha256
            )
        except BaseException:
            # A write still running in the executor holds the file's lock: close
            # waits for it, then the half file goes.
            handle.close()
            temp.unlink(missing_ok=True)
            raise

    def delete(self, key: str) -> None:
        target = self.path(key)
        if self.stat(key) is not None:
            target.unlink(missing_ok=True)
        for meta in (self._meta_path(key), self._legacy_meta_path(key)):
            with contextlib.suppress(OSError):
                meta.unlink(missing_ok=True)
        # Drop directories left empty, so the key's prefixes can be objects again.
        parent = target.parent
        while parent != self.objects:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent


__all__ = [
    "CREATE_ONLY",
    "EXPIRES",
    "SIGNATURE",
    "WRITE_BLOCK",
    "KeyConflict",
    "LocalStore",
    "SignatureInvalid",
]
