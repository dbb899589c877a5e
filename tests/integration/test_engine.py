"""The engine end to end through the native API, real containers on the real Docker engine."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from tests.helpers import (
    artifact,
    busybox_def,
    chain_flow,
    containers_left,
    run_chain,
    submit,
    upload,
    wait_for,
)

pytestmark = pytest.mark.docker


async def test_parallel_branches_overlap_in_time(start_service):
    client = await start_service()
    defs = [busybox_def("slow", "sh -c 'echo begin; sleep 2; echo end; cp ${in} ${out}'")]
    flow = {
        "Name": "fan",
        "Nodes": [
            {
                "ID": f"b{i}",
                "Uses": "test/slow",
                "Inputs": [{"Name": "in", "Edge": "src"}],
                "Outputs": [{"Name": "out", "Edge": f"out{i}"}],
            }
            for i in range(3)
        ],
    }
    run = await submit(client, flow, defs)
    await upload(client, run, "src", b"x")
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == "COMPLETE", done
    spans = []
    for state in done["NodeState"].values():
        stamps = {
            r["message"]: datetime.fromisoformat(r["timestamp"])
            for r in state["Logs"]
            if r["stream"] == "stdout"
        }
        spans.append((stamps["begin"], stamps["end"]))
    # Every branch started before any of them ended: they ran at the same time.
    assert max(start for start, _ in spans) < min(end for _, end in spans)


async def test_tier_limits_are_visible_inside_the_container(start_service):
    client = await start_service()
    script = (
        "sh -c '{ cat /sys/fs/cgroup/memory/memory.limit_in_bytes "
        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/pids/pids.max "
        "|| cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max /sys/fs/cgroup/pids.max; } "
        "> ${out} 2>/dev/null; id -u >> ${out}; cat /proc/self/status | grep CapEff >> ${out}'"
    )
    defs = [busybox_def("limits", script, Tier="c-nano")]
    run, done = await run_chain(client, defs, "limits")
    assert done["Status"] == "COMPLETE", done
    lines = (await artifact(client, run["ID"], "out")).decode().split("\n")
    assert lines[0] == "536870912"  # 512 MiB
    assert lines[1] in ("100000", "100000 100000")  # one CPU
    assert lines[2] == "512"
    assert lines[4].split() == ["CapEff:", "0000000000000000"]


async def test_network_is_off_inside_the_container(start_service):
    client = await start_service()
    defs = [busybox_def("net", "sh -c 'ls /sys/class/net > ${out}'")]
    run, done = await run_chain(client, defs, "net")
    assert done["Status"] == "COMPLETE", done
    assert (await artifact(client, run["ID"], "out")).split() == [b"lo"]


async def test_missing_output_fails_the_attempt(start_service):
    client = await start_service()
    defs = [busybox_def("lazy", "true", MaxAttempts=1)]
    run, done = await run_chain(client, defs, "lazy")
    assert done["NodeState"]["n0"]["Error"] == (
        "output 'out' missing: the command exited 0 but did not write /pipewell/out/out"
    )


async def test_missing_image_says_it_could_not_be_pulled(start_service):
    client = await start_service()
    defs = [
        {"Publisher": "test", "Name": "ghost", "Image": "pipewell/ghost:latest", "MaxAttempts": 1}
    ]
    run, done = await run_chain(client, defs, "ghost")
    assert done["NodeState"]["n0"]["Error"].startswith(
        "image pipewell/ghost:latest not found locally and could not be pulled: "
    )


async def test_flags_and_paths_reach_the_container_as_env_vars(start_service):
    # No Command: the image's own CMD runs; it finds its files through the env vars.
    client = await start_service()
    flow = chain_flow("env")
    flow["Nodes"][0]["Flags"] = [{"Name": "greeting", "Value": "hi there"}]
    defs = [
        {
            "Publisher": "test",
            "Name": "env",
            "Image": "pipewell/busybox:latest",
            "Command": {
                "Name": "run",
                "Exec": "sh -c 'echo \"$FLAG_GREETING|$INPUT_IN|$OUTPUT_OUT\" > $OUTPUT_OUT'",
            },
        }
    ]
    run = await submit(client, flow, defs)
    await upload(client, run, "src", b"plain text")
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == "COMPLETE", done
    assert await artifact(client, run["ID"], "out") == (
        b"hi there|/pipewell/in/in.txt|/pipewell/out/out\n"
    )


async def test_unoffered_tier_waits_with_a_message(start_service):
    client = await start_service()
    defs = [busybox_def("big", "true", Tier="c-4xlarge")]
    run = await submit(client, chain_flow("big"), defs)
    await upload(client, run, "src", b"x")
    for _ in range(50):
        state = await (await client.get(f"/api/v1/flow/status/{run['ID']}")).json()
        logs = state["NodeState"]["n0"]["Logs"]
        if logs:
            break
        await asyncio.sleep(0.1)
    assert state["NodeState"]["n0"]["Status"] == "READY"
    assert state["Status"] == "RUNNING"
    assert logs[0]["level"] == "warning"
    assert logs[0]["message"].startswith("waiting: no worker offers tier c-4xlarge (64 CPU")


async def test_logs_stream_with_timestamps_and_streams(start_service):
    client = await start_service()
    defs = [busybox_def("talk", "sh -c 'echo to-out; echo to-err >&2; cp ${in} ${out}'")]
    run, done = await run_chain(client, defs, "talk")
    logs = done["NodeState"]["n0"]["Logs"]
    by_stream = {(r["stream"], r["message"]) for r in logs}
    assert ("stdout", "to-out") in by_stream
    assert ("stderr", "to-err") in by_stream
    for record in logs:
        datetime.fromisoformat(record["timestamp"])


async def test_no_container_is_left_behind(start_service):
    client = await start_service()
    defs = [busybox_def("fail", "sh -c 'exit 1'", MaxAttempts=2)]
    run = await submit(client, chain_flow("fail"), defs)
    await upload(client, run, "src", b"x")
    await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    # Removal follows the result (off the critical path): give it a moment.
    assert await containers_left(run["ID"], 5) == []


async def test_every_attempt_phase_is_timed(start_service):
    client = await start_service()
    run = await submit(client, chain_flow("copy"), [busybox_def("copy", "cp ${in} ${out}")])
    await upload(client, run, "src", b"x" * 1000)
    await wait_for(client, run["ID"], {"COMPLETE"})
    for _ in range(50):
        timings = (await (await client.get(f"/api/v1/flow/status/{run['ID']}")).json())[
            "NodeState"
        ]["n0"]["Timings"]
        if "remove" in timings:
            break
        await asyncio.sleep(0.1)
    phases = {"queue_wait", "presign", "input_transfer", "create", "start", "run",
              "output_transfer", "remove"}  # fmt: skip
    assert set(timings) == phases
    assert all(0 <= seconds < 30 for seconds in timings.values())
    assert timings["run"] > 0


async def test_archive_transfer_mode_runs_the_same_flows(start_service):
    client = await start_service(executor={"transfer": "archive"})
    defs = [
        busybox_def("upper", "sh -c 'tr a-z A-Z < ${in} > ${out}'"),
        busybox_def("lazy", "true", MaxAttempts=1),
    ]
    run, done = await run_chain(client, defs, "upper", data=b"through the engine api")
    assert done["Status"] == "COMPLETE", done
    assert await artifact(client, run["ID"], "out") == b"THROUGH THE ENGINE API"
    run, done = await run_chain(client, defs, "lazy")
    assert done["NodeState"]["n0"]["Error"] == (
        "output 'out' missing: the command exited 0 but did not write /pipewell/out/out"
    )


async def test_inputs_are_read_only_inside_the_container(start_service):
    client = await start_service()
    defs = [busybox_def("scribble", "sh -c 'echo x >> ${in} 2>&1; cat ${in} > ${out}'")]
    run, done = await run_chain(client, defs, "scribble", data=b"original\n")
    assert done["Status"] == "COMPLETE", done
    assert await artifact(client, run["ID"], "out") == b"original\n"


async def test_a_failed_node_stops_its_running_siblings(start_service):
    client = await start_service()
    defs = [busybox_def("fail", "sh -c 'sleep 1; exit 4'", MaxAttempts=1),
            busybox_def("long", "sh -c 'sleep 60; cp ${in} ${out}'")]  # fmt: skip
    flow = {"Name": "siblings", "Nodes": [
        {"ID": "bad", "Uses": "test/fail", "Inputs": [{"Name": "in", "Edge": "src"}],
         "Outputs": [{"Name": "out", "Edge": "o1"}]},
        {"ID": "slow", "Uses": "test/long", "Inputs": [{"Name": "in", "Edge": "src"}],
         "Outputs": [{"Name": "out", "Edge": "o2"}]},
    ]}  # fmt: skip
    run = await submit(client, flow, defs)
    await upload(client, run, "src", b"x")
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"}, timeout=30)
    assert done["Status"] == "ERROR"
    assert done["NodeState"]["bad"]["Error"].startswith("command exited with code 4")
    assert done["NodeState"]["bad"]["Status"] == "ERROR"
    assert done["NodeState"]["slow"]["Status"] == "STOPPED"
    assert done["NodeState"]["slow"]["Error"] == "stopped: node 'bad' failed, which ended the run"
    # Well before the sibling's 60 s sleep would end.
    assert await containers_left(run["ID"], 10) == []
