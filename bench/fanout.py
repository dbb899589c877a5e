"""fanout: 16 independent 2-second nodes reading one upload, against 16 x 2 s in series
and against the ideal for the worker's capacity (slots and memory from its log)."""

from __future__ import annotations

import math
import os
import time
from typing import Any

from bench.service import (
    BenchError,
    Service,
    copy_def,
    fan_flow,
    median,
    progress,
    ratio_row,
)
from orchestrator.tiers import TIERS

WIDTH = 16
SECONDS = 2
TIER = "c-nano"
RUN_TIMEOUT = 120  # seconds; a round normally takes under 10


def capacity_model(service: Service) -> dict[str, Any]:
    """Containers the worker runs at once: its slots, and its memory over the tier's."""
    logged = service.capacity()
    if logged is not None:
        source = "service log line worker_started"
        slots, memory_mib = logged["slots"], logged["memory_mib"]
    else:  # the defaults: 4 x cores, 90 % of RAM
        source = "computed from the defaults (no worker_started line found)"
        slots = max(2, 4 * (os.cpu_count() or 1))
        memory_mib = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.9) >> 20
    tier_mib = TIERS[TIER].memory_mib
    parallel = min(slots, memory_mib // tier_mib)
    return {
        "source": source,
        "slots": slots,
        "memory_mib": memory_mib,
        "tier": TIER,
        "tier_memory_mib": tier_mib,
        "parallel": parallel,
        "bound_by": "slots" if slots <= memory_mib // tier_mib else "memory",
        "ideal_s": math.ceil(WIDTH / parallel) * SECONDS,
    }


def run(quick: bool) -> list[dict[str, Any]]:
    rounds = 2 if quick else 3
    flow = fan_flow(WIDTH)
    defs = [copy_def(exec_line=f"sh -c 'sleep {SECONDS}; cp ${{in}} ${{out}}'", tier=TIER)]
    ours: list[float] = []
    with Service(label="fanout") as service:
        model = capacity_model(service)
        progress(
            f"fanout: capacity model ({model['source']}): {model['slots']} slots, "
            f"{model['memory_mib']} MiB / {model['tier_memory_mib']} MiB per {TIER} container "
            f"-> {model['parallel']} at once (bound by {model['bound_by']}); "
            f"ideal ceil({WIDTH}/{model['parallel']}) x {SECONDS} s = {model['ideal_s']} s"
        )
        # Warm-up, not counted, as in chain10: one node, so the first container of the
        # process run is not measured (and the worker has seen this image once).
        warm_up = service.submit(fan_flow(1), defs)
        service.upload(warm_up, b"x")
        service.wait(warm_up["ID"], RUN_TIMEOUT)
        service.settle()
        for number in range(rounds):
            began = time.perf_counter()
            run = service.submit(flow, defs)
            service.upload(run, b"x")
            done = service.wait(run["ID"], RUN_TIMEOUT)
            ours.append(time.perf_counter() - began)
            if done["Status"] != "COMPLETE":
                raise BenchError(
                    f"fanout run {run['ID']} ended {done['Status']}:\n{service.diagnose(run['ID'])}"
                )
            service.settle()
            final = service.status(run["ID"])
            phases: dict[str, list[float]] = {}
            for state in final["NodeState"].values():
                for phase, seconds in state.get("Timings", {}).items():
                    phases.setdefault(phase, []).append(seconds)
            per_node = {phase: round(median(v), 3) for phase, v in phases.items()}
            progress(
                f"fanout round {number + 1}/{rounds}: {ours[-1]:.2f} s; "
                f"median seconds per node and phase: {per_node}"
            )
    serial = WIDTH * SECONDS
    return [
        ratio_row(
            f"fanout ({WIDTH} x {SECONDS} s nodes) vs serial",
            ours,
            [serial] * rounds,
            baseline=f"{WIDTH} x {SECONDS} s in series",
            target=None,
        ),
        ratio_row(
            f"fanout ({WIDTH} x {SECONDS} s nodes) vs capacity ideal",
            ours,
            [model["ideal_s"]] * rounds,
            baseline=f"ideal for {model['parallel']} at once",
            target=1.20,
            capacity_model=model,
            median_phase_s_per_node_last_run=per_node,
        ),
    ]
