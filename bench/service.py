"""A ``pipewell dev`` subprocess for benchmarks, and what to measure of it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: Settings every benchmark's service gets on top of its own (``--transfer``).
BASE_CONFIG: dict[str, Any] = {}


class Service:
    """Starts ``pipewell dev`` on a free port with a fresh data directory."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="pipewell-bench-")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.config = {**BASE_CONFIG, **(config or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.http = requests.Session()

    def start(self, timeout: float = 30) -> float:
        """Launch and wait for /healthz; returns seconds from launch to healthy."""
        config = Path(self.tmp.name) / "config.yaml"
        config.write_text(yaml.safe_dump(self.config))
        log = open(Path(self.tmp.name) / "service.log", "ab")  # noqa: SIM115 - closed in stop
        began = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "dev", "--port", str(self.port),
             "--data-dir", str(Path(self.tmp.name) / "data"), "--config", str(config)],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
        )  # fmt: skip
        log.close()
        while time.perf_counter() - began < timeout:
            try:
                if self.http.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return time.perf_counter() - began
            except requests.ConnectionError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.01)
        raise RuntimeError(f"pipewell dev did not become healthy; see {self.log_tail()}")

    def log_tail(self) -> str:
        path = Path(self.tmp.name) / "service.log"
        return path.read_text()[-2000:] if path.exists() else "(no log)"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.http.close()
        self.tmp.cleanup()

    def __enter__(self) -> Service:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ flows

    def submit(self, flow: dict[str, Any], defs: list[dict[str, Any]]) -> dict[str, Any]:
        response = self.http.post(
            f"{self.base}/api/v1/flow/test", json={"Flow": flow, "NodeDefs": defs}
        )
        response.raise_for_status()
        return response.json()

    def upload(self, run: dict[str, Any], data: Any, edge: str | None = None) -> None:
        url = next(
            w["PutURL"]
            for w in run["WaitingURLs"]
            if edge is None or w["Artifact"]["EdgeName"] == edge
        )
        response = self.http.put(url, data=data)
        response.raise_for_status()

    def wait(self, run_id: str, timeout: float = 300) -> dict[str, Any]:
        """Follow the run's SSE stream until its ``end`` event (no polling)."""
        with self.http.get(
            f"{self.base}/api/v1/flow/events/{run_id}", stream=True, timeout=timeout
        ) as response:
            event = None
            for line in response.iter_lines(decode_unicode=True):
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "end":
                    return json.loads(line[6:])
        raise RuntimeError(f"run {run_id} stream ended without an end event")

    def status(self, run_id: str) -> dict[str, Any]:
        return self.http.get(f"{self.base}/api/v1/flow/status/{run_id}").json()

    # ------------------------------------------------------------ the process

    def cpu_seconds(self) -> float:
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_kib(self, field: str = "VmRSS") -> int:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0


class PeakRSS:
    """Samples a service's RSS every 100 ms in a thread; ``peak_mib`` when done."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.service.rss_kib())
            self._stop.wait(0.1)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mib(self) -> float:
        return round(self.peak / 1024, 1)
