"""control: many one-node runs from concurrent clients (all complete? none lost? how fast
is POST?), then status reads under many concurrent pollers, the service's CPU per run, and
its memory: VmRSS after the load and after a second load as large (it must stay flat)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import aiohttp

from bench.service import Service, chain_flow, copy_def, median, percentile, progress

POLL_INTERVAL = 0.25  # seconds between one client's status reads of its run
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30)
#: Status reads under the pollers: p99 below this (ms), for the newest and the oldest run.
STATUS_P99_TARGET_MS = 50
#: The service's VmRSS after the second load may exceed that after the first by this much.
RSS_GROWTH_TARGET = 0.10


async def _runs(
    service: Service, runs: int, clients: int, budget: float
) -> tuple[dict[str, Any], str | None]:
    body = {"Flow": chain_flow(1), "NodeDefs": [copy_def()]}
    post: list[float] = []
    latency: list[float] = []
    final: dict[str, str] = {}  # run id → last status seen
    completed: list[str] = []  # run ids in the order they were seen COMPLETE
    failures: list[str] = []
    polls = 0
    todo = iter(range(runs))
    deadline = time.perf_counter() + budget

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal polls
        for _ in todo:
            if time.perf_counter() > deadline:
                return
            began = time.perf_counter()
            try:
                async with session.post(f"{service.base}/api/v1/flow/test", json=body) as r:
                    text = await r.text()
                    if r.status != 200:
                        failures.append(f"POST {r.status}: {text[:200]}")
                        continue
                    run = await r.json(content_type=None)
                post.append(time.perf_counter() - began)
                final[run["ID"]] = run["Status"]
                async with session.put(run["WaitingURLs"][0]["PutURL"], data=b"x") as r:
                    if r.status != 200:
                        failures.append(f"PUT {r.status}: {(await r.text())[:200]}")
                        continue
                while time.perf_counter() < deadline:
                    async with session.get(f"{service.base}/api/v1/flow/status/{run['ID']}") as r:
                        polls += 1
                        if r.status != 200:
                            failures.append(f"GET status {r.status}: {(await r.text())[:200]}")
                            break
                        status = (await r.json())["Status"]
                    final[run["ID"]] = status
                    if status in ("COMPLETE", "ERROR"):
                        latency.append(time.perf_counter() - began)
                        if status == "COMPLETE":
                            completed.append(run["ID"])
                        break
                    await asyncio.sleep(POLL_INTERVAL)
            except (aiohttp.ClientError, TimeoutError) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    async def reporter() -> None:
        while True:
            await asyncio.sleep(15)
            done = sum(1 for s in final.values() if s in ("COMPLETE", "ERROR"))
            progress(f"  control: {len(final)} submitted, {done} ended, {len(failures)} failed")

    cpu_before = service.cpu_seconds()
    client_before = sum(os.times()[:2])
    began = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=clients + 10)
    async with aiohttp.ClientSession(connector=connector, timeout=REQUEST_TIMEOUT) as session:
        ticker = asyncio.create_task(reporter())
        try:
            await asyncio.gather(*(client(session) for _ in range(clients)))
        finally:
            ticker.cancel()
    wall = time.perf_counter() - began
    cpu = service.cpu_seconds() - cpu_before
    client_cpu = sum(os.times()[:2]) - client_before
    complete = [i for i, s in final.items() if s == "COMPLETE"]
    errored = [i for i, s in final.items() if s == "ERROR"]
    unfinished = {i: s for i, s in final.items() if s not in ("COMPLETE", "ERROR")}
    figures = {
        "runs": runs,
        "clients": clients,
        "submitted": len(final),
        "complete": len(complete),
        "error": len(errored),
        "unfinished": len(unfinished),
        "lost": runs - len(complete) - len(errored),
        "request_failures": len(failures),
        "timed_out": time.perf_counter() > deadline,
        "wall_s": round(wall, 2),
        "runs_per_s": round(len(complete) / wall, 2),
        "post_p50_ms": round(median(post) * 1000, 1) if post else None,
        "post_p99_ms": round(percentile(post, 0.99) * 1000, 1) if post else None,
        "run_p50_s": round(median(latency), 2) if latency else None,
        "run_p99_s": round(percentile(latency, 0.99), 2) if latency else None,
        "status_reads_during_runs": polls,
        "service_cpu_s": round(cpu, 2),
        "service_cpu_ms_per_run": round(cpu / max(1, len(final)) * 1000, 1),
        "client_cpu_s": round(client_cpu, 2),
        "first_completed_run": completed[0] if completed else None,
        "last_completed_run": completed[-1] if completed else None,
    }
    problem = None
    if figures["lost"] or errored or failures:
        problem = (
            f"{figures['lost']} of {runs} runs did not complete within {budget:.0f} s "
            f"({len(errored)} ERROR, {len(unfinished)} unfinished, {len(failures)} request "
            f"failures{': ' + failures[0] if failures else ''})"
        )
        for run_id in (errored + list(unfinished))[:3]:
            problem += f"\n  run {run_id}:\n{service.diagnose(run_id)}"
    return figures, problem


async def _pollers(
    service: Service, run_id: str, pollers: int, seconds: float, prefix: str
) -> dict[str, Any]:
    url = f"{service.base}/api/v1/flow/status/{run_id}"
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def poller(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            try:
                async with session.get(url) as r:
                    await r.read()
                    ok = r.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if ok:
                latencies.append(time.perf_counter() - began)
            else:
                errors += 1

    cpu_before = service.cpu_seconds()
    began = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=pollers + 10)
    async with aiohttp.ClientSession(connector=connector, timeout=REQUEST_TIMEOUT) as session:
        await asyncio.gather(*(poller(session) for _ in range(pollers)))
    wall = time.perf_counter() - began
    cpu = service.cpu_seconds() - cpu_before
    return {
        f"{prefix}_run": run_id,
        f"{prefix}_pollers": pollers,
        f"{prefix}_seconds": round(wall, 1),
        f"{prefix}_requests": len(latencies),
        f"{prefix}_errors": errors,
        f"{prefix}_per_s": round(len(latencies) / wall),
        f"{prefix}_p50_ms": round(median(latencies) * 1000, 1) if latencies else None,
        f"{prefix}_p99_ms": round(percentile(latencies, 0.99) * 1000, 1) if latencies else None,
        f"{prefix}_service_cpu_us_per_request": round(cpu / max(1, len(latencies)) * 1e6),
    }


def run(quick: bool) -> list[dict[str, Any]]:
    if quick:
        runs, clients, pollers, seconds, budget = 200, 20, 50, 5, 120
    else:
        runs, clients, pollers, seconds, budget = 1000, 50, 200, 10, 360
    progress(f"control: {runs} one-node runs from {clients} clients (at most {budget} s)")
    with Service(label="control") as service:
        figures, problem = asyncio.run(_runs(service, runs, clients, budget))
        progress(
            f"control: {figures['complete']}/{runs} complete, {figures['lost']} lost, "
            f"{figures['wall_s']} s, POST p50 {figures['post_p50_ms']} ms "
            f"p99 {figures['post_p99_ms']} ms, service CPU {figures['service_cpu_ms_per_run']} "
            "ms per run"
        )
        if problem:
            progress(f"control: PROBLEM: {problem}")
        service.settle(30)
        figures["rss_after_load_mib"] = _rss_mib(service)
        progress(f"control: service VmRSS {figures['rss_after_load_mib']} MiB after {runs} runs")
        # The newest completed run is what a client polls; the oldest one may have left
        # the scheduler's memory (it keeps the latest finished runs) and come from SQLite.
        phases = [
            ("status", "last_completed_run", "the last run to complete"),
            ("status_oldest", "first_completed_run", "the first run to complete"),
        ]
        for prefix, key, label in phases:
            if not figures[key]:
                continue
            service.settle(30)
            progress(f"control: {pollers} pollers on {label} for {seconds} s")
            figures.update(asyncio.run(_pollers(service, figures[key], pollers, seconds, prefix)))
            progress(
                f"control: status p50 {figures[prefix + '_p50_ms']} ms, p99 "
                f"{figures[prefix + '_p99_ms']} ms, {figures[prefix + '_per_s']} requests/s, "
                f"{figures[prefix + '_service_cpu_us_per_request']} µs service CPU per request"
            )
        figures["rss_after_pollers_mib"] = _rss_mib(service)
        # The same load again: what the service keeps of ended runs must be bounded.
        progress(f"control: a second load of {runs} runs, for the service's memory")
        second, problem2 = asyncio.run(_runs(service, runs, clients, budget))
        figures["second_load"] = second
        if problem2:
            progress(f"control: PROBLEM in the second load: {problem2}")
            problem = f"{problem}\n{problem2}" if problem else problem2
        service.settle(30)
        figures["rss_after_second_load_mib"] = _rss_mib(service)
        growth = figures["rss_after_second_load_mib"] / figures["rss_after_load_mib"] - 1
        figures["rss_growth"] = round(growth, 3)
        progress(
            f"control: service VmRSS {figures['rss_after_second_load_mib']} MiB after "
            f"{2 * runs} runs ({growth:+.1%}; {figures['rss_after_pollers_mib']} MiB after "
            "the pollers)"
        )
    all_done = figures["complete"] == runs and figures["second_load"]["complete"] == runs
    rows = [
        {
            "name": f"control: {runs} one-node runs, {clients} clients",
            "pipewell": f"{figures['complete']}/{runs} complete, {figures['lost']} lost, "
            f"{figures['wall_s']:.0f} s ({figures['runs_per_s']} runs/s), "
            f"run p50 {figures['run_p50_s']} s; the second load "
            f"{figures['second_load']['complete']}/{runs} complete",
            "baseline": "",
            "target": "all complete, none lost",
            "ok": all_done,
            "figures": figures,
            **({"error": problem} if problem else {}),
        },
        {
            "name": "control: POST /api/v1/flow/test latency",
            "pipewell": f"p50 {figures['post_p50_ms']} ms, p99 {figures['post_p99_ms']} ms",
            "baseline": "",
            "target": None,
            "ok": None,
        },
    ]
    for prefix, label in (("status", "last"), ("status_oldest", "first")):
        if f"{prefix}_p50_ms" not in figures:
            continue
        rows.append(
            {
                "name": f"control: GET status of the {label} run to complete, "
                f"{pollers} concurrent pollers",
                "pipewell": f"p50 {figures[prefix + '_p50_ms']} ms, "
                f"p99 {figures[prefix + '_p99_ms']} ms, {figures[prefix + '_per_s']} requests/s, "
                f"{figures[prefix + '_service_cpu_us_per_request']} µs service CPU per request",
                "baseline": "",
                "target": f"p99 < {STATUS_P99_TARGET_MS} ms",
                "ok": figures[prefix + "_p99_ms"] is not None
                and figures[prefix + "_p99_ms"] < STATUS_P99_TARGET_MS,
            }
        )
    rows.append(
        {
            "name": f"control: service RSS after {runs} runs / after {2 * runs} runs",
            "pipewell": f"{figures['rss_after_load_mib']} MiB / "
            f"{figures['rss_after_second_load_mib']} MiB ({figures['rss_growth']:+.1%}; "
            f"{figures['rss_after_pollers_mib']} MiB after the pollers)",
            "baseline": "",
            "target": f"flat across the second {runs} (growth < {RSS_GROWTH_TARGET:.0%})",
            "ok": figures["rss_growth"] < RSS_GROWTH_TARGET,
        }
    )
    rows.append(
        {
            "name": "control: service CPU per run",
            "pipewell": f"{figures['service_cpu_ms_per_run']} ms "
            f"(incl. {figures['status_reads_during_runs']} status reads in all)",
            "baseline": "",
            "target": None,
            "ok": None,
        }
    )
    return rows


def _rss_mib(service: Service) -> float:
    return round(service.memory_kib("VmRSS") / 1024, 1)
