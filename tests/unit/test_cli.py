"""The CLI refuses configurations that would expose the service, saying why."""

import signal
import subprocess
import sys
import time

import pytest
import structlog

from orchestrator import cli
from orchestrator.cli import main


@pytest.fixture(autouse=True)
def _restore_logging():
    """main() points structlog at this test's captured stderr, closed after it:
    later tests in the same process would log to a closed file."""
    yield
    structlog.reset_defaults()


def test_non_loopback_without_auth_is_refused(capsys, tmp_path):
    assert main(["dev", "--host", "0.0.0.0", "--data-dir", str(tmp_path)]) == 2
    assert "refusing to listen on 0.0.0.0" in capsys.readouterr().err


def test_bad_config_file_names_the_problem(capsys, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("worker:\n  tiers: [c-huge]\n")
    assert main(["serve", "--config", str(config)]) == 2
    assert "unknown tier(s) ['c-huge']" in capsys.readouterr().err


HANGING_SHUTDOWN = """
import asyncio, sys
from orchestrator import cli

cli.SHUTDOWN_LIMIT = float(sys.argv[1])
cli.configure_logging("info")

async def never_finishes() -> None:
    await asyncio.Event().wait()

async def main() -> None:
    waiting = asyncio.create_task(cli._until_stopped_then(never_finishes))
    await asyncio.sleep(0.1)
    print("ready", flush=True)
    await waiting

asyncio.run(main())
"""


@pytest.mark.parametrize(
    ("limit", "signals", "reason"), [(0.5, 1, "over 0.5 s"), (60.0, 2, "second signal")]
)
def test_a_shutdown_that_hangs_ends_the_process_saying_what_it_waited_for(
    limit: float, signals: int, reason: str
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", HANGING_SHUTDOWN, str(limit)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    for _ in range(signals):
        process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
    _, err = process.communicate(timeout=10)
    assert process.returncode == cli.EXIT_SHUTDOWN_UNFINISHED
    log = err.decode()
    assert "shutdown_unfinished" in log and reason in log, log
    # Where it hung: the close coroutine, down to the await that never returned.
    assert "never_finishes" in log, log
