"""Flag values are checked against their NodeDef before a run exists: through the
native API, a saved flow's config profiles and Langflow's own client."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langflow_sdk import Client, LangflowHTTPError

from tests.helpers import busybox_def
from tests.integration.test_invocations import save

pytestmark = pytest.mark.docker


def catalog_pair(width: Any, format_: Any) -> dict[str, Any]:
    """resize → convert-image from the built-in catalog, as the README's reader writes it."""
    return {
        "Flow": {
            "Name": "photos",
            "Nodes": [
                {
                    "ID": "small",
                    "Uses": "pipewell/resize",
                    "Inputs": [{"Name": "image", "Edge": "photo"}],
                    "Outputs": [{"Name": "resized", "Edge": "mid"}],
                    "Flags": [{"Name": "width", "Value": width}],
                },
                {
                    "ID": "convert",
                    "Uses": "pipewell/convert-image",
                    "Inputs": [{"Name": "image", "Edge": "mid"}],
                    "Outputs": [{"Name": "converted", "Edge": "out"}],
                    "Flags": [{"Name": "format", "Value": format_}],
                },
            ],
        }
    }


JQ_FLOW = {
    "Name": "filter",
    "Nodes": [
        {
            "ID": "pick",
            "Uses": "pipewell/jq",
            "Inputs": [{"Name": "json", "Edge": "request"}],
            "Outputs": [{"Name": "result", "Edge": "reply"}],
        }
    ],
}


async def run_count(client) -> int:  # type: ignore[no-untyped-def]
    return len((await (await client.get("/api/v1/flow/runs")).json())["runs"])


async def test_bad_flag_values_are_refused_before_a_run_exists(start_service):
    client = await start_service()
    response = await client.post("/api/v1/flow/test", json=catalog_pair("wide", "bmp"))
    assert response.status == 400
    body = await response.json()
    assert body["code"] == "FLOW_INVALID"
    assert [(e["code"], e["node"], e["field"]) for e in body["errors"]] == [
        ("NODE_012", "small", "Flow.Nodes.0.Flags.0.Value"),
        ("NODE_012", "convert", "Flow.Nodes.1.Flags.0.Value"),
    ]
    assert "'wide', which is not an integer" in body["errors"][0]["message"]
    assert "'bmp', which is not one of the values it takes" in body["errors"][1]["message"]
    assert await run_count(client) == 0
    # The same values, fitting: the run is accepted and waits for its photo.
    response = await client.post("/api/v1/flow/test", json=catalog_pair(640, "webp"))
    assert response.status == 200, await response.text()
    assert (await response.json())["Status"] == "WAITING"


async def test_a_nodedefs_own_flag_declaration_is_checked(start_service):
    client = await start_service()
    node_def = busybox_def(
        "scale",
        "cp ${in} ${out}",
        Flags=[{"Name": "factor", "Type": "integer", "Min": 1, "Max": 4, "Default": "8"}],
    )
    flow = {
        "Name": "scale",
        "Nodes": [
            {
                "ID": "s",
                "Uses": "test/scale",
                "Inputs": [{"Name": "in", "Edge": "a"}],
                "Outputs": [{"Name": "out", "Edge": "b"}],
            }
        ],
    }
    response = await client.post("/api/v1/flow/test", json={"Flow": flow, "NodeDefs": [node_def]})
    body = await response.json()
    assert response.status == 400 and [e["code"] for e in body["errors"]] == ["DEF_002"]
    assert "its Default '8' is out of range; use 1 to 4" in body["errors"][0]["message"]
    assert body["errors"][0]["field"] == "NodeDefs.0.Flags.0"


async def test_config_profiles_and_langflow_tweaks_are_checked(start_service):
    client = await start_service()
    graph = (await save(client, JQ_FLOW, []))["graph_id"]
    response = await client.put(
        f"/api/v1/flows/{graph}/configs/slow", json={"flags": {"pick": {"time_limit": "abc"}}}
    )
    error = await response.json()
    assert response.status == 400 and error["code"] == "FLAGS_INVALID"
    assert error["message"] == (
        "flags: pick.time_limit is 'abc', which is not a number; write a decimal such as 0.5"
    )
    response = await client.put(
        f"/api/v1/flows/{graph}/configs/compact", json={"flags": {"pick": {"compact": True}}}
    )
    assert response.status == 201

    base = f"http://127.0.0.1:{client.port}"
    sdk = Client(base)
    try:
        with pytest.raises(LangflowHTTPError) as refused:
            await asyncio.to_thread(
                sdk.run, graph, input_value="{}", tweaks={"pick": {"time_limit": "abc"}}
            )
        assert refused.value.status_code == 400
        assert "tweaks: pick.time_limit is 'abc', which is not a number" in refused.value.detail
    finally:
        sdk.close()
    raw = await client.post(f"/api/v1/run/{graph}", json={"tweaks": {"pick": {"collect": "maybe"}}})
    error = await raw.json()
    assert raw.status == 400 and error["code"] == "FLAGS_INVALID"
    assert "tweaks: pick.collect is 'maybe', which is not a boolean" in error["message"]
    assert await run_count(client) == 0
