"""Inputs against the real service: WaitingURLs that expire, take one upload, and
stored bytes served so that a browser never renders them as a page of ours."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

from aiohttp.test_utils import TestClient

from orchestrator.api.resources import STORES
from tests.helpers import artifact, busybox_def, chain_flow, read_events, submit, upload, wait_for

COPY = [busybox_def("t", "cp ${in} ${out}")]
PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)
HTML = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"


async def events_until_end(client: TestClient, run_id: str) -> list[tuple[str, Any]]:
    """The run's SSE events, read until ``end``."""
    response = await client.get(f"/api/v1/flow/events/{run_id}")
    assert response.status == 200
    return await read_events(response)


def assert_ended_by_expiry(run: dict[str, Any]) -> None:
    assert run["Status"] == "ERROR", run
    assert run["FinishedAt"]
    assert "edge 'src' was not uploaded before its WaitingURL expired at" in run["Error"]
    node = run["NodeState"]["n0"]
    assert node["Status"] == "ERROR"
    assert node["Error"].startswith("input 'in' (edge 'src') was not uploaded before its URL ")
    assert node["Attempt"] == 0  # it never ran
    assert run["WaitingURLs"] == []


# ------------------------------------------------------------------ item 10: expiry


async def test_a_run_whose_upload_url_expires_ends_in_error(start_service):
    client = await start_service(storage={"url_ttl": 1})
    run = await submit(client, chain_flow("t"), COPY)
    assert run["Status"] == "WAITING" and run.get("Error") is None
    events = await asyncio.wait_for(events_until_end(client, run["ID"]), 20)
    assert_ended_by_expiry(events[-1][1])
    assert_ended_by_expiry(await wait_for(client, run["ID"], {"ERROR"}, timeout=5))
    # Too late: the URL is refused, and the run stays as it ended.
    async with client.session.put(run["WaitingURLs"][0]["PutURL"], data=b"late") as response:
        assert response.status == 403
    assert_ended_by_expiry(await wait_for(client, run["ID"], {"ERROR"}, timeout=5))


async def test_upload_deadlines_survive_a_restart(start_service, tmp_path):
    """Resumed before its URL expires, a run still ends at the expiry (the timer is
    armed again); resumed after it, the run ends at once."""
    data_dir = tmp_path / "data"
    no_worker = {"enabled": False}
    first = await start_service(data_dir, storage={"url_ttl": 4}, worker=no_worker)
    started = time.monotonic()
    before = await submit(first, chain_flow("t"), COPY)
    await first.close()
    second = await start_service(data_dir, worker=no_worker)
    if time.monotonic() - started < 3:  # resumed in time: still waiting
        status = await (await second.get(f"/api/v1/flow/status/{before['ID']}")).json()
        assert status["Status"] == "WAITING", status
    assert_ended_by_expiry(await wait_for(second, before["ID"], {"ERROR"}, timeout=15))
    await second.close()

    third = await start_service(data_dir, storage={"url_ttl": 1}, worker=no_worker)
    after = await submit(third, chain_flow("t"), COPY)
    await third.close()
    await asyncio.sleep(1.5)  # the URL expires while no service runs
    fourth = await start_service(data_dir, worker=no_worker)
    assert_ended_by_expiry(await wait_for(fourth, after["ID"], {"ERROR"}, timeout=15))


async def test_an_upload_in_time_is_not_expired(start_service):
    client = await start_service(storage={"url_ttl": 3})
    run = await submit(client, chain_flow("t"), COPY)
    await upload(client, run, "src", b"in time")
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    await asyncio.sleep(4.5)  # past the URL's expiry: nothing changes
    after = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == after["Status"] == "COMPLETE", after
    assert after.get("Error") is None
    assert await artifact(client, run["ID"], "out") == b"in time"


# ------------------------------------------------------------------ item 11: one upload


async def test_a_waiting_url_takes_one_upload(start_service):
    client = await start_service()
    run = await submit(client, chain_flow("t"), COPY)
    url = run["WaitingURLs"][0]["PutURL"]
    await upload(client, run, "src", b"the input")
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == "COMPLETE", done
    async with client.session.put(url, data=b"replaced") as response:
        assert response.status == 409
        body = await response.json()
        assert body["code"] == "OBJECT_EXISTS"
        assert "submit the flow again" in body["message"]
    # The flag is signed: without it the URL is an altered one.
    stripped = url.replace("&X-Pipewell-Create-Only=1", "").replace("X-Pipewell-Create-Only=1&", "")
    assert stripped != url
    async with client.session.put(stripped, data=b"replaced") as response:
        assert response.status == 403
        assert (await response.json())["code"] == "URL_INVALID"
    assert await artifact(client, run["ID"], "src") == b"the input"
    assert await artifact(client, run["ID"], "out") == b"the input"


async def test_two_racing_uploads_to_one_url_store_one(start_service):
    client = await start_service(worker={"enabled": False})
    run = await submit(client, chain_flow("t"), COPY)
    url = run["WaitingURLs"][0]["PutURL"]
    bodies = [bytes([i]) * (3 * 1024 * 1024) for i in (1, 2)]

    async def put(body: bytes) -> int:
        async with client.session.put(url, data=io.BytesIO(body)) as response:
            return response.status

    statuses = await asyncio.gather(*(put(b) for b in bodies))
    assert sorted(statuses) == [200, 409], statuses
    assert await artifact(client, run["ID"], "src") == bodies[statuses.index(200)]


# ------------------------------------------------------------------ item 12: headers


async def test_stored_bytes_are_never_rendered_as_a_page(start_service):
    client = await start_service(worker={"enabled": False})
    store = client.server.app[STORES].local("default")
    for body, content_type, disposition in (
        (HTML, "text/html; charset=utf-8", 'attachment; filename="src.html"'),
        (PNG, "image/png", 'inline; filename="src.png"'),
    ):
        run = await submit(client, chain_flow("t"), COPY)
        url = run["WaitingURLs"][0]["PutURL"]
        headers = {"Content-Type": content_type}
        async with client.session.put(url, data=body, headers=headers) as response:
            assert response.status == 200
        key = run["WaitingURLs"][0]["Artifact"]["ObjectName"]
        served = [
            await client.get(f"/api/v1/flow/artifact/{run['ID']}/src"),
            await client.session.get(store.get_url(key, 60)),
        ]
        for response in served:
            assert response.status == 200
            assert await response.read() == body
            assert response.headers["Content-Type"] == content_type
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["Content-Disposition"] == disposition
            assert response.headers["Content-Security-Policy"] == "sandbox"


async def test_an_upload_still_streaming_past_its_urls_expiry_is_cut_off_and_not_kept(
    start_service, tmp_path
):
    data_dir = tmp_path / "data"
    client = await start_service(data_dir, storage={"url_ttl": 2})
    run = await submit(client, chain_flow("copy"), [busybox_def("copy", "cp ${in} ${out}")])
    url = run["WaitingURLs"][0]["PutURL"]

    async def slowly():  # begun in time, still sending 6 s later
        for _ in range(12):
            yield b"x" * 1024
            await asyncio.sleep(0.5)

    async with client.session.put(url, data=slowly()) as response:
        assert response.status == 403, await response.text()
        body = await response.json()
    assert body["code"] == "URL_INVALID" and body["expired"] is True
    assert "still being received" in body["message"]
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"}, timeout=20)
    assert done["Status"] == "ERROR"
    stored = [p for p in (data_dir / "objects").rglob("*") if p.is_file()]
    assert stored == [], stored
