"""bigrun: one tenant's 10,000-node fan-out beside another tenant's reads.

The service runs on Redis with ``bench.instant_worker`` as its one worker: the
attempts start no container (Docker's cost per container is what the other rows
measure; at its ~8 containers a second on 2 cores, 10,000 would take 20 minutes).
What is measured is the service's own cost of a big run: the submission, 10,000
dispatches, 10,000 results with their state writes and events, and whether the
rest of the service stays responsive meanwhile. A second tenant's one-node run is
read with ``GET /api/v1/flow/status/{id}`` and ``/healthz`` is asked, each 20 times
a second, from the upload that starts the fan-out until it ends.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import aiohttp

from bench.service import (  # noqa: I001
    BenchError,
    RSSSampler,
    Service,
    copy_def,
    fan_flow,
    instant_service,
    median,
    percentile,
    progress,
)

PROBE_INTERVAL = 0.05
STATUS_P99_TARGET_MS = 50
HEALTHZ_P99_TARGET_MS = 100
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=60)


async def _fan_out(service: Service, width: int, budget: float) -> dict[str, Any]:
    big = {"Flow": fan_flow(width), "NodeDefs": [copy_def()]}
    small = {"Flow": fan_flow(1), "NodeDefs": [copy_def()]}
    latency: dict[str, list[float]] = {"healthz": [], "status": []}
    slow: dict[str, int] = {"healthz": 0, "status": 0}
    slow_at: list[tuple[str, float, int]] = []
    began = time.perf_counter()  # the probes' clock: from the submission, then the upload
    async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session:

        async def call(method: str, url: str, **kwargs: Any) -> tuple[int, Any, float]:
            began = time.perf_counter()
            async with session.request(method, url, **kwargs) as answer:
                body = await answer.read()
                return answer.status, body, time.perf_counter() - began

        status, body, _ = await call("POST", f"{service.base}/api/v1/flow/test", json=small)
        other = _json(status, body, "the other tenant's run")
        status, body, _ = await call("PUT", other["WaitingURLs"][0]["PutURL"], data=b"x")
        probing = True

        async def probe(name: str, url: str) -> None:
            while probing:
                try:
                    code, _, seconds = await call("GET", url)
                except (aiohttp.ClientError, TimeoutError):
                    code, seconds = 0, REQUEST_TIMEOUT.total or 0
                latency[name].append(seconds)
                if seconds > 0.04:
                    slow_at.append(
                        (name, round(time.perf_counter() - began, 2), round(seconds * 1000))
                    )
                slow[name] += code != 200
                await asyncio.sleep(PROBE_INTERVAL)

        status_url = f"{service.base}/api/v1/flow/status/{other['ID']}"
        probes = [
            asyncio.create_task(probe("healthz", f"{service.base}/healthz")),
            asyncio.create_task(probe("status", status_url)),
        ]
        deadline = time.perf_counter() + budget
        try:
            # Probed from before the submission: checking and planning 10,000 nodes is
            # the service's work too.
            status, body, post_s = await call("POST", f"{service.base}/api/v1/flow/test", json=big)
            run = _json(status, body, f"the {width}-node run")
            began = time.perf_counter()
            await call("PUT", run["WaitingURLs"][0]["PutURL"], data=b"x")
            ended = None
            while time.perf_counter() < deadline:
                await asyncio.sleep(0.5)
                # The listing (a few hundred bytes), not the whole run: parsing 3 MB of
                # status in this process would stall the probes' own measurements.
                code, body, _ = await call("GET", f"{service.base}/api/v1/flow/runs?limit=2")
                listed = _json(code, body, "the run listing")
                ended = next(r["Status"] for r in listed["runs"] if r["ID"] == run["ID"])
                if ended in ("COMPLETE", "ERROR", "STOPPED"):
                    break
            wall = time.perf_counter() - began
        finally:
            probing = False
            await asyncio.gather(*probes)
        code, body, _ = await call("GET", f"{service.base}/api/v1/flow/status/{run['ID']}")
        final = _json(code, body, "the big run's status") if ended else None
    if final is None or final["Status"] != "COMPLETE":
        state = final and final["Status"]
        raise BenchError(f"the {width}-node run ended {state} (or not within {budget:.0f} s)")
    complete = sum(1 for node in final["NodeState"].values() if node["Status"] == "COMPLETE")
    return {
        "width": width,
        "post_s": round(post_s, 2),
        "wall_s": round(wall, 2),
        "nodes_per_s": round(complete / wall, 1),
        "status_p50_ms": round(median(latency["status"]) * 1000, 1),
        "status_p99_ms": round(percentile(latency["status"], 0.99) * 1000, 1),
        "status_max_ms": round(max(latency["status"]) * 1000, 1),
        "healthz_p50_ms": round(median(latency["healthz"]) * 1000, 1),
        "healthz_p99_ms": round(percentile(latency["healthz"], 0.99) * 1000, 1),
        "healthz_max_ms": round(max(latency["healthz"]) * 1000, 1),
        "probes": len(latency["status"]) + len(latency["healthz"]),
        "probe_failures": slow["status"] + slow["healthz"],
        "slow_probes": slow_at[:50],  # (probe, seconds in, ms): where the tail came from
    }


def _json(status: int, body: bytes, what: str) -> dict[str, Any]:
    import json

    if status != 200:
        raise BenchError(f"{what}: HTTP {status}: {body[:300]!r}")
    return json.loads(body)


def measure(width: int, budget: float) -> dict[str, Any]:
    with instant_service({}, label="bigrun") as service:
        cpu_before = service.cpu_seconds()
        with RSSSampler(service) as rss:
            figures = asyncio.run(_fan_out(service, width, budget))
        figures["service_cpu_s"] = round(service.cpu_seconds() - cpu_before, 2)
        figures["peak_rss_mib"] = round(rss.peak_kib / 1024, 1)
    return figures


def run(quick: bool) -> list[dict[str, Any]]:
    width = 2_000 if quick else 10_000
    progress(f"bigrun: a {width}-node fan-out, another tenant's reads beside it")
    figures = measure(width, budget=600)
    ok = (
        figures["status_p99_ms"] < STATUS_P99_TARGET_MS
        and figures["healthz_p99_ms"] < HEALTHZ_P99_TARGET_MS
        and not figures["probe_failures"]
    )
    return [
        {
            "name": f"bigrun: {width}-node fan-out (no containers: the service's own cost) "
            "with another tenant's status and /healthz read 20/s each beside it",
            "pipewell": f"complete in {figures['wall_s']} s ({figures['nodes_per_s']} nodes/s, "
            f"POST {figures['post_s']} s, service CPU {figures['service_cpu_s']} s, "
            f"peak RSS {figures['peak_rss_mib']} MiB); other tenant's status p50 "
            f"{figures['status_p50_ms']} ms, p99 {figures['status_p99_ms']} ms; /healthz p50 "
            f"{figures['healthz_p50_ms']} ms, p99 {figures['healthz_p99_ms']} ms",
            "baseline": "",
            "target": f"completes; status p99 < {STATUS_P99_TARGET_MS} ms, /healthz p99 < "
            f"{HEALTHZ_P99_TARGET_MS} ms",
            "ok": ok,
            **figures,
        }
    ]


if __name__ == "__main__":
    print(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 2_000, budget=600))
