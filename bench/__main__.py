"""``make bench``: Pipewell against raw Docker, side by side, in one process run.

Writes bench/results.json (a history: one entry per run) and bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import scenarios, service

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("chain10", "fanout", "bytes", "control", "startup")


def run(name: str, quick: bool) -> list[dict[str, Any]]:
    if name == "chain10":
        return scenarios.chain10(3 if quick else 5)
    if name == "fanout":
        return scenarios.fanout(1 if quick else 2)
    if name == "bytes":
        return scenarios.bytes_(1 if quick else 2)
    if name == "control":
        return scenarios.control(quick)
    return scenarios.startup(3 if quick else 5)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| benchmark | Pipewell (median) | baseline (median) | ratio median (min-max) "
        "| target | ok |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if "ratio_median" in r:
            ours = sorted(r["pipewell"])[len(r["pipewell"]) // 2]
            base = sorted(r["baseline"])[len(r["baseline"]) // 2]
            extra = f", peak RSS {r['peak_rss_mib']} MiB" if "peak_rss_mib" in r else ""
            lines.append(
                f"| {r['name']} | {ours:.2f} s{extra} | {base:.2f} s | {r['ratio_median']:.2f} "
                f"({r['ratio_min']:.2f}-{r['ratio_max']:.2f}) | "
                f"{'≤ ' + str(r['target']) if r['target'] else '-'} | "
                f"{'-' if r['ok'] is None else 'yes' if r['ok'] else 'NO'} |"
            )
        else:
            figures = ", ".join(f"{k} {v}" for k, v in r.items() if k not in ("name", "ok"))
            ok = "-" if r["ok"] is None else "yes" if r["ok"] else "NO"
            lines.append(f"| {r['name']} | {figures} | | | | {ok} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller loads")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument(
        "--transfer",
        choices=["auto", "mount", "archive"],
        default="auto",
        help="executor.transfer of the service (archive: the slower path "
        "through the Engine API, for before/after figures)",
    )
    args = parser.parse_args()
    service.BASE_CONFIG["executor"] = {"transfer": args.transfer}
    began = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for name in args.only:
        print(f"{name}:", flush=True)
        rows.extend(run(name, args.quick))
    elapsed = time.perf_counter() - began
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
    ).stdout.strip()
    entry = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit, "quick": args.quick, "seconds": round(elapsed, 1),
        "transfer": args.transfer,
        "machine": {"cpus": os.cpu_count(),
                    "memory_gib": round(os.sysconf("SC_PAGE_SIZE")
                                        * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)},
        "results": rows,
    }  # fmt: skip
    results = HERE / "results.json"
    history = json.loads(results.read_text())["history"] if results.exists() else []
    history.append(entry)
    results.write_text(json.dumps({"history": history}, indent=1) + "\n")
    text = table(rows)
    (HERE / "RESULTS.md").write_text(
        f"# Benchmark results\n\nCommit {commit}, {entry['timestamp']}, "
        f"{entry['machine']['cpus']} cores, {entry['machine']['memory_gib']} GiB, "
        f"{'quick' if args.quick else 'full'} run in {elapsed:.0f} s, "
        f"executor.transfer {args.transfer}.\n\n{text}\n\n"
        "Ratios are Pipewell's time over the baseline's, measured alternately in one run. "
        "Reproduce with `make bench` (or `make bench ARGS=--quick`); every run is appended "
        "to `bench/results.json`.\n"
    )
    print(text)
    print(f"bench: {elapsed:.0f} s; wrote bench/results.json and bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
