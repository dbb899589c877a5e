"""Object stores behind one interface: ``local`` (embedded) and ``s3`` (any S3 API)."""

from __future__ import annotations

import contextlib
import stat
from pathlib import Path
from typing import Any

from storage.base import (
    InvalidKey,
    ObjectExists,
    ObjectInfo,
    ObjectNotFound,
    Store,
    StoreError,
    StoreUnavailable,
    check_key,
)
from storage.local import KeyConflict, LocalStore, SignatureInvalid


def __getattr__(name: str) -> Any:
    # boto3 takes a tenth of a second to import: only a service that uses s3 pays it.
    if name == "S3Store":
        from storage.s3 import S3Store

        return S3Store
    raise AttributeError(f"module 'storage' has no attribute {name!r}")


#: The Params an s3 store takes (S3Store's keyword arguments).
S3_PARAMS = frozenset({
    "bucket", "endpoint_url", "public_endpoint_url", "region", "access_key_id",
    "secret_access_key", "prefix", "create_bucket", "connect_timeout", "read_timeout",
    "max_attempts",
})  # fmt: skip


def open_store(
    name: str,
    type: str,
    params: dict[str, Any],
    *,
    data_dir: Path,
    public_base_url: str,
    internal_base_url: str | None,
    secret: bytes,
    hash_objects: bool = True,
) -> Store:
    """Build the store a configuration or a flow's ``Stores`` entry describes.

    ``local``: files under ``data_dir/objects/<name>``, URLs on ``public_base_url``
    (``internal_base_url`` for the service's own workers), signed with ``secret``;
    it takes no Params, and keeps each object's sha256 unless ``hash_objects`` is
    off. ``s3``: Params are S3Store's keyword arguments, ``bucket``
    required. Raises StoreError saying what to fix.
    """
    if type == "local":
        try:
            check_key(name)
            if "/" in name:
                raise InvalidKey(name)
        except InvalidKey as exc:
            raise StoreError(
                f"store {name!r}: a local store's name is a directory name: no '/', "
                "not '.' or '..', only letters, digits and . _ - + = @ , : ~"
            ) from exc
        if params:
            raise StoreError(
                f"store {name!r}: a local store takes no Params (got {sorted(params)})"
            )
        objects = Path(data_dir) / "objects"
        # The tenants' files: owner-only, also where an earlier version made it looser.
        objects.mkdir(mode=0o700, parents=True, exist_ok=True)
        if stat.S_IMODE(objects.stat().st_mode) & 0o077:
            # One we may not chmod stays as it is: the data directory above it is 0700.
            with contextlib.suppress(OSError):
                objects.chmod(0o700)
        return LocalStore(
            name,
            objects / name,
            public_base_url,
            secret,
            internal_base_url,
            hash_objects=hash_objects,
        )
    if type == "s3":
        if not isinstance(params.get("bucket"), str) or not params["bucket"].strip():
            raise StoreError(f"store {name!r}: s3 needs Params.bucket, the bucket's name")
        unknown = sorted(set(params) - S3_PARAMS)
        if unknown:
            raise StoreError(
                f"store {name!r}: unknown s3 Params {unknown}; known: {sorted(S3_PARAMS)}"
            )
        from storage.s3 import S3Store

        return S3Store(name, **params)
    raise StoreError(f"store {name!r}: unknown type {type!r}; use local or s3")


__all__ = [
    "S3_PARAMS",
    "InvalidKey",
    "KeyConflict",
    "LocalStore",
    "ObjectExists",
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
