"""One run's state machine: pure, no I/O, no clock of its own.

The scheduler feeds it what happened (an upload arrived, an attempt started,
finished or failed) and acts on what it answers (nodes to dispatch, a retry
delay). Everything here can be tested without Docker, a store or a loop.
"""

from __future__ import annotations

import functools
import itertools
import json
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from pydantic import BaseModel, Field

from orchestrator.cache import collection_digest
from orchestrator.collections.bundles import bundle_key
from orchestrator.models import (
    DEFAULT_TENANT,
    Artifact,
    CacheHit,
    CollectionItem,
    Flow,
    FlowRun,
    FlowSubmission,
    ItemProgress,
    ItemState,
    LogRecord,
    MapSpec,
    NodeDef,
    NodeState,
    NodeStatus,
    RunStatus,
    WaitingURL,
)
from orchestrator.validation import (
    DEFAULT_KEY_TEMPLATE,
    default_store_name,
    effective_wells,
    expand_key,
    resolve_defs,
    tenant_prefix,
    topological_order,
)
from orchestrator.validation.collections import collection_shape
from orchestrator.validation.object_keys import PER_RUN_VARIABLES, key_variables
from orchestrator.validation.wells import lifetime_seconds

#: Nodes one write takes at most: serializing them is work on the event loop, so
#: 10,000 nodes changed at once are written in slices, a batch apart.
WRITE_SLICE = 1000
#: Items one write takes at most (an item's row is a few hundred bytes).
ITEM_WRITE_SLICE = 1000
#: Log lines kept per item: the first and the latest, as for nodes.
ITEM_LOG_LINES = 40
#: Item statuses that hold a place under a mapped node's Concurrency.
ITEM_ACTIVE = frozenset({NodeStatus.READY, NodeStatus.RUNNING, NodeStatus.RETRYING})


#: EdgePlan fields every planned edge has; the others only where set (plans stay small).
ALWAYS_PLANNED = frozenset({"name", "store", "key", "source", "producer"})


@dataclass(frozen=True)
class EdgePlan:
    """Where an edge's object lives and what fills it."""

    name: str
    store: str
    key: str
    source: str  # "upload" | "static" | "node"
    producer: str | None = None  # node ID for source "node"
    # A collection: its items are objects under ``key``/ (collections.bundles).
    collection: bool = False
    # Seconds its objects are kept after the run ends, when its well asks for its own.
    lifetime: float | None = None
    # Its key has no per-run variable: a later run may write the same object.
    shared: bool = False


class RunPlan(BaseModel):
    """Everything derived once from a valid submission; persisted with the run."""

    run_id: str
    submission: FlowSubmission
    created_at: datetime
    edges: dict[str, dict[str, Any]]  # edge name → EdgePlan fields
    order: list[str]
    # The tenant of the key that started the run; another tenant sees no such run.
    tenant: str = DEFAULT_TENANT
    # Mapped node ID → the input Name it maps over (validation.collections).
    mapped: dict[str, str] = Field(default_factory=dict)
    # Seconds the run is kept after it ends (retention); None: for ever.
    lifetime: float | None = None

    def edge(self, name: str) -> EdgePlan:
        return EdgePlan(**self.edges[name])

    def first_expiry(self, ended: datetime) -> float | None:
        """When retention first has something of the run to delete, as epoch seconds:
        the run, or an edge kept shorter. None: nothing of it is ever deleted."""
        lifetimes = [self.lifetime, *(edge.get("lifetime") for edge in self.edges.values())]
        known = [lifetime for lifetime in lifetimes if lifetime is not None]
        return ended.timestamp() + min(known) if known else None

    def defs(self, catalog: dict[str, NodeDef] | None = None) -> dict[str, NodeDef]:
        return resolve_defs(self.submission, catalog or {})


def plan_run(
    submission: FlowSubmission,
    *,
    run_id: str,
    now: datetime,
    tenant: str = DEFAULT_TENANT,
    defs: Mapping[str, NodeDef] | None = None,
    lifetime: float | None = None,
) -> RunPlan:
    """Decide each edge's store, object key and source for a validated submission
    (``defs``: node ID → NodeDef, resolved once by the caller; needed for collections).
    ``lifetime``: how long the run is kept after it ends, unless its flow says."""
    flow = submission.flow
    order = topological_order(flow)
    shape = collection_shape(flow, defs if defs is not None else {}, order)
    wells = {w.edge: w for w in effective_wells(flow)}
    default_store = default_store_name(flow)
    template_well = flow.default_data_well
    producers = {out.edge: node.id for node in flow.nodes for out in node.outputs}
    edge_names = sorted({e.edge for n in flow.nodes for e in (*n.inputs, *n.outputs)}, key=str)
    edges: dict[str, dict[str, Any]] = {}
    # The flow's own stores are its own; in the service's, it has its tenant's namespace.
    own_stores = {s.name for s in flow.stores}
    namespace = tenant_prefix(tenant)
    for name in edge_names:
        well = wells.get(name)
        store = (well and well.store) or (template_well and template_well.store) or default_store
        template = (
            (well and well.key) or (template_well and template_well.key) or DEFAULT_KEY_TEMPLATE
        )
        key = expand_key(
            template, run_id=run_id, flow_name=flow.name, edge=name, now=now, uuid=uuid.uuid4().hex
        )
        if store not in own_stores:
            key = f"{namespace}/{key}"
        if name in producers:
            source, producer = "node", producers[name]
        elif well is not None and well.source == "static":
            source, producer = "static", None
        else:
            source, producer = "upload", None
        plan = EdgePlan(
            name,
            store,
            key,
            source,
            producer,
            name in shape.edges,
            lifetime_seconds(well and well.lifetime),
            not any(v in PER_RUN_VARIABLES for v in key_variables(template)),
        )
        edges[name] = {k: v for k, v in plan.__dict__.items() if k in ALWAYS_PLANNED or v}
    return RunPlan(
        run_id=run_id,
        submission=submission,
        created_at=now,
        edges=edges,
        order=order,
        tenant=tenant,
        mapped=dict(shape.mapped),
        lifetime=lifetime_seconds(flow.lifetime) or lifetime,
    )


def entry_edges(flow: Flow) -> list[str]:
    """Edges a run waits for an upload on (no node produces them, no static well fills
    them): where an invocation's input goes. Sorted, as ``plan_run`` plans them."""
    produced = {out.edge for node in flow.nodes for out in node.outputs}
    static = {w.edge for w in effective_wells(flow) if w.source == "static"}
    used = {e.edge for n in flow.nodes for e in (*n.inputs, *n.outputs)}
    return sorted(edge for edge in used if edge not in produced and edge not in static)


def terminal_edges(flow: Flow) -> list[str]:
    """Edges a node produces and no node reads: a run's results, in node order."""
    read = {e.edge for n in flow.nodes for e in n.inputs}
    return [o.edge for n in flow.nodes for o in n.outputs if o.edge not in read]


P = ParamSpec("P")
R = TypeVar("R")


def _changes(
    method: Callable[Concatenate[RunState, P], R],
) -> Callable[Concatenate[RunState, P], R]:
    """Marks a method that changes the run: the FlowRun's JSON is made again on next read."""

    @functools.wraps(method)
    def changing(self: RunState, *args: P.args, **kwargs: P.kwargs) -> R:
        self._json = None
        return method(self, *args, **kwargs)

    return changing


@dataclass
class Transition:
    """What the scheduler must do after an event."""

    dispatch: list[str] = field(default_factory=list)
    retry_after: float | None = None
    finished: bool = False
    # Items of mapped nodes marked queued: (node ID, item, attempt), to be sent.
    items: list[tuple[str, str, int]] = field(default_factory=list)


@dataclass(frozen=True)
class ReusedOutputs:
    """A node's outputs taken from another run (a retry's), copied to this run's keys:
    each file output's digest and each collection output's items, by edge."""

    hit: CacheHit
    digests: dict[str, str | None] = field(default_factory=dict)
    collections: dict[str, list[CollectionItem]] = field(default_factory=dict)


@dataclass(slots=True)
class Item:
    """One item of a mapped node: an attempt at a time, like a node."""

    status: NodeStatus = NodeStatus.IDLE
    attempt: int = 0
    error: str = ""
    logs: list[LogRecord] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    cached: CacheHit | None = None

    def wire(self, name: str) -> ItemState:
        return ItemState(
            name=name,
            status=self.status,
            attempt=self.attempt,
            error=self.error,
            logs=self.logs,
            timings=self.timings,
            cached=self.cached,
        )

    def row(self) -> str:
        fields: dict[str, Any] = {
            "Status": self.status.value,
            "Attempt": self.attempt,
            "Error": self.error,
            "Logs": [r.model_dump(mode="json") for r in self.logs],
            "Timings": self.timings,
        }
        if self.cached is not None:
            fields["Cached"] = self.cached.model_dump()
        return json.dumps(fields, separators=(",", ":"))

    @classmethod
    def of_row(cls, data: dict[str, Any]) -> Item:
        cached = data.get("Cached")
        return cls(
            status=NodeStatus(data["Status"]),
            attempt=data["Attempt"],
            error=data["Error"],
            logs=[LogRecord.model_validate(r) for r in data.get("Logs", ())],
            timings=data.get("Timings") or {},
            cached=CacheHit.model_validate(cached) if cached else None,
        )


@dataclass
class Collection:
    """An edge's items as they arrive; complete once no more can come."""

    items: dict[str, CollectionItem] = field(default_factory=dict)
    complete: bool = False


@dataclass
class MapState:
    """A mapped node's items: each known item, counted by status, and those ready but
    held back (the node's other inputs not there yet, or its Concurrency reached)."""

    edge: str
    concurrency: int | None
    min_success: float
    items: dict[str, Item] = field(default_factory=dict)
    counts: Counter[NodeStatus] = field(default_factory=Counter)
    waiting: deque[str] = field(default_factory=deque)
    active: int = 0
    total: int | None = None  # known once the collection is complete

    def progress(self) -> ItemProgress:
        counts = {status.value: n for status, n in self.counts.items() if n}
        return ItemProgress(total=self.total, counts=counts, min_success=self.min_success)

    def allowed_failures(self) -> int | None:
        """Items that may fail with the node still COMPLETE; None: not known yet."""
        if self.min_success >= 1.0:
            return 0
        if self.total is None:
            return None
        return self.total - _ceil(self.min_success * self.total)


class RunState:
    """A run's mutable state around its immutable plan."""

    def __init__(
        self,
        plan: RunPlan,
        defs: dict[str, NodeDef],
        run: FlowRun | None = None,
        *,
        max_log_lines: int = 1000,
        members: Mapping[str, Iterable[CollectionItem]] | None = None,
        items: Mapping[str, Mapping[str, Item]] | None = None,
    ) -> None:
        """``members`` (edge → items) and ``items`` (mapped node → item → Item): what a
        resumed run's collections and mapped nodes held."""
        self.plan = plan
        self.defs = defs
        self.max_log_lines = max_log_lines
        self.run = run or FlowRun(
            id=plan.run_id,
            status=RunStatus.WAITING,
            started_at=plan.created_at,
            node_state={
                node.id: NodeState(max_attempts=defs[node.id].max_attempts)
                for node in plan.submission.flow.nodes
            },
        )
        self._nodes = {node.id: node for node in plan.submission.flow.nodes}
        if run is not None and len(run.node_state) < len(self._nodes):
            # Written in slices and stopped before the last: the rest had not changed.
            given = run.node_state
            run.node_state = {
                n: given.get(n) or NodeState(max_attempts=defs[n].max_attempts) for n in self._nodes
            }
        # Nodes per status, kept with every change (``_set_status``): the run's own
        # status is then known without looking at each of its nodes again.
        self._counts: Counter[NodeStatus] = Counter(
            state.status for state in self.run.node_state.values()
        )
        # The ready set, kept as artifacts arrive: an event costs what it changes,
        # not a look at every node. Per node, its input edges not there yet.
        self._order = {node_id: index for index, node_id in enumerate(plan.order)}
        self._consumers: dict[str, list[str]] = {}
        self._missing: dict[str, int] = {}
        # Collections by edge, and mapped nodes (by node, and by the edge they map over):
        # a mapped node waits for its other inputs only; its items then go as they come.
        self.collections = {e: Collection() for e in plan.edges if plan.edges[e].get("collection")}
        self.maps: dict[str, MapState] = {}
        self._mappers: dict[str, list[str]] = {}
        for node_id, input_name in plan.mapped.items():
            node = self._nodes[node_id]
            edge = next(b.edge for b in node.inputs if b.name == input_name)
            spec = node.map or MapSpec()
            self.maps[node_id] = MapState(edge, spec.concurrency, spec.min_success)
            self._mappers.setdefault(edge, []).append(node_id)
        present = set(self.run.artifacts)
        for node in plan.submission.flow.nodes:
            edges = {binding.edge for binding in node.inputs}
            if node.id in self.maps:
                edges.discard(self.maps[node.id].edge)
            for edge in edges:
                self._consumers.setdefault(edge, []).append(node.id)
            self._missing[node.id] = len(edges - present)
        self._ready = {
            node_id
            for node_id, missing in self._missing.items()
            if missing == 0
            and self.state(node_id).status == NodeStatus.IDLE
            and node_id not in self.maps
        }
        # Items marked queued since the last transition said so.
        self._newly_ready_items: list[tuple[str, str, int]] = []
        # Mapped nodes whose item counts changed: their NodeState's Items is made again.
        self._progress_changed: set[str] = set()
        # Insertion-ordered: an item's row is first written in the order items came,
        # the order its node's items are paged in (and read back after a restart).
        self._unwritten_items: dict[tuple[str, str], None] = {}
        self._unwritten_members: dict[tuple[str, str], None] = {}
        # Nodes that became ready since the last transition said so: a transition
        # names those alone, so a result costs its own consumers, not the ready set.
        self._newly_ready: list[str] = []
        # The FlowRun as JSON, made on the first read after a change (see ``json``),
        # from each node's and artifact's own JSON, made again only when it changed.
        self._json: bytes | None = None
        self._node_json: dict[str, bytes] = {}
        self._artifact_json: dict[str, bytes] = {}
        if run is None:  # a new run's nodes are alike: one JSON per MaxAttempts
            alike: dict[int, bytes] = {}
            for node_id, state in self.run.node_state.items():
                if state.max_attempts not in alike:
                    alike[state.max_attempts] = state.model_dump_json().encode()
                self._node_json[node_id] = alike[state.max_attempts]
        # What changed since the state store last took a write (``take_write``): a
        # change costs a write of what it changed, not of the whole run. Everything,
        # the plan included, until the first write.
        self._unwritten_nodes: set[str] = set(self.run.node_state)
        # What changed since the last status event (``take_published``): a watcher of
        # a big run is sent those nodes, not the whole run (``delta_json``).
        self._unpublished_nodes: set[str] = set()
        self._unpublished_edges: list[str] = []
        self._unwritten_artifacts: dict[str, None] = dict.fromkeys(self.run.artifacts)
        self._plan_written = False
        if members or items:
            self._restore_items(members or {}, items or {})
        for node_id in self.maps:
            if self._open(node_id):
                self._pump(node_id)
                self._check_map_done(node_id)
        self._flush_progress()

    # ------------------------------------------------------------ queries

    @property
    def id(self) -> str:
        return self.plan.run_id

    @property
    def status(self) -> RunStatus:
        return self.run.status

    @property
    def tenant(self) -> str:
        return self.plan.tenant

    @property
    def flow(self) -> Flow:
        return self.plan.submission.flow

    def node(self, node_id: str):  # -> models.Node
        return self._nodes[node_id]

    def state(self, node_id: str) -> NodeState:
        return self.run.node_state[node_id]

    def json(self) -> bytes:
        """The FlowRun as the API answers it, serialized once per change of the run.

        Many clients polling one run cost a lookup each, not a serialization: every
        change goes through a method marked ``_changes`` (or ``changed``), which
        drops it. Made again, it costs the nodes that changed (``_edit``) and a join.
        """
        if self._json is None:
            run = self.run
            head = run.model_dump_json(include={"id", "status"}).encode()
            tail = run.model_dump_json(exclude={"id", "status", "node_state", "artifacts"})
            self._json = b"".join(
                (
                    head[:-1],
                    b',"NodeState":{',
                    b",".join(self._keyed(node_id) for node_id in run.node_state),
                    b'},"Artifacts":{',
                    b",".join(self._keyed_artifact(edge) for edge in run.artifacts),
                    b"}," if len(tail) > 2 else b"}",
                    tail[1:].encode(),
                )
            )
        return self._json

    def changed(self) -> None:
        """Drop what was serialized after a change made to ``run`` directly (tests)."""
        self._json = None
        self._node_json.clear()
        self._artifact_json.clear()
        self._unwritten_nodes.update(self.run.node_state)
        self._unwritten_artifacts.update(dict.fromkeys(self.run.artifacts))

    def take_published(self) -> tuple[frozenset[str], tuple[str, ...]]:
        """The nodes changed and the artifacts added since the last call."""
        nodes, edges = frozenset(self._unpublished_nodes), tuple(self._unpublished_edges)
        self._unpublished_nodes.clear()
        self._unpublished_edges.clear()
        return nodes, edges

    def delta_json(self, nodes: Iterable[str], edges: Iterable[str]) -> bytes:
        """The run's own fields, its nodes counted by status, and only the NodeStates
        of ``nodes`` and the Artifacts of ``edges`` (a watcher of a big run merges
        them into the whole run it was sent first)."""
        own = self.run.model_dump_json(exclude={"node_state", "artifacts"}).encode()
        counts = {status.value: n for status, n in self._counts.items() if n}
        known = [n for n in nodes if n in self._order]
        return b"".join(
            (
                own[:-1],
                b',"Counts":',
                json.dumps(counts, separators=(",", ":")).encode(),
                b',"NodeState":{',
                b",".join(self._keyed(n) for n in sorted(known, key=self._order.__getitem__)),
                b'},"Artifacts":{',
                b",".join(self._keyed_artifact(e) for e in edges if e in self.run.artifacts),
                b"}}",
            )
        )

    def _keyed(self, node_id: str) -> bytes:
        """``"<node id>":<its NodeState>``, its state made again only after it changed."""
        return _key(node_id) + self._state_json(node_id)

    def _state_json(self, node_id: str) -> bytes:
        fragment = self._node_json.get(node_id)
        if fragment is None:
            fragment = self._node_json[node_id] = (
                self.run.node_state[node_id].model_dump_json().encode()
            )
        return fragment

    def _keyed_artifact(self, edge: str) -> bytes:
        fragment = self._artifact_json.get(edge)
        if fragment is None:
            artifact = self.run.artifacts[edge].model_dump_json().encode()
            fragment = self._artifact_json[edge] = _key(edge) + artifact
        return fragment

    def upload_edges(self) -> list[str]:
        return [n for n in self.plan.edges if self.plan.edge(n).source == "upload"]

    def terminal_edges(self) -> list[str]:
        return terminal_edges(self.plan.submission.flow)

    def pending_uploads(self) -> list[str]:
        return [e for e in self.upload_edges() if e not in self.run.artifacts]

    def artifact_for(self, edge: str) -> Artifact:
        plan = self.plan.edge(edge)
        collection = self.collections.get(edge)
        return Artifact(
            store_name=plan.store,
            object_name=plan.key,
            edge_name=edge,
            items=None if collection is None else len(collection.items),
        )

    def is_collection(self, edge: str) -> bool:
        return edge in self.collections

    def upload_key(self, edge: str) -> tuple[str, str]:
        """Where an upload edge's bytes land (store, key): its object, or the archive a
        collection's items come in (expanded into them when it is there)."""
        artifact = self.artifact_for(edge)
        if edge in self.collections:
            return artifact.store_name, bundle_key(artifact.object_name)
        return artifact.store_name, artifact.object_name

    def item(self, node_id: str, name: str) -> Item | None:
        mapping = self.maps.get(node_id)
        return None if mapping is None else mapping.items.get(name)

    def active_items(self) -> list[tuple[str, str, Item]]:
        """Items dispatched or running: they need a worker (again, after a restart)."""
        return [
            (node_id, name, item)
            for node_id, mapping in self.maps.items()
            for name, item in mapping.items.items()
            if item.status in ITEM_ACTIVE
        ]

    def item_page(
        self, node_id: str, status: NodeStatus | None, after: str | None, limit: int
    ) -> tuple[list[ItemState], str | None]:
        """A page of a mapped node's items in arrival order, from after ``after``; and
        the name to ask the next page after (None: no more)."""
        mapping = self.maps[node_id]
        names = iter(mapping.items)
        if after is not None:
            for name in names:
                if name == after:
                    break
        page: list[ItemState] = []
        for name in names:
            item = mapping.items[name]
            if status is None or item.status == status:
                if len(page) == limit:
                    return page, page[-1].name
                page.append(item.wire(name))
        return page, None

    def take_ready_items(self) -> list[tuple[str, str, int]]:
        """Items marked queued that no transition named yet (a resumed run's)."""
        ready, self._newly_ready_items = self._newly_ready_items, []
        return ready

    def ready_nodes(self) -> list[str]:
        """IDLE nodes whose every input edge has an artifact, in topological order."""
        if self.run.status.finished:
            return []
        return sorted(self._ready, key=self._order.__getitem__)

    def active_nodes(self) -> list[str]:
        """Nodes dispatched or running: they need a worker (again, after a restart)."""
        busy = (NodeStatus.READY, NodeStatus.RUNNING, NodeStatus.RETRYING)
        return [n for n in self.plan.order if self.state(n).status in busy]

    # ------------------------------------------------------------ events

    @_changes
    def start(
        self, waiting_urls: list[WaitingURL], digests: Mapping[str, str | None] | None = None
    ) -> Transition:
        """Static edges are present from the start (``digests``: theirs, by edge, where
        their store knows them); uploads are awaited."""
        for name in self.plan.edges:
            if self.plan.edge(name).source == "static":
                self._add_artifact(name, (digests or {}).get(name))
        self.run.waiting_urls = waiting_urls
        return self._advance()

    def input_digests(self, node_id: str) -> dict[str, str | None]:
        """Each input's digest (input name → "sha256:…", or None where not known)."""
        found: dict[str, str | None] = {}
        for binding in self.node(node_id).inputs:
            artifact = self.run.artifacts.get(binding.edge)
            found[binding.name] = artifact.digest if artifact is not None else None
        return found

    def reuse(self, node_id: str, outputs: ReusedOutputs) -> Transition:
        """Before the run starts its nodes: the node is COMPLETE with ``outputs``, which
        another run's node made; it never runs here."""
        return self.attempt_succeeded(
            node_id, 0, outputs.collections, digests=outputs.digests, cached=outputs.hit
        )

    @_changes
    def artifact_arrived(self, edge: str, digest: str | None = None) -> Transition:
        """An upload is there; ``digest``: what the store knows its bytes by, if anything."""
        if edge in self.run.artifacts or self.run.status.finished:
            return Transition()
        self._add_artifact(edge, digest)
        self.run.waiting_urls = [w for w in self.run.waiting_urls if w.artifact.edge_name != edge]
        return self._advance()

    @_changes
    def uploads_expired(self, expired: dict[str, datetime]) -> Transition:
        """Upload edges (edge → when their WaitingURL expired) that never came: the run ends.

        The scheduler decides when a URL has expired (it has the clock); an edge
        that arrived meanwhile is ignored. The nodes that waited for an edge say
        which input it was; nodes still at work on other inputs are cancelled.
        """
        late = {e: at for e, at in expired.items() if e in self.pending_uploads()}
        if not late or self.run.status.finished:
            return Transition()
        for node_id in self.plan.order:
            missing = [i for i in self.node(node_id).inputs if i.edge in late]
            if missing:
                self._set_status(node_id, NodeStatus.ERROR)
                self._edit(node_id).error = "; ".join(
                    f"input '{i.name}' (edge '{i.edge}') was not uploaded before its URL "
                    f"expired at {_iso(late[i.edge])}"
                    for i in missing
                )
        for other in self.active_nodes():
            self._stop(other, "stopped: an input was not uploaded in time")
        self.run.status = RunStatus.ERROR
        self.run.error = (
            "; ".join(
                f"edge '{e}' was not uploaded before its WaitingURL expired at {_iso(at)}"
                for e, at in sorted(late.items())
            )
            + ": submit the flow again for new WaitingURLs and upload before their TTL"
        )
        self.run.waiting_urls = []  # expired: of no use to anyone
        return Transition(finished=True)

    @_changes
    def fail(self, reason: str) -> Transition:
        """The engine cannot go on with the run: it ends ERROR, saying why."""
        if self.run.status.finished:
            return Transition()
        for node_id in self.active_nodes():
            self._stop(node_id, f"stopped: {reason}")
        self.run.status = RunStatus.ERROR
        self.run.error = reason
        return Transition(finished=True)

    @_changes
    def dispatched(self, node_id: str) -> int:
        """Mark the node queued for its next attempt; returns the attempt number."""
        state = self._edit(node_id)
        state.attempt += 1
        self._set_status(node_id, NodeStatus.READY)
        self._refresh_status()
        return state.attempt

    @_changes
    def redispatched(self, node_id: str) -> int:
        """After a service restart: the interrupted attempt runs again under its number."""
        state = self._edit(node_id)
        self._set_status(node_id, NodeStatus.READY)
        state.attempt = max(state.attempt, 1)
        return state.attempt

    @_changes
    def attempt_started(self, node_id: str, attempt: int) -> bool:
        state = self._edit(node_id)
        if attempt != state.attempt or state.status.ended:
            return False
        self._set_status(node_id, NodeStatus.RUNNING)
        self._refresh_status()
        return True

    @_changes
    def attempt_succeeded(
        self,
        node_id: str,
        attempt: int,
        collections: Mapping[str, list[CollectionItem]] | None = None,
        *,
        digests: Mapping[str, str | None] | None = None,
        cached: CacheHit | None = None,
    ) -> Transition:
        """The node's attempt succeeded; ``collections``: the items of each of its
        collection outputs (by edge), stored already; ``digests``: each other output's
        (by edge); ``cached``: its outputs are an earlier run's, reused."""
        state = self._edit(node_id)
        if attempt != state.attempt or state.status.ended:
            return Transition()
        self._set_status(node_id, NodeStatus.COMPLETE)
        state.error = ""
        state.cached = cached
        for out in self.node(node_id).outputs:
            if out.edge in self.collections:
                for member in (collections or {}).get(out.edge, ()):
                    self._add_member(out.edge, member)
                self._complete_collection(out.edge)
            else:
                self._add_artifact(out.edge, (digests or {}).get(out.edge))
        return self._advance()

    # ------------------------------------------------------------ items

    @_changes
    def collection_arrived(self, edge: str, members: list[CollectionItem]) -> Transition:
        """An upload edge's collection is in, whole: its items stored already."""
        if edge in self.run.artifacts or self.run.status.finished:
            return Transition()
        for member in members:
            self._add_member(edge, member)
        self._complete_collection(edge)
        self.run.waiting_urls = [w for w in self.run.waiting_urls if w.artifact.edge_name != edge]
        return self._advance()

    @_changes
    def item_started(self, node_id: str, name: str, attempt: int) -> bool:
        item = self.item(node_id, name)
        if item is None or attempt != item.attempt or item.status not in ITEM_ACTIVE:
            return False
        self._set_item(node_id, name, NodeStatus.RUNNING)
        return True

    @_changes
    def item_succeeded(
        self,
        node_id: str,
        name: str,
        attempt: int,
        produced: Mapping[str, CollectionItem],
        cached: CacheHit | None = None,
    ) -> Transition:
        """An item's attempt succeeded; ``produced``: its output item, by output edge;
        ``cached``: they are an earlier run's item's, reused."""
        item = self.item(node_id, name)
        if item is None or attempt != item.attempt or item.status not in ITEM_ACTIVE:
            return Transition()
        item.error = ""
        item.cached = cached
        self._set_item(node_id, name, NodeStatus.COMPLETE)
        for edge, member in produced.items():
            self._add_member(edge, member)
        self._pump(node_id)
        self._check_map_done(node_id)
        return self._advance()

    @_changes
    def item_failed(
        self,
        node_id: str,
        name: str,
        attempt: int,
        error: str,
        *,
        retryable: bool,
        retry_delay: float,
    ) -> Transition:
        item = self.item(node_id, name)
        if item is None or attempt != item.attempt or item.status not in ITEM_ACTIVE:
            return Transition()
        item.error = error
        self._unwritten_items.setdefault((node_id, name))
        max_attempts = self.state(node_id).max_attempts
        if retryable and attempt < max_attempts and not self.run.status.finished:
            self._set_item(node_id, name, NodeStatus.RETRYING)
            return Transition(retry_after=retry_delay)
        self._set_item(node_id, name, NodeStatus.ERROR)
        mapping = self.maps[node_id]
        allowed = mapping.allowed_failures()
        if allowed is not None and mapping.counts[NodeStatus.ERROR] > allowed:
            return self._map_failed(node_id)
        self._pump(node_id)
        self._check_map_done(node_id)
        return self._advance()

    @_changes
    def item_retry(self, node_id: str, name: str, *, again: bool = False) -> Transition:
        """The item's next attempt is due (``again``: its current one, lost with its engine)."""
        item = self.item(node_id, name)
        if item is None or self.run.status.finished or self.state(node_id).status.ended:
            return Transition()
        if again:
            if item.status not in ITEM_ACTIVE:
                return Transition()
            item.attempt = max(item.attempt, 1)
        else:
            if item.status != NodeStatus.RETRYING:
                return Transition()
            item.attempt += 1
        self._set_item(node_id, name, NodeStatus.READY)
        self._newly_ready_items.append((node_id, name, item.attempt))
        return self._advance()

    @_changes
    def add_item_log(self, node_id: str, name: str, record: LogRecord) -> None:
        item = self.item(node_id, name)
        if item is None:
            return
        item.logs.append(record)
        if len(item.logs) > ITEM_LOG_LINES:
            keep_head = ITEM_LOG_LINES // 4
            del item.logs[keep_head : len(item.logs) - (ITEM_LOG_LINES - keep_head)]
        self._unwritten_items.setdefault((node_id, name))

    @_changes
    def record_item_timings(self, node_id: str, name: str, timings: dict[str, float]) -> None:
        item = self.item(node_id, name)
        if item is not None:
            item.timings.update(timings)
            self._unwritten_items.setdefault((node_id, name))

    @_changes
    def attempt_failed(
        self, node_id: str, attempt: int, error: str, *, retryable: bool, retry_delay: float
    ) -> Transition:
        state = self._edit(node_id)
        if attempt != state.attempt or state.status.ended:
            return Transition()
        state.error = error
        if retryable and attempt < state.max_attempts and not self.run.status.finished:
            self._set_status(node_id, NodeStatus.RETRYING)
            self._refresh_status()
            return Transition(retry_after=retry_delay)
        self._set_status(node_id, NodeStatus.ERROR)
        self.run.status = RunStatus.ERROR
        # Siblings still queued or running are stopped with the run: say why.
        self._stop_all_but(node_id, f"stopped: node '{node_id}' failed, which ended the run")
        return Transition(finished=True)

    @_changes
    def add_log(self, node_id: str, record: LogRecord) -> None:
        logs = self._edit(node_id).logs
        logs.append(record)
        if len(logs) > self.max_log_lines:
            # Keep the first lines (how it started) and the latest (how it ended).
            keep_head = self.max_log_lines // 4
            del logs[keep_head : len(logs) - (self.max_log_lines - keep_head)]

    @_changes
    def cancel(self) -> Transition:
        """Stop the run on request: it and what was queued or running are STOPPED."""
        if self.run.status.finished:
            return Transition()
        for node_id in self.active_nodes():
            self._stop(node_id, "stopped: the run was cancelled on request")
        self.run.status = RunStatus.STOPPED
        self.run.waiting_urls = []
        return Transition(finished=True)

    @_changes
    def record_timings(
        self, node_id: str, timings: dict[str, float], *, replace: bool = False
    ) -> None:
        """Seconds per phase of the node's latest attempt (``replace``: a new attempt's)."""
        state = self._edit(node_id)
        if replace:
            state.timings = dict(timings)
        else:
            state.timings.update(timings)

    @_changes
    def set_tier(self, node_id: str, tier: str) -> None:
        """The node's next attempts run on ``tier``, bigger than its NodeDef's."""
        self._edit(node_id).tier = tier

    @_changes
    def retried_by(self, run_id: str) -> None:
        """Run ``run_id`` retries this one (which has ended)."""
        if run_id not in self.run.retried_by:
            self.run.retried_by.append(run_id)

    @_changes
    def mark_finished(self, now: datetime) -> None:
        """When the run ended: set once, when it reaches COMPLETE, ERROR or STOPPED."""
        self.run.finished_at = self.run.finished_at or now

    # ------------------------------------------------------------ internals

    def _advance(self) -> Transition:
        """The nodes and items that became ready with this change, nodes in topological order."""
        ready, self._newly_ready = self._newly_ready, []
        items, self._newly_ready_items = self._newly_ready_items, []
        self._flush_progress()
        self._refresh_status()
        if self.run.status.finished:
            return Transition(finished=True)
        ready = sorted((n for n in ready if n in self._ready), key=self._order.__getitem__)
        return Transition(dispatch=ready, items=items)

    def _edit(self, node_id: str) -> NodeState:
        """The node's state, to be changed: its JSON is made and written again."""
        self._node_json.pop(node_id, None)
        self._unwritten_nodes.add(node_id)
        self._unpublished_nodes.add(node_id)
        return self.run.node_state[node_id]

    def _set_status(self, node_id: str, status: NodeStatus) -> None:
        state = self._edit(node_id)
        self._counts[state.status] -= 1
        state.status = status
        self._counts[status] += 1
        if status != NodeStatus.IDLE:
            self._ready.discard(node_id)

    def _add_artifact(self, edge: str, digest: str | None = None) -> None:
        if edge in self.run.artifacts:
            return  # its consumers counted it already
        artifact = self.artifact_for(edge)
        artifact.digest = digest
        self.run.artifacts[edge] = artifact
        self._unwritten_artifacts[edge] = None
        self._unpublished_edges.append(edge)
        for node_id in self._consumers.get(edge, ()):
            self._missing[node_id] -= 1
            if self._missing[node_id] == 0 and self.state(node_id).status == NodeStatus.IDLE:
                if node_id in self.maps:
                    self._open_map(node_id)
                else:
                    self._ready.add(node_id)
                    self._newly_ready.append(node_id)

    def _stop(self, node_id: str, reason: str) -> None:
        """A node queued or running stops with its run; a mapped node's items with it."""
        self._set_status(node_id, NodeStatus.STOPPED)
        self._edit(node_id).error = reason
        mapping = self.maps.get(node_id)
        if mapping is None:
            return
        mapping.waiting.clear()
        for name, item in mapping.items.items():
            if item.status in ITEM_ACTIVE:
                self._set_item(node_id, name, NodeStatus.STOPPED)
                item.error = reason

    def _stop_all_but(self, failed: str, reason: str) -> None:
        for node_id in self.active_nodes():
            if node_id != failed:
                self._stop(node_id, reason)

    def _open(self, node_id: str) -> bool:
        """Whether a mapped node's items may go: its other inputs are there."""
        return (
            self._missing[node_id] == 0
            and not self.state(node_id).status.ended
            and not self.run.status.finished
        )

    def _open_map(self, node_id: str) -> None:
        mapping = self.maps[node_id]
        mapping.waiting.extend(
            name for name, item in mapping.items.items() if item.status == NodeStatus.IDLE
        )
        self._pump(node_id)
        self._check_map_done(node_id)

    def _offer(self, node_id: str, name: str) -> None:
        """An item of the collection the node maps over is there."""
        mapping = self.maps[node_id]
        if name in mapping.items or self.state(node_id).status.ended:
            return
        mapping.items[name] = Item()
        mapping.counts[NodeStatus.IDLE] += 1
        self._unwritten_items.setdefault((node_id, name))
        self._progress_changed.add(node_id)
        if self._open(node_id):
            mapping.waiting.append(name)
            self._pump(node_id)

    def _pump(self, node_id: str) -> None:
        """Mark waiting items queued, as many as the node's Concurrency lets through."""
        mapping = self.maps[node_id]
        if not self._open(node_id):
            return
        bound = mapping.concurrency
        while mapping.waiting and (bound is None or mapping.active < bound):
            name = mapping.waiting.popleft()
            item = mapping.items[name]
            if item.status != NodeStatus.IDLE:
                continue
            item.attempt += 1
            self._set_item(node_id, name, NodeStatus.READY)
            self._newly_ready_items.append((node_id, name, item.attempt))
        if mapping.active and self.state(node_id).status == NodeStatus.IDLE:
            self._set_status(node_id, NodeStatus.RUNNING)

    def _set_item(self, node_id: str, name: str, status: NodeStatus) -> None:
        mapping = self.maps[node_id]
        item = mapping.items[name]
        was_active = item.status in ITEM_ACTIVE
        mapping.counts[item.status] -= 1
        item.status = status
        mapping.counts[status] += 1
        mapping.active += (status in ITEM_ACTIVE) - was_active
        self._unwritten_items.setdefault((node_id, name))
        self._progress_changed.add(node_id)

    def _add_member(self, edge: str, member: CollectionItem) -> None:
        collection = self.collections[edge]
        if member.name in collection.items or collection.complete:
            return
        collection.items[member.name] = member
        self._unwritten_members[(edge, member.name)] = None
        for node_id in self._mappers.get(edge, ()):
            self._offer(node_id, member.name)

    def _complete_collection(self, edge: str) -> None:
        """No more items can come: the edge is there for gathers, its maps know their total."""
        collection = self.collections[edge]
        if collection.complete:
            return
        collection.complete = True
        members = [(m.name, m.sha256) for m in collection.items.values()]
        self._add_artifact(edge, collection_digest(members))
        for node_id in self._mappers.get(edge, ()):
            self.maps[node_id].total = len(collection.items)
            self._progress_changed.add(node_id)
            self._check_map_done(node_id)

    def _check_map_done(self, node_id: str) -> None:
        """A mapped node ends once every item of its complete collection has ended."""
        mapping = self.maps[node_id]
        if mapping.total is None or not self._open(node_id):
            return
        succeeded, failed = mapping.counts[NodeStatus.COMPLETE], mapping.counts[NodeStatus.ERROR]
        if succeeded + failed < mapping.total:
            return
        allowed = mapping.allowed_failures()
        if allowed is not None and failed > allowed:
            self._map_failed(node_id)
            return
        self._set_status(node_id, NodeStatus.COMPLETE)
        self._edit(node_id).error = self._failed_items(node_id) if failed else ""
        for out in self.node(node_id).outputs:
            self._complete_collection(out.edge)

    def _map_failed(self, node_id: str) -> Transition:
        """Too many items failed for the node's MinSuccess: it and the run end ERROR."""
        self._flush_progress()
        self._set_status(node_id, NodeStatus.ERROR)
        self._edit(node_id).error = self._failed_items(node_id)
        mapping = self.maps[node_id]
        mapping.waiting.clear()
        reason = f"stopped: node '{node_id}' failed, which ended the run"
        for name, item in mapping.items.items():
            if item.status in ITEM_ACTIVE:
                self._set_item(node_id, name, NodeStatus.STOPPED)
                item.error = reason
        self.run.status = RunStatus.ERROR
        self._stop_all_but(node_id, reason)
        self._flush_progress()
        return Transition(finished=True)

    def _failed_items(self, node_id: str) -> str:
        """What a mapped node says of its failed items: how many, and the first few."""
        mapping = self.maps[node_id]
        failed = [
            (name, item) for name, item in mapping.items.items() if item.status == NodeStatus.ERROR
        ]
        total = mapping.total if mapping.total is not None else len(mapping.items)
        shown = "; ".join(f"{name}: {item.error}" for name, item in failed[:3])
        more = f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
        need = f"{_percent(mapping.min_success)} must succeed"
        return (
            f"{len(failed)} of {total} items failed ({need}; each is listed with its reason "
            f"and log at the node's items): {shown}{more}"
        )

    def _flush_progress(self) -> None:
        for node_id in self._progress_changed:
            self._edit(node_id).items = self.maps[node_id].progress()
        self._progress_changed.clear()

    def _restore_items(
        self,
        members: Mapping[str, Iterable[CollectionItem]],
        items: Mapping[str, Mapping[str, Item]],
    ) -> None:
        for edge, given in members.items():
            collection = self.collections.get(edge)
            if collection is None:
                continue
            for member in given:
                collection.items[member.name] = member
            collection.complete = edge in self.run.artifacts
        for node_id, mapping in self.maps.items():
            for name, item in items.get(node_id, {}).items():
                mapping.items[name] = item
                mapping.counts[item.status] += 1
                mapping.active += item.status in ITEM_ACTIVE
            # Items that came in a write that stopped before their own rows: new.
            for name in self.collections[mapping.edge].items:
                if name not in mapping.items:
                    mapping.items[name] = Item()
                    mapping.counts[NodeStatus.IDLE] += 1
            if self.collections[mapping.edge].complete:
                mapping.total = len(self.collections[mapping.edge].items)
            if self._open(node_id):
                mapping.waiting.extend(
                    name for name, item in mapping.items.items() if item.status == NodeStatus.IDLE
                )
            self._progress_changed.add(node_id)

    def _refresh_status(self) -> None:
        if self.run.status.finished:
            return
        counts, total = self._counts, len(self.run.node_state)
        if counts[NodeStatus.ERROR]:
            self.run.status = RunStatus.ERROR
        elif counts[NodeStatus.COMPLETE] == total:
            self.run.status = RunStatus.COMPLETE
            self.run.waiting_urls = []
        elif counts[NodeStatus.IDLE] + counts[NodeStatus.COMPLETE] < total:
            self.run.status = RunStatus.RUNNING
        elif self.pending_uploads():
            self.run.status = RunStatus.WAITING
        else:
            self.run.status = RunStatus.RUNNING

    # ------------------------------------------------------------ persistence

    def snapshot(self) -> dict[str, Any]:
        return {
            "plan": self.plan.model_dump(mode="json", by_alias=True),
            "run": self.run.model_dump(mode="json", by_alias=True),
        }

    def take_write(self, most_nodes: int = WRITE_SLICE) -> RunWrite:
        """What changed since the last write taken: the run's own fields, always; the
        nodes (``most_nodes`` of them at most: ``partial`` says more are left) and
        artifacts that changed; the plan, the first time."""
        run = self.run
        nodes = self._unwritten_nodes
        if len(nodes) > most_nodes:
            taken = set(itertools.islice(nodes, most_nodes))
            nodes -= taken
        else:
            taken, self._unwritten_nodes = nodes, set()
        own = run.model_dump(mode="json", exclude={"node_state", "artifacts"})
        items = self._unwritten_items
        if len(items) > ITEM_WRITE_SLICE:
            taken_items = list(itertools.islice(items, ITEM_WRITE_SLICE))
            for key in taken_items:
                del items[key]
        else:
            taken_items, self._unwritten_items = list(items), {}
        write = RunWrite(
            run_id=self.id,
            tenant=self.plan.tenant,
            flow=self.plan.submission.flow.name,
            created_at=self.plan.model_dump(mode="json", include={"created_at"})["created_at"],
            status=own["Status"],
            finished=run.status.finished,
            started_at=own["StartedAt"],
            finished_at=own["FinishedAt"],
            run=json.dumps(own, separators=(",", ":")),
            plan=None if self._plan_written else self.plan.model_dump_json(by_alias=True),
            nodes={n: self._state_json(n).decode() for n in taken},
            artifacts={e: run.artifacts[e].model_dump_json() for e in self._unwritten_artifacts},
            partial=bool(self._unwritten_nodes or self._unwritten_items),
            expires_at=self.plan.first_expiry(run.finished_at) if run.finished_at else None,
            items={key: self.maps[key[0]].items[key[1]].row() for key in taken_items},
            members={
                (edge, name): self.collections[edge].items[name].model_dump_json()
                for edge, name in self._unwritten_members
            },
        )
        self._plan_written = True
        self._unwritten_artifacts.clear()
        self._unwritten_members.clear()
        return write

    @classmethod
    def restore(
        cls, data: dict[str, Any], catalog: dict[str, NodeDef] | None = None, **kwargs: Any
    ) -> RunState:
        """A run from its snapshot: ``plan`` and ``run``; with ``members`` (edge → list of
        CollectionItem JSON objects) and ``items`` (node → item → row) when it has any."""
        plan = RunPlan.model_validate(data["plan"])
        run = FlowRun.model_validate(data["run"])
        members = {
            edge: [CollectionItem.model_validate(m) for m in given]
            for edge, given in data.get("members", {}).items()
        }
        items = {
            node: {name: Item.of_row(row) for name, row in rows.items()}
            for node, rows in data.get("items", {}).items()
        }
        return cls(plan, plan.defs(catalog), run, members=members, items=items, **kwargs)


@dataclass
class RunWrite:
    """A run's changes as the state store writes them: JSON texts, columns for listing."""

    run_id: str
    tenant: str
    flow: str
    created_at: str
    status: str
    finished: bool
    started_at: str | None
    finished_at: str | None
    run: str  # the FlowRun without its NodeState and Artifacts
    plan: str | None  # the RunPlan, in the run's first write only
    nodes: dict[str, str]  # node id → NodeState
    artifacts: dict[str, str]  # edge → Artifact
    partial: bool = False  # more nodes changed than one write takes: another follows
    # When retention first deletes something of it (epoch s), once it has ended.
    expires_at: float | None = None
    items: dict[tuple[str, str], str] = field(default_factory=dict)  # (node, item) → row
    members: dict[tuple[str, str], str] = field(default_factory=dict)  # (edge, item) → item

    def after(self, earlier: RunWrite | None) -> RunWrite:
        """This write with what an earlier one that failed still had to write."""
        if earlier is None:
            return self
        self.plan = self.plan or earlier.plan
        self.nodes = earlier.nodes | self.nodes
        self.artifacts = earlier.artifacts | self.artifacts
        self.items = earlier.items | self.items
        self.members = earlier.members | self.members
        return self


@functools.lru_cache(maxsize=65536)
def _key(name: str) -> bytes:
    """``"<name>":``, a JSON object's key (node IDs and edges recur in every read)."""
    return json.dumps(name).encode() + b":"


def _ceil(value: float) -> int:
    """The least whole number at or above ``value``, forgiving float's last bit."""
    whole = int(value)
    return whole if value - whole < 1e-9 else whole + 1


def _percent(share: float) -> str:
    return f"{share * 100:g}%"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class LiveRun(Protocol):
    """What the service layer may read of a run the scheduler holds: nothing to change."""

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> RunStatus: ...
    @property
    def tenant(self) -> str: ...
    @property
    def flow(self) -> Flow: ...
    @property
    def run(self) -> FlowRun: ...
    @property
    def plan(self) -> RunPlan: ...
    @property
    def maps(self) -> Mapping[str, MapState]: ...
    @property
    def collections(self) -> Mapping[str, Collection]: ...
    def json(self) -> bytes: ...
    def delta_json(self, nodes: Iterable[str], edges: Iterable[str]) -> bytes: ...
    def terminal_edges(self) -> list[str]: ...
    def artifact_for(self, edge: str) -> Artifact: ...
    def item_page(
        self, node_id: str, status: NodeStatus | None, after: str | None, limit: int
    ) -> tuple[list[ItemState], str | None]: ...


__all__ = [
    "Collection",
    "EdgePlan",
    "Item",
    "MapState",
    "LiveRun",
    "RunPlan",
    "RunState",
    "RunWrite",
    "Transition",
    "entry_edges",
    "plan_run",
    "terminal_edges",
]
