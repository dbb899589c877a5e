"""MIME types: syntax, matching against a NodeDef's ``Type`` list, sniffing, extensions.

A NodeDef input or output declares ``Type``: a list of MIME types, families
(``image/*``) or ``*/*``; ``None`` (no ``Type`` at all) means untyped, anything
goes. Comparisons are case-insensitive and ignore parameters (``; charset=…``).

Sniffing looks at a file's first bytes only (pass :data:`SNIFF_BYTES`): the
``filetype`` package's magic numbers first (images, video, audio, archives,
fonts, documents), then text rules (JSON, SVG, plain text), else
``application/octet-stream``.

This module is a leaf: pure functions, no I/O, nothing of ours imported.
"""

from __future__ import annotations

import codecs
import json
import mimetypes
import re

import filetype

#: How many leading bytes :func:`sniff` wants to see.
SNIFF_BYTES = 8192

OCTET_STREAM = "application/octet-stream"
TEXT_PLAIN = "text/plain"
JSON = "application/json"
SVG = "image/svg+xml"

# RFC 6838 §4.2: restricted-name = first char alphanumeric, then up to 126 of
# alphanumerics and ! # $ & - ^ _ . +
_RESTRICTED_NAME = r"[a-z0-9][a-z0-9!#$&\-^_.+]{0,126}"
_MEDIA_RANGE = re.compile(rf"^(?:\*/\*|{_RESTRICTED_NAME}/(?:\*|{_RESTRICTED_NAME}))$")
# A parameter: token "=" (token | quoted-string), RFC 2045 / RFC 9110.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9a-z]+"
_PARAMETER = re.compile(rf'^{_TOKEN}=(?:{_TOKEN}|"(?:[^"\\]|\\.)*")$')

# Matches of filetype whose magic number is two or three printable bytes
# ("BM", "MZ", "ID3"): a clean text file may start with them, so for these the
# text rules get the last word when the head is clean text.
_WEAK_MAGIC = frozenset({"image/bmp", "application/x-msdownload", "audio/mpeg"})

# C0 control characters that do not occur in text files (all but \t \n \v \f \r
# and ESC, which terminal output uses for colours).
_BINARY_CONTROLS = frozenset(chr(c) for c in range(32) if chr(c) not in "\t\n\v\f\r\x1b")

# Preferred extensions where the standard table has none or a less usual one.
_EXTENSIONS = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "image/bmp": ".bmp",
    "image/tiff": ".tif",
    "image/svg+xml": ".svg",
    "image/avif": ".avif",
    "image/heic": ".heic",
    "image/x-icon": ".ico",
    "image/vnd.microsoft.icon": ".ico",
    "application/json": ".json",
    "application/pdf": ".pdf",
    "application/zip": ".zip",
    "application/gzip": ".gz",
    "application/x-gzip": ".gz",
    "application/x-tar": ".tar",
    "application/x-bzip2": ".bz2",
    "application/x-xz": ".xz",
    "application/zstd": ".zst",
    "application/x-7z-compressed": ".7z",
    "application/wasm": ".wasm",
    "application/yaml": ".yaml",
    "application/x-yaml": ".yaml",
    "text/yaml": ".yaml",
    "application/xml": ".xml",
    "text/xml": ".xml",
    "text/plain": ".txt",
    "text/csv": ".csv",
    "text/markdown": ".md",
    "text/html": ".html",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "video/quicktime": ".mov",
    "video/x-matroska": ".mkv",
    "video/x-msvideo": ".avi",
    "audio/mpeg": ".mp3",
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/ogg": ".ogg",
    "audio/x-flac": ".flac",
    "audio/flac": ".flac",
    "audio/aac": ".aac",
    "audio/mp4": ".m4a",
    "font/woff": ".woff",
    "font/woff2": ".woff2",
    "font/ttf": ".ttf",
    "font/otf": ".otf",
    # "Some bytes": no extension says more than none.
    OCTET_STREAM: "",
}

# A private table built only from Python's defaults, so the answer does not
# depend on the machine's /etc/mime.types.
_STANDARD_TYPES = mimetypes.MimeTypes()


def essence(mime: str) -> str:
    """``type/subtype`` of ``mime``: parameters dropped, lower case, no spaces."""
    return mime.split(";", 1)[0].strip().lower()


def is_valid_mime(s: str) -> bool:
    """Whether ``s`` is ``type/subtype`` (RFC 6838 names), ``type/*`` or ``*/*``.

    Well-formed parameters (``text/plain; charset=utf-8``) are allowed and ignored.
    """
    if not isinstance(s, str):
        return False
    head, *params = s.split(";")
    if not _MEDIA_RANGE.match(head.strip().lower()):
        return False
    return all(_PARAMETER.match(p.strip().lower()) for p in params)


def _covers(pattern: str, actual: str) -> bool:
    """Whether media range ``pattern`` (essence) includes concrete-or-range ``actual``."""
    if pattern == "*/*" or pattern == actual:
        return True
    if pattern.endswith("/*"):
        return actual.split("/", 1)[0] == pattern[:-2] and actual != "*/*"
    return False


def matches(actual: str, accepted: list[str] | None) -> bool:
    """Whether a file of type ``actual`` satisfies a ``Type`` list.

    ``None`` is untyped and accepts anything; ``*/*`` accepts anything;
    ``image/*`` accepts any ``image/…``; otherwise the types must be equal.
    """
    if accepted is None:
        return True
    have = essence(actual)
    return any(_covers(essence(pattern), have) for pattern in accepted)


def intersects(a: list[str] | None, b: list[str] | None) -> bool:
    """Whether some type satisfies both ``Type`` lists (``None`` is anything).

    ``image/*`` and ``image/png`` intersect; ``image/*`` and ``video/*`` do not;
    an empty list intersects nothing.
    """
    if a is None or b is None:
        return True
    left = [essence(t) for t in a]
    right = [essence(t) for t in b]
    return any(_covers(x, y) or _covers(y, x) for x in left for y in right)


def _decode_text(head: bytes) -> str | None:
    """``head`` as text if it is clean UTF-8 (a multibyte char cut at the end is fine)."""
    try:
        # final=False keeps an incomplete trailing sequence aside instead of failing.
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return None
    if any(ch in _BINARY_CONTROLS for ch in text):
        return None
    return text.removeprefix("\ufeff")


def sniff(head: bytes, *, complete: bool | None = None) -> str:
    """The MIME type of a file from its first bytes.

    ``complete`` says whether ``head`` is the whole file; by default it is
    taken to be whole when shorter than :data:`SNIFF_BYTES`. A whole file is
    JSON only if it parses; a prefix only has to start with ``{`` or ``[``.
    An empty file is ``text/plain``.
    """
    head = bytes(head)
    if complete is None:
        complete = len(head) < SNIFF_BYTES
    text = _decode_text(head)
    kind = filetype.guess(head) if head else None
    if kind is not None and not (kind.mime in _WEAK_MAGIC and text is not None):
        return str(kind.mime)
    if text is None:
        return OCTET_STREAM
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        if not complete:
            return JSON
        try:
            json.loads(text)
        except ValueError:
            return TEXT_PLAIN
        return JSON
    lowered = stripped[:SNIFF_BYTES].lower()
    if lowered.startswith("<svg") or (lowered.startswith("<?xml") and "<svg" in lowered):
        return SVG
    return TEXT_PLAIN


def extension_for(mime: str) -> str:
    """A file extension with its dot (``image/png`` → ``.png``), ``""`` if none fits.

    Wildcards, malformed types and ``application/octet-stream`` have none.
    """
    key = essence(mime)
    if key in _EXTENSIONS:
        return _EXTENSIONS[key]
    if "*" in key or not is_valid_mime(key):
        return ""
    return _STANDARD_TYPES.guess_extension(key, strict=False) or ""


__all__ = [
    "JSON",
    "OCTET_STREAM",
    "SNIFF_BYTES",
    "SVG",
    "TEXT_PLAIN",
    "essence",
    "extension_for",
    "intersects",
    "is_valid_mime",
    "matches",
    "sniff",
]
