"""pipewell/contact-sheet through the service: the catalog's NodeDef and image together."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from tests.catalog import run_node
from tests.samples import zip_of

pytestmark = pytest.mark.docker

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]


def tile(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (100, 50), colour).save(out, format="PNG")
    return out.getvalue()


async def test_a_zip_of_images_and_a_video_become_grids(start_service, clip):
    client = await start_service()
    # Named so that name order is colour order; the text file is left out.
    images = {f"shots/{n:02d}.png": tile(c) for n, c in reversed(list(enumerate(COLOURS)))}
    archive = zip_of({"README.txt": b"not a picture", **images})
    from_zip, from_video = await asyncio.gather(
        run_node(client, "pipewell/contact-sheet", {"frames": archive}, ["sheet"],
                 flags={"columns": "3", "tile_width": "100", "gap": "0", "format": "png"}),
        run_node(client, "pipewell/contact-sheet", {"frames": clip}, ["sheet"],
                 flags={"columns": "2", "tile_width": "80", "count": "4"}),
    )  # fmt: skip
    assert from_zip.status == "COMPLETE", from_zip.error
    assert from_video.status == "COMPLETE", from_video.error

    sheet = Image.open(io.BytesIO(from_zip.outputs["sheet"]))
    assert (sheet.format, sheet.size) == ("PNG", (300, 100))  # 3 columns x 2 rows of 100x50
    centres = [(50 + 100 * (i % 3), 25 + 50 * (i // 3)) for i in range(6)]
    assert [sheet.convert("RGB").getpixel(xy) for xy in centres] == COLOURS
    assert any("left out 1 entr(ies): README.txt" in line for line in from_zip.logs)

    grid = Image.open(io.BytesIO(from_video.outputs["sheet"]))
    # 4 frames of 80x60 in 2 columns, 4 px gaps around and between.
    assert (grid.format, grid.size) == ("JPEG", (2 * 80 + 3 * 4, 2 * 60 + 3 * 4))
    assert any("4 tile(s) -> 172x132 JPEG" in line for line in from_video.logs)


async def test_a_broken_image_entry_and_a_zip_bomb_fail_saying_why(start_service):
    client = await start_service()
    broken = zip_of({"a.png": tile(COLOURS[0]), "b.png": b"\x89PNG\r\n\x1a\n not really"})
    # 8 MiB of zeros packs into a few KiB: over 200:1, refused before it is unpacked.
    bomb = zip_of({"big.png": bytes(8 << 20)})
    bad_entry, bombed = await asyncio.gather(
        run_node(client, "pipewell/contact-sheet", {"frames": broken}, ["sheet"]),
        run_node(client, "pipewell/contact-sheet", {"frames": bomb}, ["sheet"]),
    )
    assert bad_entry.status == "ERROR"
    assert "code 1: contact-sheet: zip entry 'b.png' is not an image" in bad_entry.error
    assert bombed.status == "ERROR"
    assert bombed.error.endswith(
        "code 1: contact-sheet: zip entry 'big.png' is compressed over 200:1 (a zip bomb?)"
    )
