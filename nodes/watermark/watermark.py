#!/usr/bin/python3
"""Overlay a watermark on an image: a second image, or a line of text.

Node contract: INPUT_IMAGE, OUTPUT_WATERMARKED, INPUT_MARK (optional: when
it is bound, that image is the mark and FLAG_TEXT is not used), and flags:
FLAG_TEXT (the text, when there is no mark image), FLAG_POSITION (top-left,
top, top-right, left, center, right, bottom-left, bottom, bottom-right; the
default), FLAG_OPACITY (0 to 1, default 0.5), FLAG_SCALE (the mark's width as
a share of the image's, 0.01 to 1, default 0.25), FLAG_COLOR (the text's
colour, default white, drawn with a black outline).

The mark keeps its aspect ratio and sits a margin (2% of the image's shorter
side) away from the edges. The output has the input's format and size (an
animation gives its first frame). Exit 2 for bad flags or neither mark nor
text, 1 for an input that is not a readable image.
"""

from __future__ import annotations

import os
import sys
import warnings

from PIL import Image, ImageColor, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
POSITIONS = {
    "top-left": (0, 0), "top": (1, 0), "top-right": (2, 0),
    "left": (0, 1), "center": (1, 1), "right": (2, 1),
    "bottom-left": (0, 2), "bottom": (1, 2), "bottom-right": (2, 2),
}  # fmt: skip
# Pixels an input may have: larger ones are refused before they are decoded.
Image.MAX_IMAGE_PIXELS = 100_000_000
warnings.simplefilter("error", Image.DecompressionBombWarning)


class UsageError(Exception):
    """A flag or the environment is wrong: exit 2."""


class ImageError(Exception):
    """An input is not an image this node can read: exit 1."""


def flag(name: str, default: str) -> str:
    return os.environ.get(f"FLAG_{name}", "").strip() or default


def fraction(name: str, default: str, low: float) -> float:
    text = flag(name, default)
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not low <= value <= 1:
        raise UsageError(f"{name.lower()} must be a number from {low:g} to 1, got {text!r}")
    return value


def open_image(path: str, what: str) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
        return image
    except FileNotFoundError:
        raise ImageError(f"the {what} {path} does not exist") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"the {what} {path} is too large to decode: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"the {what} {path} is not an image this node can read: {exc}") from None


def text_mark(text: str, width: int, height: int, colour: str, opacity: float) -> Image.Image:
    """The text drawn on a transparent layer about ``width`` wide (at most ``height`` high)."""
    try:
        fill = ImageColor.getrgb(colour)[:3]
    except ValueError:
        raise UsageError(f"color must be a colour name or #rrggbb, got {colour!r}") from None
    measure = ImageDraw.Draw(Image.new("RGBA", (1, 1)))
    left, top, right, bottom = measure.textbbox((0, 0), text, font=ImageFont.truetype(FONT, 100))
    size = int(100 * min(width / max(1, right - left), height / max(1, bottom - top)))
    font = ImageFont.truetype(FONT, max(8, size))
    stroke = max(1, font.size // 20)
    left, top, right, bottom = measure.textbbox((0, 0), text, font=font, stroke_width=stroke)
    layer = Image.new("RGBA", (right - left, bottom - top), (0, 0, 0, 0))
    alpha = round(255 * opacity)
    ImageDraw.Draw(layer).text(
        (-left, -top), text, font=font, fill=(*fill, alpha),
        stroke_width=stroke, stroke_fill=(0, 0, 0, alpha),
    )  # fmt: skip
    return layer


def image_mark(path: str, width: int, height: int, opacity: float) -> Image.Image:
    mark = ImageOps.exif_transpose(open_image(path, "mark")).convert("RGBA")
    factor = min(width / mark.width, height / mark.height)
    size = (max(1, round(mark.width * factor)), max(1, round(mark.height * factor)))
    mark = mark.resize(size, Image.Resampling.LANCZOS)
    mark.putalpha(mark.getchannel("A").point(lambda a: round(a * opacity)))
    return mark


def place(box: tuple[int, int], mark: tuple[int, int], position: str) -> tuple[int, int]:
    column, row = POSITIONS[position]
    margin = round(min(box) * 0.02)
    x = (margin, (box[0] - mark[0]) // 2, box[0] - mark[0] - margin)[column]
    y = (margin, (box[1] - mark[1]) // 2, box[1] - mark[1] - margin)[row]
    return max(0, x), max(0, y)


def watermark(source: str, target: str, mark_path: str | None) -> str:
    text = os.environ.get("FLAG_TEXT", "").strip()
    if not mark_path and not text:
        raise UsageError("nothing to overlay: bind the mark input or set the text flag")
    position = flag("POSITION", "bottom-right").lower()
    if position not in POSITIONS:
        raise UsageError(f"position must be one of {', '.join(POSITIONS)}, got {position!r}")
    opacity = fraction("OPACITY", "0.5", 0)
    scale = fraction("SCALE", "0.25", 0.01)

    picture = open_image(source, "image")
    fmt = picture.format or "PNG"
    Image.init()
    if fmt.upper() not in Image.SAVE:
        raise ImageError(f"the image is {fmt}, which this node cannot write")
    base = ImageOps.exif_transpose(picture).convert("RGBA")
    width = max(1, round(base.width * scale))
    height = max(1, round(base.height * 0.9))
    if mark_path:
        layer = image_mark(mark_path, width, height, opacity)
    else:
        layer = text_mark(text, width, height, flag("COLOR", "white"), opacity)
    base.alpha_composite(layer, dest=place(base.size, layer.size, position))

    keeps_alpha = fmt != "JPEG" and (
        picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info
    )
    result = base if keeps_alpha else base.convert("RGB")
    options: dict[str, object] = {"quality": 90} if fmt in ("JPEG", "WEBP") else {}
    if "icc_profile" in picture.info:
        options["icc_profile"] = picture.info["icc_profile"]
    try:
        result.save(target, format=fmt, **options)
    except (OSError, ValueError) as exc:
        raise ImageError(f"cannot write the {fmt} result: {exc}") from None
    what = "image mark" if mark_path else f"text {text!r}"
    return (
        f"{what} {layer.width}x{layer.height} at {position} of {base.width}x{base.height} ({fmt})"
    )


def main() -> int:
    try:
        source = os.environ.get("INPUT_IMAGE")
        target = os.environ.get("OUTPUT_WATERMARKED")
        if not source or not target:
            raise UsageError("INPUT_IMAGE and OUTPUT_WATERMARKED must be set (the node contract)")
        print(f"watermark: {watermark(source, target, os.environ.get('INPUT_MARK'))}")
    except UsageError as exc:
        print(f"watermark: {exc}", file=sys.stderr)
        return 2
    except ImageError as exc:
        print(f"watermark: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
