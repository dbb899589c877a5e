"""Any S3 API (AWS, MinIO, R2, Ceph, moto) through boto3.

Two clients, made once: one on the internal endpoint (the service and its
workers) and one on the public endpoint (URLs handed to clients, which may
reach the store at another address). boto3 errors become ours in one place,
``_translated``, and nowhere else. Presigned URLs and credentials are never
logged, and never put in an error message.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, unquote, urlsplit

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from s3transfer.exceptions import RetriesExceededError, S3UploadFailedError

from storage.base import (
    ObjectInfo,
    ObjectNotFound,
    SignatureInvalid,
    Store,
    StoreError,
    StoreUnavailable,
    check_key,
)

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden"}
#: SigV4 presigned URLs live at most seven days.
MAX_URL_TTL = 7 * 24 * 3600
#: Keys one DeleteObjects call takes at most (S3's limit).
DELETE_BATCH = 1000


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def _translated(store: str, bucket: str, action: str, key: str | None = None) -> Iterator[None]:
    """The one place boto3's exceptions become StoreUnavailable or ObjectNotFound."""
    try:
        yield
    except ClientError as exc:
        code = _code(exc)
        if key is not None and code in _NOT_FOUND:
            raise ObjectNotFound(key) from exc
        if code == "NoSuchBucket":
            reason = f"bucket {bucket!r} does not exist (create it, or set Params.create_bucket)"
        elif code in _DENIED:
            reason = f"access denied ({code}): check the store's credentials and bucket policy"
        else:
            reason = code or str(exc)
        raise StoreUnavailable(f"store {store!r}: {action} failed: {reason}") from exc
    except (BotoCoreError, Boto3Error, S3UploadFailedError, RetriesExceededError) as exc:
        # e.g. 'Could not connect to the endpoint URL: "http://…"': no credentials in it.
        raise StoreUnavailable(f"store {store!r}: {action} failed: {exc}") from exc


class _Body(io.RawIOBase):
    """An object's streaming body whose read errors are ours too."""

    def __init__(self, store: S3Store, key: str, body: Any) -> None:
        self._store = store
        self._key = key
        self._body = body

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        with _translated(self._store.name, self._store.bucket, "read", self._key):
            return bytes(self._body.read(None if size is None or size < 0 else size))

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class _Hashed(io.RawIOBase):
    """A source read for an upload, hashed (sha256) as it is read, in order."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self._hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self._source.read(-1 if size is None else size)
        self._hash.update(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def digest(self) -> str:
        return f"sha256:{self._hash.hexdigest()}"


class S3Store(Store):
    def __init__(
        self,
        name: str,
        *,
        bucket: str,
        endpoint_url: str | None = None,
        public_endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        prefix: str = "",
        create_bucket: bool = False,
        connect_timeout: float = 5,
        read_timeout: float = 60,
        max_attempts: int = 3,
    ) -> None:
        """``endpoint_url`` is what the service and workers reach; ``public_endpoint_url``
        (default: the same) goes into URLs handed to clients. ``connect_timeout``,
        ``read_timeout`` (seconds) and ``max_attempts`` (total tries per call) bound how
        long an unreachable endpoint takes to be reported.
        """
        self.name = name
        self.bucket = bucket
        self.region = region
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        config = Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"total_max_attempts": max(1, int(max_attempts)), "mode": "standard"},
            max_pool_connections=32,
        )
        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
        )
        self._client = session.client("s3", endpoint_url=endpoint_url, config=config)
        self._public = (
            session.client("s3", endpoint_url=public_endpoint_url, config=config)
            if public_endpoint_url and public_endpoint_url != endpoint_url
            else self._client
        )
        self._transfer = TransferConfig(multipart_chunksize=16 * 1024 * 1024, max_concurrency=4)
        if create_bucket:
            self._ensure_bucket()

    def _translated(
        self, action: str, key: str | None = None
    ) -> contextlib.AbstractContextManager[None]:
        return _translated(self.name, self.bucket, action, key)

    def _ensure_bucket(self) -> None:
        with self._translated("create bucket"):
            try:
                self._client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as exc:
                if _code(exc) not in _NOT_FOUND | {"NoSuchBucket"}:
                    raise
            extra: dict[str, Any] = {}
            if self.region != "us-east-1":  # the one region that refuses a LocationConstraint
                extra["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            try:
                self._client.create_bucket(Bucket=self.bucket, **extra)
            except ClientError as exc:
                if _code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _presign(self, method: str, key: str, ttl: float, internal: bool) -> str:
        client = self._client if internal else self._public
        expires_in = min(MAX_URL_TTL, max(1, math.ceil(ttl)))
        with self._translated("presign", key):
            return client.generate_presigned_url(
                method, Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=expires_in
            )

    def put_url(
        self, key: str, ttl: float, *, internal: bool = False, create_only: bool = False
    ) -> str:
        # create_only is not enforced: S3 can only refuse an overwrite when the PUT
        # carries If-None-Match, a header curl -T and browsers do not send, so
        # signing it in would break plain uploads. The limit is in the README.
        return self._presign("put_object", key, ttl, internal)

    def get_url(self, key: str, ttl: float, *, internal: bool = False) -> str:
        return self._presign("get_object", key, ttl, internal)

    def key_of_url(self, url: str) -> str | None:
        # Path-style, as _presign makes them: <endpoint>/<bucket>/<prefix><key>?X-Amz-…
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        bucket_path = f"/{self.bucket}/{self.prefix}"
        ours = {
            urlsplit(client.meta.endpoint_url).netloc for client in (self._client, self._public)
        }
        if parts.netloc not in ours or not parts.path.startswith(bucket_path):
            return None
        if "X-Amz-Signature" not in query:
            raise SignatureInvalid("the URL is not signed: ask the service for a presigned URL")
        try:
            signed = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            expires = signed.timestamp() + int(query["X-Amz-Expires"])
        except (KeyError, ValueError) as exc:
            raise SignatureInvalid("the URL's date or expiry cannot be read") from exc
        if expires < time.time():
            raise SignatureInvalid("the URL has expired: ask for a new one", expired=True)
        return check_key(unquote(parts.path[len(bucket_path) :]))

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            with self._translated("stat", key):
                head = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ObjectNotFound:
            return None
        # S3's ETag is the MD5 of a single PUT's bytes (of its parts' MD5s for a
        # multipart upload): the same bytes sent the same way have the same one.
        etag = str(head.get("ETag") or "").strip('"')
        return ObjectInfo(
            key=key,
            size=int(head["ContentLength"]),
            content_type=head.get("ContentType"),
            digest=f"etag:{etag}" if etag else None,
        )

    def open_read(self, key: str) -> BinaryIO:
        with self._translated("read", key):
            body = self._client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        return _Body(self, key, body)  # type: ignore[return-value]

    def write(self, key: str, data: BinaryIO, *, content_type: str | None = None) -> ObjectInfo:
        extra = {"ContentType": content_type} if content_type else None
        hashed = _Hashed(data)
        with self._translated("write", key):
            self._client.upload_fileobj(
                hashed, self.bucket, self._key(key), ExtraArgs=extra, Config=self._transfer
            )
        info = self.stat(key)
        if info is None:
            raise StoreError(f"store {self.name!r}: {key!r} missing right after writing it")
        return ObjectInfo(info.key, info.size, info.content_type, hashed.digest())

    def copy(self, source: str, target: str) -> ObjectInfo:
        """A copy inside the bucket (CopyObject, in parts above 5 GiB): no byte comes here."""
        info = self.stat(source)
        if info is None:
            raise ObjectNotFound(source)
        with self._translated("copy", target):
            self._client.copy(
                {"Bucket": self.bucket, "Key": self._key(source)},
                self.bucket,
                self._key(target),
                Config=self._transfer,
            )
        return ObjectInfo(target, info.size, info.content_type, info.digest)

    def list(self, prefix: str, limit: int) -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        start = self._key(prefix) + "/"
        pages = self._client.get_paginator("list_objects_v2")
        with self._translated("list", prefix):
            for page in pages.paginate(Bucket=self.bucket, Prefix=start):
                for entry in page.get("Contents", ()):
                    key = entry["Key"][len(self.prefix) :]
                    found.append(ObjectInfo(key=key, size=int(entry["Size"])))
                    if len(found) >= limit:
                        return found
        return found

    def sizes(self, prefix: str) -> dict[str, int]:
        start = self._key(prefix) + "/"
        found: dict[str, int] = {}
        pages = self._client.get_paginator("list_objects_v2")
        with self._translated("list", prefix):
            for page in pages.paginate(Bucket=self.bucket, Prefix=start):
                for entry in page.get("Contents", ()):
                    segment = entry["Key"][len(start) :].split("/", 1)[0]
                    found[segment] = found.get(segment, 0) + int(entry["Size"])
        return found

    def delete(self, key: str) -> None:
        try:
            with self._translated("delete", key):
                self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except ObjectNotFound:
            pass  # S3 answers 204 anyway; some compatible stores say NoSuchKey

    def delete_many(self, keys: list[str]) -> None:
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            with self._translated("delete", batch[0]):
                answer = self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": self._key(k)} for k in batch], "Quiet": True},
                )
            failed = [e for e in answer.get("Errors", ()) if e.get("Code") != "NoSuchKey"]
            if failed:
                first = failed[0]
                raise StoreUnavailable(
                    f"store {self.name!r} refused to delete {len(failed)} of {len(batch)} "
                    f"objects ({first.get('Key')!r}: {first.get('Code')} {first.get('Message')})"
                )

    def close(self) -> None:
        self._client.close()
        if self._public is not self._client:
            self._public.close()


__all__ = ["MAX_URL_TTL", "S3Store"]
