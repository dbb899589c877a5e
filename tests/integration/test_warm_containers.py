"""Gated and warm containers: started ahead of demand, claimed by attempts, run as Docker would."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import aiohttp
import docker
import docker.errors
import pytest
import structlog
import structlog.testing
import yaml

from orchestrator.api.resources import SETTINGS
from orchestrator.executor.gate import (
    _EXEC_BY_PATH,
    GATE_DIR,
    GATE_SCRIPT,
    _is_static_elf,
    gate_command,
    hold_gate,
    open_gate,
    prepare_gate,
    static_busybox,
)
from orchestrator.executor.gate import BUSYBOX as BUSYBOX_IN_CONTAINER
from tests.helpers import (
    BUSYBOX,
    RESIZE,
    artifact,
    busybox_def,
    chain_flow,
    containers_left,
    free_port,
    prewarm,
    run_chain,
    running_containers,
    start_dev,
    submit,
    upload,
    wait_for,
    wait_healthy,
)

pytestmark = pytest.mark.docker

BASE = "pipewell/base:bookworm"
HOSTILE = 'it\'s "quoted" $(touch /tmp/pwned) `id` ; echo no\nsecond line\\'


def warm_containers(worker: str) -> list[dict]:
    """The worker's warm containers, as ``docker ps`` lists them."""
    engine = docker.from_env()
    try:
        found = engine.containers.list(
            all=True, sparse=True, filters={"label": f"pipewell.worker={worker}"}
        )
        return [c.attrs for c in found if c.attrs["Names"][0].startswith("/pipewell-warm-")]
    finally:
        engine.close()


async def wait_warm(worker: str, count: int, seconds: float = 20) -> list[dict]:
    deadline = time.monotonic() + seconds
    while True:
        warm = await asyncio.to_thread(warm_containers, worker)
        if len([c for c in warm if c["State"] == "running"]) >= count:
            return warm
        assert time.monotonic() < deadline, warm
        await asyncio.sleep(0.1)


def worker_name(client) -> str:  # type: ignore[no-untyped-def]
    return client.app[SETTINGS].worker.resolved_name()


def test_the_static_busybox_is_found_and_a_dynamic_binary_is_not():
    found = static_busybox()
    assert found is not None and found.name == "busybox"
    ls = Path(shutil.which("ls") or "/bin/ls")
    assert not _is_static_elf(ls.read_bytes()[:4096], ls)


def test_the_gate_command_passes_every_value_as_one_word(tmp_path: Path):
    """What the container's busybox runs: hostile values stay data, argv arrives intact."""
    busybox = static_busybox()
    assert busybox is not None
    script = gate_command(
        {"FLAG_X": HOSTILE, "PIPEWELL_RUN_ID": "r1"},
        ["printf", "%s|", HOSTILE, "", "two words", "${FLAG_X}"],
    )
    done = subprocess.run(
        [str(busybox), "sh", "-c", script],
        capture_output=True,
        env={"PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        timeout=10,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == f"{HOSTILE}||two words|${{FLAG_X}}|"
    assert not Path("/tmp/pwned").exists()
    env = subprocess.run(
        [str(busybox), "sh", "-c", gate_command({"FLAG_X": HOSTILE}, ["env"])],
        capture_output=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=10,
    )
    assert f"FLAG_X={HOSTILE}\n".encode() in env.stdout


def test_a_program_found_in_path_keeps_its_name_as_argv0():
    busybox = static_busybox()
    assert busybox is not None
    first_arg = "import sys; print(open('/proc/self/cmdline').read().split(chr(0))[0])"
    done = subprocess.run(
        [str(busybox), "sh", "-c", gate_command({}, ["python3", "-c", first_arg])],
        capture_output=True,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin"},
        timeout=10,
    )
    assert done.stdout == b"python3\n", done.stderr


def test_a_program_missing_from_path_says_so(tmp_path: Path):
    busybox = static_busybox()
    assert busybox is not None
    done = subprocess.run(
        [str(busybox), "sh", "-c", "set -- no-such-program-here\n" + _EXEC_BY_PATH],
        capture_output=True,
        env={"PATH": str(tmp_path)},
        timeout=10,
    )
    assert done.returncode == 127
    assert b"no-such-program-here: executable file not found" in done.stderr


def gated_container(engine: docker.DockerClient, gate: Path, limit: int):  # type: ignore[no-untyped-def]
    busybox = static_busybox()
    assert busybox is not None
    prepare_gate(gate)
    return engine.containers.run(
        BUSYBOX,
        entrypoint=[BUSYBOX_IN_CONTAINER, "sh", "-c", GATE_SCRIPT],
        command=["pipewell-gate", str(limit)],
        user="65534:65534",
        network_mode="none",
        volumes={
            str(gate): {"bind": GATE_DIR, "mode": "ro"},
            str(busybox): {"bind": BUSYBOX_IN_CONTAINER, "mode": "ro"},
        },
        detach=True,
    )


def test_an_unclaimed_gated_container_gives_up_and_a_claimed_one_waits(tmp_path: Path):
    """A container its service never removed (SIGKILL) must not wait forever."""
    engine = docker.from_env()
    unclaimed = claimed = None
    try:
        unclaimed = gated_container(engine, tmp_path / "a", limit=1)
        claimed = gated_container(engine, tmp_path / "b", limit=1)
        alive = lambda: True  # noqa: E731
        hold_gate(tmp_path / "b", alive)
        assert unclaimed.wait(timeout=20)["StatusCode"] == 125
        time.sleep(1)
        claimed.reload()
        assert claimed.status == "running"  # past its limit: claimed, it waits on
        open_gate(
            tmp_path / "b", gate_command({"WORD": "opened"}, ["sh", "-c", 'echo "$WORD"']), alive
        )
        assert claimed.wait(timeout=20)["StatusCode"] == 0
        assert claimed.logs() == b"opened\n"
    finally:
        for container in (unclaimed, claimed):
            if container is not None:
                container.remove(force=True)
        engine.close()


async def test_an_attempt_runs_in_a_warm_container_with_its_own_values(start_service):
    client = await start_service()
    worker = worker_name(client)
    echo = busybox_def(
        "echo",
        'sh -c \'printf "%s|%s|%s|%s" "$1" "$FLAG_MODE" "$PIPEWELL_NODE_ID" '
        '"$(cat ${in})" > ${out}; sleep 1\' argv0 ${mode}',
        Flags=[{"Name": "mode"}],
    )
    # A first run asks for warm containers of this image, tier and user.
    first, done = await run_chain(client, [busybox_def("copy", "cp ${in} ${out}")], "copy")
    assert done["Status"] == "COMPLETE", done["NodeState"]["n0"]
    warm = await wait_warm(worker, 2)
    assert all(c["Labels"]["pipewell.run_id"] == "" for c in warm)

    flow = chain_flow("echo")
    flow["Nodes"][0]["Flags"] = [{"Name": "mode", "Value": HOSTILE}]
    run = await submit(client, flow, [echo])
    await upload(client, run, "src", b"payload")
    [container] = await running_containers(run["ID"])
    # Made before the run existed: labelled without it, named for it once claimed.
    assert container.attrs["Labels"]["pipewell.run_id"] == ""
    assert container.attrs["Labels"]["pipewell.attempt_id"] in {
        c["Labels"]["pipewell.attempt_id"] for c in warm
    }
    assert container.attrs["Names"][0].startswith(f"/pipewell-{run['ID']}-n0-1-")
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == "COMPLETE", done["NodeState"]["n0"]
    assert await artifact(client, run["ID"], "out") == f"{HOSTILE}|{HOSTILE}|n0|payload".encode()
    assert "create" in done["NodeState"]["n0"]["Timings"]
    assert await containers_left(run["ID"], 15) == []


async def test_a_gated_program_is_the_images_own_not_a_busybox_applet(start_service):
    """Debian's busybox prefers its applets: the node's `sort` must be the image's."""
    client = await start_service()
    which = busybox_def(
        "which",
        "sh -c 'readlink /proc/$$/exe > ${out}; sort --version | head -1 >> ${out}'",
        Image=BASE,
    )
    for _ in range(2):  # cold, then warm
        run, done = await run_chain(client, [which], "which")
        assert done["Status"] == "COMPLETE", done["NodeState"]["n0"]
        lines = (await artifact(client, run["ID"], "out")).decode().splitlines()
        assert lines[0] == "/usr/bin/dash"
        assert "GNU coreutils" in lines[1]
        await wait_warm(worker_name(client), 1)


async def test_a_warm_container_killed_while_waiting_is_not_the_nodes_failure(start_service):
    client = await start_service()
    worker = worker_name(client)
    copy = busybox_def("copy", "cp ${in} ${out}", MaxAttempts=1)
    await run_chain(client, [copy], "copy")
    warm = await wait_warm(worker, 2)
    engine = docker.from_env()
    try:
        for attrs in warm:
            engine.api.kill(attrs["Id"])
    finally:
        engine.close()
    run, done = await run_chain(client, [copy], "copy", data=b"still fine")
    assert done["Status"] == "COMPLETE", done["NodeState"]["n0"]
    assert done["NodeState"]["n0"]["Attempt"] == 1
    assert await artifact(client, run["ID"], "out") == b"still fine"


async def test_warm_containers_expire_and_can_be_turned_off(start_service, tmp_path):
    client = await start_service(executor={"warm_idle": 1})
    worker = worker_name(client)
    await run_chain(client, [busybox_def("copy", "cp ${in} ${out}")], "copy")
    await wait_warm(worker, 1)
    deadline = time.monotonic() + 15
    while await asyncio.to_thread(warm_containers, worker):
        assert time.monotonic() < deadline, "warm containers outlived executor.warm_idle"
        await asyncio.sleep(0.2)

    off = await start_service(tmp_path / "off", executor={"warm_containers": 0})
    run, done = await run_chain(off, [busybox_def("copy", "cp ${in} ${out}")], "copy", data=b"c")
    assert done["Status"] == "COMPLETE", done["NodeState"]["n0"]
    assert await artifact(off, run["ID"], "out") == b"c"
    await asyncio.sleep(1)
    assert await asyncio.to_thread(warm_containers, worker_name(off)) == []


def test_without_a_static_busybox_attempts_run_plain_and_the_log_says_why(tmp_path, monkeypatch):
    import orchestrator.executor.docker_executor as executor_module
    from orchestrator.config import ExecutorSettings

    monkeypatch.setattr(executor_module, "static_busybox", lambda: None)
    engine = docker.from_env()
    try:
        with structlog.testing.capture_logs() as logged:
            made = executor_module.DockerExecutor(
                engine, ExecutorSettings(), "w", "0" * 32, tmp_path / "work"
            )
    finally:
        engine.close()
    assert made.launch == "plain" and made.spares() == []
    [warning] = [e for e in logged if e["event"] == "launch_plain"]
    assert "busybox-static" in warning["fix"] and "busybox" in warning["reason"]


def worker_containers(worker: str) -> list[dict]:
    """Every container of the worker named ``worker``, any state (sparse listing)."""
    engine = docker.from_env()
    try:
        found = engine.containers.list(
            all=True, sparse=True, filters={"label": f"pipewell.worker={worker}"}
        )
        return [c.attrs for c in found]
    finally:
        engine.close()


async def run_copy_on(session: aiohttp.ClientSession, base: str, data: bytes = b"x") -> None:
    body = {"Flow": chain_flow("copy"), "NodeDefs": [busybox_def("copy", "cp ${in} ${out}")]}
    async with session.post(f"{base}/api/v1/flow/test", json=body) as response:
        run = await response.json()
    async with session.put(run["WaitingURLs"][0]["PutURL"], data=data) as response:
        assert response.status == 200
    for _ in range(300):
        async with session.get(f"{base}/api/v1/flow/status/{run['ID']}") as response:
            if (await response.json())["Status"] == "COMPLETE":
                return
        await asyncio.sleep(0.05)
    raise AssertionError("the copy run did not complete")


def dev_config(tmp_path: Path, worker: str, **executor: object) -> str:
    config = tmp_path / f"{worker}.yaml"
    config.write_text(yaml.safe_dump({"worker": {"name": worker}, "executor": executor}))
    return str(config)


async def test_a_graceful_stop_leaves_no_spare_behind(tmp_path):
    """SIGTERM right after a run, while its replacement spares are being made."""
    async with aiohttp.ClientSession() as session:
        for attempt in range(3):
            worker, port = f"test-stop-{attempt}-{free_port()}", free_port()
            base = f"http://127.0.0.1:{port}"
            with (tmp_path / f"service-{attempt}.log").open("ab") as log:
                process = start_dev(
                    tmp_path / f"data-{attempt}",
                    port,
                    log,
                    "--config",
                    dev_config(tmp_path, worker),
                )
                try:
                    await wait_healthy(session, base)
                    await run_copy_on(session, base)
                finally:
                    os.killpg(process.pid, signal.SIGTERM)
                    await asyncio.to_thread(process.wait, 30)
            assert await asyncio.to_thread(worker_containers, worker) == []


async def test_spares_of_a_killed_service_are_removed_by_any_other(start_service, tmp_path):
    """Nobody restarts the killed service on its data dir: its spares must still go."""
    worker, port = f"test-killed-{free_port()}", free_port()
    base = f"http://127.0.0.1:{port}"
    with (tmp_path / "service.log").open("ab") as log:
        process = start_dev(
            tmp_path / "killed", port, log, "--config", dev_config(tmp_path, worker, warm_idle=1)
        )
        try:
            async with aiohttp.ClientSession() as session:
                await wait_healthy(session, base)
                await run_copy_on(session, base)
            spares = await wait_warm(worker, 1)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            await asyncio.to_thread(process.wait, 30)
    # Each gives up at its deadline (warm_idle + 10 s) and exits...
    deadline = time.monotonic() + 30
    while any(c["State"] == "running" for c in await asyncio.to_thread(warm_containers, worker)):
        assert time.monotonic() < deadline, "a spare of the killed service is still waiting"
        await asyncio.sleep(0.5)
    left = await asyncio.to_thread(warm_containers, worker)
    assert {c["Id"] for c in spares} <= {c["Id"] for c in left}
    assert all(c["State"] == "exited" for c in left), left
    # ...and a service of another identity on the engine removes it when it starts.
    await start_service(tmp_path / "other")
    assert await asyncio.to_thread(worker_containers, worker) == []


async def test_workers_and_metrics_show_the_launch_mode_and_the_spares(start_service, tmp_path):
    gated = await start_service()
    base = str(gated.make_url("")).rstrip("/")
    await prewarm(gated.session, base, busybox_def("copy"))
    await prewarm(gated.session, base, busybox_def("resize", Image=RESIZE))
    [worker] = (await (await gated.get("/api/v1/workers")).json())["workers"]
    assert worker["launch"] == "gated"
    ready = {(s["image"], s["tier"]): s["ready"] for s in worker["spares"]}
    # A catalog image by its name; any other is a tenant's choice, counted as "other".
    assert ready[(RESIZE, "c-small")] >= 1 and ready[("other", "c-small")] >= 1, ready
    assert not any(BUSYBOX in image for image, _tier in ready)
    metrics = await (await gated.get("/metrics")).text()
    for image in (RESIZE, "other"):
        gauge = re.search(
            rf'^pipewell_warm_containers{{image="{image}",tier="c-small"}} (\S+)$', metrics, re.M
        )
        assert gauge is not None and float(gauge.group(1)) >= 1, metrics
    assert BUSYBOX not in metrics

    plain = await start_service(tmp_path / "plain", executor={"launch": "plain"})
    _run, done = await run_chain(plain, [busybox_def("copy", "cp ${in} ${out}")], "copy")
    assert done["Status"] == "COMPLETE", done["NodeState"]["n0"]
    [worker] = (await (await plain.get("/api/v1/workers")).json())["workers"]
    assert worker["launch"] == "plain" and worker["spares"] == []
    assert "\npipewell_warm_containers{" not in await (await plain.get("/metrics")).text()
