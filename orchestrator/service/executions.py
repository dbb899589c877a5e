"""Executions: a saved flow run on an invocation's input, and its outcome decoded.

An invocation dialect (``api/axiom``, ``api/xpander``, ``api/scade``,
``api/langflow``) translates its request into ``start`` and its response from
``outcome``/``wait``; the semantics live here once:

- the input, a JSON object, is written as ``application/json`` to the flow's
  one entry edge, or with several entry edges one top-level key per edge; where an
  edge's nodes take files, it is a file in one of the forms of ``service.inputs``;
- the output is each terminal edge decoded: JSON as JSON, ``text/*`` as
  ``{"text": …}``, anything else (or anything over ``invocations.inline_output_bytes``)
  as ``{"url", "content_type", "size"}`` with a presigned GET.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from orchestrator.config import InvocationSettings
from orchestrator.errors import FileTooLarge, InvalidInvocation, PipewellError
from orchestrator.mime import JSON, OCTET_STREAM, essence, matches
from orchestrator.models import Artifact, FlowRun, NodeStatus, RunStatus
from orchestrator.registry import FlagProfile, SavedFlow
from orchestrator.runtime import entry_edges, terminal_edges
from orchestrator.service.inputs import (
    FileForm,
    content_type_of,
    decode_base64,
    describe,
    file_form,
    spool,
    takes_json,
    upload_name,
)
from orchestrator.service.retention import Retention
from orchestrator.service.runs import RunRecord, Runs
from orchestrator.service.saved_flows import SavedFlows, edge_readers, with_flags
from orchestrator.service.submissions import Input, Submissions
from orchestrator.stores import StoreRegistry
from orchestrator.validation import resolve_defs, tenant_prefix
from storage import Store, StoreError, check_key

#: How long a presigned URL in an output stays valid.
OUTPUT_URL_TTL = 3600.0
#: Items of a collection an invocation's answer lists at most (with their count): the
#: rest are paged from the native collection endpoint.
OUTPUT_ITEMS = 1000
#: Under a tenant's namespace in the default store: files uploaded for invocations.
UPLOADS = "uploads"
DEFAULT_WAIT_SECONDS = 30.0
MAX_WAIT_SECONDS = 3600.0
TIMEOUT_ERROR = "timeout waiting for pipeline result"


def text_of(output: Any) -> str:
    """The text of a decoded output: its text, or its compact JSON (Langflow's message
    text, xpander's result)."""
    if isinstance(output, dict) and set(output) == {"text"}:
        return str(output["text"])
    if isinstance(output, str):
        return output
    return json.dumps(output, separators=(",", ":"))


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


class Executions:
    def __init__(
        self,
        settings: InvocationSettings,
        data_dir: Path,
        submissions: Submissions,
        flows: SavedFlows,
        runs: Runs,
        stores: StoreRegistry,
        retention: Retention,
    ) -> None:
        self.retention = retention
        self.settings = settings
        self.data_dir = data_dir
        self.submissions = submissions
        self.flows = flows
        self.runs = runs
        self.stores = stores

    # ------------------------------------------------------------ starting

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
        # Resolved once for the whole start: flags, input types and the run's plan.
        defs = resolve_defs(flow.submission, self.flows.catalog)
        check = partial(self.flows.check_flags, flow.submission, defs=defs)
        overrides = check(flags, what=flags_field)
        profile: FlagProfile = {}
        if config_id:
            stored = await self.flows.config(flow, config_id)
            profile = check(stored, what=f"config {config_id!r}")
        for node_id, values in overrides.items():
            profile[node_id] = {**profile.get(node_id, {}), **values}
        submission = with_flags(flow.submission, profile)
        entry = entry_edges(submission.flow)
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
        readers = edge_readers(flow.submission, defs)
        encoded = {
            edge: await self._input(tenant, edge, value, readers.get(edge, []), edge in files)
            for edge, value in inputs.items()
        }
        return await self.submissions.submit(submission, tenant=tenant, inputs=encoded, defs=defs)

    def entry_types(self, flow: SavedFlow) -> dict[str, list[list[str] | None]]:
        """Each edge's readers' ``Type`` lists (a saved flow's NodeDefs are in it)."""
        submission = flow.submission
        return edge_readers(submission, resolve_defs(submission, self.flows.catalog))

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
        work = self.data_dir / "work" / UPLOADS
        try:
            spooled = await spool(chunks, self.settings.max_file_bytes, work, self.runs.io_call)
        except ValueError:
            raise FileTooLarge(self.settings.max_file_bytes) from None
        store = self.stores.default
        with spooled:
            write = partial(store.write, key, spooled, content_type=essence(content_type))
            await self.runs.io_call(write)
        # Kept for the runs that will read it, as long as the tenant's runs are kept.
        await self.retention.keep(store.name, key, tenant, self.retention.kept_for(tenant))
        return file_path

    async def _input(
        self, tenant: str, edge: str, value: Any, readers: list[list[str] | None], is_file: bool
    ) -> Input:
        """What an entry edge is given: a file in one of the forms of ``service.inputs``
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
            store, key = await self.runs.io_call(self._object_of_url, form.url, where)
            if not key.startswith(own):
                raise ValueError(f"{where}: the URL names an object outside your namespace")
        info = await self.runs.io_call(store.stat, key)
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

    # ------------------------------------------------------------ outcomes

    async def outcome(self, run: FlowRun, edges: list[str] | None = None) -> Outcome:
        if run.status == RunStatus.COMPLETE:
            record = await self.runs.resolve(run.id)
            edges = edges or terminal_edges(record.flow)
            outputs = {}
            for edge in edges:
                try:
                    outputs[edge] = await self.decode(record, edge)
                except (PipewellError, StoreError) as exc:
                    # Answers may already be streaming: the error travels in the answer.
                    return Outcome(run, error=f"output '{edge}' could not be read: {exc}")
            return Outcome(run, outputs=outputs)
        if run.status.finished:
            return Outcome(run, error=failure_message(run))
        return Outcome(run)

    async def read_output(self, run_id: str, edge: str) -> tuple[Any, str | None]:
        """The output on ``edge`` decoded, or None and why it cannot be read (a stream
        already open can only say it in its answer)."""
        try:
            return await self.decode(await self.runs.resolve(run_id), edge), None
        except (PipewellError, StoreError) as exc:
            return None, f"output '{edge}' could not be read: {exc}"

    async def decode(self, record: RunRecord, edge: str) -> Any:
        """The output on ``edge``: inline when it is small text or JSON, else a URL; a
        collection as its items' URLs (the first OUTPUT_ITEMS; ``count`` says how many)."""
        artifact = record.run.artifacts.get(edge)
        if artifact is not None and artifact.items is not None:
            return await self._collection(record, artifact)
        info, reader, store, artifact = await self.runs.open_artifact(record, edge)
        content_type = essence(info.content_type or OCTET_STREAM)
        textual = content_type.startswith("text/") or content_type == JSON
        textual = textual or content_type.endswith("+json")
        try:
            if textual and info.size <= self.settings.inline_output_bytes:
                data = await self.runs.io_call(reader.read)
                if not content_type.startswith("text/"):
                    with contextlib.suppress(ValueError):
                        return json.loads(data)
                return {"text": data.decode("utf-8", errors="replace")}
        finally:
            reader.close()
        url = await self.runs.io_call(store.get_url, artifact.object_name, OUTPUT_URL_TTL)
        return {"url": url, "content_type": content_type, "size": info.size}

    async def _collection(self, record: RunRecord, artifact: Artifact) -> dict[str, Any]:
        items = await self.runs.collection_items(record, artifact.edge_name, None, OUTPUT_ITEMS)
        store = await self.runs.store_of(record, artifact.store_name)

        def presign() -> list[str]:
            return [store.get_url(i.object_name, OUTPUT_URL_TTL) for i in items]

        urls = await self.runs.io_call(presign)
        return {
            "count": artifact.items,
            "items": [
                {
                    "name": i.name,
                    "url": url,
                    "content_type": i.content_type,
                    "size": i.size,
                    "sha256": i.sha256,
                }
                for i, url in zip(items, urls, strict=True)
            ],  # fmt: skip
        }

    async def wait(self, run_id: str, timeout: float, edges: list[str] | None = None) -> Outcome:
        """The outcome once the run finishes, or what is known when ``timeout`` runs out."""
        last = None
        async for update in self.runs.watch(run_id, timeout):
            last = update.run
        assert last is not None
        return await self.outcome(last, edges)


__all__ = [
    "DEFAULT_WAIT_SECONDS",
    "Executions",
    "MAX_WAIT_SECONDS",
    "OUTPUT_URL_TTL",
    "Outcome",
    "TIMEOUT_ERROR",
    "UPLOADS",
    "failure_message",
    "text_of",
    "wait_seconds",
]
