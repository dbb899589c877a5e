"""S3Store against moto's real S3 server on 127.0.0.1 (no Docker needed).

moto keeps nothing across restarts, drops the body of a PUT sent as form data
and does not enforce expiry (see DESIGN.md, Storage): these tests stick to
what a real S3 endpoint does the same way.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import time
from pathlib import Path

import boto3
import pytest
import requests
from botocore.config import Config

from storage import ObjectNotFound, S3Store, StoreError, StoreUnavailable, open_store
from tests.helpers import free_port

EVERY_BYTE = bytes(range(256)) * 64
CREDENTIALS = {"access_key_id": "test", "secret_access_key": "test"}
_buckets = itertools.count()


@pytest.fixture
def bucket() -> str:
    return f"pipewell-{next(_buckets)}-{os.getpid()}"


@pytest.fixture
def store(moto_endpoint, bucket):
    store = S3Store("objects", bucket=bucket, endpoint_url=moto_endpoint, create_bucket=True,
                    **CREDENTIALS)  # fmt: skip
    yield store
    store.close()


def raw_client(endpoint: str):  # type: ignore[no-untyped-def]
    """A plain boto3 client, to look at the bucket without going through S3Store."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(s3={"addressing_style": "path"}),
    )


def test_presigned_put_then_get_moves_exact_bytes(store, moto_endpoint, bucket):
    url = store.put_url("runs/r1/input-image", 60)
    assert url.startswith(f"{moto_endpoint}/{bucket}/runs/r1/input-image?")
    assert "X-Amz-Signature=" in url
    # What curl -T sends: a bare PUT of the bytes, no form Content-Type.
    response = requests.put(url, data=EVERY_BYTE, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["ETag"]
    info = store.stat("runs/r1/input-image")
    assert info is not None and info.size == len(EVERY_BYTE)
    with store.open_read("runs/r1/input-image") as body:
        assert body.read() == EVERY_BYTE
    response = requests.get(store.get_url("runs/r1/input-image", 60), timeout=30)
    assert response.status_code == 200
    assert response.content == EVERY_BYTE


def test_presigned_urls_from_a_file_stream(store, tmp_path):
    source = tmp_path / "blob.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024))
    with source.open("rb") as handle:  # requests streams a file object
        response = requests.put(store.put_url("streamed", 60), data=handle, timeout=30)
    assert response.status_code == 200, response.text
    with requests.get(store.get_url("streamed", 60), stream=True, timeout=30) as response:
        received = b"".join(response.iter_content(256 * 1024))
    assert received == source.read_bytes()


def test_public_endpoint_goes_into_client_urls(moto_endpoint, bucket):
    # The same moto server reached under two names: internal 127.0.0.1, public localhost.
    public = moto_endpoint.replace("127.0.0.1", "localhost")
    store = S3Store("objects", bucket=bucket, endpoint_url=moto_endpoint,
                    public_endpoint_url=public, create_bucket=True, **CREDENTIALS)  # fmt: skip
    try:
        client_url = store.put_url("k", 60)
        worker_url = store.put_url("k", 60, internal=True)
        assert client_url.startswith(f"{public}/{bucket}/k?")
        assert worker_url.startswith(f"{moto_endpoint}/{bucket}/k?")
        assert requests.put(client_url, data=b"via public", timeout=30).status_code == 200
        assert requests.get(store.get_url("k", 60, internal=True), timeout=30).content == (
            b"via public"
        )
        assert requests.get(store.get_url("k", 60), timeout=30).content == b"via public"
    finally:
        store.close()


def test_write_and_open_read_round_trip_10_mib(store):
    blob = os.urandom(10 * 1024 * 1024)
    info = store.write("big/blob", io.BytesIO(blob), content_type="application/x-test")
    assert (info.key, info.size, info.content_type) == ("big/blob", len(blob), "application/x-test")
    # Hashed as it was sent; S3 itself knows the object by its ETag (of its parts, here).
    assert info.digest == f"sha256:{hashlib.sha256(blob).hexdigest()}"
    found = store.stat("big/blob")
    assert (found.key, found.size, found.content_type) == (info.key, info.size, info.content_type)
    assert found.digest is not None and found.digest.startswith("etag:")
    copied = store.copy("big/blob", "big/copy")
    assert (copied.key, copied.size, copied.digest) == ("big/copy", len(blob), found.digest)
    with store.open_read("big/copy") as body:
        assert body.read() == blob
    with pytest.raises(ObjectNotFound):
        store.copy("big/nothing", "big/other")
    received = bytearray()
    with store.open_read("big/blob") as body:
        while chunk := body.read(1024 * 1024):
            received += chunk
    assert bytes(received) == blob


def test_prefix_is_prepended_to_every_key(moto_endpoint, bucket):
    store = S3Store("objects", bucket=bucket, endpoint_url=moto_endpoint, prefix="/tenant-a/",
                    create_bucket=True, **CREDENTIALS)  # fmt: skip
    try:
        store.write("x/y", io.BytesIO(b"prefixed"))
        url = store.put_url("x/z", 60)
        assert f"/{bucket}/tenant-a/x/z?" in url
        listed = raw_client(moto_endpoint).list_objects_v2(Bucket=bucket)
        assert [entry["Key"] for entry in listed["Contents"]] == ["tenant-a/x/y"]
        assert store.stat("x/y").size == len(b"prefixed")
    finally:
        store.close()


def test_delete_and_missing_objects(store):
    assert store.stat("never/written") is None
    assert not store.exists("never/written")
    with pytest.raises(ObjectNotFound) as caught:
        store.open_read("never/written")
    assert caught.value.key == "never/written"
    store.write("gone/soon", io.BytesIO(b"bytes"))
    assert store.exists("gone/soon")
    store.delete("gone/soon")
    store.delete("gone/soon")  # a missing key is not an error
    assert store.stat("gone/soon") is None
    with pytest.raises(ObjectNotFound):
        store.open_read("gone/soon")


def test_a_missing_bucket_is_named(moto_endpoint):
    store = S3Store("objects", bucket="no-such-bucket-here", endpoint_url=moto_endpoint,
                    **CREDENTIALS)  # fmt: skip
    try:
        with pytest.raises(StoreUnavailable, match="bucket 'no-such-bucket-here' does not exist"):
            store.write("k", io.BytesIO(b"x"))
        with pytest.raises(StoreUnavailable, match="does not exist"):
            store.open_read("k")
    finally:
        store.close()


def test_create_bucket_is_idempotent(moto_endpoint, bucket, store):
    again = S3Store("objects", bucket=bucket, endpoint_url=moto_endpoint, create_bucket=True,
                    **CREDENTIALS)  # fmt: skip
    try:
        store.write("k", io.BytesIO(b"kept"))
        assert again.open_read("k").read() == b"kept"
    finally:
        again.close()


def test_create_bucket_outside_us_east_1(moto_endpoint, bucket):
    store = S3Store("objects", bucket=bucket, endpoint_url=moto_endpoint, region="eu-west-1",
                    create_bucket=True, **CREDENTIALS)  # fmt: skip
    try:
        store.write("k", io.BytesIO(b"in europe"))
        location = raw_client(moto_endpoint).get_bucket_location(Bucket=bucket)
        assert location["LocationConstraint"] == "eu-west-1"
    finally:
        store.close()


def test_an_unreachable_endpoint_is_store_unavailable_quickly():
    closed = f"http://127.0.0.1:{free_port()}"
    secrets = {"access_key_id": "AKIDSHOULDNOTSHOW", "secret_access_key": "sekrit-never-shown"}
    started = time.monotonic()
    store = S3Store("far", bucket="b", endpoint_url=closed, connect_timeout=1, max_attempts=1,
                    **secrets)  # fmt: skip
    messages = []
    try:
        # Presigning needs no network: a URL can be made while the store is down.
        assert store.put_url("k", 60).startswith(f"{closed}/b/k?")
        calls = [
            (store.stat, "stat failed: Could not connect to the endpoint URL"),
            (lambda key: store.write(key, io.BytesIO(b"x")), "write failed: .*connect"),
            (store.open_read, "read failed: Could not connect"),
            (store.delete, "delete failed: Could not connect"),
        ]
        for call, message in calls:
            with pytest.raises(StoreUnavailable, match=f"store 'far': {message}") as caught:
                call("k")
            messages.append(str(caught.value))
    finally:
        store.close()
    with pytest.raises(StoreUnavailable, match=r"store 'far': create bucket failed") as caught:
        S3Store("far", bucket="b", endpoint_url=closed, connect_timeout=1, max_attempts=1,
                create_bucket=True, **secrets)  # fmt: skip
    messages.append(str(caught.value))
    assert all(closed in message for message in messages), messages
    assert not any("AKID" in message or "sekrit" in message for message in messages)
    assert time.monotonic() - started < 20


def test_open_store_builds_both_types(moto_endpoint, bucket, tmp_path: Path):
    common = {"data_dir": tmp_path, "public_base_url": "http://svc:8080",
              "internal_base_url": "http://127.0.0.1:8080", "secret": b"s" * 32}  # fmt: skip
    s3 = open_store(
        "remote",
        "s3",
        {"bucket": bucket, "endpoint_url": moto_endpoint, "create_bucket": True, **CREDENTIALS},
        **common,
    )
    try:
        assert isinstance(s3, S3Store) and s3.name == "remote"
        s3.write("k", io.BytesIO(b"through open_store"))
        assert requests.get(s3.get_url("k", 60), timeout=30).content == b"through open_store"
    finally:
        s3.close()
    local = open_store("disk", "local", {}, **common)
    assert local.put_url("a/b", 60).startswith("http://svc:8080/objects/disk/a/b?")
    assert local.put_url("a/b", 60, internal=True).startswith("http://127.0.0.1:8080/objects/disk/")
    local.write("a/b", io.BytesIO(b"on disk"))
    assert (tmp_path / "objects" / "disk" / "data" / "a" / "b").read_bytes() == b"on disk"


@pytest.mark.parametrize(
    ("name", "type_", "params", "message"),
    [
        ("x", "ftp", {}, "store 'x': unknown type 'ftp'"),
        ("x", "s3", {}, "store 'x': s3 needs Params.bucket"),
        ("x", "s3", {"bucket": "  "}, "store 'x': s3 needs Params.bucket"),
        ("x", "s3", {"bucket": "b", "bukket": "c"}, r"unknown s3 Params \['bukket'\]"),
        ("../up", "local", {}, "a local store's name is a directory name"),
        ("a/b", "local", {}, "a local store's name is a directory name"),
        ("x", "local", {"root": "/tmp"}, "a local store takes no Params"),
    ],
)
def test_open_store_says_what_to_fix(tmp_path, name, type_, params, message):
    with pytest.raises(StoreError, match=message):
        open_store(name, type_, params, data_dir=tmp_path, public_base_url="http://h",
                   internal_base_url=None, secret=b"s" * 32)  # fmt: skip
    assert not (tmp_path / "objects").exists() or not any((tmp_path / "objects").iterdir())


def test_objects_under_a_prefix_are_listed_in_key_order_up_to_a_limit(moto_endpoint, bucket):
    store = S3Store("objects", bucket=bucket, endpoint_url=moto_endpoint, prefix="t/",
                    create_bucket=True, **CREDENTIALS)  # fmt: skip
    try:
        for key in ("c/items/b.txt", "c/items/a/z.txt", "c/items.bundle", "c/other/x"):
            store.write(key, io.BytesIO(key.encode()))
        listed = store.list("c/items", 10)
        assert [(i.key, i.size) for i in listed] == [("c/items/a/z.txt", 15), ("c/items/b.txt", 13)]
        assert [i.key for i in store.list("c/items", 1)] == ["c/items/a/z.txt"]
        assert store.list("c/none", 10) == []
    finally:
        store.close()


def test_sizes_per_tenant_and_delete_many_in_one_call(store):
    for n in range(3):
        store.write(f"tenants/a/r{n}/out", io.BytesIO(b"x" * 10))
    store.write("tenants/b/r/out", io.BytesIO(b"y" * 4))
    assert store.sizes("tenants") == {"a": 30, "b": 4}
    store.delete_many([f"tenants/a/r{n}/out" for n in range(3)] + ["tenants/a/never"])
    assert store.sizes("tenants") == {"b": 4}
    assert store.list("tenants/a", 10) == []
