"""The native dialect (Pupload's Flow API): test a flow, status, artifacts, events."""

from __future__ import annotations

import asyncio
import math
from typing import Annotated, Any, Literal

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from orchestrator.api.auth import PRINCIPAL, tenant_of
from orchestrator.api.bodies import (
    YAML_TYPES,
    answer,
    answer_json,
    read_model,
    read_submission,
)
from orchestrator.api.downloads import download_headers
from orchestrator.api.openapi import RUN_START_ERRORS, Answer, Query, operation
from orchestrator.api.resources import METRICS, SERVICE, WORKER
from orchestrator.api.sse import HEARTBEAT_SECONDS, keep_alive, open_stream, send
from orchestrator.errors import BodyInvalid
from orchestrator.models import (
    CollectionItem,
    FlowRun,
    FlowSubmission,
    ItemProgress,
    ItemState,
    LogRecord,
    Node,
    NodeDef,
    NodeStatus,
    RunStatus,
    WireModel,
)
from orchestrator.registry import parse_id
from orchestrator.service import OTHER_IMAGES
from orchestrator.service.collections import MAX_PAGE
from orchestrator.validation.results import ValidationEntry

routes = web.RouteTableDef()

RUN_ID = {"run_id": "the run's ID (its execution_id in the other dialects)"}
A_RUN = Answer("the FlowRun", FlowRun)


class ValidationReport(BaseModel):
    """``POST /api/v1/flow/validate``: every problem at once, nothing run."""

    valid: bool
    errors: list[ValidationEntry]
    warnings: list[ValidationEntry]


class LogLine(LogRecord):
    """A node's log line, as an event of its run's stream."""

    node: str


class RunDelta(FlowRun):
    """A big run's change, as an event of its stream: NodeState and Artifacts hold only
    what changed since the event before; merge them into the run sent whole first."""

    #: Nodes per status (the statuses no node has are left out).
    counts: dict[str, int]


class RunGraph(WireModel):
    """A run's nodes and the edges between them: the Flow without its Stores."""

    name: str
    nodes: list[Node]


class Catalog(WireModel):
    node_defs: list[NodeDef]


class RunSummary(WireModel):
    id: str = Field(alias="ID")
    flow: str
    status: RunStatus
    started_at: str | None
    finished_at: str | None


class RunList(BaseModel):
    runs: list[RunSummary]


class SpareView(BaseModel):
    image: str
    tier: str
    ready: int = Field(description="containers of this image and tier started and waiting")


class WorkerView(BaseModel):
    """A live worker; its attempts are counted, not named (they are tenants')."""

    id: str
    name: str
    tiers: list[str]
    memory_mib: int
    slots: int
    running: int
    launch: Literal["gated", "plain"] = Field(
        description="gated: attempts run in containers started ahead and held at a gate; "
        "plain: a container is created per attempt (executor.launch)"
    )
    spares: list[SpareView] = Field(
        description="spares ready now (gated only), per image and tier; images outside the "
        f"built-in catalog are counted as {OTHER_IMAGES!r}"
    )
    last_heartbeat: str


class TenantRuns(BaseModel):
    """A tenant's runs against its quotas (quotas, tenants in the configuration)."""

    tenant: str
    runs: int = Field(description="runs accepted and not ended")
    running: int = Field(description="of those, started: a node of theirs sent to a worker")
    running_limit: int | None = Field(description="most runs started at once (null: any)")
    queued_limit: int | None = Field(
        description="most runs accepted beyond those running (null: any)"
    )
    stored_bytes: int | None = Field(
        description="bytes of its objects in the service's stores at the last measure "
        "(quotas.measure_every; null before the first)"
    )
    stored_limit: int | None = Field(description="most bytes it may store (null: any)")


class Workers(BaseModel):
    workers: list[WorkerView]
    queued: dict[str, int] = Field(
        description="tier → attempts no worker has taken yet (in the task queue, or waiting "
        "their turn in the service's dispatch order)"
    )
    tenants: list[TenantRuns] = Field(
        description="every tenant's runs for an admin key (with auth off, for any caller); "
        "the caller's own tenant's otherwise"
    )


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    docker: str | None = Field(
        default=None,
        description="the local worker's Docker engine: ok, or unreachable and why; absent "
        "without a local worker",
    )


@routes.post("/api/v1/flow/test")
@operation(
    "Validate and start a run of {Flow, NodeDefs}",
    tag="native",
    body=FlowSubmission,
    body_media=YAML_TYPES,
    answers={200: Answer("the FlowRun, its WaitingURLs to PUT the inputs to", FlowRun)},
    errors=("FLOW_INVALID", *RUN_START_ERRORS),
)
async def test_flow(request: web.Request) -> web.Response:
    """Answered once the run is on disk."""
    submission = await read_submission(request)
    service, tenant = request.app[SERVICE], tenant_of(request)
    run = await service.submissions.submit(submission, tenant=tenant)
    # The run's own JSON, joined from its nodes' (a 10,000-node FlowRun made anew
    # would take the loop for 50 ms).
    return answer_json(await service.runs.status_json(run.id, tenant))


@routes.post("/api/v1/flow/validate")
@operation(
    "Validate {Flow, NodeDefs} without running anything",
    tag="native",
    body=FlowSubmission,
    body_media=YAML_TYPES,
    answers={200: Answer("every error and warning", ValidationReport)},
    errors=("FLOW_INVALID",),
)
async def validate_flow(request: web.Request) -> web.Response:
    """A body that is not a submission at all is FLOW_INVALID (SCHEMA_001 entries)."""
    submission = await read_submission(request)
    result = await request.app[SERVICE].submissions.validate(submission)
    report = ValidationReport(valid=result.ok, errors=result.errors, warnings=result.warnings)
    return answer(report, exclude_none=True)


@routes.get("/api/v1/flow/status/{run_id}")
@operation(
    "A run's status",
    tag="native",
    params=RUN_ID,
    answers={200: A_RUN},
    errors=("RUN_NOT_FOUND",),
)
async def flow_status(request: web.Request) -> web.Response:
    """The FlowRun, live or finished."""
    runs = request.app[SERVICE].runs
    return answer_json(await runs.status_json(request.match_info["run_id"], tenant_of(request)))


@routes.get("/api/v1/flow/graph/{run_id}")
@operation(
    "A run's graph",
    tag="native",
    params=RUN_ID,
    answers={200: Answer("the run's Name and Nodes (flags applied)", RunGraph)},
    errors=("RUN_NOT_FOUND",),
)
async def flow_graph(request: web.Request) -> web.Response:
    """The run's nodes and the edges between them (``{Name, Nodes}``), to draw its DAG.

    Only the graph: the Flow's Stores may hold a flow store's credentials.
    """
    flow = await request.app[SERVICE].runs.flow_of(request.match_info["run_id"], tenant_of(request))
    return answer(RunGraph(name=flow.name, nodes=flow.nodes))


@routes.post("/api/v1/flow/cancel/{run_id}")
@operation(
    "Stop a run",
    tag="native",
    params=RUN_ID,
    answers={200: Answer("the FlowRun, STOPPED", FlowRun)},
    errors=("RUN_NOT_FOUND", "RUN_FINISHED"),
)
async def cancel_flow(request: web.Request) -> web.Response:
    """Stop a run: 200 with the STOPPED FlowRun; 409 RUN_FINISHED when it has ended."""
    run = await request.app[SERVICE].runs.cancel(request.match_info["run_id"], tenant_of(request))
    return answer(run)


class RetryRequest(WireModel):
    recompute: list[str] = Field(
        default_factory=list,
        description="Node IDs to run again although they succeeded, with every node after "
        "them (none: only what failed, was stopped or never ran)",
    )


@routes.post("/api/v1/flow/retry/{run_id}")
@operation(
    "Retry an ended run from where it failed",
    tag="native",
    params=RUN_ID,
    body=RetryRequest,
    answers={
        200: Answer(
            "the new FlowRun (`RetryOf` names the old one): nodes that succeeded are COMPLETE "
            "and `Cached` from it, its inputs are copied; WaitingURLs only for inputs that "
            "never came",
            FlowRun,
        )
    },
    errors=("RUN_NOT_FOUND", "RUN_NOT_ENDED", "FLOW_INVALID", *RUN_START_ERRORS),
)
async def retry_flow(request: web.Request) -> web.Response:
    """A new run of an ended one (COMPLETE, ERROR or STOPPED) that takes over its
    inputs and what succeeded; the old run's ``RetriedBy`` names the new one. The body
    is optional."""
    body = await read_model(request, RetryRequest, empty_ok=True)
    service, tenant = request.app[SERVICE], tenant_of(request)
    run = await service.retries.retry(request.match_info["run_id"], tenant, body.recompute)
    return answer_json(await service.runs.status_json(run.id, tenant))


#: Runs one listing answers at the most.
MAX_LISTED = 500


@routes.get("/api/v1/flow/runs")
@operation(
    "Your newest runs",
    tag="native",
    query=(
        Query(
            "limit",
            Annotated[int, Field(ge=1, le=MAX_LISTED)],
            f"how many, 1 to {MAX_LISTED} (default 50)",
        ),
    ),
    answers={200: Answer("the runs, newest first", RunList)},
    errors=("LIMIT_INVALID",),
)
async def recent_runs(request: web.Request) -> web.Response:
    """The caller's newest runs, newest first: ``?limit=`` (default 50, at most 500)."""
    limit = parse_id(request.query.get("limit", "50"))
    if limit is None or not 1 <= limit <= MAX_LISTED:
        raise BodyInvalid("LIMIT_INVALID", f"limit is a whole number from 1 to {MAX_LISTED}")
    runs = await request.app[SERVICE].runs.recent(tenant_of(request), limit)
    return answer(RunList.model_validate({"runs": runs}))


class ItemPageView(WireModel):
    """A page of a mapped node's items, in the order they came."""

    node: str
    progress: ItemProgress | None = Field(description="the node's items counted by status")
    items: list[ItemState]
    next: str | None = Field(
        description="the item to ask the next page `after`; null on the last page"
    )


class CollectionItemView(CollectionItem):
    url: str = Field(alias="URL", description="a presigned GET of the item's bytes")


class CollectionPage(WireModel):
    """A page of a collection's items, in the order they came."""

    edge: str
    complete: bool = Field(description="whether more items may still come")
    count: int = Field(description="items in the collection so far")
    items: list[CollectionItemView]
    next: str | None = Field(
        description="the item to ask the next page `after`; null on the last page"
    )


class ItemNames(WireModel):
    names: list[str] = Field(
        min_length=1,
        description="item names: relative paths of letters, digits, '.', '_' and '-' parts "
        "(such as `photos/cat.jpg`)",
    )


class ItemPutURLs(WireModel):
    put_urls: dict[str, str] = Field(
        alias="PutURLs", description="item name → a presigned PUT, good once"
    )
    ttl: str = Field(alias="TTL", description="when the URLs stop working")


class CollectionClosedView(WireModel):
    edge: str
    count: int = Field(description="the items the collection holds, now complete")


PAGE_QUERY = (
    Query("after", str, "the name of the last item of the page before (`Next`)"),
    Query(
        "limit",
        Annotated[int, Field(ge=1, le=MAX_PAGE)],
        f"items per page, 1 to {MAX_PAGE} (default 100)",
    ),
)


def _page_limit(request: web.Request) -> int:
    limit = parse_id(request.query.get("limit", "100"))
    if limit is None or not 1 <= limit <= MAX_PAGE:
        raise BodyInvalid("LIMIT_INVALID", f"limit is a whole number from 1 to {MAX_PAGE}")
    return limit


@routes.get("/api/v1/flow/items/{run_id}/{node_id}")
@operation(
    "A mapped node's items",
    tag="native",
    params={**RUN_ID, "node_id": "a node the run maps over a collection"},
    query=(
        Query("status", NodeStatus, "only the items in this status (ERROR: the failed ones)"),
        *PAGE_QUERY,
    ),
    answers={200: Answer("a page of its items, each with its reason and log", ItemPageView)},
    errors=("RUN_NOT_FOUND", "NODE_NOT_MAPPED", "STATUS_INVALID", "LIMIT_INVALID"),
)
async def flow_items(request: web.Request) -> web.Response:
    """Each item's status, attempt, error, log lines and timings, by page (the run's
    status counts them only)."""
    status_text = request.query.get("status")
    try:
        status = NodeStatus(status_text) if status_text else None
    except ValueError:
        raise BodyInvalid(
            "STATUS_INVALID",
            f"status {status_text!r} is none of {', '.join(s.value for s in NodeStatus)}",
        ) from None
    page = await request.app[SERVICE].collections.items(
        request.match_info["run_id"],
        tenant_of(request),
        request.match_info["node_id"],
        status,
        request.query.get("after"),
        _page_limit(request),
    )
    return answer(
        ItemPageView(node=page.node, progress=page.progress, items=page.items, next=page.next_after)
    )


@routes.get("/api/v1/flow/collection/{run_id}/{edge}")
@operation(
    "A collection's items",
    tag="native",
    params={**RUN_ID, "edge": "an edge that carries a collection"},
    query=PAGE_QUERY,
    answers={200: Answer("a page of its items, each with a download URL", CollectionPage)},
    errors=("RUN_NOT_FOUND", "COLLECTION_NOT_FOUND", "LIMIT_INVALID", "STORE_UNAVAILABLE"),
)
async def flow_collection(request: web.Request) -> web.Response:
    """A collection's items (name, size, type, sha256, and a presigned GET), by page."""
    page = await request.app[SERVICE].collections.members(
        request.match_info["run_id"],
        tenant_of(request),
        request.match_info["edge"],
        request.query.get("after"),
        _page_limit(request),
    )
    return answer(
        CollectionPage.model_validate(
            {
                "Edge": page.edge,
                "Complete": page.complete,
                "Count": page.count,
                "Items": page.items,
                "Next": page.next_after,
            }
        )
    )


@routes.post("/api/v1/flow/collection/{run_id}/{edge}/items")
@operation(
    "PutURLs for a collection's items",
    tag="native",
    params={**RUN_ID, "edge": "an upload edge that carries a collection"},
    body=ItemNames,
    answers={200: Answer("a PutURL per item name", ItemPutURLs)},
    errors=(
        "RUN_NOT_FOUND",
        "COLLECTION_NOT_FOUND",
        "COLLECTION_CLOSED",
        "COLLECTION_TOO_LARGE",
        "ITEM_NAME_INVALID",
        "BODY_MALFORMED",
        "STORE_UNAVAILABLE",
    ),
)
async def collection_put_urls(request: web.Request) -> web.Response:
    """For a client that puts items one by one instead of a zip: a PutURL per name
    (asked for in as many requests as it likes), then ``close`` once they are put."""
    body = await read_model(request, ItemNames)
    urls, expires = await request.app[SERVICE].collections.put_urls(
        request.match_info["run_id"], tenant_of(request), request.match_info["edge"], body.names
    )
    return answer(ItemPutURLs(put_urls=urls, ttl=expires.isoformat().replace("+00:00", "Z")))


@routes.post("/api/v1/flow/collection/{run_id}/{edge}/close")
@operation(
    "Close a collection filled item by item",
    tag="native",
    params={**RUN_ID, "edge": "an upload edge that carries a collection"},
    answers={200: Answer("the collection, complete", CollectionClosedView)},
    errors=(
        "RUN_NOT_FOUND",
        "COLLECTION_NOT_FOUND",
        "COLLECTION_CLOSED",
        "COLLECTION_TOO_LARGE",
        "STORE_UNAVAILABLE",
    ),
)
async def collection_close(request: web.Request) -> web.Response:
    """The collection is complete with the items put so far: its nodes learn their
    total, and a gather of it may run."""
    edge = request.match_info["edge"]
    count = await request.app[SERVICE].collections.close(
        request.match_info["run_id"], tenant_of(request), edge
    )
    return answer(CollectionClosedView(edge=edge, count=count))


@routes.get("/api/v1/nodedefs")
@operation(
    "The built-in NodeDefs",
    tag="native",
    answers={200: Answer("the catalog, by Publisher/Name", Catalog)},
)
async def nodedefs(request: web.Request) -> web.Response:
    """A flow may name any of them in Uses without sending it; a NodeDef it sends wins."""
    return answer(Catalog(node_defs=request.app[SERVICE].nodedefs()))


@routes.get("/api/v1/nodedefs/{publisher}/{name}")
@operation(
    "One built-in NodeDef",
    tag="native",
    params={"publisher": "its Publisher", "name": "its Name"},
    answers={200: Answer("the NodeDef", NodeDef)},
    errors=("NODEDEF_NOT_FOUND",),
)
async def nodedef(request: web.Request) -> web.Response:
    uses = f"{request.match_info['publisher']}/{request.match_info['name']}"
    return answer(request.app[SERVICE].nodedef(uses))


@routes.get("/api/v1/workers")
@operation(
    "Live workers and queued tasks",
    tag="service",
    answers={200: Answer("workers heard from within queue.reclaim_after", Workers)},
)
async def workers(request: web.Request) -> web.Response:
    """Live workers (tiers, capacity, running attempts, last heartbeat) and queue depth per tier."""
    return answer(Workers.model_validate(await _describe_workers(request)))


async def _describe_workers(request: web.Request) -> dict[str, Any]:
    principal = request.get(PRINCIPAL)
    every = principal is None or principal.admin
    return await request.app[SERVICE].workers(None if every else tenant_of(request))


@routes.get("/api/v1/flow/artifact/{run_id}/{edge}")
@operation(
    "An artifact's bytes",
    tag="native",
    params={**RUN_ID, "edge": "the edge the artifact is on"},
    answers={
        200: Answer(
            "the bytes, with their stored Content-Type (never rendered as a page: "
            "nosniff, `Content-Security-Policy: sandbox`, an attachment unless passive)",
            media_types=("*/*",),
            schema={},
            headers={"Content-Disposition": "inline or attachment, with a safe filename"},
        )
    },
    errors=("RUN_NOT_FOUND", "ARTIFACT_NOT_FOUND", "STORE_UNAVAILABLE"),
)
async def flow_artifact(request: web.Request) -> web.StreamResponse:
    """The artifact's bytes, streamed from its store through the service."""
    runs = request.app[SERVICE].runs
    record = await runs.resolve(request.match_info["run_id"], tenant_of(request))
    info, reader, _, _ = await runs.open_artifact(record, request.match_info["edge"])
    loop = asyncio.get_running_loop()
    response = web.StreamResponse(
        headers={
            **download_headers(info.content_type, request.match_info["edge"]),
            "Content-Length": str(info.size),
        }
    )
    try:
        await response.prepare(request)
        while chunk := await loop.run_in_executor(None, reader.read, 1024 * 1024):
            await response.write(chunk)
    finally:
        # Closing never blocks for long (a file, or a pooled HTTP body), and an
        # awaited close could be skipped if the client goes away meanwhile.
        reader.close()
    await response.write_eof()
    return response


@routes.get("/api/v1/flow/events/{run_id}")
@operation(
    "A run's Server-Sent Events",
    tag="native",
    params=RUN_ID,
    answers={
        200: Answer(
            "`event: status` (`data:` the FlowRun) on every change, `event: log` (one line, "
            "with its node), then `event: end` with the final FlowRun; a `: keep-alive` "
            "comment every 15 s of quiet. A run of more than 200 nodes is sent whole once, "
            "then as `event: delta`: the run's own fields, `Counts` (nodes per status), and "
            "the NodeState and Artifacts that changed since the event before",
            events=(
                ("status", FlowRun),
                ("delta", RunDelta),
                ("log", LogLine),
                ("end", FlowRun),
            ),
        )
    },
    errors=("RUN_NOT_FOUND",),
)
async def flow_events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: ``status`` (the FlowRun), ``log`` (one line), ``end``."""
    runs = request.app[SERVICE].runs
    run_id = request.match_info["run_id"]
    # Raises RunNotFound (also for another tenant's run) before the stream opens.
    await runs.get(run_id, tenant_of(request))
    response = await open_stream(request)
    whole_sent = False
    # No end but the run's: a native stream lasts as long as its run.
    async for update in runs.watch(run_id, math.inf, heartbeat=HEARTBEAT_SECONDS):
        if update.name == "heartbeat":
            await keep_alive(response)
        elif update.name == "log":
            line = LogLine.model_validate(update.line).model_dump(mode="json")
            await send(response, line, event="log")
        else:
            delta = runs.delta_json(run_id, update.changes) if whole_sent else None
            if delta is not None and update.name == "status":
                await send(response, None, event="delta", encoded=delta.decode())
                continue
            # Known before the JSON is taken: the run (the scheduler's own) may end
            # meanwhile, and an end must never carry a run still RUNNING.
            ended = update.name == "end" or update.run.status.finished
            # The run's JSON, made once per change for every stream and status read.
            encoded = (await runs.status_json(run_id)).decode()
            await send(response, None, event="status", encoded=encoded)
            whole_sent = True
            if ended:
                await send(response, None, event="end", encoded=encoded)
                break
    return response


@routes.get("/metrics")
@operation(
    "Prometheus metrics",
    tag="service",
    answers={
        200: Answer(
            "Prometheus' text format (see docs/api.md for every metric)",
            media_types=("text/plain",),
            schema={"type": "string"},
        )
    },
)
async def metrics(request: web.Request) -> web.Response:
    """Prometheus' text format: runs, attempts, durations, queue depth, bytes, HTTP latency."""
    recorded = request.app[METRICS]
    recorded.set_queued(await _describe_workers(request))
    service = request.app[SERVICE]
    recorded.runs_active.set(service.runs.active_runs())
    recorded.runs_waiting_turn.set(
        sum(t["unfinished"] - t["started"] for t in service.scheduler.tenant_runs().values())
    )
    return web.Response(
        body=generate_latest(recorded.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


@routes.get("/healthz")
@operation(
    "Whether the service takes work",
    tag="service",
    answers={
        200: Answer("ok", Health),
        503: Answer("degraded: the local worker's Docker engine does not answer", Health),
    },
)
async def healthz(request: web.Request) -> web.Response:
    """ok, and the local worker's Docker engine; 503 while that engine does not answer."""
    worker = request.app.get(WORKER)
    if worker is None:  # worker.enabled: false, no engine of ours to report on
        return answer(Health(status="ok"), exclude_none=True)
    problem = await worker.engine_problem()
    if problem is not None:
        return answer(Health(status="degraded", docker=f"unreachable: {problem}"), status=503)
    return answer(Health(status="ok", docker="ok"))


__all__ = ["Health", "RunList", "ValidationReport", "Workers", "routes"]
