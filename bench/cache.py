"""cache: what the result cache and retries save, and what hashing every stored byte costs.

- chain10 submitted a second time with the same input: every node reused, no container.
- a 1 GiB copy node on the local store with the cache on (every byte hashed as it is
  stored) against the same with ``cache.enabled: false``; NoCache, so both run it.
- chain10 whose last node fails, retried: against a fresh full run of it.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bytes import RUN_TIMEOUT as BYTES_TIMEOUT
from bench.bytes import make_input
from bench.service import BenchError, Service, chain_flow, copy_def, median, progress, ratio_row

LENGTH = 10
RUN_TIMEOUT = 120
#: The all-cached second run, submit to COMPLETE, in seconds at the most.
CACHED_TARGET = 0.050


def _run(
    service: Service, data: bytes, defs: list[dict[str, Any]], **extra: Any
) -> tuple[float, dict[str, Any]]:
    """Seconds from POST to the run's end (the upload included), and the run."""
    body = {"Flow": chain_flow(LENGTH), "NodeDefs": defs, **extra}
    began = time.perf_counter()
    response = service.http.post(f"{service.base}/api/v1/flow/test", json=body, timeout=30)
    if response.status_code != 200:
        raise BenchError(f"submit answered {response.status_code}: {response.text[:300]}")
    run = response.json()
    service.upload(run, data)
    done = service.wait(run["ID"], RUN_TIMEOUT)
    return time.perf_counter() - began, done


def _cached_chain(service: Service, rounds: int) -> dict[str, Any]:
    first: list[float] = []
    again: list[float] = []
    for number in range(rounds):
        data = f"cache round {number} {time.time_ns()}\n".encode()
        elapsed, done = _run(service, data, [copy_def()])
        if done["Status"] != "COMPLETE":
            raise BenchError(f"chain10 ended {done['Status']}:\n{service.diagnose(done['ID'])}")
        first.append(elapsed)
        service.settle()
        elapsed, done = _run(service, data, [copy_def()])
        hits = sum(1 for state in done["NodeState"].values() if state.get("Cached"))
        if done["Status"] != "COMPLETE" or hits != LENGTH:
            raise BenchError(f"the second chain10 reused {hits} of {LENGTH} nodes: {done}")
        again.append(elapsed)
        progress(
            f"cache round {number + 1}/{rounds}: first run {first[-1]:.3f} s, "
            f"the same again (all cached) {again[-1] * 1000:.1f} ms"
        )
    seconds = median(again)
    return {
        "name": "cache: chain10 submitted again, same input (all 10 nodes reused), "
        "submit to COMPLETE",
        "pipewell_s": [round(v, 4) for v in again],
        "baseline_s": [round(v, 3) for v in first],
        "pipewell": f"{seconds * 1000:.1f} ms (min {min(again) * 1000:.1f}, "
        f"max {max(again) * 1000:.1f})",
        "baseline": f"its first run: {median(first):.2f} s",
        "target": f"< {CACHED_TARGET * 1000:.0f} ms",
        "ok": seconds < CACHED_TARGET,
    }


def _retry_chain(service: Service, rounds: int) -> dict[str, Any]:
    """The last node fails (exit 1, no retry): the whole run, then its retry."""
    failing = {**copy_def("fail", "sh -c 'exit 1'"), "MaxAttempts": 1}
    flow_defs = [copy_def(), failing]
    fresh: list[float] = []
    retried: list[float] = []
    for number in range(rounds):
        data = f"retry round {number} {time.time_ns()}\n".encode()
        flow = chain_flow(LENGTH)
        flow["Nodes"][-1]["Uses"] = "bench/fail"
        body = {"Flow": flow, "NodeDefs": flow_defs}
        began = time.perf_counter()
        response = service.http.post(f"{service.base}/api/v1/flow/test", json=body, timeout=30)
        run = response.json()
        service.upload(run, data)
        done = service.wait(run["ID"], RUN_TIMEOUT)
        fresh.append(time.perf_counter() - began)
        if done["Status"] != "ERROR":
            raise BenchError(f"the failing chain ended {done['Status']}")
        service.settle()
        began = time.perf_counter()
        response = service.http.post(f"{service.base}/api/v1/flow/retry/{run['ID']}", timeout=30)
        if response.status_code != 200:
            raise BenchError(f"retry answered {response.status_code}: {response.text[:300]}")
        again = service.wait(response.json()["ID"], RUN_TIMEOUT)
        retried.append(time.perf_counter() - began)
        taken = sum(1 for state in again["NodeState"].values() if state.get("Cached"))
        if taken != LENGTH - 1:
            raise BenchError(f"the retry took over {taken} nodes, not {LENGTH - 1}")
        service.settle()
        progress(
            f"retry round {number + 1}/{rounds}: fresh run {fresh[-1]:.3f} s, "
            f"retry {retried[-1]:.3f} s"
        )
    return ratio_row(
        "retry: chain10 whose node 10 failed, retried (9 taken over, 1 run)",
        retried,
        fresh,
        baseline="a fresh full run of it",
        target=0.20,
    )


def _hashing(rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pipewell-bench-cache-") as tmp:
        source = make_input(Path(tmp))
        hashed: list[float] = []
        plain: list[float] = []
        with (
            Service({"cache": {"enabled": True}}, label="cache-hashed") as on,
            Service({"cache": {"enabled": False}}, label="cache-off") as off,
        ):
            for number in range(rounds):
                # Alternate which goes first, and start each on a clean page cache: the
                # disk's write-back of the gigabyte before is the largest noise here.
                pair = ((on, hashed), (off, plain))
                for service, times in pair if number % 2 == 0 else pair[::-1]:
                    os.sync()
                    began = time.perf_counter()
                    body = {
                        "Flow": chain_flow(1),
                        "NodeDefs": [copy_def(tier="c-small")],
                        "NoCache": True,  # run it each round: measure hashing, not reuse
                    }
                    response = service.http.post(
                        f"{service.base}/api/v1/flow/test", json=body, timeout=30
                    )
                    run = response.json()
                    service.upload(run, source)
                    done = service.wait(run["ID"], BYTES_TIMEOUT)
                    times.append(time.perf_counter() - began)
                    if done["Status"] != "COMPLETE":
                        raise BenchError(f"the 1 GiB copy ended {done['Status']}")
                    service.settle()
                progress(
                    f"hashing round {number + 1}/{rounds}: cache on {hashed[-1]:.2f} s, "
                    f"off {plain[-1]:.2f} s"
                )
    return ratio_row(
        "cache: 1 GiB copy node, local store, every byte hashed (cache on) vs not",
        hashed,
        plain,
        baseline="the same with cache.enabled: false",
        target=1.05,
    )


def run(quick: bool) -> list[dict[str, Any]]:
    rounds = 3 if quick else 5
    rows = []
    with Service({"cache": {"enabled": True}}, label="cache") as service:
        _run(service, b"warm-up\n", [copy_def()])  # not counted
        service.settle()
        rows.append(_cached_chain(service, rounds))
        rows.append(_retry_chain(service, rounds))
    rows.append(_hashing(2 if quick else 4))
    return rows
