"""The service layer over the real engine, no Docker (``tests.engine``): submissions,
reads of runs live or stored, saved flows and their executions.

What it refuses it refuses before a run exists: a test of a refusal also checks
that no run was left behind, in the scheduler or in the state store.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any, BinaryIO

import pytest

from orchestrator.errors import FlowInvalid, InvalidInvocation, RunFinished, RunNotFound
from orchestrator.models import NodeStatus, RunStatus
from storage import StoreUnavailable
from tests.engine import CHAIN, Engine, node, nodedef, submission, writing
from tests.fakes import FakeExecutor


async def no_run_left(started: Engine, tenant: str = "default") -> None:
    assert started.scheduler.runs == {}
    assert await started.state.recent(tenant, 10) == []  # flushed first: nothing pending
    assert started.executor.tasks == []


async def dropped(started: Engine, run_id: str) -> None:
    """The scheduler forgets the run (as it does of old finished ones) once it is written."""
    await started.state.flush()
    started.scheduler.runs.pop(run_id)
    assert started.scheduler.live(run_id) is None


# ------------------------------------------------------------ submissions


def as_stream(data: bytes) -> Callable[[], BinaryIO]:
    return lambda: io.BytesIO(data)


@pytest.mark.parametrize("given", [bytes, as_stream], ids=["bytes", "stream"])
async def test_a_submission_with_inputs_writes_them_and_the_run_completes(engine, given):
    started = await engine()
    flow = submission([node("a", ["src"], ["out"])])

    inputs = {"src": (given(b"hello"), "text/plain")}
    flow_run = await started.submissions.submit(flow, inputs=inputs)

    assert flow_run.waiting_urls == []  # nothing to upload: the input is in place
    run = await started.settled(started.scheduler.runs[flow_run.id])
    assert run.status == RunStatus.COMPLETE
    assert started.read(run, "src") == (b"hello", "text/plain")
    assert set(run.run.artifacts) == {"src", "out"}
    [task] = started.executor.tasks
    key = started.stores.default.key_of_url(task.inputs[0].url)
    assert key == f"tenants/default/{run.id}/src"  # the node reads what was written


async def test_an_invalid_flow_is_refused_with_its_codes_and_leaves_no_run(engine):
    started = await engine()
    cycle = [node("a", ["y"], ["x"]), node("b", ["x"], ["y"])]
    flow = submission([*cycle, node("c", [], ["z"], uses="t/missing")])

    with pytest.raises(FlowInvalid) as caught:
        await started.submissions.submit(flow)

    found = sorted((e["code"], e["node"]) for e in caught.value.errors)
    assert found == [("FLOW_001", "a"), ("NODE_001", "c")]
    await no_run_left(started)


STATIC = [{"Edge": "src", "Source": "static", "Key": "inputs/photo.txt"}, {"Edge": "out"}]


async def test_a_static_well_whose_object_is_missing_is_well_010(engine):
    started = await engine()
    flow = submission([node("a", ["src"], ["out"])], DataWells=STATIC)
    # Where another tenant, or no namespace, would find it: not where acme's Key points.
    started.stores.default.write("inputs/photo.txt", io.BytesIO(b"x"))
    started.stores.default.write("tenants/default/inputs/photo.txt", io.BytesIO(b"x"))

    with pytest.raises(FlowInvalid) as caught:
        await started.submissions.submit(flow, tenant="acme")

    [entry] = caught.value.errors
    assert (entry["code"], entry["edge"], entry["store"]) == ("WELL_010", "src", "default")
    assert "(looked for 'tenants/acme/inputs/photo.txt'" in entry["message"]
    await no_run_left(started, "acme")
    # Once there, the same flow runs, reading it.
    started.stores.default.write("tenants/acme/inputs/photo.txt", io.BytesIO(b"x"))
    run = await started.settled(await started.submit(flow, tenant="acme"))
    assert run.status == RunStatus.COMPLETE
    assert run.run.artifacts["src"].object_name == "tenants/acme/inputs/photo.txt"


async def test_a_store_that_refuses_an_input_leaves_no_run(engine, monkeypatch):
    started = await engine()

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("store 'default': write failed: the backend is down")

    monkeypatch.setattr(started.stores.default, "write", refuse)
    flow = submission([node("a", ["src"], ["out"])])

    with pytest.raises(StoreUnavailable, match="write failed: the backend is down"):
        await started.submissions.submit(flow, inputs={"src": (b"{}", "application/json")})

    await no_run_left(started)


# ------------------------------------------------------------ reading runs


async def test_a_run_reads_the_same_live_and_stored(engine):
    started = await engine()
    runs = started.service.runs
    # One finished, one still waiting for an upload: read live, then from the database.
    finished = await started.settled(await started.run(CHAIN))
    waiting = await started.run([node("w", ["src"], ["out"])])
    assert waiting.status == RunStatus.WAITING

    for run in (finished, waiting):
        # Read live and dropped with no turn of the loop between: a late message (an
        # attempt's clean-up) changes both reads or neither.
        await started.state.flush()
        live_json = await runs.status_json(run.id)
        live = await runs.get(run.id)
        assert live is run.run
        started.scheduler.runs.pop(run.id)
        assert await runs.status_json(run.id) == live_json
        assert await runs.get(run.id) == live
    assert json.loads(live_json)["WaitingURLs"][0]["Artifact"]["EdgeName"] == "src"


async def test_another_tenants_run_is_not_found_live_or_stored(engine):
    executor = FakeExecutor(hold={"a"})
    started = await engine(executor)
    runs = started.service.runs
    run = await started.submit(submission(CHAIN), tenant="acme")

    async def refused_to_others() -> None:
        for read in (runs.get, runs.status_json, runs.resolve, runs.flow_of, runs.cancel):
            with pytest.raises(RunNotFound, match=f"flow run '{run.id}' does not exist"):
                await read(run.id, "other")
        assert (await runs.get(run.id, "acme")).id == run.id

    await refused_to_others()
    assert run.status == RunStatus.RUNNING  # the cancel did not reach it
    executor.open_gate()
    await started.settled(run)
    await dropped(started, run.id)
    await refused_to_others()


async def test_cancelling_a_finished_run_is_refused_live_or_stored(engine):
    started = await engine()
    runs = started.service.runs
    run = await started.settled(await started.run(CHAIN))

    async def refused() -> None:
        with pytest.raises(RunFinished, match="has ended already \\(COMPLETE\\)") as caught:
            await runs.cancel(run.id, "default")
        assert caught.value.status == "COMPLETE"

    await refused()
    await dropped(started, run.id)
    await refused()
    assert (await runs.get(run.id)).status == RunStatus.COMPLETE


# ------------------------------------------------------------ saved flows, executions


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(24))


async def test_a_saved_flow_runs_on_a_json_input_and_its_outputs_are_decoded(engine):
    executor = FakeExecutor()
    started = await engine(executor)
    executor.behaviours["a"] = writing(
        started.stores.default,
        {
            "out0": (b'{"x": [1, 2]}', "application/json"),
            "out1": (b"hello there", "text/plain; charset=utf-8"),
            "out2": (PNG, "image/png"),
        },
    )
    flow = submission([node("a", ["question"], ["answer", "note", "picture"])])
    saved, created = await started.service.flows.save("acme", flow)
    assert created

    flow_run = await started.service.executions.start("acme", saved, {"q": "why?"})

    run = await started.settled(started.scheduler.runs[flow_run.id])
    assert run.status == RunStatus.COMPLETE and run.tenant == "acme"
    assert started.read(run, "question") == (b'{"q":"why?"}', "application/json")
    outcome = await started.service.executions.outcome(run.run)
    assert (outcome.success, outcome.error) == (True, None)
    picture = outcome.outputs.pop("picture")
    assert outcome.outputs == {"answer": {"x": [1, 2]}, "note": {"text": "hello there"}}
    assert (picture["content_type"], picture["size"]) == ("image/png", len(PNG))
    # A presigned GET of the picture's own object.
    key = started.stores.default.key_of_url(picture["url"])
    assert key == run.artifact_for("picture").object_name


WIDTH = nodedef(Flags=[{"Name": "width", "Type": "integer", "Min": 1, "Max": 100}])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"a": {"width": 500}}, "flags: a.width is '500', which is out of range; use 1 to 100"),
        (
            {"a": {"width": "wide"}},
            "flags: a.width is 'wide', which is not an integer; write a whole number such as 800",
        ),
        ({"a": {"width": [5]}}, "flags: a.width must be a string, number or boolean"),
        ({"a": {"height": 5}}, "flags: node 'a' has no flag 'height'; its flags are 'width'"),
        ({"z": {"width": 5}}, "flags: the flow has no node 'z'; its nodes are 'a'"),
        (["a"], "flags must be an object {node_id: {flag: value}}"),
    ],
)
async def test_flag_values_that_do_not_fit_are_flags_invalid(engine, flags, message):
    started = await engine()
    flows = started.service.flows
    flow = submission([node("a", [], ["out"])], [WIDTH])
    assert flows.check_flags(flow, {"a": {"width": 50}}, what="flags") == {"a": {"width": "50"}}

    with pytest.raises(InvalidInvocation) as caught:
        flows.check_flags(flow, flags, what="flags")
    assert (caught.value.code, caught.value.message) == ("FLAGS_INVALID", message)

    saved, _ = await flows.save("acme", flow)
    with pytest.raises(InvalidInvocation) as caught:
        await started.service.executions.start("acme", saved, {}, flags=flags)
    assert (caught.value.code, caught.value.message) == ("FLAGS_INVALID", message)
    await no_run_left(started, "acme")


async def test_json_for_an_edge_that_takes_a_file_is_input_invalid(engine):
    started = await engine()
    zipped = nodedef(Inputs=[{"Name": "in0", "Type": ["application/zip"]}])
    flow = submission([node("a", ["archive"], ["out"])], [zipped])
    saved, _ = await started.service.flows.save("acme", flow)

    with pytest.raises(InvalidInvocation) as caught:
        await started.service.executions.start("acme", saved, {"name": "photos"})

    assert caught.value.code == "INPUT_INVALID"
    assert caught.value.message.startswith(
        "input for edge 'archive' must be a file (application/zip), not JSON: send "
        '{"base64": "…", "content_type": "application/zip"}'
    )
    await no_run_left(started, "acme")


async def test_a_config_profiles_flag_values_reach_the_node(engine):
    started = await engine()
    flow = submission([node("a", [], ["out"])], [WIDTH])
    saved, _ = await started.service.flows.save("acme", flow)
    await started.service.flows.put_config(saved, "wide", {"a": {"width": 5}})
    flow_run = await started.service.executions.start("acme", saved, {}, config_id="wide")
    run = await started.settled(started.scheduler.runs[flow_run.id])
    assert run.status == RunStatus.COMPLETE
    assert started.executor.tasks[0].flags == {"width": "5"}
    assert run.state("a").status == NodeStatus.COMPLETE
