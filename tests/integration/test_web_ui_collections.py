"""The web UI with collections, in a real browser (Debian's Chromium, by Playwright)
against the real service and real (busybox) containers: a mapped node's bar of items
and its failed items (with their reasons and logs, paged), a collection's items with
their download links, a big run's deltas, and the flow page's commands for a
collection entry edge, run by bash as a user would."""

from __future__ import annotations

import io
import json
import re
import shutil
import zipfile
from typing import Any

import pytest

from tests.helpers import busybox_def, submit, wait_for
from tests.integration.test_web_ui import (
    NARROW,
    SLOW,
    WIDE,
    downloaded_as,
    keep_screenshot,
    open_page,
    run_command,
    scroll_width,
)

pytestmark = pytest.mark.skipif(
    shutil.which("chromium") is None, reason="needs Debian's chromium (make setup installs it)"
)

UPPER = busybox_def(
    "upper",
    # An item whose text starts with "bad" fails for good (MaxAttempts 1). The sleep
    # keeps the node running long enough for the page to show it on its way.
    "sh -c 'sleep 0.5; case $(cat ${in}) in bad*) echo refusing ${in} >&2; exit 2;; esac; "
    "tr a-z A-Z < ${in} > ${out}'",
    Inputs=[{"Name": "in"}],
    Outputs=[{"Name": "out"}],
    MaxAttempts=1,
    Tier="c-nano",
)
LISTING = busybox_def(
    "listing",
    'sh -c \'cd ${all} && for f in $(find . -type f | sort); do echo "$f=$(cat $f)"; done '
    "> ${out}'",
    Inputs=[{"Name": "all", "Collection": True}],
    Outputs=[{"Name": "out"}],
    Tier="c-nano",
)


def batch(**map_fields: Any) -> dict[str, Any]:
    """docs (a collection) → upper, mapped → loud → list, a gather → listing."""
    return {
        "Name": "batch",
        "Collections": ["docs"],
        "Nodes": [
            {
                "ID": "upper",
                "Uses": "test/upper",
                "Map": map_fields,
                "Inputs": [{"Name": "in", "Edge": "docs"}],
                "Outputs": [{"Name": "out", "Edge": "loud"}],
            },
            {
                "ID": "list",
                "Uses": "test/listing",
                "Inputs": [{"Name": "all", "Edge": "loud"}],
                "Outputs": [{"Name": "out", "Edge": "listing"}],
            },
        ],
    }


def zipped(files: dict[str, bytes]) -> bytes:
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return data.getvalue()


async def put_zip(client: Any, run: dict[str, Any], edge: str, files: dict[str, bytes]) -> None:
    url = next(w["PutURL"] for w in run["WaitingURLs"] if w["Artifact"]["EdgeName"] == edge)
    async with client.session.put(url, data=zipped(files)) as response:
        assert response.status == 200, await response.text()


async def share(page: Any, part: str) -> float:
    """The width of one part of the node's bar of items, as a share of the bar's."""
    bar = await page.locator("#items-bar").bounding_box()
    box = await page.locator(f"#items-bar .{part}").bounding_box()
    return (box["width"] if box else 0.0) / bar["width"]


async def test_a_mapped_node_shows_its_items_live_its_failures_and_its_collection(
    start_service, browser, tmp_path
):
    from playwright.async_api import expect

    client = await start_service()
    # One item at a time, half a second each: the page sees the bar on its way.
    run = await submit(client, batch(MinSuccess=0.5, Concurrency=1), [UPPER, LISTING])
    watched = await open_page(browser, f"http://127.0.0.1:{client.port}/ui/runs/{run['ID']}", WIDE)
    page = watched.page
    await expect(page.locator("#run-status")).to_have_text("WAITING")
    await page.locator('[data-node="upper"]').click()
    await expect(page.locator("#node-title")).to_have_text("Node upper")
    assert await page.locator("#node-items").is_hidden()  # no items yet: nothing to count

    # The zip goes up from the page, to the collection's WaitingURL.
    row = page.locator('#waiting-list li[data-edge="docs"]')
    await expect(row).to_contain_text("a zip or tar of its items")
    files = {"a.txt": b"alpha", "sub/b.txt": b"beta", "c.txt": b"bad one", "d.txt": b"delta"}
    (tmp_path / "docs.zip").write_bytes(zipped(files))
    await row.locator("input[type=file]").set_input_files(str(tmp_path / "docs.zip"))
    await row.locator('[data-upload="docs"]').click()
    size = (tmp_path / "docs.zip").stat().st_size
    await expect(row.locator(".note")).to_have_text(f"Uploaded docs.zip ({size} bytes).")
    text = page.locator("#items-text strong")
    # Seen while the node runs, from the event stream: some items ended, not all.
    await expect(text).to_have_text(re.compile(r"^[123]/4 items"), timeout=SLOW)
    await expect(page.locator('[data-node="upper"] .status')).to_have_text(
        re.compile(r"^RUNNING · [123]/4$")
    )
    await keep_screenshot(page, tmp_path, "ui-run-items-running-1400.png")
    await expect(page.locator("#run-status")).to_have_text("COMPLETE", timeout=SLOW)
    await expect(text).to_have_text("4/4 items (1 failed)")
    await expect(page.locator("#items-text")).to_contain_text("50% must succeed")
    await expect(page.locator('[data-node="upper"] .status')).to_have_text("COMPLETE · 4/4")
    bar = page.locator("#items-bar")
    await expect(bar).to_have_attribute("aria-valuenow", "4")
    await expect(bar).to_have_attribute("aria-valuemax", "4")
    assert await share(page, "done") == pytest.approx(0.75, abs=0.01)
    assert await share(page, "failed") == pytest.approx(0.25, abs=0.01)
    # The graph's node has the same bar along its foot.
    done = float(await page.locator('[data-node="upper"] .items-bar .done').get_attribute("width"))
    failed = float(
        await page.locator('[data-node="upper"] .items-bar .failed').get_attribute("width")
    )
    assert done == pytest.approx(3 * failed)

    # The failed item, its reason, and its log lines on demand.
    item = page.locator('#failed-items li[data-item="c.txt"]')
    await expect(page.locator("#failed-items li")).to_have_count(1)
    await expect(item.locator(".reason")).to_have_text(
        re.compile(r"^command exited with code 2: refusing ")
    )
    await expect(page.locator("#failed-note")).to_have_text("1 of 1 shown")
    assert await page.locator("#failed-more").is_hidden()
    log = item.locator(".item-log")
    assert await log.is_hidden()
    await item.get_by_role("button", name=re.compile(r"^log \(\d+ lines?\)$")).click()
    await expect(log).to_be_visible()
    await expect(log).to_contain_text("refusing /pipewell/in/in.txt")

    # Its collections: "N items", listed with a link per item (no single-file download).
    artifact_rows = page.locator("#artifacts li[data-edge]")
    await expect(artifact_rows).to_have_count(2)
    await expect(page.locator('#artifacts [data-collection="docs"]')).to_have_text("4 items")
    await expect(page.locator('#artifacts [data-collection="loud"]')).to_have_text("3 items")
    assert await page.locator("#artifacts a").count() == 0
    await page.locator('#artifacts [data-collection="loud"]').click()
    await expect(page.locator("#collection-title")).to_have_text("Collection loud")
    listed = page.locator("#collection-items li")
    await expect(listed).to_have_count(3)
    names = [await listed.nth(i).get_attribute("data-item") for i in range(3)]
    assert sorted(names) == ["a.txt", "d.txt", "sub/b.txt"]
    await expect(page.locator("#collection-facts")).to_contain_text("3 items")
    page_of_items = await (await client.get(f"/api/v1/flow/collection/{run['ID']}/loud")).json()
    urls = {i["Name"]: i["URL"] for i in page_of_items["Items"]}
    link = page.locator('#collection-items li[data-item="sub/b.txt"] a')
    assert (await link.get_attribute("href")).split("?")[0] == urls["sub/b.txt"].split("?")[0]
    name, body = await downloaded_as(page, link)
    assert (name, body) == ("b.txt", b"BETA")

    # The page fits a desktop and a phone; looked at in screenshots.
    assert await scroll_width(page) == (WIDE["width"], WIDE["width"])
    await keep_screenshot(page, tmp_path, "ui-run-items-1400.png")
    await page.set_viewport_size(NARROW)
    await expect(page.locator("#items-bar")).to_be_visible()
    assert await scroll_width(page) == (NARROW["width"], NARROW["width"])
    for card in ("#node-details", "#collection"):
        box = await page.locator(card).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= NARROW["width"], card
    await keep_screenshot(page, tmp_path, "ui-run-items-420.png")

    # The graph's output of a collection opens its list too, not a download.
    await page.set_viewport_size(WIDE)
    await page.locator("#collection-close").click()
    await expect(page.locator("#collection")).to_be_hidden()
    await page.locator('.edge-label[data-edge="docs"]').first.click()
    await expect(page.locator("#collection-title")).to_have_text("Collection docs")
    await expect(page.locator("#collection-items li")).to_have_count(4)
    assert watched.problems == []


async def test_failed_items_and_a_collections_items_come_a_page_at_a_time(
    start_service, browser, tmp_path
):
    from playwright.async_api import expect

    client = await start_service()
    run = await submit(client, batch(MinSuccess=0), [UPPER, LISTING])
    files = {f"bad{i:02}.txt": b"bad" for i in range(23)}
    files.update({f"good{i:03}.txt": b"ok" for i in range(102)})
    await put_zip(client, run, "docs", files)
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"}, timeout=180)
    assert done["Status"] == "COMPLETE", done
    watched = await open_page(browser, f"http://127.0.0.1:{client.port}/ui/runs/{run['ID']}", WIDE)
    page = watched.page
    await page.locator('[data-node="upper"]').click()
    await expect(page.locator("#items-text strong")).to_have_text("125/125 items (23 failed)")
    await expect(page.locator("#failed-items li")).to_have_count(20)
    await expect(page.locator("#failed-note")).to_have_text("20 of 23 shown")
    await page.locator("#failed-more").click()
    await expect(page.locator("#failed-items li")).to_have_count(23)
    await expect(page.locator("#failed-more")).to_be_hidden()
    shown = await page.locator("#failed-items li").evaluate_all(
        "(rows) => rows.map((row) => row.dataset.item)"
    )
    assert sorted(shown) == sorted(f"bad{i:02}.txt" for i in range(23))

    await page.locator('#artifacts [data-collection="loud"]').click()
    await expect(page.locator("#collection-items li")).to_have_count(100)
    await expect(page.locator("#collection-facts")).to_contain_text("102 items · 100 shown")
    await page.locator("#collection-more").click()
    await expect(page.locator("#collection-items li")).to_have_count(102)
    await expect(page.locator("#collection-more")).to_be_hidden()
    assert watched.problems == []


async def test_a_big_runs_mapped_node_moves_its_bar_from_deltas(start_service, browser):
    """251 nodes: past 200 the stream sends deltas, which carry the mapped node's counts."""
    from playwright.async_api import expect

    client = await start_service()
    copy = busybox_def("copy", "sh -c 'sleep 0.3; cp ${in} ${out}'", Tier="c-nano")
    nodes = [
        {"ID": "go", "Uses": "test/copy", "Map": {"Concurrency": 1},
         "Inputs": [{"Name": "in", "Edge": "src"}],
         "Outputs": [{"Name": "out", "Edge": "copied"}]},
    ] + [
        {"ID": f"w{i}", "Uses": "test/copy", "Inputs": [{"Name": "in", "Edge": "later"}],
         "Outputs": [{"Name": "out", "Edge": f"o{i}"}]}
        for i in range(250)
    ]  # fmt: skip
    run = await submit(client, {"Name": "big", "Collections": ["src"], "Nodes": nodes}, [copy])
    watched = await open_page(browser, f"http://127.0.0.1:{client.port}/ui/runs/{run['ID']}", WIDE)
    page = watched.page
    await expect(page.locator('[data-node="go"] .status')).to_have_text("IDLE", timeout=SLOW)
    await page.locator('[data-node="go"]').click()
    await put_zip(client, run, "src", {f"f{i}.txt": b"x" for i in range(4)})
    await expect(page.locator('[data-node="go"] .status')).to_have_text(
        re.compile(r"^RUNNING · \d/4$"), timeout=SLOW
    )
    await expect(page.locator('[data-node="go"] .status')).to_have_text(
        "COMPLETE · 4/4", timeout=SLOW
    )
    await expect(page.locator("#items-text strong")).to_have_text("4/4 items")
    assert await share(page, "done") == pytest.approx(1.0, abs=0.01)
    await expect(page.locator('#artifacts [data-collection="copied"]')).to_have_text("4 items")
    await expect(page.locator('[data-node="w7"] .status')).to_have_text("IDLE")
    response = await client.post(f"/api/v1/flow/cancel/{run['ID']}")
    assert response.status == 200
    await expect(page.locator("#run-status")).to_have_text("STOPPED", timeout=SLOW)
    assert watched.problems == []


async def test_the_flow_page_says_a_collection_takes_a_zip_and_its_commands_work(
    start_service, browser, tmp_path
):
    from playwright.async_api import expect

    client = await start_service()
    flow = {"Flow": batch(MinSuccess=1.0), "NodeDefs": [UPPER, LISTING]}
    saved = await (await client.post("/api/v1/flows", json=flow)).json()
    graph_id, origin = saved["graph_id"], f"http://127.0.0.1:{client.port}"
    watched = await open_page(browser, f"{origin}/ui/flows/{graph_id}", WIDE)
    page = watched.page
    note = page.locator('#collection-notes [data-collection="docs"]')
    await expect(note).to_contain_text("docs is a collection: its WaitingURL takes a zip or a tar")
    await expect(note).to_contain_text("/api/v1/flow/collection/{run_id}/docs/items")
    await expect(page.locator("#api-file")).to_have_value("docs.zip")
    await expect(page.locator("#api-file-label")).to_contain_text("a zip or tar of the collection")
    await expect(page.locator('#inputs [data-edge="docs"]')).to_have_attribute(
        "accept", re.compile(r"\.zip")
    )
    zip_command = await note.locator('[data-dialect="collection-zip-docs"] pre').inner_text()
    assert 'curl -T docs.zip "$PUT_URL"' in zip_command
    items_command = await note.locator('[data-dialect="collection-items-docs"] pre').inner_text()
    assert f"{origin}/api/v1/flow/collection/$RUN_ID/docs/close" in items_command

    assert await scroll_width(page) == (WIDE["width"], WIDE["width"])
    await keep_screenshot(page, tmp_path, "ui-flow-collection-1400.png")
    await page.set_viewport_size(NARROW)
    assert await scroll_width(page) == (NARROW["width"], NARROW["width"])
    await keep_screenshot(page, tmp_path, "ui-flow-collection-420.png")

    if shutil.which("jq") is None:
        pytest.skip("the commands need jq")
    # Pasted into bash: a zip, then a folder item by item; both runs complete.
    (tmp_path / "docs.zip").write_bytes(zipped({"a.txt": b"one", "b/c.txt": b"two"}))
    (tmp_path / "docs" / "b").mkdir(parents=True)
    (tmp_path / "docs" / "a.txt").write_bytes(b"uno")
    (tmp_path / "docs" / "b" / "c.txt").write_bytes(b"dos")
    expected = {zip_command: "./a.txt=ONE\n./b/c.txt=TWO\n", items_command: None}
    for command, listing in expected.items():
        said = await run_command(command, "", cwd=tmp_path)
        if listing is None:
            assert json.loads(said.splitlines()[-1]) == {"Edge": "docs", "Count": 2}, said
            run_id = (await (await client.get("/api/v1/flow/runs?limit=1")).json())["runs"][0]
            run_id, listing = run_id["ID"], "./a.txt=UNO\n./b/c.txt=DOS\n"
        else:
            run_id = said.split()[-1]
        done = await wait_for(client, run_id, {"COMPLETE", "ERROR"})
        assert done["Status"] == "COMPLETE", done
        answer = await client.get(f"/api/v1/flow/artifact/{run_id}/listing")
        assert (await answer.read()).decode() == listing
    assert watched.problems == []
