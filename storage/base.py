"""The object-store interface every backend implements.

Methods are synchronous: boto3 blocks, and so does the filesystem. Async
callers run them off the event loop through a bounded executor.

Exception tree (everything a backend raises on purpose):

    StoreError
    ├── ObjectNotFound     the key does not exist
    ├── ObjectExists       a create-only write found the key taken
    ├── InvalidKey         the key is empty, absolute, or escapes its bucket (``..``)
    └── StoreUnavailable   the backend could not be reached or refused the call
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import BinaryIO


class StoreError(Exception):
    """Base of every error a store raises."""


class ObjectNotFound(StoreError):
    def __init__(self, key: str) -> None:
        super().__init__(f"object {key!r} does not exist")
        self.key = key


class ObjectExists(StoreError):
    def __init__(self, key: str) -> None:
        super().__init__(f"object {key!r} exists already")
        self.key = key


class InvalidKey(StoreError):
    pass


class StoreUnavailable(StoreError):
    pass


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    content_type: str | None = None
    # What the store says of the bytes, where it knows without reading them again:
    # "sha256:<hex>" (hashed as they were stored) or "etag:<etag>" (S3's own).
    digest: str | None = None


MAX_KEY_BYTES = 1024
_SEGMENT_OK = re.compile(r"^[A-Za-z0-9._\-+=@,:~ ]+$")


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise InvalidKey.

    A key is a ``/``-separated relative path with no empty, ``.`` or ``..``
    segment: it can never name anything outside its bucket or data directory.
    At most 1024 bytes (S3's limit), segments at most 255 (a file name's).
    """
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise InvalidKey(f"invalid object key {key[:100]!r}: must be a relative path")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidKey(f"invalid object key {key[:100]!r}…: over {MAX_KEY_BYTES} bytes")
    for segment in key.split("/"):
        if segment in ("", ".", "..") or len(segment) > 255 or not _SEGMENT_OK.match(segment):
            raise InvalidKey(
                f"invalid object key {key[:100]!r}: segment {segment[:100]!r} is not allowed "
                "(use letters, digits and . _ - + = @ , : ~; no empty, '.' or '..' segments; "
                "at most 255 characters)"
            )
    return key


class SignatureInvalid(StoreError):
    """A presigned URL that is missing, altered or expired."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


class Store(ABC):
    """An object store addressed by keys, handing out presigned URLs."""

    #: The store's name in flows and in Artifacts (``StoreName``).
    name: str

    @abstractmethod
    def put_url(
        self, key: str, ttl: float, *, internal: bool = False, create_only: bool = False
    ) -> str:
        """A URL that accepts HTTP PUTs of the object's bytes for ``ttl`` seconds.

        ``internal`` asks for the address the service and its workers use;
        otherwise the address handed to clients (browsers, curl). ``create_only``
        asks for a URL that refuses to replace an existing object, where the
        backend can enforce it (the local store can; S3 cannot for plain clients).
        """

    @abstractmethod
    def get_url(self, key: str, ttl: float, *, internal: bool = False) -> str:
        """A URL that answers HTTP GET with the object's bytes for ``ttl`` seconds."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo | None:
        """Size (and stored content type, if any) of ``key``, or None if it does not exist."""

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    @abstractmethod
    def open_read(self, key: str) -> BinaryIO:
        """A readable binary stream of the object; raises ObjectNotFound."""

    @abstractmethod
    def write(self, key: str, data: BinaryIO, *, content_type: str | None = None) -> ObjectInfo:
        """Store the bytes read from ``data`` (streamed, never whole in memory)."""

    @abstractmethod
    def copy(self, source: str, target: str) -> ObjectInfo:
        """Put a copy of ``source`` at ``target`` (replacing it), inside the store: its
        bytes never pass through this process where the store can avoid it. Raises
        ObjectNotFound when ``source`` is gone."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""

    def delete_many(self, keys: list[str]) -> None:
        """Remove each of ``keys`` (missing ones are not an error), in as few calls as the
        store allows."""
        for key in keys:
            self.delete(key)

    @abstractmethod
    def list(self, prefix: str, limit: int) -> list[ObjectInfo]:
        """The objects under ``prefix/`` (keys in full, content types unknown), in key
        order, at most ``limit``: a caller that gets ``limit`` may have more to see."""

    def sizes(self, prefix: str) -> dict[str, int]:
        """Bytes stored under ``prefix/`` per next segment of their keys (per tenant under
        ``tenants``), each stored object counted once. Reads every object's listing:
        for a periodic measure, not for a request."""
        raise NotImplementedError

    def key_of_url(self, url: str) -> str | None:
        """The key of an object this store's GET URL ``url`` names, or None when the URL
        is not one of this store's; raises SignatureInvalid for one of ours that has
        expired or was altered, where the store can tell."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; safe to call twice."""
