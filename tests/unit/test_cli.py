"""The CLI refuses configurations that would expose the service, saying why."""

import pytest
import structlog

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
