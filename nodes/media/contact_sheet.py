#!/usr/bin/python3
"""Lay many images out on one grid image: a contact sheet.

Node contract: either INPUT_FRAMES (a zip of images, such as
pipewell/transcode's frames, or a video) or INPUT_IMAGES (a collection input:
a directory holding each item, every one an image, as a file under its item
name), never both; OUTPUT_SHEET; and flags: FLAG_COLUMNS (default 4),
FLAG_TILE_WIDTH (pixels, default 240; the tile height follows the first
image's aspect ratio), FLAG_COUNT (tiles at most, default 16: a video is
sampled at this many evenly spaced times; a zip or a collection gives its
first images by name), FLAG_GAP (pixels between tiles, default 4),
FLAG_BACKGROUND (default black), FLAG_FORMAT (jpeg or png; default jpeg),
FLAG_QUALITY (JPEG, default 85).

A zip is read with limits: at most MAX_ENTRIES entries, MAX_IMAGE_BYTES per
image and MAX_TOTAL_BYTES in all, both as declared and as actually
decompressed, and no entry more than MAX_RATIO times smaller compressed
(above 1 MiB). Entries that are not images by their name (.png, .jpg, .jpeg,
.webp, .gif, .bmp, .tif, .tiff), folders and hidden files are left out and
listed; an image that does not decode fails the node. A collection's items are
taken whatever their names (the engine checked each is an image), within the
same MAX_IMAGE_BYTES and MAX_TOTAL_BYTES. Exit 2 for a bad flag or for inputs
bound both ways or not at all, 1 for bad input.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image, ImageColor, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")
MAX_ENTRIES = 10_000
MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_TOTAL_BYTES = 512 * 1024 * 1024
MAX_RATIO = 200
MAX_SHEET_PIXELS = 100_000_000
TIME_LIMIT = 600.0
Image.MAX_IMAGE_PIXELS = 64_000_000
warnings.simplefilter("error", Image.DecompressionBombWarning)


class UsageError(Exception):
    """A flag or the environment is wrong: exit 2."""


class InputError(Exception):
    """The input cannot be laid out: exit 1."""


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


def decode(data: bytes, name: str, width: int) -> Image.Image:
    """The picture, upright, in RGB, already shrunk to the tile's width (memory stays small)."""
    try:
        image = Image.open(io.BytesIO(data))
        image.draft("RGB", (width, width))  # JPEG decodes at a fraction of its size
        image.load()
        image = ImageOps.exif_transpose(image).convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"{name} is too large to decode: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{name} is not an image this node can read: {exc}") from None
    image.thumbnail((width, 8 * width), Image.Resampling.LANCZOS)
    return image


def zip_images(path: str, count: int, tile_width: int) -> list[Image.Image]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"the input is not a readable zip: {exc}") from None
    with archive:
        entries = archive.infolist()
        if len(entries) > MAX_ENTRIES:
            raise InputError(f"the zip has {len(entries)} entries, more than {MAX_ENTRIES}")
        wanted, skipped = [], []
        for info in sorted(entries, key=lambda i: i.filename):
            name = PurePosixPath(info.filename)
            hidden = any(part.startswith(".") or part == "__MACOSX" for part in name.parts)
            if info.is_dir() or hidden or name.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append(info.filename)
            else:
                wanted.append(info)
        if skipped:
            print(f"contact-sheet: left out {len(skipped)} entr(ies): {', '.join(skipped[:10])}")
        if not wanted:
            raise InputError("the zip holds no image (by name: .png, .jpg, .webp, ...)")
        if len(wanted) > count:
            print(f"contact-sheet: {len(wanted)} images, the first {count} by name are used")
        wanted = wanted[:count]
        declared = sum(info.file_size for info in wanted)
        if declared > MAX_TOTAL_BYTES:
            raise InputError(f"the images would unpack to {declared} bytes, over {MAX_TOTAL_BYTES}")
        images, total = [], 0
        for info in wanted:
            data = read_entry(archive, info)
            total += len(data)
            if total > MAX_TOTAL_BYTES:
                raise InputError(f"the images unpack to over {MAX_TOTAL_BYTES} bytes")
            images.append(decode(data, f"zip entry {info.filename!r}", tile_width))
        return images


def collection_images(directory: str, count: int, tile_width: int) -> list[Image.Image]:
    """The first ``count`` items of the collection's directory by item name, decoded."""
    root = Path(directory)
    if not root.is_dir():
        raise InputError(f"the collection input images is not a directory: {directory}")
    items: list[tuple[str, Path]] = []
    pending = [root]
    while pending:
        with os.scandir(pending.pop()) as listing:
            for entry in listing:
                path = Path(entry.path)
                if entry.is_dir(follow_symlinks=False):
                    pending.append(path)
                elif entry.is_file(follow_symlinks=False):
                    items.append((path.relative_to(root).as_posix(), path))
                else:
                    name = path.relative_to(root).as_posix()
                    raise InputError(f"item {name!r} of images is not a regular file")
    if not items:
        raise InputError("the collection images holds no item")
    items.sort()
    if len(items) > count:
        print(f"contact-sheet: {len(items)} images, the first {count} by name are used")
    items = items[:count]
    sizes = {name: path.stat().st_size for name, path in items}
    for name, size in sizes.items():
        if size > MAX_IMAGE_BYTES:
            raise InputError(f"item {name!r} is {size} bytes, over {MAX_IMAGE_BYTES}")
    if sum(sizes.values()) > MAX_TOTAL_BYTES:
        raise InputError(
            f"the images add up to {sum(sizes.values())} bytes, over {MAX_TOTAL_BYTES}"
        )
    images = []
    for name, path in items:
        with open(path, "rb") as handle:
            data = handle.read(MAX_IMAGE_BYTES + 1)
        if len(data) > MAX_IMAGE_BYTES:
            raise InputError(f"item {name!r} is over {MAX_IMAGE_BYTES} bytes")
        images.append(decode(data, f"item {name!r}", tile_width))
    return images


def read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """The entry's bytes, refused when it claims or unpacks to too much."""
    name = info.filename
    if info.flag_bits & 0x1:
        raise InputError(f"zip entry {name!r} is encrypted")
    if info.file_size > MAX_IMAGE_BYTES:
        raise InputError(
            f"zip entry {name!r} declares {info.file_size} bytes, over {MAX_IMAGE_BYTES}"
        )
    if info.file_size > 1 << 20 and info.file_size > MAX_RATIO * max(1, info.compress_size):
        raise InputError(f"zip entry {name!r} is compressed over {MAX_RATIO}:1 (a zip bomb?)")
    try:
        with archive.open(info) as stream:
            data = stream.read(MAX_IMAGE_BYTES + 1)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as exc:
        raise InputError(f"zip entry {name!r} cannot be read: {exc}") from None
    except (NotImplementedError, RuntimeError) as exc:  # a compression zipfile lacks
        raise InputError(f"zip entry {name!r} cannot be unpacked here: {exc}") from None
    if len(data) > min(MAX_IMAGE_BYTES, info.file_size):
        raise InputError(f"zip entry {name!r} unpacks to more than it declares")
    return data


def last_words(stderr: bytes) -> str:
    """A tool's last distinct lines, for an error message."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return " | ".join(dict.fromkeys(lines[-3:]))


def run(argv: list[str]) -> str:
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIME_LIMIT
        )
    except subprocess.TimeoutExpired:
        raise InputError(f"{argv[0]} took over {TIME_LIMIT:g} s and was stopped") from None
    if done.returncode != 0:
        said = last_words(done.stderr)
        raise InputError(f"the input is neither a zip nor a video ffmpeg can read: {said}")
    return done.stdout.decode(errors="replace")


def video_frames(path: str, count: int, tile_width: int) -> list[Image.Image]:
    probe = json.loads(run(["ffprobe", "-v", "error", "-print_format", "json",
                            "-show_format", "-show_streams", path]) or "{}")  # fmt: skip
    if not any(s.get("codec_type") == "video" for s in probe.get("streams", [])):
        raise InputError("the input is a media file without a video stream")
    duration = float(probe.get("format", {}).get("duration") or 0)
    scale = f"scale={tile_width}:-2"
    # Evenly spaced: count frames over the whole duration (when it is known).
    filters = f"fps={count}/{duration:.6f},{scale}" if duration > 0 else scale
    with tempfile.TemporaryDirectory() as scratch:
        run(["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-i", path, "-map", "0:v:0",
             "-vf", filters, "-frames:v", str(count), str(Path(scratch) / "%05d.png")])  # fmt: skip
        frames = sorted(Path(scratch).glob("*.png"))
        return [decode(frame.read_bytes(), frame.name, tile_width) for frame in frames]


def sheet(
    images: list[Image.Image], columns: int, tile_width: int, gap: int, background: Any
) -> Image.Image:
    first = images[0]
    tile = (tile_width, max(1, round(tile_width * first.height / first.width)))
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    size = (columns * tile[0] + (columns + 1) * gap, rows * tile[1] + (rows + 1) * gap)
    if size[0] * size[1] > MAX_SHEET_PIXELS:
        raise UsageError(f"the sheet would be {size[0]}x{size[1]}: use fewer or smaller tiles")
    canvas = Image.new("RGB", size, background)
    for index, image in enumerate(images):
        fitted = ImageOps.contain(image, tile, Image.Resampling.LANCZOS)
        row, column = divmod(index, columns)
        x = gap + column * (tile[0] + gap) + (tile[0] - fitted.width) // 2
        y = gap + row * (tile[1] + gap) + (tile[1] - fitted.height) // 2
        canvas.paste(fitted, (x, y))
    return canvas


def main() -> int:
    try:
        source = os.environ.get("INPUT_FRAMES")
        collection = os.environ.get("INPUT_IMAGES")
        target = os.environ.get("OUTPUT_SHEET")
        if source and collection:
            raise UsageError(
                "bind either frames (a zip or a video) or the collection input images, not both"
            )
        if not source and not collection:
            raise UsageError(
                "nothing to lay out: bind frames (a zip or a video) or the collection input images"
            )
        if not target:
            raise UsageError("OUTPUT_SHEET must be set (the node contract): bind the output sheet")
        columns = integer("COLUMNS", 4, 1, 100)
        tile_width = integer("TILE_WIDTH", 240, 8, 4096)
        count = integer("COUNT", 16, 1, 1000)
        gap = integer("GAP", 4, 0, 200)
        fmt = flag("FORMAT", "jpeg").lower()
        if fmt not in ("jpeg", "jpg", "png"):
            raise UsageError(f"format must be jpeg or png, got {fmt!r}")
        try:
            background = ImageColor.getrgb(flag("BACKGROUND", "black"))[:3]
        except ValueError:
            raise UsageError("background must be a colour name or #rrggbb") from None
        quality = integer("QUALITY", 85, 1, 100)
        if collection:
            images = collection_images(collection, count, tile_width)
        elif zipfile.is_zipfile(source):
            images = zip_images(source, count, tile_width)
        else:
            images = video_frames(source, count, tile_width)
        if not images:
            raise InputError("no frame could be taken from the video")
        result = sheet(images, columns, tile_width, gap, background)
        if fmt == "png":
            result.save(target, format="PNG", optimize=True)
        else:
            result.save(target, format="JPEG", quality=quality)
    except UsageError as exc:
        print(f"contact-sheet: {exc}", file=sys.stderr)
        return 2
    except (InputError, OSError) as exc:
        print(f"contact-sheet: {exc}", file=sys.stderr)
        return 1
    print(f"contact-sheet: {len(images)} tile(s) -> {result.width}x{result.height} {fmt.upper()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
