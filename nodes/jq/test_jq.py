"""pipewell/jq through the service: the catalog's NodeDef and image together."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.catalog import run_node

pytestmark = pytest.mark.docker

ORDER = {
    "id": 17,
    "items": [
        {"name": "pen", "price": 2.5, "qty": 4},
        {"name": "lamp", "price": 31, "qty": 1},
        {"name": "desk", "price": 240, "qty": 1},
    ],
}


async def test_a_filter_gives_one_document_or_collects_many(start_service):
    client = await start_service()
    document = json.dumps(ORDER).encode()
    one, collected, identity = await asyncio.gather(
        run_node(client, "pipewell/jq", {"json": document}, ["result"],
                 flags={"filter": "[.items[] | select(.price > 10) | .name]"}),
        run_node(client, "pipewell/jq", {"json": document}, ["result"],
                 flags={"filter": ".items[] | .price * .qty", "collect": "true",
                        "compact": "true"}),
        run_node(client, "pipewell/jq", {"json": document}, ["result"]),
    )  # fmt: skip
    for done in (one, collected, identity):
        assert done.status == "COMPLETE", done.error
    assert one.json("result") == ["lamp", "desk"]
    assert one.text("result") == '[\n  "lamp",\n  "desk"\n]\n'
    assert collected.text("result") == "[10,31,240]\n"
    assert identity.json("result") == ORDER
    assert any("3 result(s) collected into an array" in line for line in collected.logs)


async def test_bad_json_bad_filters_and_runaway_filters_fail_saying_why(start_service):
    client = await start_service()
    document = json.dumps(ORDER).encode()
    # Over 8 KiB and starting with '{': it passes the type check, which only reads
    # the head of a large file, and reaches jq.
    broken = b'{"pad": "' + b"x" * 9000 + b'", "a": [1, 2,, 3]}'
    small_broken = b'{"a": [1, 2,, 3]}'
    runs = await asyncio.gather(
        run_node(client, "pipewell/jq", {"json": broken}, ["result"]),
        run_node(client, "pipewell/jq", {"json": small_broken}, ["result"]),
        run_node(client, "pipewell/jq", {"json": document}, ["result"],
                 flags={"filter": ".items | map(.name"}),
        run_node(client, "pipewell/jq", {"json": document}, ["result"],
                 flags={"filter": ".items.name"}),
        run_node(client, "pipewell/jq", {"json": document}, ["result"],
                 flags={"filter": ".items[]"}),
        run_node(client, "pipewell/jq", {"json": document}, ["result"],
                 flags={"filter": "last(range(1e15))", "time_limit": "1"}),
    )  # fmt: skip
    invalid, refused, uncompiled, failing, several, runaway = runs
    assert all(run.status == "ERROR" for run in runs)
    assert "code 1: jq: the input is not valid JSON: parse error:" in invalid.error
    # A small file that is not JSON never reaches the node: the engine's type check refuses it.
    assert "input 'json' is text/plain" in refused.error and refused.attempts == 1
    assert "code 2: jq: the filter does not compile: jq: error: syntax error" in uncompiled.error
    assert "code 1: jq: the filter failed (jq exit 5): jq: error (at" in failing.error
    assert 'Cannot index array with string "name"' in failing.error
    assert several.error.startswith(
        "command exited with code 1: jq: the filter gave 3 results, and the output is one JSON"
        " document: set collect=true"
    )
    assert runaway.error.startswith(
        "command exited with code 1: jq: the filter ran over 1 s and was stopped (does it loop?)"
    )
