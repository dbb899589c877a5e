"""MIME syntax, Type-list matching, sniffing of real bytes, and extensions."""

from __future__ import annotations

import gzip
import io
import json
import random
import struct
import zipfile
import zlib

import pytest

from orchestrator.mime import (
    SNIFF_BYTES,
    extension_for,
    intersects,
    is_valid_mime,
    matches,
    sniff,
)

# ------------------------------------------------------------------ bytes of real files


def png_bytes(width: int = 2, height: int = 2) -> bytes:
    """A complete, valid RGB PNG built by hand."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\xc8\x1e\x1e" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


# Start of a baseline JPEG: SOI, then an APP0 JFIF segment.
JPEG_HEAD = (
    b"\xff\xd8\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
)
GIF_HEAD = b"GIF89a" + struct.pack("<HH", 1, 1) + b"\x80\x00\x00"


def bmp_bytes() -> bytes:
    """A 1x1 24-bit BMP: file header, info header, one padded pixel row."""
    pixels = b"\x1e\x1e\xc8\x00"
    info = struct.pack("<IiiHHIIiiII", 40, 1, 1, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    size = 14 + len(info) + len(pixels)
    return b"BM" + struct.pack("<IHHI", size, 0, 0, 14 + len(info)) + info + pixels


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("hello.txt", "hello")
    return buffer.getvalue()


# ------------------------------------------------------------------ is_valid_mime


@pytest.mark.parametrize(
    "mime",
    [
        "image/png",
        "IMAGE/PNG",
        "image/*",
        "*/*",
        "image/svg+xml",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "text/plain; charset=utf-8",
        'text/plain;charset="utf-8"',
        "a/" + "b" * 127,
    ],
)
def test_valid_mime_types(mime):
    assert is_valid_mime(mime)


@pytest.mark.parametrize(
    "mime",
    [
        "",
        "image",
        "image/",
        "/png",
        "*/png",
        "image/png/x",
        "image/ png",
        "image/.png",
        "ima ge/png",
        "image/png; charset",
        "a/" + "b" * 128,
        "image/**",
    ],
)
def test_invalid_mime_types(mime):
    assert not is_valid_mime(mime)


# ------------------------------------------------------------------ matches / intersects


def test_matches():
    assert matches("image/png", None)
    assert matches("anything/at-all", ["*/*"])
    assert matches("image/png", ["image/*"])
    assert matches("image/png", ["video/mp4", "image/png"])
    assert matches("Image/PNG", ["image/png"])
    assert matches("text/plain; charset=utf-8", ["TEXT/plain"])
    assert matches("text/plain", ["text/plain;charset=utf-8"])
    assert not matches("image/png", ["image/jpeg"])
    assert not matches("video/mp4", ["image/*"])
    assert not matches("image/png", [])


def test_intersects():
    assert intersects(None, ["image/png"])
    assert intersects(["image/png"], None)
    assert intersects(None, None)
    assert intersects(["image/*"], ["image/png"])
    assert intersects(["image/png"], ["image/*"])
    assert intersects(["image/*"], ["image/*"])
    assert intersects(["*/*"], ["video/mp4"])
    assert intersects(["video/mp4", "image/PNG"], ["image/png; q=1"])
    assert not intersects(["image/*"], ["video/*"])
    assert not intersects(["image/png"], ["image/jpeg"])
    assert not intersects([], ["*/*"])


# ------------------------------------------------------------------ sniff


def test_sniff_images_from_magic_numbers():
    assert sniff(png_bytes()) == "image/png"
    assert sniff(JPEG_HEAD + b"\x00" * 64) == "image/jpeg"
    assert sniff(GIF_HEAD) == "image/gif"
    assert sniff(bmp_bytes()) == "image/bmp"


def test_sniff_archives():
    assert sniff(gzip.compress(b"hello" * 100)) == "application/gzip"
    assert sniff(zip_bytes()) == "application/zip"


def test_sniff_json_when_whole_file_parses():
    assert sniff(json.dumps({"a": [1, 2, 3]}).encode()) == "application/json"
    assert sniff(b"  \n[1, 2]\n") == "application/json"
    assert sniff("\ufeff{}".encode()) == "application/json"
    # Looks like JSON but the whole file does not parse: plain text.
    assert sniff(b"{not json at all") == "text/plain"


def test_sniff_json_prefix_only_needs_its_start():
    document = json.dumps([{"k": "v" * 50} for _ in range(500)]).encode()
    head = document[:SNIFF_BYTES]
    assert len(head) == SNIFF_BYTES  # a prefix: cannot parse, still JSON
    assert sniff(head) == "application/json"
    assert sniff(b'{"cut": "he', complete=False) == "application/json"
    assert sniff(b'{"cut": "he', complete=True) == "text/plain"


def test_sniff_text():
    assert sniff(b"hello world\n") == "text/plain"
    assert sniff("héllo wörld, ünïcode ✓\n".encode()) == "text/plain"
    assert sniff(b"a,b,c\n1,2,3\n") == "text/plain"
    assert sniff(b"\x1b[31mred\x1b[0m\n") == "text/plain"
    assert sniff(b"") == "text/plain"


def test_sniff_text_cut_inside_a_multibyte_character():
    text = ("x" + "€" * 3000).encode()
    head = text[:SNIFF_BYTES]
    assert head.endswith(b"\xe2")  # the first of the three bytes of "€"
    assert sniff(head) == "text/plain"
    assert sniff(b"x\xe2\x82", complete=False) == "text/plain"


def test_sniff_text_starting_like_a_weak_magic_number_stays_text():
    assert sniff(b"BMW and Audi sales report\n") == "text/plain"
    assert sniff(b"MZ is a postcode prefix\n") == "text/plain"
    assert sniff(b"ID3 tags explained\n") == "text/plain"


def test_sniff_svg():
    assert sniff(b'<svg xmlns="http://www.w3.org/2000/svg"/>') == "image/svg+xml"
    assert sniff(b'<?xml version="1.0"?>\n<svg width="1"></svg>') == "image/svg+xml"
    assert sniff(b'<?xml version="1.0"?>\n<note>hi</note>') == "text/plain"


def test_sniff_binary():
    noise = random.Random(20260303).randbytes(SNIFF_BYTES)
    assert sniff(noise) == "application/octet-stream"
    assert sniff(b"text with a \x00 NUL byte") == "application/octet-stream"
    assert sniff(b"\xff\xfe\xfd invalid utf-8") == "application/octet-stream"


# ------------------------------------------------------------------ extension_for


@pytest.mark.parametrize(
    ("mime", "extension"),
    [
        ("image/png", ".png"),
        ("image/jpeg", ".jpg"),
        ("IMAGE/JPEG", ".jpg"),
        ("application/json", ".json"),
        ("text/plain", ".txt"),
        ("text/plain; charset=utf-8", ".txt"),
        ("video/mp4", ".mp4"),
        ("image/svg+xml", ".svg"),
        ("image/webp", ".webp"),
        ("audio/mpeg", ".mp3"),
        ("application/gzip", ".gz"),
        ("application/pdf", ".pdf"),
        ("text/csv", ".csv"),
        ("application/msword", ".doc"),  # from the standard table
        ("image/*", ""),
        ("*/*", ""),
        ("application/octet-stream", ""),
        ("application/x-never-heard-of-it", ""),
        ("not a mime", ""),
    ],
)
def test_extension_for(mime, extension):
    assert extension_for(mime) == extension
