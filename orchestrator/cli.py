"""The ``pipewell`` command: the service (``dev``, ``serve``, ``worker``), flow files
(``validate``, ``test``), a service's runs and flows (``runs``, ``status``, ``logs``,
``cancel``, ``retry``, ``download``, ``flows``) and API keys (``keys``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog
from aiohttp import web

from orchestrator.api_key_store import KeyStore
from orchestrator.background import describe_pending
from orchestrator.client import (
    DATA_DIR_ENV,
    add_client_args,
    data_dir_given,
    run_client_command,
)
from orchestrator.config import Settings, load_settings
from orchestrator.database import connect
from orchestrator.errors import (
    ConfigError,
    DataDirError,
    FlowFileUnreadable,
    FlowInvalid,
    RequestRefused,
)
from orchestrator.flow_test.args import add_test_args
from orchestrator.logs import configure_logging
from orchestrator.models import DEFAULT_TENANT
from orchestrator.node_commands import add_nodes_args, nodes_command
from storage import StoreError

# Open requests get 15 s (serve's shutdown_timeout), then running attempts 10 s to
# finish and 10 s more once killed (Worker.close).
SHUTDOWN_LIMIT = 45.0
EXIT_SHUTDOWN_UNFINISHED = 3
#: How long a thread may hold the GIL before the event loop gets it (Python: 5 ms).
GIL_SWITCH_SECONDS = 0.001
#: A command whose reader went away (``pipewell logs ID | head``) ends as a shell
#: reports one killed by SIGPIPE: 128 + 13.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
#: How --data-dir's default reads, for dev, serve and keys alike.
DATA_DIR_DEFAULT = f"${DATA_DIR_ENV}, else the config file's data_dir, else ./.pipewell"


async def serve(settings: Settings) -> None:
    from orchestrator.api.app import create_app
    from orchestrator.api.resources import STORE_CALLS
    from orchestrator.api.server import BoundedRunner

    # The loop shares the interpreter with threads doing CPU work (planning a big
    # flow, presigning, state writes): each time it comes back from a socket it
    # waits for the GIL up to this long, several times per request. Python's 5 ms
    # made a status read take 60 ms while a 10,000-node flow was planned; 1 ms, 40.
    sys.setswitchinterval(GIL_SWITCH_SECONDS)

    if settings.auth == "none" and not settings.is_loopback():
        raise ConfigError(
            f"refusing to listen on {settings.host} with auth: none (anyone could run "
            "containers); use --auth required with a key from 'pipewell keys create', "
            "or listen on 127.0.0.1"
        )
    # Should a fatal signal (SIGBUS, SIGSEGV) still strike, its traceback reaches the log.
    faulthandler.enable()
    app = create_app(settings)
    runner = BoundedRunner(app, settings, access_log=None, shutdown_timeout=15)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    log = structlog.get_logger("pipewell")
    log.info("listening", url=settings.base_url, data_dir=str(settings.data_dir.resolve()))
    await _until_stopped_then(runner.cleanup)
    stuck = app[STORE_CALLS].running
    if stuck:
        # Python joins every worker thread at exit: a call to a store that never
        # answers (a flow's own, on an endpoint that accepts and says nothing) would
        # hold the process for as long as the store's own timeouts allow. The run
        # state is written already; what those calls were for was never accepted.
        log.warning("shutdown_abandoned_store_calls", calls=stuck)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


async def _until_stopped_then(close: Callable[[], Awaitable[object]]) -> None:
    """On SIGINT or SIGTERM, ``close()``; the process ends within SHUTDOWN_LIMIT regardless.

    A shutdown that hangs would keep the port, the worker's place in Redis and
    whoever waits on the process: past the limit (or at a second signal) the
    process exits, after logging what it was still waiting for.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log = structlog.get_logger("pipewell")
    log.info("shutting_down", limit_seconds=SHUTDOWN_LIMIT)
    stop.clear()
    closing = asyncio.create_task(close(), name="shutdown")
    again = asyncio.create_task(stop.wait())
    await asyncio.wait(
        {closing, again}, timeout=SHUTDOWN_LIMIT, return_when=asyncio.FIRST_COMPLETED
    )
    again.cancel()
    if closing.done():
        closing.result()
        return
    log.error(
        "shutdown_unfinished",
        reason="second signal" if stop.is_set() else f"over {SHUTDOWN_LIMIT:g} s",
        waiting=describe_pending(),
    )
    sys.stderr.flush()
    os._exit(EXIT_SHUTDOWN_UNFINISHED)


async def work(settings: Settings) -> None:
    """``pipewell worker``: take tasks from Redis and run them on this host's Docker engine.

    A worker needs no store credentials: its tasks carry presigned URLs.
    """
    from orchestrator.executor import connect_docker
    from orchestrator.worker import running_worker

    faulthandler.enable()
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    loop = asyncio.get_running_loop()
    connections = settings.worker.resolved_max_parallel() * 3 + 4
    client = await loop.run_in_executor(None, connect_docker, settings.executor, connections)
    try:
        async with contextlib.AsyncExitStack() as running:
            await running.enter_async_context(running_worker(settings, client))
            await _until_stopped_then(running.aclose)
    finally:
        client.close()


def _add_service_args(parser: argparse.ArgumentParser, dev: bool) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        required=not dev,
        default=None,
        help="YAML configuration file (see config.yaml)",
    )
    parser.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default 1234)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"state, API keys, objects and logs (default {DATA_DIR_DEFAULT})",
    )
    parser.add_argument(
        "--auth",
        choices=["none", "required"],
        default=None,
        help="required: every call needs a key from 'pipewell keys create' (default none; "
        "listening beyond loopback needs required)",
    )
    parser.add_argument(
        "--log-level", default=None, help="debug, info, warning or error (default info)"
    )
    parser.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default=None,
        help="json lines, or console lines (default auto: console on a terminal, json otherwise)",
    )
    parser.add_argument(
        "--queue", default=None, help="redis://host:6379/0: dispatch to workers through Redis"
    )
    _add_redis_args(parser)
    parser.add_argument(
        "--no-local-worker",
        action="store_true",
        help="run no worker in this process (workers run 'pipewell worker' elsewhere)",
    )


def _add_redis_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--queue-password-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="a file holding the Redis password (else $PIPEWELL_REDIS_PASSWORD, else the "
        "URL's): either keeps it out of ps",
    )
    parser.add_argument(
        "--queue-ca",
        type=Path,
        default=None,
        metavar="FILE",
        help="rediss: the CA file Redis's certificate is checked against (default the "
        "system's CAs)",
    )
    parser.add_argument(
        "--queue-cert",
        type=Path,
        default=None,
        metavar="FILE",
        help="rediss: a client certificate, for a Redis that asks for one (with --queue-key)",
    )
    parser.add_argument(
        "--queue-key", type=Path, default=None, metavar="FILE", help="rediss: its private key"
    )


def _redis_flags(args: argparse.Namespace) -> dict[str, object]:
    return {
        "password_file": args.queue_password_file,
        "tls_ca_file": args.queue_ca,
        "tls_cert_file": args.queue_cert,
        "tls_key_file": args.queue_key,
    }


def _add_worker_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--queue",
        required=True,
        help="the service's Redis: redis://host:6379/0, rediss://host:6380/0 (TLS) or "
        "redis+sentinel://host1:26379,host2:26379/<master>/0",
    )
    _add_redis_args(parser)
    parser.add_argument(
        "--tiers", default=None, help="comma-separated tiers (default: every tier this host holds)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=None, help="most containers at once (default 4 x cores)"
    )
    parser.add_argument(
        "--reclaim-after",
        type=float,
        default=None,
        help="seconds a worker may be silent before its tasks run elsewhere (default 30)",
    )
    parser.add_argument("--name", default=None, help="display name (default: the host name)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".pipewell-worker"),
        help="the worker's identity and attempt files (default ./.pipewell-worker)",
    )
    parser.add_argument("--config", type=Path, default=None, help="YAML configuration file")
    parser.add_argument(
        "--log-level", default=None, help="debug, info, warning or error (default info)"
    )
    parser.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default=None,
        help="json lines, or console lines (default auto: console on a terminal, json otherwise)",
    )


def keys_command(args: argparse.Namespace) -> int:
    """The keys live in the service's database: the data directory is found as ``dev``
    and ``serve`` find theirs, and said, since a key made in any other directory is
    one the service will refuse."""
    from orchestrator.database import STATE_DB

    try:
        data_dir = load_settings(args.config, data_dir=data_dir_given(args.data_dir)).data_dir
    except ConfigError as exc:
        print(f"pipewell: {exc}", file=sys.stderr)
        return 2
    path = data_dir / STATE_DB
    where = data_dir.resolve()
    choose = f"--data-dir, ${DATA_DIR_ENV} or --config"
    if not path.exists():
        if args.keys_command != "create":
            print(
                f"pipewell: no service database in {where}, so no keys there; name the "
                f"service's data directory with {choose}",
                file=sys.stderr,
            )
            return 2
        print(
            f"pipewell: warning: {where} holds no service database yet: it is made now for "
            f"this key, which only a service started on that directory will accept "
            f"(pipewell dev --data-dir {where}); for a service already running elsewhere, "
            f"name its data directory with {choose}",
            file=sys.stderr,
        )
    try:
        conn = connect(path)
    except (DataDirError, ConfigError) as exc:
        print(f"pipewell: {exc}", file=sys.stderr)
        return 2
    store = KeyStore(conn, path)
    try:
        if args.keys_command == "create":
            raw = store.create(args.name, args.tenant, admin=args.admin)
            print(raw)
            role = "admin key" if args.admin else "key"
            print(
                f"{role} {args.name!r} for tenant {args.tenant!r} written to the data "
                f"directory {where}: copy it now, it is not shown again",
                file=sys.stderr,
            )
        elif args.keys_command == "list":
            print(f"keys of the data directory {where}", file=sys.stderr)
            print(
                f"{'NAME':<20} {'TENANT':<12} {'KEY':<14} {'CREATED':<21} {'LAST USED':<21} STATE"
            )
            for key in store.list():
                state = "revoked" if key.revoked else "active"
                state += ", admin" if key.admin else ""
                print(
                    f"{key.name:<20} {key.tenant:<12} {key.masked:<14} {key.created_at:<21} "
                    f"{key.last_used or '-':<21} {state}"
                )
        else:
            store.revoke(args.name)
            print(
                f"revoked {args.name!r} in {where}: refused from its next use on",
                file=sys.stderr,
            )
    except (RequestRefused, DataDirError) as exc:
        print(f"pipewell: {exc}", file=sys.stderr)
        return 2
    finally:
        conn.close()
    return 0


def validate_command(args: argparse.Namespace) -> int:
    """``pipewell validate``: every problem of a flow file, offline; 1 on any error."""
    from orchestrator.catalog import load_catalog
    from orchestrator.flow_files import read_flow_file
    from orchestrator.stores import store_policy
    from orchestrator.validation import validate

    try:
        settings = load_settings(args.config)
        submission = read_flow_file(args.flow, args.nodedefs)
        result = validate(
            submission,
            catalog=load_catalog(),
            stores=store_policy(settings.storage, settings.retention),
        )
        errors, warnings = result.errors, result.warnings
    except FlowInvalid as exc:  # the file's schema
        errors, warnings = exc.errors, exc.warnings
    except (ConfigError, FlowFileUnreadable) as exc:
        print(f"pipewell: {exc}", file=sys.stderr)
        return 2
    for level, entries in (("error", errors), ("warning", warnings)):
        for entry in entries:
            fields = entry if isinstance(entry, dict) else entry.model_dump(exclude_none=True)
            where = ", ".join(
                f"{k} {fields[k]!r}"
                for k in ("node", "edge", "well", "store", "field")
                if k in fields
            )
            print(
                f"{level} {fields['code']}"
                + (f" ({where})" if where else "")
                + f": {fields['message']}"
            )
    if errors:
        print(f"{args.flow}: {len(errors)} error(s), {len(warnings)} warning(s)")
        return 1
    nodes = len(submission.flow.nodes)
    print(
        f"{args.flow}: valid, {nodes} node(s)"
        + (f", {len(warnings)} warning(s)" if warnings else "")
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipewell",
        description="Run flows of containerized processing steps: the service, its "
        "workers, and a client for flow files and runs. 'pipewell COMMAND --help' "
        "says more, with an example.",
        epilog="example: pipewell dev, then pipewell test examples/greeter.yaml "
        "--input request=in.json",
    )
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_service_args(
        commands.add_parser(
            "dev",
            help="API, scheduler, worker and local store in one process",
            description="Serve the API with its scheduler, a local worker and the local "
            "store in this process (config file optional, flags win over it).",
            epilog="example: pipewell dev --port 8080 --data-dir /srv/pipewell",
        ),
        dev=True,
    )
    _add_service_args(
        commands.add_parser(
            "serve",
            help="the service, configured by file",
            description="The same service as dev, configured by a file (see config.yaml).",
            epilog="example: pipewell serve --config /etc/pipewell/config.yaml "
            "--queue redis://10.0.0.2:6379/0",
        ),
        dev=False,
    )
    check = commands.add_parser(
        "validate",
        help="check a flow file offline: every problem with its code and where (exit 1 on any)",
        description="Validate a flow file (YAML or JSON; {Flow, NodeDefs} or a bare Flow) as "
        "the service would, without one. NodeDefs: the file's own, each --nodedefs file, "
        "the nodedefs/ folder beside it, then the built-in catalog.",
        epilog="example: pipewell validate examples/greeter.yaml",
    )
    check.add_argument("flow", type=Path, help="the flow file")
    check.add_argument(
        "--nodedefs", type=Path, action="append", default=[], help="a NodeDef file (repeatable)"
    )
    check.add_argument(
        "--config", type=Path, default=None, help="the service's configuration (its stores)"
    )
    add_test_args(
        commands.add_parser(
            "test",
            help="run a flow file once: upload inputs, watch nodes live, download outputs",
            description="Run a flow file once, on a service started for it (or --server), "
            "with each --input uploaded to its WaitingURL. On a terminal: a live view of the "
            "nodes (state, attempt, elapsed, last line) with each node's log, and a file "
            "picker for inputs not given. Otherwise: one line per change. A mapped node shows "
            "its items (312/5000 items (3 failed)), and its failed items are listed at the end. "
            "Every terminal output is downloaded into --out (a collection as a folder of its "
            "items). Exit 0: COMPLETE; 1: invalid flow, or the run "
            "ended ERROR/STOPPED (the failing node's error and last lines are printed); "
            "2: the test could not run as asked.",
            epilog="example: pipewell test examples/resize.json --input input-image=photo.png "
            "--flag resize.width=400 --out resized/",
        )
    )
    run_id = "the run's ID, as POST /api/v1/flow/test (or pipewell runs) gave it"
    status = commands.add_parser(
        "status",
        help="a run's state, node by node",
        description="A run of a running service (--server): its status, then each node's "
        "state, attempt and error (a mapped node: its items, 312/5000 items (3 failed)), the "
        "edges it still waits for an upload on, and each mapped node's first failed items.",
        epilog="example: pipewell status 3f0e… --server http://10.0.0.5:1234",
    )
    logs = commands.add_parser(
        "logs",
        help="a run's log lines, node by node (--follow: until it ends)",
        description="A run's log lines, each with its time, node and stream (stdout, "
        "stderr, or pipewell's own); --follow prints new ones until the run ends.",
        epilog="example: pipewell logs 3f0e… --node resize --follow",
    )
    logs.add_argument("--node", default=None, help="only this node's lines")
    logs.add_argument("--follow", action="store_true", help="print new lines until the run ends")
    items = commands.add_parser(
        "items",
        help="a mapped node's items: name, state, attempt, reason (--status ERROR: the failed)",
        description="The items of a node mapped over a collection (it runs once per item), "
        "in the order they came: each item's name, state, attempt and error; --logs adds "
        "each item's log lines.",
        epilog="example: pipewell items 3f0e… thumb --status ERROR --limit 100",
    )
    items.add_argument(
        "--status",
        default=None,
        choices=["IDLE", "READY", "RUNNING", "RETRYING", "COMPLETE", "ERROR", "STOPPED"],
        type=str.upper,
        metavar="STATUS",
        help="only the items in this state: IDLE, READY, RUNNING, RETRYING, COMPLETE, ERROR "
        "(the failed ones) or STOPPED",
    )
    items.add_argument("--limit", type=int, default=50, help="list at most this many (default 50)")
    items.add_argument("--logs", action="store_true", help="each item's log lines too")
    cancel = commands.add_parser(
        "cancel",
        help="stop a run (its containers are killed)",
        description="Stop a run: it ends STOPPED and its containers are killed wherever they "
        "run. Exit 1 when it had ended already.",
        epilog="example: pipewell cancel 3f0e…",
    )
    retry = commands.add_parser(
        "retry",
        help="start a run again from where an ended one failed",
        description="A new run of an ended run: the nodes that succeeded are taken over "
        "(their outputs copied, no container runs), its inputs are copied, and what failed, "
        "was stopped or never ran runs. --recompute runs named nodes again too, with every "
        "node after them. An input that never came is asked for again (its WaitingURL).",
        epilog="example: pipewell retry 3f0e… --recompute resize",
    )
    retry.add_argument(
        "--recompute",
        nargs="+",
        default=[],
        metavar="NODE",
        help="node IDs to run again although they succeeded (and every node after them)",
    )
    download = commands.add_parser(
        "download",
        help="save an artifact of a run (an output, or an uploaded input) to a file",
        description="Stream the artifact of one of a run's edges to disk. Named by default "
        "as pipewell test names outputs: the edge, with the object's extension or else its "
        "content type's (output-image.png). A collection's items are saved into a folder "
        "(-o, default the edge's name), each under its item name.",
        epilog="example: pipewell download 3f0e… output-image -o resized/",
    )
    for sub in (status, logs, items, cancel, retry, download):
        sub.add_argument("run_id", help=run_id)
    items.add_argument("node", help="the mapped node's ID")
    download.add_argument("edge", help="the edge the artifact is on")
    download.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        metavar="PATH",
        help="a file, a directory to put it in under its own name, or - for stdout "
        "(default: its own name, here); for a collection, the folder of its items",
    )
    runs = commands.add_parser(
        "runs",
        help="your newest runs: ID, status, flow, started, duration",
        description="The newest runs of your tenant (your key's) on a running service, "
        "newest first.",
        epilog="example: pipewell runs --limit 10 --server http://10.0.0.5:1234",
    )
    runs.add_argument("--limit", type=int, default=20, help="how many (default 20, at most 500)")
    gc = commands.add_parser(
        "gc",
        help="delete now what outlived its lifetime (runs, their objects, kept objects)",
        description="Retention's sweep on a running service, now rather than at its next "
        "turn (retention.sweep_every): ended runs whose lifetime ran out, with their state, "
        "logs and objects, and objects kept on their own (a longer DataWell Lifetime, "
        "Langflow uploads). --dry-run says what is due and deletes nothing. Needs an admin "
        "key where the service requires keys.",
        epilog="example: pipewell gc --dry-run",
    )
    gc.add_argument("--dry-run", action="store_true", help="say what is due, delete nothing")
    flows = commands.add_parser(
        "flows",
        help="save a flow file on a running service, list the saved flows",
        description="Saved flows of a running service (--server): each saved version has a "
        "graph_id, which the invocation dialects (Axiom, xpander, Scade, Langflow) run.",
        epilog="example: pipewell flows save examples/greeter.yaml",
    )
    flow_commands = flows.add_subparsers(dest="flows_command", required=True)
    save = flow_commands.add_parser(
        "save",
        help="save a flow file (a new version when it changed)",
        description="Save a flow file (YAML or JSON; {Flow, NodeDefs} or a bare Flow, with "
        "NodeDefs found as validate finds them) on the service; print its graph_id, id, "
        "version and edges. Saving a changed flow under the same name makes a new version.",
        epilog="example: pipewell flows save examples/greeter.yaml --name greeter",
    )
    save.add_argument("file", type=Path, help="the flow file")
    save.add_argument("--name", default=None, help="save it under this name, not the file's")
    save.add_argument(
        "--nodedefs", type=Path, action="append", default=[], help="a NodeDef file (repeatable)"
    )
    saved = flow_commands.add_parser(
        "list",
        help="every saved version: graph_id, id, name, version, created",
        description="Your tenant's saved flows, every version, oldest first.",
        epilog="example: pipewell flows list --name greeter",
    )
    saved.add_argument("--name", default=None, help="only the versions of this name")
    for sub in (status, logs, items, cancel, retry, download, runs, gc, save, saved):
        add_client_args(sub)
    keys = commands.add_parser(
        "keys",
        help="create, list and revoke API keys",
        description="API keys of the service whose data directory this is: found as dev and "
        f"serve find theirs (--data-dir, else {DATA_DIR_DEFAULT}, in the current "
        "directory), and said on stderr.",
        epilog="example: pipewell keys create --name laptop --tenant demo",
    )
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser(
        "create",
        help="make a key and print it, once",
        description="Make a key, print it (once: only its SHA-256 is kept) and say on stderr "
        "which data directory it was written to.",
        epilog="example: KEY=$(pipewell keys create --name ci --tenant builds)",
    )
    create.add_argument("--name", required=True, help="the key's name, to list and revoke it by")
    create.add_argument(
        "--tenant",
        default=DEFAULT_TENANT,
        help=f"whose runs and flows the key sees and makes (default {DEFAULT_TENANT})",
    )
    create.add_argument(
        "--admin", action="store_true", help="may also manage keys over HTTP (/api/v1/keys)"
    )
    key_listing = key_commands.add_parser(
        "list",
        help="name, tenant, created, last used, masked key",
        description="Every key of the data directory: name, tenant, masked key, created, "
        "last used, and whether it is revoked or admin.",
        epilog="example: pipewell keys list --data-dir /srv/pipewell",
    )
    revoke = key_commands.add_parser(
        "revoke",
        help="refuse the key from its next use on",
        description="Revoke a key: the service refuses it from its very next use.",
        epilog="example: pipewell keys revoke laptop",
    )
    revoke.add_argument("name", help="the key's name, as keys list shows it")
    for sub in (create, key_listing, revoke):
        sub.add_argument(
            "--data-dir",
            type=Path,
            default=None,
            help=f"the service's data directory (default {DATA_DIR_DEFAULT})",
        )
        sub.add_argument(
            "--config", type=Path, default=None, help="the service's configuration (its data_dir)"
        )
    add_nodes_args(
        commands.add_parser(
            "nodes",
            help="the built-in nodes: list them, build their images",
            description="The built-in catalog (nodedefs/) and its images (nodes/), on this "
            "host's Docker engine. An image missing when a node runs is built from nodes/ "
            "by the worker too.",
            epilog="example: pipewell nodes build",
        )
    )
    _add_worker_args(
        commands.add_parser(
            "worker",
            help="run tasks from a Redis queue on this Docker host",
            description="Take the service's tasks from Redis and run them on this host's "
            "Docker engine; no store credentials needed (tasks carry presigned URLs).",
            epilog="example: pipewell worker --queue redis://10.0.0.2:6379/0 --tiers "
            "c-small,c-large --concurrency 8",
        )
    )
    _describe_every_command(parser)
    return parser


def _describe_every_command(parser: argparse.ArgumentParser) -> None:
    """A command's own --help opens with what it does: its one-line help, when it was
    given no description of its own (the nodes commands)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            said = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                sub.description = sub.description or said.get(name)
                _describe_every_command(sub)


class _Version(argparse.Action):
    """``--version``: the installed package's version, looked up only when asked for
    (reading package metadata at every start would slow every command)."""

    def __init__(self, option_strings: list[str], dest: str, help: str | None = None) -> None:
        super().__init__(
            option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, help=help
        )

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("pipewell")
        except PackageNotFoundError:
            found = "unknown (the package is not installed)"
        print(f"pipewell {found}")
        parser.exit()


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _command(build_parser().parse_args(argv))
        finally:
            # What stdout still buffers is written now (--version and --help too, which
            # exit), while a reader gone away can still be caught here.
            sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout once more at exit; on /dev/null that flush cannot fail
        # and print "Exception ignored … BrokenPipeError".
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _command(args: argparse.Namespace) -> int:
    if args.command == "keys":
        return keys_command(args)
    if args.command == "validate":
        return validate_command(args)
    if args.command == "test":
        # Only here: the test client (httpx, httpx_sse, textual) would slow every start.
        from orchestrator.flow_test.command import test_command

        return test_command(args)
    if args.command == "nodes":
        return nodes_command(args)
    if args.command in ("runs", "status", "logs", "items", "cancel", "retry", "download", "gc"):
        return run_client_command(args.command, args)
    if args.command == "flows":
        return run_client_command(f"flows {args.flows_command}", args)
    try:
        if args.command == "worker":
            settings = load_settings(
                args.config,
                data_dir=args.data_dir,
                log_level=args.log_level,
                log_format=args.log_format,
                queue=_section(
                    url=args.queue, reclaim_after=args.reclaim_after, **_redis_flags(args)
                ),
                worker=_section(
                    name=args.name,
                    max_parallel=args.concurrency,
                    tiers=args.tiers.split(",") if args.tiers else None,
                ),
            )
            configure_logging(settings.log_level, settings.log_format)
            asyncio.run(work(settings))
            return 0
        settings = load_settings(
            args.config,
            host=args.host,
            port=args.port,
            data_dir=data_dir_given(args.data_dir),
            auth=args.auth,
            log_level=args.log_level,
            log_format=args.log_format,
            queue=_section(url=args.queue, **_redis_flags(args)),
            worker=_section(enabled=False if args.no_local_worker else None),
        )
        configure_logging(settings.log_level, settings.log_format)
        asyncio.run(serve(settings))
    except (ConfigError, DataDirError, StoreError) as exc:
        print(f"pipewell: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def _section(**values: object) -> dict[str, object] | None:
    """The flags given for one settings section (None: none given)."""
    given = {k: v for k, v in values.items() if v is not None}
    return given or None


if __name__ == "__main__":
    sys.exit(main())
