"""One ``pipewell test`` run against a service: submit, upload, follow, download.

Whichever view shows it (the live terminal view or plain lines), the run is
driven the same way: the flow is POSTed to the native API, each input is PUT
to its WaitingURL, the run is followed on its event stream, and every terminal
output is downloaded once it has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import aconnect_sse
from pydantic import ValidationError

from orchestrator.client import key_refusal, output_file_name, refusal_text
from orchestrator.models import (
    FlowRun,
    FlowSubmission,
    LogRecord,
    NodeFlag,
    NodeStatus,
    RunStatus,
)
from orchestrator.runtime import terminal_edges

#: Seconds one call may take (uploads and downloads: between two chunks).
CALL_TIMEOUT = 30.0
#: Seconds before a dropped event stream is opened again.
RECONNECT_AFTER = 1.0
#: Seconds of silence after which the event stream is taken for dead (keep-alives: 15 s).
SILENT_STREAM = 60.0
#: Seconds without any answer from the service before the test gives up on it.
LOST_AFTER = 60.0
CHUNK = 1024 * 1024


class CannotTest(Exception):
    """The run could not be tested as asked (the message says what to change)."""


class FlowRejected(CannotTest):
    """The service found the flow invalid (the message lists every problem)."""


@dataclass
class NodeView:
    """What a view shows of one node: its latest state and every log line so far."""

    status: str = "IDLE"
    attempt: int = 0
    max_attempts: int = 0
    error: str = ""
    logs: list[LogRecord] = field(default_factory=list)
    running_since: float | None = None
    ran_for: float = 0.0

    def last_line(self) -> str:
        return self.logs[-1].message if self.logs else ""

    def elapsed(self) -> float:
        """Seconds the node has run so far (all attempts), as seen from here."""
        if self.running_since is None:
            return self.ran_for
        return self.ran_for + time.monotonic() - self.running_since


@dataclass
class Update:
    """One change the views redraw for: ``status`` (all nodes), or ``log`` of one node."""

    kind: str
    node: str | None = None
    record: LogRecord | None = None


@dataclass
class Output:
    edge: str
    path: Path
    size: int


def apply_flags(submission: FlowSubmission, flags: list[str]) -> None:
    """``NODE.FLAG=VALUE`` each: set (or add) the flag on that node of the flow."""
    nodes = {node.id: node for node in submission.flow.nodes}
    for given in flags:
        target, sep, value = given.partition("=")
        node_id, dot, name = target.partition(".")
        if not sep or not dot or not node_id or not name:
            raise CannotTest(f"--flag {given!r}: write it as NODE.FLAG=VALUE")
        node = nodes.get(node_id)
        if node is None:
            raise CannotTest(
                f"--flag {given!r}: the flow has no node {node_id!r} (its nodes: "
                f"{', '.join(nodes) or 'none'})"
            )
        node.flags = [f for f in node.flags if f.name != name] + [NodeFlag(name=name, value=value)]


def parse_inputs(inputs: list[str]) -> dict[str, Path]:
    """``EDGE=PATH`` each: the files to upload, checked to be readable files."""
    files: dict[str, Path] = {}
    for given in inputs:
        edge, sep, raw = given.partition("=")
        if not sep or not edge or not raw:
            raise CannotTest(f"--input {given!r}: write it as EDGE=PATH")
        path = Path(raw).expanduser()
        if not path.is_file():
            raise CannotTest(f"--input {given!r}: {path} is not a file")
        files[edge] = path
    return files


class RunSession:
    """A run of one submission on one service, followed until it ends."""

    def __init__(self, server: str, key: str | None, submission: FlowSubmission) -> None:
        self.server = server.rstrip("/")
        self.submission = submission
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.key_given = bool(key)
        self.http = httpx.AsyncClient(base_url=self.server, headers=headers, timeout=CALL_TIMEOUT)
        # WaitingURLs are presigned, perhaps for another host (S3): our key never goes there.
        self.uploads = httpx.AsyncClient(timeout=CALL_TIMEOUT)
        self.run: FlowRun | None = None
        self.nodes: dict[str, NodeView] = {n.id: NodeView() for n in submission.flow.nodes}
        self.started = time.monotonic()
        self.ended: float | None = None

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.uploads.aclose()

    @property
    def run_id(self) -> str:
        assert self.run is not None
        return self.run.id

    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    async def submit(self) -> FlowRun:
        body = self.submission.model_dump(mode="json", by_alias=True, exclude_none=True)
        try:
            response = await self.http.post("/api/v1/flow/test", json=body)
        except httpx.HTTPError as exc:
            raise CannotTest(f"no answer from {self.server}: {type(exc).__name__}") from exc
        if response.status_code == 401:
            raise CannotTest(key_refusal(self.key_given))
        if response.status_code == 400:
            raise FlowRejected(_refusal(response))
        if response.status_code != 200:
            raise CannotTest(_refusal(response))
        self.started = time.monotonic()
        self._take(FlowRun.model_validate(response.json()))
        return self.run  # type: ignore[return-value]

    def waiting_edges(self) -> list[str]:
        assert self.run is not None
        return [w.artifact.edge_name for w in self.run.waiting_urls]

    async def upload(self, edge: str, path: Path) -> int:
        """PUT the file to the edge's WaitingURL; its size. The run starts once all are in."""
        assert self.run is not None
        waiting = {w.artifact.edge_name: w for w in self.run.waiting_urls}
        if edge not in waiting:
            raise CannotTest(
                f"the run does not wait for a file on edge {edge!r} (it waits on: "
                f"{', '.join(waiting) or 'nothing'})"
            )
        size = (await asyncio.to_thread(path.stat)).st_size
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        headers = {"Content-Type": kind, "Content-Length": str(size)}
        try:
            # The URL is never printed: it is as good as the key to that input.
            response = await self.uploads.put(
                waiting[edge].put_url, content=_chunks(path), headers=headers
            )
        except httpx.HTTPError as exc:
            raise CannotTest(f"uploading {path} to edge {edge!r}: {type(exc).__name__}") from exc
        if response.status_code >= 300:
            raise CannotTest(f"uploading {path} to edge {edge!r}: {_refusal(response)}")
        return size

    async def follow(self) -> AsyncIterator[Update]:
        """Every change of the run until it ends, from its event stream (reopened if dropped)."""
        assert self.run is not None
        if self.run.status.finished:
            yield Update("status")
            return
        path = f"/api/v1/flow/events/{quote(self.run_id, safe='')}"
        # The service sends a keep-alive every 15 s: a silent minute is a dead stream.
        timeout = httpx.Timeout(CALL_TIMEOUT, read=SILENT_STREAM)
        heard = time.monotonic()
        while True:
            try:
                async with aconnect_sse(self.http, "GET", path, timeout=timeout) as events:
                    if 400 <= events.response.status_code < 500:
                        await events.response.aread()
                        raise CannotTest(_refusal(events.response))
                    # Anything else but the stream (a 502 of a proxy, a 503) is passing.
                    events.response.raise_for_status()
                    heard = time.monotonic()
                    async for event in events.aiter_sse():
                        update = self._event(event.event, event.data)
                        if update is not None:
                            yield update
                        if self.run.status.finished:
                            return
            except (httpx.HTTPError, ValueError, ValidationError):
                pass  # a dropped stream: its status is read again below
            await asyncio.sleep(RECONNECT_AFTER)
            if await self.refresh():
                heard = time.monotonic()
                yield Update("status")
                if self.run.status.finished:
                    return
            elif time.monotonic() - heard > LOST_AFTER:
                raise CannotTest(
                    f"lost {self.server}: no answer for {LOST_AFTER:g} s; the run "
                    f"{self.run_id} may still be going (pipewell status)"
                )

    async def refresh(self) -> bool:
        """Read the run's status again (after a dropped stream); whether that worked."""
        path = f"/api/v1/flow/status/{quote(self.run_id, safe='')}"
        try:
            response = await self.http.get(path)
            if response.status_code == 200:
                self._take(FlowRun.model_validate(response.json()))
                return True
        except (httpx.HTTPError, ValueError, ValidationError):
            pass  # the caller goes on with what it knows
        return False

    def _event(self, name: str, text: str) -> Update | None:
        if name in ("status", "end"):
            self._take(FlowRun.model_validate_json(text))
            return Update("status")
        if name == "delta" and self.run is not None:  # a big run: what changed
            self._take(merge_delta(self.run, json.loads(text)))
            return Update("status")
        data: Any = json.loads(text) if name == "log" else None
        if isinstance(data, dict) and data.get("node") in self.nodes:
            record = LogRecord.model_validate(data)
            self.nodes[data["node"]].logs.append(record)
            return Update("log", node=data["node"], record=record)
        return None

    def _take(self, run: FlowRun) -> None:
        """The run's latest state: its logs are the service's (a log event only ran ahead)."""
        self.run = run
        now = time.monotonic()
        for node_id, state in run.node_state.items():
            view = self.nodes.setdefault(node_id, NodeView())
            running = state.status == NodeStatus.RUNNING
            if running and view.running_since is None:
                view.running_since = now
            elif not running and view.running_since is not None:
                view.ran_for += now - view.running_since
                view.running_since = None
            view.status, view.error = state.status.value, state.error
            view.attempt, view.max_attempts = state.attempt, state.max_attempts
            view.logs = list(state.logs)
        if run.status.finished and self.ended is None:
            self.ended = now

    async def download(self, out: Path) -> list[Output]:
        """Every terminal output of the finished run, into ``out``; where each went."""
        assert self.run is not None
        await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
        done: list[Output] = []
        for edge in terminal_edges(self.submission.flow):
            artifact = self.run.artifacts.get(edge)
            if artifact is None:
                continue
            url = f"/api/v1/flow/artifact/{quote(self.run_id, safe='')}/{quote(edge, safe='')}"
            size = 0
            try:
                async with self.http.stream("GET", url) as response:
                    if response.status_code != 200:
                        await response.aread()
                        raise CannotTest(f"downloading edge {edge!r}: {_refusal(response)}")
                    kind = response.headers.get("Content-Type", "")
                    target = out / output_file_name(edge, artifact.object_name, kind)
                    file = await asyncio.to_thread(target.open, "wb")
                    try:
                        async for chunk in response.aiter_bytes(CHUNK):
                            await asyncio.to_thread(file.write, chunk)
                            size += len(chunk)
                    finally:
                        file.close()
            except httpx.HTTPError as exc:
                raise CannotTest(f"downloading edge {edge!r}: {type(exc).__name__}") from exc
            done.append(Output(edge, target, size))
        return done

    async def cancel(self) -> None:
        """Stop the run (best effort: the service may be gone already)."""
        if self.run is None or self.run.status.finished:
            return
        with contextlib.suppress(httpx.HTTPError):
            await self.http.post(f"/api/v1/flow/cancel/{quote(self.run_id, safe='')}", timeout=5.0)

    def failure(self, lines: int = 10) -> list[str]:
        """Why the run did not complete: each failed node's error and its last log lines."""
        assert self.run is not None
        said = [f"run {self.run_id} ended {self.run.status.value}"]
        if self.run.error:
            said.append(f"  {self.run.error}")
        for node_id, view in self.nodes.items():
            if view.status == "STOPPED":
                said.append(f"  node {node_id} {view.error or 'stopped'}")
            if view.status != "ERROR":
                continue
            said.append(f"  node {node_id} failed: {view.error or 'no error given'}")
            for record in view.logs[-lines:]:
                said.append(f"    {record.stream}: {record.message}")
        return said

    @property
    def status(self) -> RunStatus:
        assert self.run is not None
        return self.run.status


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    file = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(file.read, CHUNK):
            yield chunk
    finally:
        file.close()


def _refusal(response: httpx.Response) -> str:
    """The service's own words for a refusal: its message (and every validation error)."""
    return refusal_text(response.status_code, response.reason_phrase, response.text)


def merge_delta(run: FlowRun, delta: dict[str, Any]) -> FlowRun:
    """``run`` with a ``delta`` event merged in: its own fields, and the NodeStates and
    Artifacts it carries (only those that changed)."""
    whole = {k: v for k, v in delta.items() if k not in ("Counts", "NodeState", "Artifacts")}
    changed = FlowRun.model_validate(
        {**whole, "NodeState": delta.get("NodeState", {}), "Artifacts": delta.get("Artifacts", {})}
    )
    return run.model_copy(
        update={
            "status": changed.status,
            "waiting_urls": changed.waiting_urls,
            "finished_at": changed.finished_at,
            "error": changed.error,
            "node_state": {**run.node_state, **changed.node_state},
            "artifacts": {**run.artifacts, **changed.artifacts},
        }
    )


__all__ = [
    "FlowRejected",
    "NodeView",
    "Output",
    "CannotTest",
    "RunSession",
    "Update",
    "apply_flags",
    "merge_delta",
]
