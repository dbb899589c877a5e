"""The key of a node's work: what must be equal for its outputs to be equal.

The image is not in it: a tag names whatever image was built last, so only the
engine that would run the node can say which image that is now. An entry is kept
per key and image ID, and the worker confirms the ID (``Task.reuse``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: Part of every key: a change to what a key covers makes every earlier entry a miss.
KEY_VERSION = 1


@dataclass(frozen=True)
class Work:
    """A node's work as a key covers it. ``inputs``: input name → the digest of its
    bytes (None: not known, so the work has no key); ``outputs``: name → (declared
    type, whether a collection), as they name the files the node writes."""

    tenant: str
    node_id: str
    argv: Sequence[str] | None
    flags: Mapping[str, str]
    run_as_root: bool
    cache_version: str | None
    inputs: Mapping[str, str | None]
    outputs: Mapping[str, tuple[str | None, bool]]


def work_key(work: Work) -> str | None:
    """The work's key (hex sha256), or None when an input's bytes are not known by a
    digest: such a node always runs.

    The node's ID is in it because the engine gives it to the container
    (``PIPEWELL_NODE_ID``); the run's ID and the attempt number are not: they
    name this run, not the work.
    """
    if any(digest is None for digest in work.inputs.values()):
        return None
    document = {
        "version": KEY_VERSION,
        "tenant": work.tenant,
        "node": work.node_id,
        "argv": list(work.argv) if work.argv is not None else None,
        "flags": dict(sorted(work.flags.items())),
        "root": work.run_as_root,
        "cache_version": work.cache_version,
        "inputs": dict(sorted(work.inputs.items())),
        "outputs": {name: list(shape) for name, shape in sorted(work.outputs.items())},
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def collection_digest(members: Sequence[tuple[str, str]]) -> str | None:
    """A collection's digest from its items' (name, sha256 hex), in any order; None
    when an item's hash is not known."""
    if any(not sha256 for _name, sha256 in members):
        return None
    digest = hashlib.sha256()
    for name, sha256 in sorted(members):
        digest.update(f"{name}\0{sha256}\n".encode())
    return f"sha256-collection:{digest.hexdigest()}"


__all__ = ["KEY_VERSION", "Work", "collection_digest", "work_key"]
