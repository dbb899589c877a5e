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


# ------------------------------------------------------------ images: a collection
# Run on Docker under the node contract (nodes/conftest.py run_contract): the service
# does not gather collections into a node end to end yet.

SHEET = "pipewell/contact-sheet"


def test_a_collection_of_images_becomes_a_grid_in_item_name_order(run_contract):
    # Written in reverse; item-name order is colour order. Items are images whatever
    # their names (the engine checked each item's type): the last has no extension.
    images = {f"shots/{n:02d}.png": tile(c) for n, c in reversed(list(enumerate(COLOURS)))}
    images["shots/05"] = images.pop("shots/05.png")
    flags = {"columns": "3", "tile_width": "100", "gap": "0", "format": "png"}
    whole, first_four = (
        run_contract(SHEET, {"images": images}, ["sheet"], flags),
        run_contract(SHEET, {"images": images}, ["sheet"], {**flags, "count": "4"}),
    )
    assert whole.code == 0, whole.stderr
    assert first_four.code == 0, first_four.stderr

    sheet = Image.open(io.BytesIO(whole.outputs["sheet"]))
    assert (sheet.format, sheet.size) == ("PNG", (300, 100))  # 3 columns x 2 rows of 100x50
    centres = [(50 + 100 * (i % 3), 25 + 50 * (i // 3)) for i in range(6)]
    assert [sheet.convert("RGB").getpixel(xy) for xy in centres] == COLOURS
    assert whole.stdout.strip() == "contact-sheet: 6 tile(s) -> 300x100 PNG"

    four = Image.open(io.BytesIO(first_four.outputs["sheet"])).convert("RGB")
    assert four.size == (300, 100)  # 3 columns, 2 rows, the last two cells background
    assert [four.getpixel(xy) for xy in centres] == [*COLOURS[:4], (0, 0, 0), (0, 0, 0)]
    assert "6 images, the first 4 by name are used" in first_four.stdout

    # The default: JPEG tiles of 240 px, 4 px gaps; 100x50 images make 240x120 tiles.
    default = run_contract(SHEET, {"images": images}, ["sheet"])
    assert default.code == 0, default.stderr
    grid = Image.open(io.BytesIO(default.outputs["sheet"]))
    assert (grid.format, grid.size) == ("JPEG", (4 * 240 + 5 * 4, 2 * 120 + 3 * 4))


def test_a_collection_fails_saying_why_and_is_bound_one_way_or_the_other(
    run_contract, clip
):  # fmt: skip
    broken = run_contract(
        SHEET, {"images": {"a.png": tile(COLOURS[0]), "b.png": b"\x89PNG\r\n\x1a\n not"}},
        ["sheet"],
    )  # fmt: skip
    empty = run_contract(SHEET, {"images": {}}, ["sheet"])
    both = run_contract(SHEET, {"images": {"a.png": tile(COLOURS[0])}, "frames": clip}, ["sheet"])
    neither = run_contract(SHEET, {}, ["sheet"])
    assert (broken.code, empty.code, both.code, neither.code) == (1, 1, 2, 2)
    assert broken.stderr.startswith("contact-sheet: item 'b.png' is not an image this node")
    assert empty.stderr.strip() == "contact-sheet: the collection images holds no item"
    assert both.stderr.strip() == (
        "contact-sheet: bind either frames (a zip or a video) or the collection input images,"
        " not both"
    )
    assert neither.stderr.strip() == (
        "contact-sheet: nothing to lay out: bind frames (a zip or a video) or the collection"
        " input images"
    )
