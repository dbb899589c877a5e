"""Object stores behind one interface: ``local`` (embedded) and ``s3`` (any S3 API)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from storage.base import (
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    Store,
    StoreError,
    StoreUnavailable,
    check_key,
)
from storage.local import LocalStore, SignatureInvalid


def __getattr__(name: str) -> Any:
    # boto3 takes a tenth of a second to import: only a service that uses s3 pays it.
    if name == "S3Store":
        from storage.s3 import S3Store

        return S3Store
    raise AttributeError(f"module 'storage' has no attribute {name!r}")


_S3_PARAMS = {
    "bucket", "endpoint_url", "public_endpoint_url", "region", "access_key_id",
    "secret_access_key", "prefix", "create_bucket", "connect_timeout", "read_timeout",
    "max_attempts",
}  # fmt: skip


def open_store(
    name: str,
    type: str,
    params: dict[str, Any],
    *,
    data_dir: Path,
    public_base_url: str,
    internal_base_url: str | None,
    secret: bytes,
) -> Store:
    """Build the store a configuration or a flow's ``Stores`` entry describes."""
    if type == "local":
        return LocalStore(name, Path(data_dir) / "objects" / name, public_base_url, secret,
                          internal_base_url)
    if type == "s3":
        if not params.get("bucket"):
            raise StoreError(f"store {name!r}: s3 needs Params.bucket")
        unknown = sorted(set(params) - _S3_PARAMS)
        if unknown:
            raise StoreError(
                f"store {name!r}: unknown s3 Params {unknown}; known: {sorted(_S3_PARAMS)}"
            )
        from storage.s3 import S3Store

        return S3Store(name, **params)
    raise StoreError(f"store {name!r}: unknown type {type!r}; use local or s3")


__all__ = [
    "InvalidKey",
    "LocalStore",
    "ObjectInfo",
    "ObjectNotFound",
    "S3Store",
    "SignatureInvalid",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "check_key",
    "open_store",
]
