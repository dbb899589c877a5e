#!/usr/bin/python3
"""A PDF's text, or one of its pages as a PNG, with poppler.

    pdf-text text   INPUT_PDF -> OUTPUT_TEXT  (UTF-8; pages separated by a form feed)
    pdf-text page   INPUT_PDF -> OUTPUT_PAGE  (PNG)

Flags (FLAG_<NAME>): text FIRST_PAGE and LAST_PAGE (default all pages),
LAYOUT ("true" keeps the physical layout in columns; default "false", reading
order); page PAGE (default 1) and DPI (default 150, at most 600; the image may
have at most MAX_PIXELS pixels).

A PDF whose pages hold no text (a scan) fails the text command with a hint:
render its pages with the page command and read them with pipewell/ocr. Each
poppler tool is stopped after TIME_LIMIT seconds. Exit 2 for a bad flag or an
unbound output, 1 for a file poppler cannot read, an encrypted one, or pages
that are not there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TIME_LIMIT = 120.0
MAX_PIXELS = 100_000_000


class UsageError(Exception):
    """A flag, the command or the environment is wrong: exit 2."""


class PdfError(Exception):
    """The PDF cannot be read as asked: exit 1."""


def integer(name: str, default: str, low: int, high: int) -> int | None:
    text = os.environ.get(f"FLAG_{name}", "").strip() or default
    if not text:
        return None
    if not text.isdigit() or not low <= int(text) <= high:
        raise UsageError(f"{name.lower()} must be an integer from {low} to {high}, got {text!r}")
    return int(text)


def output(name: str, mode: str) -> str:
    path = os.environ.get(f"OUTPUT_{name.upper()}")
    if not path:
        raise UsageError(f"the {mode} command writes the output {name!r}: bind it in the flow")
    return path


def last_words(stderr: bytes) -> str:
    """A tool's last distinct lines, for an error message."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return " | ".join(dict.fromkeys(lines[-3:]))


def poppler(argv: list[str]) -> str:
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIME_LIMIT, check=False
        )
    except subprocess.TimeoutExpired:
        raise PdfError(f"{argv[0]} took over {TIME_LIMIT:g} s and was stopped") from None
    said = last_words(done.stderr)
    if done.returncode != 0:
        raise PdfError(f"{argv[0]} cannot read the PDF: {said or f'exit {done.returncode}'}")
    return done.stdout.decode(errors="replace")


def info(path: str, page: int | None = None) -> dict[str, str]:
    """pdfinfo's fields (with one page's size when ``page`` is given)."""
    extra = ["-f", str(page), "-l", str(page)] if page else []
    fields = {}
    for line in poppler(["pdfinfo", *extra, path]).splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    if fields.get("Encrypted", "no").startswith("yes"):
        # Read anyway when poppler could (no user password); say so.
        print(f"pdf-text: the PDF is encrypted ({fields['Encrypted']})")
    return fields


def text(source: str) -> str:
    target = output("text", "text")
    pages = int(info(source).get("Pages", "0") or 0)
    first = integer("FIRST_PAGE", "1", 1, 1_000_000) or 1
    last = integer("LAST_PAGE", "", 1, 1_000_000) or pages
    if not 1 <= first <= last <= pages:
        raise PdfError(f"pages {first} to {last} asked for, the PDF has {pages}")
    layout = os.environ.get("FLAG_LAYOUT", "").strip().lower()
    # The words every catalog node reads as booleans (Pipewell's validation takes them).
    if layout not in ("", "true", "yes", "1", "on", "false", "no", "0", "off"):
        raise UsageError(f"layout must be true or false, got {layout!r}")
    argv = ["pdftotext", "-enc", "UTF-8", "-f", str(first), "-l", str(last)]
    keep_layout = layout in ("true", "yes", "1", "on")
    poppler(argv + (["-layout"] if keep_layout else []) + [source, target])
    words = len(Path(target).read_text(encoding="utf-8", errors="replace").split())
    if words == 0:
        raise PdfError(
            f"pages {first} to {last} hold no text layer (a scanned PDF?): render them with"
            " pipewell/pdf-text's page command and read them with pipewell/ocr"
        )
    return f"{words} word(s) from pages {first} to {last} of {pages}"


def page(source: str) -> str:
    target = output("page", "page")
    number = integer("PAGE", "1", 1, 1_000_000) or 1
    dpi = integer("DPI", "150", 10, 600) or 150
    pages = int(info(source).get("Pages", "0") or 0)
    if number > pages:
        raise PdfError(f"page {number} asked for, the PDF has {pages}")
    # pdfinfo -f N -l N says "Page    N size: 612 x 792 pts (letter)".
    line = info(source, number).get(f"Page {number:>4} size", "")
    size = re.search(r"([\d.]+) x ([\d.]+) pts", line)
    if size:
        pixels = float(size[1]) * float(size[2]) * (dpi / 72) ** 2
        if pixels > MAX_PIXELS:
            raise UsageError(f"page {number} at {dpi} dpi would be {pixels:.0f} pixels: lower dpi")
    with tempfile.TemporaryDirectory() as scratch:
        stem = str(Path(scratch) / "page")
        poppler(["pdftoppm", "-png", "-r", str(dpi), "-f", str(number), "-l", str(number),
                 "-singlefile", source, stem])  # fmt: skip
        shutil.copyfile(stem + ".png", target)
    return f"page {number} of {pages} at {dpi} dpi -> PNG"


MODES = {"text": text, "page": page}


def main(argv: list[str]) -> int:
    try:
        mode = argv[0] if argv else "text"
        if mode not in MODES or len(argv) > 1:
            raise UsageError(f"usage: pdf-text [{'|'.join(MODES)}], got {' '.join(argv)!r}")
        source = os.environ.get("INPUT_PDF")
        if not source:
            raise UsageError("INPUT_PDF must be set (the node contract)")
        print(f"pdf-text: {MODES[mode](source)}")
    except UsageError as exc:
        print(f"pdf-text: {exc}", file=sys.stderr)
        return 2
    except (PdfError, OSError) as exc:
        print(f"pdf-text: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
