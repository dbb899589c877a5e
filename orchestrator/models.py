"""The wire format: pydantic models that parse requests and shape responses.

Field names are PascalCase on the wire, exactly as the Pupload Flow API
(``seeds/flow-api-pupload.md``); Python code uses snake_case attributes.
Log records are the one exception: the seed spells them in lower case.

This module is a leaf: it imports nothing of ours.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    field_validator,
)
from pydantic.alias_generators import to_pascal

DEFAULT_TIER = "c-small"
DEFAULT_MAX_ATTEMPTS = 3
#: The tenant of every run and flow when auth is off, and of keys made without --tenant.
DEFAULT_TENANT = "default"
#: Longest Timeout a NodeDef may ask for: a week.
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600

#: Every name of a flow that becomes a file name, a directory, an environment
#: variable or part of an object key (inputs, outputs, flags, node IDs, edges,
#: stores, commands, tenants) is an identifier: never a path, never empty,
#: bounded. The one pattern: validation reports a mismatch as NAME_001 and the
#: worker checks it again before it builds a path.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
NAME_RULE = (
    "start with a letter or digit and use only letters, digits, '.', '_' and '-' "
    "(at most 128 characters)"
)


def is_name(value: object) -> bool:
    """Whether ``value`` is an identifier of :data:`NAME_PATTERN`."""
    return isinstance(value, str) and NAME_PATTERN.fullmatch(value) is not None


class WireModel(BaseModel):
    """Base of every PascalCase model; unknown fields are refused so typos surface."""

    model_config = ConfigDict(
        alias_generator=to_pascal,
        populate_by_name=True,
        extra="forbid",
        serialize_by_alias=True,
    )


# ---------------------------------------------------------------- flow input


class StoreInput(WireModel):
    name: str
    type: str
    # Scalars only: a store's Params are settings (bucket, endpoint_url, ...).
    params: dict[str, StrictBool | StrictInt | StrictFloat | str] = Field(default_factory=dict)


class DataWellLifetime(WireModel):
    """Pupload's ``Lifetime`` of a well's data: an empty struct there too.

    Accepted so Pupload flows parse; its content is ignored, never stored.
    """

    model_config = ConfigDict(extra="ignore")


class DataWell(WireModel):
    """Binds an edge to a store: where its object lives and where it comes from.

    ``Source`` is ``upload`` (the client PUTs it to a WaitingURL), ``static``
    (an object already in the store at ``Key``), or ``none``/absent (the well
    only says where a produced edge is stored).
    """

    # Empty in a Pupload DefaultDataWell, which applies to every edge.
    edge: str = ""
    store: str | None = None
    source: str | None = None
    key: str | None = None
    # Accepted for compatibility with Pupload flows; not used yet.
    lifetime: DataWellLifetime | None = None


class NodeEdge(WireModel):
    name: str
    edge: str


def _refused_below(**bounds: int) -> Callable[[dict[str, Any]], None]:
    """A field's schema with the bounds validation holds it to, and no default: the
    model's default is there to let validation name the problem, not a value to send."""

    def declare(schema: dict[str, Any]) -> None:
        schema.pop("default", None)
        schema.update(bounds)

    return declare


class NodeFlag(WireModel):
    name: str
    value: str

    # The schema says what is accepted: the validator turns it into text.
    @field_validator("value", mode="before", json_schema_input_type=str | int | float | bool)
    @classmethod
    def _scalar_to_text(cls, value: Any) -> Any:
        # Flags reach the container as argv and env: JSON numbers and booleans
        # are accepted and turned into their usual text.
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return str(value)
        return value


class Node(WireModel):
    # Empty defaults let validation report NODE_008 instead of a schema error; the
    # document still says what validation refuses, for generated clients.
    id: str = Field(default="", alias="ID", json_schema_extra=_refused_below(minLength=1))
    uses: str = Field(default="", json_schema_extra=_refused_below(minLength=1))
    inputs: list[NodeEdge] = Field(default_factory=list)
    outputs: list[NodeEdge] = Field(default_factory=list)
    flags: list[NodeFlag] = Field(default_factory=list)
    command: str | None = None


class Flow(WireModel):
    name: str = Field(max_length=128)
    stores: list[StoreInput] = Field(default_factory=list)
    default_store: str | None = None
    # Pupload's name for a well template applied to edges without a well.
    default_data_well: DataWell | None = None
    data_wells: list[DataWell] = Field(default_factory=list)
    # Validation refuses an empty list as FLOW_002 (with every other problem at once).
    nodes: list[Node] = Field(default_factory=list, json_schema_extra=_refused_below(minItems=1))


class EdgeDef(WireModel):
    name: str
    description: str = ""
    required: bool = False
    # None: untyped (anything goes). An explicit empty list is TYPE_002.
    type: list[str] | None = None

    @field_validator("type", mode="before", json_schema_input_type=str | list[str] | None)
    @classmethod
    def _one_type_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class FlagType(StrEnum):
    """What a flag's value must read as; every value still reaches the node as text."""

    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"


#: The words a boolean flag may be given, as the catalog's nodes read them.
BOOLEAN_WORDS = {"true": True, "yes": True, "1": True, "on": True} | {
    "false": False,
    "no": False,
    "0": False,
    "off": False,
}


class FlagDef(WireModel):
    name: str
    description: str = ""
    required: bool = False
    # Pupload leaves Type free text: anything but the four is DEF_002 at validation.
    type: str = Field(
        default=FlagType.STRING,
        description="integer, number, boolean or string; values are checked against it "
        "before a run starts.",
    )
    default: str | None = None
    values: list[str] | None = Field(
        default=None,
        min_length=1,
        description="The only values the flag takes (an addition to Pupload's shape).",
        # The input type given below replaces the schema pydantic would derive.
        json_schema_extra=lambda schema: schema["anyOf"][0].update(minItems=1),
    )
    min: float | None = Field(
        default=None,
        allow_inf_nan=False,
        description="Least value of an integer or number flag, inclusive (ours).",
    )
    max: float | None = Field(
        default=None,
        allow_inf_nan=False,
        description="Greatest value of an integer or number flag, inclusive (ours).",
    )

    @field_validator("type", mode="before")
    @classmethod
    def _type_name(cls, value: Any) -> Any:
        # Go's zero value and "Integer" mean what they say.
        if isinstance(value, str):
            return value.strip().lower() or FlagType.STRING
        return value

    @field_validator(
        "values", mode="before", json_schema_input_type=list[str | int | float | bool] | None
    )
    @classmethod
    def _values_to_text(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [NodeFlag._scalar_to_text(v) for v in value]
        return value

    @field_validator(
        "default", mode="before", json_schema_input_type=str | int | float | bool | None
    )
    @classmethod
    def _scalar_to_text(cls, value: Any) -> Any:
        return NodeFlag._scalar_to_text(value)


class CommandDef(WireModel):
    name: str = "default"
    description: str = ""
    exec: str


class NodeDef(WireModel):
    # Pupload's database id; accepted and ignored.
    id: int | None = Field(default=None, alias="ID")
    publisher: str
    name: str
    # What the node does, for catalogs and people (an addition to Pupload's shape).
    description: str = ""
    image: str
    inputs: list[EdgeDef] = Field(default_factory=list)
    outputs: list[EdgeDef] = Field(default_factory=list)
    flags: list[FlagDef] = Field(default_factory=list)
    command: CommandDef | None = None
    commands: list[CommandDef] = Field(default_factory=list)
    tier: str = DEFAULT_TIER
    max_attempts: int = Field(default=DEFAULT_MAX_ATTEMPTS, ge=1, le=100)
    timeout: float | None = Field(
        default=None,
        gt=0,
        le=MAX_TIMEOUT_SECONDS,
        allow_inf_nan=False,
        description="Seconds before the container is killed (at most a week).",
    )
    run_as_root: bool = Field(
        default=False,
        description="Run the container as root. By default a node runs as nobody "
        "(65534:65534) unless its image names its own non-root User.",
    )
    max_output_bytes: int | None = Field(
        default=None,
        ge=1,
        description="Bytes each output may have; a larger one fails the attempt and is not "
        "stored. Default: 4 times the tier's memory; at most the operator's "
        "executor.max_output_bytes.",
    )

    @property
    def uses(self) -> str:
        return f"{self.publisher}/{self.name}"

    def all_commands(self) -> list[CommandDef]:
        return ([self.command] if self.command else []) + list(self.commands)


class FlowSubmission(WireModel):
    """Body of ``POST /api/v1/flow/test``."""

    flow: Flow
    node_defs: list[NodeDef] = Field(default_factory=list)


# ---------------------------------------------------------------- run output


class RunStatus(StrEnum):
    STOPPED = "STOPPED"
    WAITING = "WAITING"
    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    ERROR = "ERROR"

    @property
    def finished(self) -> bool:
        return self in (RunStatus.COMPLETE, RunStatus.ERROR, RunStatus.STOPPED)


class NodeStatus(StrEnum):
    IDLE = "IDLE"
    READY = "READY"
    RUNNING = "RUNNING"
    RETRYING = "RETRYING"
    COMPLETE = "COMPLETE"
    ERROR = "ERROR"
    # Ours: queued or running when its run was cancelled or ended by another node.
    STOPPED = "STOPPED"

    @property
    def ended(self) -> bool:
        return self in (NodeStatus.COMPLETE, NodeStatus.ERROR, NodeStatus.STOPPED)


def utcnow() -> datetime:
    return datetime.now(UTC)


class LogRecord(BaseModel):
    """One log line of a node: the seed's ``timestamp`` and ``message``, plus level and stream."""

    model_config = ConfigDict(extra="ignore")

    timestamp: datetime = Field(default_factory=utcnow)
    message: str
    level: str = "info"
    # stdout / stderr for container output, "pipewell" for the engine's own lines.
    stream: str = "pipewell"
    attempt: int | None = None


class NodeState(WireModel):
    status: NodeStatus = NodeStatus.IDLE
    logs: list[LogRecord] = Field(default_factory=list)
    error: str = ""
    attempt: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    # Seconds per phase of the latest attempt, to explain a slow node: queue_wait,
    # presign, input_transfer, create, start, run, output_transfer, remove.
    timings: dict[str, float] = Field(default_factory=dict)


class Artifact(WireModel):
    store_name: str
    object_name: str
    edge_name: str


class WaitingURL(WireModel):
    artifact: Artifact
    put_url: str = Field(alias="PutURL")
    # When the URL stops working (Pupload sends a time, not a duration).
    ttl: datetime = Field(alias="TTL")


class FlowRun(WireModel):
    id: str = Field(alias="ID")
    status: RunStatus
    node_state: dict[str, NodeState] = Field(default_factory=dict)
    artifacts: dict[str, Artifact] = Field(default_factory=dict)
    waiting_urls: list[WaitingURL] = Field(default_factory=list, alias="WaitingURLs")
    started_at: datetime = Field(default_factory=utcnow)
    # Set when the run reaches COMPLETE, ERROR or STOPPED (an addition to Pupload's shape).
    finished_at: datetime | None = None
    # Why the run ended ERROR when no node's failure says it (an input never
    # uploaded before its WaitingURL expired); an addition to Pupload's shape too.
    error: str | None = None


__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_TENANT",
    "DEFAULT_TIER",
    "MAX_TIMEOUT_SECONDS",
    "NAME_PATTERN",
    "NAME_RULE",
    "Artifact",
    "CommandDef",
    "DataWell",
    "DataWellLifetime",
    "EdgeDef",
    "BOOLEAN_WORDS",
    "FlagDef",
    "FlagType",
    "Flow",
    "FlowRun",
    "FlowSubmission",
    "LogRecord",
    "Node",
    "NodeDef",
    "NodeEdge",
    "NodeFlag",
    "NodeState",
    "NodeStatus",
    "RunStatus",
    "StoreInput",
    "WaitingURL",
    "WireModel",
    "is_name",
    "utcnow",
]
