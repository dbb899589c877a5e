#!/usr/bin/python3
"""Take files out of a zip archive, or list it, refusing hostile archives.

    unzip-entry extract   INPUT_ARCHIVE -> OUTPUT_FILE     (one entry's bytes)
    unzip-entry all       INPUT_ARCHIVE -> OUTPUT_FILES    (a collection: every file)
    unzip-entry list      INPUT_ARCHIVE -> OUTPUT_LISTING  (JSON: each file, unpacked and hashed)

extract gives one entry (FLAG_ENTRY, its path in the archive; by default the
archive's only file). all writes every file into the collection output's
directory, each an item named by its path in the archive, made safe by the
rule the service applies to an uploaded zip (see item_name); folders and the
junk other systems add (__MACOSX/, ._*, .DS_Store, Thumbs.db, desktop.ini)
are left out, and two entries that would be the same item refuse the archive.
Flags for all three: MAX_ENTRIES
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
import unicodedata
import zipfile
import zlib
from collections.abc import Callable
from datetime import datetime

CHUNK = 1 << 20
RATIO_FLOOR = 1 << 20  # small files of one repeated byte compress well, honestly
# Item names: the rule of orchestrator/collections/archives.py (item_name), which
# names the items of an uploaded zip. Copied, not imported: the image has no orchestrator.
UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
JUNK_NAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
MAX_NAME_LENGTH = 200


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


def item_name(path: str) -> str | None:
    """The item an entry becomes, or None for folders and junk.

    ``\\`` reads as ``/``; empty, ``.`` and ``..`` parts are dropped; in each part
    accents fall off (été -> ete), a character of another script becomes its code
    point (写 -> _5199), anything else but letters, digits, '.', '_' and '-' becomes
    '_', and leading dots go. A name that is already safe stays itself.
    """
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    if not parts or path.endswith(("/", "\\")):
        return None
    if parts[0] == "__MACOSX" or parts[-1] in JUNK_NAMES or parts[-1].startswith("._"):
        return None
    name = "/".join(safe_part(part) for part in parts)
    if len(name) > MAX_NAME_LENGTH:
        raise ArchiveError(
            f"refused: entry {path[:80]!r}... has a path over {MAX_NAME_LENGTH} characters"
        )
    return name


def safe_part(part: str) -> str:
    out = []
    for char in unicodedata.normalize("NFKD", part):
        if unicodedata.combining(char):
            continue
        out.append(f"_{ord(char):x}" if ord(char) >= 128 else UNSAFE.sub("_", char))
    return "".join(out).lstrip(".") or "_"


def clash(seen: dict[str, str], name: str, path: str) -> None:
    """Refuse a second entry of the same item name, or a file where another entry has
    a folder (``a`` and ``a/b``): one path cannot be both a file and a folder."""
    earlier = seen.setdefault(name, path)
    if earlier is not path:
        raise ArchiveError(
            f"refused: entries {earlier!r} and {path!r} would both be item {name!r}; rename one"
        )
    folder = "/" + name  # folders are noted under a leading "/": no item name has one
    if folder in seen:
        raise ArchiveError(
            f"refused: entry {path!r} is a file where entry {seen[folder]!r} has a folder;"
            " rename one"
        )
    parts = name.split("/")
    for depth in range(1, len(parts)):
        parent = "/".join(parts[:depth])
        if parent in seen:
            raise ArchiveError(
                f"refused: entry {path!r} is inside {parent!r}, which entry {seen[parent]!r}"
                " has as a file; rename one"
            )
        seen.setdefault("/" + parent, path)


def extract_all(source: str, limits: Limits) -> str:
    target = os.environ.get("OUTPUT_FILES")
    if not target:
        raise UsageError(
            "the all command writes the collection output 'files': bind it in the flow"
        )
    archive, files = checked(source, limits)
    with archive:
        seen: dict[str, str] = {}
        named, skipped = [], []
        for info in files:
            name = item_name(info.filename)
            if name is None:
                skipped.append(info.filename)
                continue
            clash(seen, name, info.filename)
            named.append((name, info))
        os.makedirs(target, exist_ok=True)
        total, made = 0, {target}
        for name, info in named:
            path = os.path.join(target, *name.split("/"))
            parent = os.path.dirname(path)
            if parent not in made:
                os.makedirs(parent, exist_ok=True)
                made.add(parent)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            with open(os.open(path, flags, 0o644), "wb") as out:
                total += unpack(archive, info, out.write, limits, total)
    renamed = [(info.filename, name) for name, info in named if name != info.filename]
    for path, name in renamed[:20]:
        print(f"unzip: entry {path!r} is item {name!r}")
    if len(renamed) > 20:
        print(f"unzip: ... and {len(renamed) - 20} more renamed")
    if skipped:
        print(f"unzip: left out {len(skipped)} junk file(s): {', '.join(skipped[:10])}")
    return (
        f"extracted {len(named)} file(s), {total} bytes, into the collection"
        f" ({len(renamed)} renamed to safe item names)"
    )


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


MODES = {"extract": extract, "all": extract_all, "list": listing}


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
