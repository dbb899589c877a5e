"""Collections through the real service and real containers: a zip PUT to a
collection's WaitingURL, items mapped through busybox nodes and gathered, items paged
by status with their reasons, a collection's items with working download URLs, a
collection filled item by item, and uploads that cannot become items refused."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from typing import Any

from tests.helpers import artifact, busybox_def, submit, wait_for

UPPER = busybox_def(
    "upper",
    # A file named bad* fails for good (exit 2 is not worth a retry only with the
    # retry policy of the incremental-runs issue: MaxAttempts 1 here).
    "sh -c 'case $(cat ${in}) in bad*) echo refusing ${in} >&2; exit 2;; esac; "
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


def batch_flow(**map_fields: Any) -> dict[str, Any]:
    upper: dict[str, Any] = {
        "ID": "upper",
        "Uses": "test/upper",
        "Inputs": [{"Name": "in", "Edge": "docs"}],
        "Outputs": [{"Name": "out", "Edge": "loud"}],
    }
    if map_fields:
        upper["Map"] = map_fields
    return {
        "Name": "batch",
        "Collections": ["docs"],
        "Nodes": [
            upper,
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
    with zipfile.ZipFile(data, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return data.getvalue()


def put_url(run: dict[str, Any], edge: str) -> str:
    return next(w["PutURL"] for w in run["WaitingURLs"] if w["Artifact"]["EdgeName"] == edge)


async def test_a_zip_put_to_its_waitingurl_is_mapped_and_gathered(start_service):
    client = await start_service()
    run = await submit(client, batch_flow(MinSuccess=0.5), [UPPER, LISTING])
    files = {"a.txt": b"alpha", "sub/b.txt": b"beta", "c.txt": b"bad one", "d.txt": b"delta"}
    async with client.session.put(put_url(run, "docs"), data=zipped(files)) as response:
        assert response.status == 200, await response.text()
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == "COMPLETE", done
    upper = done["NodeState"]["upper"]
    assert upper["Items"] == {
        "Total": 4,
        "Counts": {"COMPLETE": 3, "ERROR": 1},
        "MinSuccess": 0.5,
    }
    assert upper["Error"].startswith("1 of 4 items failed (50% must succeed")
    assert done["Artifacts"]["loud"]["Items"] == 3
    listing = (await artifact(client, run["ID"], "listing")).decode().splitlines()
    assert listing == ["./a.txt=ALPHA", "./d.txt=DELTA", "./sub/b.txt=BETA"]

    # The failed item, with its reason and its log.
    response = await client.get(f"/api/v1/flow/items/{run['ID']}/upper?status=ERROR")
    assert response.status == 200, await response.text()
    page = await response.json()
    assert [(i["Name"], i["Status"], i["Attempt"]) for i in page["Items"]] == [
        ("c.txt", "ERROR", 1)
    ]
    assert page["Items"][0]["Error"].startswith("command exited with code 2: refusing ")
    assert any("refusing" in line["message"] for line in page["Items"][0]["Logs"])
    assert page["Next"] is None and page["Progress"]["Total"] == 4

    # Pages of two, in the order items came.
    response = await client.get(f"/api/v1/flow/items/{run['ID']}/upper?limit=2")
    first = await response.json()
    assert len(first["Items"]) == 2 and first["Next"] == first["Items"][1]["Name"]
    response = await client.get(
        f"/api/v1/flow/items/{run['ID']}/upper?limit=2&after={first['Next']}"
    )
    second = await response.json()
    names = [i["Name"] for i in first["Items"] + second["Items"]]
    assert sorted(names) == ["a.txt", "c.txt", "d.txt", "sub/b.txt"] and second["Next"] is None

    # The collection's items, each downloadable.
    response = await client.get(f"/api/v1/flow/collection/{run['ID']}/loud")
    assert response.status == 200, await response.text()
    collection = await response.json()
    assert (collection["Complete"], collection["Count"]) == (True, 3)
    item = next(i for i in collection["Items"] if i["Name"] == "sub/b.txt")
    assert item["Size"] == 4
    async with client.session.get(item["URL"]) as response:
        body = await response.read()
    assert body == b"BETA"
    assert item["Sha256"] == hashlib.sha256(b"BETA").hexdigest()

    # Items are counted in the metrics, apart from nodes.
    metrics = await (await client.get("/metrics")).text()
    assert 'pipewell_items_total{outcome="succeeded"} 3.0' in metrics
    assert 'pipewell_items_total{outcome="failed"} 1.0' in metrics


async def test_an_item_that_fails_ends_the_run_by_default_and_says_which(start_service):
    client = await start_service()
    run = await submit(client, batch_flow(), [UPPER, LISTING])
    files = {"a.txt": b"alpha", "c.txt": b"bad one"}
    async with client.session.put(put_url(run, "docs"), data=zipped(files)) as response:
        assert response.status == 200
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == "ERROR"
    assert "c.txt: command exited with code 2" in done["NodeState"]["upper"]["Error"]
    assert done["NodeState"]["list"]["Status"] == "IDLE"


async def test_an_upload_that_cannot_become_items_is_refused_and_the_url_takes_another(
    start_service,
):
    client = await start_service(collections={"max_items": 3})
    run = await submit(client, batch_flow(), [UPPER, LISTING])
    url = put_url(run, "docs")
    async with client.session.put(url, data=b"not an archive") as response:
        assert response.status == 400
        body = await response.json()
    assert body["code"] == "COLLECTION_INVALID"
    assert "ARCHIVE_UNKNOWN" in body["message"] and "not a zip or tar" in body["message"]
    too_many = zipped({f"f{i}.txt": b"x" for i in range(4)})
    async with client.session.put(url, data=too_many) as response:
        assert response.status == 400
        assert "ARCHIVE_TOO_MANY_ENTRIES" in (await response.json())["message"]
    slip = zipped({"../../etc/passwd": b"root", "ok.txt": b"fine"})
    async with client.session.put(url, data=slip) as response:
        assert response.status == 200, await response.text()
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == "COMPLETE", done
    listing = (await artifact(client, run["ID"], "listing")).decode().splitlines()
    assert listing == ["./etc/passwd=ROOT", "./ok.txt=FINE"]


async def test_a_collection_filled_item_by_item_then_closed(start_service):
    client = await start_service()
    run = await submit(client, batch_flow(), [UPPER, LISTING])
    base = f"/api/v1/flow/collection/{run['ID']}/docs"
    response = await client.post(f"{base}/items", json={"Names": ["../x"]})
    assert response.status == 400
    assert (await response.json())["code"] == "ITEM_NAME_INVALID"
    response = await client.post(f"{base}/items", json={"Names": ["one.txt", "two/2.txt"]})
    assert response.status == 200, await response.text()
    urls = (await response.json())["PutURLs"]
    for name, data in (("one.txt", b"first"), ("two/2.txt", b"second")):
        async with client.session.put(urls[name], data=data) as put:
            assert put.status == 200, await put.text()
    status = await (await client.get(f"/api/v1/flow/status/{run['ID']}")).json()
    assert status["Status"] == "WAITING"
    response = await client.post(f"{base}/close")
    assert response.status == 200, await response.text()
    assert await response.json() == {"Edge": "docs", "Count": 2}
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == "COMPLETE", done
    listing = (await artifact(client, run["ID"], "listing")).decode().splitlines()
    assert listing == ["./one.txt=FIRST", "./two/2.txt=SECOND"]
    response = await client.post(f"{base}/close")
    assert response.status == 409
    assert (await response.json())["code"] == "COLLECTION_CLOSED"
    response = await client.post(f"/api/v1/flow/collection/{run['ID']}/loud/items",
                                 json={"Names": ["a"]})  # fmt: skip
    assert response.status == 404
    assert (await response.json())["code"] == "COLLECTION_NOT_FOUND"
    response = await client.get(f"/api/v1/flow/items/{run['ID']}/list")
    assert response.status == 404
    assert (await response.json())["code"] == "NODE_NOT_MAPPED"


async def test_a_saved_batch_flow_invoked_with_a_zip_answers_its_items(start_service):
    """Axiom's JSON takes the zip as base64; the answer lists the output collection's
    items with their URLs; a zip for a flow whose collection is gathered only works too."""
    client = await start_service()
    flow = batch_flow()
    flow["Nodes"] = flow["Nodes"][:1]  # the mapped node's collection is the output
    response = await client.post("/api/v1/flows", json={"Flow": flow, "NodeDefs": [UPPER]})
    assert response.status in (200, 201), await response.text()
    graph_id = (await response.json())["graph_id"]
    archive = zipped({"a.txt": b"alpha", "sub/b.txt": b"beta"})
    body = {
        "graph_id": graph_id,
        "input": {"base64": base64.b64encode(archive).decode(), "content_type": "application/zip"},
        "wait": True,
    }
    response = await client.post("/invocations/v1/flows/invoke", json=body)
    answer = await response.json()
    assert response.status == 202 and answer["result"]["success"], answer
    output = answer["result"]["output"]
    assert output["count"] == 2
    by_name = {item["name"]: item for item in output["items"]}
    assert sorted(by_name) == ["a.txt", "sub/b.txt"]
    async with client.session.get(by_name["sub/b.txt"]["url"]) as got:
        assert await got.read() == b"BETA"
    assert by_name["a.txt"]["sha256"] == hashlib.sha256(b"ALPHA").hexdigest()

    # Not an archive: refused before any run, saying what the edge takes.
    body["input"] = {"base64": base64.b64encode(b"plain").decode(), "content_type": "text/plain"}
    response = await client.post("/invocations/v1/flows/invoke", json=body)
    refused = await response.json()
    assert response.status == 400 and refused["code"] == "INPUT_INVALID", refused
    assert "application/zip" in refused["message"]


async def test_items_put_one_by_one_are_held_to_the_archives_bounds(start_service):
    client = await start_service(collections={"max_item_bytes": 10})
    run = await submit(client, batch_flow(), [UPPER, LISTING])
    base = f"/api/v1/flow/collection/{run['ID']}/docs"
    response = await client.post(f"{base}/items", json={"Names": ["small.txt", "big.txt"]})
    urls = (await response.json())["PutURLs"]
    for name, data in (("small.txt", b"tiny"), ("big.txt", b"far over ten bytes")):
        async with client.session.put(urls[name], data=data) as put:
            assert put.status == 200
    response = await client.post(f"{base}/close")
    assert response.status == 400
    body = await response.json()
    assert body["code"] == "COLLECTION_TOO_LARGE"
    assert "over max_item_bytes (10: big.txt)" in body["message"]
    status = await (await client.get(f"/api/v1/flow/status/{run['ID']}")).json()
    assert status["Status"] == "WAITING"  # nothing ran; the run still waits for its batch
