"""A flow is untrusted input: attacks through its names, its body and its stores fail safely.

Each test is the attack as a hostile user sends it to the real service.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import docker
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from orchestrator.api.resources import SCHEDULER, STORES
from orchestrator.config import ExecutorSettings
from orchestrator.executor import AttemptFailed, DockerExecutor, inside, registry_of
from orchestrator.messages import Task, TaskInput, TaskOutput
from tests.helpers import (
    BUSYBOX,
    busybox_def,
    chain_flow,
    create_key,
    run_chain,
    submit,
    upload,
    wait_for,
)

VICTIM_BYTES = b"the host's own file\n"


def one_input_flow(input_name: str) -> tuple[dict, list[dict]]:
    flow = {
        "Name": "attack",
        "Nodes": [
            {
                "ID": "n",
                "Uses": "test/cat",
                "Inputs": [{"Name": input_name, "Edge": "src"}],
                "Outputs": [{"Name": "out", "Edge": "dst"}],
            }
        ],
    }
    node_def = busybox_def(
        "cat",
        "cp ${" + input_name + "} ${out}",
        Inputs=[{"Name": input_name}],
        Outputs=[{"Name": "out"}],
    )
    return flow, [node_def]


@pytest.mark.parametrize("style", ["absolute", "relative"])
async def test_an_input_name_cannot_name_a_host_file(start_service, tmp_path, style):
    victim = tmp_path / "victim.bin"
    victim.write_bytes(VICTIM_BYTES)
    client = await start_service()
    # The executor once wrote each input to <attempt>/in/<Name>: both forms reached the victim.
    name = str(victim) if style == "absolute" else "../../../../../../../" + str(victim)
    flow, defs = one_input_flow(name)
    response = await client.post("/api/v1/flow/test", json={"Flow": flow, "NodeDefs": defs})
    assert response.status == 400, await response.text()
    body = await response.json()
    assert body["code"] == "FLOW_INVALID"
    fields = {e["field"] for e in body["errors"] if e["code"] == "NAME_001"}
    assert {"Flow.Nodes.0.Inputs.0.Name", "NodeDefs.0.Inputs.0.Name"} <= fields
    assert all("not a valid name" in e["message"] for e in body["errors"])
    assert victim.read_bytes() == VICTIM_BYTES


async def test_every_name_that_becomes_a_path_or_variable_is_checked(start_service):
    client = await start_service()
    bad = "x/../y"
    flow = {
        "Name": "attack",
        "Stores": [{"Name": "s" * 5000, "Type": "local"}],
        "DataWells": [{"Edge": "src", "Source": "upload"}, {"Edge": "dst", "Store": "s" * 5000}],
        "Nodes": [
            {
                "ID": "node\x00id",
                "Uses": "test/t",
                "Inputs": [{"Name": "in", "Edge": "src"}],
                "Outputs": [{"Name": "out", "Edge": "dst"}],
                "Flags": [{"Name": bad, "Value": "1"}],
                "Command": "../run",
            }
        ],
    }
    node_def = busybox_def("t", "true", Flags=[{"Name": bad}], Outputs=[{"Name": "out"}])
    node_def["Commands"] = [{"Name": "../run", "Exec": "true"}]
    response = await client.post("/api/v1/flow/test", json={"Flow": flow, "NodeDefs": [node_def]})
    assert response.status == 400, await response.text()
    fields = {e["field"] for e in (await response.json())["errors"] if e["code"] == "NAME_001"}
    assert {
        "Flow.Stores.0.Name",
        "Flow.DataWells.1.Store",
        "Flow.Nodes.0.ID",
        "Flow.Nodes.0.Flags.0.Name",
        "Flow.Nodes.0.Command",
        "NodeDefs.0.Flags.0.Name",
        "NodeDefs.0.Commands.0.Name",
    } <= fields


@pytest.mark.docker
def test_the_worker_refuses_a_task_whose_names_are_paths(tmp_path: Path):
    """Defence in depth: a task that skipped validation (from a queue) builds no path."""
    victim = tmp_path / "victim.bin"
    victim.write_bytes(VICTIM_BYTES)
    client = docker.from_env()
    try:
        executor = DockerExecutor(
            client, ExecutorSettings(), "test-names", "0" * 32, tmp_path / "work"
        )
        for inputs, outputs in (
            ([TaskInput(name=str(victim), url="http://127.0.0.1:9/x")], []),
            ([], [TaskOutput(name="../../out", url="http://127.0.0.1:9/y")]),
        ):
            task = Task(
                run_id="r" * 32,
                node_id="n",
                attempt=1,
                image=BUSYBOX,
                tier="c-nano",
                timeout=10,
                argv=["true"],
                flags={},
                inputs=inputs,
                outputs=outputs,
            )
            result, cleanup = executor.run(task, lambda record: None)
            cleanup()
            assert not result.ok
            assert not result.retryable
            assert "is not a valid name" in result.error
        assert victim.read_bytes() == VICTIM_BYTES
        assert list((tmp_path / "work" / "attempts").iterdir()) == []
    finally:
        client.close()


def test_inside_keeps_file_names_in_their_directory(tmp_path: Path):
    assert inside(tmp_path, "image.png") == tmp_path / "image.png"
    for name in ("", ".", "..", "../x", "/etc/passwd", "a/b", "a\0b"):
        with pytest.raises(AttemptFailed):
            inside(tmp_path, name)


# ------------------------------------------------------------------ what a web page can send


def simple_flow() -> dict:
    flow = {
        "Name": "page",
        "Nodes": [{"ID": "n", "Uses": "test/t", "Outputs": [{"Name": "out", "Edge": "dst"}]}],
    }
    defs = [busybox_def("t", "sh -c 'echo hi > ${out}'", Outputs=[{"Name": "out"}])]
    return {"Flow": flow, "NodeDefs": defs}


def runs_of(client) -> dict:  # type: ignore[no-untyped-def]
    return client.server.app[SCHEDULER].runs


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_state_changing_requests_take_only_their_documented_types(
    start_service, content_type
):
    client = await start_service()
    body = json.dumps(simple_flow())
    for path in ("/api/v1/flow/test", "/api/v1/flows", "/invocations/v1/flows/invoke"):
        response = await client.post(path, data=body, headers={"Content-Type": content_type})
        assert response.status == 415, (path, await response.text())
        answer = await response.json()
        assert answer["code"] == "CONTENT_TYPE_UNSUPPORTED"
        assert "Content-Type: application/json" in answer["message"]
    assert runs_of(client) == {}


async def test_pages_of_other_origins_cannot_change_anything(start_service):
    client = await start_service()
    body = simple_flow()
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": f"http://127.0.0.1:{client.port + 1}"},
        {"Sec-Fetch-Site": "cross-site"},
    ):
        response = await client.post("/api/v1/flow/test", json=body, headers=headers)
        assert response.status == 403, (headers, await response.text())
        assert (await response.json())["code"] == "ORIGIN_FORBIDDEN"
    assert runs_of(client) == {}
    # The service's own pages, and programs that send no Origin, are served.
    own = {"Origin": f"http://127.0.0.1:{client.port}", "Sec-Fetch-Site": "same-origin"}
    response = await client.post("/api/v1/flow/test", json=body, headers=own)
    assert response.status == 200, await response.text()
    response = await client.post("/api/v1/flow/test", json=body)
    assert response.status == 200, await response.text()
    # Reads from other origins are left to the browser, which hides the answer.
    run_id = (await response.json())["ID"]
    response = await client.get(
        f"/api/v1/flow/status/{run_id}", headers={"Origin": "http://evil.example"}
    )
    assert response.status == 200
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_without_auth_a_rebound_name_is_refused(start_service):
    client = await start_service()
    response = await client.get("/healthz", headers={"Host": f"evil.example:{client.port}"})
    assert response.status == 403
    assert (await response.json())["code"] == "HOST_FORBIDDEN"
    for host in (f"localhost:{client.port}", f"127.0.0.1:{client.port}"):
        response = await client.get("/healthz", headers={"Host": host})
        assert response.status == 200


async def test_an_allowed_origin_gets_cors_answers(start_service):
    app_origin = "https://app.example.com"
    client = await start_service(allowed_origins=[app_origin])
    preflight = await client.options(
        "/api/v1/flow/test",
        headers={
            "Origin": app_origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == app_origin
    assert "content-type" in preflight.headers["Access-Control-Allow-Headers"].lower()
    response = await client.post(
        "/api/v1/flow/test", json=simple_flow(), headers={"Origin": app_origin}
    )
    assert response.status == 200, await response.text()
    assert response.headers["Access-Control-Allow-Origin"] == app_origin


# ------------------------------------------------------------------ bodies that explode


def alias_bomb(levels: int) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels + 1):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    flow = simple_flow()
    node_defs = json.dumps(flow["NodeDefs"])
    return (
        "\n".join(lines)
        + "\nFlow:\n  Name: bomb\n  DataWells:\n    - Edge: dst\n"
        + f"      Lifetime: {{x: *a{levels}}}\n"
        + "  Nodes: "
        + json.dumps(flow["Flow"]["Nodes"])
        + f"\nNodeDefs: {node_defs}\n"
    )


async def test_a_yaml_alias_bomb_is_refused_at_once(start_service):
    client = await start_service()
    bomb = alias_bomb(8)
    assert len(bomb) < 1500
    began = time.monotonic()
    response = await client.post(
        "/api/v1/flow/test", data=bomb, headers={"Content-Type": "application/yaml"}
    )
    assert response.status == 400, await response.text()
    answer = await response.json()
    assert answer["code"] == "BODY_MALFORMED"
    assert "aliases expand" in answer["message"]
    assert time.monotonic() - began < 2
    recursive = "a: &a [*a]\nFlow: {Name: x}\n"
    response = await client.post(
        "/api/v1/flow/test", data=recursive, headers={"Content-Type": "application/yaml"}
    )
    assert response.status == 400
    assert "recursive" in (await response.json())["message"]


async def test_lifetime_is_accepted_and_ignored(start_service):
    client = await start_service()
    body = simple_flow()
    body["Flow"]["DataWells"] = [{"Edge": "dst", "Lifetime": {"Days": 3}}]
    response = await client.post("/api/v1/flow/test", json=body)
    assert response.status == 200, await response.text()
    run = runs_of(client)[(await response.json())["ID"]]
    assert "Days" not in json.dumps(run.snapshot())


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", "[" * 100_000 + "]" * 100_000),
        ("application/yaml", "[" * 100_000 + "]" * 100_000),
        ("application/json", '{"Flow": {"Name": "x"}, "NodeDefs": [], "n": ' + "7" * 5000 + "}"),
        ("application/yaml", "Flow: {Name: x}\nn: " + "7" * 5000 + "\n"),
        ("application/json", '{"Flow": {"Name": "x"}, "n": Infinity}'),
        ("application/json", '{"Flow": {"Name": "x"}, "n": NaN}'),
        ("application/json", '{"Flow": {"Name": "x"}, "n": ' + "[" * 70 + "]" * 70 + "}"),
    ],
    ids=["deep-json", "deep-yaml", "long-int-json", "long-int-yaml", "infinity", "nan", "depth-70"],
)
async def test_bodies_that_break_parsers_are_400s(start_service, content_type, body):
    client = await start_service()
    response = await client.post(
        "/api/v1/flow/test", data=body, headers={"Content-Type": content_type}
    )
    assert response.status == 400, await response.text()
    assert (await response.json())["code"] == "BODY_MALFORMED"


@pytest.mark.parametrize("timeout", [1e10, -1, ".inf", ".nan"])
async def test_timeouts_outside_a_week_are_refused(start_service, timeout):
    client = await start_service()
    body = simple_flow()
    body["NodeDefs"][0]["Timeout"] = "TIMEOUT"
    text = yaml.safe_dump(body).replace("TIMEOUT", str(timeout))
    response = await client.post(
        "/api/v1/flow/test", data=text, headers={"Content-Type": "application/yaml"}
    )
    assert response.status == 400, await response.text()
    answer = await response.json()
    assert answer["code"] == "FLOW_INVALID"
    assert answer["errors"][0]["field"] == "NodeDefs.0.Timeout"
    assert runs_of(client) == {}


# ------------------------------------------------------------------ tenants' objects


def copy_flow(name: str, wells: list[dict]) -> dict:
    flow = chain_flow("copy", name=name)
    flow["DataWells"] = wells
    return {"Flow": flow, "NodeDefs": [busybox_def("copy", "cp ${in} ${out}")]}


async def test_a_tenant_cannot_read_or_overwrite_another_tenants_objects(
    start_service, tmp_path, capsys
):
    data_dir = tmp_path / "data"
    acme = {"x-api-key": create_key(capsys, data_dir, "acme-key", "acme")}
    globex = {"x-api-key": create_key(capsys, data_dir, "globex-key", "globex")}
    client = await start_service(data_dir, auth="required")

    # acme keeps its latest report under a fixed key.
    body = copy_flow("report", [{"Edge": "src", "Source": "upload"},
                                {"Edge": "out", "Key": "reports/latest.txt"}])  # fmt: skip
    response = await client.post("/api/v1/flow/test", json=body, headers=acme)
    run = await response.json()
    url = run["WaitingURLs"][0]["PutURL"]
    async with client.session.put(url, data=b"acme's secret report") as uploaded:
        assert uploaded.status == 200
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"}, headers=acme)
    assert done["Status"] == "COMPLETE", done
    acme_key = done["Artifacts"]["out"]["ObjectName"]
    assert acme_key == "tenants/acme/reports/latest.txt"

    # globex names the same key as a static source: it is looked up in globex's namespace.
    steal = copy_flow("steal", [{"Edge": "src", "Source": "static", "Key": "reports/latest.txt"},
                                {"Edge": "out"}])  # fmt: skip
    response = await client.post("/api/v1/flow/test", json=steal, headers=globex)
    assert response.status == 400, await response.text()
    entry = (await response.json())["errors"][0]
    assert entry["code"] == "WELL_010"
    assert "tenants/globex/reports/latest.txt" in entry["message"]
    # ... and cannot climb out of it.
    steal["Flow"]["DataWells"][0]["Key"] = "../acme/reports/latest.txt"
    response = await client.post("/api/v1/flow/test", json=steal, headers=globex)
    assert (await response.json())["errors"][0]["code"] == "WELL_005"

    # globex writes an output under the same key: its own object, acme's is untouched.
    response = await client.post("/api/v1/flow/test", json=body, headers=globex)
    run = await response.json()
    async with client.session.put(run["WaitingURLs"][0]["PutURL"], data=b"globex") as uploaded:
        assert uploaded.status == 200
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"}, headers=globex)
    assert done["Artifacts"]["out"]["ObjectName"] == "tenants/globex/reports/latest.txt"
    objects = data_dir / "objects" / "default" / "data"
    assert (objects / acme_key).read_bytes() == b"acme's secret report"
    assert (objects / "tenants/globex/reports/latest.txt").read_bytes() == b"globex"


async def test_flows_name_the_operators_stores_without_declaring_them(start_service, tmp_path):
    data_dir = tmp_path / "data"
    client = await start_service(data_dir, storage={"stores": {"archive": {"type": "local"}}})
    body = copy_flow("to-archive", [{"Edge": "src", "Source": "upload"},
                                    {"Edge": "out", "Store": "archive"}])  # fmt: skip
    run = await submit(client, body["Flow"], body["NodeDefs"])
    await upload(client, run, "src", b"kept")
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    artifact = done["Artifacts"]["out"]
    assert artifact["StoreName"] == "archive"
    stored = data_dir / "objects" / "archive" / "data" / artifact["ObjectName"]
    assert stored.read_bytes() == b"kept"
    assert artifact["ObjectName"].startswith("tenants/default/")


# ------------------------------------------------------------------ the operator's credentials


class Listener:
    """An HTTP server standing in for an address a flow names: it records what reaches it."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []

    async def start(self) -> str:
        async def record(request: web.Request) -> web.Response:
            self.requests.append(dict(request.headers))
            return web.Response(status=404)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return f"http://127.0.0.1:{self.server.port}"


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    """Closed after the service: a test's service polls its flow stores until it stops,
    and a connection accepted while the listener closes would leak into a later test."""
    started = Listener()
    yield started
    await started.server.close()


def flow_store(endpoint: str, **params) -> dict:  # type: ignore[no-untyped-def]
    return {"Name": "mine", "Type": "s3",
            "Params": {"bucket": "b", "endpoint_url": endpoint, **params}}  # fmt: skip


def upload_to_own_store(store: dict) -> dict:
    body = copy_flow("own", [{"Edge": "src", "Source": "upload", "Store": "mine"},
                             {"Edge": "out", "Store": "mine"}])  # fmt: skip
    body["Flow"]["Stores"] = [store]
    return body


async def test_a_flow_store_never_gets_the_operators_credentials(
    listener, start_service, monkeypatch, tmp_path
):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAOPERATOR")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "operator-secret")
    endpoint = await listener.start()
    client = await start_service()
    # Without the operator's leave, a flow declares no store of its own.
    response = await client.post(
        "/api/v1/flow/test", json=upload_to_own_store(flow_store(endpoint))
    )
    assert response.status == 400, await response.text()
    codes = [(e["code"], e["field"]) for e in (await response.json())["errors"]]
    assert codes == [("STORE_006", "Flow.Stores.0.Type")]
    await asyncio.sleep(1)  # the upload poller would have knocked by now
    assert listener.requests == []

    # Allowed there, it must bring its own credentials, and only those are used.
    client = await start_service(
        tmp_path / "allowing", storage={"flow_store_endpoints": [endpoint]}
    )
    response = await client.post(
        "/api/v1/flow/test", json=upload_to_own_store(flow_store(endpoint))
    )
    assert response.status == 400
    fields = {e["field"] for e in (await response.json())["errors"]}
    assert fields == {"Flow.Stores.0.Params.access_key_id",
                      "Flow.Stores.0.Params.secret_access_key"}  # fmt: skip
    store = flow_store(endpoint, access_key_id="AKIAFLOW", secret_access_key="flow-secret")
    response = await client.post("/api/v1/flow/test", json=upload_to_own_store(store))
    assert response.status == 200, await response.text()
    for _ in range(50):
        if listener.requests:
            break
        await asyncio.sleep(0.1)
    assert listener.requests, "the upload poller never asked the flow's store"
    signatures = [r.get("Authorization", "") for r in listener.requests]
    assert all("Credential=AKIAFLOW/" in s for s in signatures), signatures
    assert not any("AKIAOPERATOR" in str(r) for r in listener.requests)


async def test_flow_stores_are_kept_open_in_a_bounded_number(listener, start_service):
    endpoint = await listener.start()
    client = await start_service(
        storage={"flow_store_endpoints": [endpoint], "flow_stores_open": 4}
    )
    for i in range(12):
        store = flow_store(
            endpoint, access_key_id="AKIAFLOW", secret_access_key="s", prefix=f"p{i}"
        )
        response = await client.post("/api/v1/flow/test", json=upload_to_own_store(store))
        assert response.status == 200, await response.text()
    assert len(client.server.app[STORES]._flow_stores) == 4


async def test_an_image_name_cannot_send_the_engine_to_any_registry(listener, start_service):
    endpoint = await listener.start()
    client = await start_service()
    image = f"{endpoint.removeprefix('http://')}/evil/probe:1"
    defs = [{"Publisher": "test", "Name": "probe", "Image": image, "MaxAttempts": 3}]
    run, done = await run_chain(client, defs, "probe")
    state = done["NodeState"]["n0"]
    assert state["Attempt"] == 1  # not retried: nothing would change
    assert f"pulling from {endpoint.removeprefix('http://')} is not allowed" in state["Error"]
    assert listener.requests == []


def test_registry_of_follows_dockers_reference_rules():
    assert registry_of("python:3.12-slim") == "docker.io"
    assert registry_of("pipewell/busybox:latest") == "docker.io"
    assert registry_of("ghcr.io/org/img") == "ghcr.io"
    assert registry_of("localhost/img") == "localhost"
    assert registry_of("127.0.0.1:5000/img") == "127.0.0.1:5000"


async def test_the_small_500s_of_the_issue_are_400s_with_codes(start_service):
    client = await start_service()
    body = json.dumps(simple_flow()).replace(
        '"NodeDefs": [{', '"NodeDefs": [{"Timeout": Infinity, '
    )
    response = await client.post(
        "/api/v1/flow/test", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    assert (await response.json())["code"] == "BODY_MALFORMED"
    for store in ("a/b", "../up", "s" * 5000, "nul\x00"):
        flow = simple_flow()
        flow["Flow"]["DataWells"] = [{"Edge": "dst", "Store": store}]
        response = await client.post("/api/v1/flow/test", json=flow)
        assert response.status == 400, (store, await response.text())
        errors = (await response.json())["errors"]
        assert ("NAME_001", "Flow.DataWells.0.Store") in {(e["code"], e["field"]) for e in errors}
    assert runs_of(client) == {}
