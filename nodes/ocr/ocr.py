#!/usr/bin/python3
"""Read the text in an image with tesseract.

Node contract: INPUT_IMAGE (any image Pillow reads: PNG, JPEG, WebP, TIFF,
BMP, GIF), OUTPUT_TEXT (UTF-8), and flags: FLAG_LANG (tesseract languages
joined by "+", default eng; this image has eng), FLAG_PSM (page segmentation
mode 0-13, default 3: a page of text; 6 is one block, 7 one line),
FLAG_DPI (the scan's resolution when the image does not say, default 300),
FLAG_REQUIRE_TEXT ("true", the default: an image where nothing is read fails
the node; "false": it gives an empty text).

The image is turned upright (EXIF orientation) and made grey before tesseract
reads it, which is stopped after TIME_LIMIT seconds. Exit 2 for a bad flag or
a language that is not installed, 1 for an input that is not a readable
image or holds no text.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

TIME_LIMIT = 120.0
Image.MAX_IMAGE_PIXELS = 100_000_000
warnings.simplefilter("error", Image.DecompressionBombWarning)


class UsageError(Exception):
    """A flag or the environment is wrong: exit 2."""


class InputError(Exception):
    """The image cannot be read, or holds no text: exit 1."""


def flag(name: str, default: str) -> str:
    return os.environ.get(f"FLAG_{name}", "").strip() or default


def integer(name: str, default: str, low: int, high: int) -> int:
    text = flag(name, default)
    if not text.isdigit() or not low <= int(text) <= high:
        raise UsageError(f"{name.lower()} must be an integer from {low} to {high}, got {text!r}")
    return int(text)


def last_words(stderr: bytes) -> str:
    """A tool's last distinct lines, for an error message."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return " | ".join(dict.fromkeys(lines[-3:]))


def tesseract(args: list[str]) -> str:
    try:
        done = subprocess.run(
            ["tesseract", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=TIME_LIMIT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise InputError(f"tesseract took over {TIME_LIMIT:g} s and was stopped") from None
    if done.returncode != 0:
        said = last_words(done.stderr)
        raise InputError(f"tesseract failed (exit {done.returncode}): {said}")
    return done.stdout.decode("utf-8", errors="replace")


def languages(wanted: str) -> str:
    # A heading line ("List of available languages in ..."), then one name a line.
    installed = set(tesseract(["--list-langs"]).splitlines()[1:]) - {"osd"}
    missing = [lang for lang in wanted.split("+") if lang not in installed]
    if missing:
        raise UsageError(
            f"language {'+'.join(missing)!r} is not installed in this image"
            f" (installed: {', '.join(sorted(installed))})"
        )
    return wanted


def grey_copy(source: str, scratch: Path, dpi: int) -> tuple[Path, int]:
    """The image upright and grey as PNG, and the resolution to tell tesseract."""
    try:
        image = Image.open(source)
        image.load()
        known = image.info.get("dpi", (0, 0))[0]
        page = ImageOps.exif_transpose(image).convert("L")
    except FileNotFoundError:
        raise InputError(f"input {source} does not exist") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"input {source} is too large to decode: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"input {source} is not an image this node can read: {exc}") from None
    path = scratch / "page.png"
    page.save(path)
    return path, int(known) if known and known >= 70 else dpi


def main() -> int:
    try:
        source = os.environ.get("INPUT_IMAGE")
        target = os.environ.get("OUTPUT_TEXT")
        if not source or not target:
            raise UsageError("INPUT_IMAGE and OUTPUT_TEXT must be set (the node contract)")
        psm = integer("PSM", "3", 0, 13)
        dpi = integer("DPI", "300", 70, 2400)
        require = flag("REQUIRE_TEXT", "true").strip().lower()
        # The words every catalog node reads as booleans (Pipewell's validation takes them).
        if require not in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            raise UsageError(f"require_text must be true or false, got {require!r}")
        require_text = require in ("true", "yes", "1", "on")
        lang = languages(flag("LANG", "eng"))
        with tempfile.TemporaryDirectory() as scratch:
            page, resolution = grey_copy(source, Path(scratch), dpi)
            text = tesseract(
                [str(page), "stdout", "-l", lang, "--psm", str(psm), "--dpi", str(resolution)]
            )
        words = len(text.split())
        if words == 0 and require_text:
            raise InputError("no text was found in the image (set require_text=false to allow)")
        Path(target).write_text(text, encoding="utf-8")
    except UsageError as exc:
        print(f"ocr: {exc}", file=sys.stderr)
        return 2
    except (InputError, OSError) as exc:
        print(f"ocr: {exc}", file=sys.stderr)
        return 1
    print(f"ocr: {words} word(s) ({lang}, psm {psm}, {resolution} dpi)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
