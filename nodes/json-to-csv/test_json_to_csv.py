"""pipewell/json-to-csv through the service: the catalog's NodeDef and image together."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.catalog import run_node

pytestmark = pytest.mark.docker

ROWS = [
    {"name": "Ada", "age": 36, "tags": ["math", "engines"]},
    {"name": "Lovelace, A", "active": True, "age": 7.5},
    {"name": 'say "hi"', "age": None, "note": "two\nlines"},
]


async def test_objects_and_arrays_become_rows(start_service):
    client = await start_service()
    document = json.dumps(ROWS).encode()
    objects, chosen, arrays = await asyncio.gather(
        run_node(client, "pipewell/json-to-csv", {"json": document}, ["csv"]),
        run_node(client, "pipewell/json-to-csv", {"json": document}, ["csv"],
                 flags={"columns": "age,name", "delimiter": "tab"}),
        run_node(client, "pipewell/json-to-csv", {"json": b'[[1, "a"], [2, "b", {"c": null}]]'},
                 ["csv"], flags={"header": "false"}),
    )  # fmt: skip
    for done in (objects, chosen, arrays):
        assert done.status == "COMPLETE", done.error
    assert objects.text("csv") == (
        "name,age,tags,active,note\n"
        'Ada,36,"[""math"",""engines""]",,\n'
        '"Lovelace, A",7.5,,true,\n'
        '"say ""hi""",,,,"two\nlines"\n'
    )
    assert chosen.text("csv") == 'age\tname\n36\tAda\n7.5\tLovelace, A\n\t"say ""hi"""\n'
    assert arrays.text("csv") == '1,a\n2,b,"{""c"":null}"\n'


async def test_json_that_is_not_a_table_fails_saying_why(start_service):
    client = await start_service()
    single, mixed = await asyncio.gather(
        run_node(client, "pipewell/json-to-csv", {"json": b'{"name": "Ada"}'}, ["csv"]),
        run_node(client, "pipewell/json-to-csv", {"json": b'[{"a": 1}, [2], 3]'}, ["csv"]),
    )
    prefix = "command exited with code 1: json-to-csv: "
    assert single.error.startswith(
        prefix + "the input is an object, not an array of objects or of arrays"
    )
    assert mixed.error.startswith(
        prefix + "element 1 of the array is an array: every element must be an object, or every"
        " element an array"
    )
