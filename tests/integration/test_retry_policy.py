"""A NodeDef's Retry policy on real containers: exit codes not worth a retry fail the
node at once; an out-of-memory kill moves the next attempt up a tier."""

from __future__ import annotations

import pytest

from tests.helpers import busybox_def, run_chain

pytestmark = pytest.mark.docker

#: About 700 MiB touched at once: over c-nano's 512 MiB, within c-micro's 1 GiB.
HOG = "sh -c 'dd if=/dev/zero of=/dev/null bs=700M count=1 && cp ${in} ${out}'"


async def test_an_exit_code_not_worth_a_retry_fails_at_once(start_service):
    client = await start_service()
    picky = busybox_def(
        "picky",
        "sh -c 'echo not a PNG >&2; exit 2'",
        MaxAttempts=3,
        Retry={"FailExitCodes": [2, 65]},
    )
    _run, done = await run_chain(client, [picky], "picky")
    assert done["Status"] == "ERROR"
    state = done["NodeState"]["n0"]
    assert state["Attempt"] == 1
    assert state["Error"] == (
        "command exited with code 2: not a PNG (exit code 2 is one of the NodeDef's "
        "Retry.FailExitCodes: not retried)"
    )
    # Another code is retried as before.
    other = busybox_def("other", "sh -c 'exit 3'", MaxAttempts=2, Retry={"FailExitCodes": [2]})
    _run, done = await run_chain(client, [other], "other")
    assert done["NodeState"]["n0"]["Attempt"] == 2


async def test_out_of_memory_moves_the_next_attempt_up_a_tier(start_service):
    client = await start_service()
    hog = busybox_def("hog", HOG, Tier="c-nano", MaxAttempts=2, Retry={"TierUpOnOOM": True})
    _run, done = await run_chain(client, [hog], "hog")
    state = done["NodeState"]["n0"]
    assert done["Status"] == "COMPLETE", state
    assert state["Attempt"] == 2
    assert state["Tier"] == "c-micro"
    lines = [line["message"] for line in state["Logs"] if line["stream"] == "pipewell"]
    assert any(
        "out of memory (limit 512 MiB, tier c-nano)" in line
        and "the next attempt runs on tier c-micro (1024 MiB, Retry.TierUpOnOOM)" in line
        for line in lines
    ), lines

    # Without the policy the same node runs out of memory on every attempt (on other
    # bytes: the same work would be the first run's, reused from the cache).
    plain = busybox_def("plain-hog", HOG, Tier="c-nano", MaxAttempts=2)
    _run, done = await run_chain(client, [plain], "plain-hog", data=b"other bytes")
    assert done["Status"] == "ERROR"
    assert done["NodeState"]["n0"]["Error"].startswith("out of memory (limit 512 MiB")
    assert "Tier" not in done["NodeState"]["n0"]
