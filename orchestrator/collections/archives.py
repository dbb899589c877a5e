"""Zip and tar archives expanded into a collection's items, safely, entry by entry.

An uploaded archive is untrusted. Expanding it never writes outside an item's
place, never holds an entry in memory, and stops at the limits the moment they
are passed, on the sizes an archive declares and on the bytes it really holds
(a header may lie):

- at most ``max_entries`` files, counted from the zip's central directory before
  any data is read (a tar's as it is read);
- at most ``max_entry_bytes`` per entry and ``max_total_bytes`` in all;
- an entry over ``ratio_floor`` may not shrink more than ``max_ratio`` times when
  compressed (a zip bomb is refused after reading a few MiB of it).

Items are named by their path in the archive, made safe: ``\\`` reads as ``/``;
empty, ``.`` and ``..`` parts are dropped (nothing climbs out); in each part,
accents fall off (``été`` → ``ete``), a character of another script becomes its
code point (``写`` → ``_5199``), and anything else but letters, digits, ``.``,
``_`` and ``-`` becomes ``_``; a part may not start with a dot.
``photos/2024/a.jpg`` stays itself and ``../../etc/passwd`` becomes ``etc/passwd``. Two entries
whose names end up equal are refused (ARCHIVE_NAME_CLASH), naming both: silently
keeping one would lose a user's file. Folders, links, devices and the junk other
systems add (``__MACOSX/``, ``._*``, ``.DS_Store``, ``Thumbs.db``) are skipped.

zipfile needs a seekable source: the caller spools an upload to a file first.
"""

from __future__ import annotations

import re
import tarfile
import unicodedata
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal

Kind = Literal["zip", "tar"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_JUNK_NAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
CHUNK = 1 << 16


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int = 10_000
    max_total_bytes: int = 1 << 30
    max_entry_bytes: int = 256 << 20
    max_ratio: int = 100
    #: Entries up to this size may compress any way (a small text of spaces is fine).
    ratio_floor: int = 1 << 20
    max_name_length: int = 200


class ArchiveRefused(ValueError):
    """The archive cannot be expanded: a stable code and what to change."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def kind_of(head: bytes) -> Kind | None:
    """An archive's kind from its first bytes (a gzip is taken for a .tar.gz)."""
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"\x1f\x8b") or head[257:262] == b"ustar":
        return "tar"
    return None


def item_name(path: str, limits: ArchiveLimits | None = None) -> str | None:
    """The item an entry becomes (see the module's rule), or None for junk and folders."""
    limit = (limits or ArchiveLimits()).max_name_length
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    if not parts or path.endswith(("/", "\\")):
        return None
    if parts[0] == "__MACOSX" or parts[-1] in _JUNK_NAMES or parts[-1].startswith("._"):
        return None
    safe = [_safe_part(part) for part in parts]
    name = "/".join(safe)
    if len(name) > limit:
        raise ArchiveRefused(
            "ARCHIVE_NAME_TOO_LONG",
            f"entry {path[:80]!r}… has a path over {limit} characters; shorten it",
        )
    return name


def _safe_part(part: str) -> str:
    # Object keys are ASCII: accents fall off (été → ete); a character with no ASCII
    # form keeps its code point (写 → _5199), so two names of other scripts stay two.
    out = []
    for char in unicodedata.normalize("NFKD", part):
        if unicodedata.combining(char):
            continue
        if ord(char) >= 128:
            out.append(f"_{ord(char):x}")
        else:
            out.append(_UNSAFE.sub("_", char))
    return "".join(out).lstrip(".") or "_"


@dataclass(frozen=True)
class Entry:
    """One item of the archive: its name, declared size, and a bounded reader."""

    name: str
    path: str
    size: int
    open: Callable[[], BinaryIO]


class _Bounded:
    """A reader that counts what it gives against the entry's and the archive's limits.

    Each ``read`` gives at most CHUNK bytes (``read()`` too): read until ``b""``.
    """

    def __init__(
        self,
        raw: BinaryIO,
        entry: str,
        compressed: int | None,
        limits: ArchiveLimits,
        total: list[int],
    ) -> None:
        self.raw, self.entry, self.compressed = raw, entry, compressed
        self.limits, self.total, self.read_bytes = limits, total, 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(CHUNK if size is None or size < 0 else min(size, CHUNK))
        self.read_bytes += len(data)
        self.total[0] += len(data)
        _check_sizes(self.entry, self.read_bytes, self.compressed, self.total[0], self.limits)
        return data

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> _Bounded:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_sizes(
    entry: str, size: int, compressed: int | None, total: int, limits: ArchiveLimits
) -> None:
    if size > limits.max_entry_bytes:
        raise ArchiveRefused(
            "ARCHIVE_ENTRY_TOO_LARGE",
            f"entry {entry!r} is over {limits.max_entry_bytes} bytes; split it or send it alone",
        )
    if total > limits.max_total_bytes:
        raise ArchiveRefused(
            "ARCHIVE_TOO_LARGE",
            f"the archive expands to over {limits.max_total_bytes} bytes; send it in parts",
        )
    if compressed is not None and size > limits.ratio_floor:
        if size > limits.max_ratio * max(compressed, 1):
            raise ArchiveRefused(
                "ARCHIVE_RATIO",
                f"entry {entry!r} expands over {limits.max_ratio} times its compressed size "
                "(a zip bomb?); such an entry is not taken",
            )


def expand(source: BinaryIO, kind: Kind, limits: ArchiveLimits | None = None) -> Iterator[Entry]:
    """The archive's items, in archive order; ArchiveRefused at the first limit passed.

    Each entry's ``open()`` must be read (or closed) before the next entry is asked for:
    a tar is read as one stream.
    """
    limits = limits or ArchiveLimits()
    try:
        if kind == "zip":
            yield from _zip_entries(source, limits)
        else:
            yield from _tar_entries(source, limits)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise ArchiveRefused(
            "ARCHIVE_UNREADABLE", f"the archive cannot be read ({exc}); send a whole zip or tar"
        ) from None


def _zip_entries(source: BinaryIO, limits: ArchiveLimits) -> Iterator[Entry]:
    archive = zipfile.ZipFile(source)
    infos = [i for i in archive.infolist() if not i.is_dir()]
    if len(infos) > limits.max_entries:
        raise ArchiveRefused(
            "ARCHIVE_TOO_MANY_ENTRIES",
            f"the archive has {len(infos)} entries, over {limits.max_entries}; send it in parts",
        )
    named = _named([(i.filename, i) for i in infos], limits)
    total = [0]
    declared = 0
    for _name, info in named:
        declared += info.file_size
        _check_sizes(info.filename, info.file_size, info.compress_size, declared, limits)
    for name, info in named:

        def opener(info: zipfile.ZipInfo = info) -> BinaryIO:
            raw = archive.open(info)
            return _Bounded(raw, info.filename, info.compress_size, limits, total)  # type: ignore[return-value]

        yield Entry(name=name, path=info.filename, size=info.file_size, open=opener)


def _tar_entries(source: BinaryIO, limits: ArchiveLimits) -> Iterator[Entry]:
    archive = tarfile.open(fileobj=source, mode="r|*")
    total = [0]
    seen: dict[str, str] = {}
    count = 0
    for member in archive:
        if not member.isreg():
            continue  # folders, links, devices: never followed, never made
        name = item_name(member.name, limits)
        if name is None:
            continue
        count += 1
        if count > limits.max_entries:
            raise ArchiveRefused(
                "ARCHIVE_TOO_MANY_ENTRIES",
                f"the archive has over {limits.max_entries} entries; send it in parts",
            )
        _clash(seen, name, member.name)
        _check_sizes(member.name, member.size, None, total[0] + member.size, limits)
        raw = archive.extractfile(member)
        if raw is None:
            continue

        def opener(raw: BinaryIO = raw, path: str = member.name) -> BinaryIO:
            return _Bounded(raw, path, None, limits, total)  # type: ignore[return-value]

        yield Entry(name=name, path=member.name, size=member.size, open=opener)


def _named(
    entries: list[tuple[str, zipfile.ZipInfo]], limits: ArchiveLimits
) -> list[tuple[str, zipfile.ZipInfo]]:
    seen: dict[str, str] = {}
    named = []
    for path, info in entries:
        name = item_name(path, limits)
        if name is None:
            continue
        _clash(seen, name, path)
        named.append((name, info))
    return named


def check_names(names: list[str], limits: ArchiveLimits | None = None) -> None:
    """Item names a client gives one by one: each already the item it would be (its
    safe form), none twice, none a folder of another. ArchiveRefused otherwise."""
    seen: dict[str, str] = {}
    for name in names:
        safe = item_name(name, limits) if isinstance(name, str) else None
        if safe != name:
            hint = f"; it would be {safe!r}" if safe else ""
            raise ArchiveRefused(
                "ITEM_NAME_INVALID",
                f"item name {name!r} is not a relative path of letters, digits, '.', '_' and "
                f"'-' parts (none starting with '.'){hint}",
            )
        _clash(seen, name, name)


def _clash(seen: dict[str, str], name: str, path: str) -> None:
    """Refuse a second entry of the same item name, or a file where another entry has a
    folder (``a`` and ``a/b``): an item is an object whose key may not be both."""
    earlier = seen.setdefault(name, path)
    if earlier is not path:  # a second entry, even of the very same path
        raise ArchiveRefused(
            "ARCHIVE_NAME_CLASH",
            f"entries {earlier!r} and {path!r} would both be item {name!r}; rename one",
        )
    folder = "/" + name  # folders are noted under a leading "/": no item name has one
    if folder in seen:
        raise ArchiveRefused(
            "ARCHIVE_NAME_CLASH",
            f"entry {path!r} is a file where entry {seen[folder]!r} has a folder; rename one",
        )
    parts = name.split("/")
    for depth in range(1, len(parts)):
        parent = "/".join(parts[:depth])
        if parent in seen:
            raise ArchiveRefused(
                "ARCHIVE_NAME_CLASH",
                f"entry {path!r} is inside {parent!r}, which entry {seen[parent]!r} has as a "
                "file; rename one",
            )
        seen.setdefault("/" + parent, path)


__all__ = [
    "ArchiveLimits",
    "ArchiveRefused",
    "Entry",
    "check_names",
    "expand",
    "item_name",
    "kind_of",
]
