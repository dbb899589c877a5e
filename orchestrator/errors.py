"""The engine's exception tree. The API layer maps these to HTTP in one middleware.

    PipewellError
    ├── RunNotFound        no run with that id
    ├── FlowInvalid        validation found errors (carries every entry)
    ├── ArtifactNotFound   the run has no artifact on that edge (yet)
    └── ConfigError        the service configuration cannot work

Store errors live in ``storage.base`` (StoreError and children); Docker errors
are translated inside the executor into failed attempts, never raised here.
"""

from __future__ import annotations

from typing import Any


class PipewellError(Exception):
    """Base of every error the engine raises on purpose."""


class RunNotFound(PipewellError):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"flow run {run_id!r} does not exist")
        self.run_id = run_id


class FlowInvalid(PipewellError):
    def __init__(self, errors: list[dict[str, Any]], warnings: list[dict[str, Any]] | None = None):
        super().__init__(f"flow is invalid: {len(errors)} problem(s)")
        self.errors = errors
        self.warnings = warnings or []


class ArtifactNotFound(PipewellError):
    def __init__(self, run_id: str, edge: str, reason: str) -> None:
        super().__init__(f"run {run_id!r} has no artifact on edge {edge!r}: {reason}")
        self.run_id = run_id
        self.edge = edge


class ConfigError(PipewellError):
    pass


__all__ = ["ArtifactNotFound", "ConfigError", "FlowInvalid", "PipewellError", "RunNotFound"]
