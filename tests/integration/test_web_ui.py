"""The web UI in a real browser (Debian's Chromium, by Playwright) against the real service.

Every test starts the production app factory on a real port with real Docker
and drives the pages as a user would: what they show is checked against what
the API says, and downloads and uploads against the bytes.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shutil
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from orchestrator.cli import main
from tests.helpers import (
    busybox_def,
    chain_flow,
    create_key,
    submit,
    submit_big_waiting_run,
    upload,
    wait_for,
)

pytestmark = pytest.mark.skipif(
    shutil.which("chromium") is None, reason="needs Debian's chromium (make setup installs it)"
)

VIEWPORT = {"width": 1280, "height": 800}
# A desktop, and a phone held upright: the widths the layout is checked at.
WIDE = {"width": 1400, "height": 900}
NARROW = {"width": 420, "height": 900}
SLOW = 60_000  # ms: a node's container starting on a busy machine

# A diamond: src → shout → loud → (count → size, mirror → mirrored) → report.
DIAMOND_DEFS = [
    busybox_def("shout", "sh -c 'echo shouting now; tr a-z A-Z < ${in} > ${out}'"),
    busybox_def("count", "sh -c 'wc -c < ${in} > ${out}'"),
    busybox_def("mirror", "sh -c 'rev < ${in} > ${out}'"),
    busybox_def(
        "report",
        "sh -c 'cat ${a} ${b} > ${out}'",
        Inputs=[{"Name": "a"}, {"Name": "b"}],
        Outputs=[{"Name": "out"}],
    ),
]
DIAMOND = {
    "Name": "diamond",
    "Nodes": [
        {
            "ID": "shout",
            "Uses": "test/shout",
            "Inputs": [{"Name": "in", "Edge": "src"}],
            "Outputs": [{"Name": "out", "Edge": "loud"}],
        },
        {
            "ID": "count",
            "Uses": "test/count",
            "Inputs": [{"Name": "in", "Edge": "loud"}],
            "Outputs": [{"Name": "out", "Edge": "size"}],
        },
        {
            "ID": "mirror",
            "Uses": "test/mirror",
            "Inputs": [{"Name": "in", "Edge": "loud"}],
            "Outputs": [{"Name": "out", "Edge": "mirrored"}],
        },
        {
            "ID": "report",
            "Uses": "test/report",
            "Inputs": [{"Name": "a", "Edge": "size"}, {"Name": "b", "Edge": "mirrored"}],
            "Outputs": [{"Name": "out", "Edge": "report"}],
        },
    ],
}

DIAMOND_NODES = ("shout", "count", "mirror", "report")

GREETER = {
    "Flow": {
        "Name": "greeter",
        "Nodes": [
            {
                "ID": "greet",
                "Uses": "demo/greet",
                "Inputs": [{"Name": "in", "Edge": "request"}],
                "Outputs": [{"Name": "out", "Edge": "reply"}],
            }
        ],
    },
    "NodeDefs": [
        {
            "Publisher": "demo",
            "Name": "greet",
            "Image": "pipewell/busybox:latest",
            "Tier": "c-nano",
            "MaxAttempts": 2,
            "Flags": [{"Name": "greeting", "Default": "hello", "Description": "said first"}],
            "Command": {
                "Name": "run",
                "Exec": 'sh -c \'printf "%s " "$FLAG_GREETING" > ${out}; cat ${in} >> ${out}\'',
            },
        }
    ],
}


class Watched:
    """A page, with what would show a broken page: uncaught errors and CSP refusals."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("pageerror", lambda error: self.problems.append(f"uncaught: {error}"))
        page.on(
            "console",
            lambda message: (
                self.problems.append(f"console: {message.text}")
                if "Content Security Policy" in message.text
                else None
            ),
        )


async def open_page(browser: Any, url: str, viewport: dict[str, int] = VIEWPORT) -> Watched:
    context = await browser.new_context(viewport=viewport, accept_downloads=True)
    watched = Watched(await context.new_page())
    await watched.page.goto(url)
    return watched


async def enter_key(page: Any, key: str) -> None:
    """Answer the page's key prompt (shown on the first 401)."""
    prompt = page.locator("#key-prompt")
    await prompt.locator("input[name=api-key]").fill(key)
    await prompt.locator("button[type=submit]").click()


async def keep_screenshot(page: Any, tmp_path: Path, name: str) -> Path:
    """The page as a PNG under tmp_path, and in $PIPEWELL_SCREENSHOT_DIR when set."""
    path = tmp_path / name
    await page.mouse.move(0, 0)  # no link left hovered
    await page.screenshot(path=str(path), full_page=True)
    if folder := os.environ.get("PIPEWELL_SCREENSHOT_DIR"):
        await asyncio.to_thread(Path(folder).mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(shutil.copyfile, path, Path(folder) / name)
    return path


async def downloaded(page: Any, link: Any) -> bytes:
    return (await downloaded_as(page, link))[1]


async def downloaded_as(page: Any, link: Any) -> tuple[str, bytes]:
    """The name the browser saves a download under, and its bytes."""
    async with page.expect_download() as info:
        await link.click()
    download = await info.value
    body = await asyncio.to_thread(Path(await download.path()).read_bytes)
    return download.suggested_filename, body


async def scroll_width(page: Any) -> tuple[int, int]:
    """The page's scrolling width and its visible width: equal when nothing goes sideways."""
    widths = await page.evaluate(
        "() => [document.scrollingElement.scrollWidth, document.scrollingElement.clientWidth]"
    )
    return widths[0], widths[1]


async def shot_width(page: Any, tmp_path: Path, name: str) -> int:
    """The width in pixels of a whole-page screenshot (kept as keep_screenshot keeps it)."""
    path = await keep_screenshot(page, tmp_path, name)
    with Image.open(path) as image:
        return image.size[0]


async def node_artifacts(page: Any) -> list[tuple[str | None, str | None, str | None]]:
    """The node panel's artifacts: (input or output, edge, its link's href or None)."""
    rows = page.locator("#artifacts li[data-edge]")
    listed = []
    for i in range(await rows.count()):
        row = rows.nth(i)
        link = row.locator("a")
        href = await link.get_attribute("href") if await link.count() else None
        way, edge = await row.get_attribute("data-way"), await row.get_attribute("data-edge")
        listed.append((way, edge, href))
    return listed


async def run_command(command: str, key: str, cwd: Path | None = None) -> str:
    """A command the page shows, run by bash as a user pasting it would."""
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        command,
        cwd=cwd,
        env={**os.environ, "PIPEWELL_API_KEY": key},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_run_page_draws_the_dag_with_final_states_and_artifacts(
    start_service, browser, tmp_path
):
    from playwright.async_api import expect

    client = await start_service()
    run = await submit(client, DIAMOND, DIAMOND_DEFS)
    await upload(client, run, "src", b"hello web ui\n")
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == "COMPLETE", done
    base = f"http://127.0.0.1:{client.port}"

    watched = await open_page(browser, f"{base}/ui/runs/{run['ID']}")
    page = watched.page
    await expect(page.locator("#run-status")).to_have_text("COMPLETE")
    await expect(page.locator("#flow-name")).to_have_text("diamond")
    for node in DIAMOND_NODES:
        vertex = page.locator(f'[data-node="{node}"]')
        await expect(vertex.locator(".status")).to_have_text("COMPLETE")
        await expect(vertex).to_have_class(re.compile(r"\bst-COMPLETE\b"))

    # Layered by longest path from the input: one column per step, the branches side by side.
    async def centre(selector: str) -> float:
        box = await page.locator(selector).bounding_box()
        return box["x"] + box["width"] / 2

    x = {node: await centre(f'[data-node="{node}"]') for node in DIAMOND_NODES}
    source, result = await centre('[data-port="src"]'), await centre('[data-port="report"]')
    assert source < x["shout"] < x["count"] == x["mirror"] < x["report"] < result
    labels = await page.locator(".edge-label text").all_text_contents()
    assert sorted(set(labels)) == ["loud", "mirrored", "report", "size", "src"]
    # The input and the terminal output are drawn as ports; the output links its artifact.
    await expect(page.locator('[data-port="src"]')).to_contain_text("input")
    await expect(page.locator('[data-port="report"]')).to_have_class(re.compile(r"\bavailable\b"))

    # A node's attempts, timings and logs.
    await page.locator('[data-node="shout"]').click()
    await expect(page.locator("#node-title")).to_have_text("Node shout")
    await expect(page.locator('[data-fact="attempt"]')).to_have_text("1 of 3")
    await expect(page.locator("#timings")).to_contain_text("run")
    await expect(page.locator("#log")).to_contain_text("shouting now")
    # Its artifacts are the edges it reads and writes, not every one of the run.
    artifact_path = f"/api/v1/flow/artifact/{run['ID']}"
    await expect(page.locator("#artifacts li")).to_have_count(2)
    assert await node_artifacts(page) == [
        ("input", "src", f"{artifact_path}/src"),
        ("output", "loud", f"{artifact_path}/loud"),
    ]
    await page.locator('[data-node="report"]').click()
    await expect(page.locator("#node-title")).to_have_text("Node report")
    await expect(page.locator("#artifacts li")).to_have_count(3)
    assert await node_artifacts(page) == [
        ("input", "size", f"{artifact_path}/size"),
        ("input", "mirrored", f"{artifact_path}/mirrored"),
        ("output", "report", f"{artifact_path}/report"),
    ]

    # The terminal artifact downloads from the page with the bytes the API serves, named
    # with the extension of its type (sniffed: its NodeDef declares none).
    name, body = await downloaded_as(page, page.locator("#artifacts a", has_text="report"))
    api_answer = await client.get(f"{artifact_path}/report")
    assert body == await api_answer.read()
    assert body.split() == [b"13", b"IU", b"BEW", b"OLLEH"]
    assert api_answer.headers["Content-Type"] == "text/plain"
    assert name == "report.txt"

    shot = await keep_screenshot(page, tmp_path, "ui-run.png")
    assert shot.read_bytes().startswith(b"\x89PNG")
    assert watched.problems == []

    # A node that fails: red, its attempts and its error.
    failing = [busybox_def("fail", "sh -c 'echo about to fail >&2; exit 3'", MaxAttempts=2)]
    run = await submit(client, chain_flow("fail", name="failing"), failing)
    await upload(client, run, "src", b"x")
    await wait_for(client, run["ID"], {"ERROR"})
    await page.goto(f"{base}/ui/runs/{run['ID']}")
    await expect(page.locator("#run-status")).to_have_text("ERROR")
    await expect(page.locator('[data-node="n0"] .status')).to_have_text("ERROR · attempt 2")
    await expect(page.locator('[data-node="n0"]')).to_have_class(re.compile(r"\bst-ERROR\b"))
    # The failed node is the one shown first.
    await expect(page.locator("#node-title")).to_have_text("Node n0")
    await expect(page.locator('[data-fact="attempt"]')).to_have_text("2 of 2")
    await expect(page.locator("#node-error")).to_contain_text("code 3")
    await expect(page.locator("#log")).to_contain_text("about to fail")
    assert watched.problems == []


async def test_a_log_line_shows_while_its_node_runs(start_service, browser, tmp_path, capsys):
    """With auth required: the page asks for the key, then reads the event stream with it."""
    from playwright.async_api import expect

    data_dir = tmp_path / "data"
    key = create_key(capsys, data_dir, "browser")
    client = await start_service(data_dir, auth="required")
    headers = {"Authorization": f"Bearer {key}"}
    slow = busybox_def(
        "slow",
        'sh -c \'echo first-line; echo "<img src=x id=injected>"; sleep 6; '
        "echo second-line; cp ${in} ${out}'",
    )
    submitted = await client.post(
        "/api/v1/flow/test", json={"Flow": chain_flow("slow"), "NodeDefs": [slow]}, headers=headers
    )
    run = await submitted.json()
    await upload(client, run, "src", b"x")

    watched = await open_page(browser, f"http://127.0.0.1:{client.port}/ui/runs/{run['ID']}")
    page = watched.page
    await enter_key(page, key)
    await page.locator('[data-node="n0"]').click()
    log = page.locator("#log")
    await expect(log).to_contain_text("first-line", timeout=SLOW)

    # Seen while the node still runs: the second line is seconds away.
    status = await wait_for(client, run["ID"], {"RUNNING", "COMPLETE", "ERROR"}, headers=headers)
    assert status["NodeState"]["n0"]["Status"] == "RUNNING"
    assert "second-line" not in await log.inner_text()
    await expect(page.locator('[data-node="n0"] .status')).to_have_text("RUNNING")
    # A line is text, never markup.
    await expect(log).to_contain_text("<img src=x id=injected>")
    assert await page.locator("#injected").count() == 0

    await expect(log).to_contain_text("second-line", timeout=SLOW)
    await expect(page.locator("#run-status")).to_have_text("COMPLETE", timeout=SLOW)
    await expect(page.locator('[data-node="n0"] .status')).to_have_text("COMPLETE")
    lines = await log.inner_text()
    assert lines.index("first-line") < lines.index("second-line")
    assert lines.count("second-line") == 1  # the live line and the final status agree
    # A link cannot send the key: the page fetches the artifact with it, then saves it
    # under the name the service gives.
    name, out = await downloaded_as(page, page.locator("#artifacts a", has_text="out"))
    assert (name, out) == ("out.txt", b"x")
    assert watched.problems == []


async def test_the_upload_button_starts_a_waiting_run(start_service, browser, tmp_path):
    from playwright.async_api import expect

    client = await start_service()
    defs = [busybox_def("shout", "sh -c 'tr a-z A-Z < ${in} > ${out}'")]
    run = await submit(client, chain_flow("shout"), defs)
    assert run["Status"] == "WAITING"

    watched = await open_page(browser, f"http://127.0.0.1:{client.port}/ui/runs/{run['ID']}")
    page = watched.page
    await expect(page.locator("#run-status")).to_have_text("WAITING")
    await expect(page.locator('[data-port="src"]')).to_have_class(re.compile(r"\bwaiting\b"))
    await expect(page.locator('[data-node="n0"] .status')).to_have_text("IDLE")
    await expect(page.locator("#waiting")).to_be_visible()

    content = b"bytes from the browser\n"
    source = tmp_path / "input.txt"
    source.write_bytes(content)
    await page.set_input_files('#waiting-list input[type=file][data-edge="src"]', str(source))
    await page.locator('[data-upload="src"]').click()
    await expect(page.locator("#waiting-list .note")).to_have_text(
        f"Uploaded input.txt ({len(content)} bytes)."
    )
    await expect(page.locator("#run-status")).to_have_text("COMPLETE", timeout=SLOW)
    await expect(page.locator('[data-node="n0"] .status')).to_have_text("COMPLETE")
    # Nothing is left to upload: the panel is gone.
    await expect(page.locator("#waiting")).to_be_hidden()

    # The upload stored the file's exact bytes, and the node's output is theirs.
    uploaded = await client.get(f"/api/v1/flow/artifact/{run['ID']}/src")
    assert await uploaded.read() == content
    assert uploaded.headers["Content-Type"].startswith("text/plain")
    output = await downloaded(page, page.locator("#artifacts a", has_text="out"))
    assert output == b"BYTES FROM THE BROWSER\n"
    assert watched.problems == []


async def test_cancel_asks_first_and_the_stopped_node_reads_stopped(start_service, browser):
    from playwright.async_api import expect

    client = await start_service()
    sleepy = busybox_def("sleepy", "sh -c 'echo asleep; sleep 60; cp ${in} ${out}'")
    run = await submit(client, chain_flow("sleepy"), [sleepy])
    await upload(client, run, "src", b"x")
    watched = await open_page(browser, f"http://127.0.0.1:{client.port}/ui/runs/{run['ID']}")
    page = watched.page
    node = page.locator('[data-node="n0"] .status')
    await expect(node).to_have_text("RUNNING", timeout=SLOW)
    asked: list[str] = []

    async def answer(dialog: Any, accept: bool) -> None:
        asked.append(dialog.message)
        await (dialog.accept() if accept else dialog.dismiss())

    page.once("dialog", lambda dialog: asyncio.ensure_future(answer(dialog, False)))
    await page.locator("#cancel").click()
    for _ in range(100):
        if asked:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # a cancel sent anyway would have landed by now
    assert (await (await client.get(f"/api/v1/flow/status/{run['ID']}")).json())[
        "Status"
    ] == "RUNNING"
    page.once("dialog", lambda dialog: asyncio.ensure_future(answer(dialog, True)))
    await page.locator("#cancel").click()
    await expect(page.locator("#run-status")).to_have_text("STOPPED", timeout=SLOW)
    await expect(node).to_have_text("STOPPED")
    assert asked == [asked[0]] * 2 and asked[0].startswith("Stop this run?")
    await page.locator('[data-node="n0"]').click()
    await expect(page.locator("#node-error")).to_have_text(
        "stopped: the run was cancelled on request"
    )
    status = await (await client.get(f"/api/v1/flow/status/{run['ID']}")).json()
    assert status["NodeState"]["n0"]["Status"] == "STOPPED"
    assert watched.problems == []


async def test_retry_starts_a_new_run_that_reuses_what_succeeded(start_service, browser):
    from playwright.async_api import expect

    client = await start_service()
    # n1 fails once: the retry takes over n0 and runs n1 again, which fails again.
    failing = busybox_def("failing", "sh -c 'echo broken >&2; exit 5'", MaxAttempts=1)
    run = await submit(client, chain_flow("shout", "failing"), [DIAMOND_DEFS[0], failing])
    await upload(client, run, "src", b"again")
    await wait_for(client, run["ID"], {"ERROR"})
    watched = await open_page(browser, f"http://127.0.0.1:{client.port}/ui/runs/{run['ID']}")
    page = watched.page
    await expect(page.locator("#retry")).to_be_visible(timeout=SLOW)
    await expect(page.locator("#cancel")).to_be_hidden()
    await page.locator("#retry").click()
    await page.wait_for_url(re.compile(r"/ui/runs/(?!" + run["ID"] + r")[0-9a-f]{32}$"))
    retry_id = page.url.rsplit("/", 1)[1]
    await expect(page.locator("#run-status")).to_have_text("ERROR", timeout=SLOW)
    await expect(page.locator("#retry-of")).to_have_text(run["ID"])
    await page.locator('[data-node="n0"]').click()
    await expect(page.locator('[data-fact="reused"]')).to_have_text(
        f"outputs of node n0 of run {run['ID']}"
    )
    status = await (await client.get(f"/api/v1/flow/status/{retry_id}")).json()
    assert status["RetryOf"] == run["ID"]
    assert status["NodeState"]["n0"]["Cached"] == {"Run": run["ID"], "Node": "n0"}
    assert status["NodeState"]["n1"]["Attempt"] == 1
    await page.goto(f"http://127.0.0.1:{client.port}/ui/runs/{run['ID']}")
    await expect(page.locator("#retried-by")).to_have_text(retry_id, timeout=SLOW)
    assert watched.problems == []


async def test_a_big_runs_page_follows_its_changes_sent_as_deltas(start_service, browser):
    """251 nodes: the stream sends the run whole once, then deltas, which the page
    merges: the one node that runs turns COMPLETE, the others stay as they were."""
    from playwright.async_api import expect

    client = await start_service()
    run = await submit_big_waiting_run(client)
    watched = await open_page(browser, f"http://127.0.0.1:{client.port}/ui/runs/{run['ID']}")
    page = watched.page
    await expect(page.locator('[data-node="go"] .status')).to_have_text("IDLE", timeout=SLOW)
    await upload(client, run, "src", b"x")
    await expect(page.locator('[data-node="go"] .status')).to_have_text("COMPLETE", timeout=SLOW)
    await expect(page.locator('[data-node="w7"] .status')).to_have_text("IDLE")
    await expect(page.locator("#run-status")).to_have_text("WAITING")
    # 'later' still waits for its upload; 'src' is done with.
    await expect(page.locator("#waiting")).to_be_visible()
    await expect(page.locator("#waiting-list li")).to_have_count(1)
    await expect(page.locator("#waiting-list li")).to_have_attribute("data-edge", "later")
    response = await client.post(f"/api/v1/flow/cancel/{run['ID']}")
    assert response.status == 200
    await expect(page.locator("#run-status")).to_have_text("STOPPED", timeout=SLOW)
    await expect(page.locator("#waiting")).to_be_hidden()
    assert watched.problems == []


@pytest.mark.parametrize("viewport", [WIDE, NARROW], ids=["1400px", "420px"])
async def test_the_run_page_fits_a_desktop_and_a_phone(start_service, browser, tmp_path, viewport):
    """Side by side on a desktop as before; one column on a phone, nothing wider than the
    screen and the log pane as wide as the page with room for its lines."""
    from playwright.async_api import expect

    client = await start_service()
    run = await submit(client, DIAMOND, DIAMOND_DEFS)
    await upload(client, run, "src", b"hello web ui\n")
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == "COMPLETE", done
    width = viewport["width"]
    url = f"http://127.0.0.1:{client.port}/ui/runs/{run['ID']}"
    watched = await open_page(browser, url, viewport)
    page = watched.page
    await expect(page.locator("#run-status")).to_have_text("COMPLETE")
    await page.locator('[data-node="shout"]').click()
    await expect(page.locator("#log")).to_contain_text("shouting now")

    assert await scroll_width(page) == (width, width)
    cards = page.locator("main .card:visible")
    for i in range(await cards.count()):
        box = await cards.nth(i).bounding_box()
        assert box is not None and 0 <= box["x"] and box["x"] + box["width"] <= width, i
    graph_card = await page.locator("section.card", has=page.locator("#graph")).bounding_box()
    graph = await page.locator("#graph").bounding_box()
    assert graph["x"] + graph["width"] <= graph_card["x"] + graph_card["width"]
    details = await page.locator("#node-details").bounding_box()
    logs = await page.locator("section.logs").bounding_box()
    log = await page.locator("#log").bounding_box()
    assert log["height"] >= 200
    first_line = page.locator("#log .line").first
    time_box = await first_line.locator(".time").bounding_box()
    message_box = await first_line.locator(".message").bounding_box()
    if width == WIDE["width"]:
        # As it was laid out for a desktop: the node's 380 px column, the logs beside it.
        assert details["width"] == pytest.approx(380)
        assert logs["y"] == pytest.approx(details["y"])
        assert logs["x"] > details["x"] + details["width"]
        assert log["height"] >= 400 and log["width"] >= 800
        assert message_box["y"] == pytest.approx(time_box["y"])  # a line is one row
    else:
        # One column: the logs under the node, as wide as it, not a sliver beside it.
        assert logs["y"] >= details["y"] + details["height"]
        assert logs["x"] == pytest.approx(details["x"])
        assert logs["width"] == pytest.approx(details["width"])
        assert log["width"] >= 340
        # Time, attempt and stream on a row, the message under them at full width.
        assert message_box["y"] >= time_box["y"] + time_box["height"]
        assert message_box["width"] >= log["width"] - 40
    assert await shot_width(page, tmp_path, f"ui-run-{width}.png") == width
    assert watched.problems == []


async def test_an_unknown_run_shows_only_its_error_and_the_way_back(
    start_service, browser, tmp_path
):
    from playwright.async_api import expect

    client = await start_service()
    unknown = "0" * 32
    watched = await open_page(browser, f"http://127.0.0.1:{client.port}/ui/runs/{unknown}", NARROW)
    page = watched.page
    alert = page.locator("#errors [role=alert]")
    await expect(alert).to_contain_text(f"Run {unknown}: Flow run does not exist.")
    await expect(page.locator("#run-view")).to_be_hidden()
    # Nothing under the error: no empty run, graph, node or log pane.
    shown = await page.locator("main > *").evaluate_all(
        "items => items.filter((e) => e.getClientRects().length).map((e) => e.id)"
    )
    assert shown == ["errors"]
    assert await scroll_width(page) == (NARROW["width"], NARROW["width"])
    await keep_screenshot(page, tmp_path, "ui-run-unknown.png")
    back = alert.get_by_role("link", name="Back to the runs")
    await expect(back).to_have_attribute("href", "/ui/")
    await back.click()
    await expect(page).to_have_url(re.compile(r"/ui/$"))
    await expect(page.locator("h1")).to_have_text("Recent runs")
    assert watched.problems == []


async def test_a_csv_output_downloads_from_its_nodes_panel_as_csv(start_service, browser):
    """json-to-csv declares text/csv: the service serves it so, and the page saves
    `table.csv`, from the node's panel and from the graph's output alike."""
    from playwright.async_api import expect

    client = await start_service()
    node = {
        "ID": "tabulate",
        "Uses": "pipewell/json-to-csv",
        "Inputs": [{"Name": "json", "Edge": "rows"}],
        "Outputs": [{"Name": "csv", "Edge": "table"}],
    }
    run = await submit(client, {"Name": "to-csv", "Nodes": [node]}, [])
    await upload(client, run, "rows", b'[{"name": "Ada", "age": 36}]')
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == "COMPLETE", done
    served = await client.get(f"/api/v1/flow/artifact/{run['ID']}/table")
    assert served.headers["Content-Type"] == "text/csv"
    assert served.headers["Content-Disposition"] == 'inline; filename="table.csv"'

    watched = await open_page(browser, f"http://127.0.0.1:{client.port}/ui/runs/{run['ID']}")
    page = watched.page
    await expect(page.locator("#run-status")).to_have_text("COMPLETE")
    await expect(page.locator("#node-title")).to_have_text("Node tabulate")
    artifact_path = f"/api/v1/flow/artifact/{run['ID']}"
    await expect(page.locator("#artifacts li")).to_have_count(2)
    assert await node_artifacts(page) == [
        ("input", "rows", f"{artifact_path}/rows"),
        ("output", "table", f"{artifact_path}/table"),
    ]
    saved = await downloaded_as(page, page.locator("#artifacts a", has_text="table"))
    assert saved == ("table.csv", b"name,age\nAda,36\n")
    port = page.locator('[data-port="table"]')
    await expect(port).to_have_class(re.compile(r"\bavailable\b"))
    assert await downloaded_as(page, port) == saved
    assert watched.problems == []


@pytest.mark.parametrize("viewport", [WIDE, NARROW], ids=["1400px", "420px"])
async def test_no_page_scrolls_sideways(start_service, browser, tmp_path, capsys, viewport):
    """Every page, full of what it shows (the key prompt, runs, saved flows, keys with
    long names, a run waiting for its input), as wide as the screen and no wider."""
    from playwright.async_api import expect

    data_dir = tmp_path / "data"
    assert main(["keys", "create", "--name", "root", "--admin", "--data-dir", str(data_dir)]) == 0
    admin = capsys.readouterr().out.strip()
    create_key(capsys, data_dir, "the-build-server-of-the-night-shift", tenant="acme-industries")
    client = await start_service(data_dir, auth="required")
    headers = {"Authorization": f"Bearer {admin}"}
    saved = await (await client.post("/api/v1/flows", json=GREETER, headers=headers)).json()
    started = []
    for _ in range(2):
        body = {"Flow": chain_flow("copy", name="a-flow-with-a-long-name"),
                "NodeDefs": [busybox_def("copy", "cp ${in} ${out}")]}  # fmt: skip
        response = await client.post("/api/v1/flow/test", json=body, headers=headers)
        started.append(await response.json())
    done, waiting = started
    async with client.session.put(done["WaitingURLs"][0]["PutURL"], data=b"x") as response:
        assert response.status == 200
    await wait_for(client, done["ID"], {"COMPLETE"}, headers=headers)

    width = viewport["width"]
    origin = f"http://127.0.0.1:{client.port}"
    watched = await open_page(browser, f"{origin}/ui/", viewport)
    page = watched.page
    await expect(page.locator("#key-prompt")).to_be_visible()
    assert await scroll_width(page) == (width, width), "key prompt"
    assert await shot_width(page, tmp_path, f"ui-key-prompt-{width}.png") == width
    await enter_key(page, admin)

    shown_when = {
        "index": ("/ui/", f'#runs tr[data-run="{done["ID"]}"]'),
        "flow": (f"/ui/flows/{saved['graph_id']}", '[data-dialect="native"] pre'),
        "keys": ("/console/api-keys", '#keys tr[data-key="the-build-server-of-the-night-shift"]'),
        "run": (f"/ui/runs/{done['ID']}", '#artifacts a[href$="/out"]'),
        "waiting": (f"/ui/runs/{waiting['ID']}", "#waiting-list input[type=file]"),
    }
    for name, (path, marker) in shown_when.items():
        if page.url != origin + path:
            await page.goto(origin + path)
        await expect(page.locator(marker)).to_be_visible()
        await expect(page.locator("#key-state")).to_contain_text("API key set")
        assert await scroll_width(page) == (width, width), name
        cards = page.locator("main .card:visible")
        for i in range(await cards.count()):
            box = await cards.nth(i).bounding_box()
            assert box is not None and box["x"] + box["width"] <= width, (name, i)
        assert await shot_width(page, tmp_path, f"ui-page-{name}-{width}.png") == width, name
    assert watched.problems == []


async def test_the_runs_page_lists_runs_and_saved_flows(start_service, browser):
    from playwright.async_api import expect

    client = await start_service()
    defs = [busybox_def("copy", "cp ${in} ${out}")]
    run = await submit(client, chain_flow("copy", name="listed-flow"), defs)
    await upload(client, run, "src", b"x")
    await wait_for(client, run["ID"], {"COMPLETE"})
    saved = await client.post("/api/v1/flows", json=GREETER)
    graph_id = (await saved.json())["graph_id"]

    watched = await open_page(browser, f"http://127.0.0.1:{client.port}/ui/")
    page = watched.page
    row = page.locator(f'#runs tr[data-run="{run["ID"]}"]')
    await expect(row).to_contain_text("COMPLETE")
    await expect(row).to_contain_text("listed-flow")
    await expect(row).to_contain_text(run["ID"][:12])
    await expect(row.locator("td").nth(4)).to_have_text(re.compile(r"^[\d.]+ (ms|s)$"))
    flow_row = page.locator(f'#flows tr[data-flow="{graph_id}"]')
    await expect(flow_row).to_contain_text("greeter")
    await expect(flow_row.locator("a").first).to_have_attribute("href", f"/ui/flows/{graph_id}")

    await row.locator("a").first.click()
    await expect(page).to_have_url(re.compile(rf"/ui/runs/{run['ID']}$"))
    await expect(page.locator("#flow-name")).to_have_text("listed-flow")
    assert watched.problems == []


async def test_the_runs_page_shows_what_waits_and_each_tenants_runs_against_its_quotas(
    start_service, browser, tmp_path, capsys
):
    from playwright.async_api import expect

    from orchestrator.api.resources import SERVICE

    data_dir = tmp_path / "data"
    main(["keys", "create", "--name", "ops", "--admin", "--data-dir", str(data_dir)])
    admin = capsys.readouterr().out.strip().splitlines()[-1]
    team = create_key(capsys, data_dir, "team", tenant="team")
    client = await start_service(
        data_dir,
        auth="required",
        worker={"max_parallel": 1},
        tenants={"team": {"running": 1, "queued": 5, "stored_bytes": "1g"}},
    )
    sleep = busybox_def("sleep", "sh -c 'sleep 2; echo > ${out}'", Tier="c-nano")
    node = {"ID": "s", "Uses": "test/sleep", "Outputs": [{"Name": "out", "Edge": "out"}]}
    flow = {"Name": "nap", "Nodes": [node]}
    headers = {"Authorization": f"Bearer {team}"}
    for _ in range(3):
        body = {"Flow": flow, "NodeDefs": [sleep], "NoCache": True}
        response = await client.post("/api/v1/flow/test", json=body, headers=headers)
        assert response.status == 200, await response.text()
    await client.app[SERVICE].usage.measure()

    origin = f"http://127.0.0.1:{client.port}"
    watched = await open_page(browser, f"{origin}/ui/")
    page = watched.page
    await enter_key(page, team)
    row = page.locator('#tenants tr[data-tenant="team"]')
    await expect(row.locator("td").nth(1)).to_have_text("1 of 1")
    await expect(row.locator("td").nth(2)).to_have_text("2 of 5")
    await expect(row.locator("td").nth(3)).to_have_text("0 bytes of 1.0 GiB")
    await expect(page.locator('#queued tr[data-tier="c-nano"]')).to_be_visible()
    assert await page.locator("#tenants tbody tr").count() == 1  # its own tenant only

    admin_page = (await open_page(browser, f"{origin}/ui/")).page
    await enter_key(admin_page, admin)
    await expect(admin_page.locator('#tenants tr[data-tenant="team"]')).to_be_visible()
    assert watched.problems == []


async def test_the_flow_page_gives_working_curl_commands_and_runs_the_flow(
    start_service, browser, tmp_path, capsys
):
    from playwright.async_api import expect

    data_dir = tmp_path / "data"
    key = create_key(capsys, data_dir, "laptop")
    client = await start_service(data_dir, auth="required")
    headers = {"Authorization": f"Bearer {key}"}
    saved = await (await client.post("/api/v1/flows", json=GREETER, headers=headers)).json()
    graph_id, origin = saved["graph_id"], f"http://127.0.0.1:{client.port}"

    watched = await open_page(browser, f"{origin}/ui/flows/{graph_id}")
    page = watched.page
    await enter_key(page, key)
    await expect(page.locator("#graph-id")).to_have_text(graph_id)
    await expect(page.locator('#graph [data-node="greet"]')).to_contain_text("demo/greet")

    command = {}
    for dialect in ("axiom", "axiom-stream", "xpander", "scade", "langflow", "native"):
        text = await page.locator(f'[data-dialect="{dialect}"] pre').inner_text()
        assert text.startswith("curl ") and origin in text, text
        command[dialect] = text
    for dialect in ("axiom", "axiom-stream", "xpander", "langflow", "native"):
        assert graph_id in command[dialect], dialect
    assert f"/api/v1/scade/flow/{saved['id']}/execute" in command["scade"]
    assert '"graph_id": "' + graph_id + '"' in command["axiom"]

    # Each command, pasted into a shell with the key exported, does what it says.
    expected = 'hello {"text":"hello"}'
    answer = json.loads(await run_command(command["axiom"], key))
    assert answer["accepted"] is True and answer["result"]["success"] is True, answer
    assert answer["result"]["output"] == {"text": expected}
    frames = [
        json.loads(line[6:])
        for line in (await run_command(command["axiom-stream"], key)).splitlines()
        if line.startswith("data: ")
    ]
    assert frames[0]["payload"] == {"text": expected}
    assert frames[-1]["is_final"] is True and frames[-1]["success"] is True
    task = json.loads(await run_command(command["xpander"], key))
    assert task["status"] == "completed" and task["result"] == expected, task
    langflow = json.loads(await run_command(command["langflow"], key))
    assert langflow["outputs"][0]["outputs"][0]["results"]["message"]["text"] == expected
    scade = json.loads(await run_command(command["scade"].split("\n# then")[0], key))
    assert scade["data"]["start_node_id"] == "greet" and scade["execution_id"]
    finished = await wait_for(client, scade["execution_id"], {"COMPLETE"}, headers=headers)
    assert finished["NodeState"]["greet"]["Status"] == "COMPLETE"
    if shutil.which("jq"):
        native = json.loads(await run_command(command["native"], key))
        assert native["Status"] == "WAITING"
        assert [w["Artifact"]["EdgeName"] for w in native["WaitingURLs"]] == ["request"]

    # The input typed into the panel goes into every command.
    await page.locator("#api-input").fill('{"text": "it\'s me"}')
    await expect(page.locator('[data-dialect="axiom"] pre')).to_contain_text("it'\\''s me")
    typed = await page.locator('[data-dialect="axiom"] pre').inner_text()
    answer = json.loads(await run_command(typed, key))
    assert answer["result"]["output"] == {"text": 'hello {"text":"it\'s me"}'}

    # The form: a flag and a file, then the run's page.
    await expect(page.locator('input[data-flag="greeting"]')).to_have_attribute(
        "placeholder", "default: hello"
    )
    await page.locator('input[data-flag="greeting"]').fill("hi")
    request = tmp_path / "request.json"
    request.write_bytes(b'{"text": "from a file"}')
    await page.set_input_files('#inputs input[data-edge="request"]', str(request))
    await page.locator("#run-form button[type=submit]").click()
    await expect(page).to_have_url(re.compile(r"/ui/runs/[0-9a-f]{32}$"))
    run_id = page.url.rsplit("/", 1)[1]
    await expect(page.locator("#run-status")).to_have_text("COMPLETE", timeout=SLOW)
    reply = await client.get(f"/api/v1/flow/artifact/{run_id}/reply", headers=headers)
    assert await reply.read() == b'hi {"text": "from a file"}'
    assert watched.problems == []


async def test_a_flow_that_takes_a_file_gets_commands_that_send_one(
    start_service, browser, tmp_path, capsys
):
    """Every command the page shows for a flow whose input is a PNG, run by bash from a
    directory holding the file, sends it whole: the flow answers its byte count."""
    from playwright.async_api import expect

    data_dir = tmp_path / "data"
    key = create_key(capsys, data_dir, "files")
    client = await start_service(data_dir, auth="required")
    headers = {"Authorization": f"Bearer {key}"}
    measure = busybox_def(
        "measure",
        "sh -c 'wc -c < ${image} | tr -d \" \" > ${size}'",
        Inputs=[{"Name": "image", "Required": True, "Type": ["image/png"]}],
        Outputs=[{"Name": "size", "Type": ["text/plain"]}],
        MaxAttempts=1,
    )
    flow = {"Flow": chain_flow("measure", name="measure"), "NodeDefs": [measure]}
    flow["Flow"]["Nodes"][0]["Inputs"][0]["Name"] = "image"
    flow["Flow"]["Nodes"][0]["Outputs"][0]["Name"] = "size"
    saved = await (await client.post("/api/v1/flows", json=flow, headers=headers)).json()
    assert saved["entry_files"] == {"src": ["image/png"]}, saved
    graph_id, origin = saved["graph_id"], f"http://127.0.0.1:{client.port}"

    watched = await open_page(browser, f"{origin}/ui/flows/{graph_id}")
    page = watched.page
    await enter_key(page, key)
    await expect(page.locator("#api-file")).to_have_value("input.png")
    assert await page.locator("#api-input").is_hidden()
    await page.locator("#api-file").fill("red square.png")
    await expect(page.locator('[data-dialect="axiom"] pre')).to_contain_text("red square.png")
    picture = Image.new("RGB", (50, 40), (200, 0, 0))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    (tmp_path / "red square.png").write_bytes(buffer.getvalue())
    size = f"{len(buffer.getvalue())}\n"

    command = {}
    for dialect in ("axiom", "axiom-stream", "xpander", "scade", "langflow",
                    "langflow-webhook", "native"):  # fmt: skip
        command[dialect] = await page.locator(f'[data-dialect="{dialect}"] pre').inner_text()
        assert origin in command[dialect], dialect
    run = partial(run_command, key=key, cwd=tmp_path)
    answer = json.loads(await run(command["axiom"]))
    assert answer["result"]["output"] == {"text": size}, answer
    frames = [
        json.loads(line[6:])
        for line in (await run(command["axiom-stream"])).splitlines()
        if line.startswith("data: ")
    ]
    assert frames[0]["payload"] == {"text": size}
    task = json.loads(await run(command["xpander"]))
    assert task["status"] == "completed" and task["result"] == size, task
    langflow = json.loads(await run(command["langflow"]))
    assert langflow["outputs"][0]["outputs"][0]["results"]["message"]["text"] == size
    started = [
        json.loads(await run(command["scade"].split("\n# then")[0]))["execution_id"],
        json.loads(await run(command["langflow-webhook"]))["execution_id"],
        (await run(command["native"])).split()[-1],
    ]
    for run_id in started:
        await wait_for(client, run_id, {"COMPLETE"}, headers=headers)
        artifact = await client.get(f"/api/v1/flow/artifact/{run_id}/out", headers=headers)
        assert (await artifact.read()).decode() == size
    assert watched.problems == []


async def test_the_api_keys_console_creates_lists_and_revokes(
    start_service, browser, tmp_path, capsys
):
    from playwright.async_api import expect

    data_dir = tmp_path / "data"
    assert main(["keys", "create", "--name", "root", "--admin", "--data-dir", str(data_dir)]) == 0
    admin = capsys.readouterr().out.strip()
    client = await start_service(data_dir, auth="required")

    watched = await open_page(browser, f"http://127.0.0.1:{client.port}/console/api-keys")
    page = watched.page
    await enter_key(page, admin)
    root = page.locator('#keys tr[data-key="root"]')
    await expect(root.locator(".masked")).to_have_text(f"{admin[:8]}…{admin[-4:]}")
    await expect(root).to_contain_text("admin")

    await page.locator("#create-key input[name=name]").fill("laptop")
    await page.locator("#create-key input[name=tenant]").fill("acme")
    await page.locator("#create-key button[type=submit]").click()
    await expect(page.locator("#raw-key")).to_have_text(re.compile(r"^[0-9a-f]{64}$"))
    raw = await page.locator("#raw-key").inner_text()
    runs = await client.get("/api/v1/flow/runs", headers={"Authorization": f"Bearer {raw}"})
    assert runs.status == 200 and await runs.json() == {"runs": []}

    laptop = page.locator('#keys tr[data-key="laptop"]')
    await expect(laptop.locator(".masked")).to_have_text(f"{raw[:8]}…{raw[-4:]}")
    await expect(laptop).to_contain_text("acme")
    await expect(laptop.locator(".state")).to_have_text("active")
    # Shown once: gone from the page after Done, and never in the list.
    assert raw not in await page.locator("#keys").inner_text()
    await page.get_by_role("button", name="Done").click()
    await expect(page.locator("#raw-key")).to_have_count(0)
    assert raw not in await page.content()
    await page.reload()
    await expect(laptop.locator(".masked")).to_have_text(f"{raw[:8]}…{raw[-4:]}")
    assert raw not in await page.content()

    await laptop.get_by_role("button", name="Revoke laptop").click()
    await laptop.get_by_role("button", name="Revoke key").click()
    await expect(laptop.locator(".state")).to_have_text("revoked")
    await expect(laptop.get_by_role("button")).to_have_count(0)
    refused = await client.get("/api/v1/flow/runs", headers={"Authorization": f"Bearer {raw}"})
    assert refused.status == 401
    assert watched.problems == []


async def test_pages_answer_without_a_key_with_a_strict_policy(start_service):
    """The pages hold no data, so they need no key; the API they call still does."""
    client = await start_service(auth="required")
    for path in ("/ui/", "/ui/runs/abc", "/ui/flows/abc", "/console/api-keys"):
        response = await client.get(path)
        assert response.status == 200, path
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        policy = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy
        assert "connect-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "same-origin"
        assert '<script type="module" src="/ui/static/' in await response.text()
    script = await client.get("/ui/static/run.js")
    assert script.status == 200
    assert script.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert "Content-Security-Policy" in script.headers
    for path in ("/ui/static/nothing.js", "/ui/static/..%2F..%2Fapi%2Fapp.py", "/ui/runs/a/b"):
        response = await client.get(path)
        assert response.status in (401, 404), path  # no page there: the key is asked first
        assert "import" not in await response.text()
    home = await client.get("/", allow_redirects=False)
    assert (home.status, home.headers["Location"]) == (302, "/ui/")
    # The API behind the pages still asks for a key.
    assert (await client.get("/api/v1/flow/runs")).status == 401
    assert (await client.get("/api/v1/flow/graph/" + "0" * 32)).status == 401
    assert (await client.get("/api/v1/keys")).status == 401
