"""What a web page in a real browser (Debian's Chromium, by Playwright) can do to Pipewell.

The attack of the security issue: a page the user visits posts a flow to
``http://127.0.0.1:<port>`` with a simple content type, which needs no CORS
preflight. The service must refuse it; an origin the operator allows works.
"""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from orchestrator.api.resources import SCHEDULER
from tests.helpers import busybox_def, free_port

pytestmark = pytest.mark.skipif(
    shutil.which("chromium") is None, reason="needs Debian's chromium (make setup installs it)"
)

FLOW = {
    "Flow": {
        "Name": "from-a-page",
        "Nodes": [{"ID": "n", "Uses": "test/t", "Outputs": [{"Name": "out", "Edge": "dst"}]}],
    },
    "NodeDefs": [busybox_def("t", "sh -c 'echo pwned > ${out}'", Outputs=[{"Name": "out"}])],
}

ATTACK_PAGE = """<!doctype html>
<iframe name="sink"></iframe>
<form id="form" method="POST" enctype="text/plain" target="sink" action="{target}">
  <input name='{{"Flow": {flow_head}, "x": "' value='"}}'>
</form>
<script>
  const body = {body};
  const plain = {{"Content-Type": "text/plain"}};
  fetch("{target}", {{method: "POST", mode: "no-cors", headers: plain, body}});
  fetch("{target}", {{method: "POST", mode: "no-cors", body}});
  document.getElementById("form").submit();
</script>
"""

APP_PAGE = """<!doctype html>
<script>
  window.result = fetch("{target}", {{
    method: "POST", headers: {{"Content-Type": "application/json"}}, body: {body}
  }}).then(async (r) => ({{status: r.status, body: await r.json()}}));
</script>
"""


async def serve_page(html: str, port: int | None = None) -> TestServer:
    async def page(_: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    return server


async def test_a_page_of_another_site_cannot_start_a_flow(start_service, browser):
    client = await start_service()
    target = f"http://127.0.0.1:{client.port}/api/v1/flow/test"
    body = json.dumps(FLOW)
    html = ATTACK_PAGE.format(
        target=target, body=json.dumps(body), flow_head=json.dumps(FLOW["Flow"])
    )
    page_server = await serve_page(html)
    answers: list[tuple[str, int]] = []
    try:
        page = await browser.new_page()
        page.on(
            "response",
            lambda r: answers.append((r.request.method, r.status)) if r.url == target else None,
        )
        # localhost:<other port> is another site than 127.0.0.1:<service port>.
        await page.goto(f"http://localhost:{page_server.port}/")
        for _ in range(100):
            if len(answers) == 3:
                break
            await asyncio.sleep(0.05)
    finally:
        await page_server.close()
    # All three reached the service (two fetches, one form) and were refused.
    assert answers == [("POST", 403)] * 3
    assert client.server.app[SCHEDULER].runs == {}


async def test_a_web_app_of_an_allowed_origin_can_call_the_api(start_service, browser):
    page_port = free_port()
    origin = f"http://localhost:{page_port}"
    client = await start_service(allowed_origins=[origin])
    target = f"http://127.0.0.1:{client.port}/api/v1/flow/test"
    html = APP_PAGE.format(target=target, body=json.dumps(json.dumps(FLOW)))
    page_server = await serve_page(html, page_port)
    try:
        page = await browser.new_page()
        await page.goto(f"{origin}/")
        result = await page.evaluate("window.result")
    finally:
        await page_server.close()
    # The browser asked first (preflight), was answered for this origin, and may read the run.
    assert result["status"] == 200, result
    assert result["body"]["ID"] in client.server.app[SCHEDULER].runs


async def test_the_docs_page_loads_and_tries_an_endpoint_out(start_service, browser):
    """Swagger UI from the service's own files, under its CSP: it renders the document and
    "Try it out" reaches the service from the page's own origin."""
    client = await start_service()
    page = await browser.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    foreign: list[str] = []
    base = f"http://127.0.0.1:{client.port}"
    page.on("request", lambda r: foreign.append(r.url) if not r.url.startswith(base) else None)

    await page.goto(f"{base}/docs")
    summary = page.locator("#operations-native-native_validate_flow")
    await summary.wait_for(timeout=15_000)
    assert "Validate {Flow, NodeDefs} without running anything" in await summary.inner_text()
    described = await (await client.get("/openapi.json")).json()
    operations = sum(len(methods) for methods in described["paths"].values())
    assert operations >= 44 and await page.locator(".opblock").count() == operations

    health = page.locator("#operations-service-native_healthz")
    await health.locator(".opblock-summary").click()
    await health.get_by_role("button", name="Try it out").click()
    await health.get_by_role("button", name="Execute").click()
    status = health.locator(".live-responses-table .response .response-col_status")
    await status.wait_for(timeout=15_000)
    assert (await status.inner_text()).strip() == "200"
    answer = await health.locator(".live-responses-table .microlight").first.inner_text()
    assert '"status": "ok"' in answer

    # A request that changes something: the page is of the service's own origin, so the
    # browser guard lets it through (Swagger UI sends the example body it made).
    await summary.locator(".opblock-summary").click()
    await summary.get_by_role("button", name="Try it out").click()
    await summary.get_by_role("button", name="Execute").click()
    status = summary.locator(".live-responses-table .response .response-col_status")
    await status.wait_for(timeout=15_000)
    assert (await status.inner_text()).strip() == "200"
    answer = await summary.locator(".live-responses-table .microlight").first.inner_text()
    assert '"valid": false' in answer and "NODE_001" in answer

    assert problems == [] and foreign == []
