#!/usr/bin/python3
"""Put the node's input files into one zip archive.

Node contract: INPUT_FILE1 ... INPUT_FILE8 (file1 is required, the others are
taken when bound), OUTPUT_ARCHIVE, and flags: FLAG_NAMES (comma-separated
entry paths, one per bound input in order; default each input's file name,
such as file1.png), FLAG_COMPRESSION (deflate or store; default deflate),
FLAG_LEVEL (deflate's level 0-9, default 6), FLAG_MAX_TOTAL_MB (the most the
inputs may add up to, default 1024).

Entry paths must be relative and stay inside the archive (no "/x", "..",
backslash or control character) and differ from each other. Every entry is
dated 1980-01-01 with mode 0644, so the same inputs give the same bytes. Exit 2
for bad flags or names, 1 for inputs over the limit or that cannot be read.
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
    """(entry path, input file) for each bound input, in order."""
    files = [Path(os.environ[k]) for k in (f"INPUT_{i}" for i in INPUTS) if os.environ.get(k)]
    if not files:
        raise UsageError("INPUT_FILE1 must be set (the node contract): bind the input file1")
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
