"""Who a node's container runs as (the executor's choice, without Docker)."""

from __future__ import annotations

import pytest

from orchestrator.executor.spec import UNPRIVILEGED_USER, container_user
from orchestrator.models import NodeDef


@pytest.mark.parametrize("image_user", ["", "root", "0", "root:root", "0:0"])
def test_an_image_without_a_user_or_with_root_runs_as_nobody(image_user):
    assert container_user(image_user, run_as_root=False) == UNPRIVILEGED_USER == "65534:65534"


@pytest.mark.parametrize("image_user", ["1000", "app", "app:app", "1000:0"])
def test_an_image_with_its_own_user_keeps_it(image_user):
    assert container_user(image_user, run_as_root=False) is None


@pytest.mark.parametrize("image_user", ["", "app"])
def test_run_as_root_runs_as_root(image_user):
    assert container_user(image_user, run_as_root=True) == "0"


def test_run_as_root_is_pascal_case_on_the_wire_and_off_by_default():
    fields = {"Publisher": "p", "Name": "n", "Image": "i"}
    plain = NodeDef.model_validate(fields)
    rooted = NodeDef.model_validate({**fields, "RunAsRoot": True})
    assert plain.run_as_root is False
    assert rooted.run_as_root is True
    assert rooted.model_dump()["RunAsRoot"] is True


# ------------------------------------------------------------------ a batch's log stream


def pumped(segments: list[list[tuple[bytes | None, bytes | None]]], tokens: list[str]):  # type: ignore[no-untyped-def]
    """What a batch's pump makes of a container's attach stream, one segment of frames per
    item (sent once the item is asked to run, as the batch's loop does), each item ended by
    its token: each item's lines and exit status."""
    import threading

    from orchestrator.executor.logs import BatchLogPump

    asked = [threading.Event() for _ in segments]

    def stream():  # type: ignore[no-untyped-def]
        for number, segment in enumerate(segments):
            assert asked[number].wait(5)
            yield from segment

    lines: dict[str, list[tuple[str, str]]] = {}
    pump = BatchLogPump(stream(), lambda record: None, 1)
    pump._thread.start()
    statuses = []
    for number, token in enumerate(tokens):
        own = lines.setdefault(token, [])
        ended = pump.expect(token, lambda r, own=own: own.append((r.stream, r.message)), 1)
        if number < len(asked):
            asked[number].set()
        assert ended.wait(5)
        statuses.append(ended.status)
    pump.join(5)
    return lines, statuses


def test_a_batchs_pump_gives_each_item_its_lines_up_to_its_marker_on_both_streams():
    a, b = "a" * 32, "b" * 32
    first = [
        (b"one\ntw", None),
        (None, b"oops\n"),
        (b"o\nunfinished" + f"{a} 0\n".encode(), None),
        # Its stderr is not done until its marker there: the item has not ended yet.
        (None, b"late\n" + f"{a} 0\n".encode()),
    ]
    second = [
        (b"b says hi\n" + f"{'c' * 32} 5\n".encode(), None),  # another token: a line
        (None, f"{b} 3\n".encode()),
        (f"{b} 3\n".encode(), None),
    ]
    lines, statuses = pumped([first, second], [a, b])
    assert statuses == [0, 3]
    assert lines[a] == [
        ("stdout", "one"),
        ("stderr", "oops"),
        ("stdout", "two"),
        ("stdout", "unfinished"),
        ("stderr", "late"),
    ]
    assert lines[b] == [("stdout", "b says hi"), ("stdout", f"{'c' * 32} 5")]


def test_a_batchs_pump_ends_the_item_without_a_status_when_the_stream_ends():
    a, b = "a" * 32, "b" * 32
    lines, statuses = pumped([[(b"started\npartial", None)]], [a, b])
    assert statuses == [None, None]  # and the next item finds the stream ended
    assert lines[a] == [("stdout", "started"), ("stdout", "partial")]
    assert lines[b] == []
