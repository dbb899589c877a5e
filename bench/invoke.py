"""invoke: a saved one-node flow called synchronously by id (Axiom's ``wait``), one
call after another, against the same container through ``docker run --rm`` with the
input on stdin and the output on stdout."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from bench.service import BUSYBOX, BenchError, Service, chain_flow, copy_def, progress, ratio_row

CALLS = 10
INPUT = {"text": "hello pipewell", "n": 1}


def _pipewell(service: Service, graph_id: str, calls: int = CALLS) -> float:
    began = time.perf_counter()
    for _ in range(calls):
        body = {"graph_id": graph_id, "input": INPUT, "wait": True, "timeout_seconds": 60}
        response = service.http.post(
            f"{service.base}/invocations/v1/flows/invoke", json=body, timeout=90
        )
        result = response.json().get("result", {})
        if response.status_code != 202 or result.get("output") != INPUT:
            raise BenchError(f"invoke answered {response.status_code}: {response.text[:500]}")
    return time.perf_counter() - began


def _docker_cli(calls: int = CALLS) -> float:
    argv = ["docker", "run", "--rm", "-i", "--network", "none", BUSYBOX, "cat"]
    payload = json.dumps(INPUT).encode()
    began = time.perf_counter()
    for _ in range(calls):
        done = subprocess.run(argv, input=payload, capture_output=True, check=True, timeout=60)
        if json.loads(done.stdout) != INPUT:
            raise BenchError(f"docker run gave {done.stdout[:200]!r}")
    return time.perf_counter() - began


def run(quick: bool) -> list[dict[str, Any]]:
    rounds = 3 if quick else 5
    ours: list[float] = []
    cli: list[float] = []
    with Service(label="invoke") as service:
        saved = service.http.post(
            f"{service.base}/api/v1/flows",
            json={"Flow": chain_flow(1), "NodeDefs": [copy_def()]},
            timeout=30,
        )
        if saved.status_code != 201:
            raise BenchError(f"saving the flow answered {saved.status_code}: {saved.text[:500]}")
        graph_id = saved.json()["graph_id"]
        _pipewell(service, graph_id, 1)  # warm-up, not counted
        _docker_cli(1)
        service.settle()
        for number in range(rounds):
            ours.append(_pipewell(service, graph_id))
            service.settle()
            cli.append(_docker_cli())
            progress(
                f"invoke round {number + 1}/{rounds}: pipewell {ours[-1]:.2f} s, "
                f"docker run -i x{CALLS} {cli[-1]:.2f} s"
            )
    return [
        ratio_row(
            f"invoke ({CALLS} sync calls of a saved one-node flow)",
            ours,
            cli,
            baseline=f"{CALLS} x `docker run --rm -i` (stdin in, stdout out)",
            target=0.90,
        )
    ]
