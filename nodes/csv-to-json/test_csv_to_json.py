"""pipewell/csv-to-json through the service: the catalog's NodeDef and image together."""

from __future__ import annotations

import asyncio

import pytest

from tests.catalog import run_node

pytestmark = pytest.mark.docker

# A byte-order mark, a quoted delimiter, an embedded newline, a blank line, a
# zero-padded code that must stay text.
PEOPLE = (
    "\ufeffname,age,zip,note\n"
    'Ada,36,01234,"likes ""engines"""\n'
    '"Lovelace, A",7.5,75001,"two\nlines"\n'
    "\n"
    "Bob,-2,99,\n"
).encode()


async def test_rows_become_objects_or_arrays_with_numbers_when_asked(start_service):
    client = await start_service()
    typed, plain, semicolons = await asyncio.gather(
        run_node(client, "pipewell/csv-to-json", {"csv": PEOPLE}, ["json"],
                 flags={"numbers": "true"}),
        run_node(client, "pipewell/csv-to-json", {"csv": PEOPLE}, ["json"],
                 flags={"header": "false"}),
        run_node(client, "pipewell/csv-to-json", {"csv": b"a;b\n1;x,y\n"}, ["json"],
                 flags={"delimiter": "semicolon"}),
    )  # fmt: skip
    for done in (typed, plain, semicolons):
        assert done.status == "COMPLETE", done.error
    assert typed.json("json") == [
        {"name": "Ada", "age": 36, "zip": "01234", "note": 'likes "engines"'},
        {"name": "Lovelace, A", "age": 7.5, "zip": 75001, "note": "two\nlines"},
        {"name": "Bob", "age": -2, "zip": 99, "note": ""},
    ]
    assert plain.json("json")[0] == ["name", "age", "zip", "note"]
    assert plain.json("json")[1] == ["Ada", "36", "01234", 'likes "engines"']
    assert semicolons.json("json") == [{"a": "1", "b": "x,y"}]
    assert any("csv-to-json: 3 row(s)" in line for line in typed.logs)


async def test_ragged_rows_bad_quoting_and_bad_bytes_fail_with_their_line(start_service):
    client = await start_service()
    # Clean UTF-8 for the first 8 KiB (the engine's type check reads that much),
    # then a Latin-1 byte on the last line.
    latin = b"word\n" + b"fine\n" * 2000 + b"caf\xe9\n"
    ragged, quoted, encoded, duplicated = await asyncio.gather(
        run_node(client, "pipewell/csv-to-json", {"csv": b"a,b\n1,2\n3,4,5\n"}, ["json"]),
        run_node(client, "pipewell/csv-to-json", {"csv": b'a,b\n"1"x,2\n'}, ["json"]),
        run_node(client, "pipewell/csv-to-json", {"csv": latin}, ["json"]),
        run_node(client, "pipewell/csv-to-json", {"csv": b"a,b,a\n1,2,3\n"}, ["json"]),
    )
    prefix = "command exited with code 1: csv-to-json: "
    assert ragged.error.startswith(prefix + "line 3 has 3 cell(s), the header has 2")
    assert quoted.error.startswith(prefix + "line 2: ',' expected after '\"'")
    assert encoded.error.startswith(prefix + "line 2002 is not UTF-8 text")
    assert duplicated.error.startswith(prefix + "line 1: the header names 'a' more than once")
