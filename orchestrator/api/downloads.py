"""The headers of every response that carries stored bytes (artifacts, local-store GETs).

Whoever holds a WaitingURL chooses an input's bytes and its Content-Type. Sent
back from the service's own origin, an HTML or SVG page would run its scripts
as the service (its API, its cookies). So the browser is told three things:

- ``X-Content-Type-Options: nosniff``: believe the Content-Type, never guess a
  more dangerous one from the bytes.
- ``Content-Disposition: attachment`` unless the type is one a browser only
  ever shows passively (raster images, audio, video, plain text, CSV, JSON).
  This is an allow-list: HTML, XHTML, SVG, XML (XSLT can script), JavaScript,
  PDF (viewers run scripts), multipart (x-mixed-replace) and every type not
  known here are downloaded, never opened. A Content-Type a browser could read
  differently from us (several types, odd characters) is an attachment too.
- ``Content-Security-Policy: sandbox``: should a browser render it anyway, the
  page has no scripts and an origin of its own.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from orchestrator.mime import extension_for

OCTET_STREAM = "application/octet-stream"

_INLINE_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/bmp",
        "text/plain",
        "text/csv",
        "application/json",
    }
)
_INLINE_FAMILIES = ("audio/", "video/")
# One type/subtype of RFC 9110 token characters, then parameters; no comma, which
# would let a browser pick another type of a list than the one we looked at.
_ONE_TYPE = re.compile(r"^\s*([A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+)\s*(;[^,]*)?$")
_FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def shows_inline(content_type: str | None) -> bool:
    """Whether a browser may display bytes of this type in place (see the module doc)."""
    match = _ONE_TYPE.match(content_type or "")
    if match is None:
        return False
    essence = match.group(1).lower()
    return essence in _INLINE_TYPES or essence.startswith(_INLINE_FAMILIES)


def download_name(filename: str, content_type: str | None) -> str:
    """``filename`` made safe to quote, with the extension of ``content_type`` when it
    has none of its own (an edge ``csv`` of ``text/csv`` saves as ``csv.csv``).

    Reduced to letters, digits and ``. _ -``: the quoted value cannot be broken out of.
    """
    safe_name = _FILENAME_UNSAFE.sub("_", filename).lstrip(".") or "download"
    if not PurePosixPath(safe_name).suffix and _ONE_TYPE.match(content_type or ""):
        safe_name += extension_for(content_type or "")
    return safe_name


def download_headers(content_type: str | None, filename: str) -> dict[str, str]:
    """Content-Type, nosniff, Content-Disposition and CSP for stored bytes.

    ``filename`` (an edge name, a key's last segment) is named as ``download_name``
    says: a saved file opens in what fits its type.
    """
    safe_name = download_name(filename, content_type)
    disposition = "inline" if shows_inline(content_type) else "attachment"
    return {
        "Content-Type": content_type or OCTET_STREAM,
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f'{disposition}; filename="{safe_name}"',
        "Content-Security-Policy": "sandbox",
    }


__all__ = ["download_headers", "download_name", "shows_inline"]
