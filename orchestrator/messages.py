"""Queue payloads between the scheduler and workers: one pydantic class per message.

A leaf module: the scheduler and the worker both import it and never each other.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from orchestrator.models import LogRecord


class ItemURL(BaseModel):
    """One item of a collection input: its name (a relative path) and presigned GET."""

    name: str
    url: str


class TaskInput(BaseModel):
    name: str
    url: str = ""  # presigned GET, internal address ("" for a collection)
    types: list[str] | None = None  # accepted MIME types; None accepts anything
    # A collection input (a gather): every item, put in the directory /pipewell/in/<name>/
    # under its name. None for a file input.
    items: list[ItemURL] | None = None


class TaskOutput(BaseModel):
    name: str
    url: str  # presigned PUT, internal address
    # Extension for the file inside the container, e.g. ".png", from the output's Type.
    suffix: str = ""
    # The one concrete type the output's Type declares, if so: sniffing cannot tell
    # CSV or YAML from plain text, so what the node says it writes is stored.
    type: str | None = None
    # A collection output: /pipewell/out/<name>/ is a directory; the worker PUTs a tar of
    # its regular files (paths relative to it) to ``url``, which the service expands.
    collection: bool = False


class Task(BaseModel):
    """One attempt of one node, everything a worker needs without asking anyone."""

    kind: Literal["task"] = "task"
    run_id: str
    node_id: str
    attempt: int
    image: str
    tier: str
    timeout: float
    # Exec split into tokens, not yet expanded; None runs the image's own command.
    argv: list[str] | None = None
    flags: dict[str, str] = Field(default_factory=dict)
    inputs: list[TaskInput] = Field(default_factory=list)
    outputs: list[TaskOutput] = Field(default_factory=list)
    # The NodeDef's RunAsRoot: else the container runs unprivileged where the image allows.
    run_as_root: bool = False
    # Bytes each output may have (the NodeDef's, its tier's, at most the operator's); None: any.
    max_output_bytes: int | None = None
    # The item of a mapped node this attempt is for; None for a node's own attempt.
    item: str | None = None
    # Items of one mapped node run one after another in one container, each an
    # attempt of its own (its own Task: item, attempt, inputs, outputs, every message
    # naming it). This task's own item, inputs and outputs are then not used.
    batch: list[Task] | None = None
    # IDs of images whose run of this very work (the same cache key) is cached: if the
    # worker's image is one of them, it answers ``reused`` at once, starting nothing.
    # Asked of the worker, since only the engine that would run the node knows which
    # image its tag names now (a rebuild is a new ID, so a miss).
    reuse: list[str] = Field(default_factory=list)

    @property
    def key(self) -> str:
        if self.batch:
            first = self.batch[0]
            item = f"{first.item}+{len(self.batch) - 1}"
            return attempt_key(self.run_id, self.node_id, first.attempt, item)
        return attempt_key(self.run_id, self.node_id, self.attempt, self.item)

    def attempt_keys(self) -> list[str]:
        """The key of every attempt this task holds: its own, or its batch's."""
        return [t.key for t in self.batch] if self.batch else [self.key]


def attempt_key(run_id: str, node_id: str, attempt: int, item: str | None = None) -> str:
    """An attempt's key: of a node, or of one item of a mapped node."""
    if item is None:
        return f"{run_id}/{node_id}/{attempt}"
    return f"{run_id}/{node_id}[{item}]/{attempt}"


class AttemptStarted(BaseModel):
    kind: Literal["started"] = "started"
    run_id: str
    node_id: str
    attempt: int
    item: str | None = None
    worker: str


class AttemptLog(BaseModel):
    kind: Literal["log"] = "log"
    run_id: str
    node_id: str
    attempt: int
    item: str | None = None
    record: LogRecord


class OutputInfo(BaseModel):
    size: int
    content_type: str
    sha256: str = ""  # of the bytes PUT, hashed as they were sent


class AttemptResult(BaseModel):
    kind: Literal["result"] = "result"
    run_id: str
    node_id: str
    attempt: int
    item: str | None = None
    ok: bool
    error: str = ""
    # False for failures a retry cannot fix (an input of the wrong type).
    retryable: bool = True
    # The worker's Docker engine stopped answering: not the node's failure. The
    # attempt is not counted; the node runs again once a worker's engine answers.
    engine_down: bool = False
    outputs: dict[str, OutputInfo] = Field(default_factory=dict)
    # Seconds per phase: input_transfer, create, start, run, output_transfer.
    timings: dict[str, float] = Field(default_factory=dict)
    # The ID of the image the attempt ran (or would have run): what its result is cached under.
    image_id: str = ""
    # The image is one of the Task's ``reuse``: nothing ran, the cached outputs stand.
    reused: bool = False
    # The node's program exited non-zero: its code, and whether it was killed for memory.
    exit_code: int | None = None
    oom: bool = False

    @classmethod
    def of(cls, task: Task, *, ok: bool, **fields: Any) -> AttemptResult:
        """The result of ``task``'s attempt (its run, node, attempt and item)."""
        return cls(
            run_id=task.run_id,
            node_id=task.node_id,
            attempt=task.attempt,
            item=task.item,
            ok=ok,
            **fields,
        )


class AttemptCleanedUp(BaseModel):
    """The attempt's container is gone (sent after the result: removal is off the critical path)."""

    kind: Literal["cleaned"] = "cleaned"
    run_id: str
    node_id: str
    attempt: int
    item: str | None = None
    remove_seconds: float


WorkerMessage = AttemptStarted | AttemptLog | AttemptResult | AttemptCleanedUp


class SpareCount(BaseModel):
    """Spares (started containers waiting for an attempt) a worker holds of one image and tier."""

    image: str
    tier: str
    ready: int


class WorkerHeartbeat(BaseModel):
    """A worker is alive: what it offers and holds (the queue keeps the live ones)."""

    kind: Literal["heartbeat"] = "heartbeat"
    worker_id: str
    name: str
    tiers: list[str]
    memory: int = 0
    slots: int = 0
    running: list[str] = Field(default_factory=list)  # Task.key of its attempts
    # Task.key of the items of batches it runs whose turn in the batch has not come.
    held: list[str] = Field(default_factory=list)
    # How its attempts start: in containers started ahead, or one created per attempt.
    launch: Literal["gated", "plain"] = "plain"
    spares: list[SpareCount] = Field(default_factory=list)
    sent_at: float = 0.0  # time.time() on the worker


class CancelRun(BaseModel):
    """A run ended: every worker kills what it still runs of it."""

    kind: Literal["cancel"] = "cancel"
    run_id: str


__all__ = [
    "ItemURL",
    "attempt_key",
    "AttemptCleanedUp",
    "CancelRun",
    "AttemptLog",
    "AttemptResult",
    "AttemptStarted",
    "OutputInfo",
    "SpareCount",
    "Task",
    "TaskInput",
    "TaskOutput",
    "WorkerHeartbeat",
    "WorkerMessage",
]
