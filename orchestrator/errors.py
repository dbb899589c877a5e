"""The engine's exception tree. The API layer maps these to HTTP in one middleware.

    PipewellError
    ├── RunNotFound        no run with that id
    ├── RunFinished        the run has ended already (it cannot be cancelled)
    ├── FlowInvalid        validation found errors (carries every entry)
    ├── ArtifactNotFound   the run has no artifact on that edge (yet)
    ├── InputMismatch      an invocation's input does not name the flow's entry edges
    ├── FlowNotFound       no saved flow with that id (for this tenant)
    ├── ConfigError        the service configuration cannot work
    └── DataDirError       the data directory refuses a write of the service's database
        ├── DataDirFull        its filesystem is full
        └── DataDirUnwritable  it cannot be written (immutable, read-only, permissions)

Store errors live in ``storage.base`` (StoreError and children); Docker errors
are translated inside the executor into failed attempts, never raised here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class PipewellError(Exception):
    """Base of every error the engine raises on purpose."""


class RunNotFound(PipewellError):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"flow run {run_id!r} does not exist")
        self.run_id = run_id


class RunFinished(PipewellError):
    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(f"run {run_id!r} has ended already ({status}): there is nothing to stop")
        self.run_id = run_id
        self.status = status


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


class InputMismatch(PipewellError):
    def __init__(self, expected: list[str], given: list[str]) -> None:
        unknown = [e for e in given if e not in expected]
        missing = [e for e in expected if e not in given]
        parts = []
        if unknown:
            parts.append(f"unknown input key(s) {', '.join(map(repr, unknown))}")
        if missing:
            parts.append(f"missing input key(s) {', '.join(map(repr, missing))}")
        accepted = ", ".join(map(repr, expected)) or "none: this flow takes no input"
        super().__init__(f"{'; '.join(parts)}; the flow's entry edges are {accepted}")
        self.expected = expected
        self.unknown = unknown
        self.missing = missing


class FlowNotFound(PipewellError):
    def __init__(self, ref: str) -> None:
        super().__init__(f"no saved flow {ref!r} (see GET /api/v1/flows)")
        self.ref = ref


class ConfigError(PipewellError):
    pass


# What the service does meanwhile, said in both messages.
_MEANWHILE = (
    "runs already accepted are kept in memory and written as soon as it takes writes "
    "again; new runs are refused until then"
)


class DataDirError(PipewellError):
    """A write to the data directory's database failed: nothing that needed it was done.

    ``reason`` is SQLite's or the system's word for it, without the path.
    """

    def __init__(self, database: Path, reason: str, message: str) -> None:
        super().__init__(message)
        self.database = database
        self.reason = reason


class DataDirFull(DataDirError):
    def __init__(self, database: Path) -> None:
        super().__init__(
            database,
            "database or disk is full",
            f"the data directory {database.parent} is full: free space on its filesystem "
            f"or move data_dir to a larger one; {_MEANWHILE}",
        )


class DataDirUnwritable(DataDirError):
    def __init__(self, database: Path, reason: str) -> None:
        super().__init__(
            database,
            reason,
            f"the data directory {database.parent} cannot be written ({reason}): check that "
            f"it and its {database.name}* files belong to the service's user, are not "
            f"immutable (lsattr -d; chattr -i) and sit on a filesystem mounted read-write; "
            f"{_MEANWHILE}",
        )


__all__ = [
    "ArtifactNotFound",
    "ConfigError",
    "DataDirError",
    "DataDirFull",
    "DataDirUnwritable",
    "FlowInvalid",
    "FlowNotFound",
    "InputMismatch",
    "PipewellError",
    "RunFinished",
    "RunNotFound",
]
