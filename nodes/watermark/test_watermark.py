"""pipewell/watermark through the service: the catalog's NodeDef and image together."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image, ImageChops

from tests.catalog import run_node

pytestmark = pytest.mark.docker


def plain(size: tuple[int, int], fmt: str, colour: str = "white") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format=fmt)
    return out.getvalue()


def changed_box(before: bytes, after: bytes) -> tuple[int, int, int, int] | None:
    """The bounding box of the pixels that differ between two images."""
    a = Image.open(io.BytesIO(before)).convert("RGB")
    b = Image.open(io.BytesIO(after)).convert("RGB")
    return ImageChops.difference(a, b).point(lambda v: 255 if v > 24 else 0).getbbox()


async def test_text_or_a_mark_image_lands_where_asked_and_the_format_is_kept(start_service):
    client = await start_service()
    page = plain((400, 200), "PNG")
    photo = plain((400, 200), "JPEG")
    logo = plain((40, 40), "PNG", "blue")
    text, mark = await asyncio.gather(
        run_node(client, "pipewell/watermark", {"image": page}, ["watermarked"],
                 flags={"text": "© Pipewell", "opacity": "1"}),
        run_node(client, "pipewell/watermark", {"image": photo, "mark": logo}, ["watermarked"],
                 flags={"text": "ignored", "position": "top-left", "opacity": "1"}),
    )  # fmt: skip
    assert text.status == "COMPLETE", text.error
    assert mark.status == "COMPLETE", mark.error

    marked = Image.open(io.BytesIO(text.outputs["watermarked"]))
    assert (marked.format, marked.size) == ("PNG", (400, 200))
    box = changed_box(page, text.outputs["watermarked"])
    assert box is not None
    # A quarter of the width, in the bottom-right corner, 2% (4 px) from the edges.
    assert 290 <= box[0] and 90 <= box[2] - box[0] <= 106 and 150 <= box[1]
    assert box[2] <= 396 and box[3] <= 196

    stamped = Image.open(io.BytesIO(mark.outputs["watermarked"]))
    assert (stamped.format, stamped.size) == ("JPEG", (400, 200))
    assert changed_box(photo, mark.outputs["watermarked"]) == (4, 4, 104, 104)
    centre = stamped.convert("RGB").getpixel((54, 54))
    assert centre[2] > 200 and centre[0] < 40
    assert any("image mark 100x100 at top-left of 400x200 (JPEG)" in line for line in mark.logs)


async def test_nothing_to_overlay_and_a_corrupt_mark_fail_saying_why(start_service):
    client = await start_service()
    page = plain((100, 100), "PNG")
    nothing, corrupt = await asyncio.gather(
        run_node(client, "pipewell/watermark", {"image": page}, ["watermarked"]),
        run_node(client, "pipewell/watermark", {"image": page, "mark": page[:60]},
                 ["watermarked"]),
    )  # fmt: skip
    assert nothing.status == "ERROR"
    assert nothing.error.endswith(
        "code 2: watermark: nothing to overlay: bind the mark input or set the text flag"
    )
    assert corrupt.status == "ERROR"
    assert "code 1: watermark: the mark /pipewell/in/mark.png is not an image" in corrupt.error
