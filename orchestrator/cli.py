"""The ``pipewell`` command: ``dev`` (everything in one process) and ``serve`` (by config file)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

import structlog
from aiohttp import web

from orchestrator.config import Settings, load_settings
from orchestrator.errors import ConfigError
from storage import StoreError


def configure_logging(level: str) -> None:
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    # Both would print presigned URLs, signatures included: aiohttp's access log
    # and urllib3's retry warnings.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.ERROR)


async def serve(settings: Settings) -> None:
    from orchestrator.api.app import create_app

    if settings.auth == "required":
        # Refusing beats serving every endpoint open while the user believes otherwise.
        raise ConfigError(
            "auth: required needs API keys, which this version does not have yet; "
            "run with --auth none on 127.0.0.1"
        )
    if not settings.is_loopback():
        raise ConfigError(
            f"refusing to listen on {settings.host} with auth: none (anyone could run "
            "containers); listen on 127.0.0.1"
        )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=15)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    log = structlog.get_logger("pipewell")
    log.info("listening", url=settings.base_url, data_dir=str(settings.data_dir.resolve()))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting_down")
    await runner.cleanup()


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
        "--data-dir", type=Path, default=None, help="state, objects and logs (default ./.pipewell)"
    )
    parser.add_argument("--auth", choices=["none", "required"], default=None)
    parser.add_argument("--log-level", default=None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pipewell", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_service_args(
        commands.add_parser("dev", help="API, scheduler, worker and local store in one process"),
        dev=True,
    )
    _add_service_args(
        commands.add_parser("serve", help="the service, configured by file"), dev=False
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings(
            args.config,
            host=args.host,
            port=args.port,
            data_dir=args.data_dir,
            auth=args.auth,
            log_level=args.log_level,
        )
        configure_logging(settings.log_level)
        asyncio.run(serve(settings))
    except (ConfigError, StoreError) as exc:
        print(f"pipewell: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
