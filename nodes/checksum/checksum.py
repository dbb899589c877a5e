#!/usr/bin/python3
"""Checksums of any file, as JSON.

Node contract: INPUT_FILE (the file), OUTPUT_CHECKSUMS (where the JSON goes),
FLAG_ALGORITHMS (comma-separated, default "sha256,md5"; any of md5, sha1,
sha224, sha256, sha384, sha512, blake2b, blake2s, sha3_256, sha3_512).

The output is one object: {"size": bytes, "<algorithm>": "<lower-case hex>", ...}.
The file is read once, in 1 MiB chunks, whatever its size. Exit 2 for an
unknown algorithm, 1 for a file that cannot be read.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

ALGORITHMS = (
    "md5", "sha1", "sha224", "sha256", "sha384", "sha512",
    "blake2b", "blake2s", "sha3_256", "sha3_512",
)  # fmt: skip
CHUNK = 1 << 20


class UsageError(Exception):
    """A flag or the environment is wrong: exit 2."""


def algorithms(text: str) -> list[str]:
    """The algorithms named, in order, once each; "sha-256" and "sha3-256" spellings too."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    names = [name.replace("sha3-", "sha3_").replace("-", "") for name in names]
    unknown = [name for name in names if name not in ALGORITHMS]
    if unknown or not names:
        raise UsageError(
            f"algorithms must be a comma-separated list of {', '.join(ALGORITHMS)}; got {text!r}"
        )
    return list(dict.fromkeys(names))


def main() -> int:
    try:
        source = os.environ.get("INPUT_FILE")
        target = os.environ.get("OUTPUT_CHECKSUMS")
        if not source or not target:
            raise UsageError("INPUT_FILE and OUTPUT_CHECKSUMS must be set (the node contract)")
        names = algorithms(os.environ.get("FLAG_ALGORITHMS") or "sha256,md5")
    except UsageError as exc:
        print(f"checksum: {exc}", file=sys.stderr)
        return 2
    hashes = {name: hashlib.new(name) for name in names}
    size = 0
    try:
        with open(source, "rb") as stream:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                for digest in hashes.values():
                    digest.update(chunk)
        result = {"size": size, **{name: digest.hexdigest() for name, digest in hashes.items()}}
        with open(target, "w", encoding="utf-8") as out:
            json.dump(result, out, indent=2)
            out.write("\n")
    except OSError as exc:
        print(f"checksum: {exc}", file=sys.stderr)
        return 1
    print(f"checksummed {size} bytes: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
