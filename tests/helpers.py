"""Helpers of the integration tests: settings, polling, uploads, NodeDefs."""

from __future__ import annotations

import asyncio
import json
import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
import docker
from aiohttp.test_utils import TestClient

from orchestrator.config import Settings

BUSYBOX = "pipewell/busybox:latest"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium on a closed network, as root: no sandbox, nothing fetched in the background.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RESIZE = "pipewell/resize:latest"


def create_key(capsys, data_dir: Path, name: str, tenant: str = "default") -> str:  # type: ignore[no-untyped-def]
    """A key made by ``pipewell keys create``, as printed."""
    from orchestrator.cli import main

    assert main(["keys", "create", "--name", name, "--tenant", tenant,
                 "--data-dir", str(data_dir)]) == 0  # fmt: skip
    return capsys.readouterr().out.strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a test service: quick retries and polls, a real port."""
    base: dict[str, Any] = {
        "port": free_port(),
        "data_dir": data_dir,
        "retry": {"backoff_base": 0.2, "backoff_max": 1.0},
        "storage": {"poll_interval": 0.2},
        "executor": {"default_timeout": 60},
        "worker": {"name": f"test-{data_dir.name}-{free_port()}"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return Settings.model_validate(base)


async def wait_for(
    client: TestClient,
    run_id: str,
    statuses: set[str],
    timeout: float = 90.0,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Poll the status endpoint until the run reaches one of ``statuses``."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(f"/api/v1/flow/status/{run_id}", headers=headers)
        assert response.status == 200, await response.text()
        run = await response.json()
        if run["Status"] in statuses:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run stuck in {run['Status']}: {run}")
        await asyncio.sleep(0.1)


async def submit(
    client: TestClient, flow: dict[str, Any], defs: list[dict[str, Any]]
) -> dict[str, Any]:
    response = await client.post("/api/v1/flow/test", json={"Flow": flow, "NodeDefs": defs})
    assert response.status == 200, await response.text()
    return await response.json()


async def upload(client: TestClient, run: dict[str, Any], edge: str, data: bytes) -> None:
    url = next(w["PutURL"] for w in run["WaitingURLs"] if w["Artifact"]["EdgeName"] == edge)
    async with client.session.put(url, data=data) as response:
        assert response.status == 200, await response.text()


async def artifact(client: TestClient, run_id: str, edge: str) -> bytes:
    response = await client.get(f"/api/v1/flow/artifact/{run_id}/{edge}")
    assert response.status == 200, await response.text()
    return await response.read()


def busybox_def(name: str, exec_line: str | None = None, **fields: Any) -> dict[str, Any]:
    node_def: dict[str, Any] = {"Publisher": "test", "Name": name, "Image": BUSYBOX, **fields}
    if exec_line is not None:
        node_def["Command"] = {"Name": "run", "Exec": exec_line}
    return node_def


async def submit_big_waiting_run(client: TestClient) -> dict[str, Any]:
    """251 nodes: 'go' reads the upload edge 'src'; 250 more wait on 'later', which
    never comes. Over the 200 nodes past which a run's stream sends deltas."""
    nodes = [
        {"ID": "go", "Uses": "test/copy", "Inputs": [{"Name": "in", "Edge": "src"}],
         "Outputs": [{"Name": "out", "Edge": "result"}]},
    ] + [
        {"ID": f"w{i}", "Uses": "test/copy", "Inputs": [{"Name": "in", "Edge": "later"}],
         "Outputs": [{"Name": "out", "Edge": f"o{i}"}]}
        for i in range(250)
    ]  # fmt: skip
    copy = busybox_def("copy", "cp ${in} ${out}")
    return await submit(client, {"Name": "big", "Nodes": nodes}, [copy])


def chain_flow(*steps: str, name: str = "chain") -> dict:
    """A linear flow: src → steps[0] → e1 → steps[1] → … → out."""
    nodes = []
    for i, uses in enumerate(steps):
        src = "src" if i == 0 else f"e{i}"
        dst = "out" if i == len(steps) - 1 else f"e{i + 1}"
        nodes.append(
            {
                "ID": f"n{i}",
                "Uses": f"test/{uses}",
                "Inputs": [{"Name": "in", "Edge": src}],
                "Outputs": [{"Name": "out", "Edge": dst}],
            }
        )
    return {"Name": name, "Nodes": nodes}


async def run_chain(
    client: TestClient,
    defs: list[dict[str, Any]],
    *steps: str,
    data: bytes = b"x",
    timeout: float = 90.0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Submit ``chain_flow(*steps)``, upload ``data`` to ``src``, wait for its end."""
    run = await submit(client, chain_flow(*steps), defs)
    await upload(client, run, "src", data)
    return run, await wait_for(client, run["ID"], {"COMPLETE", "ERROR"}, timeout=timeout)


def labelled_containers(run_id: str) -> list:  # type: ignore[type-arg]
    """The run's containers (sparse: one removed meanwhile must not fail the listing).

    Found by name: a warm container was labelled before it had a run, and is
    renamed ``pipewell-<run>-<node>-<attempt>-…`` when an attempt claims it.
    """
    engine = docker.from_env()
    try:
        return engine.containers.list(
            all=True, sparse=True, filters={"name": f"pipewell-{run_id}-"}
        )
    finally:
        engine.close()


async def containers_left(run_id: str, seconds: float) -> list:  # type: ignore[type-arg]
    """The run's containers once they are gone, or those still there after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        left = await asyncio.to_thread(labelled_containers, run_id)
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.1)


def start_dev(
    data_dir: Path, port: int, log: BinaryIO, *flags: str, open_files: int | None = None
) -> subprocess.Popen[bytes]:
    """The real ``pipewell dev`` in a process of its own, for faults that kill a process.

    ``open_files``: the process's file limit (RLIMIT_NOFILE), when a test needs a small one.
    """

    def limit_files() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "dev",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            *flags,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=limit_files,
    )


async def wait_healthy(session: aiohttp.ClientSession, base: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with session.get(f"{base}/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("service did not become healthy")


async def running_containers(run_id: str, seconds: float = 10.0) -> list:  # type: ignore[type-arg]
    """The run's containers, once it has any; AssertionError after ``seconds`` without."""
    deadline = time.monotonic() + seconds
    while True:
        containers = await asyncio.to_thread(labelled_containers, run_id)
        if containers:
            return containers
        if time.monotonic() > deadline:
            raise AssertionError("the node never got a container")
        await asyncio.sleep(0.1)


async def read_events(response: aiohttp.ClientResponse) -> list[tuple[str | None, Any]]:
    """(event, data) of an open SSE response, read until ``end``."""
    events: list[tuple[str | None, Any]] = []
    name = None
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[6:])))
            if name == "end":
                break
    return events


async def prewarm(
    session: aiohttp.ClientSession, base: str, node_def: dict[str, Any], seconds: float = 20
) -> None:
    """Run a node of ``node_def``'s image, tier and user once, then wait for its spare.

    A claim asks for spares of its shape; the run's own result does not matter.
    ``base``: the service's URL (a test client's, or a ``pipewell dev`` process's).
    """
    warm_up = {
        "Publisher": "test",
        "Name": "prewarm",
        "Image": node_def.get("Image", BUSYBOX),
        "Tier": node_def.get("Tier", "c-small"),
        "RunAsRoot": node_def.get("RunAsRoot", False),
        "MaxAttempts": 1,
        "Command": {"Name": "run", "Exec": "cp ${in} ${out}"},
    }
    body = {"Flow": chain_flow("prewarm"), "NodeDefs": [warm_up]}
    async with session.post(f"{base}/api/v1/flow/test", json=body) as response:
        assert response.status == 200, await response.text()
        run = await response.json()
    async with session.put(run["WaitingURLs"][0]["PutURL"], data=b"x") as response:
        assert response.status == 200, await response.text()
    deadline = time.monotonic() + seconds
    while True:
        async with session.get(f"{base}/api/v1/flow/status/{run['ID']}") as response:
            ended = (await response.json())["Status"] in ("COMPLETE", "ERROR")
        async with session.get(f"{base}/api/v1/workers") as response:
            workers = {w["name"] for w in (await response.json())["workers"]}
        # Asked of the engine: the API names spares of images outside the catalog "other".
        ready = await asyncio.to_thread(running_spares, workers, warm_up["Image"])
        if ended and ready:
            return
        assert time.monotonic() < deadline, f"no spare of {warm_up['Image']} on {workers}"
        await asyncio.sleep(0.05)


def running_spares(workers: set[str], image: str) -> list[dict[str, Any]]:
    """Spares of ``image`` waiting now on the workers named ``workers``."""
    engine = docker.from_env()
    try:
        found = engine.api.containers(filters={"name": "pipewell-warm-", "status": "running"})
    finally:
        engine.close()
    return [
        c for c in found if c["Image"] == image and c["Labels"].get("pipewell.worker") in workers
    ]


def cached(run: dict[str, Any]) -> dict[str, Any]:
    """Node → where its reused outputs came from (``Cached``), None for a node that ran."""
    return {node: state.get("Cached") for node, state in run["NodeState"].items()}
