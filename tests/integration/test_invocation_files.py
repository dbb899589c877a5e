"""A saved flow whose input is a file, invoked through every dialect as its users send
files: base64 or an output's URL in JSON (Axiom, Scade), xpander's ``files`` (its SDK's
input model), Langflow's multipart upload then tweaks (its SDK runs the flow), and a
webhook whose body is the file. Real service, real containers, real bytes."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import sqlite3
import time
from typing import Any

import httpx
import pytest
from langflow_sdk import Client
from PIL import Image
from xpander_sdk.modules.tasks.models.task import AgentExecutionInput

from orchestrator.api.resources import SETTINGS
from orchestrator.database import STATE_DB
from tests.helpers import busybox_def, create_key
from tests.integration.test_invocations import axiom, save

pytestmark = pytest.mark.docker

# Counts the bytes of a PNG: the answer says which file arrived, whole.
MEASURE = busybox_def(
    "measure",
    "sh -c 'wc -c < ${image} | tr -d \" \" > ${size}'",
    Inputs=[{"Name": "image", "Required": True, "Type": ["image/png"]}],
    Outputs=[{"Name": "size", "Type": ["text/plain"]}],
    MaxAttempts=1,
)
# Passes a PNG on: its output comes back as a URL, which MEASURE's flow then takes.
COPY_PNG = busybox_def(
    "copy-png",
    "cp ${image} ${copy}",
    Inputs=[{"Name": "image", "Required": True, "Type": ["image/png"]}],
    Outputs=[{"Name": "copy", "Type": ["image/png"]}],
    MaxAttempts=1,
)


def png(width: int = 40, height: int = 30) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def flow_of(node: str, name: str, inp: str = "image", out: str = "size") -> dict[str, Any]:
    return {
        "Name": name,
        "Nodes": [
            {
                "ID": node,
                "Uses": f"test/{node}",
                "Inputs": [{"Name": "image", "Edge": inp}],
                "Outputs": [{"Name": "copy" if node == "copy-png" else "size", "Edge": out}],
            }
        ],
    }


async def saved_pair(client, **kw) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    measure = await save(client, flow_of("measure", "measure"), [MEASURE], **kw)
    copy = await save(client, flow_of("copy-png", "copy", out="copied"), [COPY_PNG], **kw)
    return measure["graph_id"], copy["graph_id"]


async def test_axiom_takes_base64_a_data_url_and_an_outputs_url(start_service):
    client = await start_service()
    measure, copy = await saved_pair(client)
    picture = png()
    encoded = base64.b64encode(picture).decode()

    status, body = await axiom(client, {"graph_id": measure, "input": {"text": "hi"}})
    assert status == 400 and body["code"] == "INPUT_INVALID"
    assert "input for edge 'image' must be a file (image/png), not JSON" in body["message"]
    assert '{"base64": "…", "content_type": "image/png"}' in body["message"]

    file = {"base64": encoded, "content_type": "image/png", "name": "red.png"}
    status, body = await axiom(client, {"graph_id": measure, "input": file, "wait": True})
    assert status == 202 and body["result"]["success"], body
    assert body["result"]["output"] == {"text": f"{len(picture)}\n"}

    # A data URL in a one-field object, as a form would send it.
    data_url = f"data:image/png;base64,{encoded}"
    status, body = await axiom(
        client, {"graph_id": measure, "input": {"photo": data_url}, "wait": True}
    )
    assert body["result"]["output"] == {"text": f"{len(picture)}\n"}

    # One flow's binary output, as it came back, is the next one's input.
    status, body = await axiom(client, {"graph_id": copy, "input": file, "wait": True})
    output = body["result"]["output"]
    assert output["content_type"] == "image/png" and output["size"] == len(picture)
    status, body = await axiom(client, {"graph_id": measure, "input": output, "wait": True})
    assert body["result"]["output"] == {"text": f"{len(picture)}\n"}, body

    for given, says in (
        ({"url": "https://example.com/red.png"}, "is not one the service gave out"),
        ({"url": output["url"].replace("Signature=", "Signature=0")}, "cannot be used"),
        ({"base64": "not base64!"}, "'base64' is not valid base64"),
        ({"base64": encoded, "content_type": "image/jpeg"}, "is image/jpeg, but its nodes take"),
        ({"base64": encoded, "content_type": "an image"}, "is not a MIME type"),
        ({"file_path": "nothing/here.png"}, "not in its store"),
    ):
        status, body = await axiom(client, {"graph_id": measure, "input": given})
        assert status == 400 and body["code"] == "INPUT_INVALID", (given, body)
        assert says in body["message"], (given, body["message"])
    runs = (await (await client.get("/api/v1/flow/runs")).json())["runs"]
    assert len(runs) == 4  # none of the refusals left a run behind


async def test_another_tenants_output_url_is_refused(start_service, tmp_path, capsys):
    data_dir = tmp_path / "data"
    mine = {"x-api-key": create_key(capsys, data_dir, "mine", tenant="alice")}
    theirs = {"x-api-key": create_key(capsys, data_dir, "theirs", tenant="bob")}
    client = await start_service(data_dir, auth="required")
    _, copy = await saved_pair(client, headers=mine)
    measure_bob, _ = await saved_pair(client, headers=theirs)
    file = {"base64": base64.b64encode(png()).decode(), "content_type": "image/png"}
    status, body = await axiom(
        client, {"graph_id": copy, "input": file, "wait": True}, headers=mine
    )
    url = body["result"]["output"]["url"]
    status, body = await axiom(
        client, {"graph_id": measure_bob, "input": {"url": url}}, headers=theirs
    )
    assert status == 400 and "outside your namespace" in body["message"]


async def test_xpander_files_from_its_sdks_input_model(start_service):
    client = await start_service()
    measure, copy = await saved_pair(client)
    picture = png(64, 48)
    base = f"http://127.0.0.1:{client.port}"
    file = {"base64": base64.b64encode(picture).decode(), "content_type": "image/png"}
    _, body = await axiom(client, {"graph_id": copy, "input": file, "wait": True})
    url = body["result"]["output"]["url"]
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        for files in ([url], [f"data:image/png;base64,{file['base64']}"]):
            given = AgentExecutionInput(text="measure this", files=files).to_request_dict()
            response = await http.post(f"/v1/workflows/{measure}/invoke", json={"input": given})
            assert response.status_code == 200, response.text
            task = response.json()
            assert task["status"] == "completed", task
            assert task["result"] == f"{len(picture)}\n"
        two = AgentExecutionInput(files=[url, url]).to_request_dict()
        response = await http.post(f"/v1/workflows/{measure}/invoke", json={"input": two})
        assert response.status_code == 400
        assert "input.files has 2 file(s); this flow takes 1" in response.json()["message"]


async def test_langflow_upload_then_run_and_a_webhook_whose_body_is_the_file(start_service):
    client = await start_service()
    measure, _ = await saved_pair(client)
    picture = png(80, 60)
    base = f"http://127.0.0.1:{client.port}"
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        # curl -F file=@red.png $BASE/api/v1/files/upload/$FLOW_ID, as Langflow's docs say.
        response = await http.post(
            f"/api/v1/files/upload/{measure}",
            files={"file": ("red photo.png", picture, "image/png")},
        )
        assert response.status_code == 201, response.text
        uploaded = response.json()
        assert uploaded["flowId"] == measure
        assert uploaded["file_path"].startswith(f"{measure}/")
        assert uploaded["file_path"].endswith("_red_photo.png")
        refused = await http.post(f"/api/v1/files/upload/{measure}", content=picture)
        assert refused.status_code == 415
    # Kept for the runs that read it as long as the tenant's runs are kept (retention).
    database = client.app[SETTINGS].data_dir / STATE_DB
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        kept = conn.execute("SELECT store, key, tenant, expires_at FROM kept_objects").fetchall()
    assert [(store, key, tenant) for store, key, tenant, _ in kept] == [
        ("default", f"tenants/default/uploads/{uploaded['file_path']}", "default")
    ]
    assert abs(kept[0][3] - time.time() - 30 * 86400) < 60

    sdk = Client(base)
    try:
        # The file's path goes in tweaks, under the component (here the entry edge or
        # the node) that reads it.
        for component, field in (("image", "path"), ("measure", "files")):
            tweaks = {component: {field: uploaded["file_path"]}}
            result = await asyncio.to_thread(sdk.run, measure, input_value="", tweaks=tweaks)
            assert result.first_text_output() == f"{len(picture)}\n"
    finally:
        sdk.close()

    # The webhook: the body is the file (curl --data-binary @red.png, with -H or with
    # curl's own form type, which says nothing of the bytes).
    for headers in (
        {"Content-Type": "image/png"},
        {"Content-Type": "application/x-www-form-urlencoded"},
    ):
        response = await client.post(f"/api/v1/webhook/{measure}", data=picture, headers=headers)
        assert response.status == 202, await response.text()
        run_id = (await response.json())["execution_id"]
        deadline = time.monotonic() + 60
        while True:
            run = await (await client.get(f"/api/v1/flow/status/{run_id}")).json()
            if run["Status"] in ("COMPLETE", "ERROR") or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert run["Status"] == "COMPLETE", run
        size = await client.get(f"/api/v1/flow/artifact/{run_id}/size")
        assert (await size.read()) == f"{len(picture)}\n".encode()


async def test_scade_takes_a_url_in_the_start_nodes_data(start_service):
    client = await start_service()
    measure, copy = await saved_pair(client)
    picture = png(10, 10)
    file = {"base64": base64.b64encode(picture).decode(), "content_type": "image/png"}
    _, body = await axiom(client, {"graph_id": copy, "input": file, "wait": True})
    url = body["result"]["output"]["url"]
    request = {
        "start_node_id": "measure",
        "end_node_id": "measure",
        "result_node_id": "measure",
        "node_settings": {"measure": {"data": {"source": url}}},
    }
    response = await client.post(f"/api/v1/scade/flow/{measure}/execute", json=request)
    assert response.status == 200, await response.text()
    task = await response.json()
    deadline = time.monotonic() + 60
    while task["status"] in (1, 2):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
        task = await (await client.get(f"/api/v1/task/{task['id']}")).json()
    assert task["status"] == 3 and task["result"] == {"text": f"{len(picture)}\n"}
