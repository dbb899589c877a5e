#!/usr/bin/python3
"""Convert an image between PNG, JPEG, WebP, GIF and TIFF, upright and without metadata.

Node contract: INPUT_IMAGE, OUTPUT_CONVERTED, and flags: FLAG_FORMAT (png,
jpeg, webp, gif or tiff; default png), FLAG_QUALITY (1-100, JPEG and WebP;
default 90), FLAG_BACKGROUND (what transparent pixels become in a JPEG; a
colour name or #rrggbb, default white).

The EXIF orientation is applied to the pixels, then every piece of metadata
is left behind (EXIF, XMP, IPTC, comments, text chunks); only the colour
profile (ICC) is kept, since without it the colours would change. An
animation keeps its frames when the output can hold them (GIF, WebP, PNG,
TIFF), else gives its first. Exit 2 for a bad flag, 1 for an input that is
not a readable image.
"""

from __future__ import annotations

import os
import sys
import warnings

from PIL import Image, ImageColor, ImageOps, ImageSequence, UnidentifiedImageError

FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP", "gif": "GIF"}
FORMATS |= {"tiff": "TIFF", "tif": "TIFF"}
ANIMATED = ("GIF", "WEBP", "PNG", "TIFF")
# Pixels an input may have: larger ones are refused before they are decoded.
Image.MAX_IMAGE_PIXELS = 100_000_000
warnings.simplefilter("error", Image.DecompressionBombWarning)


class UsageError(Exception):
    """A flag or the environment is wrong: exit 2."""


class ImageError(Exception):
    """The input is not an image this node can read: exit 1."""


def flag(name: str, default: str) -> str:
    return os.environ.get(f"FLAG_{name}", "").strip() or default


def settings() -> tuple[str, int, tuple[int, int, int]]:
    fmt = flag("FORMAT", "png").lower()
    if fmt not in FORMATS:
        raise UsageError(f"format must be one of png, jpeg, webp, gif, tiff; got {fmt!r}")
    text = flag("QUALITY", "90")
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise UsageError(f"quality must be an integer from 1 to 100, got {text!r}")
    colour = flag("BACKGROUND", "white")
    try:
        background = ImageColor.getrgb(colour)[:3]
    except ValueError:
        raise UsageError(f"background must be a colour name or #rrggbb, got {colour!r}") from None
    return FORMATS[fmt], int(text), background  # type: ignore[return-value]


def frames_of(path: str, fmt: str) -> tuple[Image.Image, list[Image.Image], list[int]]:
    """The opened image, its frames (upright, fresh copies without metadata), their durations."""
    try:
        image = Image.open(path)
        image.load()
        if getattr(image, "n_frames", 1) > 1 and fmt in ANIMATED:
            frames, durations = [], []
            for frame in ImageSequence.Iterator(image):
                frames.append(frame.copy())
                durations.append(int(frame.info.get("duration", 100)))
        else:
            frames, durations = [ImageOps.exif_transpose(image)], []
    except FileNotFoundError:
        raise ImageError(f"input {path} does not exist") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"input {path} is too large to decode: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"input {path} is not an image this node can read: {exc}") from None
    clean = []
    for frame in frames:
        # A copy's info still holds EXIF, XMP and comments: keep none of it.
        pixels = frame.convert("RGBA") if frame.mode in ("P", "PA", "LA", "1") else frame.copy()
        pixels.info = {}
        clean.append(pixels)
    return image, clean, durations


def for_format(frame: Image.Image, fmt: str, background: tuple[int, int, int]) -> Image.Image:
    """The frame in a mode the format writes."""
    if fmt == "JPEG":
        if frame.mode in ("RGBA", "RGBa"):
            flat = Image.new("RGB", frame.size, background)
            flat.paste(frame, mask=frame.getchannel("A"))
            return flat
        return frame if frame.mode in ("RGB", "L", "CMYK") else frame.convert("RGB")
    if fmt in ("PNG", "WEBP", "GIF") and frame.mode not in ("RGB", "RGBA", "L"):
        return frame.convert("RGBA" if "A" in frame.mode else "RGB")
    return frame


def convert(
    source: str, target: str, fmt: str, quality: int, background: tuple[int, int, int]
) -> str:
    image, frames, durations = frames_of(source, fmt)
    frames = [for_format(frame, fmt, background) for frame in frames]
    options: dict[str, object] = {}
    if "icc_profile" in image.info:
        options["icc_profile"] = image.info["icc_profile"]
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = quality
    if len(frames) > 1:
        options.update(save_all=True, append_images=frames[1:], duration=durations)
        options["loop"] = image.info.get("loop", 0)
    try:
        frames[0].save(target, format=fmt, **options)
    except (OSError, ValueError) as exc:
        raise ImageError(f"cannot write {fmt}: {exc}") from None
    size = frames[0].size
    return f"{image.format} {size[0]}x{size[1]} -> {fmt} ({len(frames)} frame(s))"


def main() -> int:
    try:
        source = os.environ.get("INPUT_IMAGE")
        target = os.environ.get("OUTPUT_CONVERTED")
        if not source or not target:
            raise UsageError("INPUT_IMAGE and OUTPUT_CONVERTED must be set (the node contract)")
        fmt, quality, background = settings()
        print(f"convert-image: {convert(source, target, fmt, quality, background)}")
    except UsageError as exc:
        print(f"convert-image: {exc}", file=sys.stderr)
        return 2
    except ImageError as exc:
        print(f"convert-image: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
