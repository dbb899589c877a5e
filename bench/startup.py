"""startup: ``pipewell dev`` from launch to its first /healthz 200, and how much of that
is importing the package."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from bench.service import ROOT, Service, median, progress


def _python(code: str, *flags: str) -> tuple[float, str]:
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *flags, "-c", code],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return time.perf_counter() - began, done.stderr


def _largest_imports(stderr: str, count: int = 6) -> dict[str, float]:
    """Seconds of ``python -X importtime`` self time summed per top-level package."""
    found: dict[str, float] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        own, _, name = line[len("import time:") :].split("|")
        package = name.strip().split(".")[0]
        found[package] = found.get(package, 0.0) + int(own) / 1e6
    ranked = sorted(found.items(), key=lambda item: -item[1])[:count]
    return {name: round(seconds, 3) for name, seconds in ranked}


#: Seconds from launch to the first /healthz 200.
TARGET_S = 0.30


def _compile_tree() -> None:
    """Bytecode for the tree, as any launch after the first has it.

    Python caches it on first import, unless PYTHONDONTWRITEBYTECODE is set (as on
    some CI machines): then every launch would compile the package again (~60 ms),
    which no installed service pays.
    """
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "orchestrator", "storage"],
        cwd=ROOT,
        check=True,
        timeout=120,
    )


def run(quick: bool) -> list[dict[str, Any]]:
    rounds = 3 if quick else 5
    _compile_tree()
    launches = []
    for number in range(rounds):
        service = Service(label="startup")
        try:
            launches.append(service.start())
        finally:
            service.stop()
        progress(f"startup round {number + 1}/{rounds}: /healthz after {launches[-1]:.3f} s")
    imports, bare = [], []
    for _ in range(rounds):
        imports.append(_python("import orchestrator.api.app")[0])
        bare.append(_python("pass")[0])
    import_s = median(imports) - median(bare)
    largest = _largest_imports(_python("import orchestrator.api.app", "-X", "importtime")[1])
    progress(
        f"startup: launch to /healthz {median(launches):.3f} s; importing orchestrator.api.app "
        f"{import_s:.3f} s over a bare interpreter ({median(bare):.3f} s); "
        f"self time by package: {largest}"
    )
    return [
        {
            "name": "startup: `pipewell dev` launch to /healthz 200",
            "pipewell": f"{median(launches):.2f} s (min {min(launches):.2f}, "
            f"max {max(launches):.2f})",
            "baseline": "",
            "target": f"< {TARGET_S:.2f} s",
            "ok": median(launches) < TARGET_S,
            "launch_to_healthz_s": [round(v, 3) for v in launches],
        },
        {
            "name": "startup: import orchestrator.api.app",
            "pipewell": f"{import_s:.2f} s",
            "baseline": f"`python -c pass`: {median(bare):.2f} s",
            "target": None,
            "ok": None,
            "import_s": round(import_s, 3),
            "python_bare_s": round(median(bare), 3),
            "import_self_s_by_package": largest,
        },
    ]
