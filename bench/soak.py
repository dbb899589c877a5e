"""soak: the service over time and under more than it takes.

- retention: many one-node runs from 50 clients with a 60 s retention; the data
  directory, the database and the service's RSS are sampled throughout and must be
  flat after the first retention period (growth < 10% between the second quarter of
  the load and the last). On Redis with ``bench.instant_worker`` (no containers):
  what grows or not is the service's own.
- fairness: one tenant submits 2,000 one-node runs (honouring 429 Retry-After), the
  other 20, one after another, meanwhile; real containers on the local worker. Each
  small run's wait (its node's, for its turn and a worker) must be less than twice
  the rest of that run (its time from submission to its end, the service's clock,
  less the wait). A fair queue cannot make the wait shorter than the time until a
  busy slot frees, so its time alone is shown beside it, not compared.
- burst: 1,000 submissions at once past a small queue bound; only 200 and 429 (with
  Retry-After) come back, never a 5xx, and every run accepted completes.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench.service import (  # noqa: I001
    ROOT,
    BenchError,
    Service,
    chain_flow,
    copy_def,
    instant_service,
    median,
    progress,
)

TIMEOUT = aiohttp.ClientTimeout(total=60)
#: The node's Timings of the run a waiting ``_submit_and_finish`` saw end, by run.
_LAST_TIMINGS: dict[str, dict[str, float]] = {}
#: A node's phases before its attempt runs: waiting for its turn, and for a worker.
WAIT_PHASES = ("presign", "queue_wait")
#: The run's own time, the service's clock: from its submission to its end.
RUN_SECONDS = "run_seconds"
GROWTH_TARGET = 0.10
WAIT_TARGET = 2.0
ONE_NODE = {"Flow": chain_flow(1), "NodeDefs": [copy_def()]}


# ---------------------------------------------------------------- helpers


async def _submit_and_finish(
    session: aiohttp.ClientSession,
    base: str,
    headers: dict[str, str] | None = None,
    *,
    deadline: float,
    poll: float = 0.1,
    retry_refused: bool = True,
    wait: bool = True,
) -> tuple[str, float, int]:
    """One run through: POST (again after Retry-After while refused), PUT, poll to its
    end (unless not ``wait``: then its ID is returned for its status). Returns (its
    status, seconds from the accepted POST to its end, 429s met)."""
    refused = 0
    while True:
        async with session.post(f"{base}/api/v1/flow/test", json=ONE_NODE, headers=headers) as r:
            if r.status == 429 and retry_refused:
                refused += 1
                await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                continue
            if r.status != 200:
                raise BenchError(f"POST {r.status}: {(await r.text())[:300]}")
            run = await r.json()
        break
    began = time.perf_counter()
    async with session.put(run["WaitingURLs"][0]["PutURL"], data=b"x") as r:
        if r.status != 200:
            raise BenchError(f"PUT {r.status}: {(await r.text())[:300]}")
    if not wait:
        return run["ID"], 0.0, refused
    _LAST_TIMINGS.clear()
    while time.perf_counter() < deadline:
        async with session.get(f"{base}/api/v1/flow/status/{run['ID']}", headers=headers) as r:
            if r.status != 200:
                raise BenchError(f"GET status {r.status}: {(await r.text())[:300]}")
            current = await r.json()
        status = current["Status"]
        if status in ("COMPLETE", "ERROR", "STOPPED"):
            timings = next(iter(current["NodeState"].values()))["Timings"]
            took = _seconds_between(current["StartedAt"], current["FinishedAt"])
            _LAST_TIMINGS[run["ID"]] = {**timings, RUN_SECONDS: took}
            return status, time.perf_counter() - began, refused
        await asyncio.sleep(poll)
    raise BenchError(f"run {run['ID']} did not end in time")


def _seconds_between(started: str, finished: str) -> float:
    return (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()


def _key(service: Service, name: str) -> dict[str, str]:
    made = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "keys", "create", "--name", name,
         "--tenant", name, "--data-dir", str(service.tmp / "data")],
        capture_output=True, text=True, check=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    return {"Authorization": f"Bearer {made.stdout.strip().splitlines()[-1]}"}


def _bytes_under(path: Path) -> int:
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
            except OSError:
                pass
    return total


def _growth(samples: list[tuple[float, float]], start: float, end: float) -> float:
    """Mean of the last quarter of [start, end] over the mean of its second quarter, less 1."""
    quarter = (end - start) / 4
    second = [v for t, v in samples if start + quarter <= t < start + 2 * quarter]
    last = [v for t, v in samples if t >= start + 3 * quarter]
    if not second or not last:
        return float("nan")
    return (sum(last) / len(last)) / (sum(second) / len(second)) - 1


# ---------------------------------------------------------------- retention


async def _retention(service: Service, runs: int, clients: int, budget: float) -> dict[str, Any]:
    data = service.tmp / "data"
    database = data / "pipewell.sqlite3"
    samples: dict[str, list[tuple[float, float]]] = {"data": [], "db": [], "rss": []}
    done = {"COMPLETE": 0, "other": 0}
    failures: list[str] = []
    began = time.perf_counter()
    deadline = began + budget
    todo = iter(range(runs))

    async def sample() -> None:
        while True:
            now = time.perf_counter() - began
            samples["data"].append((now, await asyncio.to_thread(_bytes_under, data)))
            samples["db"].append((now, database.stat().st_size))
            samples["rss"].append((now, service.memory_kib() * 1024))
            await asyncio.sleep(2)

    async def client(session: aiohttp.ClientSession) -> None:
        for _ in todo:
            try:
                status, _, _ = await _submit_and_finish(session, service.base, deadline=deadline)
            except (BenchError, aiohttp.ClientError, TimeoutError) as exc:
                failures.append(str(exc))
                if time.perf_counter() > deadline:
                    return
                continue
            done["COMPLETE" if status == "COMPLETE" else "other"] += 1

    async def reporter() -> None:
        while True:
            await asyncio.sleep(30)
            mib = samples["data"][-1][1] / 2**20 if samples["data"] else 0
            progress(f"  soak: {sum(done.values())}/{runs} ended, data dir {mib:.1f} MiB")

    connector = aiohttp.TCPConnector(limit=clients + 10)
    async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as session:
        watchers = [asyncio.create_task(sample()), asyncio.create_task(reporter())]
        try:
            await asyncio.gather(*(client(session) for _ in range(clients)))
        finally:
            for watcher in watchers:
                watcher.cancel()
    end = time.perf_counter() - began
    first_period = service.config["retention"]["runs"]
    growth = {name: _growth(values, first_period, end) for name, values in samples.items()}
    return {
        "runs": runs,
        "complete": done["COMPLETE"],
        "not_complete": done["other"],
        "failures": len(failures),
        "first_failures": failures[:5],
        "wall_s": round(end, 1),
        "runs_per_s": round(done["COMPLETE"] / end, 1),
        "data_dir_mib": [
            round(v / 2**20, 1) for _, v in samples["data"][:: max(1, len(samples["data"]) // 12)]
        ],
        "growth_data_dir": round(growth["data"], 3),
        "growth_database": round(growth["db"], 3),
        "growth_rss": round(growth["rss"], 3),
        "final_data_dir_mib": round(samples["data"][-1][1] / 2**20, 1),
        "final_database_mib": round(samples["db"][-1][1] / 2**20, 1),
        "final_rss_mib": round(samples["rss"][-1][1] / 2**20, 1),
    }


def measure_retention(runs: int, retention: float, budget: float) -> dict[str, Any]:
    config = {
        "retention": {"runs": retention, "min_lifetime": 1, "sweep_every": 5},
        "quotas": {"running": None, "queued": None},
    }
    with instant_service(config, label="soak") as service:
        return asyncio.run(_retention(service, runs, 50, budget))


# ---------------------------------------------------------------- fairness


async def _unfinished(session: aiohttp.ClientSession, base: str, headers: dict[str, str]) -> int:
    """How many of the tenant's runs have not ended (GET /api/v1/workers, its own)."""
    async with session.get(f"{base}/api/v1/workers", headers=headers) as r:
        tenants = (await r.json())["tenants"]
    return tenants[0]["runs"] if tenants else 0


async def _fairness(service: Service, big_runs: int, small_runs: int) -> dict[str, Any]:
    big, small = _key(service, "big"), _key(service, "small")
    deadline = time.perf_counter() + 3600
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        alone = []
        for _ in range(5):
            await _submit_and_finish(session, service.base, small, deadline=deadline)
            alone.append(next(iter(_LAST_TIMINGS.values()))[RUN_SECONDS])

        def waited_and_rest() -> tuple[float, float]:
            """The small run just ended: (its node's wait for a worker, the rest of the
            run: its time from submission to its end, less that wait)."""
            timings = next(iter(_LAST_TIMINGS.values()))
            waited = sum(timings.get(phase, 0.0) for phase in WAIT_PHASES)
            return waited, timings[RUN_SECONDS] - waited

        todo = iter(range(big_runs))
        refusals = 0

        async def big_client() -> None:
            # Submits and uploads without waiting for its runs: a backlog, up to the
            # tenant's quota, then 429s, honoured.
            nonlocal refusals
            for _ in todo:
                _, _, refused = await _submit_and_finish(
                    session, service.base, big, deadline=deadline, wait=False
                )
                refusals += refused

        clients = [asyncio.create_task(big_client()) for _ in range(10)]
        await asyncio.sleep(10)  # the big tenant's backlog builds up
        waits, ratios, loaded = [], [], []
        for _ in range(small_runs):
            await _submit_and_finish(session, service.base, small, deadline=deadline)
            waited, rest = waited_and_rest()
            waits.append(waited)
            ratios.append(waited / rest)
            loaded.append(waited + rest)
        big_left = await _unfinished(session, service.base, big)
        await asyncio.gather(*clients)
        while await _unfinished(session, service.base, big):
            if time.perf_counter() > deadline:
                raise BenchError("the big tenant's runs did not all end")
            await asyncio.sleep(2)
    run_time = median(alone)
    return {
        "small_run_alone_s": round(run_time, 2),
        "small_run_loaded_p50_s": round(median(loaded), 2),
        "small_wait_p50_s": round(median(waits), 2),
        "small_wait_max_s": round(max(waits), 2),
        "wait_ratio_p50": round(median(ratios), 2),
        "wait_ratio_max": round(max(ratios), 2),
        "wait_vs_alone_max": round(max(waits) / run_time, 2),
        "big_runs": big_runs,
        "big_backlog_when_small_done": big_left,
        "big_refusals_429": refusals,
    }


def measure_fairness(big_runs: int, small_runs: int) -> dict[str, Any]:
    config = {"auth": "required", "quotas": {"running": 100, "queued": 1000}}
    with Service(config, label="fairness") as service:
        return asyncio.run(_fairness(service, big_runs, small_runs))


# ---------------------------------------------------------------- burst


async def _burst(service: Service, submissions: int) -> dict[str, Any]:
    codes: dict[int, int] = {}
    retry_after_missing = 0
    accepted: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=100), timeout=TIMEOUT
    ) as session:

        async def post() -> None:
            nonlocal retry_after_missing
            async with session.post(f"{service.base}/api/v1/flow/test", json=ONE_NODE) as r:
                codes[r.status] = codes.get(r.status, 0) + 1
                if r.status == 200:
                    accepted.append(await r.json())
                elif r.status == 429 and "Retry-After" not in r.headers:
                    retry_after_missing += 1

        began = time.perf_counter()
        await asyncio.gather(*(post() for _ in range(submissions)))
        burst_s = time.perf_counter() - began
        for run in accepted:
            async with session.put(run["WaitingURLs"][0]["PutURL"], data=b"x") as r:
                if r.status != 200:
                    raise BenchError(f"PUT {r.status}")
        ended: dict[str, int] = {}
        deadline = time.perf_counter() + 600
        for run in accepted:
            while time.perf_counter() < deadline:
                async with session.get(f"{service.base}/api/v1/flow/status/{run['ID']}") as r:
                    status = (await r.json())["Status"]
                if status in ("COMPLETE", "ERROR", "STOPPED"):
                    ended[status] = ended.get(status, 0) + 1
                    break
                await asyncio.sleep(0.2)
    return {
        "submissions": submissions,
        "burst_s": round(burst_s, 2),
        "answers": {str(code): count for code, count in sorted(codes.items())},
        "server_errors": sum(count for code, count in codes.items() if code >= 500),
        "refused_without_retry_after": retry_after_missing,
        "accepted": len(accepted),
        "accepted_complete": ended.get("COMPLETE", 0),
        "accepted_lost": len(accepted) - sum(ended.values()),
    }


def measure_burst(submissions: int) -> dict[str, Any]:
    config = {"quotas": {"running": 20, "queued": 100, "queued_per_tier": 50}}
    with Service(config, label="burst") as service:
        return asyncio.run(_burst(service, submissions))


# ---------------------------------------------------------------- rows


def run(quick: bool) -> list[dict[str, Any]]:
    runs, retention = (2_000, 10.0) if quick else (20_000, 60.0)
    progress(f"soak: {runs} one-node runs, {retention:g} s retention, 50 clients")
    soak = measure_retention(runs, retention, budget=3600)
    progress(f"soak: {soak}")
    flat = all(soak[f"growth_{k}"] < GROWTH_TARGET for k in ("data_dir", "database", "rss"))
    rows = [
        {
            "name": f"soak: {runs} one-node runs, {retention:g} s retention, 50 clients (no "
            "containers: the service's own)",
            "pipewell": f"{soak['complete']}/{runs} complete in {soak['wall_s']} s; growth "
            f"second quarter → last: data dir {soak['growth_data_dir']:+.1%}, database "
            f"{soak['growth_database']:+.1%}, RSS {soak['growth_rss']:+.1%} (at the end "
            f"{soak['final_data_dir_mib']} MiB, {soak['final_database_mib']} MiB, "
            f"{soak['final_rss_mib']} MiB)",
            "baseline": "",
            "target": "all complete; data dir, database and RSS flat (growth < 10%)",
            "ok": flat and soak["complete"] == runs and not soak["failures"],
            **soak,
        }
    ]
    big, small = (200, 5) if quick else (2_000, 20)
    progress(f"soak: fairness, one tenant {big} runs, the other {small}")
    fair = measure_fairness(big, small)
    progress(f"soak: {fair}")
    rows.append(
        {
            "name": f"soak: two tenants, one submitting {big} one-node runs, the other {small} "
            "meanwhile (real containers)",
            "pipewell": f"small tenant's node waited p50 {fair['small_wait_p50_s']} s, max "
            f"{fair['small_wait_max_s']} s for its turn and a worker: at most "
            f"{fair['wait_ratio_max']} x the rest of its run (p50 {fair['wait_ratio_p50']}); "
            f"its runs took {fair['small_run_loaded_p50_s']} s (p50; "
            f"{fair['small_run_alone_s']} s alone), with "
            f"{fair['big_backlog_when_small_done']} of the big tenant's runs still to end",
            "baseline": "",
            "target": f"wait < {WAIT_TARGET:g} x run time (each run's wait for its turn and "
            "a worker against the rest of that run, submission to end, under the same load)",
            "ok": fair["wait_ratio_max"] < WAIT_TARGET,
            **fair,
        }
    )
    burst = measure_burst(1_000)
    progress(f"soak: {burst}")
    rows.append(
        {
            "name": "soak: a burst of 1000 submissions past the queue bound (running 20, "
            "queued 100, queued_per_tier 50)",
            "pipewell": f"answers {burst['answers']} in {burst['burst_s']} s; "
            f"{burst['accepted_complete']}/{burst['accepted']} accepted complete",
            "baseline": "",
            "target": "429s with Retry-After, no 5xx, nothing accepted lost",
            "ok": not burst["server_errors"]
            and not burst["refused_without_retry_after"]
            and not burst["accepted_lost"]
            and set(burst["answers"]) <= {"200", "429"},
            **burst,
        }
    )
    return rows


if __name__ == "__main__":
    for row in run("--quick" in sys.argv):
        print(row)
