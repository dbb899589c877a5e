"""pipewell/json-to-csv through the service: the catalog's NodeDef and image together."""

from __future__ import annotations

import asyncio
import json

import pytest

from orchestrator.api.resources import STORES
from tests.catalog import one_node_flow, run_node
from tests.helpers import submit, upload, wait_for

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


async def test_the_csv_is_served_as_csv_and_named_for_it(start_service):
    """Plain text to a sniffer, CSV by the NodeDef: stored, served and named as CSV."""
    client = await start_service()
    run = await submit(client, one_node_flow("pipewell/json-to-csv", ["json"], ["csv"]), [])
    await upload(client, run, "in-json", b'[{"a": 1, "b": "x"}, {"a": 2}]')
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == "COMPLETE", done
    assert done["NodeState"]["n"]["Logs"][-1]["message"].endswith(": csv 11 B text/csv")

    key = done["Artifacts"]["out-csv"]["ObjectName"]
    store = client.server.app[STORES].local("default")
    served = [
        await client.get(f"/api/v1/flow/artifact/{run['ID']}/out-csv"),
        await client.session.get(store.get_url(key, 60)),
    ]
    for response in served:
        assert response.status == 200
        assert await response.read() == b"a,b\n1,x\n2,\n"
        assert response.headers["Content-Type"] == "text/csv"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    # The edge's name, or the key's last segment, with the extension of its type.
    assert served[0].headers["Content-Disposition"] == 'inline; filename="out-csv.csv"'
    assert served[1].headers["Content-Disposition"] == (
        f'inline; filename="{key.rsplit("/", 1)[-1]}.csv"'
    )
