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
from typing import Annotated, Any

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
    name: str = Field(
        description="The store's name, which `DefaultStore` and a DataWell's `Store` use. An "
        "identifier, unique among `Stores`, and not one of the service's own stores (`default` "
        "and those its operator configured), which a flow names without declaring them.",
    )
    type: str = Field(
        description="`s3`: a bucket behind an S3 API. A flow may declare one only on an "
        "endpoint the operator allows (`storage.flow_store_endpoints`); `local` is refused: "
        "name one of the service's stores in a DataWell instead.",
    )
    # Scalars only: a store's Params are settings (bucket, endpoint_url, ...).
    params: dict[str, StrictBool | StrictInt | StrictFloat | str] = Field(
        default_factory=dict,
        description="The store's settings, each a string, number or boolean. For `s3`: "
        "`bucket`, `endpoint_url` (one of the allowed endpoints), `access_key_id` and "
        "`secret_access_key` are required (the service never lends a flow its own "
        "credentials); `public_endpoint_url` (also an allowed endpoint), `region`, `prefix`, "
        "`connect_timeout` (seconds, at most 5), `read_timeout` (seconds, at most 30) and "
        "`max_attempts` (at most 3) are optional; `create_bucket` may only be `false`.",
    )


class DataWellLifetime(WireModel):
    """Pupload's ``Lifetime`` of a well's data: an empty struct there.

    Accepted so Pupload flows parse: the edge is kept as long as its run. A duration
    in its place is Pipewell's (``DataWell.lifetime``).
    """

    model_config = ConfigDict(extra="ignore")


class DataWell(WireModel):
    """Binds an edge to a store: where its object lives and where it comes from.

    ``Source`` is ``upload`` (the client PUTs it to a WaitingURL), ``static``
    (an object already in the store at ``Key``), ``webhook`` (filled as ``upload``
    is), or ``none``/absent (the well only says where a produced edge is stored).
    """

    # Empty in a Pupload DefaultDataWell, which applies to every edge.
    edge: str = Field(
        default="",
        description="The edge this well is for: an `Edge` some node's `Inputs` or `Outputs` "
        "names (one well per edge). Left empty in `DefaultDataWell`, which applies to every "
        "edge.",
    )
    store: str | None = Field(
        default=None,
        description="The store the edge's object lives in: one of the flow's `Stores` or one "
        "of the service's own (`default`, and those its operator configured). Absent: "
        "`DefaultDataWell`'s `Store`, else the flow's `DefaultStore`, else `default`.",
    )
    source: str | None = Field(
        default=None,
        description="Where the edge's data comes from: `upload` (the run waits for a client "
        "to PUT it to the WaitingURL the FlowRun lists in `WaitingURLs`), `static` (an object "
        "already in the store at `Key`; it must exist when the run starts), `webhook` (filled "
        "as `upload` is), or `none`/absent (nothing fills it: the well only says where a "
        "node's output is stored). An edge a node produces takes no `upload`, `static` or "
        "`webhook` well. Not used in `DefaultDataWell`.",
    )
    key: str | None = Field(
        default=None,
        description="The object's key in the store, a template filled in when the run "
        "starts: `${RUN_ID}`, `${FLOW_NAME}`, `${EDGE}`, `${TIMESTAMP}` (UTC, "
        "`2026-03-03T10:30:05Z`), `${DATE}` (`2026-03-03`), `${YEAR}`, `${MONTH}`, `${DAY}` "
        "and `${UUID}` (32 hex digits, new for each edge of each run); `$NAME` without "
        "braces works too. In a value, any character but letters, digits, `.`, `_`, `:` and "
        "`-` becomes `_`. Absent: `DefaultDataWell`'s `Key`, else `${RUN_ID}/${EDGE}`. In the "
        "service's stores a key is relative to the tenant's `tenants/<tenant>/`. A relative "
        "path of at most 768 characters once filled in: no leading `/`, no `.`, `..` or empty "
        "segment, segments of at most 255 characters, and outside variables only letters, "
        "digits, spaces and `/ . _ - + = @ , : ~`. A `static` well needs a Key, written "
        "literally (no variables); an `upload` or "
        "`webhook` Key must use a variable, and `${RUN_ID}` or `${UUID}` keeps runs from "
        "overwriting each other's objects.",
    )
    lifetime: str | int | float | DataWellLifetime | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="How long the edge's objects are kept after the run ends, when that "
        "differs from the run's own lifetime (longer for a result kept after its run's "
        "record is gone, shorter for a large intermediate): a duration, `90s`, `30m`, `12h`, "
        "`30d`, `2w`, or seconds, within the service's `retention.min_lifetime` and "
        "`max_lifetime`. An object (Pupload's empty `Lifetime` struct) means the run's. "
        "Objects of a `static` well, or in a store the flow declares itself, are never "
        "deleted.",
    )


class NodeEdge(WireModel):
    name: str = Field(
        description="The name of an input (in `Inputs`) or output (in `Outputs`) the node's "
        "NodeDef declares; any identifier when it declares none. Each name at most once per "
        "node.",
    )
    edge: str = Field(
        description="The edge it is bound to, an identifier. An edge joins the one node "
        "output that produces it to the node inputs that read it; an edge no node produces "
        "is filled through a DataWell (an upload unless the flow says otherwise).",
    )


def _refused_below(**bounds: int) -> Callable[[dict[str, Any]], None]:
    """A field's schema with the bounds validation holds it to, and no default: the
    model's default is there to let validation name the problem, not a value to send."""

    def declare(schema: dict[str, Any]) -> None:
        schema.pop("default", None)
        schema.update(bounds)

    return declare


class NodeFlag(WireModel):
    name: str = Field(
        description="The name of a flag the node's NodeDef declares; any identifier when it "
        "declares none. Each name at most once per node.",
    )
    value: str = Field(
        description="The flag's value, as text: a JSON number or boolean is taken as its text "
        "(`800`, `0.5`, `true`). Checked against the flag's `Type`, `Values`, `Min` and `Max` "
        "before the run starts; an empty value passes unless the flag is `Required`, and "
        "reaches the node empty (the built-in nodes read it as not set). The node gets it in "
        "its command's `${Name}` and in the environment as `FLAG_<NAME>`.",
    )

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


class MapSpec(WireModel):
    concurrency: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="Most items of this node queued or running at once. Absent: no bound "
        "of the node's own (the workers' slots bound it).",
    )
    min_success: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="The share of items that must succeed for the node to end COMPLETE, "
        "its failed items listed; below it the node ends ERROR, and its run with it. 1.0 "
        "(the default): the first item that fails for good ends the run.",
    )


class Node(WireModel):
    # Empty defaults let validation report NODE_008 instead of a schema error; the
    # document still says what validation refuses, for generated clients.
    id: str = Field(
        default="",
        alias="ID",
        json_schema_extra=_refused_below(minLength=1),
        description="The node's ID, an identifier unique in the flow; it names the node in "
        "`NodeState`, logs and container names.",
    )
    uses: str = Field(
        default="",
        json_schema_extra=_refused_below(minLength=1),
        description="The NodeDef the node runs, as `publisher/name`: one of the request's "
        "`NodeDefs` (which win), else a built-in one (`GET /api/v1/nodedefs`).",
    )
    inputs: list[NodeEdge] = Field(
        default_factory=list,
        description="Binds the NodeDef's inputs to edges; every `Required` input must be bound.",
    )
    outputs: list[NodeEdge] = Field(
        default_factory=list,
        description="Binds the NodeDef's outputs to edges; every `Required` output must be bound.",
    )
    flags: list[NodeFlag] = Field(
        default_factory=list,
        description="Values of the NodeDef's flags. A flag not given takes its `Default`; a "
        "`Required` flag without one must be given.",
    )
    command: str | None = Field(
        default=None,
        description="The `Name` of the NodeDef's command to run. Needed when the NodeDef has "
        "several; optional with one (that one runs); refused with none (the image's own "
        "command runs).",
    )
    map: MapSpec | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="How the node is mapped: a file input (one not declared `Collection`) "
        "bound to a collection edge runs the node once per item, the item as that input, "
        "and each output becomes a collection keyed by the item's name. Items of the next "
        "mapped node start as soon as their own item is there, not when the whole "
        "collection is. Optional on a mapped node (for `Concurrency` and `MinSuccess`); "
        "refused on a node that is not mapped.",
    )


class Flow(WireModel):
    name: str = Field(
        max_length=128,
        description="The flow's name: `${FLOW_NAME}` in object keys, and the name a saved "
        "flow is found by.",
    )
    stores: list[StoreInput] = Field(
        default_factory=list,
        description="Stores of the flow's own, where the operator allows them. Usually "
        "empty: the service's stores (`default`, and those its operator configured) are "
        "named in DataWells without being declared.",
    )
    default_store: str | None = Field(
        default=None,
        description="The store of every edge whose well names none (edges without a well "
        "included), unless `DefaultDataWell` names one: one of `Stores` or of the service's "
        "own. Absent: `default`.",
    )
    # Pupload's name for a well template applied to edges without a well.
    default_data_well: DataWell | None = Field(
        default=None,
        description="A well template: its `Store` and `Key` apply to every edge whose own "
        "well does not set them, and to edges without a well. Its `Edge` and `Source` are "
        "not used.",
    )
    data_wells: list[DataWell] = Field(
        default_factory=list,
        description="Binds edges to stores and sources. With none, every edge no node "
        "produces gets an `upload` well and every output no node reads is stored in the "
        "default store. Once one is declared nothing is implied: every such edge needs its "
        "own.",
    )
    collections: list[str] = Field(
        default_factory=list,
        exclude_if=lambda v: not v,
        description="Edges no node produces that carry a collection: its WaitingURL takes "
        "a zip or tar that the service expands into items (or items are put one by one, "
        "then the collection is closed). An edge a node produces is a collection when that "
        "output is declared `Collection` or its node is mapped, and may be listed here too.",
    )
    lifetime: str | int | float | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="How long each run of the flow is kept after it ends (its status, logs "
        "and the objects it took in or wrote), instead of the service's default "
        "(`retention.runs`, 30 days unless its operator says otherwise): a duration, `90s`, "
        "`30m`, `12h`, `30d`, `2w`, or seconds, within `retention.min_lifetime` and "
        "`max_lifetime`. Afterwards the run's status answers 410 `RUN_EXPIRED`.",
    )
    # Validation refuses an empty list as FLOW_002 (with every other problem at once).
    nodes: list[Node] = Field(
        default_factory=list,
        json_schema_extra=_refused_below(minItems=1),
        description="The flow's steps, each a container run of a NodeDef, at least one (at "
        "most the service's `max_flow_nodes`, 10,000 by default). Their edges must form a "
        "DAG.",
    )


class EdgeDef(WireModel):
    name: str = Field(
        description="The name nodes bind in `Inputs` or `Outputs` and the command reads as "
        "`${Name}`, an identifier. An input is at `/pipewell/in/<Name><ext>` (the extension "
        "of the type sniffed from its bytes), read-only; an output is read from "
        "`/pipewell/out/<Name>` (with its type's extension when `Type` is one concrete type) "
        "after the program exits 0, and must be a regular file. The paths are also in the "
        "environment as `INPUT_<NAME>` and `OUTPUT_<NAME>`.",
    )
    description: str = Field(default="", description="What it is, for people and catalogs.")
    required: bool = Field(
        default=False,
        description="Whether every node using the NodeDef must bind it.",
    )
    # None: untyped (anything goes). An explicit empty list is TYPE_002.
    type: list[str] | None = Field(
        default=None,
        description="The MIME types it takes or makes: `type/subtype`, a family (`image/*`) "
        "or `*/*`; a list, or one such string. Absent: anything. An input whose sniffed type "
        "is not listed fails its node without retries; an output and the inputs it feeds "
        "must have a type in common. An empty list is refused.",
    )

    collection: bool = Field(
        default=False,
        exclude_if=lambda v: not v,
        description="Whether it is a collection: a named set of items, not one file. An "
        "input gets every item of the collection bound to it in the directory "
        "`/pipewell/in/<Name>/`, by item name (a gather); an output is the directory "
        "`/pipewell/out/<Name>/`, whose every regular file becomes an item named by its path "
        "in it. `Type` is then each item's type. A file input (not a collection) bound to a "
        "collection edge maps the node over the items instead (see `Node.Map`).",
    )

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
    name: str = Field(
        description="The name nodes set in `Flags`, an identifier. The command reads the "
        "value as `${Name}`, the environment as `FLAG_<NAME>` (upper case, any character but "
        "letters and digits as `_`).",
    )
    description: str = Field(
        default="",
        description="What the flag means, for people; errors about its values quote it.",
    )
    required: bool = Field(
        default=False,
        description="Whether a node must give it: without a `Default`, a node that does not "
        "set it is refused, and an empty value is refused either way.",
    )
    # Pupload leaves Type free text: anything but the four is DEF_002 at validation.
    type: str = Field(
        default=FlagType.STRING,
        description="integer, number, boolean or string; values are checked against it "
        "before a run starts. Read case-insensitively; empty means `string`. An integer is "
        "whole digits (`800`, `-3`), a number plain decimals (`0.5`, not `1e3`), a boolean "
        "`true` or `false` (`yes`/`no`, `on`/`off` and `1`/`0` work too).",
    )
    default: str | None = Field(
        default=None,
        description="The value a node gets when it does not set the flag (a JSON number or "
        "boolean is taken as its text); it must fit `Type`, `Values`, `Min` and `Max`. "
        "Absent: such a node gets no `FLAG_<NAME>`, and `${Name}` stays as written.",
    )
    values: list[str] | None = Field(
        default=None,
        min_length=1,
        description="The only values the flag takes (an addition to Pupload's shape), "
        "matched exactly; each must fit `Type`, `Min` and `Max`. Not for boolean flags.",
        # The input type given below replaces the schema pydantic would derive.
        json_schema_extra=lambda schema: schema["anyOf"][0].update(minItems=1),
    )
    min: float | None = Field(
        default=None,
        allow_inf_nan=False,
        description="Least value of an integer or number flag, inclusive (ours); at most `Max`.",
    )
    max: float | None = Field(
        default=None,
        allow_inf_nan=False,
        description="Greatest value of an integer or number flag, inclusive (ours); at least "
        "`Min`.",
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
    name: str = Field(
        default="default",
        description="The name a node gives in its `Command` to run this one, an identifier.",
    )
    description: str = Field(default="", description="What the command does, for people.")
    exec: str = Field(
        description="The program and its arguments, which replace the image's `Cmd` (after "
        "its `Entrypoint`). Split into arguments as a POSIX shell would (quotes respected) "
        "but run without one; then `${InputName}`, `${OutputName}` and `${FlagName}` are "
        "replaced inside each argument by the input's path (`/pipewell/in/…`), the output's "
        "path (`/pipewell/out/…`) or the flag's value, so a value never splits into several "
        "arguments and no shell reads it unless the Exec runs one. Where names clash, an "
        "input wins over an output and an output over a flag; other `${…}` (and names that "
        "start with a digit) stay as written. The environment has the same values as "
        "`INPUT_<NAME>`, `OUTPUT_<NAME>` and `FLAG_<NAME>`, with `PIPEWELL_RUN_ID`, "
        "`PIPEWELL_NODE_ID` and `PIPEWELL_ATTEMPT`. Must not be empty, nor have an "
        "unbalanced quote.",
    )


class RetryPolicy(WireModel):
    """How a NodeDef's failed attempts are retried, beyond MaxAttempts and the backoff."""

    fail_exit_codes: list[Annotated[int, Field(ge=1, le=255)]] = Field(
        default_factory=list,
        description="Exit codes that mean the node cannot succeed with these inputs (a bad "
        "input, a usage error): such an attempt fails the node at once, not retried, its "
        "reason saying so.",
    )
    tier_up_on_oom: bool = Field(
        default=False,
        alias="TierUpOnOOM",
        description="After an attempt killed for memory, the next attempt runs on the next "
        "larger tier the workers offer (its reason says which); without one, on the same.",
    )


class NodeDef(WireModel):
    id: int | None = Field(
        default=None, alias="ID", description="Pupload's database id: accepted and ignored."
    )
    publisher: str = Field(
        description="Who publishes the NodeDef; a node's `Uses` names it as `Publisher/Name`.",
    )
    name: str = Field(description="The NodeDef's name among its publisher's.")
    description: str = Field(
        default="",
        description="What the node does, for catalogs and people (an addition to Pupload's shape).",
    )
    image: str = Field(
        description="The Docker image its nodes run. A missing image is pulled only "
        "from the registries the operator allows (`executor.pull_registries`, Docker Hub by "
        "default).",
    )
    inputs: list[EdgeDef] = Field(
        default_factory=list,
        description="The files the node reads. When any is declared, a node may bind only these.",
    )
    outputs: list[EdgeDef] = Field(
        default_factory=list,
        description="The files the node writes. When any is declared, a node may bind only these.",
    )
    flags: list[FlagDef] = Field(
        default_factory=list,
        description="The settings the node takes. When any is declared, a node may set only these.",
    )
    command: CommandDef | None = Field(
        default=None,
        description="The command to run (Pupload's one command); with `Commands` it is the "
        "first of them.",
    )
    commands: list[CommandDef] = Field(
        default_factory=list,
        description="Commands a node chooses from by `Name` in its `Command`. With neither "
        "`Command` nor `Commands`, the image's own command runs.",
    )
    tier: str = Field(
        default=DEFAULT_TIER,
        description="The container's size, a Pupload tier name: `c-nano` … `c-4xlarge` (1 "
        "CPU, 512 MiB up to 64 CPUs, 64 GiB), `m-small` … `m-4xlarge` (more memory per CPU, "
        "up to 256 GiB), `g-micro` … `g-2xlarge` (one GPU of any vendor), `gn-*` (NVIDIA), "
        "`ga-*` (AMD) or `gi-*` (Intel). It sets the container's CPU, memory and process "
        "limits and the default `MaxOutputBytes`. An unknown name is refused; a node whose "
        "tier no worker offers waits, saying so.",
    )
    max_attempts: int = Field(
        default=DEFAULT_MAX_ATTEMPTS,
        ge=1,
        le=100,
        description="How many times a node runs before it fails, the first attempt "
        "included. A failed attempt (a non-zero exit, out of memory, `Timeout`, a missing "
        "output) is retried after a backoff (1 s, doubling, at most 60 s unless the operator "
        "says otherwise); once none is left the node and its run are `ERROR`. An input of "
        "the wrong type or an output over `MaxOutputBytes` is not retried, and an attempt "
        "lost with its worker's Docker engine is not counted.",
    )
    timeout: float | None = Field(
        default=None,
        gt=0,
        le=MAX_TIMEOUT_SECONDS,
        allow_inf_nan=False,
        description="Seconds before the container is killed (at most a week); fractions "
        "allowed. The attempt then fails, and is retried while attempts remain. Absent: the "
        "service's `executor.default_timeout` (3600 s unless the operator says otherwise).",
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
    retry: RetryPolicy = Field(
        default_factory=RetryPolicy,
        description="Exit codes not worth a retry, and a bigger tier after running out of memory.",
    )
    cache: bool = Field(
        default=True,
        description="Reuse this node's outputs when the same work was done before (same "
        "image ID, command, flags and input bytes, in the same tenant) instead of running "
        "it. `false` for a node whose outputs differ from run to run (a clock, a random "
        "seed, a call to another service).",
    )
    cache_version: str | None = Field(
        default=None,
        max_length=200,
        description="Part of the cache key: change it to make earlier results stale when "
        "the node's behaviour changed without its image (a fix in a script it downloads).",
    )
    cache_ignore: list[str] = Field(
        default_factory=list,
        description="Input names left out of the cache key: inputs that do not change the "
        "outputs (a log level file, a hint). Each must be one of the NodeDef's Inputs.",
    )

    @property
    def uses(self) -> str:
        return f"{self.publisher}/{self.name}"

    def all_commands(self) -> list[CommandDef]:
        return ([self.command] if self.command else []) + list(self.commands)


class FlowSubmission(WireModel):
    """Body of ``POST /api/v1/flow/test``."""

    flow: Flow = Field(
        description="The flow to run. The API also takes a bare Flow (`Name` and `Nodes` at "
        "the top) as this one, with no NodeDefs.",
    )
    node_defs: list[NodeDef] = Field(
        default_factory=list,
        description="NodeDefs the flow's nodes use; they win over the built-in ones, which "
        "need not be sent. Two that differ may not share a `Publisher` and `Name`.",
    )
    no_cache: bool = Field(
        default=False,
        description="Run every node, reusing no earlier result (results of this run are "
        "still kept for later ones).",
    )
    recompute: list[str] = Field(
        default_factory=list,
        description="Node IDs to run even where an earlier result could be reused; the "
        "nodes after them run too when their inputs change.",
    )
    priority: int = Field(
        default=0,
        ge=-100,
        le=100,
        exclude_if=lambda v: v == 0,
        description="How soon the run's nodes go to a worker, from -100 to 100: where "
        "workers of a tier are busy, a higher priority's nodes go first; at equal "
        "priority tenants take turns, and a tenant's runs take turns.",
    )


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


class CacheHit(WireModel):
    """Where a node's reused outputs come from: no container ran for it in this run."""

    run: str = Field(description="The run whose node computed the outputs.")
    node: str = Field(description="That node's ID in its run.")


class NodeState(WireModel):
    status: NodeStatus = NodeStatus.IDLE
    logs: list[LogRecord] = Field(default_factory=list)
    error: str = ""
    attempt: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    # Seconds per phase of the latest attempt, to explain a slow node: queue_wait,
    # presign, input_transfer, create, start, run, output_transfer, remove.
    timings: dict[str, float] = Field(default_factory=dict)
    # A mapped node's: its items counted by status.
    items: ItemProgress | None = Field(default=None, exclude_if=lambda v: v is None)
    # The tier its attempts run on when bigger than its NodeDef's (Retry.TierUpOnOOM).
    tier: str | None = Field(default=None, exclude_if=lambda v: v is None)
    cached: CacheHit | None = Field(default=None, exclude_if=lambda v: v is None)


class Artifact(WireModel):
    store_name: str
    object_name: str
    edge_name: str
    # A collection's: how many items it holds (its objects are under ObjectName/).
    items: int | None = Field(default=None, exclude_if=lambda v: v is None)
    # What the bytes are, known as they were stored: "sha256:<hex>", or S3's
    # "etag:<etag>" for an object sent straight to S3.
    digest: str | None = Field(default=None, exclude_if=lambda v: v is None)
    # When retention deleted its objects, its edge being kept shorter than its run
    # (its DataWell's Lifetime).
    expired_at: datetime | None = Field(default=None, exclude_if=lambda v: v is None)


class ItemProgress(WireModel):
    """A mapped node's items, counted: the items themselves are paged from their endpoint."""

    total: int | None = Field(
        default=None,
        description="How many items the node maps over; absent until its input collection "
        "is complete.",
    )
    counts: dict[str, int] = Field(
        default_factory=dict, description="Items per status (IDLE, READY, RUNNING, ...)."
    )
    min_success: float = 1.0


class ItemState(WireModel):
    """One item of a mapped node, as its items endpoint pages it."""

    name: str
    status: NodeStatus = NodeStatus.IDLE
    attempt: int = 0
    error: str = ""
    logs: list[LogRecord] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)
    # Its outputs are an earlier run's item's (the same work): no container ran for it.
    cached: CacheHit | None = Field(default=None, exclude_if=lambda v: v is None)


class CollectionItem(WireModel):
    """One item of a collection: an object of its own."""

    name: str
    object_name: str
    size: int = 0
    content_type: str = ""
    sha256: str = ""


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
    # The ended run this one retries (POST /api/v1/flow/retry/{id}), and the runs
    # that retried this one: additions too.
    retry_of: str | None = Field(default=None, exclude_if=lambda v: v is None)
    retried_by: list[str] = Field(default_factory=list, exclude_if=lambda v: not v)


__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_TENANT",
    "DEFAULT_TIER",
    "MAX_TIMEOUT_SECONDS",
    "NAME_PATTERN",
    "NAME_RULE",
    "Artifact",
    "CollectionItem",
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
    "ItemProgress",
    "ItemState",
    "LogRecord",
    "MapSpec",
    "Node",
    "NodeDef",
    "NodeEdge",
    "NodeFlag",
    "NodeState",
    "NodeStatus",
    "RetryPolicy",
    "RunStatus",
    "StoreInput",
    "WaitingURL",
    "WireModel",
    "is_name",
    "utcnow",
]
