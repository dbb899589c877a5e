"""pipewell/convert-image through the service: the catalog's NodeDef and image together."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image, ImageDraw

from tests.catalog import refused_flags, run_node

pytestmark = pytest.mark.docker

ORIENTATION, MAKE, DESCRIPTION = 0x0112, 0x010F, 0x010E


def sideways_photo() -> bytes:
    """A 400x200 JPEG, red on its left half, that its EXIF says to turn 90° clockwise."""
    image = Image.new("RGB", (400, 200), "white")
    ImageDraw.Draw(image).rectangle((0, 0, 199, 199), fill="red")
    exif = Image.Exif()
    exif[ORIENTATION], exif[MAKE], exif[DESCRIPTION] = 6, "Camera Inc", "secret place"
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif.tobytes(), quality=95, comment=b"a comment")
    return out.getvalue()


def animation() -> bytes:
    frames = [Image.new("RGB", (60, 40), colour) for colour in ("red", "green", "blue")]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=80)
    return out.getvalue()


def translucent_png() -> bytes:
    image = Image.new("RGBA", (50, 50), (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle((0, 0, 24, 49), fill=(0, 0, 255, 255))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


async def test_orientation_is_applied_metadata_stripped_frames_and_alpha_handled(start_service):
    client = await start_service()
    upright, animated, flattened = await asyncio.gather(
        run_node(client, "pipewell/convert-image", {"image": sideways_photo()}, ["converted"]),
        run_node(client, "pipewell/convert-image", {"image": animation()}, ["converted"],
                 flags={"format": "webp"}),
        run_node(client, "pipewell/convert-image", {"image": translucent_png()}, ["converted"],
                 flags={"format": "jpeg", "quality": "95"}),
    )  # fmt: skip
    for done in (upright, animated, flattened):
        assert done.status == "COMPLETE", done.error

    png = Image.open(io.BytesIO(upright.outputs["converted"]))
    assert (png.format, png.size) == ("PNG", (200, 400))  # turned upright
    top, bottom = png.convert("RGB").getpixel((100, 100)), png.convert("RGB").getpixel((100, 300))
    assert top[0] > 240 and top[1] < 15 and min(bottom) > 240  # the red half is on top
    assert dict(png.getexif()) == {} and "exif" not in png.info
    data = upright.outputs["converted"]
    assert b"Camera Inc" not in data and b"secret place" not in data and b"a comment" not in data

    webp = Image.open(io.BytesIO(animated.outputs["converted"]))
    assert (webp.format, webp.size, webp.n_frames) == ("WEBP", (60, 40), 3)

    jpeg = Image.open(io.BytesIO(flattened.outputs["converted"]))
    assert (jpeg.format, jpeg.mode) == ("JPEG", "RGB")
    blue, white = jpeg.getpixel((10, 25)), jpeg.getpixel((40, 25))
    assert blue[2] > 200 and blue[0] < 50 and min(white) > 230  # transparency became white


async def test_a_corrupt_image_and_an_unknown_format_fail_saying_why(start_service):
    client = await start_service()
    corrupt, unknown = await asyncio.gather(
        run_node(client, "pipewell/convert-image", {"image": b"GIF89a" + bytes(40)},
                 ["converted"]),
        run_node(client, "pipewell/convert-image", {"image": animation()}, ["converted"],
                 flags={"format": "bmp"}, unchecked_flags=True),
    )  # fmt: skip
    assert corrupt.status == "ERROR"
    assert "code 1: convert-image: input /pipewell/in/image.gif is not an image" in corrupt.error
    assert unknown.status == "ERROR"
    assert "code 2: convert-image: format must be one of png, jpeg, webp, gif, tiff" in (
        unknown.error
    )
    # With the catalog's NodeDef the service refuses it before anything runs.
    [refusal] = await refused_flags(
        client, "pipewell/convert-image", ["image"], ["converted"], {"format": "bmp"}
    )
    assert "'bmp', which is not one of the values it takes: 'png', 'jpeg'" in refusal
