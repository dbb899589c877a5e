#!/usr/bin/python3
"""Apply a jq filter to a JSON document; the result is one JSON document.

Node contract: INPUT_JSON (the document), OUTPUT_RESULT (where the result
goes), FLAG_FILTER (the jq program, default "."), FLAG_COLLECT ("true": the
filter's results, however many, become one array; default "false": the filter
must give exactly one result), FLAG_COMPACT ("true": one line; default
indented by 2), FLAG_TIME_LIMIT (seconds jq may run, default 60).

jq runs at most the time limit and may write at most OUTPUT_LIMIT bytes, so a
filter that loops (`repeat(.)`) fails instead of hanging. Exit 2 for a
bad flag or a filter that does not compile, 1 for an input that is not JSON,
a filter that fails at run time, or a result that is not one document.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_TIME_LIMIT = 60.0
MAX_TIME_LIMIT = 3600.0
OUTPUT_LIMIT = 256 * 1024 * 1024


class UsageError(Exception):
    """A flag, the environment or the filter is wrong: exit 2."""


class InputError(Exception):
    """The input or what the filter makes of it is wrong: exit 1."""


def boolean(name: str, default: bool) -> bool:
    text = os.environ.get(f"FLAG_{name}", "").strip().lower()
    if not text:
        return default
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise UsageError(f"{name.lower()} must be true or false, got {text!r}")


def time_limit() -> float:
    text = os.environ.get("FLAG_TIME_LIMIT", "").strip()
    if not text:
        return DEFAULT_TIME_LIMIT
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= MAX_TIME_LIMIT:
        raise UsageError(f"time_limit must be seconds in (0, {MAX_TIME_LIMIT:g}], got {text!r}")
    return seconds


def last_words(path: Path) -> str:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    return " ".join(line for line in lines if line)[-500:]


def jq(args: list[str], stdout: Path, workdir: Path, limit: float) -> None:
    """Run jq with bounded time and output; UsageError/InputError say what went wrong."""
    errors = workdir / "stderr"
    with open(stdout, "wb") as out, open(errors, "wb") as err:
        process = subprocess.Popen(["jq", *args], stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        deadline = time.monotonic() + limit
        while process.poll() is None:
            if time.monotonic() > deadline or stdout.stat().st_size > OUTPUT_LIMIT:
                process.kill()
                process.wait()
                what = (
                    f"ran over {limit:g} s"
                    if time.monotonic() > deadline
                    else f"wrote over {OUTPUT_LIMIT // (1024 * 1024)} MiB"
                )
                raise InputError(f"the filter {what} and was stopped (does it loop?)")
            time.sleep(0.02)
    if process.returncode == 0:
        return
    said = last_words(errors)
    if process.returncode == 3 or "compile error" in said:
        raise UsageError(f"the filter does not compile: {said}")
    if said.startswith("parse error") or "Cannot parse" in said:
        raise InputError(f"the input is not valid JSON: {said}")
    raise InputError(f"the filter failed (jq exit {process.returncode}): {said}")


def apply(
    source: Path, target: Path, program: str, collect: bool, compact: bool, limit: float
) -> str:
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        results = workdir / "results"
        # One compact line per result: counted without parsing them again.
        jq(["-c", program, str(source)], results, workdir, limit)
        with open(results, "rb") as stream:
            count = sum(1 for line in stream if line.strip())
        if collect:
            collected = workdir / "collected"
            with open(results, "rb") as stream, open(collected, "wb") as out:
                out.write(b"[")
                for index, line in enumerate(row for row in stream if row.strip()):
                    out.write((b"," if index else b"") + line.rstrip(b"\n"))
                out.write(b"]\n")
            results = collected
        elif count != 1:
            raise InputError(
                f"the filter gave {count} results, and the output is one JSON document:"
                " set collect=true to get them as an array, or wrap the filter in [ ]"
            )
        if compact:
            shutil.copyfile(results, target)
        else:
            jq(["--indent", "2", ".", str(results)], target, workdir, limit)
    return f"{count} result(s)" + (" collected into an array" if collect else "")


def main() -> int:
    try:
        source = os.environ.get("INPUT_JSON")
        target = os.environ.get("OUTPUT_RESULT")
        if not source or not target:
            raise UsageError("INPUT_JSON and OUTPUT_RESULT must be set (the node contract)")
        program = os.environ.get("FLAG_FILTER") or "."
        collect = boolean("COLLECT", False)
        compact = boolean("COMPACT", False)
        limit = time_limit()
        print(f"jq: {apply(Path(source), Path(target), program, collect, compact, limit)}")
    except UsageError as exc:
        print(f"jq: {exc}", file=sys.stderr)
        return 2
    except (InputError, OSError) as exc:
        print(f"jq: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
