"""API keys on the real service: every accepted form, 401s, revocation while serving."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal

import aiohttp
import pytest

from orchestrator.cli import main
from tests.helpers import (
    busybox_def,
    chain_flow,
    create_key,
    free_port,
    start_dev,
    wait_healthy,
)


async def test_keys_guard_every_endpoint_but_health_and_presigned_urls(
    start_service, tmp_path, capsys
):
    data_dir = tmp_path / "data"
    raw = create_key(capsys, data_dir, "laptop")
    assert re.fullmatch(r"[0-9a-f]{64}", raw)
    client = await start_service(data_dir, auth="required")

    assert (await client.get("/healthz")).status == 200
    for headers in ({}, {"Authorization": "Bearer " + "0" * 64}, {"x-api-key": "nope"}):
        response = await client.get("/api/v1/flow/status/" + "0" * 32, headers=headers)
        assert response.status == 401
        assert await response.json() == {"error": "unauthorized"}

    basic_password = base64.b64encode(f"user:{raw}".encode()).decode()
    for headers in (
        {"Authorization": f"Bearer {raw}"},
        {"x-api-key": raw},
        {"Authorization": f"Basic {raw}"},
        {"Authorization": f"Basic {basic_password}"},
    ):
        response = await client.get("/api/v1/flow/status/" + "0" * 32, headers=headers)
        assert response.status == 400, headers  # past auth: the run does not exist
        assert await response.text() == "Flow run does not exist."

    submitted = await client.post(
        "/api/v1/flow/test",
        json={"Flow": chain_flow("copy"), "NodeDefs": [busybox_def("copy", "cp ${in} ${out}")]},
        headers={"x-api-key": raw},
    )
    run = await submitted.json()
    # The WaitingURL is its own credential: no key needed to upload.
    async with client.session.put(run["WaitingURLs"][0]["PutURL"], data=b"x") as response:
        assert response.status == 200

    assert main(["keys", "list", "--data-dir", str(data_dir)]) == 0
    listing = capsys.readouterr().out
    assert f"{raw[:8]}…{raw[-4:]}" in listing
    assert raw not in listing
    assert "active" in listing and re.search(r"laptop .* 20\d\d-\d\d-\d\dT.*Z +active", listing)

    # Revoked from another process on the same data dir: refused on the next request.
    assert main(["keys", "revoke", "laptop", "--data-dir", str(data_dir)]) == 0
    response = await client.get(f"/api/v1/flow/status/{run['ID']}", headers={"x-api-key": raw})
    assert response.status == 401
    assert await response.json() == {"error": "unauthorized"}


def test_key_names_are_unique(capsys, tmp_path):
    create_key(capsys, tmp_path, "one")
    assert main(["keys", "create", "--name", "one", "--data-dir", str(tmp_path)]) == 2
    assert "exists already" in capsys.readouterr().err


async def test_admin_keys_manage_keys_over_http(start_service, tmp_path, capsys):
    data_dir = tmp_path / "data"
    assert main(["keys", "create", "--name", "root", "--admin", "--data-dir", str(data_dir)]) == 0
    root = {"Authorization": "Bearer " + capsys.readouterr().out.strip()}
    client = await start_service(data_dir, auth="required")

    response = await client.post(
        "/api/v1/keys", json={"name": "ci", "tenant": "acme"}, headers=root
    )
    assert response.status == 201
    created = await response.json()
    raw = created["key"]
    assert re.fullmatch(r"[0-9a-f]{64}", raw)
    assert created["masked"] == f"{raw[:8]}…{raw[-4:]}" and created["tenant"] == "acme"

    listing = await (await client.get("/api/v1/keys", headers=root)).json()
    assert raw not in json.dumps(listing)
    assert {(k["name"], k["tenant"], k["admin"]) for k in listing["keys"]} == {
        ("root", "default", True),
        ("ci", "acme", False),
    }

    ci = {"x-api-key": raw}
    response = await client.get("/api/v1/keys", headers=ci)
    assert response.status == 403 and (await response.json())["code"] == "FORBIDDEN"
    response = await client.post("/api/v1/keys", json={"name": "ci"}, headers=root)
    assert response.status == 409 and (await response.json())["code"] == "API_KEY_EXISTS"
    response = await client.post("/api/v1/keys", json={"name": " "}, headers=root)
    error = await response.json()
    assert response.status == 400 and error["code"] == "API_KEY_INVALID"
    assert error["message"] == "a key needs a name of 1 to 100 characters"

    assert (await client.get("/api/v1/flows", headers=ci)).status == 200
    assert (await client.delete("/api/v1/keys/ci", headers=root)).status == 204
    response = await client.get("/api/v1/flows", headers=ci)
    assert response.status == 401 and await response.json() == {"error": "unauthorized"}
    response = await client.delete("/api/v1/keys/ci", headers=root)
    assert response.status == 404 and (await response.json())["code"] == "API_KEY_NOT_FOUND"


@pytest.mark.docker
async def test_another_tenants_flows_runs_and_tasks_are_not_found(start_service, tmp_path, capsys):
    data_dir = tmp_path / "data"
    acme = {"x-api-key": create_key(capsys, data_dir, "acme-key", "acme")}
    globex = {"Authorization": "Bearer " + create_key(capsys, data_dir, "globex-key", "globex")}
    client = await start_service(data_dir, auth="required")

    flow = chain_flow("copy", name="private")
    body = {"Flow": flow, "NodeDefs": [busybox_def("copy", "cp ${in} ${out}")]}
    saved = await (await client.post("/api/v1/flows", json=body, headers=acme)).json()
    graph = saved["graph_id"]
    invoke = {"graph_id": graph, "input": {"secret": 1}, "wait": True}
    response = await client.post("/invocations/v1/flows/invoke", json=invoke, headers=acme)
    result = await response.json()
    assert result["result"]["output"] == {"secret": 1}
    execution = result["execution_id"]
    task = await (
        await client.post(f"/api/v1/scade/flow/{graph}/execute", json={}, headers=acme)
    ).json()

    unknown_flow = await client.get("/api/v1/flows/" + "0" * 26, headers=globex)
    for path in (f"/api/v1/flows/{graph}", "/api/v1/flows/private", f"/api/v1/flows/{saved['id']}"):
        response = await client.get(path, headers=globex)
        assert response.status == 404 == unknown_flow.status
        assert (await response.json())["code"] == "FLOW_NOT_FOUND"
    for path, payload in (
        ("/invocations/v1/flows/invoke", invoke),
        (f"/v1/workflows/{graph}/invoke", {"input": {}}),
        (f"/api/v1/scade/flow/{graph}/execute", {}),
        (f"/api/v1/run/{graph}", {}),
        (f"/api/v1/webhook/{graph}", {}),
    ):
        response = await client.post(path, json=payload, headers=globex)
        assert response.status == 404, path
        assert (await response.json())["code"] == "FLOW_NOT_FOUND"
    assert await (await client.get("/api/v1/flows", headers=globex)).json() == {"flows": []}
    assert await (await client.get("/api/v1/flow/runs", headers=globex)).json() == {"runs": []}
    listed = await (await client.get("/api/v1/flow/runs", headers=acme)).json()
    assert execution in [r["ID"] for r in listed["runs"]]
    assert {r["Flow"] for r in listed["runs"]} == {"private"}

    for path in (f"/api/v1/flow/status/{execution}", f"/api/v1/flow/events/{execution}",
                 f"/api/v1/flow/artifact/{execution}/out",
                 f"/api/v1/flow/graph/{execution}"):  # fmt: skip
        response = await client.get(path, headers=globex)
        assert response.status == 400 and await response.text() == "Flow run does not exist."
        assert (await client.get(path, headers=acme)).status == 200
    response = await client.get(f"/api/v1/task/{task['id']}", headers=globex)
    assert response.status == 404 and (await response.json())["code"] == "TASK_NOT_FOUND"
    assert (await client.get(f"/api/v1/task/{task['id']}", headers=acme)).status == 200
    response = await client.delete(f"/api/v1/flows/{graph}", headers=globex)
    assert response.status == 404


async def test_a_key_in_a_malformed_request_never_reaches_the_log(tmp_path, capsys):
    """aiohttp's parser logged the raw line it refused: a key, or a URL's signature."""
    data_dir, port = tmp_path / "data", free_port()
    raw = create_key(capsys, data_dir, "laptop")
    requests = [
        f"GET /api/v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {raw}\x00\r\n\r\n",
        f"GET /api/v1/runs HTTP/1.1\r\nHost: x\r\nx-api-key: {raw}\rx\r\n\r\n",
        f"GET /objects/k?signature={raw}\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    log_path = tmp_path / "service.log"
    with log_path.open("ab") as log:
        process = start_dev(data_dir, port, log, "--auth", "required")
        try:
            async with aiohttp.ClientSession() as session:
                await wait_healthy(session, f"http://127.0.0.1:{port}")
            for request in requests:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(request.encode("latin-1"))
                await writer.drain()
                assert (await reader.readline()).startswith(b"HTTP/1.0 400")
                writer.close()
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            await asyncio.to_thread(process.wait, 30)
    written = log_path.read_text(errors="replace")
    assert raw not in written and raw[:16] not in written
    refused = [json.loads(line) for line in written.splitlines() if "malformed request" in line]
    assert [line["level"] for line in refused] == ["info"] * 3, written
    assert "Invalid header value char" in refused[0]["event"]
