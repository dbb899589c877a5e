"""pipewell/checksum through the service: the catalog's NodeDef and image together."""

from __future__ import annotations

import hashlib
import os

import pytest

from tests.catalog import run_node

pytestmark = pytest.mark.docker


async def test_sha256_and_md5_of_a_binary_file_by_default(start_service):
    client = await start_service()
    data = os.urandom(300_000)
    done = await run_node(client, "pipewell/checksum", {"file": data}, ["checksums"])
    assert done.status == "COMPLETE", done.error
    assert done.json("checksums") == {
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "md5": hashlib.md5(data).hexdigest(),
    }


async def test_algorithms_flag_chooses_and_orders_them_and_refuses_unknown_ones(start_service):
    client = await start_service()
    data = b"hello, pipewell\n"
    done = await run_node(
        client, "pipewell/checksum", {"file": data}, ["checksums"],
        flags={"algorithms": "sha-1, sha3-256,blake2b"},
    )  # fmt: skip
    assert done.status == "COMPLETE", done.error
    result = done.json("checksums")
    assert list(result) == ["size", "sha1", "sha3_256", "blake2b"]
    assert result["sha3_256"] == hashlib.sha3_256(data).hexdigest()
    assert result["blake2b"] == hashlib.blake2b(data).hexdigest()

    refused = await run_node(
        client, "pipewell/checksum", {"file": data}, ["checksums"], flags={"algorithms": "crc32"}
    )
    assert refused.status == "ERROR"
    assert "command exited with code 2: checksum: algorithms must be" in refused.error
