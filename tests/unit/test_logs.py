"""The service's log lines: JSON objects off a terminal, key=value lines on one."""

from __future__ import annotations

import io
import json
import logging
import re
import secrets
import time
from collections.abc import Iterator

import pytest
import structlog

from orchestrator.logs import configure_logging


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restored() -> Iterator[None]:
    saved, root = structlog.get_config(), logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**saved)
    root.handlers, root.level = handlers, level


def test_off_a_terminal_every_line_is_a_json_object_with_its_bound_context():
    written = io.StringIO()
    configure_logging("info", "auto", written)
    with structlog.contextvars.bound_contextvars(run_id="r1", node_id="n", attempt=2):
        structlog.get_logger("pipewell").info("attempt_finished", outcome="failed")
    logging.getLogger("aiohttp.server").error("Error handling request")
    structlog.get_logger("pipewell").debug("not_shown")
    ours, stdlib = (json.loads(line) for line in written.getvalue().splitlines())
    assert {k: ours[k] for k in ("event", "level", "run_id", "node_id", "attempt", "outcome")} == {
        "event": "attempt_finished",
        "level": "info",
        "run_id": "r1",
        "node_id": "n",
        "attempt": 2,
        "outcome": "failed",
    }
    assert ours["timestamp"].endswith("Z")
    assert (stdlib["event"], stdlib["level"], stdlib["logger"]) == (
        "Error handling request",
        "error",
        "aiohttp.server",
    )


def test_on_a_terminal_lines_are_for_people_and_json_can_be_asked_for():
    screen = Terminal()
    configure_logging("info", "auto", screen)
    structlog.get_logger("pipewell").info("listening", url="http://127.0.0.1:1234")
    line = re.sub(r"\x1b\[[0-9;]*m", "", screen.getvalue())  # coloured, on a terminal
    assert line != screen.getvalue()
    assert "listening" in line and "url=http://127.0.0.1:1234" in line
    assert not line.startswith("{")
    asked = Terminal()
    configure_logging("info", "json", asked)
    structlog.get_logger("pipewell").info("listening")
    assert json.loads(asked.getvalue())["event"] == "listening"


def test_a_traceback_on_a_terminal_shows_no_local_values():
    """A frame's locals may hold a presigned URL or an API key."""
    screen = Terminal()
    configure_logging("info", "auto", screen)

    signature = secrets.token_hex(16)  # made here, so no source line shown holds it

    def presign() -> None:
        url = f"http://127.0.0.1/bucket/key?X-Amz-Signature={signature}"  # noqa: F841
        raise RuntimeError("store refused")

    try:
        presign()
    except RuntimeError:
        structlog.get_logger("pipewell").exception("presign_failed")
    shown = screen.getvalue()
    assert "presign_failed" in shown and "store refused" in shown
    assert signature not in shown


def test_asyncios_accept_error_is_written_once_a_minute_with_a_count(monkeypatch):
    written = io.StringIO()
    configure_logging("info", "json", written)
    now = [time.monotonic() + 1e6]  # past anything the filter saw in this process
    monkeypatch.setattr("orchestrator.logs.time.monotonic", lambda: now[0])
    running = logging.getLogger("asyncio")
    for _ in range(500):  # a flood of connections past the file limit
        running.error("socket.accept() out of system resource", exc_info=OSError(24, "EMFILE"))
    running.error("something else entirely")
    now[0] += 61
    running.error("socket.accept() out of system resource")
    lines = [json.loads(line) for line in written.getvalue().splitlines()]
    events = [line["event"] for line in lines]
    assert events == [
        "socket.accept() out of system resource",
        "something else entirely",
        "socket.accept() out of system resource (499 more like it in the last 60 s)",
    ]
    assert "exception" not in lines[0]
