"""The benchmarks: each runs Pipewell and its baseline alternately and returns a result row."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import docker
from moto.server import ThreadedMotoServer

from bench.service import ROOT, PeakRSS, Service, free_port

BUSYBOX = "pipewell/busybox:latest"
GIB = 1024**3


def copy_def(tier: str = "c-nano", exec_line: str = "cp ${in} ${out}") -> dict[str, Any]:
    return {"Publisher": "bench", "Name": "copy", "Image": BUSYBOX, "Tier": tier,
            "Command": {"Name": "run", "Exec": exec_line}}  # fmt: skip


def chain(length: int) -> dict[str, Any]:
    nodes = []
    for i in range(length):
        nodes.append({
            "ID": f"n{i}", "Uses": "bench/copy",
            "Inputs": [{"Name": "in", "Edge": "src" if i == 0 else f"e{i}"}],
            "Outputs": [{"Name": "out", "Edge": "out" if i == length - 1 else f"e{i + 1}"}],
        })  # fmt: skip
    return {"Name": f"chain{length}", "Nodes": nodes}


def row(
    name: str,
    ours: list[float],
    base: list[float],
    target: float | None,
    unit: str = "s",
    **extra: Any,
) -> dict[str, Any]:
    ratios = [o / b for o, b in zip(ours, base, strict=True)]
    median = statistics.median(ratios)
    return {
        "name": name, "unit": unit, "pipewell": ours, "baseline": base,
        "ratio_median": round(median, 3), "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3), "target": target,
        "ok": None if target is None else median <= target, **extra,
    }  # fmt: skip


def progress(message: str) -> None:
    print(f"  {message}", flush=True)


# ---------------------------------------------------------------- chain10


def chain10(rounds: int) -> list[dict[str, Any]]:
    engine = docker.from_env()
    flow, defs = chain(10), [copy_def()]
    cli_argv = ["docker", "run", "--rm", "--network", "none", BUSYBOX,
                "sh", "-c", "cp /etc/hostname /tmp/x"]  # fmt: skip

    def docker_cli() -> float:
        began = time.perf_counter()
        for _ in range(10):
            subprocess.run(cli_argv, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - began

    def docker_sdk() -> float:
        began = time.perf_counter()
        for _ in range(10):
            container = engine.containers.create(
                BUSYBOX, ["sh", "-c", "cp /etc/hostname /tmp/x"], network_mode="none"
            )
            container.start()
            container.wait()
            container.remove()
        return time.perf_counter() - began

    ours, cli, sdk, phases = [], [], [], {}
    with Service() as service:
        for number in range(rounds):
            began = time.perf_counter()
            run = service.submit(flow, defs)
            service.upload(run, b"hello")
            done = service.wait(run["ID"])
            ours.append(time.perf_counter() - began)
            assert done["Status"] == "COMPLETE", done["Status"]
            cli.append(docker_cli())
            sdk.append(docker_sdk())
            progress(
                f"chain10 round {number + 1}: pipewell {ours[-1]:.2f} s, "
                f"docker run {cli[-1]:.2f} s, SDK {sdk[-1]:.2f} s"
            )
        time.sleep(0.5)  # the last removals report after COMPLETE
        for state in service.status(run["ID"])["NodeState"].values():
            for phase, seconds in state["Timings"].items():
                phases[phase] = round(phases.get(phase, 0) + seconds, 3)
    engine.close()
    return [
        row("chain10 vs docker run", ours, cli, 1.15, phases_last_round=phases),
        row("chain10 vs Docker SDK loop", ours, sdk, None),
    ]


# ---------------------------------------------------------------- fanout


def fanout(rounds: int) -> list[dict[str, Any]]:
    width, seconds = 16, 2
    flow = {"Name": "fanout", "Nodes": [
        {"ID": f"b{i}", "Uses": "bench/copy", "Inputs": [{"Name": "in", "Edge": "src"}],
         "Outputs": [{"Name": "out", "Edge": f"out{i}"}]} for i in range(width)]}  # fmt: skip
    defs = [copy_def(exec_line=f"sh -c 'sleep {seconds}; cp ${{in}} ${{out}}'")]
    ours = []
    with Service() as service:
        for number in range(rounds):
            began = time.perf_counter()
            run = service.submit(flow, defs)
            service.upload(run, b"x")
            assert service.wait(run["ID"])["Status"] == "COMPLETE"
            ours.append(time.perf_counter() - began)
            progress(f"fanout round {number + 1}: {ours[-1]:.2f} s")
    slots = max(2, 4 * (os.cpu_count() or 1))  # worker.max_parallel: auto
    ideal = math.ceil(width / slots) * seconds
    model = (
        f"{slots} slots (4 x {os.cpu_count()} cores); each c-nano container reserves "
        f"512 MiB of the worker's memory, which does not bind here; CPU is not reserved"
    )
    return [
        row("fanout 16x2s vs serial", ours, [width * seconds] * rounds, None),
        row(
            "fanout 16x2s vs capacity ideal",
            ours,
            [ideal] * rounds,
            None,
            capacity_model=model,
            ideal_seconds=ideal,
        ),
    ]


# ---------------------------------------------------------------- bytes


def _big_file(directory: Path) -> Path:
    path = directory / "input.bin"
    block = os.urandom(1024 * 1024)
    with path.open("wb") as handle:
        for _ in range(1024):
            handle.write(block)
    return path


def _bytes_baseline(source: Path, directory: Path) -> float:
    """The physical limit: docker cp in, the same cp inside, docker cp out, one file copy."""
    subprocess.run(["sync"], check=True)
    began = time.perf_counter()
    container = subprocess.run(
        ["docker", "create", "--network", "none", BUSYBOX, "sh", "-c", "cp /in /out"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    try:
        subprocess.run(["docker", "cp", str(source), f"{container}:/in"], check=True)
        subprocess.run(["docker", "start", "-a", container], check=True)
        with (directory / "out.tar").open("wb") as out:
            subprocess.run(["docker", "cp", f"{container}:/out", "-"], check=True, stdout=out)
        shutil.copyfile(source, directory / "copy.bin")
        return time.perf_counter() - began
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)
        for name in ("out.tar", "copy.bin"):
            (directory / name).unlink(missing_ok=True)


def _bytes_through(service: Service, source: Path) -> tuple[float, float]:
    subprocess.run(["sync"], check=True)
    with PeakRSS(service) as rss:
        began = time.perf_counter()
        run = service.submit(chain(1), [copy_def("c-small")])
        with source.open("rb") as handle:
            service.upload(run, handle)
        done = service.wait(run["ID"], timeout=600)
        elapsed = time.perf_counter() - began
    assert done["Status"] == "COMPLETE", done["NodeState"]
    return elapsed, rss.peak_mib


def _moto_transfers(endpoint: str, source: Path) -> float:
    """What moto alone costs for the store traffic of one run: PUT, GET, PUT of the bytes."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    began = time.perf_counter()
    for key in ("a", "b"):
        with source.open("rb") as handle:
            client.put_object(Bucket="pipewell-bench", Key=f"limit/{key}", Body=handle)
        if key == "a":
            body = client.get_object(Bucket="pipewell-bench", Key="limit/a")["Body"]
            while body.read(1 << 20):
                pass
    elapsed = time.perf_counter() - began
    for key in ("a", "b"):
        client.delete_object(Bucket="pipewell-bench", Key=f"limit/{key}")
    return elapsed


def bytes_(rounds: int) -> list[dict[str, Any]]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    rows = []
    with tempfile.TemporaryDirectory(
        prefix="pipewell-bytes-", dir=ROOT / ".pipewell" if (ROOT / ".pipewell").is_dir() else None
    ) as tmp:
        directory = Path(tmp)
        source = _big_file(directory)
        moto_port = free_port()
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
        moto.start()
        s3 = {"storage": {"default": {"type": "s3", "params": {
            "bucket": "pipewell-bench", "endpoint_url": f"http://127.0.0.1:{moto_port}",
            "access_key_id": "bench", "secret_access_key": "bench", "create_bucket": True,
        }}}}  # fmt: skip
        try:
            for label, config in (("local", {}), ("s3 (moto)", s3)):
                ours, base, peaks, moto_only = [], [], [], []
                with Service(config) as service:
                    for number in range(rounds):
                        elapsed, peak = _bytes_through(service, source)
                        ours.append(elapsed)
                        peaks.append(peak)
                        base.append(_bytes_baseline(source, directory))
                        if config:
                            moto_only.append(
                                base[-1] + _moto_transfers(f"http://127.0.0.1:{moto_port}", source)
                            )
                        progress(
                            f"bytes {label} round {number + 1}: pipewell {elapsed:.2f} s "
                            f"(peak RSS {peak} MiB), limit {base[-1]:.2f} s"
                        )
                rows.append(row(f"bytes 1 GiB, {label} store", ours, base, 1.5,
                                peak_rss_mib=max(peaks), rss_target_mib=300,
                                rss_ok=max(peaks) < 300))  # fmt: skip
                if moto_only:
                    rows.append(
                        row(
                            "bytes 1 GiB, s3 (moto) vs limit + moto's own PUT/GET/PUT",
                            ours,
                            moto_only,
                            1.5,
                        )
                    )
        finally:
            moto.stop()
    return rows


# ---------------------------------------------------------------- control plane


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _control(
    service: Service, runs: int, clients: int, pollers: int, poll_seconds: float
) -> dict[str, Any]:
    flow, defs = chain(1), [copy_def()]
    post, statuses = [], {}
    todo = iter(range(runs))

    async def client(session: aiohttp.ClientSession) -> None:
        for _ in todo:
            began = time.perf_counter()
            async with session.post(
                f"{service.base}/api/v1/flow/test", json={"Flow": flow, "NodeDefs": defs}
            ) as response:
                run = await response.json()
            post.append(time.perf_counter() - began)
            async with session.put(run["WaitingURLs"][0]["PutURL"], data=b"x") as response:
                response.raise_for_status()
            for _ in range(3000):  # bounded: 10 minutes at most
                async with session.get(f"{service.base}/api/v1/flow/status/{run['ID']}") as r:
                    status = (await r.json())["Status"]
                if status in ("COMPLETE", "ERROR"):
                    break
                await asyncio.sleep(0.2)
            statuses[run["ID"]] = status

    cpu_before = service.cpu_seconds()
    began = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=max(clients, pollers) + 10)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
        wall = time.perf_counter() - began
        cpu = service.cpu_seconds() - cpu_before
        done_id = next(iter(statuses))
        latencies: list[float] = []
        deadline = time.perf_counter() + poll_seconds

        async def poller() -> None:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                async with session.get(f"{service.base}/api/v1/flow/status/{done_id}") as r:
                    await r.read()
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(poller() for _ in range(pollers)))
    complete = sum(1 for s in statuses.values() if s == "COMPLETE")
    return {
        "runs": runs, "clients": clients, "complete": complete,
        "lost": runs - len(statuses), "wall_seconds": round(wall, 2),
        "runs_per_second": round(runs / wall, 2),
        "post_p50_ms": round(statistics.median(post) * 1000, 1),
        "post_p99_ms": round(_percentile(post, 0.99) * 1000, 1),
        "status_pollers": pollers, "status_requests": len(latencies),
        "status_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "status_p99_ms": round(_percentile(latencies, 0.99) * 1000, 1),
        "service_cpu_ms_per_run": round(cpu / runs * 1000, 1),
    }  # fmt: skip


def control(quick: bool) -> list[dict[str, Any]]:
    runs, clients, pollers, seconds = (200, 20, 50, 5) if quick else (1000, 50, 200, 10)
    with Service() as service:
        figures = asyncio.run(_control(service, runs, clients, pollers, seconds))
    progress(f"control: {figures}")
    return [{"name": "control plane", "ok": figures["complete"] == runs, **figures}]


# ---------------------------------------------------------------- start-up


def startup(rounds: int) -> list[dict[str, Any]]:
    launches = []
    for _ in range(rounds):
        service = Service()
        try:
            launches.append(service.start())
        finally:
            service.stop()
    imports = []
    for _ in range(rounds):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import orchestrator.api.app"], check=True, cwd=ROOT)
        with_import = time.perf_counter() - began
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        imports.append(with_import - (time.perf_counter() - began))
    figures = {
        "launch_to_healthz_s": round(statistics.median(launches), 3),
        "import_s": round(statistics.median(imports), 3),
    }
    progress(f"startup: {figures}")
    return [{"name": "start-up", "ok": None, **figures}]
