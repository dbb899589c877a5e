"""The embedded store: files under a directory, presigned URLs served by the service.

A URL is ``{base}/objects/{store}/{key}?X-Pipewell-Expires=…&X-Pipewell-Signature=…``;
the signature is an HMAC-SHA256 over method, store, key and expiry with a
secret the service keeps in its state. Objects are written to a temporary file
beside their place and renamed, so a reader never sees half an object and a
failed upload leaves nothing. Content types live in a sidecar directory,
outside the key space.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, urlencode

from storage.base import ObjectInfo, ObjectNotFound, Store, StoreError, check_key

EXPIRES = "X-Pipewell-Expires"
SIGNATURE = "X-Pipewell-Signature"
_COPY_CHUNK = 1024 * 1024


class SignatureInvalid(StoreError):
    """A presigned URL that is missing, altered or expired."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


class LocalStore(Store):
    def __init__(
        self,
        name: str,
        root: Path,
        public_base_url: str,
        secret: bytes,
        internal_base_url: str | None = None,
    ) -> None:
        self.name = name
        self.root = Path(root)
        self.objects = self.root / "data"
        self.meta = self.root / "meta"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.meta.mkdir(parents=True, exist_ok=True)
        self.public_base_url = public_base_url.rstrip("/")
        self.internal_base_url = (internal_base_url or public_base_url).rstrip("/")
        self._secret = secret

    # ------------------------------------------------------------ signing

    def _signature(self, method: str, key: str, expires: int) -> str:
        message = f"{method}\n{self.name}\n{key}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def _url(self, method: str, key: str, ttl: float, internal: bool) -> str:
        check_key(key)
        expires = int(time.time() + ttl)
        base = self.internal_base_url if internal else self.public_base_url
        query = urlencode({EXPIRES: expires, SIGNATURE: self._signature(method, key, expires)})
        return f"{base}/objects/{quote(self.name, safe='')}/{quote(key, safe='/')}?{query}"

    def put_url(self, key: str, ttl: float, *, internal: bool = False) -> str:
        return self._url("PUT", key, ttl, internal)

    def get_url(self, key: str, ttl: float, *, internal: bool = False) -> str:
        return self._url("GET", key, ttl, internal)

    def verify(self, method: str, key: str, expires: str | None, signature: str | None) -> None:
        """Raise SignatureInvalid unless the URL was signed by us for this method and key."""
        if method == "HEAD":
            method = "GET"
        if not expires or not signature:
            raise SignatureInvalid("the URL is not signed: ask the service for a presigned URL")
        try:
            expires_at = int(expires)
        except ValueError as exc:
            raise SignatureInvalid("the URL's expiry is not a number") from exc
        expected = self._signature(method, key, expires_at)
        if not hmac.compare_digest(expected, signature):
            raise SignatureInvalid(
                "the URL's signature does not match (altered, or meant for another method)"
            )
        if expires_at < time.time():
            raise SignatureInvalid(
                "the URL has expired: ask for a new one (TTL is storage.url_ttl)", expired=True
            )

    # ------------------------------------------------------------ objects

    def path(self, key: str) -> Path:
        return self.objects / check_key(key)

    def _meta_path(self, key: str) -> Path:
        return self.meta / (check_key(key) + ".json")

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            size = self.path(key).stat().st_size
        except FileNotFoundError:
            return None
        content_type = None
        try:
            content_type = json.loads(self._meta_path(key).read_text()).get("content_type")
        except (FileNotFoundError, ValueError):
            pass
        return ObjectInfo(key=key, size=size, content_type=content_type)

    def open_read(self, key: str) -> BinaryIO:
        try:
            return self.path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise ObjectNotFound(key) from exc

    def begin_write(self, key: str) -> tuple[BinaryIO, Path]:
        """A temporary file beside the object's place; ``commit_write`` puts it there."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        return os.fdopen(fd, "wb"), Path(temp)

    def commit_write(self, key: str, temp: Path, content_type: str | None) -> ObjectInfo:
        target = self.path(key)
        meta = self._meta_path(key)
        meta.parent.mkdir(parents=True, exist_ok=True)
        if content_type:
            meta.write_text(json.dumps({"content_type": content_type}))
        else:
            meta.unlink(missing_ok=True)
        os.replace(temp, target)
        return ObjectInfo(key=key, size=target.stat().st_size, content_type=content_type)

    def write(self, key: str, data: BinaryIO, *, content_type: str | None = None) -> ObjectInfo:
        handle, temp = self.begin_write(key)
        try:
            with handle:
                shutil.copyfileobj(data, handle, _COPY_CHUNK)
            return self.commit_write(key, temp, content_type)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)
        self._meta_path(key).unlink(missing_ok=True)


__all__ = ["EXPIRES", "SIGNATURE", "LocalStore", "SignatureInvalid"]
