"""The service's Prometheus metrics, served at ``GET /metrics``.

One registry per service (the tests run many in one process, and two would
clash in prometheus-client's global one). The scheduler records runs and
attempts as their messages arrive, the HTTP middleware each request, the
object routes each upload; what is a state rather than an event (runs
active, tasks queued per tier) is read when Prometheus scrapes.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Seconds: from a container's start (a few ms) to a long video transcode.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
#: Seconds: an HTTP answer, or a container's create and start.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Any other method a client invents is counted as "other": a label per value would
#: let anyone grow the series without bound.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: The ``nodedef`` label of every NodeDef not in the built-in catalog: flows name
#: their own, and a name one tenant chose is neither bounded nor others' to read.
OTHER_NODEDEFS = "other"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.runs_finished = Counter(
            "pipewell_runs_finished",
            "Runs that ended, by final status (COMPLETE, ERROR, STOPPED).",
            ["status"],
            registry=self.registry,
        )
        self.runs_active = Gauge(
            "pipewell_runs_active", "Runs not yet finished.", registry=self.registry
        )
        self.runs_waiting_turn = Gauge(
            "pipewell_runs_waiting_turn",
            "Runs accepted and not started (their tenant at its quotas.running, or waiting "
            "for uploads), every tenant's.",
            registry=self.registry,
        )
        self.stored_bytes = Gauge(
            "pipewell_stored_bytes",
            "Bytes in the service's stores under tenants/, every tenant's, at the last "
            "measure (quotas.measure_every).",
            registry=self.registry,
        )
        self.retention_deleted = Counter(
            "pipewell_retention_deleted",
            "What retention deleted: 'runs' (their rows and objects), 'objects' (deletions "
            "asked of the stores).",
            ["kind"],
            registry=self.registry,
        )
        self.attempts = Counter(
            "pipewell_node_attempts",
            "Node attempts that ended, by outcome: succeeded, failed, lost (the worker's "
            "Docker engine went away, or Redis lost the task; not counted against "
            "MaxAttempts), or reused (a cached result stood: no container ran).",
            ["outcome"],
            registry=self.registry,
        )
        self.node_seconds = Histogram(
            "pipewell_node_duration_seconds",
            "One attempt, inputs in to outputs out, by NodeDef: a catalog NodeDef's "
            "Publisher/Name, 'other' for every NodeDef a flow brings.",
            ["nodedef"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.container_start_seconds = Histogram(
            "pipewell_container_start_seconds",
            "Getting an attempt's container running: creating and starting it, or "
            "claiming a warm one (orchestrator.warm_pool) and opening its gate.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait_seconds = Histogram(
            "pipewell_attempt_queue_wait_seconds",
            "From an attempt queued to its container running on a worker.",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.queued = Gauge(
            "pipewell_queue_depth",
            "Tasks waiting for a worker, by tier.",
            ["tier"],
            registry=self.registry,
        )
        self.spares = Gauge(
            "pipewell_warm_containers",
            "Spares ready on the live workers: containers started ahead of demand and "
            "waiting at their gate (executor.launch: gated), by image and tier.",
            ["image", "tier"],
            registry=self.registry,
        )
        self.items_ended = Counter(
            "pipewell_items",
            "Attempts of mapped nodes' items ended, by outcome (also counted in "
            "pipewell_node_attempts): succeeded, failed, lost, reused.",
            ["outcome"],
            registry=self.registry,
        )
        self.cache_hits = Counter(
            "pipewell_cache_hits",
            "Nodes whose outputs were reused from earlier work: no container ran for them.",
            registry=self.registry,
        )
        self.cache_entries_made = Counter(
            "pipewell_cache_entries_made",
            "Nodes whose outputs were kept for later runs to reuse.",
            registry=self.registry,
        )
        self.store_bytes = Counter(
            "pipewell_store_bytes",
            "Bytes moved through the stores: 'local_put', received by the local store's "
            "presigned URLs (inputs uploaded, and node outputs when that store holds them); "
            "'node_output', written by nodes to any store.",
            ["kind"],
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "pipewell_http_request_duration_seconds",
            "HTTP answers by method, route (its pattern, not the path) and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def attempt_ended(self, outcome: str, nodedef: str, timings: dict[str, float]) -> None:
        self.attempts.labels(outcome).inc()
        if outcome in ("lost", "reused"):
            return  # no work was done: not a duration, nor a container start
        self.node_seconds.labels(nodedef).observe(sum(timings.values()))
        if "create" in timings or "start" in timings:
            start = timings.get("create", 0.0) + timings.get("start", 0.0)
            self.container_start_seconds.observe(start)

    def set_queued(self, describe: dict[str, Any]) -> None:
        """The queue's ``describe()``: a tier with nothing waiting reads 0, not stale.

        Spares are summed over the workers; an image and tier with none left is gone.
        """
        self.queued.clear()
        for tier, count in describe.get("queued", {}).items():
            self.queued.labels(tier).set(count)
        ready: dict[tuple[str, str], int] = {}
        for worker in describe.get("workers", []):
            for spare in worker.get("spares", []):
                key = (spare["image"], spare["tier"])
                ready[key] = ready.get(key, 0) + spare["ready"]
        self.spares.clear()
        for (image, tier), count in ready.items():
            self.spares.labels(image, tier).set(count)

    def middleware(self) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
        # (method, route, status) → its histogram: prometheus-client's labels() takes a
        # lock and builds a key per call. Bounded as the labels are: methods, routes,
        # statuses.
        children: dict[tuple[str, str, int], Any] = {}

        @web.middleware
        async def timed(request: web.Request, handler: Handler) -> web.StreamResponse:
            started = time.perf_counter()
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                route = request.match_info.route.resource
                # The pattern: a label per path would grow without bound.
                name = route.canonical if route is not None else "unmatched"
                method = request.method if request.method in METHODS else "other"
                child = children.get((method, name, status))
                if child is None:
                    child = self.http_seconds.labels(method, name, str(status))
                    children[(method, name, status)] = child
                child.observe(time.perf_counter() - started)

        return timed


__all__ = ["OTHER_NODEDEFS", "Metrics"]
