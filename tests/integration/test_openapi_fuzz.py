"""Property-based fuzzing of the real service over its own OpenAPI document (schemathesis).

The service is the production app (``create_app``) on a real port with auth
required, its worker on the real Docker engine; schemathesis loads
``/openapi.json`` from it and sends what the document allows (and, in its
negative phase, what it does not), every operation of every dialect. Each
answer must be no 5xx, of a status the document declares for the operation,
of a declared Content-Type and, when JSON, valid against its declared schema;
the events of the SSE streams are checked against their event schemas too
(schemathesis reads the streams, which end with their runs). Invalid requests
must be refused with a 4xx.

Random ids only ever meet "not found", so some cases are given ids that exist:
a saved flow (its graph_id, id and name), a config profile, a Scade task, a
run waiting for its input and a finished one. The saved flow's node copies its
input, so every invocation with it completes in about a second. The presigned
object URLs only ever meet refusals here (no case can sign one);
test_local_store covers their answers.

The cases are the same on every run (derandomized). To hunt further:
``FUZZ_EXAMPLES=150 FUZZ_RANDOM=1 pytest tests/integration/test_openapi_fuzz.py``
(about three minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import secrets
import threading
import time
from collections.abc import Iterator
from itertools import product
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.hooks import HookDispatcher, HookScope
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from orchestrator.api import openapi
from orchestrator.api.app import create_app
from orchestrator.cli import main as cli
from orchestrator.config import Settings
from tests.helpers import busybox_def, service_settings

pytestmark = pytest.mark.docker

ECHO = busybox_def("echo", "cp ${in} ${out}", MaxAttempts=1, Flags=[{"Name": "note"}])
FLOW = {
    "Name": "fuzzed",
    "Nodes": [
        {
            "ID": "echo",
            "Uses": "test/echo",
            "Inputs": [{"Name": "in", "Edge": "request"}],
            "Outputs": [{"Name": "out", "Edge": "reply"}],
        }
    ],
}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
#: Operations that answer a body the document calls invalid with 200 on purpose.
#: /flow/validate reports every problem of a submission, the bounds the document
#: declares for generated clients (a node's ID and Uses not empty, at least one node)
#: among them, in its 200 report; a body that is not a submission at all is its 400.
REPORTS_INVALID_BODIES = {("POST", "/api/v1/flow/validate")}
#: Cases per operation and mode: 34 operations, twice, in about a minute on two cores.
MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
AUTH_HEADERS = ("authorization", "x-api-key")
#: Seconds an answer may take: the longest is a wait for a one-node run.
REQUEST_TIMEOUT = 30


class ServiceThread:
    """The production app in a thread with its own event loop, so that schemathesis's
    blocking calls (requests) can reach it from the test's thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(create_app(settings))
        self.thread = threading.Thread(target=self.loop.run_forever, name="service", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        self._call(self._start())
        return self.settings.base_url

    async def _start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.settings.port).start()

    def __exit__(self, *exc: object) -> None:
        self._call(self.runner.cleanup(), timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def _call(self, coroutine: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)


def admin_key(data_dir: Path) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        # A name no case will guess: revoking it would stop the fuzzing.
        name = f"fuzzer-{secrets.token_hex(8)}"
        argv = ["keys", "create", "--name", name, "--admin", "--data-dir", str(data_dir)]
        assert cli(argv) == 0
    return out.getvalue().strip()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data_dir = tmp_path_factory.mktemp("fuzz") / "data"
    key = admin_key(data_dir)
    settings = service_settings(
        data_dir,
        auth="required",
        # No image is ever pulled: a fuzzed flow naming one that is not here fails at once.
        executor={"default_timeout": 30, "pull_registries": []},
        invocations={"sync_timeout": REQUEST_TIMEOUT - 5},
    )
    with ServiceThread(settings) as base:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {key}"
        yield {"base": base, "key": key, "ids": seed(session, base)}
        session.close()


def seed(session: requests.Session, base: str) -> dict[str, dict[str, list[str]]]:
    """Things that exist, for the ids of some cases: path parameter → values; DELETEs
    get a flow of their own, so the one every invocation runs stays."""

    def call(method: str, path: str, **kwargs: Any) -> Any:
        response = session.request(method, base + path, timeout=REQUEST_TIMEOUT, **kwargs)
        assert response.status_code < 300, response.text
        return response.json()

    saved = call("POST", "/api/v1/flows", json={"Flow": FLOW, "NodeDefs": [ECHO]})
    call("PUT", f"/api/v1/flows/{saved['graph_id']}/configs/fuzz", json={"flags": {}})
    doomed = call(
        "POST", "/api/v1/flows", json={"Flow": {**FLOW, "Name": "doomed"}, "NodeDefs": [ECHO]}
    )
    call("PUT", f"/api/v1/flows/{doomed['graph_id']}/configs/fuzz", json={"flags": {}})
    waiting = call(
        "POST",
        "/api/v1/flow/test",
        json={"Flow": FLOW, "NodeDefs": [ECHO]},
    )
    done = call(
        "POST",
        "/invocations/v1/flows/invoke",
        json={"graph_id": saved["graph_id"], "input": {"text": "seed"}, "wait": True},
    )
    assert done["result"]["success"] is True, done
    task = call("POST", f"/api/v1/scade/flow/{saved['id']}/execute", json={})
    flows = [saved["graph_id"], str(saved["id"]), saved["name"]]
    kept = {
        "ref": flows,
        "workflow_id": flows,
        "flow_id": flows,
        "config_id": ["fuzz"],
        "task_id": [str(task["id"])],
        # A waiting run's events would stream until it ends: the events get a finished one.
        "run_id": [waiting["ID"], done["execution_id"]],
        "events_run_id": [done["execution_id"]],
        "edge": ["reply", "request"],
        "graph_id": [saved["graph_id"]],
    }
    doomed_refs = [doomed["graph_id"], str(doomed["id"]), doomed["name"]]
    return {"kept": kept, "delete": {"ref": doomed_refs, "config_id": ["fuzz"]}}


@pytest.fixture(scope="module")
def api_schema(service: dict[str, Any]) -> Any:
    document = requests.get(service["base"] + "/openapi.json", timeout=10).json()
    return schemathesis.openapi.from_dict(document)


def seeding(ids: dict[str, dict[str, list[str]]]) -> HookDispatcher:
    """Hooks that give some valid cases ids that exist. Not for invalid cases: one whose
    invalid part were replaced by a valid id would be valid, and rightly accepted."""
    hooks = HookDispatcher(scope=HookScope.TEST)

    def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> Any:
        if not path_parameters or context.operation is None:
            return st.just(path_parameters)
        events = "/events/" in context.operation.path
        known_ids = ids["delete" if context.operation.method == "delete" else "kept"]
        # Each parameter as generated or one that exists, in every combination (an
        # artifact needs a run and its edge, a profile its flow and its name).
        options = [
            [value, *known_ids.get("events_run_id" if events and name == "run_id" else name, [])]
            for name, value in path_parameters.items()
        ]
        choices = [dict(zip(path_parameters, combo, strict=True)) for combo in product(*options)]
        return st.sampled_from(choices)

    def flatmap_body(context: Any, body: Any) -> Any:
        if isinstance(body, dict) and "graph_id" in body:
            return st.sampled_from([body, {**body, "graph_id": ids["kept"]["graph_id"][0]}])
        if isinstance(body, dict) and "Flow" in body:
            # A valid flow: its run waits for its input, saving it finds it saved already.
            return st.sampled_from([body, {"Flow": FLOW, "NodeDefs": [ECHO]}])
        return st.just(body)

    hooks.hook(flatmap_path_parameters)
    hooks.hook(flatmap_body)
    return hooks


def operations() -> list[tuple[str, str, GenerationMode]]:
    """(method, path, mode) of every operation of the document, read from the app offline:
    valid requests for each, and invalid ones for those with a body or a query to break."""
    settings = service_settings(Path("unused"), auth="required")
    document = openapi.document(create_app(settings), settings)
    cases = []
    for path, item in document["paths"].items():
        for method, spec in item.items():
            cases.append((method.upper(), path, GenerationMode.POSITIVE))
            queries = [p for p in spec.get("parameters", []) if p["in"] == "query"]
            if "requestBody" in spec or queries:
                cases.append((method.upper(), path, GenerationMode.NEGATIVE))
    return cases


@pytest.mark.parametrize(("method", "path", "mode"), operations())
def test_every_answer_is_declared_and_none_is_a_server_error(
    method: str, path: str, mode: GenerationMode, api_schema: Any, service: dict[str, Any]
):
    operation = api_schema[path][method]
    hooks = seeding(service["ids"]) if mode == GenerationMode.POSITIVE else None
    checks = CHECKS
    if (method, path) in REPORTS_INVALID_BODIES:
        checks = [check for check in CHECKS if check is not negative_data_rejection]

    @given(case=operation.as_strategy(generation_mode=mode, hooks=hooks))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        # Reproducible: the same cases on every run, found failures stay found.
        derandomize=os.environ.get("FUZZ_RANDOM") is None,
        suppress_health_check=list(HealthCheck),
    )
    def answers_as_documented(case: Any) -> None:
        # The service's own key on every case: the keys schemathesis makes up are only ever
        # refused (401 is declared, and test_auth covers it).
        case.headers = {
            k: v for k, v in (case.headers or {}).items() if k.lower() not in AUTH_HEADERS
        }
        if case.query:
            case.query.pop("x-api-key", None)
        started = time.monotonic()
        case.call_and_validate(
            base_url=service["base"],
            headers={"Authorization": f"Bearer {service['key']}"},
            checks=checks,
            timeout=REQUEST_TIMEOUT,
        )
        assert time.monotonic() - started < REQUEST_TIMEOUT

    answers_as_documented()


async def test_what_the_fuzzer_found_stays_fixed(start_service):
    """Each answer the fuzzer once found undeclared, asked again directly."""
    client = await start_service()
    response = await client.post("/api/v1/flows", json={"Flow": FLOW, "NodeDefs": [ECHO]})
    assert response.status == 201
    # str.isdigit() takes '¹' (int() refuses it: 500) and '٣' (int() reads 3): no ids.
    for ref in ("¹", "٣"):
        missing = await client.get(f"/api/v1/flows/{ref}")
        assert missing.status == 404 and (await missing.json())["code"] == "FLOW_NOT_FOUND"
        task = await client.get(f"/api/v1/task/{ref}")
        assert task.status == 404 and (await task.json())["code"] == "TASK_NOT_FOUND"
        version = await client.get("/api/v1/flows/fuzzed", params={"version": ref})
        assert version.status == 400 and (await version.json())["code"] == "VERSION_INVALID"
        limit = await client.get("/api/v1/flow/runs", params={"limit": ref})
        assert limit.status == 400 and (await limit.json())["code"] == "LIMIT_INVALID"
    # A version given twice is refused, not read as the first; an empty one is the latest.
    twice = await client.get("/api/v1/flows/fuzzed?version=1&version=2")
    assert twice.status == 400 and (await twice.json())["code"] == "VERSION_INVALID"
    latest = await client.get("/api/v1/flows/fuzzed?version=")
    assert latest.status == 200 and (await latest.json())["version"] == 1

    # A request line over 8190 bytes is refused by the HTTP server itself, in plain text,
    # before any code of ours: the document declares that answer for every operation.
    long = await client.get("/api/v1/flow/runs", params={"limit": "1" * 9000})
    assert long.status == 400 and long.content_type == "text/plain"
    assert "8190 bytes" in await long.text()
    document = await (await client.get("/openapi.json")).json()
    refused = document["paths"]["/api/v1/flow/runs"]["get"]["responses"]["400"]
    assert refused["content"]["text/plain"] == {"schema": {"type": "string"}}

    # A flag's Value may be a number or a boolean (made text): the schema says so now.
    schemas = document["components"]["schemas"]
    value = schemas["NodeFlag-Input"]["properties"]["Value"]
    assert [t["type"] for t in value["anyOf"]] == ["string", "integer", "number", "boolean"]
    assert schemas["NodeFlag-Output"]["properties"]["Value"]["type"] == "string"
    flow = {**FLOW, "Nodes": [{**FLOW["Nodes"][0], "Flags": [{"Name": "note", "Value": 3}]}]}
    checked = await client.post("/api/v1/flow/validate", json={"Flow": flow, "NodeDefs": [ECHO]})
    assert (await checked.json())["valid"] is True
