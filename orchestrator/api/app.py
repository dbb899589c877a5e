"""The application factory used by ``pipewell dev``, ``pipewell serve`` and the tests.

One ``cleanup_ctx`` per resource, opened in order and closed in reverse:
database (its one connection and thread; API keys) → state → stores (and the
threads their calls run on) → queue and events → Docker → engine (worker, then
scheduler) → the service layer every dialect calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from functools import partial

import structlog
from aiohttp import web

from orchestrator.api import (
    axiom,
    docs,
    flows,
    key_admin,
    langflow,
    native,
    operations,
    scade,
    ui,
    xpander,
)
from orchestrator.api.auth import auth_middleware
from orchestrator.api.browsers import add_cors_headers, browser_guard
from orchestrator.api.errors import error_middleware
from orchestrator.api.objects import add_object_routes
from orchestrator.api.resources import (
    DATABASE,
    DOCKER,
    EVENTS,
    KEYS,
    METRICS,
    QUEUE,
    SCHEDULER,
    SERVICE,
    SETTINGS,
    STATE,
    STORE_CALLS,
    STORES,
    WORKER,
)
from orchestrator.api_key_store import KeyStore
from orchestrator.catalog import load_catalog
from orchestrator.config import Settings
from orchestrator.database import STATE_DB, Database
from orchestrator.events import EventBus
from orchestrator.executor import connect_docker, image_id
from orchestrator.metrics import Metrics
from orchestrator.queue import open_queue
from orchestrator.run_ids import SECRET_NAME as RUN_ID_SECRET
from orchestrator.run_ids import RunIds
from orchestrator.scheduler import Scheduler
from orchestrator.service import Service
from orchestrator.state import StateStore
from orchestrator.stores import StoreCalls, StoreRegistry
from orchestrator.worker import running_worker
from storage import ObjectInfo

log = structlog.get_logger(__name__)


async def _database(app: web.Application) -> AsyncIterator[None]:
    db = Database(app[SETTINGS].data_dir / STATE_DB)
    tightened = await db.open()
    if tightened:
        log.warning(
            "data_dir_permissions_tightened",
            changes=tightened,
            why="the database holds the URL-signing secret and API key hashes",
        )
    app[DATABASE] = db
    app[KEYS] = KeyStore(db.connection, db.path)
    yield
    await db.close()


async def _state(app: web.Application) -> AsyncIterator[None]:
    state = StateStore(app[DATABASE])
    state.start()
    app[STATE] = state
    yield
    await state.close()


async def _stores(app: web.Application) -> AsyncIterator[None]:
    secret = await app[STATE].secret("url-signing-key", lambda: secrets.token_bytes(32))
    # Opening an s3 store builds clients and may create its bucket: off the loop.
    stores = await asyncio.get_running_loop().run_in_executor(
        None, StoreRegistry, app[SETTINGS], secret
    )
    app[STORES] = stores
    calls = app[STORE_CALLS] = StoreCalls(stores, name="pipewell-store")
    yield
    calls.close()
    stores.close()


async def _queue(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    queue = open_queue(settings.queue, consumer="service")
    try:
        await queue.check()
    except BaseException:
        await queue.close()
        raise
    app[QUEUE] = queue
    app[EVENTS] = EventBus()
    yield
    await queue.close()


async def _docker(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if not settings.worker.enabled:
        yield
        return
    connections = settings.worker.resolved_max_parallel() * 3 + 4
    client = await asyncio.get_running_loop().run_in_executor(
        None, connect_docker, settings.executor, connections
    )
    app[DOCKER] = client
    yield
    client.close()


async def _engine(app: web.Application) -> AsyncIterator[None]:
    """Worker first, so resumed runs find their tiers offered; on shutdown the worker
    stops first too, while the scheduler still records what its last attempts report."""
    settings = app[SETTINGS]
    async with contextlib.AsyncExitStack() as worker:
        if settings.worker.enabled:
            # On Redis the local worker is a worker like any other, with its own connection.
            local_queue = None if settings.queue.url else app[QUEUE]
            app[WORKER] = await worker.enter_async_context(
                running_worker(settings, app[DOCKER], local_queue)
            )
        # In-process queue and worker: the one engine every attempt runs on is in reach.
        alone = settings.worker.enabled and not settings.queue.url
        scheduler = Scheduler(
            settings,
            app[STATE],
            app[QUEUE],
            app[EVENTS],
            app[STORES],
            app[STORE_CALLS],
            load_catalog(),
            app[METRICS],
            image_ids=partial(image_id, app[DOCKER]) if alone else None,
        )
        app[SCHEDULER] = scheduler
        await scheduler.start()
        yield
    await scheduler.close()


async def _stop_waiting(app: web.Application) -> None:
    if STORE_CALLS in app:
        app[STORE_CALLS].stop_waiting()


async def _service(app: web.Application) -> AsyncIterator[None]:
    scheduler = app[SCHEDULER]
    run_id_key = await app[STATE].secret(RUN_ID_SECRET, lambda: secrets.token_bytes(32))
    service = Service(
        app[SETTINGS],
        scheduler,
        app[STATE],
        app[STORES],
        app[STORE_CALLS],
        app[EVENTS],
        app[QUEUE],
        app[DATABASE],
        scheduler.catalog,
        RunIds(run_id_key),
    )
    app[SERVICE] = service
    metrics = app[METRICS]
    service.usage.on_measured.append(lambda found: metrics.stored_bytes.set(sum(found.values())))
    service.retention.on_swept.append(
        lambda report: (
            metrics.retention_deleted.labels("runs").inc(report.runs),
            metrics.retention_deleted.labels("objects").inc(report.objects),
        )
    )
    service.start()
    yield
    await service.close()


def create_app(settings: Settings) -> web.Application:
    metrics = Metrics()
    # Timing outermost (it sees every answer's final status), then errors, so it
    # answers every refusal of the others; pages of other origins are refused
    # before a key is even looked up.
    middlewares = [metrics.middleware(), error_middleware, browser_guard(settings)]
    if settings.auth == "required":
        middlewares.append(auth_middleware)
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=middlewares)
    app.on_response_prepare.append(add_cors_headers)
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app.cleanup_ctx.extend([_database, _state, _stores, _queue, _docker, _engine, _service])
    for dialect in (
        native,
        flows,
        key_admin,
        operations,
        axiom,
        xpander,
        scade,
        langflow,
        docs,
        ui,
    ):
        app.add_routes(dialect.routes)
    docs.init_docs(app)
    app.on_startup.append(ui.load_assets)
    # Before open requests are waited for: none of them waits on a dead store.
    app.on_shutdown.append(_stop_waiting)

    async def on_written(store: str, info: ObjectInfo) -> None:
        app[METRICS].store_bytes.labels("local_put").inc(info.size)
        await app[SERVICE].object_written(store, info.key, info.digest)

    add_object_routes(
        app,
        lambda name: app[STORES].local(name),
        on_written,
        idle_timeout=settings.idle_timeout,
    )
    return app


__all__ = ["create_app"]
