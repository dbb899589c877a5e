#!/usr/bin/python3
"""CSV to JSON: an array with one element per row.

Node contract: INPUT_CSV (UTF-8 text, a BOM allowed), OUTPUT_JSON, and flags:
FLAG_DELIMITER (one character, or comma, tab, semicolon, pipe; default ","),
FLAG_HEADER ("true", the default: the first row names the columns and each
row becomes an object; "false": each row becomes an array of strings),
FLAG_NUMBERS ("true": cells written as plain integers or decimals, such as
42, -7 or 3.25, become JSON numbers; "007" or "1e3" stay text; default
"false": every cell is a string).

Blank lines are skipped. A row with more or fewer cells than the header, a
header naming a column twice, bad quoting or text that is not UTF-8 fail
with the line number. Exit 2 for a bad flag, 1 for bad input.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

DELIMITERS = {"comma": ",", "tab": "\t", "\\t": "\t", "semicolon": ";", "pipe": "|"}
# Cells that are numbers as a person writes them; anything else (leading zeros,
# exponents, "+1", "NaN") is kept as text so that nothing is lost.
NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
# A field may be large (a text column), not unbounded.
FIELD_LIMIT = 16 * 1024 * 1024


class UsageError(Exception):
    """A flag or the environment is wrong: exit 2."""


class InputError(Exception):
    """The CSV cannot be read as asked: exit 1."""


def boolean(name: str, default: bool) -> bool:
    text = os.environ.get(f"FLAG_{name}", "").strip().lower()
    if not text:
        return default
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise UsageError(f"{name.lower()} must be true or false, got {text!r}")


def delimiter() -> str:
    text = os.environ.get("FLAG_DELIMITER", "")
    value = DELIMITERS.get(text.strip().lower(), text) if text else ","
    if len(value) != 1 or value in '\r\n"':
        raise UsageError(
            f"delimiter must be one character (not a quote or newline) or one of"
            f" {', '.join(DELIMITERS)}; got {text!r}"
        )
    return value


def cell(text: str, numbers: bool) -> Any:
    if numbers and NUMBER.fullmatch(text):
        return float(text) if "." in text else int(text)
    return text


def first_bad_line(path: str) -> int:
    """The number of the first line that is not UTF-8 (read again, in binary, line by line)."""
    with open(path, "rb") as stream:
        for number, line in enumerate(stream, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


def rows(stream: Any, sep: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of each non-blank row."""
    reader = csv.reader(stream, delimiter=sep, strict=True)
    try:
        for row in reader:
            if row:
                yield reader.line_num, row
    except csv.Error as exc:
        raise InputError(f"line {reader.line_num}: {exc}") from None
    except UnicodeDecodeError as exc:
        where = first_bad_line(stream.name)
        raise InputError(f"line {where} is not UTF-8 text ({exc.reason})") from None


def convert(source: str, target: str, sep: str, header: bool, numbers: bool) -> int:
    csv.field_size_limit(FIELD_LIMIT)
    count = 0
    with (
        open(source, encoding="utf-8-sig", newline="") as stream,
        open(target, "w", encoding="utf-8") as out,
    ):
        records = rows(stream, sep)
        names: list[str] | None = None
        if header:
            first = next(records, None)
            if first is None:
                raise InputError("the input has no header row (it is empty)")
            names = first[1]
            seen = {name for name in names if names.count(name) > 1}
            if seen:
                raise InputError(
                    f"line {first[0]}: the header names {', '.join(map(repr, sorted(seen)))}"
                    " more than once"
                )
        out.write("[")
        for line, row in records:
            if names is not None:
                if len(row) != len(names):
                    raise InputError(
                        f"line {line} has {len(row)} cell(s), the header has {len(names)}"
                    )
                value: Any = {
                    name: cell(text, numbers) for name, text in zip(names, row, strict=True)
                }
            else:
                value = [cell(text, numbers) for text in row]
            out.write(("," if count else "") + "\n  " + json.dumps(value, ensure_ascii=False))
            count += 1
        out.write("\n]\n" if count else "]\n")
    return count


def main() -> int:
    try:
        source = os.environ.get("INPUT_CSV")
        target = os.environ.get("OUTPUT_JSON")
        if not source or not target:
            raise UsageError("INPUT_CSV and OUTPUT_JSON must be set (the node contract)")
        sep = delimiter()
        count = convert(source, target, sep, boolean("HEADER", True), boolean("NUMBERS", False))
    except UsageError as exc:
        print(f"csv-to-json: {exc}", file=sys.stderr)
        return 2
    except (InputError, OSError) as exc:
        print(f"csv-to-json: {exc}", file=sys.stderr)
        return 1
    print(f"csv-to-json: {count} row(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
