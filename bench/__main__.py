"""``make bench``: Pipewell against plain Docker, measured alternately in one process run.

    python -m bench [--quick] [--only NAME ...] [--transfer auto|mount|archive]

Each benchmark starts its own ``pipewell dev`` (fresh data directory, free port).
Prints a table, appends an entry to bench/results.json (``history``) and writes
the latest table to bench/RESULTS.md. Nothing here asserts on time: figures are
printed, with the targets they are meant to meet.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import service
from bench.service import BenchError, error_row, progress

HERE = Path(__file__).resolve().parent
BENCHMARKS = (
    "chain10", "fanout", "bytes", "control", "startup", "invoke", "scaleout", "bigrun", "maps",
    "cache", "soak",
)  # fmt: skip
COLUMNS = ("benchmark", "Pipewell", "baseline", "ratio median (min-max)", "target", "ok?")


def _ratio(row: dict[str, Any]) -> str:
    if "ratio_median" not in row:
        return ""
    return f"{row['ratio_median']:.2f} ({row['ratio_min']:.2f}-{row['ratio_max']:.2f})"


def _cells(row: dict[str, Any]) -> list[str]:
    ok = "-" if row.get("ok") is None else "yes" if row["ok"] else "NO"
    return [
        row["name"],
        row.get("pipewell", ""),
        row.get("baseline", ""),
        _ratio(row),
        row.get("target") or "-",
        ok,
    ]


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def plain(rows: list[dict[str, Any]]) -> str:
    table = [list(COLUMNS)] + [_cells(r) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    out = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in table
    ]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def machine() -> dict[str, Any]:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    docker = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(memory / 2**30, 1),
        "python": sys.version.split()[0],
        "docker": docker,
    }


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=HERE).stdout

    commit = git("rev-parse", "--short", "HEAD").strip()
    # Others edit the engine meanwhile: say when the measured tree is not the commit.
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "orchestrator", "storage")
    return commit + ("+dirty" if dirty.strip() else "")


def write_results(entry: dict[str, Any]) -> None:
    path = HERE / "results.json"
    history = json.loads(path.read_text())["history"] if path.exists() else []
    history.append(entry)
    path.write_text(json.dumps({"history": history}, indent=1, ensure_ascii=False) + "\n")
    errors = [f"- **{r['name']}**: {r['error']}" for r in entry["results"] if r.get("error")]
    m = entry["machine"]
    (HERE / "RESULTS.md").write_text(
        "# Benchmark results\n\n"
        f"Latest {'quick' if entry['quick'] else 'full'} run: commit {entry['commit']}, "
        f"{entry['timestamp']}, {m['nproc']} cores, {m['memory_gib']} GiB, Docker {m['docker']}, "
        f"executor.transfer {entry['transfer']}, {entry['seconds']:.0f} s in all.\n\n"
        f"{markdown(entry['results'])}\n\n"
        + ("Problems:\n\n" + "\n".join(errors) + "\n\n" if errors else "")
        + "Ratios are Pipewell's seconds over the baseline's, round by round (the rounds "
        "alternate Pipewell and its baseline in one process run); the median, min and max "
        "of those ratios are shown. Every run, with every figure, is appended to "
        "`bench/results.json`.\n\n"
        "## How to reproduce\n\n"
        "```sh\n"
        "make setup                      # venv, Docker, the pipewell/busybox image\n"
        "make bench                      # full run, about 12 minutes on 2 cores\n"
        "make bench ARGS=--quick         # fewer rounds and a smaller load, about 3 minutes\n"
        "make bench ARGS='--only chain10 bytes'\n"
        ".venv/bin/python -m bench --help\n"
        "```\n\n"
        "Each benchmark starts its own `pipewell dev` on a free port with a fresh data "
        "directory under the system temp directory (the s3 rows run against a moto server "
        "started for the purpose). Run it on an otherwise idle machine.\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller loads")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=BENCHMARKS,
        default=list(BENCHMARKS),
        metavar="NAME",
        help=f"run only these: {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--transfer",
        choices=["auto", "mount", "archive"],
        default="auto",
        help="executor.transfer of the services (archive: files through the Engine API)",
    )
    args = parser.parse_args()
    if args.transfer != "auto":
        service.BASE_CONFIG["executor"] = {"transfer": args.transfer}
    commit_before = git_commit()
    began = time.perf_counter()
    rows: list[dict[str, Any]] = []
    seconds: dict[str, float] = {}
    progress(f"bench: {', '.join(args.only)}{' (quick)' if args.quick else ''}")
    for name in args.only:
        progress(f"{name}: starting")
        started = time.perf_counter()
        module = importlib.import_module(f"bench.{name}")
        try:
            rows.extend(module.run(args.quick))
        except BenchError as exc:
            progress(f"{name}: FAILED: {exc}")
            rows.append(error_row(name, str(exc)))
        except Exception as exc:  # one broken benchmark must not lose the others' figures
            traceback.print_exc()
            rows.append(error_row(name, f"{type(exc).__name__}: {exc}"))
        seconds[name] = round(time.perf_counter() - started, 1)
        progress(f"{name}: done in {seconds[name]:.0f} s")
    elapsed = time.perf_counter() - began
    entry = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        # "+dirty": orchestrator/ or storage/ differed from the commit, before or after.
        "commit": max(commit_before, git_commit(), key=len),
        "quick": args.quick,
        "transfer": args.transfer,
        "seconds": round(elapsed, 1),
        "seconds_per_benchmark": seconds,
        "machine": machine(),
        "results": rows,
    }
    write_results(entry)
    print()
    print(plain(rows))
    print(f"\nbench: {elapsed:.0f} s in all; appended to bench/results.json, wrote RESULTS.md")
    return 1 if any(r.get("error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
