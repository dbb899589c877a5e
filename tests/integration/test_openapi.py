"""GET /openapi.json and GET /docs on the real service: a valid OpenAPI 3.1 document of
every route the app serves, generated from the handlers' models, and Swagger UI served
from the service's own files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from orchestrator.api import docs
from orchestrator.api.errors import catalog
from orchestrator.api.openapi import CODES, HTTP_UNREADABLE, REF_TEMPLATE, RUN_NOT_FOUND
from orchestrator.models import FlowRun

pytestmark = pytest.mark.docker

API_MD = Path(__file__).parents[2] / "docs" / "api.md"


def served_routes(app) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(method, path) of every route of the app; HEAD is GET's, which aiohttp adds to each."""
    return {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD"
    }


async def test_the_document_is_valid_and_documents_every_route(start_service):
    client = await start_service(auth="required")
    # Public: no key asked.
    response = await client.get("/openapi.json")
    assert response.status == 200
    document = await response.json()
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema
    assert document["openapi"] == "3.1.0"

    documented = {(m, path) for path, item in document["paths"].items() for m in item}
    # A route added without @operation fails here.
    assert served_routes(client.server.app) == documented
    assert len(documented) == 51  # the native API, collections, retries and gc included
    dialects = {
        "/invocations/v1/flows/invoke",
        "/v1/workflows/{workflow_id}/invoke/stream",
        "/api/v1/scade/flow/{flow_id}/execute",
        "/api/v1/webhook/{flow_id}",
        "/objects/{store}/{key}",
        "/api/v1/keys/{name}",
        "/metrics",
        "/healthz",
    }
    assert dialects <= set(document["paths"])
    assert {"/api/v1/nodedefs/{publisher}/{name}", "/api/v1/flow/graph/{run_id}"} <= set(
        document["paths"]
    )

    # With auth required every operation but the public ones asks for a key and may be 401.
    assert document["security"] == [{"bearer": []}, {"apiKey": []}, {"basic": []}]
    assert set(document["components"]["securitySchemes"]) == {
        "bearer", "apiKey", "basic", "queryKey"}  # fmt: skip
    test_flow = document["paths"]["/api/v1/flow/test"]["post"]
    assert "security" not in test_flow  # the document's applies
    assert test_flow["responses"]["401"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Unauthorized"
    }
    for public in ("/healthz", "/openapi.json", "/docs", "/objects/{store}/{key}", "/ui/"):
        assert document["paths"][public]["get"]["security"] == []
        assert "401" not in document["paths"][public]["get"]["responses"]
    run = document["paths"]["/api/v1/run/{flow_id}"]["post"]
    assert {"queryKey": []} in run["security"]


async def test_schemas_are_the_models_and_errors_are_the_fixed_bodies(start_service):
    client = await start_service()
    document = await (await client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    flow_run = FlowRun.model_json_schema(ref_template=REF_TEMPLATE, mode="serialization")
    flow_run.pop("$defs")
    assert schemas["FlowRun"] == flow_run
    assert set(schemas["ErrorBody"]["required"]) == {"code", "message"}
    assert schemas["Unauthorized"]["properties"]["error"]["const"] == "unauthorized"

    status = document["paths"]["/api/v1/flow/status/{run_id}"]["get"]["responses"]
    assert status["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/FlowRun"
    }
    # The seed's unknown run: plain text (as is the HTTP server's own refusal of a request
    # it cannot read, which any operation may meet).
    assert status["400"]["content"] == {
        "text/plain": {"schema": {"type": "string", "examples": ["Flow run does not exist."]}}
    }
    assert "Flow run does not exist." in status["400"]["description"]
    assert "8190 bytes" in status["400"]["description"]
    invalid = document["paths"]["/api/v1/flow/test"]["post"]["responses"]["400"]
    assert "FLOW_INVALID" in invalid["description"]
    assert invalid["content"] == {
        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}},
        "text/plain": {"schema": {"type": "string"}},
    }
    # YAML bodies are documented where they are read.
    body = document["paths"]["/api/v1/flow/test"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "application/yaml", "application/x-yaml", "text/yaml"}
    # Without auth nothing asks for a key, and a foreign Host is refused.
    assert "security" not in document
    assert "401" not in document["paths"]["/api/v1/flow/test"]["post"]["responses"]
    assert "HOST_FORBIDDEN" in status["403"]["description"]
    # Event streams describe each event's JSON data by its model.
    events = document["paths"]["/api/v1/flow/events/{run_id}"]["get"]["responses"]["200"]
    variants = events["content"]["text/event-stream"]["schema"]["oneOf"]
    names = [v["properties"]["event"]["const"] for v in variants]
    assert names == ["status", "delta", "log", "end"]
    assert variants[0]["properties"]["data"]["contentSchema"] == {
        "$ref": "#/components/schemas/FlowRun"
    }
    assert variants[1]["properties"]["data"]["contentSchema"] == {
        "$ref": "#/components/schemas/RunDelta"
    }
    assert "Counts" in document["components"]["schemas"]["RunDelta"]["properties"]


async def test_the_document_declares_what_the_handlers_refuse(start_service):
    """A generated client learns the bounds the service holds a body to: each one
    declared is also refused, with the service's own code."""
    client = await start_service()
    schemas = (await (await client.get("/openapi.json")).json())["components"]["schemas"]
    # Request bodies are the models' input schemas.
    assert schemas["Flow-Input"]["properties"]["Nodes"]["minItems"] == 1
    assert schemas["Node-Input"]["properties"]["ID"]["minLength"] == 1
    key = schemas["KeyRequest"]["properties"]
    assert (key["name"]["minLength"], key["name"]["maxLength"]) == (1, 100)
    assert key["tenant"]["pattern"] == "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
    flag = schemas["FlagDef-Input"]["properties"]
    assert flag["Values"]["anyOf"][0]["minItems"] == 1 and "Min" in flag and "Max" in flag

    empty = await client.post("/api/v1/flow/test", json={"Flow": {"Name": "f", "Nodes": []}})
    assert [e["code"] for e in (await empty.json())["errors"]] == ["FLOW_002"]
    for body in ({"name": "", "tenant": "t"}, {"name": "x" * 101}, {"name": "k", "tenant": "a b"}):
        refused = await client.post("/api/v1/keys", json=body)
        assert refused.status == 400 and (await refused.json())["code"] == "API_KEY_INVALID", body


def test_the_error_catalog_of_the_docs_is_the_error_table():
    page = API_MD.read_text()
    table = page[page.index("| code | status | when |") :].split("\n\n", 1)[0].rstrip("\n")
    assert table + "\n" == catalog(), "docs/api.md's error catalog must be errors.catalog()"
    statuses = dict(re.findall(r"^\| `([A-Z_]+)` \| (\d{3}) \|", table, re.M))
    assert {code: int(status) for code, status in statuses.items()} == CODES
    # Answered in plain text, without a code: the seed's unknown run, the HTTP server's own.
    assert RUN_NOT_FOUND not in CODES and HTTP_UNREADABLE not in CODES


async def test_docs_serve_swagger_ui_from_the_package_without_a_key(start_service):
    client = await start_service(auth="required")
    page = await client.get("/docs")
    assert page.status == 200 and page.content_type == "text/html"
    html = await page.text()
    assert '<div id="swagger-ui">' in html
    assert '<script src="/docs/static/swagger-ui-bundle.js">' in html
    assert "<script>" not in html  # nothing inline: the CSP allows this origin's files only
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self';")

    bundle = await client.get("/docs/static/swagger-ui-bundle.js")
    assert bundle.status == 200 and bundle.content_type == "text/javascript"
    served = await bundle.read()
    assert served == (docs.swagger_ui_dir() / "swagger-ui-bundle.js").read_bytes()
    assert b"SwaggerUIBundle" in served and len(served) > 500_000

    start = await client.get("/docs/static/pipewell-docs.js")
    assert 'url: "/openapi.json"' in await start.text()
    css = await client.get("/docs/static/swagger-ui.css")
    assert css.content_type == "text/css" and b".swagger-ui" in await css.read()
    # Only the files the page uses, nothing else of the package (source maps, the editor).
    for name in ("swagger-ui.js.map", "swagger-editor-bundle.js", "..%2Fcore.py"):
        missing = await client.get(f"/docs/static/{name}")
        assert missing.status == 404 and (await missing.json())["code"] == "ROUTE_NOT_FOUND"

    # Everything else still asks for a key.
    assert (await client.get("/api/v1/flow/runs")).status == 401
