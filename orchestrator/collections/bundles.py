"""A collection's items stored one object each, from an archive that holds them all.

A collection travels as one archive where one URL is all there is: a client's
upload to its WaitingURL (a zip or a tar) and a node's collection output (a tar
the worker made of the directory). The service expands it into the items'
objects under the collection's key, ``<key>/<item name>``, hashing and sniffing
each as it is written, and then drops the archive. Blocking: run on a store thread.
"""

from __future__ import annotations

import hashlib
import mimetypes
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from orchestrator.collections.archives import ArchiveLimits, ArchiveRefused, expand, kind_of
from orchestrator.mime import OCTET_STREAM, SNIFF_BYTES, TEXT_PLAIN, essence, extension_for, sniff
from orchestrator.models import CollectionItem
from storage import Store

#: An archive is spooled to disk when its store's reader cannot seek (S3).
_SPOOL_BLOCK = 1 << 20
#: Bytes of an empty tar: its end-of-archive blocks, all zeros.
_TAR_BLOCK = 512
#: Types that say too little of a file to name its extension.
_VAGUE_TYPES = frozenset({TEXT_PLAIN, OCTET_STREAM, ""})


def bundle_key(collection_key: str) -> str:
    """Where a collection's archive is put: beside its items' folder, not in it."""
    return f"{collection_key}.bundle"


def item_key(collection_key: str, item: str) -> str:
    return f"{collection_key}/{item}"


def typed_item_name(name: str, content_type: str) -> str:
    """An item's name with the extension of the type a node made it as: a PNG mapped
    to a JPEG thumbnail is ``cat.jpg``, a CSV parsed to JSON ``lyon.json``. Unchanged
    when the name already fits the type, or when the type says too little to name it
    (plain text, bytes): sniffing cannot tell CSV from text."""
    content_type = essence(content_type)
    extension = extension_for(content_type) if content_type not in _VAGUE_TYPES else ""
    if not extension:
        return name
    folder, _, leaf = name.rpartition("/")
    stem, dot, old = leaf.rpartition(".")
    if dot and mimetypes.guess_type(leaf)[0] == content_type:
        return name
    renamed = (stem if dot and stem else leaf) + extension
    return f"{folder}/{renamed}" if folder else renamed


def expand_bundle(store: Store, collection_key: str, limits: ArchiveLimits) -> list[CollectionItem]:
    """The items of the archive at ``bundle_key(collection_key)``, written each to its
    object; ArchiveRefused (nothing kept) when the archive passes a limit or is none."""
    written: list[CollectionItem] = []
    try:
        with store.open_read(bundle_key(collection_key)) as raw, _seekable(raw) as source:
            head = source.read(_TAR_BLOCK + 512)
            source.seek(0)
            if not head:
                raise ArchiveRefused(
                    "ARCHIVE_EMPTY", "the upload is empty; send a zip or tar of the items"
                )
            kind = kind_of(head)
            if kind is None:
                if head.count(0) == len(head):  # a tar of no files
                    return []
                raise ArchiveRefused(
                    "ARCHIVE_UNKNOWN",
                    f"the upload is {sniff(head)}, not a zip or tar; send the items as one",
                )
            for entry in expand(source, kind, limits):
                with entry.open() as reader:
                    written.append(
                        _write_item(store, collection_key, entry.name, reader)  # type: ignore[arg-type]
                    )
    except BaseException:
        for item in written:  # nothing half-expanded stays
            store.delete(item.object_name)
        raise
    return written


def drop_bundle(store: Store, collection_key: str) -> None:
    store.delete(bundle_key(collection_key))


def _write_item(store: Store, collection_key: str, name: str, reader: BinaryIO) -> CollectionItem:
    head = _read_up_to(reader, SNIFF_BYTES)
    content_type = sniff(head, complete=len(head) < SNIFF_BYTES)
    hashing = _Hashing(head, reader)
    info = store.write(item_key(collection_key, name), hashing, content_type=content_type)  # type: ignore[arg-type]
    return CollectionItem(
        name=name,
        object_name=item_key(collection_key, name),
        size=info.size,
        content_type=content_type,
        sha256=hashing.hash.hexdigest(),
    )


def _read_up_to(reader: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes (a bounded reader gives at most a chunk per read)."""
    parts, left = [], size
    while left > 0:
        data = reader.read(left)
        if not data:
            break
        parts.append(data)
        left -= len(data)
    return b"".join(parts)


class _Hashing:
    """``head`` then the rest of ``reader``, hashed as the store reads it."""

    def __init__(self, head: bytes, reader: BinaryIO) -> None:
        self.head, self.reader = head, reader
        self.hash = hashlib.sha256(head)

    def read(self, size: int = -1) -> bytes:
        if self.head:
            data, self.head = self.head, b""
            return data
        data = self.reader.read(size)
        self.hash.update(data)
        return data


@contextmanager
def _seekable(raw: BinaryIO) -> Iterator[BinaryIO]:
    """``raw`` itself when it can seek (a local file), else a spooled copy of it."""
    try:
        seekable = raw.seekable()
    except (AttributeError, OSError):
        seekable = False
    if seekable:
        yield raw
        return
    with tempfile.TemporaryFile(prefix="pipewell-bundle-") as spool:
        shutil.copyfileobj(raw, spool, _SPOOL_BLOCK)
        spool.seek(0)
        yield spool  # type: ignore[misc]


__all__ = ["bundle_key", "drop_bundle", "expand_bundle", "item_key", "typed_item_name"]
