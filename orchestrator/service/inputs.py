"""Files as the input of a saved flow's invocation, in the forms the dialects carry.

A JSON dialect cannot carry bytes as they are. Where a flow's entry edge takes a
file (its nodes do not take JSON), its input is one of:

- **base64**: ``{"base64": "…", "content_type": "application/zip", "name": "photos.zip"}``
  (``content_type`` and ``name`` optional), or a data URL
  ``"data:application/zip;base64,…"`` where a dialect carries strings (xpander's
  ``files``, Scade's node data).
- **a URL the service handed out** for an object of one of its own stores, in the
  caller's namespace (an output's ``url``, an artifact's presigned GET):
  ``{"url": "…"}`` or the URL as a string. The object is read from its store: the
  service never fetches a URL from elsewhere (it would make requests for anyone).
- **an uploaded file**: ``{"file_path": "…"}``, as Langflow's
  ``POST /api/v1/files/upload/{flow_id}`` answers it (a multipart upload).

Where the edge's nodes take JSON as well (an untyped input), a value is JSON
unless the dialect says it is a file (Langflow's tweaks and webhook body,
xpander's ``files``): a ``{"url": …}`` sent to such a flow stays JSON. Where
they do not, an object with a single field holding one of these forms
(Scade's ``{"source": "https://…"}``) or such a string is that file.
"""

from __future__ import annotations

import base64
import binascii
import re
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from orchestrator.mime import JSON, OCTET_STREAM, essence, is_valid_mime, matches

#: The fields of a file given as an object.
FILE_FIELDS = frozenset({"base64", "url", "file_path", "content_type", "name", "size"})
_SOURCES = ("base64", "url", "file_path")
_DATA_URL = re.compile(r"data:(?P<type>[^;,]*)(?P<params>(;[^;,]*)*?);base64,(?P<data>.*)", re.S)
#: Upload names keep letters, digits and . _ -; anything else becomes _.
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class FileForm:
    """A file as a request gave it, not yet read."""

    base64: str | None = None
    url: str | None = None
    file_path: str | None = None
    content_type: str | None = None
    name: str | None = None


def file_form(value: Any) -> FileForm | None:
    """The file ``value`` stands for, or None when it is not a file's shape."""
    if isinstance(value, str):
        match = _DATA_URL.fullmatch(value)
        if match:
            return FileForm(base64=match["data"], content_type=match["type"] or None)
        if value.startswith(("http://", "https://")):
            return FileForm(url=value)
        return None
    if not isinstance(value, dict) or not value:
        return None
    if set(value) <= FILE_FIELDS:
        given = [s for s in _SOURCES if s in value]
        if len(given) != 1 or not all(isinstance(value[k], str) for k in value if k != "size"):
            return None
        return FileForm(
            base64=value.get("base64"),
            url=value.get("url"),
            file_path=value.get("file_path"),
            content_type=value.get("content_type"),
            name=value.get("name"),
        )
    if len(value) == 1:
        [inner] = value.values()
        if isinstance(inner, str | dict):
            return file_form(inner)
    return None


def decode_base64(form: FileForm, where: str) -> bytes:
    """The bytes of a base64 file; ValueError saying what is wrong."""
    assert form.base64 is not None
    try:
        return base64.b64decode(re.sub(r"\s+", "", form.base64), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            f"{where}: 'base64' is not valid base64 (standard alphabet, = padding)"
        ) from None


def content_type_of(form: FileForm, where: str, fallback: str | None = None) -> str:
    """The file's declared type, else ``fallback``, else application/octet-stream."""
    if form.content_type:
        if not is_valid_mime(form.content_type):
            raise ValueError(
                f"{where}: content_type {form.content_type!r} is not a MIME type "
                "(write type/subtype, such as application/zip)"
            )
        return essence(form.content_type)
    return essence(fallback or OCTET_STREAM)


def takes_only_json(accepted: list[list[str] | None]) -> bool:
    """Whether every node reading an edge takes JSON and nothing but JSON-typed data."""
    return bool(accepted) and all(
        types is not None and all(essence(t) == JSON or essence(t).endswith("+json") for t in types)
        for types in accepted
    )


def takes_json(accepted: list[list[str] | None]) -> bool:
    return all(matches(JSON, types) for types in accepted)


def file_types(accepted: list[list[str] | None]) -> list[str]:
    """The types an edge's readers name, each once, in order."""
    return list(dict.fromkeys(essence(t) for types in accepted if types for t in types))


def describe(accepted: list[list[str] | None]) -> str:
    """What an edge's readers take, as a phrase ("application/zip", "image/*")."""
    return ", ".join(file_types(accepted)) or "any type"


def upload_name(name: str) -> str:
    """A client's file name made safe as the last segment of an object key."""
    cleaned = _UNSAFE_NAME.sub("_", Path(name).name).strip("._") or "file"
    return cleaned[:120]


async def spool(
    chunks: AsyncIterator[bytes],
    limit: int,
    directory: Path,
    run_blocking: Callable[..., Any],
) -> BinaryIO:
    """``chunks`` in a temporary file under ``directory`` (rewound), at most ``limit``
    bytes: ValueError past it. Writes run through ``run_blocking`` (off the loop)."""
    await run_blocking(partial(directory.mkdir, parents=True, exist_ok=True))
    spooled: BinaryIO = await run_blocking(
        partial(tempfile.TemporaryFile, prefix="upload-", dir=str(directory))
    )
    size = 0
    pending: list[bytes] = []
    pending_bytes = 0
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise ValueError(f"the file is over the limit of {limit} bytes")
            pending.append(chunk)
            pending_bytes += len(chunk)
            if pending_bytes >= 1 << 20:
                await run_blocking(spooled.write, b"".join(pending))
                pending, pending_bytes = [], 0
        if pending:
            await run_blocking(spooled.write, b"".join(pending))
        await run_blocking(spooled.seek, 0)
    except BaseException:
        spooled.close()
        raise
    return spooled


__all__ = [
    "FILE_FIELDS",
    "FileForm",
    "content_type_of",
    "decode_base64",
    "describe",
    "file_form",
    "file_types",
    "spool",
    "takes_json",
    "takes_only_json",
    "upload_name",
]
