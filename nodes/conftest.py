"""Fixtures of the built-in nodes' tests: the real service that tests/ starts, and samples."""

from __future__ import annotations

import pytest

from tests.conftest import start_service
from tests.samples import video


@pytest.fixture(scope="session")
def clip() -> bytes:
    """Two seconds of ffmpeg's test pattern, 160x120 at 10 fps, with a 440 Hz tone (MP4)."""
    return video(seconds=2, size="160x120", rate=10, audio=True)


__all__ = ["clip", "start_service"]
