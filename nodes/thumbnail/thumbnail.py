#!/usr/bin/python3
"""Fit an image into a box of exactly width x height pixels.

Node contract: INPUT_IMAGE, OUTPUT_THUMBNAIL, and flags: FLAG_WIDTH and
FLAG_HEIGHT (the box, default 256 x 256), FLAG_MODE ("crop", the default:
cover the box and cut what overflows, centred; "pad": show the whole image and
fill the rest with FLAG_BACKGROUND), FLAG_FORMAT (jpeg, webp or png; default
jpeg), FLAG_QUALITY (1-100 for JPEG and WebP, default 85), FLAG_BACKGROUND
(a colour name or #rrggbb, default white; "transparent" for PNG and WebP).

The image is turned upright first (EXIF orientation), an animation gives its
first frame, and no metadata is copied. Smaller images are scaled up: the
output is always the box's size. Exit 2 for a bad flag, 1 for an input that
is not a readable image.
"""

from __future__ import annotations

import os
import sys
import warnings

from PIL import Image, ImageColor, ImageOps, UnidentifiedImageError

FORMATS = {"jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP", "png": "PNG"}
MAX_SIDE = 8192
# Pixels an input may have: larger ones are refused before they are decoded.
Image.MAX_IMAGE_PIXELS = 64_000_000
warnings.simplefilter("error", Image.DecompressionBombWarning)


class UsageError(Exception):
    """A flag or the environment is wrong: exit 2."""


class ImageError(Exception):
    """The input is not an image this node can read: exit 1."""


def flag(name: str, default: str) -> str:
    return os.environ.get(f"FLAG_{name}", "").strip() or default


def integer(name: str, default: int, low: int, high: int) -> int:
    text = flag(name, str(default))
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise UsageError(f"{name.lower()} must be an integer from {low} to {high}, got {text!r}")
    return value


def choice(name: str, default: str, choices: dict[str, str] | tuple[str, ...]) -> str:
    text = flag(name, default).lower()
    if text not in choices:
        raise UsageError(f"{name.lower()} must be one of {', '.join(choices)}, got {text!r}")
    return choices[text] if isinstance(choices, dict) else text


def colour(text: str, fmt: str) -> tuple[int, int, int, int]:
    if text.lower() == "transparent":
        if fmt == "JPEG":
            raise UsageError("background cannot be transparent for JPEG; use png or webp")
        return (0, 0, 0, 0)
    try:
        return ImageColor.getcolor(text, "RGBA")  # type: ignore[return-value]
    except ValueError:
        raise UsageError(f"background must be a colour name or #rrggbb, got {text!r}") from None


def open_image(path: str) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
        return ImageOps.exif_transpose(image)
    except FileNotFoundError:
        raise ImageError(f"input {path} does not exist") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"input {path} is too large to decode: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"input {path} is not an image this node can read: {exc}") from None


def main() -> int:
    try:
        source = os.environ.get("INPUT_IMAGE")
        target = os.environ.get("OUTPUT_THUMBNAIL")
        if not source or not target:
            raise UsageError("INPUT_IMAGE and OUTPUT_THUMBNAIL must be set (the node contract)")
        box = (integer("WIDTH", 256, 1, MAX_SIDE), integer("HEIGHT", 256, 1, MAX_SIDE))
        mode = choice("MODE", "crop", ("crop", "pad"))
        fmt = choice("FORMAT", "jpeg", FORMATS)
        quality = integer("QUALITY", 85, 1, 100)
        background = colour(flag("BACKGROUND", "white"), fmt)
        image = open_image(source)
        original = image.size
        # RGBA throughout: pads can be transparent and palettes resample badly.
        image = image.convert("RGBA")
        if mode == "crop":
            image = ImageOps.fit(image, box, Image.Resampling.LANCZOS)
        else:
            image = ImageOps.pad(image, box, Image.Resampling.LANCZOS, color=background)
        # JPEG has no alpha; an opaque result needs none either.
        if fmt == "JPEG" or image.getextrema()[3][0] == 255:
            flat = Image.new("RGB", box, background[:3])
            flat.paste(image, mask=image.getchannel("A"))
            image = flat
        options = {"quality": quality} if fmt in ("JPEG", "WEBP") else {"optimize": True}
        image.save(target, format=fmt, **options)
    except UsageError as exc:
        print(f"thumbnail: {exc}", file=sys.stderr)
        return 2
    except ImageError as exc:
        print(f"thumbnail: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"thumbnail: cannot write the thumbnail: {exc}", file=sys.stderr)
        return 1
    print(f"thumbnail: {original[0]}x{original[1]} -> {box[0]}x{box[1]} ({mode}, {fmt})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
