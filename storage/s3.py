"""Any S3 API (AWS, MinIO, R2, Ceph, moto) through boto3.

Two clients, made once: one on the internal endpoint (the service and its
workers) and one on the public endpoint (URLs handed to clients, which may
reach the store at another address). boto3 errors become ours in one place,
``_translated``. Presigned URLs and credentials are never logged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, BinaryIO

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from storage.base import (
    ObjectInfo,
    ObjectNotFound,
    Store,
    StoreError,
    StoreUnavailable,
    check_key,
)

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


@contextlib.contextmanager
def _translated(store: str, action: str, key: str | None = None) -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if key is not None and code in _NOT_FOUND:
            raise ObjectNotFound(key) from exc
        raise StoreUnavailable(f"store {store!r}: {action} failed: {code or exc}") from exc
    except BotoCoreError as exc:
        raise StoreUnavailable(f"store {store!r}: {action} failed: {exc}") from exc


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
        self.name = name
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        config = Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
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

    def _ensure_bucket(self) -> None:
        with _translated(self.name, "create bucket"):
            try:
                self._client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if str(exc.response.get("Error", {}).get("Code")) not in _NOT_FOUND:
                    raise
                self._client.create_bucket(Bucket=self.bucket)

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _presign(self, method: str, key: str, ttl: float, internal: bool) -> str:
        client = self._client if internal else self._public
        with _translated(self.name, "presign", key):
            return client.generate_presigned_url(
                method, Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=int(ttl)
            )

    def put_url(self, key: str, ttl: float, *, internal: bool = False) -> str:
        return self._presign("put_object", key, ttl, internal)

    def get_url(self, key: str, ttl: float, *, internal: bool = False) -> str:
        return self._presign("get_object", key, ttl, internal)

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            with _translated(self.name, "stat", key):
                head = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ObjectNotFound:
            return None
        return ObjectInfo(key=key, size=int(head["ContentLength"]),
                          content_type=head.get("ContentType"))

    def open_read(self, key: str) -> BinaryIO:
        with _translated(self.name, "read", key):
            body: Any = self._client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        return body  # botocore's StreamingBody: read(n), close()

    def write(self, key: str, data: BinaryIO, *, content_type: str | None = None) -> ObjectInfo:
        extra = {"ContentType": content_type} if content_type else None
        with _translated(self.name, "write", key):
            self._client.upload_fileobj(
                data, self.bucket, self._key(key), ExtraArgs=extra, Config=self._transfer
            )
        info = self.stat(key)
        if info is None:
            raise StoreError(f"store {self.name!r}: {key!r} missing right after writing it")
        return info

    def delete(self, key: str) -> None:
        with _translated(self.name, "delete", key):
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def close(self) -> None:
        self._client.close()
        if self._public is not self._client:
            self._public.close()


__all__ = ["S3Store"]
