"""A ``pipewell dev`` subprocess for one benchmark, the HTTP calls that drive it,
and what to measure of its process (RSS, CPU) through /proc.

Every wait here has a deadline: a run that never ends raises ``BenchError`` with
what the status endpoint and the service log said, instead of hanging.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
BUSYBOX = "pipewell/busybox:latest"
CLK_TCK = os.sysconf("SC_CLK_TCK")
FINISHED = ("COMPLETE", "ERROR")
_T0 = time.perf_counter()

#: Settings every service of this process run gets under its own (``--transfer``).
#: Every benchmark measures the work done, so none is served from the result cache
#: (rounds send the same bytes); bench/cache.py turns it on to measure it.
BASE_CONFIG: dict[str, Any] = {"cache": {"enabled": False}}


class BenchError(RuntimeError):
    """A benchmark could not measure: a run did not end, a request failed, a timeout."""


def progress(message: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.1f} s] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------- flows


def copy_def(
    name: str = "copy", exec_line: str = "cp ${in} ${out}", tier: str = "c-nano"
) -> dict[str, Any]:
    return {
        "Publisher": "bench",
        "Name": name,
        "Image": BUSYBOX,
        "Tier": tier,
        "Command": {"Name": "run", "Exec": exec_line},
    }


def chain_flow(length: int, uses: str = "bench/copy") -> dict[str, Any]:
    """src → n0 → e1 → n1 → … → out."""
    nodes = [
        {
            "ID": f"n{i}",
            "Uses": uses,
            "Inputs": [{"Name": "in", "Edge": "src" if i == 0 else f"e{i}"}],
            "Outputs": [{"Name": "out", "Edge": "out" if i == length - 1 else f"e{i + 1}"}],
        }
        for i in range(length)
    ]
    return {"Name": f"chain{length}", "Nodes": nodes}


def fan_flow(width: int, uses: str = "bench/copy") -> dict[str, Any]:
    """``width`` independent nodes reading the one upload edge ``src``."""
    nodes = [
        {
            "ID": f"b{i}",
            "Uses": uses,
            "Inputs": [{"Name": "in", "Edge": "src"}],
            "Outputs": [{"Name": "out", "Edge": f"out{i}"}],
        }
        for i in range(width)
    ]
    return {"Name": f"fan{width}", "Nodes": nodes}


# ---------------------------------------------------------------- results


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def ratio_row(
    name: str,
    ours: list[float],
    base: list[float],
    *,
    baseline: str,
    target: float | None,
    pipewell_note: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """One table row: Pipewell's seconds over the baseline's, round by round."""
    ratios = [o / b for o, b in zip(ours, base, strict=True)]
    ratio = median(ratios)
    return {
        "name": name,
        "pipewell_s": [round(v, 3) for v in ours],
        "baseline_s": [round(v, 3) for v in base],
        "pipewell": f"{median(ours):.2f} s{pipewell_note}",
        "baseline": f"{baseline}: {median(base):.2f} s",
        "ratio_median": round(ratio, 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
        "target": None if target is None else f"≤ {target}",
        "ok": None if target is None else ratio <= target,
        **extra,
    }


def error_row(name: str, error: str) -> dict[str, Any]:
    return {
        "name": name,
        "pipewell": "FAILED",
        "baseline": "",
        "target": None,
        "ok": False,
        "error": error,
    }


# ---------------------------------------------------------------- the service


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A redis-server on a free loopback port, keeping nothing; yields its URL."""
    port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        redis.terminate()
        redis.wait(10)


@contextlib.contextmanager
def instant_service(config: dict[str, Any], label: str) -> Iterator[Service]:
    """A service on a fresh Redis with ``bench.instant_worker`` as its one worker (no
    containers: what is measured is the service's own cost)."""
    with redis_server() as url:
        on_redis = {**config, "queue": {**config.get("queue", {}), "url": url}}
        on_redis["worker"] = {**config.get("worker", {}), "enabled": False}
        with Service(on_redis, label=label) as service:
            log = (service.tmp / "instant-worker.log").open("ab")
            worker = subprocess.Popen(
                [sys.executable, "-m", "bench.instant_worker", "--queue", url],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
            try:
                yield service
            finally:
                worker.terminate()
                try:
                    worker.wait(30)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait(10)
                log.close()


class Service:
    """``pipewell dev`` on a free port with a fresh data directory and its own worker name."""

    def __init__(self, config: dict[str, Any] | None = None, label: str = "bench") -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix=f"pipewell-bench-{label}-"))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.worker = f"bench-{label}-{self.port}"
        self.config = {**BASE_CONFIG, **(config or {})}
        self.config.setdefault("worker", {})["name"] = self.worker
        self.log_path = self.tmp / "service.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.http = requests.Session()

    # ------------------------------------------------------------ life cycle

    def start(self, timeout: float = 30) -> float:
        """Launch; returns the seconds from launch to the first ``/healthz`` 200."""
        config = self.tmp / "config.yaml"
        config.write_text(yaml.safe_dump(self.config))
        # `pipewell dev`, run as a module from ROOT: the engine measured is the one in
        # the tree beside bench/, whatever the virtualenv's editable install points at.
        argv = [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "dev",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.tmp / "data"),
            "--config",
            str(config),
        ]
        with self.log_path.open("ab") as log:
            began = time.perf_counter()
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
            )
        while time.perf_counter() - began < timeout:
            try:
                if self.http.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return time.perf_counter() - began
            except requests.RequestException:
                pass
            if self.process.poll() is not None:
                raise BenchError(
                    f"pipewell dev exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            time.sleep(0.005)
        raise BenchError(f"pipewell dev not healthy after {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM (then SIGKILL), remove its worker's containers, delete its directory."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                progress(f"  {self.worker}: no exit 30 s after SIGTERM, killing it")
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        leftovers = self.containers()
        if leftovers:
            progress(f"  {self.worker}: removing {len(leftovers)} container(s) it left behind")
            subprocess.run(["docker", "rm", "-f", *leftovers], capture_output=True, timeout=60)
        self.http.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Service:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ its log and containers

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 25, matching: str | None = None) -> str:
        found = [
            line
            for line in self.log_text().splitlines()
            if matching is None or matching in line or "error" in line.lower()
        ]
        return "\n".join("    | " + line for line in found[-lines:]) or "    | (nothing logged)"

    def capacity(self) -> dict[str, int] | None:
        """The worker's ``worker_started ... memory_mib=M slots=N`` log line, parsed."""
        for line in self.log_text().splitlines():
            if "worker_started" in line:
                slots = re.search(r"\bslots=(\d+)", line)
                memory = re.search(r"\bmemory_mib=(\d+)", line)
                if slots and memory:
                    return {"slots": int(slots[1]), "memory_mib": int(memory[1])}
        return None

    def containers(self) -> list[str]:
        """Ids of the containers (running or not) its worker labelled as its own."""
        return [line.split()[0] for line in self._listing()]

    def _listing(self) -> list[str]:
        result = subprocess.run(
            [
                "docker",
                "ps",
                "-a",
                "--filter",
                f"label=pipewell.worker={self.worker}",
                "--format",
                "{{.ID}} {{.Names}} {{.State}}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return result.stdout.splitlines()

    def settle(self, timeout: float = 15) -> None:
        """Wait until its attempts' containers are removed (removal may follow COMPLETE)
        and its warm containers are made, so that the next measurement does not share
        Docker with them."""
        deadline = time.perf_counter() + timeout
        previous: list[str] | None = None
        while True:
            listing = sorted(self._listing())
            settled = all(
                name.startswith("pipewell-warm-") and state == "running"
                for _, name, state in (line.split() for line in listing)
            )
            if settled and listing == previous:
                return
            if time.perf_counter() > deadline:
                progress(f"  warning: containers of {self.worker} still changing after {timeout} s")
                return
            previous = listing if settled else None
            time.sleep(0.3)

    # ------------------------------------------------------------ the API

    def submit(self, flow: dict[str, Any], defs: list[dict[str, Any]]) -> dict[str, Any]:
        body = {"Flow": flow, "NodeDefs": defs}
        response = self.http.post(f"{self.base}/api/v1/flow/test", json=body, timeout=30)
        if response.status_code != 200:
            raise BenchError(
                f"POST /api/v1/flow/test answered {response.status_code}: {response.text[:500]}"
            )
        return response.json()

    def upload(self, run: dict[str, Any], data: bytes | Path, edge: str = "src") -> None:
        """PUT ``data`` (bytes, or a file streamed from disk) to the edge's WaitingURL."""
        urls = [w["PutURL"] for w in run["WaitingURLs"] if w["Artifact"]["EdgeName"] == edge]
        if not urls:
            raise BenchError(f"run {run['ID']} has no WaitingURL for edge {edge!r}: {run}")
        status, text = put(urls[0], data)
        if status != 200:
            raise BenchError(f"PUT of the input of run {run['ID']} answered {status}: {text}")

    def status(self, run_id: str) -> dict[str, Any]:
        response = self.http.get(f"{self.base}/api/v1/flow/status/{run_id}", timeout=30)
        if response.status_code != 200:
            raise BenchError(f"GET status of {run_id} answered {response.status_code}")
        return response.json()

    def wait(self, run_id: str, timeout: float) -> dict[str, Any]:
        """Follow the run's Server-Sent Events until ``end``; ``BenchError`` after ``timeout``.

        A stream that breaks or stays silent past the heartbeat is opened again
        (it starts with the current status, and ``end`` at once if finished).
        """
        deadline = time.perf_counter() + timeout
        while (left := deadline - time.perf_counter()) > 0:
            try:
                with self.http.get(
                    f"{self.base}/api/v1/flow/events/{run_id}",
                    stream=True,
                    timeout=(5, min(20.0, left + 0.5)),
                ) as response:
                    if response.status_code != 200:
                        raise BenchError(
                            f"GET events of {run_id} answered {response.status_code}: "
                            f"{response.text[:300]}"
                        )
                    event = None
                    for line in response.iter_lines(decode_unicode=True):
                        if line.startswith("event: "):
                            event = line[7:]
                        elif line.startswith("data: ") and event == "end":
                            return json.loads(line[6:])
                        if time.perf_counter() > deadline:
                            break
            except requests.RequestException:
                time.sleep(0.05)
        raise BenchError(
            f"run {run_id} did not end within {timeout:.0f} s.\n{self.diagnose(run_id)}"
        )

    def diagnose(self, run_id: str) -> str:
        """What the status endpoint and the service log say about a run, for a report."""
        try:
            run = self.status(run_id)
            nodes = "\n".join(
                f"    node {node}: {state.get('Status')} attempt {state.get('Attempt')}"
                + (f", error {state['Error']!r}" if state.get("Error") else "")
                + (f", last log {state['Logs'][-1].get('message')!r}" if state.get("Logs") else "")
                for node, state in sorted(run.get("NodeState", {}).items())
            )
            waiting = [w["Artifact"]["EdgeName"] for w in run.get("WaitingURLs", [])]
            head = f"  status {run.get('Status')}, waiting for uploads {waiting}\n{nodes}"
        except Exception as exc:  # a report, not a control path
            head = f"  status endpoint failed: {exc}"
        alive = "running" if self.process and self.process.poll() is None else "exited"
        return (
            f"{head}\n  service {alive}; log lines about the run or errors:\n"
            f"{self.log_tail(25, matching=run_id)}"
        )

    # ------------------------------------------------------------ its process

    def cpu_seconds(self) -> float:
        """utime + stime of the service process (all its threads)."""
        assert self.process is not None
        stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def memory_kib(self, field: str = "VmRSS") -> int:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0


class RSSSampler:
    """The service's VmRSS every 100 ms in a thread; ``peak_mib`` once done."""

    def __init__(self, service: Service, interval: float = 0.1) -> None:
        self.service = service
        self.interval = interval
        self.peak_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_kib = max(self.peak_kib, self.service.memory_kib("VmRSS"))
                self.samples += 1
            except OSError:
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> RSSSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mib(self) -> float:
        return round(self.peak_kib / 1024, 1)


# ---------------------------------------------------------------- plain HTTP


def put(url: str, data: bytes | Path, timeout: float = 600) -> tuple[int, str]:
    """A streaming PUT with a Content-Length (no form data, no chunking): a file is
    sent from disk in 1 MiB blocks."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    connection = http.client.HTTPConnection(
        parts.hostname, parts.port or 80, timeout=timeout, blocksize=1 << 20
    )
    try:
        if isinstance(data, Path):
            with data.open("rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                connection.request(
                    "PUT", target, body=handle, headers={"Content-Length": str(size)}
                )
                response = connection.getresponse()
        else:
            connection.request("PUT", target, body=data)
            response = connection.getresponse()
        return response.status, response.read(500).decode(errors="replace")
    finally:
        connection.close()


def get_to_null(url: str, timeout: float = 600) -> int:
    """GET a URL, discarding the body in 1 MiB reads; returns the bytes read."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        if response.status != 200:
            raise BenchError(f"GET {parts.path} answered {response.status}")
        total = 0
        while chunk := response.read(1 << 20):
            total += len(chunk)
        return total
    finally:
        connection.close()
