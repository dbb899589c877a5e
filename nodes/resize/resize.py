#!/usr/bin/python3
"""Resize an image to a given width, keeping its format.

The Pipewell node contract gives the container its input under
/pipewell/in/, an output path under /pipewell/out/ (possibly without an
extension, so the format comes from the input, never from the output path)
and the environment variables INPUT_<NAME>, OUTPUT_<NAME> and FLAG_<NAME>.

Run with no arguments, the paths and sizes come from those variables:
INPUT_IMAGE (or the only INPUT_* set), OUTPUT_RESIZED (or the only OUTPUT_*
set), FLAG_WIDTH (default 800) and FLAG_HEIGHT (optional). The same can be
given as arguments: --input P --output P --width N [--height N].

Without a height the aspect ratio is kept; with one the image is resized to
exactly width x height. Exit 2 for bad arguments, 1 for an input that cannot
be read or written as an image.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

DEFAULT_WIDTH = 800
# The largest side JPEG can hold; a bigger request is a mistake, not a wish.
MAX_SIDE = 65535
# Formats Pillow reads under another name than the one it should write.
SAVE_AS = {"MPO": "JPEG"}


class UsageError(Exception):
    """Bad arguments or environment: exit 2."""


class ImageError(Exception):
    """An input that is not a readable image, or an output that cannot be written: exit 1."""


def pick_env(prefix: str, preferred: str) -> str | None:
    """The value of ``preferred`` if set, else of the only variable starting with ``prefix``."""
    if os.environ.get(preferred):
        return os.environ[preferred]
    found = sorted(k for k, v in os.environ.items() if k.startswith(prefix) and v)
    if len(found) > 1:
        raise UsageError(
            f"several {prefix}* variables are set ({', '.join(found)}) and {preferred} is not;"
            f" set {preferred} or pass the path as an argument"
        )
    return os.environ[found[0]] if found else None


def side(value: str | None, name: str) -> int | None:
    if value is None or not value.strip():
        return None
    try:
        number = int(value.strip())
    except ValueError:
        raise UsageError(f"{name} must be a positive integer, got {value!r}") from None
    if not 0 < number <= MAX_SIDE:
        raise UsageError(f"{name} must be a positive integer up to {MAX_SIDE}, got {value!r}")
    return number


def parse(argv: list[str]) -> tuple[Path, Path, int, int | None]:
    parser = argparse.ArgumentParser(
        prog="resize", description="Resize an image to a width, keeping its format."
    )
    parser.add_argument("--input", help="input image (default: $INPUT_IMAGE or the only $INPUT_*)")
    parser.add_argument(
        "--output", help="output path (default: $OUTPUT_RESIZED or the only $OUTPUT_*)"
    )
    parser.add_argument("--width", help="width in pixels (default: $FLAG_WIDTH or 800)")
    parser.add_argument(
        "--height", help="height in pixels (default: $FLAG_HEIGHT; none keeps the aspect ratio)"
    )
    args = parser.parse_args(argv)

    source = args.input or pick_env("INPUT_", "INPUT_IMAGE")
    target = args.output or pick_env("OUTPUT_", "OUTPUT_RESIZED")
    if not source:
        raise UsageError("no input: pass --input or set INPUT_IMAGE")
    if not target:
        raise UsageError("no output: pass --output or set OUTPUT_RESIZED")
    width_text = args.width if args.width is not None else os.environ.get("FLAG_WIDTH")
    height_text = args.height if args.height is not None else os.environ.get("FLAG_HEIGHT")
    width = side(width_text, "width") or DEFAULT_WIDTH
    return Path(source), Path(target), width, side(height_text, "height")


def working_mode(frame: Image.Image) -> Image.Image:
    """A mode that resamples smoothly: palette and 1-bit images are resized as RGB(A)."""
    if frame.mode == "P":
        return frame.convert("RGBA" if "transparency" in frame.info else "RGB")
    if frame.mode == "1":
        return frame.convert("L")
    return frame


def resize(source: Path, target: Path, width: int, height: int | None) -> str:
    try:
        image = Image.open(source)
        image.load()
    except FileNotFoundError:
        raise ImageError(f"input {source} does not exist") from None
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ImageError(f"input {source} is not an image this node can read: {exc}") from None

    Image.init()  # registers every plugin's writer, not only the common ones
    fmt = SAVE_AS.get(image.format or "", image.format)
    if fmt is None or fmt.upper() not in Image.SAVE:
        raise ImageError(
            f"input {source} is {image.format or 'of no known format'},"
            " which this node cannot write"
        )

    if getattr(image, "n_frames", 1) > 1 and fmt.upper() in Image.SAVE_ALL:
        # Animations keep all their frames. (The iterator yields the same
        # object seeked to each frame: copy them.)
        frames_in = [frame.copy() for frame in ImageSequence.Iterator(image)]
    else:
        # The width asked for is the width as displayed, after EXIF rotation.
        frames_in = [ImageOps.exif_transpose(image)]
    old_w, old_h = frames_in[0].size
    new_h = height if height is not None else max(1, round(old_h * width / old_w))

    options = save_options(image, fmt)
    try:
        frames = [
            working_mode(frame).resize((width, new_h), Image.Resampling.LANCZOS)
            for frame in frames_in
        ]
        if fmt == "JPEG" and frames[0].mode not in ("RGB", "L", "CMYK"):
            frames[0] = frames[0].convert("RGB")
        if len(frames) > 1:
            options.update(save_all=True, append_images=frames[1:])
            durations = [frame.info.get("duration") for frame in frames_in]
            if None not in durations:
                options["duration"] = durations
        target.parent.mkdir(parents=True, exist_ok=True)
        frames[0].save(target, format=fmt, **options)
    except (OSError, ValueError) as exc:
        raise ImageError(f"cannot resize {source} into a {fmt} at {target}: {exc}") from None
    return f"resized {old_w}x{old_h} -> {width}x{new_h} ({fmt})"


def save_options(image: Image.Image, fmt: str) -> dict[str, object]:
    """Keep what describes the pixels (colour profile, DPI, loop count); good quality."""
    options: dict[str, object] = {
        key: image.info[key] for key in ("icc_profile", "dpi", "loop") if key in image.info
    }
    # A palette index means nothing once the image is RGB(A); a colour key still does.
    if "transparency" in image.info and image.mode not in ("P", "1"):
        options["transparency"] = image.info["transparency"]
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = 90
    return options


def main(argv: list[str] | None = None) -> int:
    try:
        source, target, width, height = parse(sys.argv[1:] if argv is None else argv)
        print(resize(source, target, width, height), flush=True)
    except UsageError as exc:
        print(f"resize: {exc}", file=sys.stderr)
        return 2
    except ImageError as exc:
        print(f"resize: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
