#!/usr/bin/python3
"""Put the node's input files, or every item of a collection, into one zip archive.

Node contract: either INPUT_FILE1 ... INPUT_FILE8 (those bound, in order) or
INPUT_FILES (a collection input: a directory holding each item as a file under
its item name, such as photos/cat.jpg), never both; OUTPUT_ARCHIVE; and flags:
FLAG_NAMES (comma-separated entry paths, one per bound file input in order;
default each input's file name, such as file1.png; not for a collection, whose
entries are its item names, in name order), FLAG_COMPRESSION (deflate or store;
default deflate), FLAG_LEVEL (deflate's level 0-9, default 6),
FLAG_MAX_TOTAL_MB (the most the inputs may add up to, default 1024).

Entry paths must be relative and stay inside the archive (no "/x", "..",
backslash or control character) and differ from each other. Every entry is
dated 1980-01-01 with mode 0644, so the same inputs give the same bytes. Exit 2
for bad flags or names or for inputs bound both ways or not at all, 1 for
inputs over the limit or that cannot be read.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import sys
import zipfile
from pathlib import Path

INPUTS = [f"FILE{n}" for n in range(1, 9)]
COLLECTION = "FILES"


class UsageError(Exception):
    """A flag or the environment is wrong: exit 2."""


class InputError(Exception):
    """The inputs cannot be archived: exit 1."""


def flag(name: str, default: str) -> str:
    return os.environ.get(f"FLAG_{name}", "").strip() or default


def integer(name: str, default: int, low: int, high: int) -> int:
    text = flag(name, str(default))
    if not text.isdigit() or not low <= int(text) <= high:
        raise UsageError(f"{name.lower()} must be an integer from {low} to {high}, got {text!r}")
    return int(text)


def path_problem(name: str) -> str | None:
    """Why an entry path would be unsafe to unpack, or None."""
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        return "holds a control character"
    if "\\" in name:
        return "holds a backslash"
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return "is absolute"
    if ".." in name.split("/"):
        return "climbs out of the archive with '..'"
    if not name.strip("/") or name.endswith("/"):
        return "names no file"
    return None


def entries() -> list[tuple[str, Path]]:
    """(entry path, input file) for each bound input, in order, or each item of the
    collection, in name order."""
    bound = [i for i in INPUTS if os.environ.get(f"INPUT_{i}")]
    directory = os.environ.get(f"INPUT_{COLLECTION}")
    if directory and bound:
        files = ", ".join(i.lower() for i in bound)
        raise UsageError(
            f"bind either the collection input files or file1 to file8, not both (bound: files,"
            f" {files})"
        )
    if directory:
        return collection_entries(Path(directory))
    if not bound:
        raise UsageError("nothing to archive: bind the collection input files, or file1 to file8")
    files = [Path(os.environ[f"INPUT_{i}"]) for i in bound]
    listed = os.environ.get("FLAG_NAMES", "").strip()
    names = [n.strip() for n in listed.split(",")] if listed else [f.name for f in files]
    if len(names) != len(files):
        raise UsageError(f"names lists {len(names)} name(s) for {len(files)} bound input(s)")
    for name in names:
        if path_problem(name):
            raise UsageError(f"entry name {name!r} {path_problem(name)}")
    normal = [posixpath.normpath(n) for n in names]
    twice = sorted({n for n in normal if normal.count(n) > 1})
    if twice:
        raise UsageError(f"names gives {', '.join(map(repr, twice))} more than once")
    return list(zip(names, files, strict=True))


def collection_entries(directory: Path) -> list[tuple[str, Path]]:
    """(item name, file) for each item under the collection's directory, by name."""
    if os.environ.get("FLAG_NAMES", "").strip():
        raise UsageError(
            "the names flag names file1 to file8's entries; a collection's entries are its"
            " item names: leave names unset"
        )
    if not directory.is_dir():
        raise InputError(f"the collection input files is not a directory: {directory}")
    found: list[tuple[str, Path]] = []
    pending = [directory]
    while pending:
        with os.scandir(pending.pop()) as listing:
            for entry in listing:
                path = Path(entry.path)
                if entry.is_dir(follow_symlinks=False):
                    pending.append(path)
                elif entry.is_file(follow_symlinks=False):
                    found.append((path.relative_to(directory).as_posix(), path))
                else:
                    name = path.relative_to(directory).as_posix()
                    raise InputError(f"item {name!r} of files is not a regular file")
    found.sort()
    for name, _ in found:
        if path_problem(name):
            raise InputError(f"item {name!r} of files {path_problem(name)}")
    return found


def main() -> int:
    try:
        target = os.environ.get("OUTPUT_ARCHIVE")
        if not target:
            raise UsageError("OUTPUT_ARCHIVE must be set (the node contract)")
        pairs = entries()
        method = flag("COMPRESSION", "deflate").lower()
        if method not in ("deflate", "store"):
            raise UsageError(f"compression must be deflate or store, got {method!r}")
        level = integer("LEVEL", 6, 0, 9)
        limit = integer("MAX_TOTAL_MB", 1024, 1, 1_048_576) * 1024 * 1024
        total = sum(path.stat().st_size for _, path in pairs)
        if total > limit:
            raise InputError(f"the inputs add up to {total} bytes, over max_total_mb")
        compression = zipfile.ZIP_DEFLATED if method == "deflate" else zipfile.ZIP_STORED
        with zipfile.ZipFile(target, "w", compression, compresslevel=level) as archive:
            for name, path in pairs:
                entry = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                entry.compress_type = compression
                entry.external_attr = 0o100644 << 16
                entry.file_size = path.stat().st_size
                with open(path, "rb") as source, archive.open(entry, "w") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
    except UsageError as exc:
        print(f"zip: {exc}", file=sys.stderr)
        return 2
    except (InputError, OSError) as exc:
        print(f"zip: {exc}", file=sys.stderr)
        return 1
    size = Path(target).stat().st_size
    print(f"zip: {len(pairs)} file(s), {total} bytes -> {size} bytes ({method})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
