"""Every guarantee of the node contract, in every launch mode.

``launched`` runs each test three times: plain (a container created per attempt),
gated without a spare (each attempt makes its own gated container), and gated
with a spare of the node's shape ready before the run. A difference between
them fails here, not in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time

import docker
import docker.errors
import pytest

from tests.conftest import Launched
from tests.helpers import (
    BUSYBOX,
    artifact,
    busybox_def,
    chain_flow,
    containers_left,
    run_chain,
    running_containers,
    submit,
    upload,
    wait_for,
)

pytestmark = pytest.mark.docker

HOSTILE = 'it\'s "quoted" $(touch /tmp/pwned) `id` ; echo no\nsecond line\\'
UID_AND_COPY = "sh -c 'id -u; cat ${in} > ${out}'"


async def test_outputs_move_through_the_store(launched: Launched):
    client = await launched.start()
    defs = [
        busybox_def("upper", "sh -c 'tr a-z A-Z < ${in} > ${out}'"),
        busybox_def("stamp", "sh -c 'cat ${in} > ${out}; echo \" $PIPEWELL_NODE_ID\" >> ${out}'"),
    ]
    await launched.ready(client, *defs)
    run, done = await run_chain(client, defs, "upper", "stamp", data=b"hello pipewell")
    assert done["Status"] == "COMPLETE", done
    assert await artifact(client, run["ID"], "out") == b"HELLO PIPEWELL n1\n"
    assert all(s["Status"] == "COMPLETE" and s["Attempt"] == 1 for s in done["NodeState"].values())
    assert await containers_left(run["ID"], 10) == []


async def test_a_line_reaches_a_subscriber_while_the_node_runs(launched: Launched):
    client = await launched.start()
    talk = busybox_def("talk", "sh -c 'echo started; sleep 4; echo done >&2; cp ${in} ${out}'")
    await launched.ready(client, talk)
    run = await submit(client, chain_flow("talk"), [talk])
    seen: dict[str, float] = {}
    async with client.get(f"/api/v1/flow/events/{run['ID']}") as events:
        await upload(client, run, "src", b"x")
        event = None
        async for raw in events.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: ") and event == "log":
                message = json.loads(line[len("data: ") :])["message"]
                seen.setdefault(message, time.monotonic())
            elif line.startswith("data: ") and event == "end":
                seen["(end)"] = time.monotonic()
                break
    assert set(seen) >= {"started", "done", "(end)"}, seen
    # Printed 4 s before the node ended: it arrived then, not with the result.
    assert seen["(end)"] - seen["started"] > 3, seen


async def test_a_failed_attempt_is_retried_with_its_reason(launched: Launched):
    client = await launched.start()
    flaky = busybox_def(
        "flaky",
        "sh -c 'if [ $PIPEWELL_ATTEMPT -lt 2 ]; then echo failing >&2; exit 3; fi; "
        "cp ${in} ${out}'",
        MaxAttempts=3,
    )
    await launched.ready(client, flaky)
    run, done = await run_chain(client, [flaky], "flaky", data=b"payload")
    assert done["Status"] == "COMPLETE", done
    state = done["NodeState"]["n0"]
    assert state["Attempt"] == 2 and state["Error"] == ""
    messages = [r["message"] for r in state["Logs"]]
    assert any("attempt 1 of 3 failed: command exited with code 3: failing" in m for m in messages)
    assert await artifact(client, run["ID"], "out") == b"payload"


async def test_retries_exhausted_end_the_run_with_the_reason(launched: Launched):
    client = await launched.start()
    broken = busybox_def("broken", "sh -c 'echo no luck >&2; exit 7'", MaxAttempts=2)
    await launched.ready(client, broken)
    run, done = await run_chain(client, [broken], "broken")
    assert done["Status"] == "ERROR"
    state = done["NodeState"]["n0"]
    assert state["Attempt"] == 2 and state["MaxAttempts"] == 2
    assert state["Error"] == "command exited with code 7: no luck"
    assert await containers_left(run["ID"], 10) == []


async def test_out_of_memory_is_named_with_the_limit(launched: Launched):
    client = await launched.start()
    hog = busybox_def("hog", "tail /dev/zero", Tier="c-nano", MaxAttempts=1)
    await launched.ready(client, hog)
    _run, done = await run_chain(client, [hog], "hog")
    assert done["Status"] == "ERROR"
    assert done["NodeState"]["n0"]["Error"].startswith("out of memory (limit 512 MiB, tier c-nano)")


async def test_a_timeout_kills_the_container(launched: Launched):
    client = await launched.start()
    sleepy = busybox_def("sleepy", "sleep 60", Timeout=2, MaxAttempts=1)
    await launched.ready(client, sleepy)
    began = time.monotonic()
    run, done = await run_chain(client, [sleepy], "sleepy", timeout=30)
    assert time.monotonic() - began < 20
    assert done["Status"] == "ERROR"
    assert done["NodeState"]["n0"]["Error"].startswith("timed out after 2 s")
    assert await containers_left(run["ID"], 10) == []


async def test_cancelling_a_run_kills_its_container(launched: Launched):
    client = await launched.start()
    slow = busybox_def("slow", "sleep 60")
    await launched.ready(client, slow)
    run = await submit(client, chain_flow("slow"), [slow])
    await upload(client, run, "src", b"x")
    [container] = await running_containers(run["ID"])
    warm = container.attrs["Labels"]["pipewell.run_id"] == ""
    assert warm == (launched.mode == "gated-spare")
    response = await client.post(f"/api/v1/flow/cancel/{run['ID']}")
    assert response.status == 200, await response.text()
    done = await wait_for(client, run["ID"], {"STOPPED", "ERROR", "COMPLETE"}, timeout=20)
    assert done["Status"] == "STOPPED"
    assert await containers_left(run["ID"], 15) == []


async def test_hostile_flag_values_arrive_intact_and_nothing_in_them_runs(launched: Launched):
    client = await launched.start()
    echo = busybox_def(
        "echo",
        'sh -c \'printf "%s|%s|%s" "$1" "$FLAG_MODE" "$(cat ${in})" > ${out}\' argv0 ${mode}',
        Flags=[{"Name": "mode"}],
    )
    await launched.ready(client, echo)
    flow = chain_flow("echo")
    flow["Nodes"][0]["Flags"] = [{"Name": "mode", "Value": HOSTILE}]
    run = await submit(client, flow, [echo])
    await upload(client, run, "src", b"payload")
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == "COMPLETE", done["NodeState"]["n0"]
    assert await artifact(client, run["ID"], "out") == f"{HOSTILE}|{HOSTILE}|payload".encode()
    logs = [r["message"] for r in done["NodeState"]["n0"]["Logs"]]
    assert not any("pwned" in m or m.startswith("uid=") or m == "no" for m in logs), logs


@pytest.mark.parametrize("trick", ["ln -s /etc/hostname ${out}", "mkfifo ${out}", "mkdir ${out}"])
async def test_an_output_that_is_not_a_regular_file_is_refused(launched: Launched, trick):
    # With mounted directories the container controls what stands at the output
    # path: a symlink must not leak a file of the worker's machine, a FIFO must
    # not block the worker.
    client = await launched.start()
    node = busybox_def("trick", f"sh -c '{trick}'", MaxAttempts=1)
    await launched.ready(client, node)
    _run, done = await run_chain(client, [node], "trick", timeout=30)
    assert done["Status"] == "ERROR"
    assert done["NodeState"]["n0"]["Error"] == (
        "output 'out': /pipewell/out/out is not a regular file"
    )


def uid_logged(state: dict) -> str:
    return next(r["message"] for r in state["Logs"] if r["stream"] == "stdout")


async def test_a_node_runs_as_nobody_unless_it_asks_for_root(launched: Launched):
    client = await launched.start()
    nobody = busybox_def("nobody", UID_AND_COPY)
    rooted = busybox_def("rooted", UID_AND_COPY, RunAsRoot=True)
    await launched.ready(client, nobody, rooted)
    for node, uid in ((nobody, "65534"), (rooted, "0")):
        run, done = await run_chain(client, [node], node["Name"], data=b"in")
        assert done["Status"] == "COMPLETE", done["NodeState"]["n0"]
        assert uid_logged(done["NodeState"]["n0"]) == uid
        assert await artifact(client, run["ID"], "out") == b"in"


@pytest.fixture(scope="module")
def image_with_a_user():
    """An image whose config names its own unprivileged user."""
    engine = docker.from_env()
    tag = "pipewell/test-launch-own-user:latest"
    dockerfile = f"FROM {BUSYBOX}\nUSER 1234:1234\n".encode()
    engine.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True)
    yield tag
    with contextlib.suppress(docker.errors.APIError):  # still used by a spare: it is tiny
        engine.images.remove(tag)
    engine.close()


async def test_an_image_with_its_own_user_keeps_it(launched: Launched, image_with_a_user):
    client = await launched.start()
    own = busybox_def("own", UID_AND_COPY, Image=image_with_a_user)
    await launched.ready(client, own)
    run, done = await run_chain(client, [own], "own", data=b"mine")
    assert done["Status"] == "COMPLETE", done["NodeState"]["n0"]
    assert uid_logged(done["NodeState"]["n0"]) == "1234"
    assert await artifact(client, run["ID"], "out") == b"mine"


@pytest.fixture(scope="module")
def image_with_an_entrypoint():
    """An image whose Entrypoint writes its arguments, with a Cmd as the default ones."""
    engine = docker.from_env()
    tag = "pipewell/test-launch-entrypoint:latest"
    dockerfile = (
        f"FROM {BUSYBOX}\n"
        'ENTRYPOINT ["sh", "-c", "echo \\"$*\\" > $OUTPUT_OUT", "entry"]\n'
        'CMD ["from", "cmd"]\n'
    ).encode()
    engine.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True)
    yield tag
    with contextlib.suppress(docker.errors.APIError):  # still used by a spare: it is tiny
        engine.images.remove(tag)
    engine.close()


async def test_the_images_entrypoint_and_cmd_apply_as_docker_applies_them(
    launched: Launched, image_with_an_entrypoint
):
    client = await launched.start()
    given = busybox_def("given", "x 'y z'", Image=image_with_an_entrypoint)
    default = busybox_def("default", Image=image_with_an_entrypoint)
    for node, expected in ((given, b"x y z\n"), (default, b"from cmd\n")):
        await launched.ready(client, node)
        run, done = await run_chain(client, [node], node["Name"])
        assert done["Status"] == "COMPLETE", done["NodeState"]["n0"]
        assert await artifact(client, run["ID"], "out") == expected


async def test_the_spare_is_what_the_attempt_runs_in(launched: Launched):
    """The fixture's promise: in gated-spare mode the attempt claims a spare made before it."""
    client = await launched.start()
    copy = busybox_def("copy", "sh -c 'sleep 1; cp ${in} ${out}'")
    await launched.ready(client, copy)
    run = await submit(client, chain_flow("copy"), [copy])
    await upload(client, run, "src", b"x")
    [container] = await running_containers(run["ID"])
    labels = container.attrs["Labels"]
    assert (labels["pipewell.run_id"] == "") == (launched.mode == "gated-spare")
    entrypoint = await asyncio.to_thread(_entrypoint_of, container.id)
    assert (entrypoint[0] == "/.pipewell/busybox") == launched.mode.startswith("gated")
    done = await wait_for(client, run["ID"], {"COMPLETE", "ERROR"})
    assert done["Status"] == "COMPLETE", done["NodeState"]["n0"]


def _entrypoint_of(container_id: str) -> list[str]:
    engine = docker.from_env()
    try:
        return engine.api.inspect_container(container_id)["Config"]["Entrypoint"] or [""]
    finally:
        engine.close()
