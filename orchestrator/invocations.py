"""The service layer every dialect calls: runs, saved flows in, decoded results out.

Every dialect module (``api/native`` and ``api/flows`` included) calls this and
nothing else; the ``Scheduler`` beneath only accepts, drives and stops runs.
Reading a run (live or finished, per tenant) and its artifacts is done here.
An invocation dialect (``api/axiom``, ``api/xpander``, ``api/scade``,
``api/langflow``) translates its request into ``start`` and its response
from ``outcome``/``watch``; the semantics live here once:

- the input, a JSON object, is written as ``application/json`` to the flow's
  one entry edge, or with several entry edges one top-level key per edge;
- the output is each terminal edge decoded: JSON as JSON, ``text/*`` as
  ``{"text": …}``, anything else (or anything over ``invocations.inline_output_bytes``) as
  ``{"url", "content_type", "size"}`` with a presigned GET.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from orchestrator.config import InvocationSettings
from orchestrator.database import Database
from orchestrator.errors import (
    ArtifactNotFound,
    FileTooLarge,
    FlowNotFound,
    NotFound,
    PipewellError,
    RequestRefused,
    RunFinished,
    RunNotFound,
)
from orchestrator.events import EventBus
from orchestrator.invocation_files import (
    FileForm,
    content_type_of,
    decode_base64,
    describe,
    file_form,
    file_types,
    spool,
    takes_json,
    upload_name,
)
from orchestrator.mime import JSON, OCTET_STREAM, essence, matches
from orchestrator.models import (
    DEFAULT_TENANT,
    Flow,
    FlowRun,
    FlowSubmission,
    NodeDef,
    NodeFlag,
    NodeStatus,
    RunStatus,
    utcnow,
)
from orchestrator.registry import FlagProfile, FlowRegistry, SavedFlow, TaskRecord
from orchestrator.runtime import plan_run, terminal_edges
from orchestrator.scheduler import Scheduler
from orchestrator.state import StateStore
from orchestrator.stores import StoreRegistry
from orchestrator.validation import ValidationResult, resolve_defs, tenant_prefix
from orchestrator.validation.flags import value_problem
from storage import ObjectInfo, Store, StoreError, check_key

#: How long a presigned URL in an output stays valid.
OUTPUT_URL_TTL = 3600.0
#: Under a tenant's namespace in the default store: files uploaded for invocations.
UPLOADS = "uploads"
DEFAULT_WAIT_SECONDS = 30.0
MAX_WAIT_SECONDS = 3600.0
TIMEOUT_ERROR = "timeout waiting for pipeline result"
#: Ended runs the scheduler no longer holds, kept as JSON once read back from the
#: database (they cannot change any more): at most this many, and this many bytes.
ENDED_RUNS_CACHED = 1000
ENDED_RUNS_CACHED_BYTES = 16 * 1024 * 1024


def text_of(output: Any) -> str:
    """The text of a decoded output: its text, or its compact JSON (Langflow's message
    text, xpander's result)."""
    if isinstance(output, dict) and set(output) == {"text"}:
        return str(output["text"])
    if isinstance(output, str):
        return output
    return json.dumps(output, separators=(",", ":"))


class InvalidInvocation(RequestRefused):
    """An invocation the service refuses, with a stable code and what to fix."""


@dataclass(frozen=True)
class Outcome:
    """What is known of an execution: finished or not, its output or its error."""

    run: FlowRun
    #: Edge → its decoded output, once the run completed.
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def output(self) -> Any:
        """The one output as it is, several keyed by edge."""
        if len(self.outputs) == 1:
            return next(iter(self.outputs.values()))
        return self.outputs

    @property
    def execution_id(self) -> str:
        return self.run.id

    @property
    def finished(self) -> bool:
        return self.run.status.finished

    @property
    def success(self) -> bool:
        return self.run.status == RunStatus.COMPLETE and self.error is None

    @property
    def completed_at(self) -> datetime | None:
        return self.run.finished_at


#: A run with more nodes than this is streamed whole once, then as deltas (its nodes
#: that changed), not whole on every change.
DELTA_NODES = 200


@dataclass(frozen=True)
class Update:
    """One step of a watched execution.

    ``status`` and ``end`` carry the run, ``log`` one line, ``heartbeat`` nothing new.
    """

    name: str
    run: FlowRun
    line: dict[str, Any] | None = None
    #: For ``status``: the nodes changed and artifacts added since the update before.
    changes: tuple[set[str], list[str]] | None = None


def wait_seconds(value: Any, default: float = DEFAULT_WAIT_SECONDS) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInvocation("TIMEOUT_INVALID", "timeout_seconds must be a number of seconds")
    if not 0 < value <= MAX_WAIT_SECONDS:
        raise InvalidInvocation(
            "TIMEOUT_INVALID",
            f"timeout_seconds must be above 0 and at most {MAX_WAIT_SECONDS:g}",
        )
    return float(value)


def failure_message(run: FlowRun) -> str:
    """Why a run did not complete, naming the node that failed first."""
    failed = [
        (node_id, state.error)
        for node_id, state in run.node_state.items()
        if state.status == NodeStatus.ERROR
    ]
    if failed:
        node_id, error = failed[0]
        return f"node '{node_id}' failed: {error}"
    if run.status == RunStatus.STOPPED:
        return "the run was stopped"
    return "the run failed"


class Invocations:
    def __init__(
        self,
        scheduler: Scheduler,
        events: EventBus,
        state: StateStore,
        stores: StoreRegistry,
        db: Database,
        settings: InvocationSettings,
    ) -> None:
        self.settings = settings
        self.scheduler = scheduler
        self.events = events
        self.state = state
        self.stores = stores
        self.registry = FlowRegistry(db.connection, db.path)
        self._db = db.run
        # Store calls block (boto3, the filesystem): here, bounded.
        self._io = ThreadPoolExecutor(4, thread_name_prefix="pipewell-reads")
        self._ended = EndedRuns(ENDED_RUNS_CACHED, ENDED_RUNS_CACHED_BYTES)

    def close(self) -> None:
        self._io.shutdown(wait=False, cancel_futures=True)

    async def _io_call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    # ------------------------------------------------------------ a flow's nodes

    @staticmethod
    def node_outputs(flow: SavedFlow, node_id: str | None, *, field: str) -> list[str] | None:
        """The edges a node of the flow writes (the answer of a dialect that names a node:
        Langflow's output_component, Scade's result node); None for no node. NODE_UNKNOWN,
        naming ``field``, when the flow has no such node."""
        if node_id is None:
            return None
        for node in flow.submission.flow.nodes:
            if node.id == node_id:
                return [o.edge for o in node.outputs]
        nodes = ", ".join(repr(n.id) for n in flow.submission.flow.nodes)
        raise InvalidInvocation(
            "NODE_UNKNOWN", f"{field} {node_id!r} is not a node of the flow; its nodes are {nodes}"
        )

    # ------------------------------------------------------------ runs, for every dialect

    async def validate(self, submission: FlowSubmission) -> ValidationResult:
        return await self.scheduler.validate(submission)

    async def submit(self, submission: FlowSubmission, tenant: str) -> FlowRun:
        """Start a run of an unsaved flow (the native dialect), handing out WaitingURLs."""
        return await self.scheduler.submit(submission, tenant=tenant)

    async def get(self, run_id: str, tenant: str | None = None) -> FlowRun:
        """The run as it stands, live or finished; another tenant's is RunNotFound."""
        run = self.scheduler.runs.get(run_id)
        if run is not None:
            if tenant is not None and run.plan.tenant != tenant:
                raise RunNotFound(run_id)
            return run.run
        return FlowRun.model_validate_json(await self._stored_json(run_id, tenant))

    async def status_json(self, run_id: str, tenant: str | None = None) -> bytes:
        """``get`` as the JSON the API answers, made once per change of the run (for
        a run the scheduler no longer holds, once): a poll costs a lookup."""
        run = self.scheduler.runs.get(run_id)
        if run is not None:
            if tenant is not None and run.plan.tenant != tenant:
                raise RunNotFound(run_id)
            return run.json()
        return await self._stored_json(run_id, tenant)

    async def _stored_json(self, run_id: str, tenant: str | None) -> bytes:
        """The FlowRun's JSON of a run the scheduler does not hold, from the database."""
        cached = self._ended.get(run_id)
        if cached is None:
            snapshot = await self._snapshot(run_id)
            run = FlowRun.model_validate(snapshot["run"])
            cached = (
                snapshot["plan"].get("tenant", DEFAULT_TENANT),
                run.model_dump_json().encode(),
            )
            # Only an ended run is final: one read between its first write and the
            # scheduler taking it up (a submission in progress) would go stale.
            if run.status.finished and run_id not in self.scheduler.runs:
                self._ended.put(run_id, cached)
        owner, data = cached
        if tenant is not None and owner != tenant:
            raise RunNotFound(run_id)
        return data

    async def flow_of(self, run_id: str, tenant: str | None = None) -> Flow:
        """The Flow a run runs (flags applied), for drawing it; another tenant's is RunNotFound."""
        await self.get(run_id, tenant)
        run = self.scheduler.runs.get(run_id)
        if run is not None:
            return run.plan.submission.flow
        snapshot = await self._snapshot(run_id)
        return FlowSubmission.model_validate(snapshot["plan"]["submission"]).flow

    async def _snapshot(self, run_id: str) -> dict[str, Any]:
        """A run the scheduler no longer holds, as last written."""
        snapshot = await self.state.load(run_id) if _looks_like_run_id(run_id) else None
        if snapshot is None:
            raise RunNotFound(run_id)
        return snapshot

    async def recent(self, tenant: str, limit: int) -> list[dict[str, Any]]:
        """The tenant's newest runs, newest first (ID, Flow, Status, StartedAt, FinishedAt)."""
        return await self.state.recent(tenant, limit)

    def active_runs(self) -> int:
        """How many runs have not finished (every tenant's)."""
        return sum(1 for run in self.scheduler.runs.values() if not run.status.finished)

    async def cancel(self, run_id: str, tenant: str) -> FlowRun:
        flow_run = await self.get(run_id, tenant)
        run = self.scheduler.runs.get(run_id)
        if run is None:  # finished, and no longer held
            raise RunFinished(run_id, flow_run.status.value)
        return await self.scheduler.cancel(run)

    def nodedefs(self) -> list[NodeDef]:
        """The built-in catalog, by Publisher/Name: what a flow may use without sending."""
        return [self.scheduler.catalog[uses] for uses in sorted(self.scheduler.catalog)]

    def nodedef(self, uses: str) -> NodeDef:
        found = self.scheduler.catalog.get(uses)
        if found is None:
            raise NotFound(
                "NODEDEF_NOT_FOUND",
                f"no built-in NodeDef {uses!r} (see GET /api/v1/nodedefs); a flow may "
                "send its own in NodeDefs",
            )
        return found

    def entry_edges(self, submission: FlowSubmission) -> list[str]:
        """The upload edges of a valid submission: where an invocation's input goes."""
        plan = plan_run(submission, run_id="0" * 32, now=utcnow(), catalog=self.scheduler.catalog)
        return sorted(name for name in plan.edges if plan.edge(name).source == "upload")

    async def terminal_edges(self, run_id: str) -> list[str]:
        """The edges no node reads: what an invocation returns."""
        run = self.scheduler.runs.get(run_id)
        if run is not None:
            return run.terminal_edges()
        snapshot = await self._snapshot(run_id)
        return terminal_edges(FlowSubmission.model_validate(snapshot["plan"]["submission"]).flow)

    async def open_artifact(
        self, run_id: str, edge: str, tenant: str | None = None
    ) -> tuple[ObjectInfo, BinaryIO]:
        artifact = (await self.get(run_id, tenant)).artifacts.get(edge)
        if artifact is None:
            raise ArtifactNotFound(run_id, edge, "no such edge or not produced yet")
        store = await self._store_for(run_id, artifact.store_name)
        info = await self._io_call(store.stat, artifact.object_name)
        if info is None:
            raise ArtifactNotFound(run_id, edge, "the object is gone from its store")
        reader = await self._io_call(store.open_read, artifact.object_name)
        return info, reader

    async def artifact_url(self, run_id: str, edge: str, ttl: float) -> str:
        """A presigned GET of the run's artifact on ``edge``, for the client."""
        artifact = (await self.get(run_id)).artifacts.get(edge)
        if artifact is None:
            raise ArtifactNotFound(run_id, edge, "no such edge or not produced yet")
        store = await self._store_for(run_id, artifact.store_name)
        return await self._io_call(store.get_url, artifact.object_name, ttl)

    async def _store_for(self, run_id: str, store_name: str) -> Store:
        run = self.scheduler.runs.get(run_id)
        if run is not None:
            flow = run.plan.submission.flow
        else:
            snapshot = await self._snapshot(run_id)
            flow = FlowSubmission.model_validate(snapshot["plan"]["submission"]).flow
            await self._io_call(self.stores.prepare, flow)
        return self.stores.get(store_name, flow)

    # ------------------------------------------------------------ saved flows

    async def save(self, tenant: str, submission: FlowSubmission) -> tuple[SavedFlow, bool]:
        (await self.scheduler.validate(submission)).raise_if_invalid()
        return await self._db(self.registry.save, tenant, self._compile(submission))

    def _compile(self, submission: FlowSubmission) -> FlowSubmission:
        """The submission with each NodeDef it uses written in, once."""
        defs = resolve_defs(submission, self.scheduler.catalog)
        used = {d.uses: d for d in defs.values()}
        return FlowSubmission(flow=submission.flow, node_defs=list(used.values()))

    async def find(self, tenant: str, ref: str, version: int | None = None) -> SavedFlow:
        flow = await self._db(self.registry.find, tenant, ref, version)
        if flow is None:
            raise FlowNotFound(ref if version is None else f"{ref} version {version}")
        return flow

    async def list(self, tenant: str, name: str | None = None) -> list[SavedFlow]:
        return await self._db(self.registry.list, tenant, name)

    async def delete(self, tenant: str, graph_id: str) -> None:
        if not await self._db(self.registry.delete, tenant, graph_id):
            raise FlowNotFound(graph_id)

    def describe(self, flow: SavedFlow) -> dict[str, Any]:
        """What a caller needs to invoke it: entry edges, results, nodes and their flags."""
        submission = flow.submission
        defs = resolve_defs(submission, self.scheduler.catalog)
        entry = self.entry_edges(submission)
        readers = self.entry_types(submission)
        return {
            **flow.summary(),
            "entry_edges": entry,
            "entry_files": {
                edge: file_types(readers.get(edge, []))
                for edge in entry
                if not takes_json(readers.get(edge, []))
            },
            "terminal_edges": terminal_edges(submission.flow),
            "nodes": [
                {"id": n.id, "uses": n.uses, "flags": [f.name for f in defs[n.id].flags]}
                for n in submission.flow.nodes
            ],
        }

    async def put_config(
        self, flow: SavedFlow, config_id: str, flags: Any
    ) -> tuple[FlagProfile, bool]:
        if not config_id.strip() or len(config_id) > 100:
            raise InvalidInvocation("CONFIG_INVALID", "a config_id is 1 to 100 characters")
        profile = self.check_flags(flow.submission, flags, what="flags")
        return profile, await self._db(self.registry.put_config, flow.graph_id, config_id, profile)

    async def configs(self, flow: SavedFlow) -> dict[str, FlagProfile]:
        return await self._db(self.registry.configs, flow.graph_id)

    async def config(self, flow: SavedFlow, config_id: str) -> FlagProfile:
        profile = await self._db(self.registry.config, flow.graph_id, config_id)
        if profile is None:
            raise NotFound(
                "CONFIG_NOT_FOUND",
                f"flow {flow.graph_id} has no config {config_id!r} "
                f"(see GET /api/v1/flows/{flow.graph_id}/configs)",
            )
        return profile

    async def delete_config(self, flow: SavedFlow, config_id: str) -> None:
        if not await self._db(self.registry.delete_config, flow.graph_id, config_id):
            await self.config(flow, config_id)  # raises CONFIG_NOT_FOUND

    def check_flags(self, submission: FlowSubmission, flags: Any, *, what: str) -> FlagProfile:
        """``{node_id: {flag: value}}`` checked against the flow's nodes and their NodeDefs."""
        if flags is None:
            return {}
        if not isinstance(flags, dict) or not all(isinstance(v, dict) for v in flags.values()):
            raise InvalidInvocation(
                "FLAGS_INVALID", f"{what} must be an object {{node_id: {{flag: value}}}}"
            )
        defs = resolve_defs(submission, self.scheduler.catalog)
        profile: FlagProfile = {}
        for node_id, values in flags.items():
            if node_id not in defs:
                raise InvalidInvocation(
                    "FLAGS_INVALID",
                    f"{what}: the flow has no node {node_id!r}; its nodes are "
                    + ", ".join(map(repr, defs)),
                )
            declared = {f.name: f for f in defs[node_id].flags}
            for name, value in values.items():
                if name not in declared:
                    raise InvalidInvocation(
                        "FLAGS_INVALID",
                        f"{what}: node {node_id!r} has no flag {name!r}; its flags are "
                        + (", ".join(map(repr, declared)) or "none"),
                    )
                if value is None or isinstance(value, dict | list):
                    raise InvalidInvocation(
                        "FLAGS_INVALID",
                        f"{what}: {node_id}.{name} must be a string, number or boolean",
                    )
                text = NodeFlag(name=name, value=value).value
                problem = value_problem(declared[name], text)
                if problem:
                    raise InvalidInvocation(
                        "FLAGS_INVALID", f"{what}: {node_id}.{name} is {text!r}, which {problem}"
                    )
                profile.setdefault(node_id, {})[name] = text
        return profile

    # ------------------------------------------------------------ Scade's tasks

    async def add_task(
        self, tenant: str, execution_id: str, flow_seq: int, request: dict[str, Any]
    ) -> TaskRecord:
        return await self._db(self.registry.add_task, tenant, execution_id, flow_seq, request)

    async def task(self, tenant: str, task_id: int) -> TaskRecord | None:
        return await self._db(self.registry.task, tenant, task_id)

    async def flow_by_seq(self, tenant: str, seq: int) -> SavedFlow:
        """The flow a task ran, deleted since or not."""
        flow = await self._db(self.registry.by_seq, tenant, seq)
        if flow is None:
            raise FlowNotFound(str(seq))
        return flow

    # ------------------------------------------------------------ executions

    async def start(
        self,
        tenant: str,
        flow: SavedFlow,
        input_value: Any,
        *,
        config_id: str | None = None,
        flags: Any = None,
        flags_field: str = "flags",
        files: dict[str, Any] | None = None,
    ) -> FlowRun:
        """Run a saved flow on ``input_value``.

        ``flags`` (``{node_id: {flag: value}}``, named ``flags_field`` in errors)
        win over the values of the config profile ``config_id``. ``files`` (edge → a
        file's form) fill entry edges besides ``input_value`` (Langflow's tweaks).
        """
        if not isinstance(input_value, dict):
            raise InvalidInvocation("INPUT_INVALID", "input must be a JSON object")
        overrides = self.check_flags(flow.submission, flags, what=flags_field)
        profile: FlagProfile = {}
        if config_id:
            stored = await self.config(flow, config_id)
            profile = self.check_flags(flow.submission, stored, what=f"config {config_id!r}")
        for node_id, values in overrides.items():
            profile[node_id] = {**profile.get(node_id, {}), **values}
        submission = _with_flags(flow.submission, profile)
        entry = self.entry_edges(submission)
        files = files or {}
        if not entry:
            if input_value or files:
                raise InvalidInvocation(
                    "INPUT_INVALID", "this flow has no entry edge: send an empty input {}"
                )
            inputs: dict[str, Any] = {}
        elif len(entry) == 1:
            inputs = {entry[0]: files.get(entry[0], input_value)}
        else:
            unknown = [k for k in (*input_value, *files) if k not in entry]
            if unknown:
                raise InvalidInvocation(
                    "INPUT_INVALID",
                    f"input key(s) {', '.join(map(repr, unknown))} name no entry edge of the flow;"
                    f" its entry edges are {', '.join(map(repr, entry)) or 'none'}",
                )
            inputs = {**input_value, **files}
        readers = self.entry_types(submission)
        encoded = {
            edge: await self._input_payload(
                tenant, edge, value, readers.get(edge, []), is_file=edge in files
            )
            for edge, value in inputs.items()
        }
        return await self.scheduler.submit(submission, tenant=tenant, inputs=encoded)

    async def upload(
        self,
        tenant: str,
        flow: SavedFlow,
        name: str,
        chunks: AsyncIterator[bytes],
        content_type: str,
    ) -> str:
        """Keep a file sent for a later invocation of ``flow``; its ``file_path``."""
        file_path = f"{flow.graph_id}/{uuid.uuid4().hex}_{upload_name(name)}"
        key = f"{tenant_prefix(tenant)}/{UPLOADS}/{file_path}"
        work = Path(self.stores.settings.data_dir) / "work" / UPLOADS
        try:
            spooled = await spool(chunks, self.settings.max_file_bytes, work, self._io_call)
        except ValueError:
            raise FileTooLarge(self.settings.max_file_bytes) from None
        store = self.stores.default
        with spooled:
            await self._io_call(
                partial(store.write, key, spooled, content_type=essence(content_type))
            )
        return file_path

    def entry_types(self, submission: FlowSubmission) -> dict[str, list[list[str] | None]]:
        """Each edge's readers' ``Type`` lists (None: the input takes anything)."""
        defs = resolve_defs(submission, self.scheduler.catalog)
        readers: dict[str, list[list[str] | None]] = {}
        for node in submission.flow.nodes:
            declared = {d.name: d.type for d in defs[node.id].inputs}
            for binding in node.inputs:
                readers.setdefault(binding.edge, []).append(declared.get(binding.name))
        return readers

    async def _input_payload(
        self,
        tenant: str,
        edge: str,
        value: Any,
        readers: list[list[str] | None],
        *,
        is_file: bool,
    ) -> tuple[bytes | Callable[[], BinaryIO], str]:
        """What an entry edge is given: a file in one of the forms of ``invocation_files``
        where the dialect says it is one (``is_file``) or the edge's nodes do not take
        JSON; else the value as JSON (a node that takes anything gets JSON as JSON)."""
        where = f"input for edge {edge!r}"
        form = file_form(value) if is_file or not takes_json(readers) else None
        if form is None:
            if is_file or not takes_json(readers):
                wanted = describe(readers)
                example = next((t for t in wanted.split(", ") if "*" not in t), "application/zip")
                raise InvalidInvocation(
                    "INPUT_INVALID",
                    f"{where} must be a file ({wanted}), not JSON: send "
                    f'{{"base64": "…", "content_type": "{example}"}}, {{"url": "…"}} with a URL '
                    "the service gave for one of your objects, or an uploaded file's "
                    '{"file_path": "…"} (docs/api.md, "Files as inputs")',
                )
            return json.dumps(value, separators=(",", ":")).encode(), JSON
        try:
            payload, content_type = await self._read_file(tenant, form, where)
        except ValueError as exc:
            raise InvalidInvocation("INPUT_INVALID", str(exc)) from None
        if content_type != OCTET_STREAM and not all(matches(content_type, t) for t in readers):
            raise InvalidInvocation(
                "INPUT_INVALID",
                f"{where} is {content_type}, but its nodes take {describe(readers)}",
            )
        return payload, content_type

    async def _read_file(
        self, tenant: str, form: FileForm, where: str
    ) -> tuple[bytes | Callable[[], BinaryIO], str]:
        if form.base64 is not None:
            return decode_base64(form, where), content_type_of(form, where)
        own = f"{tenant_prefix(tenant)}/"
        if form.file_path is not None:
            store = self.stores.default
            try:
                key = check_key(f"{own}{UPLOADS}/{form.file_path}")
            except StoreError:
                raise ValueError(
                    f"{where}: file_path {form.file_path!r} is not one the service gave"
                ) from None
        else:
            assert form.url is not None
            store, key = await self._io_call(self._object_of_url, form.url, where)
            if not key.startswith(own):
                raise ValueError(f"{where}: the URL names an object outside your namespace")
        info = await self._io_call(store.stat, key)
        if info is None:
            raise ValueError(f"{where}: the file is not in its store (deleted, or never uploaded)")
        return partial(store.open_read, key), content_type_of(form, where, info.content_type)

    def _object_of_url(self, url: str, where: str) -> tuple[Store, str]:
        """The service's store and key a URL names; ValueError for any other URL."""
        for store in self.stores.operator.values():
            try:
                key = store.key_of_url(url)
            except StoreError as exc:
                raise ValueError(f"{where}: the URL cannot be used: {exc}") from None
            if key is not None:
                return store, key
        raise ValueError(
            f"{where}: the URL is not one the service gave out for its own stores; the service "
            "reads no other URLs: send the file as base64, or upload it first "
            '(docs/api.md, "Files as inputs")'
        )

    async def outcome(self, run: FlowRun, edges: list[str] | None = None) -> Outcome:
        if run.status == RunStatus.COMPLETE:
            edges = edges or await self.terminal_edges(run.id)
            outputs = {}
            for edge in edges:
                outputs[edge], unreadable = await self.read_output(run.id, edge)
                if unreadable is not None:
                    return Outcome(run, error=unreadable)
            return Outcome(run, outputs=outputs)
        if run.status.finished:
            return Outcome(run, error=failure_message(run))
        return Outcome(run)

    async def read_output(self, run_id: str, edge: str) -> tuple[Any, str | None]:
        """The output on ``edge`` decoded, or None and why it cannot be read.

        Answers may already be streaming: the error travels in the answer.
        """
        try:
            return await self.decode(run_id, edge), None
        except (PipewellError, StoreError) as exc:
            return None, f"output '{edge}' could not be read: {exc}"

    async def decode(self, run_id: str, edge: str) -> Any:
        info, reader = await self.open_artifact(run_id, edge)
        loop = asyncio.get_running_loop()
        content_type = essence(info.content_type or "application/octet-stream")
        textual = content_type.startswith("text/") or content_type == JSON
        textual = textual or content_type.endswith("+json")
        try:
            if textual and info.size <= self.settings.inline_output_bytes:
                data = await loop.run_in_executor(None, reader.read)
                if not content_type.startswith("text/"):
                    with contextlib.suppress(ValueError):
                        return json.loads(data)
                return {"text": data.decode("utf-8", errors="replace")}
        finally:
            reader.close()
        url = await self.artifact_url(run_id, edge, OUTPUT_URL_TTL)
        return {"url": url, "content_type": content_type, "size": info.size}

    async def wait(self, run_id: str, timeout: float, edges: list[str] | None = None) -> Outcome:
        """The outcome once the run finishes, or what is known when ``timeout`` runs out."""
        last = None
        async for update in self.watch(run_id, timeout):
            last = update.run
        assert last is not None
        return await self.outcome(last, edges)

    async def watch(
        self, run_id: str, timeout: float, *, heartbeat: float | None = None
    ) -> AsyncIterator[Update]:
        """The run now, then every change and log line, until it finishes or ``timeout``.

        With ``heartbeat``, a quiet stretch that long yields a ``heartbeat``
        update, so a stream can show it is alive.
        """
        deadline = time.monotonic() + timeout
        async with self.events.subscribe(run_id) as events:
            run = await self.get(run_id)
            yield Update("end" if run.status.finished else "status", run)
            if run.status.finished:
                return
            while (left := deadline - time.monotonic()) > 0:
                try:
                    event = await asyncio.wait_for(events.get(), min(left, heartbeat or left))
                except TimeoutError:
                    if heartbeat and deadline - time.monotonic() > 0:
                        yield Update("heartbeat", run)
                        continue
                    return
                if event.name == "log":
                    yield Update("log", run, event.data)
                    continue
                # The run as it is now (the scheduler's own while it holds it): a reader
                # behind skips to the present, and no snapshot is made per change.
                run = await self.get(run_id)
                changes = events.take_changes()
                yield Update(event.name, run, changes=changes)
                if event.name == "end":
                    return

    def delta_json(self, run_id: str, changes: tuple[set[str], list[str]] | None) -> bytes | None:
        """What changed in a big run (more than DELTA_NODES nodes) as a ``delta`` event's
        JSON; None for a run a stream sends whole."""
        run = self.scheduler.runs.get(run_id)
        if run is None or changes is None or len(run.run.node_state) <= DELTA_NODES:
            return None
        return run.delta_json(*changes)


class EndedRuns:
    """Run id → (tenant, FlowRun JSON) of ended runs, the least recently read dropped
    first beyond ``limit`` runs or ``max_bytes`` of JSON."""

    def __init__(self, limit: int, max_bytes: int) -> None:
        self.limit = limit
        self.max_bytes = max_bytes
        self.bytes = 0
        self._runs: OrderedDict[str, tuple[str, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._runs)

    def get(self, run_id: str) -> tuple[str, bytes] | None:
        found = self._runs.get(run_id)
        if found is not None:
            self._runs.move_to_end(run_id)
        return found

    def put(self, run_id: str, entry: tuple[str, bytes]) -> None:
        if len(entry[1]) > self.max_bytes:
            return
        previous = self._runs.pop(run_id, None)
        if previous is not None:
            self.bytes -= len(previous[1])
        self._runs[run_id] = entry
        self.bytes += len(entry[1])
        while len(self._runs) > self.limit or self.bytes > self.max_bytes:
            _, (_, dropped) = self._runs.popitem(last=False)
            self.bytes -= len(dropped)


def _with_flags(submission: FlowSubmission, profile: FlagProfile) -> FlowSubmission:
    if not profile:
        return submission
    changed = submission.model_copy(deep=True)
    for node in changed.flow.nodes:
        for name, value in profile.get(node.id, {}).items():
            node.flags = [f for f in node.flags if f.name != name]
            node.flags.append(NodeFlag(name=name, value=value))
    return changed


def _looks_like_run_id(run_id: str) -> bool:
    return len(run_id) == 32 and all(c in "0123456789abcdef" for c in run_id)


__all__ = [
    "text_of",
    "DEFAULT_WAIT_SECONDS",
    "EndedRuns",
    "TIMEOUT_ERROR",
    "InvalidInvocation",
    "Invocations",
    "Outcome",
    "Update",
    "failure_message",
    "wait_seconds",
]
