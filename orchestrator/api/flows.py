"""Saved flows and their config profiles: ``/api/v1/flows``.

A flow is referred to by its ``graph_id`` (one pinned version), its integer
``id``, or its name (the latest version, or ``?version=N``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SkipValidation

from orchestrator.api.auth import tenant_of
from orchestrator.api.bodies import YAML_TYPES, answer, read_model, read_submission
from orchestrator.api.openapi import FIND_FLOW_ERRORS, STORAGE_ERRORS, Answer, Query, operation
from orchestrator.api.resources import SERVICE
from orchestrator.errors import BodyInvalid
from orchestrator.models import Flow, FlowSubmission, NodeDef
from orchestrator.registry import MAX_ID_DIGITS, SavedFlow, parse_id

routes = web.RouteTableDef()

#: node id → flag name → value, as stored (text).
FlagProfile = dict[str, dict[str, str]]
#: A flag's value as a request may give it: a JSON string, number or boolean.
FlagValue = str | int | float | bool
#: node id → flag name → value, as requests give it (checked against the NodeDefs).
FlagsIn = dict[str, dict[str, FlagValue]]


class FlowSummary(BaseModel):
    graph_id: str = Field(description="this version's id, a 26-character ULID")
    id: int = Field(description="the flow's integer id (Scade's flow id)")
    name: str
    version: int
    created_at: str


class FlowList(BaseModel):
    flows: list[FlowSummary]


class NodeSummary(BaseModel):
    id: str
    uses: str
    flags: list[str] = Field(description="the names of the flags its NodeDef declares")


class FlowDescription(FlowSummary):
    """What a caller needs to invoke a saved flow."""

    entry_edges: list[str] = Field(description="where an invocation's input goes")
    entry_files: dict[str, list[str]] = Field(
        description="the entry edges whose nodes take a file, not JSON, and the types they "
        "take (docs/api.md, Files as inputs)"
    )
    terminal_edges: list[str] = Field(description="what an invocation answers with")
    nodes: list[NodeSummary]


class SavedFlowAnswer(FlowDescription):
    created: bool = Field(description="false: nothing changed since the latest version")


class FlowDetail(FlowDescription):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    configs: dict[str, FlagProfile] = Field(description="config_id → its flags")
    flow: Flow = Field(alias="Flow")
    node_defs: list[NodeDef] = Field(alias="NodeDefs")


class ConfigBody(BaseModel):
    """``PUT …/configs/{config_id}``: the flags the profile sets; null sets none."""

    model_config = ConfigDict(extra="forbid")

    # Checked by the service layer against the flow's nodes and NodeDefs (FLAGS_INVALID).
    flags: SkipValidation[FlagsIn | None] = Field(description="{node_id: {flag: value}}")


class ConfigList(BaseModel):
    graph_id: str
    configs: dict[str, FlagProfile]


class ConfigAnswer(BaseModel):
    graph_id: str
    config_id: str
    flags: FlagProfile


REF = {"ref": "a saved flow: its graph_id, its integer id, or its name (the latest version)"}
CONFIG = {**REF, "config_id": "the profile's name, 1 to 100 characters"}
VERSION = Query(
    "version",
    Annotated[int, Field(ge=1, le=10**MAX_ID_DIGITS - 1)] | Literal["latest", ""],
    "with a name as ref: that version rather than the latest (empty or latest: the latest)",
)


def version_param(request: web.Request) -> int | None:
    given = request.query.getall("version", [])
    if len(given) > 1:
        raise BodyInvalid("VERSION_INVALID", "give version once")
    raw = given[0] if given else None
    if raw is None or raw in ("", "latest"):
        return None
    version = parse_id(raw)
    if version is None or version < 1:
        raise BodyInvalid("VERSION_INVALID", f"version must be a positive integer, not {raw!r}")
    return version


async def find_flow(request: web.Request, ref: str) -> SavedFlow:
    return await request.app[SERVICE].flows.find(tenant_of(request), ref, version_param(request))


@routes.post("/api/v1/flows")
@operation(
    "Save {Flow, NodeDefs} as a new version",
    tag="saved flows",
    body=FlowSubmission,
    body_media=YAML_TYPES,
    answers={
        201: Answer("a new version", SavedFlowAnswer),
        200: Answer("the latest version of that name, unchanged", SavedFlowAnswer),
    },
    errors=("FLOW_INVALID", *STORAGE_ERRORS),
)
async def save_flow(request: web.Request) -> web.Response:
    """The flow is compiled: every NodeDef it uses is written into it."""
    flows = request.app[SERVICE].flows
    flow, created = await flows.save(tenant_of(request), await read_submission(request))
    body = SavedFlowAnswer(**flows.describe(flow), created=created)
    return answer(body, status=201 if created else 200)


@routes.get("/api/v1/flows")
@operation(
    "Your saved flows",
    tag="saved flows",
    query=(Query("name", str, "only the versions of this name"),),
    answers={200: Answer("every version, oldest first", FlowList)},
)
async def list_flows(request: web.Request) -> web.Response:
    flows = await request.app[SERVICE].flows.list(tenant_of(request), request.query.get("name"))
    return answer(FlowList(flows=[FlowSummary(**f.summary()) for f in flows]))


@routes.get("/api/v1/flows/{ref}")
@operation(
    "A saved flow",
    tag="saved flows",
    params=REF,
    query=(VERSION,),
    answers={200: Answer("its summary, edges, nodes, configs, Flow and NodeDefs", FlowDetail)},
    errors=FIND_FLOW_ERRORS,
)
async def get_flow(request: web.Request) -> web.Response:
    flows = request.app[SERVICE].flows
    flow = await find_flow(request, request.match_info["ref"])
    body = FlowDetail(
        **flows.describe(flow),
        configs=await flows.configs(flow),
        flow=flow.submission.flow,
        node_defs=flow.submission.node_defs,
    )
    return answer(body, exclude_none=True)


@routes.delete("/api/v1/flows/{ref}")
@operation(
    "Delete a saved flow's version",
    tag="saved flows",
    params=REF,
    query=(VERSION,),
    answers={204: Answer("deleted: its invocations answer 404 from now on")},
    errors=(*FIND_FLOW_ERRORS, *STORAGE_ERRORS),
)
async def delete_flow(request: web.Request) -> web.Response:
    """Other versions of the flow keep working."""
    flow = await find_flow(request, request.match_info["ref"])
    await request.app[SERVICE].flows.delete(tenant_of(request), flow.graph_id)
    return web.Response(status=204)


@routes.get("/api/v1/flows/{ref}/configs")
@operation(
    "A flow's config profiles",
    tag="saved flows",
    params=REF,
    query=(VERSION,),
    answers={200: Answer("config_id → flags", ConfigList)},
    errors=FIND_FLOW_ERRORS,
)
async def list_configs(request: web.Request) -> web.Response:
    flow = await find_flow(request, request.match_info["ref"])
    configs = await request.app[SERVICE].flows.configs(flow)
    return answer(ConfigList(graph_id=flow.graph_id, configs=configs))


@routes.get("/api/v1/flows/{ref}/configs/{config_id}")
@operation(
    "A config profile",
    tag="saved flows",
    params=CONFIG,
    query=(VERSION,),
    answers={200: Answer("the profile's flags", ConfigAnswer)},
    errors=(*FIND_FLOW_ERRORS, "CONFIG_NOT_FOUND"),
)
async def get_config(request: web.Request) -> web.Response:
    flow = await find_flow(request, request.match_info["ref"])
    config_id = request.match_info["config_id"]
    flags = await request.app[SERVICE].flows.config(flow, config_id)
    return answer(ConfigAnswer(graph_id=flow.graph_id, config_id=config_id, flags=flags))


@routes.put("/api/v1/flows/{ref}/configs/{config_id}")
@operation(
    "Create or replace a config profile",
    tag="saved flows",
    params=CONFIG,
    query=(VERSION,),
    body=ConfigBody,
    answers={
        201: Answer("created", ConfigAnswer),
        200: Answer("replaced", ConfigAnswer),
    },
    errors=(*FIND_FLOW_ERRORS, "CONFIG_INVALID", "FLAGS_INVALID", *STORAGE_ERRORS),
)
async def put_config(request: web.Request) -> web.Response:
    """Flags are checked against the flow's nodes and their NodeDefs."""
    flow = await find_flow(request, request.match_info["ref"])
    body = await read_model(request, ConfigBody)
    config_id = request.match_info["config_id"]
    flags, created = await request.app[SERVICE].flows.put_config(flow, config_id, body.flags)
    return answer(
        ConfigAnswer(graph_id=flow.graph_id, config_id=config_id, flags=flags),
        status=201 if created else 200,
    )


@routes.delete("/api/v1/flows/{ref}/configs/{config_id}")
@operation(
    "Delete a config profile",
    tag="saved flows",
    params=CONFIG,
    query=(VERSION,),
    answers={204: Answer("deleted")},
    errors=(*FIND_FLOW_ERRORS, "CONFIG_NOT_FOUND", *STORAGE_ERRORS),
)
async def delete_config(request: web.Request) -> web.Response:
    flow = await find_flow(request, request.match_info["ref"])
    await request.app[SERVICE].flows.delete_config(flow, request.match_info["config_id"])
    return web.Response(status=204)


__all__ = [
    "FlagsIn",
    "ConfigAnswer",
    "FlowDetail",
    "FlowList",
    "SavedFlowAnswer",
    "find_flow",
    "routes",
    "version_param",
]
