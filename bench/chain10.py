"""chain10: ten trivial busybox nodes in a chain, from submit to COMPLETE, against ten
sequential ``docker run --rm`` and against the same ten containers through the Docker SDK."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import docker

from bench.service import BUSYBOX, BenchError, Service, chain_flow, copy_def, progress, ratio_row

LENGTH = 10
RUN_TIMEOUT = 120  # seconds; a round normally takes about 3
COMMAND = ["sh", "-c", "cp /etc/hostname /tmp/x"]


def _pipewell(service: Service, length: int = LENGTH) -> tuple[float, dict[str, Any]]:
    flow, defs = chain_flow(length), [copy_def()]
    began = time.perf_counter()
    run = service.submit(flow, defs)
    service.upload(run, b"hello pipewell\n")
    done = service.wait(run["ID"], RUN_TIMEOUT)
    elapsed = time.perf_counter() - began
    if done["Status"] != "COMPLETE":
        raise BenchError(
            f"chain10 run {run['ID']} ended {done['Status']}:\n{service.diagnose(run['ID'])}"
        )
    return elapsed, run


def _docker_cli(count: int = LENGTH) -> float:
    argv = ["docker", "run", "--rm", "--network", "none", BUSYBOX, *COMMAND]
    began = time.perf_counter()
    for _ in range(count):
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, timeout=60)
    return time.perf_counter() - began


def _docker_sdk(engine: docker.DockerClient, count: int = LENGTH) -> float:
    began = time.perf_counter()
    for _ in range(count):
        container = engine.containers.create(BUSYBOX, COMMAND, network_mode="none")
        try:
            container.start()
            container.wait(timeout=60)
        finally:
            container.remove(force=True)
    return time.perf_counter() - began


def _phases(service: Service, run_id: str) -> dict[str, float]:
    phases: dict[str, float] = {}
    for state in service.status(run_id)["NodeState"].values():
        for phase, seconds in state.get("Timings", {}).items():
            phases[phase] = round(phases.get(phase, 0.0) + seconds, 3)
    return phases


def run(quick: bool) -> list[dict[str, Any]]:
    rounds = 3 if quick else 5
    engine = docker.from_env()
    ours: list[float] = []
    cold: list[float] = []
    plain: list[float] = []
    cli: list[float] = []
    sdk: list[float] = []
    try:
        with (
            Service(label="chain10") as service,
            Service(config={"executor": {"warm_containers": 0}}, label="chain10-cold") as unwarmed,
            Service(
                config={"executor": {"launch": "plain"}}, label="chain10-plain"
            ) as plain_service,
        ):
            # Warm-up, not counted: the first container of a process run pays for cold
            # caches in Docker and in the service alike.
            _pipewell(service, length=1)
            _pipewell(unwarmed, length=1)
            _pipewell(plain_service, length=1)
            service.settle()
            unwarmed.settle()
            plain_service.settle()
            _docker_cli(1)
            _docker_sdk(engine, 1)
            progress("chain10: warm-up done (one node each, one docker run, one SDK container)")
            for number in range(rounds):
                elapsed, last = _pipewell(service)
                ours.append(elapsed)
                service.settle()  # its last container's removal must not overlap a baseline
                elapsed, last_cold = _pipewell(unwarmed)
                cold.append(elapsed)
                unwarmed.settle()
                elapsed, last_plain = _pipewell(plain_service)
                plain.append(elapsed)
                plain_service.settle()
                cli.append(_docker_cli())
                sdk.append(_docker_sdk(engine))
                progress(
                    f"chain10 round {number + 1}/{rounds}: pipewell {ours[-1]:.2f} s, "
                    f"without warm containers {cold[-1]:.2f} s, plain {plain[-1]:.2f} s, "
                    f"docker run x10 {cli[-1]:.2f} s, SDK x10 {sdk[-1]:.2f} s"
                )
            phases = _phases(service, last["ID"])
            cold_phases = _phases(unwarmed, last_cold["ID"])
            plain_phases = _phases(plain_service, last_plain["ID"])
    finally:
        engine.close()
    progress(f"chain10: seconds per phase summed over the 10 nodes of the last run: {phases}")
    progress(f"chain10: the same without warm containers: {cold_phases}")
    progress(f"chain10: the same launched plain: {plain_phases}")
    return [
        ratio_row(
            "chain10 (10 nodes, submit to COMPLETE)",
            ours,
            cli,
            baseline="10 x `docker run --rm`",
            target=0.80,
            phases_last_run=phases,
        ),
        ratio_row(
            "chain10 vs the Docker SDK",
            ours,
            sdk,
            baseline="10 x SDK create/start/wait/remove",
            target=1.00,
        ),
        ratio_row(
            "chain10 without warm containers (executor.warm_containers: 0) vs the Docker SDK",
            cold,
            sdk,
            baseline="10 x SDK create/start/wait/remove",
            target=None,
            phases_last_run=cold_phases,
        ),
        ratio_row(
            "chain10 launched plain (executor.launch: plain) vs the Docker SDK",
            plain,
            sdk,
            baseline="10 x SDK create/start/wait/remove",
            target=None,
            phases_last_run=plain_phases,
        ),
    ]
