#!/usr/bin/python3
"""JSON to CSV: an array of objects (or of arrays) becomes one row per element.

Node contract: INPUT_JSON, OUTPUT_CSV, and flags: FLAG_DELIMITER (one
character, or comma, tab, semicolon, pipe; default ","), FLAG_HEADER ("true",
the default: a first row of column names; "false": none), FLAG_COLUMNS
(comma-separated names: which keys of the objects become columns, in this
order; default every key met, in the order first met; for arrays of arrays,
the header's names).

Cells: strings as they are, numbers as JSON writes them, true/false, null as
an empty cell, objects and arrays as compact JSON. Lines end with \\n; cells are
quoted only when they must be. Exit 2 for a bad flag, 1 for input that is not
JSON or not an array of objects or of arrays.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from typing import Any

DELIMITERS = {"comma": ",", "tab": "\t", "\\t": "\t", "semicolon": ";", "pipe": "|"}


class UsageError(Exception):
    """A flag or the environment is wrong: exit 2."""


class InputError(Exception):
    """The JSON is not a table: exit 1."""


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


def text_of(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def json_kind(value: Any) -> str:
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return kinds.get(type(value), "a number")


def table(document: Any, columns: list[str] | None) -> tuple[list[str] | None, list[list[str]]]:
    """The header (None for arrays without named columns) and the rows, as text."""
    if not isinstance(document, list):
        raise InputError(
            f"the input is {json_kind(document)}, not an array of objects or of arrays"
        )
    if all(isinstance(item, dict) for item in document):
        names = columns or list(dict.fromkeys(key for item in document for key in item))
        return names, [[text_of(item.get(name)) for name in names] for item in document]
    if all(isinstance(item, list) for item in document):
        return columns, [[text_of(cell) for cell in item] for item in document]
    want = dict if isinstance(document[0], dict) else list
    first = next(i for i, item in enumerate(document) if not isinstance(item, want))
    raise InputError(
        f"element {first} of the array is {json_kind(document[first])}: every element"
        " must be an object, or every element an array"
    )


def main() -> int:
    try:
        source = os.environ.get("INPUT_JSON")
        target = os.environ.get("OUTPUT_CSV")
        if not source or not target:
            raise UsageError("INPUT_JSON and OUTPUT_CSV must be set (the node contract)")
        sep = delimiter()
        header = boolean("HEADER", True)
        listed = os.environ.get("FLAG_COLUMNS", "").strip()
        columns = [name.strip() for name in listed.split(",")] if listed else None
        try:
            with open(source, encoding="utf-8-sig") as stream:
                document = json.load(stream)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"the input is not valid JSON: {exc}") from None
        names, rows = table(document, columns)
        with open(target, "w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out, delimiter=sep, lineterminator="\n")
            if header and names:
                writer.writerow(names)
            writer.writerows(rows)
    except UsageError as exc:
        print(f"json-to-csv: {exc}", file=sys.stderr)
        return 2
    except (InputError, OSError) as exc:
        print(f"json-to-csv: {exc}", file=sys.stderr)
        return 1
    width = len(names) if names else max((len(row) for row in rows), default=0)
    print(f"json-to-csv: {len(rows)} row(s), {width} column(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
