"""pipewell/ocr through the service: the catalog's NodeDef and image together.

The "scan" is text drawn by Pillow at 64 px (tests/samples.py).
"""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from tests.catalog import run_node
from tests.samples import text_image

pytestmark = pytest.mark.docker


def blank() -> bytes:
    out = io.BytesIO()
    Image.new("L", (400, 200), 255).save(out, format="PNG")
    return out.getvalue()


async def test_the_text_of_a_scan_is_read(start_service):
    client = await start_service()
    scan = text_image(["PIPEWELL READS THIS", "Invoice 4711 paid"])
    done = await run_node(client, "pipewell/ocr", {"image": scan}, ["text"])
    assert done.status == "COMPLETE", done.error
    lines = [line.strip() for line in done.text("text").splitlines() if line.strip()]
    assert lines == ["PIPEWELL READS THIS", "Invoice 4711 paid"]
    assert any("ocr: 6 word(s) (eng, psm 3, 300 dpi)" in line for line in done.logs)


async def test_a_blank_page_a_corrupt_image_and_a_missing_language_fail_saying_why(
    start_service,
):
    client = await start_service()
    scan = text_image(["HELLO"])
    empty, corrupt, german, allowed = await asyncio.gather(
        run_node(client, "pipewell/ocr", {"image": blank()}, ["text"]),
        run_node(client, "pipewell/ocr", {"image": scan[:100]}, ["text"]),
        run_node(client, "pipewell/ocr", {"image": scan}, ["text"], flags={"lang": "deu"}),
        run_node(client, "pipewell/ocr", {"image": blank()}, ["text"],
                 flags={"require_text": "off"}),
    )  # fmt: skip
    assert empty.status == "ERROR"
    assert empty.error.endswith(
        "code 1: ocr: no text was found in the image (set require_text=false to allow)"
    )
    assert corrupt.status == "ERROR"
    assert "code 1: ocr: input /pipewell/in/image.png is not an image this node can read" in (
        corrupt.error
    )
    assert german.status == "ERROR"
    assert german.error.endswith(
        "code 2: ocr: language 'deu' is not installed in this image (installed: eng)"
    )
    assert allowed.status == "COMPLETE", allowed.error
    assert allowed.text("text").strip() == ""
