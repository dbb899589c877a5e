"""``pipewell runs``, ``status``, ``logs`` and ``cancel``: a running service's runs.

They talk to the service's native API (``--server``, or ``PIPEWELL_URL``) with
the key in ``--key`` or ``PIPEWELL_API_KEY`` (sent as a Bearer token, never
printed). Exit codes: 0 done, 1 the service refused (unknown run, a run that
has ended), 2 the service could not be reached or answered with an error.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import requests

from orchestrator.models import FlowRun, LogRecord

DEFAULT_SERVER = "http://127.0.0.1:1234"
#: Seconds between two looks at a followed run (its status, with every log line).
FOLLOW_EVERY = 1.0
#: Seconds a call to the service may take.
CALL_TIMEOUT = 30.0


class ServiceRefused(Exception):
    """The service answered, and refused (the message is its own)."""


class ServiceUnreachable(Exception):
    """No answer, or an answer that is not the API's."""


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


def call(args: argparse.Namespace, method: str, path: str) -> Any:
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    url = args.server.rstrip("/") + path
    try:
        response = requests.request(method, url, headers=headers, timeout=CALL_TIMEOUT)
    except requests.RequestException as exc:
        raise ServiceUnreachable(f"no answer from {args.server}: {type(exc).__name__}") from exc
    if response.status_code == 401:
        raise ServiceRefused("the service wants an API key: --key or PIPEWELL_API_KEY")
    if 400 <= response.status_code < 500:
        try:
            message = response.json().get("message", response.text)
        except ValueError:  # the unknown run's answer is plain text (the seed's)
            message = response.text
        raise ServiceRefused(f"{message} ({response.status_code})")
    if response.status_code >= 300:
        raise ServiceUnreachable(f"{args.server} answered {response.status_code}")
    return response.json()


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
    for node_id, state in run.node_state.items():
        line = (
            f"  {node_id:<20} {state.status.value:<9} attempt {state.attempt}/{state.max_attempts}"
        )
        print(line + (f"  {state.error}" if state.error else ""))
    for waiting in run.waiting_urls:
        print(f"  waiting for an upload to edge {waiting.artifact.edge_name!r}")
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


def run_client_command(command: str, args: argparse.Namespace) -> int:
    handlers = {
        "runs": runs_command,
        "status": status_command,
        "logs": logs_command,
        "cancel": cancel_command,
    }
    try:
        return handlers[command](args)
    except (ServiceRefused, ServiceUnreachable) as exc:
        print(f"pipewell: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, ServiceRefused) else 2


__all__ = ["add_client_args", "run_client_command"]
