"""``pipewell test``: run a flow file once, with real inputs, and fetch what it made.

Exit codes: 0 the run completed (outputs downloaded); 1 the flow is invalid or
the run ended ERROR or STOPPED (the failing node's error and last lines are
printed); 2 the test could not be run as asked (a file, an input, the service).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from collections.abc import Collection
from contextlib import AsyncExitStack, ExitStack
from pathlib import Path

from orchestrator.errors import ConfigError, DataDirError, FlowFileUnreadable, FlowInvalid
from orchestrator.flow_files import read_flow_file, upload_edges
from orchestrator.flow_test.embedded import embedded_service
from orchestrator.flow_test.plain import PlainView
from orchestrator.flow_test.session import (
    CannotTest,
    FlowRejected,
    Output,
    RunSession,
    apply_flags,
    check_collection_input,
    parse_inputs,
)
from orchestrator.logs import configure_logging
from orchestrator.models import FlowSubmission, RunStatus
from storage import StoreError

#: The embedded service's own log, in its data directory.
SERVICE_LOG = "service.log"


def test_command(args: argparse.Namespace) -> int:
    live = not args.plain and sys.stdin.isatty() and sys.stdout.isatty()
    try:
        submission = read_flow_file(args.flow, args.nodedefs)
        apply_flags(submission, args.flag)
        collections = set(submission.flow.collections)
        files = parse_inputs(args.input, collections)
        check_inputs(
            files, upload_edges(submission.flow), ask_for_missing=live, collections=collections
        )
    except FlowInvalid as exc:
        for entry in exc.errors:
            print(f"error {entry.get('code')}: {entry.get('message')}", file=sys.stderr)
        return 1
    except (FlowFileUnreadable, CannotTest) as exc:
        print(f"pipewell: {exc}", file=sys.stderr)
        return 2
    with ExitStack() as stack:
        data_dir = args.data_dir
        if args.server is None:
            if data_dir is None:
                data_dir = Path(
                    stack.enter_context(tempfile.TemporaryDirectory(prefix="pipewell-"))
                )
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            log_file = stack.enter_context((data_dir / SERVICE_LOG).open("a", encoding="utf-8"))
            # The embedded service logs to a file: the terminal is the test's.
            configure_logging("info", "json", log_file)
        try:
            status = asyncio.run(_test(args, submission, files, data_dir, live))
        except FlowRejected as exc:
            print(f"pipewell: {exc}", file=sys.stderr)
            return 1
        except (CannotTest, ConfigError, DataDirError, StoreError) as exc:
            print(f"pipewell: {exc}", file=sys.stderr)
            return 2
        if status == RunStatus.COMPLETE:
            return 0
        if args.server is None and args.data_dir is None:
            args.out.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(data_dir / SERVICE_LOG, args.out / SERVICE_LOG)
            print(f"the service's log: {args.out / SERVICE_LOG}")
        return 1


async def _test(
    args: argparse.Namespace,
    submission: FlowSubmission,
    files: dict[str, Path],
    data_dir: Path | None,
    live: bool,
) -> RunStatus:
    """The run's final status, its outputs downloaded and its summary printed."""
    async with AsyncExitStack() as stack:
        server = args.server
        if server is None:
            server = await stack.enter_async_context(embedded_service(args.config, data_dir))
        session = RunSession(server, args.key, submission)
        stack.push_async_callback(session.aclose)
        run = await session.submit()
        print(f"run {run.id}: {submission.flow.name}, {len(submission.flow.nodes)} node(s)")
        try:
            if live:
                from orchestrator.flow_test.live import LiveView

                outputs = await LiveView(session, files, args.out).run_async()
                if not session.status.finished:  # left before the end: cancelled on the way
                    await session.refresh()
            else:
                outputs = await _plain(session, files, args.out)
            if session.failed is None and session.status.finished:
                await session.failed_items()
        except BaseException:
            # Interrupted, or the test cannot go on: the run should not wait for nothing.
            await asyncio.shield(session.cancel())
            raise
        for line in summary(session, outputs):
            print(line)
        return session.status


def check_inputs(
    files: dict[str, Path],
    edges: list[str],
    *,
    ask_for_missing: bool,
    collections: Collection[str] = (),
) -> None:
    """Refuse, before anything is submitted, an --input on an edge the flow does not
    wait for and, without a terminal to ask on, an edge it waits for with no --input:
    found after submitting, either would leave a run behind, stopped. A collection
    edge takes a zip or tar, or a folder whose files are its items (their names are
    checked as the service checks them): the types its readers take apply to each
    item, not to the archive."""
    unknown = [edge for edge in files if edge not in edges]
    if unknown:
        raise CannotTest(
            f"--input {', '.join(unknown)}: the flow waits for files on "
            + (", ".join(f"edge {e!r}" for e in edges) if edges else "no edge")
            + " only"
        )
    for edge, path in files.items():
        if edge in collections:
            check_collection_input(edge, path)
            continue
        try:
            path.open("rb").close()
        except OSError as exc:
            raise CannotTest(f"--input {edge}={path}: {exc.strerror or exc}") from exc
    missing = [edge for edge in edges if edge not in files]
    if missing and not ask_for_missing:
        raise CannotTest(
            "the flow waits for a file on "
            + ", ".join(f"edge {e!r}" for e in missing)
            + ": pass "
            + " ".join(
                f"--input {e}=" + ("FOLDER|ARCHIVE" if e in collections else "PATH")
                for e in missing
            )
        )


async def _plain(session: RunSession, files: dict[str, Path], out: Path) -> list[Output] | None:
    # Checked against the flow before it was submitted; the service has the last word.
    missing = [e for e in session.waiting_edges() if e not in files]
    if missing:
        raise CannotTest(
            "the run waits for a file on "
            + ", ".join(f"edge {e!r}" for e in missing)
            + ": pass "
            + " ".join(f"--input {e}=PATH" for e in missing)
        )
    for edge, path in files.items():
        if edge in session.collections and path.is_dir():
            count, size = await session.upload_items(edge, path)
            print(f"uploaded {count} items of {path} to edge {edge!r} ({size} bytes)", flush=True)
            continue
        size = await session.upload(edge, path)
        print(f"uploaded {path} to edge {edge!r} ({size} bytes)", flush=True)
    await PlainView(session, lambda line: print(line, flush=True)).follow()
    if session.status == RunStatus.COMPLETE:
        return await session.download(out)
    return None


def summary(session: RunSession, outputs: list[Output] | None) -> list[str]:
    """The lines that stay on the terminal once the run has ended: its outputs (or why
    it failed), then the failed items of each mapped node."""
    if session.status != RunStatus.COMPLETE:
        return session.failure() + session.failed_item_lines()
    said = [f"run {session.run_id} COMPLETE in {session.elapsed():.1f} s"]
    for output in outputs or []:
        if output.items is not None:
            counted = f"{output.items} items, {output.size} bytes"
            said.append(f"  {output.edge} -> {output.path}/ ({counted})")
        else:
            said.append(f"  {output.edge} -> {output.path} ({output.size} bytes)")
    if not outputs:
        said.append("  (no outputs: every edge it produced is read by a node)")
    return said + session.failed_item_lines()


__all__ = ["test_command"]
