"""The same flows as on the local store, with the default store on moto's S3 server."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.helpers import artifact, busybox_def, chain_flow, free_port, submit, upload, wait_for
from tests.integration.test_seed_example import SEED_DEFS, SEED_FLOW, image_bytes

pytestmark = pytest.mark.docker


def s3_settings(endpoint: str) -> dict:
    return {
        "storage": {
            "poll_interval": 0.2,
            "default": {
                "type": "s3",
                "params": {
                    "bucket": "pipewell-test",
                    "endpoint_url": endpoint,
                    "region": "us-east-1",
                    "access_key_id": "test",
                    "secret_access_key": "test",
                    "create_bucket": True,
                },
            },
        }
    }


async def test_chain_on_s3(start_service, moto_endpoint):
    client = await start_service(**s3_settings(moto_endpoint))
    defs = [
        busybox_def("upper", "sh -c 'tr a-z A-Z < ${in} > ${out}'"),
        busybox_def("copy", "cp ${in} ${out}"),
    ]
    run = await submit(client, chain_flow("upper", "copy"), defs)
    url = run["WaitingURLs"][0]["PutURL"]
    assert url.startswith(moto_endpoint + "/pipewell-test/")
    await upload(client, run, "src", b"bytes through s3")
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == "COMPLETE", done
    assert await artifact(client, run["ID"], "out") == b"BYTES THROUGH S3"


async def test_seed_example_on_s3(start_service, moto_endpoint):
    client = await start_service(**s3_settings(moto_endpoint))
    run = await submit(client, SEED_FLOW, SEED_DEFS)
    await upload(client, run, "input-image", image_bytes("JPEG", (1000, 500)))
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == "COMPLETE", done
    result = Image.open(io.BytesIO(await artifact(client, run["ID"], "output-image")))
    assert (result.format, result.size) == ("JPEG", (800, 400))


def test_unreachable_s3_endpoint_is_a_clear_store_error():
    from storage import S3Store, StoreUnavailable

    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(StoreUnavailable, match="store 'default': create bucket failed"):
        S3Store(
            "default",
            bucket="b-unreachable",
            endpoint_url=closed,
            create_bucket=True,
            connect_timeout=1,
            max_attempts=1,
            access_key_id="x",
            secret_access_key="x",
        )


async def test_invocations_on_s3(start_service, moto_endpoint):
    """The input is written to S3 by the service; JSON comes back decoded, binary as
    a presigned S3 URL."""
    import gzip
    import json

    from tests.integration.test_invocations import ECHO, GZIP, axiom, one_node, save

    client = await start_service(**s3_settings(moto_endpoint))
    value = {"text": "through s3", "n": [1, 2]}
    echo = (await save(client, one_node("echo"), [ECHO]))["graph_id"]
    status, body = await axiom(client, {"graph_id": echo, "input": value, "wait": True})
    assert status == 202 and body["result"]["output"] == value

    packed = (await save(client, one_node("gzip"), [GZIP]))["graph_id"]
    _, body = await axiom(client, {"graph_id": packed, "input": value, "wait": True})
    output = body["result"]["output"]
    assert output["url"].startswith(moto_endpoint + "/pipewell-test/")
    async with client.session.get(output["url"]) as response:
        data = await response.read()
    assert output["size"] == len(data) and json.loads(gzip.decompress(data)) == value


async def test_a_collection_on_s3_zip_and_items_one_by_one(start_service, moto_endpoint):
    """A zip PUT to S3 is found by polling and expanded from S3 (spooled: S3 cannot
    seek); a map runs over its items and a gather reads them; a second collection is
    put item by item to S3 PutURLs and closed (listed from S3)."""
    from tests.integration.test_collections_api import LISTING, UPPER, batch_flow, zipped

    client = await start_service(**s3_settings(moto_endpoint))
    run = await submit(client, batch_flow(), [UPPER, LISTING])
    put = run["WaitingURLs"][0]["PutURL"]
    assert put.startswith(moto_endpoint + "/pipewell-test/")
    async with client.session.put(put, data=zipped({"a.txt": b"alpha", "s/b.txt": b"beta"})) as r:
        assert r.status == 200, await r.text()
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == "COMPLETE", done
    listing = (await artifact(client, run["ID"], "listing")).decode().splitlines()
    assert listing == ["./a.txt=ALPHA", "./s/b.txt=BETA"]

    run = await submit(client, batch_flow(), [UPPER, LISTING])
    base = f"/api/v1/flow/collection/{run['ID']}/docs"
    response = await client.post(f"{base}/items", json={"Names": ["one.txt", "two.txt"]})
    urls = (await response.json())["PutURLs"]
    for name, data in (("one.txt", b"first"), ("two.txt", b"second")):
        async with client.session.put(urls[name], data=data) as r:
            assert r.status == 200, await r.text()
    response = await client.post(f"{base}/close")
    assert await response.json() == {"Edge": "docs", "Count": 2}
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == "COMPLETE", done
    listing = (await artifact(client, run["ID"], "listing")).decode().splitlines()
    assert listing == ["./one.txt=FIRST", "./two.txt=SECOND"]


async def test_the_cache_and_a_retry_on_s3(start_service, moto_endpoint):
    """An upload sent straight to S3 is known by its ETag, a node's output by the sha256
    its worker took; a hit and a retry copy objects inside the bucket."""
    client = await start_service(**s3_settings(moto_endpoint))
    upper = busybox_def("upper", "sh -c 'tr a-z A-Z < ${in} > ${out}'")
    broken = busybox_def("broken", "sh -c 'exit 6'", MaxAttempts=1)

    async def chain(*steps: str, defs: list) -> dict:
        run = await submit(client, chain_flow(*steps), defs)
        await upload(client, run, "src", b"cached on s3")
        return await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})

    first = await chain("upper", "upper", defs=[upper])
    assert first["Artifacts"]["src"]["Digest"].startswith("etag:")
    assert first["Artifacts"]["out"]["Digest"].startswith("sha256:")
    again = await chain("upper", "upper", defs=[upper])
    assert {n: s.get("Cached") for n, s in again["NodeState"].items()} == {
        "n0": {"Run": first["ID"], "Node": "n0"},
        "n1": {"Run": first["ID"], "Node": "n1"},
    }
    assert await artifact(client, again["ID"], "out") == b"CACHED ON S3"

    failed = await chain("upper", "broken", defs=[upper, broken])
    assert failed["Status"] == "ERROR"
    response = await client.post(f"/api/v1/flow/retry/{failed['ID']}")
    assert response.status == 200, await response.text()
    retried = await wait_for(client, (await response.json())["ID"], {"COMPLETE", "ERROR"})
    assert retried["NodeState"]["n0"]["Cached"] == {"Run": failed["ID"], "Node": "n0"}
    assert await artifact(client, retried["ID"], "src") == b"cached on s3"
    assert await artifact(client, retried["ID"], "e1") == b"CACHED ON S3"


async def test_retention_deletes_a_runs_objects_and_collections_from_s3(
    start_service, moto_endpoint
):
    """An expired run's objects, its collections' items and bundles included, are gone
    from the bucket (DeleteObjects); a run still within its lifetime keeps all of its."""
    import asyncio

    import boto3

    from tests.integration.test_collections_api import LISTING, UPPER, batch_flow, zipped

    settings = s3_settings(moto_endpoint)
    client = await start_service(**settings, retention={"min_lifetime": 1})
    bucket = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )

    def keys(run_id: str) -> list[str]:
        listed = bucket.list_objects_v2(Bucket="pipewell-test", Prefix="tenants/default/")
        return sorted(o["Key"] for o in listed.get("Contents", ()) if run_id in o["Key"])

    async def batch(lifetime: str) -> dict:
        run = await submit(client, {**batch_flow(), "Lifetime": lifetime}, [UPPER, LISTING])
        archive = zipped({"a.txt": b"alpha", "b.txt": b"beta"})
        async with client.session.put(run["WaitingURLs"][0]["PutURL"], data=archive) as put:
            assert put.status == 200, await put.text()
        return await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})

    short, long = await batch("1s"), await batch("1d")
    assert short["Status"] == long["Status"] == "COMPLETE"
    before = keys(short["ID"])
    # The uploaded zip, each collection's items (docs and loud), and the listing.
    assert any(k.endswith("/docs/a.txt") for k in before), before
    assert any(k.endswith("/loud/b.txt") for k in before), before
    assert len(keys(long["ID"])) == len(before)

    await asyncio.sleep(1.1)
    response = await client.post("/api/v1/gc", json={})
    swept = await response.json()
    assert swept["RunIDs"] == [short["ID"]] and swept["FailedStores"] == [], swept
    assert keys(short["ID"]) == []
    assert len(keys(long["ID"])) == len(before)
    assert (await artifact(client, long["ID"], "listing")).decode().splitlines() == [
        "./a.txt=ALPHA",
        "./b.txt=BETA",
    ]
    bucket.close()
