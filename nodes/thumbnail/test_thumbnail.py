"""pipewell/thumbnail through the service: the catalog's NodeDef and image together."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from tests.catalog import refused_flags, run_node
from tests.samples import picture

pytestmark = pytest.mark.docker

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def near(pixel: tuple[int, ...], colour: tuple[int, int, int], within: int = 40) -> bool:
    return all(abs(a - b) <= within for a, b in zip(pixel[:3], colour, strict=True))


async def test_crop_fills_the_box_and_pad_shows_all_of_the_image(start_service):
    client = await start_service()
    source = picture((400, 200))  # white, a red disc in the middle, blue top-left corner
    crop, pad, default = await asyncio.gather(
        run_node(client, "pipewell/thumbnail", {"image": source}, ["thumbnail"],
                 flags={"width": "100", "height": "100", "format": "png"}),
        run_node(client, "pipewell/thumbnail", {"image": source}, ["thumbnail"],
                 flags={"width": "100", "height": "100", "mode": "pad", "format": "webp",
                        "background": "#00ff00", "quality": "95"}),
        run_node(client, "pipewell/thumbnail", {"image": source}, ["thumbnail"]),
    )  # fmt: skip
    for done in (crop, pad, default):
        assert done.status == "COMPLETE", done.error

    cropped = Image.open(io.BytesIO(crop.outputs["thumbnail"]))
    assert (cropped.format, cropped.size) == ("PNG", (100, 100))
    # The centre 200x200 of the picture: the disc fills the middle, no blue corner left.
    assert near(cropped.getpixel((50, 50)), RED)
    assert not near(cropped.getpixel((2, 2)), BLUE)

    padded = Image.open(io.BytesIO(pad.outputs["thumbnail"])).convert("RGB")
    assert (Image.open(io.BytesIO(pad.outputs["thumbnail"])).format, padded.size) == (
        "WEBP",
        (100, 100),
    )
    # 400x200 into 100x100: 100x50 in the middle, green bands above and below.
    assert near(padded.getpixel((50, 5)), GREEN) and near(padded.getpixel((50, 95)), GREEN)
    assert near(padded.getpixel((50, 50)), RED)
    assert near(padded.getpixel((3, 28)), BLUE)

    thumb = Image.open(io.BytesIO(default.outputs["thumbnail"]))
    assert (thumb.format, thumb.size) == ("JPEG", (256, 256))
    assert any("400x200 -> 256x256 (crop, JPEG)" in line for line in default.logs)


async def test_a_corrupt_image_and_a_bad_mode_fail_saying_why(start_service):
    client = await start_service()
    whole = picture((300, 200))
    corrupt, bad_mode = await asyncio.gather(
        # A PNG cut short: its signature passes the type check, its pixels are gone.
        run_node(client, "pipewell/thumbnail", {"image": whole[:200]}, ["thumbnail"]),
        run_node(client, "pipewell/thumbnail", {"image": whole}, ["thumbnail"],
                 flags={"mode": "stretch"}, unchecked_flags=True),
    )  # fmt: skip
    assert corrupt.status == "ERROR"
    assert "command exited with code 1: thumbnail: input /pipewell/in/image.png" in corrupt.error
    assert "is not an image this node can read" in corrupt.error
    assert bad_mode.status == "ERROR"
    assert bad_mode.error.endswith(
        "command exited with code 2: thumbnail: mode must be one of crop, pad, got 'stretch'"
    )
    # With the catalog's NodeDef the service refuses it before anything runs.
    [refusal] = await refused_flags(
        client, "pipewell/thumbnail", ["image"], ["thumbnail"], {"mode": "stretch"}
    )
    assert "'stretch', which is not one of the values it takes: 'crop', 'pad'" in refusal
