"""Fixtures of the fast tests: the engine without Docker (``tests.engine``)."""

from __future__ import annotations

from tests.engine import engine

__all__ = ["engine"]
