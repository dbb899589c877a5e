"""One ``pipewell test`` run against a service: submit, upload, follow, download.

Whichever view shows it (the live terminal view or plain lines), the run is
driven the same way: the flow is POSTed to the native API, each input is PUT
to its WaitingURL, the run is followed on its event stream, and every terminal
output is downloaded once it has ended.

An edge the flow lists in ``Collections`` takes a zip or tar (PUT to its
WaitingURL as it is, for the service to expand) or a folder, whose files are
put one by one as the collection's items (a PutURL per item name, then the
collection is closed). A collection output is saved as a folder of its items.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
import os
import time
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from httpx_sse import aconnect_sse
from pydantic import ValidationError

from orchestrator.client import (
    FAILED_SHOWN,
    MAX_PAGE,
    LocalFileError,
    failed_items_lines,
    item_path,
    key_refusal,
    output_file_name,
    refusal_text,
)
from orchestrator.collections.archives import ArchiveRefused, check_names, item_name, kind_of
from orchestrator.models import (
    FlowRun,
    FlowSubmission,
    ItemProgress,
    ItemState,
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
#: Item names asked PutURLs for in one request, and items PUT at once.
NAMES_PER_REQUEST = 1000
PUTS_AT_ONCE = 8


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
    #: A mapped node's items, counted (None: the node runs once, not per item).
    items: ItemProgress | None = None

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
    #: A collection's: how many items were saved into the folder ``path``.
    items: int | None = None


@dataclass
class FailedItems:
    """A mapped node's first failed items, and whether it has more."""

    progress: ItemProgress | None
    items: list[ItemState]
    more: bool


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


def parse_inputs(inputs: list[str], collections: Collection[str] = ()) -> dict[str, Path]:
    """``EDGE=PATH`` each: the files to upload, checked to be there (a folder only for a
    collection edge, whose files are its items)."""
    files: dict[str, Path] = {}
    for given in inputs:
        edge, sep, raw = given.partition("=")
        if not sep or not edge or not raw:
            raise CannotTest(f"--input {given!r}: write it as EDGE=PATH")
        path = Path(raw).expanduser()
        if edge in collections:
            if not path.is_file() and not path.is_dir():
                raise CannotTest(
                    f"--input {given!r}: {path} is not there (edge {edge!r} takes a folder "
                    "of items, or a zip or tar of them)"
                )
        elif not path.is_file():
            folder = " but a folder: only a collection edge takes one" if path.is_dir() else ""
            raise CannotTest(f"--input {given!r}: {path} is not a file{folder}")
        files[edge] = path
    return files


def collection_files(folder: Path) -> list[tuple[str, Path]]:
    """A folder's regular files as a collection's items: (item name, path), the name its
    path under the folder with ``/``, by name. Links are not followed; the junk other
    systems add (``__MACOSX/``, ``._*``, ``.DS_Store``, ``Thumbs.db``) is skipped, as the
    service skips it in a zip."""
    found: list[tuple[str, Path]] = []
    for root, folders, names in os.walk(folder):
        folders.sort()
        for name in sorted(names):
            path = Path(root, name)
            if path.is_symlink() or not path.is_file():
                continue
            relative = path.relative_to(folder).as_posix()
            with contextlib.suppress(ArchiveRefused):  # too long: refused by name below
                if item_name(relative) is None:
                    continue
            found.append((relative, path))
    return found


def check_collection_input(edge: str, path: Path) -> str:
    """What ``path`` is as a collection's upload (``zip``, ``tar``, or ``folder``), or
    CannotTest saying why it cannot be one: a file that is no zip or tar, an empty
    folder, an item name the service would refuse (in its words), a file unreadable."""
    if path.is_dir():
        found = collection_files(path)
        if not found:
            raise CannotTest(f"--input {edge}={path}: the folder holds no file to put as an item")
        try:
            check_names([name for name, _ in found])
        except ArchiveRefused as exc:
            raise CannotTest(f"--input {edge}={path}: {exc}") from exc
        for _, file in found:
            _readable(edge, file)
        return "folder"
    try:
        with path.open("rb") as file:
            head = file.read(8)
    except OSError as exc:
        raise CannotTest(f"--input {edge}={path}: {exc.strerror or exc}") from exc
    kind = kind_of(head)
    if kind is None:
        raise CannotTest(
            f"--input {edge}={path}: edge {edge!r} carries a collection, and {path.name} is "
            "neither a zip nor a tar: give a zip or tar of its items, or a folder of them"
        )
    return kind


def _readable(edge: str, path: Path) -> None:
    try:
        path.open("rb").close()
    except OSError as exc:
        raise CannotTest(f"--input {edge}={path}: {exc.strerror or exc}") from exc


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
        #: Upload edges that carry a collection: a zip, a tar or a folder goes there.
        self.collections = set(submission.flow.collections)
        self.started = time.monotonic()
        self.ended: float | None = None
        #: Each mapped node's first failed items, once the run has ended (failed_items).
        self.failed: dict[str, FailedItems] | None = None

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

    async def upload_items(
        self,
        edge: str,
        folder: Path,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[int, int]:
        """Put each file of ``folder`` as an item of the collection on ``edge`` (a PutURL
        per item name), then close it: the run starts once all its inputs are in. The
        number of items and their bytes; ``progress(put, of)`` after each item."""
        assert self.run is not None
        if edge not in self.waiting_edges():
            raise CannotTest(
                f"the run does not wait for items on edge {edge!r} (it waits on: "
                f"{', '.join(self.waiting_edges()) or 'nothing'})"
            )
        found = await asyncio.to_thread(collection_files, folder)
        if not found:
            raise CannotTest(f"{folder} holds no file to put as an item of edge {edge!r}")
        base = f"/api/v1/flow/collection/{quote(self.run_id, safe='')}/{quote(edge, safe='')}"
        urls: dict[str, str] = {}
        for start in range(0, len(found), NAMES_PER_REQUEST):
            names = [name for name, _ in found[start : start + NAMES_PER_REQUEST]]
            answer = await self._call("POST", f"{base}/items", f"items of edge {edge!r}",
                                      json={"Names": names})  # fmt: skip
            urls.update(answer["PutURLs"])
        limit = asyncio.Semaphore(PUTS_AT_ONCE)
        done = [0, 0]  # items put, bytes

        async def put(name: str, path: Path) -> None:
            async with limit:
                size = (await asyncio.to_thread(path.stat)).st_size
                kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
                headers = {"Content-Type": kind, "Content-Length": str(size)}
                try:
                    response = await self.uploads.put(
                        urls[name], content=_chunks(path), headers=headers
                    )
                except httpx.HTTPError as exc:
                    raise CannotTest(
                        f"uploading {path} as item {name!r} of edge {edge!r}: {type(exc).__name__}"
                    ) from exc
                if response.status_code >= 300:
                    raise CannotTest(
                        f"uploading {path} as item {name!r} of edge {edge!r}: {_refusal(response)}"
                    )
                done[0] += 1
                done[1] += size
                if progress is not None:
                    progress(done[0], len(found))

        await asyncio.gather(*(put(name, path) for name, path in found))
        await self._call("POST", f"{base}/close", f"closing the collection of edge {edge!r}")
        return done[0], done[1]

    async def _call(self, method: str, path: str, what: str, **options: Any) -> Any:
        """The JSON answer of one API call, a refusal raised as CannotTest saying ``what``."""
        try:
            response = await self.http.request(method, path, **options)
        except httpx.HTTPError as exc:
            raise CannotTest(f"{what}: no answer from {self.server}: {type(exc).__name__}") from exc
        if response.status_code == 401:
            raise CannotTest(key_refusal(self.key_given))
        if response.status_code != 200:
            raise CannotTest(f"{what}: {_refusal(response)}")
        try:
            return response.json()
        except ValueError as exc:
            raise CannotTest(f"{what}: {self.server} answered something else than JSON") from exc

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
            view.items = state.items
        if run.status.finished and self.ended is None:
            self.ended = now

    async def download(self, out: Path) -> list[Output]:
        """Every terminal output of the finished run, into ``out``; where each went. A
        collection goes into the folder ``out/<edge>/``, each item under its name."""
        assert self.run is not None
        await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
        done: list[Output] = []
        for edge in terminal_edges(self.submission.flow):
            artifact = self.run.artifacts.get(edge)
            if artifact is None:
                continue
            if artifact.items is not None:
                done.append(await self._download_collection(edge, out / edge))
                continue
            url = f"/api/v1/flow/artifact/{quote(self.run_id, safe='')}/{quote(edge, safe='')}"
            try:
                async with self.http.stream("GET", url) as response:
                    if response.status_code != 200:
                        await response.aread()
                        raise CannotTest(f"downloading edge {edge!r}: {_refusal(response)}")
                    kind = response.headers.get("Content-Type", "")
                    target = out / output_file_name(edge, artifact.object_name, kind)
                    size = await _save(response, target)
            except httpx.HTTPError as exc:
                raise CannotTest(f"downloading edge {edge!r}: {type(exc).__name__}") from exc
            done.append(Output(edge, target, size))
        return done

    async def _download_collection(self, edge: str, folder: Path) -> Output:
        """Every item of the collection on ``edge`` (all its pages) into ``folder``, each
        under its item name, never outside it."""
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        base = f"/api/v1/flow/collection/{quote(self.run_id, safe='')}/{quote(edge, safe='')}"
        count = size = 0
        after: str | None = None
        while True:
            query = urlencode({"limit": MAX_PAGE, **({"after": after} if after else {})})
            page = await self._call("GET", f"{base}?{query}", f"the items of edge {edge!r}")
            for item in page["Items"]:
                name = str(item["Name"])
                try:
                    target = item_path(folder, name)
                    await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
                except (LocalFileError, OSError) as exc:
                    raise CannotTest(f"saving item {name!r} of edge {edge!r}: {exc}") from exc
                try:
                    # A presigned URL, perhaps of another host: our key never goes there.
                    async with self.uploads.stream("GET", item["URL"]) as response:
                        if response.status_code != 200:
                            await response.aread()
                            raise CannotTest(
                                f"downloading item {name!r} of edge {edge!r}: {_refusal(response)}"
                            )
                        size += await _save(response, target)
                except httpx.HTTPError as exc:
                    raise CannotTest(
                        f"downloading item {name!r} of edge {edge!r}: {type(exc).__name__}"
                    ) from exc
                count += 1
            after = page.get("Next")
            if after is None:
                return Output(edge, folder, size, items=count)

    async def failed_items(self) -> dict[str, FailedItems]:
        """Each mapped node's first failed items (with their reasons), once the run has
        ended; kept in ``failed``. Best effort: a node whose items cannot be read is left
        out (its counts are in the status)."""
        assert self.run is not None
        failed: dict[str, FailedItems] = {}
        for node_id, state in self.run.node_state.items():
            if state.items is None or not state.items.counts.get("ERROR"):
                continue
            path = (
                f"/api/v1/flow/items/{quote(self.run_id, safe='')}/{quote(node_id, safe='')}"
                f"?status=ERROR&limit={FAILED_SHOWN}"
            )
            try:
                page = await self._call("GET", path, f"the failed items of {node_id!r}")
                items = [ItemState.model_validate(item) for item in page["Items"]]
            except (CannotTest, ValidationError):
                continue
            failed[node_id] = FailedItems(state.items, items, page.get("Next") is not None)
        self.failed = failed
        return failed

    def failed_item_lines(self, node: str | None = None) -> list[str]:
        """The failed items of each mapped node (or of ``node``), with how to see the rest."""
        said: list[str] = []
        for node_id, found in (self.failed or {}).items():
            if node not in (None, node_id):
                continue
            said += failed_items_lines(
                self.run_id, node_id, found.progress, found.items, found.more
            )
        return said

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


async def _save(response: httpx.Response, target: Path) -> int:
    """The response's body into ``target``; its size."""
    size = 0
    file = await asyncio.to_thread(target.open, "wb")
    try:
        async for chunk in response.aiter_bytes(CHUNK):
            await asyncio.to_thread(file.write, chunk)
            size += len(chunk)
    finally:
        file.close()
    return size


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
    "FailedItems",
    "FlowRejected",
    "NodeView",
    "Output",
    "CannotTest",
    "RunSession",
    "Update",
    "apply_flags",
    "check_collection_input",
    "collection_files",
    "merge_delta",
    "parse_inputs",
]
