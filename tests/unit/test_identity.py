"""The worker identity: made once per data directory, kept, and held by one service at a time."""

from __future__ import annotations

import re

import pytest

from orchestrator.errors import ConfigError
from orchestrator.identity import IDENTITY_FILE, WorkerIdentity


def test_the_identity_is_made_once_and_found_again(tmp_path):
    first = WorkerIdentity(tmp_path / "data")
    first.close()
    again = WorkerIdentity(tmp_path / "data")
    again.close()
    assert re.fullmatch(r"[0-9a-f]{32}", first.id)
    assert again.id == first.id
    assert (tmp_path / "data" / IDENTITY_FILE).read_text().strip() == first.id


def test_each_data_directory_has_its_own(tmp_path):
    one, two = WorkerIdentity(tmp_path / "one"), WorkerIdentity(tmp_path / "two")
    one.close()
    two.close()
    assert one.id != two.id


def test_a_second_service_on_the_same_data_directory_is_refused(tmp_path):
    held = WorkerIdentity(tmp_path)
    try:
        with pytest.raises(ConfigError, match="another Pipewell service is running"):
            WorkerIdentity(tmp_path)
    finally:
        held.close()
    WorkerIdentity(tmp_path).close()  # free again once the first one let go
