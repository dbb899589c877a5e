"""pipewell/pdf-text through the service: the catalog's NodeDef and image together.

The PDFs are written by hand (tests/samples.py), so their text layer is known.
"""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from tests.catalog import run_node
from tests.samples import pdf

pytestmark = pytest.mark.docker

REPORT = pdf(["Quarterly report (draft)\nRevenue grew by 12 percent", None, "Page three"])


async def test_text_of_all_or_some_pages_and_a_page_as_png(start_service):
    client = await start_service()
    whole, third, page = await asyncio.gather(
        run_node(client, "pipewell/pdf-text", {"pdf": REPORT}, ["text"], command="text"),
        run_node(client, "pipewell/pdf-text", {"pdf": REPORT}, ["text"], command="text",
                 flags={"first_page": "3", "layout": "yes"}),
        run_node(client, "pipewell/pdf-text", {"pdf": REPORT}, ["page"], command="page",
                 flags={"page": "2", "dpi": "36"}),
    )  # fmt: skip
    for done in (whole, third, page):
        assert done.status == "COMPLETE", done.error

    pages = whole.text("text").split("\f")
    assert pages[0].split("\n")[:2] == ["Quarterly report (draft)", "Revenue grew by 12 percent"]
    assert pages[1].strip() == "" and pages[2].strip() == "Page three"
    assert any("10 word(s) from pages 1 to 3 of 3" in line for line in whole.logs)
    assert third.text("text").strip("\f\n ") == "Page three"  # "yes" reads as true

    png = Image.open(io.BytesIO(page.outputs["page"]))
    assert (png.format, png.size) == ("PNG", (306, 396))  # US letter at 36 dpi
    # Page 2 holds a blue square, 100 pt from the left and 400 pt from the bottom.
    assert png.convert("RGB").getpixel((100, 146)) == (0, 0, 255)
    assert png.convert("RGB").getpixel((10, 10)) == (255, 255, 255)


async def test_a_scan_a_corrupt_pdf_and_a_missing_page_fail_saying_why(start_service):
    client = await start_service()
    scan, corrupt, missing = await asyncio.gather(
        run_node(client, "pipewell/pdf-text", {"pdf": pdf([None])}, ["text"], command="text"),
        run_node(client, "pipewell/pdf-text", {"pdf": b"%PDF-1.4\n" + bytes(500)}, ["text"],
                 command="text"),
        run_node(client, "pipewell/pdf-text", {"pdf": REPORT}, ["page"], command="page",
                 flags={"page": "4"}),
    )  # fmt: skip
    assert scan.status == "ERROR"
    assert "code 1: pdf-text: pages 1 to 1 hold no text layer (a scanned PDF?)" in scan.error
    assert "pipewell/ocr" in scan.error
    assert corrupt.status == "ERROR"
    assert "code 1: pdf-text: pdfinfo cannot read the PDF: Syntax Error" in corrupt.error
    assert missing.status == "ERROR"
    assert missing.error.endswith("code 1: pdf-text: page 4 asked for, the PDF has 3")
