"""The engine's exception tree. The API layer maps it to HTTP statuses from one table.

Every error has its stable ``code`` and says, through ``public()``, what a
caller may read of it (message and extra fields); no error here knows an HTTP
status.

    PipewellError
    ├── RunNotFound        no run with that id
    │   └── RunExpired         there was, and retention deleted it
    ├── RunFinished        the run has ended already (it cannot be cancelled)
    ├── FlowInvalid        validation found errors (carries every entry)
    ├── ArtifactNotFound   the run has no artifact on that edge (yet)
    ├── InputMismatch      an invocation's input does not name the flow's entry edges
    ├── FlowNotFound       no saved flow with that id (for this tenant)
    ├── FlowFileUnreadable a flow or NodeDef file the CLI cannot read
    ├── RequestRefused     a request refused, with a code of its own and what to fix
    │   ├── BodyInvalid        the body cannot be read as what the endpoint takes
    │   ├── ContentTypeUnsupported  the body is of a type the endpoint does not take
    │   ├── NotFound           what it names is not there (a config, a task, a key, an object)
    │   │   ├── NodeDefNotFound    no built-in NodeDef of that Publisher/Name
    │   │   ├── CollectionNotFound no collection on that edge of the run
    │   │   ├── NodeNotMapped      the run maps no node of that ID
    │   │   └── ConfigNotFound     the saved flow has no config profile of that id
    │   ├── Forbidden          the caller (or the page calling) may not do it
    │   ├── Conflict           what it would create exists, or is in the way
    │   │   ├── KeyExists          a key of that name exists
    │   │   └── CollectionClosed   the collection is complete: no item can be added
    │   ├── KeyInvalid         a key name or tenant that cannot be
    │   ├── StoreFull          a store's disk is full: the upload was not kept
    │   ├── StorageLow         the data directory is below its low-water mark: no new run
    │   ├── TooBusy            a tenant's quota or a tier's backlog is full: no new run now
    │   ├── CollectionRefused  an upload that cannot become a collection's items
    │   ├── InvalidInvocation  an invocation of a saved flow that cannot run as sent
    │   ├── FileTooLarge       a file sent as a body of its own is over the limit
    │   └── BodyTimeout        the body stopped coming: nothing of it was kept
    ├── ConfigError        the service configuration cannot work
    └── DataDirError       the data directory refuses a write of the service's database
        ├── DataDirFull        its filesystem is full
        └── DataDirUnwritable  it cannot be written (immutable, read-only, permissions)

What is not there (FlowNotFound, NodeDefNotFound, ConfigNotFound) is said apart
from what to do instead (:class:`Missing`), so that the API layer can name the
route that lists what there is between the two: routes are not the engine's.

Store errors live in ``storage`` (StoreError and children) and have their own
rows in the API's table; Docker errors are translated into failed attempts in
one place, ``orchestrator.executor.errors``, and never raised here.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any


class PipewellError(Exception):
    """Base of every error the engine raises on purpose."""

    code = "INTERNAL_ERROR"

    def public(self) -> tuple[str, dict[str, Any]]:
        """What a caller may read: the message and any extra fields."""
        return str(self), {}


class Missing:
    """Mixed into an error of a thing that is not there: ``what`` is missing, and the
    ``advice`` (if any) of what to do instead."""

    what: str
    advice: str | None = None

    def said(self, listed_at: str | None = None) -> str:
        """The message; ``listed_at``, where what there is is listed, goes after ``what``."""
        where = f" (see {listed_at})" if listed_at else ""
        return "; ".join(part for part in (self.what + where, self.advice) if part)


class RequestRefused(PipewellError):
    """A request refused: its own ``code``, what to fix, and any fields a caller may use."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra

    def public(self) -> tuple[str, dict[str, Any]]:
        return self.message, self.extra


class BodyInvalid(RequestRefused):
    pass


class ContentTypeUnsupported(RequestRefused):
    def __init__(self, message: str) -> None:
        super().__init__("CONTENT_TYPE_UNSUPPORTED", message)


class NotFound(RequestRefused):
    pass


class NodeDefNotFound(Missing, NotFound):
    advice = "a flow may send its own in NodeDefs"

    def __init__(self, uses: str) -> None:
        self.uses = uses
        self.what = f"no built-in NodeDef {uses!r}"
        super().__init__("NODEDEF_NOT_FOUND", self.said())


class ConfigNotFound(Missing, NotFound):
    def __init__(self, graph_id: str, config_id: str) -> None:
        self.graph_id = graph_id
        self.config_id = config_id
        self.what = f"flow {graph_id} has no config {config_id!r}"
        super().__init__("CONFIG_NOT_FOUND", self.said())


class Forbidden(RequestRefused):
    pass


class Conflict(RequestRefused):
    pass


class StoreFull(RequestRefused):
    def __init__(self, message: str) -> None:
        super().__init__("STORAGE_FULL", message)


class TooBusy(RequestRefused):
    """A new run refused for now (a tenant's quota, a tier's backlog): nothing of it was
    kept; the same request may succeed after ``retry_after`` seconds."""

    def __init__(self, code: str, message: str, retry_after: int) -> None:
        super().__init__(code, message)
        self.retry_after = retry_after


class StorageLow(RequestRefused):
    retry_after = 60

    def __init__(self, free: int, low_water: int) -> None:
        super().__init__(
            "STORAGE_LOW",
            f"the service is short of disk space ({free // 2**20} MiB free, below its "
            f"low-water mark of {low_water // 2**20} MiB), so it takes no new run for now; "
            "runs already accepted go on. Retry later: space comes back as ended runs "
            "expire, or when its operator frees some",
        )
        self.free = free


class CollectionRefused(RequestRefused):
    """An archive that cannot become a collection's items (``reason``: the archive's own
    code, such as ARCHIVE_TOO_MANY_ENTRIES). Nothing of it is kept."""

    def __init__(self, edge: str, reason: str, message: str) -> None:
        self.edge, self.reason = edge, reason
        super().__init__(
            "COLLECTION_INVALID",
            f"edge {edge!r}: {message} ({reason}); nothing of it was kept: send it again, "
            "fixed, to the same URL",
        )


class CollectionNotFound(Missing, NotFound):
    """The run has no collection on that edge (of the kind asked for)."""

    def __init__(self, run_id: str, edge: str, why: str, collections: list[str]) -> None:
        self.what = f"run {run_id} has no {why} on edge {edge!r}"
        self.advice = f"its collections: {', '.join(collections)}" if collections else "it has none"
        super().__init__("COLLECTION_NOT_FOUND", self.said())


class NodeNotMapped(Missing, NotFound):
    def __init__(self, run_id: str, node_id: str, mapped: list[str]) -> None:
        self.what = f"run {run_id} has no mapped node {node_id!r}"
        self.advice = f"its mapped nodes: {', '.join(mapped)}" if mapped else "it maps none"
        super().__init__("NODE_NOT_MAPPED", self.said())


class CollectionClosed(Conflict):
    def __init__(self, edge: str, why: str) -> None:
        super().__init__("COLLECTION_CLOSED", f"edge {edge!r}: {why}")


class InvalidInvocation(RequestRefused):
    """An invocation the service refuses, with a stable code and what to fix."""


class FileTooLarge(RequestRefused):
    def __init__(self, limit: int) -> None:
        super().__init__(
            "FILE_TOO_LARGE",
            f"the file is over the limit of {limit} bytes (invocations.max_file_bytes): "
            "nothing of it was kept",
        )


class BodyTimeout(RequestRefused):
    def __init__(self, seconds: float) -> None:
        super().__init__(
            "BODY_TIMEOUT",
            f"no byte of the request body came for {seconds:g} s (idle_timeout): nothing of "
            "it was kept; send it again, without pauses",
        )


class KeyInvalid(RequestRefused):
    def __init__(self, message: str) -> None:
        super().__init__("API_KEY_INVALID", message)


class KeyExists(Conflict):
    def __init__(self, message: str) -> None:
        super().__init__("API_KEY_EXISTS", message)


class RunNotFound(PipewellError):
    code = "RUN_NOT_FOUND"

    def __init__(self, run_id: str) -> None:
        super().__init__(f"flow run {run_id!r} does not exist")
        self.run_id = run_id


class RunExpired(RunNotFound):
    """A run retention deleted: its ID says it was one of ours, and when it started."""

    code = "RUN_EXPIRED"

    def __init__(self, run_id: str, started: datetime) -> None:
        super().__init__(run_id)
        self.args = (
            f"flow run {run_id!r} (started {started:%Y-%m-%d %H:%M} UTC) has expired: its "
            "status, logs and objects were deleted when its lifetime ran out (its flow's "
            "Lifetime, else the service's retention); submit the flow again to run it anew",
        )
        self.started = started


class RunFinished(PipewellError):
    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(f"run {run_id!r} has ended already ({status}): there is nothing to stop")
        self.run_id = run_id
        self.status = status

    code = "RUN_FINISHED"

    def public(self) -> tuple[str, dict[str, Any]]:
        return str(self), {"run_status": self.status}


class RunNotEnded(PipewellError):
    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(
            f"run {run_id!r} is {status}: only an ended run can be retried; wait for it to "
            "end, or cancel it first"
        )
        self.run_id = run_id
        self.status = status

    code = "RUN_NOT_ENDED"

    def public(self) -> tuple[str, dict[str, Any]]:
        return str(self), {"run_status": self.status}


class FlowInvalid(PipewellError):
    def __init__(self, errors: list[dict[str, Any]], warnings: list[dict[str, Any]] | None = None):
        super().__init__(f"flow is invalid: {len(errors)} problem(s)")
        self.errors = errors
        self.warnings = warnings or []

    code = "FLOW_INVALID"

    def public(self) -> tuple[str, dict[str, Any]]:
        message = f"the flow is invalid: {len(self.errors)} problem(s); fix each entry of 'errors'"
        return message, {"errors": self.errors, "warnings": self.warnings}


class ArtifactNotFound(PipewellError):
    code = "ARTIFACT_NOT_FOUND"

    def __init__(self, run_id: str, edge: str, reason: str) -> None:
        super().__init__(f"run {run_id!r} has no artifact on edge {edge!r}: {reason}")
        self.run_id = run_id
        self.edge = edge


class InputMismatch(PipewellError):
    code = "INPUT_INVALID"

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


class FlowNotFound(Missing, PipewellError):
    code = "FLOW_NOT_FOUND"

    def __init__(self, ref: str) -> None:
        self.ref = ref
        self.what = f"no saved flow {ref!r}"
        super().__init__(self.said())


class FlowFileUnreadable(PipewellError):
    code = "FLOW_FILE_UNREADABLE"

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path


class ConfigError(PipewellError):
    # Met by a request when a store the flow names cannot be opened.
    code = "STORE_UNAVAILABLE"


_KEPT = "Runs already accepted are kept and go on; retry this request later."
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

    def public(self) -> tuple[str, dict[str, Any]]:
        # Callers may be tenants: the path stays in the log, which the message points to.
        return self.public_message(), {}

    def public_message(self) -> str:
        raise NotImplementedError


class DataDirFull(DataDirError):
    code = "STORAGE_FULL"

    def public_message(self) -> str:
        return (
            "the service's data directory is full, so nothing new can be stored: its operator "
            f"must free space there (the service's log names it). {_KEPT}"
        )

    def __init__(self, database: Path) -> None:
        super().__init__(
            database,
            "database or disk is full",
            f"the data directory {database.parent} is full: free space on its filesystem "
            f"or move data_dir to a larger one; {_MEANWHILE}",
        )


class DataDirUnwritable(DataDirError):
    code = "STORAGE_UNWRITABLE"

    def public_message(self) -> str:
        return (
            f"the service's data directory refuses writes ({self.reason}): its operator must "
            f"make it writable again (the service's log says how). {_KEPT}"
        )

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
    "Forbidden",
    "KeyExists",
    "KeyInvalid",
    "NotFound",
    "RequestRefused",
    "ArtifactNotFound",
    "ConfigError",
    "DataDirError",
    "DataDirFull",
    "DataDirUnwritable",
    "FlowInvalid",
    "FileTooLarge",
    "FlowNotFound",
    "InputMismatch",
    "InvalidInvocation",
    "ConfigNotFound",
    "Missing",
    "NodeDefNotFound",
    "PipewellError",
    "RunFinished",
    "RunNotEnded",
    "RunExpired",
    "RunNotFound",
    "StorageLow",
    "TooBusy",
]
