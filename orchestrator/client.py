"""``pipewell runs``, ``status``, ``logs``, ``items``, ``cancel``, ``retry``, ``download`` and
``flows``: a running service's runs and saved flows.

They talk to the service's native API (``--server``, or ``PIPEWELL_URL``) with
the key in ``--key`` or ``PIPEWELL_API_KEY`` (sent as a Bearer token, never
printed). Exit codes: 0 done, 1 the service refused (unknown run, a run that
has ended, a key it does not know, an invalid flow), 2 the service could not be
reached or answered with an error, or a file could not be read or written.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, urlencode

import requests

from orchestrator.models import FlowRun, ItemProgress, ItemState, LogRecord

DEFAULT_SERVER = "http://127.0.0.1:1234"
#: Seconds between two looks at a followed run (its status, with every log line).
FOLLOW_EVERY = 1.0
#: Seconds a call to the service may take (a download: between two chunks).
CALL_TIMEOUT = 30.0
CHUNK = 1024 * 1024
#: Failed items a summary lists per mapped node (``pipewell items`` shows the rest).
FAILED_SHOWN = 10
#: Items one page of the items and collection endpoints holds at most.
MAX_PAGE = 1000
#: The data directory of ``dev``, ``serve`` and ``keys`` when --data-dir is not given.
DATA_DIR_ENV = "PIPEWELL_DATA_DIR"
#: Where the service keeps its state when neither --data-dir, DATA_DIR_ENV nor a
#: configuration file says (config.yaml's data_dir).
DEFAULT_DATA_DIR = Path(".pipewell")


class ServiceRefused(Exception):
    """The service answered, and refused (the message is its own)."""


class ServiceUnreachable(Exception):
    """No answer, or an answer that is not the API's."""


class LocalFileError(Exception):
    """A file of this machine could not be read or written (the message says which)."""


def data_dir_given(flag: Path | None) -> Path | None:
    """The data directory named by --data-dir, else by $PIPEWELL_DATA_DIR (None: neither)."""
    if flag is not None:
        return flag
    named = os.environ.get(DATA_DIR_ENV)
    return Path(named) if named else None


def key_refusal(key_given: bool) -> str:
    """What a 401 means for the person at the terminal: no key, or a key the service
    does not know (the usual cause: made in another data directory than the service's)."""
    if not key_given:
        return (
            "the service asks for an API key and none was given: pass --key KEY or set "
            "PIPEWELL_API_KEY (make one with 'pipewell keys create --name NAME' on the "
            "service's data directory)"
        )
    keys_dir = (data_dir_given(None) or DEFAULT_DATA_DIR).resolve()
    return (
        "the service refused the API key given (401): it does not know it, or it was "
        "revoked. A service knows the keys of its own data directory; 'pipewell keys "
        f"create' here writes to {keys_dir} (--data-dir, ${DATA_DIR_ENV} or --config "
        "choose another), which must be the one the service was started on"
    )


def add_client_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default=os.environ.get("PIPEWELL_URL", DEFAULT_SERVER),
        help=f"the service's URL (default $PIPEWELL_URL, else {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--key",
        default=os.environ.get("PIPEWELL_API_KEY"),
        help="an API key, when the service asks for one (default $PIPEWELL_API_KEY)",
    )


def _request(args: argparse.Namespace, method: str, path: str, **options: Any) -> Any:
    """The service's answer to one call, refusals raised (the body left unread when
    ``stream`` is asked for and the answer is a success)."""
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    url = args.server.rstrip("/") + path
    try:
        response = requests.request(method, url, headers=headers, timeout=CALL_TIMEOUT, **options)
    except requests.RequestException as exc:
        raise ServiceUnreachable(f"no answer from {args.server}: {type(exc).__name__}") from exc
    if response.status_code == 401:
        response.close()
        raise ServiceRefused(key_refusal(bool(args.key)))
    if 400 <= response.status_code < 500:
        raise ServiceRefused(_refusal(response))
    if response.status_code >= 300:
        response.close()
        raise ServiceUnreachable(f"{args.server} answered {response.status_code}")
    return response


def call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    """The JSON answer of one call (``body``, when given, sent as JSON)."""
    response = _request(args, method, path, json=body)
    try:
        return response.json()
    except ValueError as exc:
        raise ServiceUnreachable(f"{args.server} answered something else than JSON") from exc


def _refusal(response: requests.Response) -> str:
    return refusal_text(response.status_code, response.reason, response.text)


def refusal_text(status: int, reason: str, text: str) -> str:
    """The service's own words for a refusal: its message, and each validation problem
    on a line of its own."""
    try:
        body = json.loads(text)
    except ValueError:  # the unknown run's answer is plain text (the seed's)
        return f"{text.strip()[:500] or reason or 'no reason given'} ({status})"
    if not isinstance(body, dict):
        return f"HTTP {status}"
    message = str(body.get("message") or body.get("error") or reason)
    problems = [
        f"\n  {e.get('code')}: {e.get('message')}"
        for e in body.get("errors") or []
        if isinstance(e, dict)
    ]
    return f"{message} ({status})" + "".join(problems)


def run_call(args: argparse.Namespace, method: str, action: str) -> FlowRun:
    """``/api/v1/flow/{action}/{run_id}``: the ID quoted as one path segment, so no
    ``/`` or ``?`` in it reaches another endpoint."""
    path = f"/api/v1/flow/{action}/{quote(args.run_id, safe='')}"
    return FlowRun.model_validate(call(args, method, path))


def runs_command(args: argparse.Namespace) -> int:
    runs = call(args, "GET", f"/api/v1/flow/runs?limit={args.limit}")["runs"]
    print(f"{'ID':<32}  {'STATUS':<9} {'FLOW':<24} {'STARTED':<20} DURATION")
    for run in runs:
        started = datetime.fromisoformat(run["StartedAt"]) if run["StartedAt"] else None
        finished = datetime.fromisoformat(run["FinishedAt"]) if run["FinishedAt"] else None
        if started is None:
            duration = ""
        elif finished is None:
            duration = f"{_seconds(datetime.now(UTC) - started)} so far"
        else:
            duration = _seconds(finished - started)
        when = started.strftime("%Y-%m-%d %H:%M:%S") if started else ""
        print(f"{run['ID']:<32}  {run['Status']:<9} {run['Flow']:<24} {when:<20} {duration}")
    return 0


def _seconds(elapsed: timedelta) -> str:
    return f"{elapsed.total_seconds():.1f} s"


def status_command(args: argparse.Namespace) -> int:
    run = run_call(args, "GET", "status")
    print(f"run {run.id}: {run.status.value}" + (f" ({run.error})" if run.error else ""))
    if run.retry_of:
        print(f"  retries run {run.retry_of}")
    if run.retried_by:
        print(f"  retried by run {', '.join(run.retried_by)}")
    for node_id, state in run.node_state.items():
        if state.items is not None:  # a mapped node: its items, not its attempts
            doing = item_progress_text(state.items)
        elif state.cached is not None:
            doing = f"reused from node {state.cached.node} of run {state.cached.run}"
        else:
            doing = f"attempt {state.attempt}/{state.max_attempts}"
        line = f"  {node_id:<20} {state.status.value:<9} {doing}"
        print(line + (f"  {state.error}" if state.error else ""))
    for waiting in run.waiting_urls:
        print(f"  waiting for an upload to edge {waiting.artifact.edge_name!r}")
    for node_id, state in run.node_state.items():
        if state.items is not None and state.items.counts.get("ERROR"):
            items, more, _ = _item_page(args, run.id, node_id, "ERROR", FAILED_SHOWN)
            for line in failed_items_lines(run.id, node_id, state.items, items, more):
                print(line)
    return 0


# ------------------------------------------------------------------ items


def items_done(progress: ItemProgress) -> tuple[int, int, int | None]:
    """(items ended, of which failed, total or None while it is not known yet)."""
    counts = progress.counts
    done = sum(counts.get(s, 0) for s in ("COMPLETE", "ERROR", "STOPPED"))
    return done, counts.get("ERROR", 0), progress.total


def item_progress_text(progress: ItemProgress) -> str:
    """``312/5000 items (3 failed)``: the items that ended, of how many; ``312/? items``
    while the collection is still coming in."""
    done, failed, total = items_done(progress)
    said = f"{done}/{'?' if total is None else total} items"
    notes = [f"{failed} failed"] if failed else []
    if progress.counts.get("STOPPED"):
        notes.append(f"{progress.counts['STOPPED']} stopped")
    return said + (f" ({', '.join(notes)})" if notes else "")


def progress_bar(progress: ItemProgress, width: int = 20) -> tuple[int, int]:
    """How many of ``width`` cells of a bar are items that succeeded, and how many
    items that failed (the rest is to do)."""
    done, failed, total = items_done(progress)
    whole = max(total if total is not None else 0, sum(progress.counts.values()), 1)
    ended = min(width, round(width * done / whole))
    bad = min(ended, round(width * failed / whole)) if failed else 0
    if failed and bad == 0:
        bad = 1 if ended else 0  # one failure shows, however many items there are
    return ended - bad, bad


def failed_items_lines(
    run_id: str, node_id: str, progress: ItemProgress | None, items: list[ItemState], more: bool
) -> list[str]:
    """A mapped node's failed items, each with its reason, and how to see the rest."""
    if not items:
        return []
    failed = (progress.counts.get("ERROR", 0) if progress else 0) or len(items)
    total = progress.total if progress and progress.total is not None else "?"
    said = [f"  {node_id}: {failed} of {total} items failed"]
    for item in items:
        reason = " ".join((item.error or "no error given").split())
        said.append(f"    {item.name}: {reason}")
    listing = f"pipewell items {run_id} {node_id} --status ERROR"
    if more or failed > len(items):
        said.append(f"    … {max(failed - len(items), 1)} more: {listing} --limit {failed}")
    else:
        said.append(f"    their logs: {listing} --logs")
    return said


def _item_page(
    args: argparse.Namespace, run_id: str, node_id: str, status: str | None, limit: int
) -> tuple[list[ItemState], bool, ItemProgress | None]:
    """Up to ``limit`` items of a mapped node (paged through), whether there are more,
    and the node's items counted."""
    found: list[ItemState] = []
    after = None
    path = f"/api/v1/flow/items/{quote(run_id, safe='')}/{quote(node_id, safe='')}"
    while True:
        query: dict[str, Any] = {"limit": min(MAX_PAGE, limit - len(found))}
        query.update({k: v for k, v in (("status", status), ("after", after)) if v})
        page = call(args, "GET", f"{path}?{urlencode(query)}")
        found += [ItemState.model_validate(item) for item in page["Items"]]
        after = page.get("Next")
        if after is None or len(found) >= limit:
            progress = page.get("Progress")
            counted = ItemProgress.model_validate(progress) if progress else None
            return found, after is not None, counted


def items_command(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise ServiceRefused(f"--limit {args.limit}: give 1 or more")
    status = args.status.upper() if args.status else None
    items, more, progress = _item_page(args, args.run_id, args.node, status, args.limit)
    which = f" {status}" if status else ""
    counted = item_progress_text(progress) if progress else "its items"
    print(f"node {args.node}: {counted}; {len(items)}{which} item(s) here")
    width = max([4, *(len(item.name) for item in items)])
    for item in items:
        line = f"  {item.name:<{width}}  {item.status.value:<9} attempt {item.attempt}"
        reason = " ".join(item.error.split())
        print(line + (f"  {reason}" if reason else ""))
        if args.logs:
            for record in item.logs:
                print(f"      {_log_line(item.name, record)}")
    if more:
        print(f"  … and more: --limit {args.limit * 2} lists up to {args.limit * 2}")
    return 0


def logs_command(args: argparse.Namespace) -> int:
    shown: dict[str, int] = {}
    while True:
        run = run_call(args, "GET", "status")
        if args.node is not None and args.node not in run.node_state:
            raise ServiceRefused(
                f"run {run.id} has no node {args.node!r}; its nodes: {', '.join(run.node_state)}"
            )
        for node_id, state in run.node_state.items():
            if args.node in (None, node_id):
                for record in state.logs[shown.get(node_id, 0) :]:
                    print(_log_line(node_id, record), flush=True)
                shown[node_id] = len(state.logs)
        if not args.follow or run.status.finished:
            return 0
        time.sleep(FOLLOW_EVERY)


def _log_line(node_id: str, record: LogRecord) -> str:
    when = record.timestamp.isoformat(timespec="seconds")
    return f"{when} {node_id} {record.stream}: {record.message}"


def cancel_command(args: argparse.Namespace) -> int:
    run = run_call(args, "POST", "cancel")
    print(f"run {run.id}: {run.status.value}")
    return 0


def retry_command(args: argparse.Namespace) -> int:
    path = f"/api/v1/flow/retry/{quote(args.run_id, safe='')}"
    run = FlowRun.model_validate(call(args, "POST", path, {"Recompute": args.recompute}))
    taken = [n for n, state in run.node_state.items() if state.cached is not None]
    print(f"run {run.id}: retries {args.run_id}, {run.status.value}")
    print(f"  taken over from it: {', '.join(taken) or 'nothing'}")
    runs_again = [n for n in run.node_state if n not in taken]
    print(f"  to run: {', '.join(runs_again) or 'nothing'}")
    for waiting in run.waiting_urls:
        print(f"  waiting for an upload to {waiting.artifact.edge_name}: PUT it to its WaitingURL")
    print(f"  follow it: pipewell logs {run.id} --follow")
    return 0


def gc_command(args: argparse.Namespace) -> int:
    report = call(args, "POST", "/api/v1/gc", {"DryRun": args.dry_run})
    if report["DryRun"]:
        print(f"due now: {report['Runs']} runs, {report['KeptObjects']} kept objects")
        for run_id in report["RunIDs"]:
            print(f"  {run_id}")
        if report["Runs"] > len(report["RunIDs"]):
            print(f"  … and {report['Runs'] - len(report['RunIDs'])} more")
        return 0
    print(
        f"deleted {report['Runs']} runs, {report['EarlyEdges']} edges kept shorter than their "
        f"run, {report['KeptObjects']} kept objects ({report['Objects']} object deletions)"
    )
    if report["Skipped"]:
        print(f"  kept {report['Skipped']} objects that later runs wrote at the same key")
    if report["FailedStores"]:
        print(
            f"  stores that refused (tried again next sweep): {', '.join(report['FailedStores'])}"
        )
        return 1
    return 0


def output_file_name(edge: str, object_name: str, content_type: str) -> str:
    """An artifact's file name: its edge, with the object's own extension, else the
    one its content type usually has (``pipewell test`` and ``download`` alike)."""
    suffix = PurePosixPath(object_name).suffix
    if not suffix:
        kind = content_type.split(";")[0].strip()
        if kind not in ("", "application/octet-stream"):
            suffix = mimetypes.guess_extension(kind) or ""
    return edge + suffix


def item_path(folder: Path, name: str) -> Path:
    """Where an item named by the service goes under ``folder``: its name as a relative
    path there, refused (LocalFileError) when it would land anywhere else."""
    parts = name.split("/")
    if (
        not name
        or "\\" in name
        or "\x00" in name
        or name.startswith("/")
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise LocalFileError(f"item name {name!r} is not a relative path: not saved")
    target = folder.joinpath(*parts)
    root = folder.resolve()
    # A link already in the folder must not carry the item out of it either.
    if not target.resolve().is_relative_to(root) or target.resolve() == root:
        raise LocalFileError(f"item {name!r} would be written outside {folder}: not saved")
    return target


def collection_pages(args: argparse.Namespace, run_id: str, edge: str) -> Iterator[dict[str, Any]]:
    """Every page of a collection's items (each item with its download URL)."""
    after = None
    while True:
        query = {"limit": MAX_PAGE, **({"after": after} if after else {})}
        path = f"/api/v1/flow/collection/{quote(run_id, safe='')}/{quote(edge, safe='')}"
        page = call(args, "GET", f"{path}?{urlencode(query)}")
        yield page
        after = page.get("Next")
        if after is None:
            return


def download_command(args: argparse.Namespace) -> int:
    run = run_call(args, "GET", "status")
    artifact = run.artifacts.get(args.edge)
    if artifact is None:
        has = ", ".join(run.artifacts) or "none yet"
        raise ServiceRefused(
            f"run {run.id} ({run.status.value}) has no artifact on edge {args.edge!r}; "
            f"its artifacts: {has}"
        )
    if artifact.items is not None:
        return _download_collection(args, run)
    path = f"/api/v1/flow/artifact/{quote(run.id, safe='')}/{quote(args.edge, safe='')}"
    with _request(args, "GET", path, stream=True) as response:
        if str(args.output) == "-":
            _copy(args, response, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            return 0
        name = output_file_name(
            args.edge, artifact.object_name, response.headers.get("Content-Type", "")
        )
        target = Path(name) if args.output is None else args.output
        if target.is_dir():
            target = target / name
        size = _save(args, response, target)
    print(f"{args.edge} -> {target} ({size} bytes)")
    return 0


def _save(args: argparse.Namespace, response: requests.Response, target: Path) -> int:
    # Written aside, then renamed: an interrupted download leaves no file that
    # looks whole under the name asked for.
    partial = target.with_name(target.name + ".part")
    try:
        with partial.open("wb") as file:
            size = _copy(args, response, file)
        partial.replace(target)
    except OSError as exc:
        raise LocalFileError(f"writing {target}: {exc.strerror or exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return size


def _download_collection(args: argparse.Namespace, run: FlowRun) -> int:
    """A collection's items into a folder (``-o``, default the edge's name), each under
    its item name."""
    if str(args.output) == "-":
        raise LocalFileError(
            f"edge {args.edge!r} carries a collection, a folder of items: give -o DIR, not -"
        )
    folder = Path(args.edge) if args.output is None else args.output
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LocalFileError(f"making {folder}: {exc.strerror or exc}") from exc
    count = size = 0
    complete = True
    for page in collection_pages(args, run.id, args.edge):
        complete = bool(page.get("Complete"))
        for item in page["Items"]:
            target = item_path(folder, item["Name"])
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LocalFileError(f"making {target.parent}: {exc.strerror or exc}") from exc
            size += _fetch_item(args, item["URL"], item["Name"], target)
            count += 1
    note = "" if complete else "; the collection is not complete yet: more items may come"
    print(f"{args.edge} -> {folder}/ ({count} items, {size} bytes{note})")
    return 0


def _fetch_item(args: argparse.Namespace, url: str, name: str, target: Path) -> int:
    """One item from its presigned URL (no key sent: the URL is its own credential)."""
    try:
        response = requests.get(url, stream=True, timeout=CALL_TIMEOUT)
    except requests.RequestException as exc:
        raise ServiceUnreachable(f"downloading item {name!r}: {type(exc).__name__}") from exc
    with response:
        if response.status_code != 200:
            raise ServiceRefused(f"downloading item {name!r}: {_refusal(response)}")
        return _save(args, response, target)


def _copy(args: argparse.Namespace, response: requests.Response, file: Any) -> int:
    size = 0
    try:
        for chunk in response.iter_content(CHUNK):
            file.write(chunk)
            size += len(chunk)
    except requests.RequestException as exc:
        raise ServiceUnreachable(
            f"the download from {args.server} broke off after {size} bytes: {type(exc).__name__}"
        ) from exc
    return size


def save_flow_command(args: argparse.Namespace) -> int:
    # Only here: reading a flow file loads the API's body parsers and models.
    from orchestrator.errors import FlowFileUnreadable, FlowInvalid
    from orchestrator.flow_files import read_flow_file

    try:
        submission = read_flow_file(args.file, args.nodedefs)
    except FlowInvalid as exc:
        for entry in exc.errors:
            print(f"error {entry.get('code')}: {entry.get('message')}", file=sys.stderr)
        return 1
    except FlowFileUnreadable as exc:
        raise LocalFileError(str(exc)) from exc
    if args.name is not None:
        submission.flow.name = args.name
    body = submission.model_dump(mode="json", by_alias=True, exclude_none=True)
    saved = call(args, "POST", "/api/v1/flows", body)
    ids = f"graph_id {saved['graph_id']}, id {saved['id']}"
    if saved["created"]:
        print(f"saved {saved['name']!r} as version {saved['version']}: {ids}")
    else:
        print(f"{saved['name']!r} version {saved['version']} is the same flow, kept: {ids}")
    print(f"  entry edges: {', '.join(saved['entry_edges']) or 'none'}")
    print(f"  terminal edges: {', '.join(saved['terminal_edges']) or 'none'}")
    return 0


def list_flows_command(args: argparse.Namespace) -> int:
    path = "/api/v1/flows" + (f"?name={quote(args.name, safe='')}" if args.name else "")
    flows = call(args, "GET", path)["flows"]
    print(f"{'GRAPH_ID':<26}  {'ID':>4}  {'NAME':<24} {'VERSION':>7}  CREATED")
    for flow in flows:
        print(
            f"{flow['graph_id']:<26}  {flow['id']:>4}  {flow['name']:<24} "
            f"{flow['version']:>7}  {flow['created_at']}"
        )
    return 0


def run_client_command(command: str, args: argparse.Namespace) -> int:
    handlers = {
        "runs": runs_command,
        "status": status_command,
        "logs": logs_command,
        "items": items_command,
        "cancel": cancel_command,
        "retry": retry_command,
        "download": download_command,
        "gc": gc_command,
        "flows save": save_flow_command,
        "flows list": list_flows_command,
    }
    try:
        return handlers[command](args)
    except (ServiceRefused, ServiceUnreachable, LocalFileError) as exc:
        print(f"pipewell: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, ServiceRefused) else 2


__all__ = [
    "DATA_DIR_ENV",
    "DEFAULT_DATA_DIR",
    "FAILED_SHOWN",
    "LocalFileError",
    "add_client_args",
    "data_dir_given",
    "failed_items_lines",
    "item_path",
    "item_progress_text",
    "items_done",
    "key_refusal",
    "output_file_name",
    "progress_bar",
    "run_client_command",
]
