#!/usr/bin/python3
"""Take a file out of a zip archive, or list it, refusing hostile archives.

    unzip-entry extract   INPUT_ARCHIVE -> OUTPUT_FILE     (one entry's bytes)
    unzip-entry list      INPUT_ARCHIVE -> OUTPUT_LISTING  (JSON: each file, unpacked and hashed)

A node output is one file: extract gives one entry (FLAG_ENTRY, its path in
the archive; by default the archive's only file). Flags for both: MAX_ENTRIES
(default 10000), MAX_TOTAL_MB (what the entries may unpack to, in MiB;
default 1024), MAX_RATIO (how much smaller than its content an entry over
1 MiB may be compressed; default 100).

Before anything is unpacked the whole archive is checked: at most MAX_ENTRIES
entries; every path relative and inside the archive (no "/x", "C:x", "..",
backslash or control character: no zip-slip), no symbolic link, no name twice,
nothing encrypted; the declared sizes within MAX_TOTAL_MB and every declared
ratio within MAX_RATIO. While unpacking, the bytes actually produced are
counted against the entry's declared size, the ratio and the total, and
zipfile checks each CRC, so a lying header stops the node too. Exit 2 for a
bad flag or an entry that is not there, 1 for an archive refused or broken.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import stat
import sys
import zipfile
import zlib
from collections.abc import Callable
from datetime import datetime

CHUNK = 1 << 20
RATIO_FLOOR = 1 << 20  # small files of one repeated byte compress well, honestly


class UsageError(Exception):
    """A flag, the command or the environment is wrong: exit 2."""


class ArchiveError(Exception):
    """The archive is broken or refused: exit 1."""


class Limits:
    def __init__(self) -> None:
        self.entries = self._integer("MAX_ENTRIES", 10_000, 1, 1_000_000)
        self.total = self._integer("MAX_TOTAL_MB", 1024, 1, 1_048_576) * 1024 * 1024
        self.ratio = self._integer("MAX_RATIO", 100, 1, 100_000)

    @staticmethod
    def _integer(name: str, default: int, low: int, high: int) -> int:
        text = os.environ.get(f"FLAG_{name}", "").strip() or str(default)
        if not text.isdigit() or not low <= int(text) <= high:
            raise UsageError(
                f"{name.lower()} must be an integer from {low} to {high}, got {text!r}"
            )
        return int(text)


def path_problem(name: str) -> str | None:
    """Why an entry path is unsafe to unpack anywhere, or None."""
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        return "holds a control character"
    if "\\" in name:
        return "holds a backslash (a Windows path separator)"
    if name.startswith("/"):
        return "is absolute"
    if re.match(r"[A-Za-z]:", name):
        return "names a drive"
    if ".." in name.split("/"):
        return "climbs out of the archive with '..' (zip-slip)"
    if not name.strip("/"):
        return "is empty"
    return None


def too_compressed(size: int, compressed: int, ratio: int) -> bool:
    return size > RATIO_FLOOR and size > ratio * max(1, compressed)


def is_symlink(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def checked(path: str, limits: Limits) -> tuple[zipfile.ZipFile, list[zipfile.ZipInfo]]:
    """The open archive and its files, once every entry has passed the checks."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"the input is not a readable zip archive: {exc}") from None
    entries = archive.infolist()
    if len(entries) > limits.entries:
        raise ArchiveError(
            f"the archive has {len(entries)} entries, over max_entries {limits.entries}"
        )
    seen: set[str] = set()
    for info in entries:
        name = info.filename
        problem = path_problem(name) or ("is a symbolic link" if is_symlink(info) else None)
        if problem:
            raise ArchiveError(f"refused: entry {name!r} {problem}")
        if info.flag_bits & 0x1:
            raise ArchiveError(f"refused: entry {name!r} is encrypted")
        normal = posixpath.normpath(name)
        if normal in seen:
            raise ArchiveError(f"refused: the archive holds {normal!r} twice")
        seen.add(normal)
        if too_compressed(info.file_size, info.compress_size, limits.ratio):
            raise ArchiveError(
                f"refused: entry {name!r} declares {info.file_size} bytes from"
                f" {info.compress_size} compressed, over max_ratio {limits.ratio}:1 (a zip bomb?)"
            )
    declared = sum(info.file_size for info in entries)
    if declared > limits.total:
        raise ArchiveError(
            f"refused: the entries declare {declared} bytes in all, over max_total_mb"
            f" {limits.total // (1024 * 1024)} (a zip bomb?)"
        )
    return archive, [info for info in entries if not info.is_dir()]


def unpack(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, sink: Callable[[bytes], object],
    limits: Limits, already: int = 0,
) -> int:  # fmt: skip
    """Stream one entry into ``sink``, counting what it really unpacks to; its size."""
    written = 0
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(CHUNK):
                written += len(chunk)
                if written > info.file_size:
                    raise ArchiveError(
                        f"refused: entry {info.filename!r} unpacks to more than the"
                        f" {info.file_size} bytes it declares (a zip bomb?)"
                    )
                if already + written > limits.total:
                    raise ArchiveError("refused: the entries unpack to over max_total_mb")
                if too_compressed(written, info.compress_size, limits.ratio):
                    raise ArchiveError(
                        f"refused: entry {info.filename!r} unpacks over max_ratio"
                        f" {limits.ratio}:1 (a zip bomb?)"
                    )
                sink(chunk)
    except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError, RuntimeError) as exc:
        raise ArchiveError(f"entry {info.filename!r} cannot be unpacked: {exc}") from None
    if written != info.file_size:
        raise ArchiveError(
            f"entry {info.filename!r} unpacks to {written} bytes, not the {info.file_size}"
            " it declares"
        )
    return written


def extract(source: str, limits: Limits) -> str:
    target = os.environ.get("OUTPUT_FILE")
    if not target:
        raise UsageError("the extract command writes the output 'file': bind it in the flow")
    wanted = os.environ.get("FLAG_ENTRY", "").strip()
    if wanted and path_problem(wanted):
        raise UsageError(f"entry {wanted!r} {path_problem(wanted)}")
    archive, files = checked(source, limits)
    with archive:
        if wanted:
            key = posixpath.normpath(wanted)
            found = [i for i in files if posixpath.normpath(i.filename) == key]
            if not found:
                names = ", ".join(i.filename for i in files[:20])
                raise UsageError(f"the archive has no file {wanted!r} (it has: {names})")
        elif len(files) != 1:
            names = ", ".join(i.filename for i in files[:20])
            raise UsageError(
                f"the archive holds {len(files)} files ({names}): set the entry flag to the one"
                " to extract"
            )
        info = (found if wanted else files)[0]
        with open(target, "wb") as out:
            size = unpack(archive, info, out.write, limits)
    return f"extracted {info.filename!r} ({size} bytes)"


def listing(source: str, limits: Limits) -> str:
    target = os.environ.get("OUTPUT_LISTING")
    if not target:
        raise UsageError("the list command writes the output 'listing': bind it in the flow")
    archive, files = checked(source, limits)
    entries, total = [], 0
    with archive:
        for info in files:
            digest = hashlib.sha256()
            size = unpack(archive, info, digest.update, limits, total)
            total += size
            entries.append({
                "name": info.filename,
                "size": size,
                "compressed_size": info.compress_size,
                "modified": datetime(*info.date_time).isoformat(),
                "sha256": digest.hexdigest(),
            })  # fmt: skip
    with open(target, "w", encoding="utf-8") as out:
        json.dump({"count": len(entries), "total_size": total, "entries": entries}, out, indent=2)
        out.write("\n")
    return f"listed {len(entries)} file(s), {total} bytes, every one unpacked and checked"


MODES = {"extract": extract, "list": listing}


def main(argv: list[str]) -> int:
    try:
        mode = argv[0] if argv else "extract"
        if mode not in MODES or len(argv) > 1:
            raise UsageError(f"usage: unzip-entry [{'|'.join(MODES)}], got {' '.join(argv)!r}")
        source = os.environ.get("INPUT_ARCHIVE")
        if not source:
            raise UsageError("INPUT_ARCHIVE must be set (the node contract)")
        print(f"unzip: {MODES[mode](source, Limits())}")
    except UsageError as exc:
        print(f"unzip: {exc}", file=sys.stderr)
        return 2
    except (ArchiveError, OSError) as exc:
        print(f"unzip: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
