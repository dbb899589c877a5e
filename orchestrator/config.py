"""Service settings: one typed object, loaded from ``config.yaml`` and CLI flags.

Nothing below this module reads the environment or a file for settings: the
object is passed to the constructors that need it.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from orchestrator.durations import parse_duration
from orchestrator.errors import ConfigError
from orchestrator.models import NAME_RULE, is_name
from orchestrator.redis_access import SCHEMES as REDIS_SCHEMES
from orchestrator.redis_access import RedisAccess, safe_url
from orchestrator.tiers import GIB, TIERS, Tier


def _origins_only(values: list[str], what: str, example: str) -> list[str]:
    """``scheme://host[:port]`` values, without a trailing slash; ValueError for others."""
    for value in values:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/"):
            raise ValueError(f"{value!r} is not {what}; write scheme://host[:port], e.g. {example}")
    return [value.rstrip("/") for value in values]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StoreSettings(_Section):
    type: Literal["local", "s3"] = "local"
    params: dict[str, Any] = Field(default_factory=dict)


class StorageSettings(_Section):
    default: StoreSettings = Field(default_factory=StoreSettings)
    # More stores of the operator's, by name: flows name them in their DataWells.
    stores: dict[str, StoreSettings] = Field(default_factory=dict)
    # S3 endpoints a flow may declare a store of its own on (with its own
    # credentials). Empty: flows only use the stores above.
    flow_store_endpoints: list[str] = Field(default_factory=list)
    # Flow-declared stores kept open at once (each holds S3 clients).
    flow_stores_open: int = Field(default=16, ge=1)
    url_ttl: float = Field(default=3600, gt=0)
    poll_interval: float = Field(default=2.0, gt=0)

    @field_validator("stores")
    @classmethod
    def _store_names(cls, stores: dict[str, StoreSettings]) -> dict[str, StoreSettings]:
        for name in stores:
            if name == "default" or not is_name(name):
                raise ValueError(
                    f"store name {name!r}: {NAME_RULE}, and not 'default' (that is storage.default)"
                )
        return stores

    @field_validator("flow_store_endpoints")
    @classmethod
    def _endpoints(cls, endpoints: list[str]) -> list[str]:
        return _origins_only(endpoints, "an endpoint", "https://s3.eu-west-1.amazonaws.com")

    def operator_stores(self) -> dict[str, StoreSettings]:
        """Every store of the operator's by name, ``default`` first."""
        return {"default": self.default, **self.stores}


class WorkerSettings(_Section):
    enabled: bool = True
    name: str | None = None
    tiers: list[str] | Literal["auto"] = "auto"
    cpus: int | Literal["auto"] = "auto"
    memory: str | int | Literal["auto"] = "auto"
    max_parallel: int | Literal["auto"] = "auto"

    def resolved_name(self) -> str:
        return self.name or os.uname().nodename

    def resolved_cpus(self) -> int:
        if self.cpus == "auto":
            return os.cpu_count() or 1
        return int(self.cpus)

    def resolved_memory(self) -> int:
        if self.memory == "auto":
            # Leave a tenth of the machine to the service, Docker and the OS.
            return int(_total_memory() * 0.9)
        return parse_size(self.memory)

    def resolved_max_parallel(self) -> int:
        if self.max_parallel == "auto":
            return max(2, 4 * self.resolved_cpus())
        return int(self.max_parallel)

    def check_holds(self, tiers: list[str]) -> None:
        """ValueError unless this worker can hold a task of each tier (else it would take
        tasks it can never run)."""
        cpus, memory = self.resolved_cpus(), self.resolved_memory()
        too_big = [
            TIERS[t].describe()
            for t in tiers
            if TIERS[t].gpus or TIERS[t].cpus > cpus or TIERS[t].memory > memory
        ]
        if too_big:
            raise ValueError(
                f"worker.tiers: this worker cannot hold {', '.join(too_big)}: it has {cpus} "
                f"CPU and {memory // 2**20} MiB for containers (worker.cpus, worker.memory) "
                "and no GPU; leave those tiers to workers that can, or use tiers: auto"
            )

    def offered_tiers(self) -> list[Tier]:
        """Tiers this worker can hold: enough cores and memory, no GPU asked."""
        if self.tiers != "auto":
            return [TIERS[name] for name in self.tiers]
        cpus, memory = self.resolved_cpus(), self.resolved_memory()
        return [t for t in TIERS.values() if not t.gpus and t.cpus <= cpus and t.memory <= memory]


class ExecutorSettings(_Section):
    # mount: bind-mount a per-attempt directory (needs the engine on this machine);
    # archive: copy files in and out through the Engine API; auto: mount when the
    # engine is reached through a unix socket.
    transfer: Literal["auto", "mount", "archive"] = "auto"
    default_timeout: float = Field(default=3600, gt=0)
    pull_timeout: float = Field(default=60, gt=0)
    # Registries a missing image may be pulled from; docker.io stands for names
    # without a registry host. The engine connects wherever an image name points.
    pull_registries: list[str] = Field(default_factory=lambda: ["docker.io"])
    docker_timeout: float = Field(default=120, gt=0)
    transfer_timeout: float = Field(default=300, gt=0)
    log_lines_per_node: int = Field(default=1000, ge=10)
    # The largest output any node may write (a NodeDef's MaxOutputBytes is held to it).
    max_output_bytes: int = 16 * GIB

    @field_validator("max_output_bytes", mode="before")
    @classmethod
    def _size(cls, value: str | int) -> int:
        try:
            size = parse_size(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a size; write bytes, or 512m, 16g") from None
        if size <= 0:
            raise ValueError("must be positive: the largest output a node may write")
        return size

    # gated: each attempt runs in a container started ahead and held at a gate
    # (needs the engine on this machine and a static busybox; a worker that has
    # neither runs plain and logs why); plain: create and start one per attempt.
    launch: Literal["gated", "plain"] = "gated"
    # Gated only: spares, started ahead of demand per recently used image, tier
    # and user (0: none, every attempt makes its own); removed after warm_idle s.
    warm_containers: int = Field(default=8, ge=0, le=64)
    warm_idle: float = Field(default=60, gt=0)
    # Items of one mapped node a task carries at most, run one after another in one
    # container (gated launch; plain runs each in its own): a container start is
    # paid once per batch, not per item. 1: every item its own task. 32: the
    # smallest size that meets the map targets in bench/maps.py (config.yaml says why).
    items_per_container: int = Field(default=32, ge=1, le=256)

    @model_validator(mode="after")
    def _gated_needs_mounts(self) -> ExecutorSettings:
        if self.launch == "gated" and self.transfer == "archive":
            if "launch" not in self.model_fields_set:
                self.launch = "plain"  # the operator chose archive, and only plain can do it
                return self
            raise ValueError(
                "executor.launch: gated needs the attempt's files mounted, and "
                "executor.transfer: archive copies them through the Engine API; set "
                "launch: plain, or transfer: mount (or auto) on the engine's own machine"
            )
        return self


class RetrySettings(_Section):
    backoff_base: float = Field(default=1.0, ge=0)
    backoff_max: float = Field(default=60.0, ge=0)

    def delay(self, failed_attempt: int) -> float:
        return min(self.backoff_max, self.backoff_base * 2 ** (failed_attempt - 1))


class InvocationSettings(_Section):
    # How long the synchronous dialects (xpander's invoke, Langflow's run) wait
    # for a result before answering with what is known; the run goes on.
    sync_timeout: float = Field(default=300, gt=0, le=3600)
    # Outputs up to this size are returned inline, bigger ones as a presigned URL.
    inline_output_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    # Largest file an invocation may send as a body of its own (Langflow's upload,
    # a webhook's non-JSON body); base64 in JSON is bounded by max_body_bytes.
    max_file_bytes: int = Field(default=1024 * 1024 * 1024, gt=0)


class CollectionSettings(_Section):
    # Items one collection may hold: an archive with more entries, a node writing
    # more files, or more item names asked for are refused (COLLECTION_TOO_LARGE).
    max_items: int = Field(default=10_000, ge=1, le=1_000_000)
    # An archive (an upload's zip or tar, a node's collection output) expands to at
    # most this many bytes in all, and each item to at most max_item_bytes.
    max_total_bytes: int = Field(default=1024 * 1024 * 1024, gt=0)
    max_item_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    # An entry over 1 MiB may not shrink more than this when compressed (zip bombs).
    max_ratio: int = Field(default=100, ge=1)


class CacheSettings(_Section):
    # Reuse a node's outputs when the same work was done before in the same tenant.
    # Off: nothing is looked up or kept, and stored objects are not hashed.
    enabled: bool = True
    # Seconds an entry is kept after it was made or last reused (30 days).
    ttl: float = Field(default=30 * 24 * 3600.0, gt=0)
    # Seconds between two sweeps that forget expired entries.
    collect_every: float = Field(default=3600.0, gt=0)


def _duration(value: str | int | float) -> float:
    return parse_duration(value)


Duration = Annotated[float, BeforeValidator(_duration)]
#: A positive number of bytes, written as bytes or 512m, 50g.
Size = Annotated[int, BeforeValidator(lambda value: _positive_size(value))]


class RetentionSettings(_Section):
    # How long an ended run is kept, counted from its end: its state and logs, and
    # the objects it took in or wrote in the service's stores. A tenant's own
    # (tenants.<name>.retention) and a flow's Lifetime override it.
    runs: Duration = 30 * 86400.0
    # The shortest and longest Lifetime a flow or a DataWell may ask for.
    min_lifetime: Duration = 60.0
    max_lifetime: Duration = 365 * 86400.0
    # Seconds between two sweeps, and runs (or kept objects) deleted per batch.
    sweep_every: Duration = 60.0
    batch: int = Field(default=200, ge=1, le=10_000)
    # Free bytes on the data directory's filesystem below which new runs are refused
    # (507 STORAGE_LOW); runs already accepted go on. 0: never refused for it.
    low_water: int = 512 * 2**20

    @field_validator("low_water", mode="before")
    @classmethod
    def _size(cls, value: str | int) -> int:
        try:
            size = parse_size(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a size; write bytes, or 512m, 2g") from None
        if size < 0:
            raise ValueError("must be 0 or more")
        return size

    @model_validator(mode="after")
    def _bounds(self) -> RetentionSettings:
        if self.min_lifetime > self.max_lifetime:
            raise ValueError("min_lifetime is longer than max_lifetime")
        return self

    def bounds(self) -> tuple[float, float]:
        return self.min_lifetime, self.max_lifetime


class QuotaSettings(_Section):
    # Runs of one tenant started (a node of theirs sent to a worker) and not ended, at
    # once; its other runs wait their turn, their nodes READY. null: no limit.
    running: int | None = Field(default=100, ge=1)
    # Runs of one tenant accepted and not started yet (waiting for uploads or their
    # turn); beyond them a new run is refused, 429 QUOTA_EXCEEDED. null: no limit.
    queued: int | None = Field(default=1000, ge=0)
    # queue: a run beyond `running` is accepted and waits its turn (up to `queued`);
    # refuse: refused instead, 429 QUOTA_EXCEEDED.
    over: Literal["queue", "refuse"] = "queue"
    # Attempts of one tier waiting for a worker, every tenant's (in the task queue or
    # the scheduler's order); beyond it new runs are refused, 429 QUEUE_FULL, so a
    # burst cannot exhaust memory or Redis.
    queued_per_tier: int = Field(default=100_000, ge=1)
    # Bytes one tenant may store in the service's stores, as last measured; over it a
    # new run is refused, 429 QUOTA_EXCEEDED. null: no limit.
    stored_bytes: Size | None = None
    # Seconds between two measures of what each tenant stores (a listing of every
    # object of the service's stores).
    measure_every: Duration = 300.0


class TenantSettings(_Section):
    # This tenant's runs are kept this long after they end (default retention.runs).
    retention: Duration | None = None
    # This tenant's quotas.running, quotas.queued and quotas.stored_bytes.
    running: int | None = Field(default=None, ge=1)
    queued: int | None = Field(default=None, ge=0)
    stored_bytes: Size | None = None


class QueueSettings(_Section):
    # redis://host:6379/0 for workers on other hosts; None: in-process. Also
    # rediss://host:6380/0 (TLS) and redis+sentinel://h1:26379,h2:26379/<master>/0.
    url: str | None = None
    # A file holding the Redis password (else $PIPEWELL_REDIS_PASSWORD, else the URL's):
    # kept out of ps and of this file.
    password_file: Path | None = None
    # rediss: the CA that signed Redis's certificate (default the system's CAs), and
    # this side's certificate and key where Redis asks for one.
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Seconds a worker may be silent before its tasks are run again by another.
    reclaim_after: float = Field(default=30.0, gt=0)
    # The base URL workers reach this service at (presigned URLs of the local
    # store); default the loopback address, right for a worker on this host only.
    worker_url: str | None = None

    @field_validator("url")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        if url is not None and urlsplit(url).scheme not in REDIS_SCHEMES:
            shown = safe_url(url)
            raise ValueError(f"{shown!r} is not a Redis URL; write redis://host:6379/0")
        return url

    def redis(self) -> RedisAccess:
        """How to reach the Redis of ``url`` (which must be set)."""
        assert self.url is not None
        return RedisAccess(
            self.url, self.password_file, self.tls_ca_file, self.tls_cert_file, self.tls_key_file
        )


class Settings(_Section):
    host: str = "127.0.0.1"
    port: int = 1234
    public_url: str | None = None
    data_dir: Path = Path(".pipewell")
    auth: Literal["none", "required"] = "none"
    # Origins (scheme://host[:port]) of web apps allowed to call the API from a browser.
    allowed_origins: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    # Nodes one flow may have; a larger one is refused (400 FLOW_003) before any work.
    max_flow_nodes: int = Field(default=10_000, ge=1)
    # Seconds a connection may take to send a request's headers, or stay idle
    # between requests, before it is closed; a body that pauses this long, 408.
    idle_timeout: float = Field(default=15, gt=0, le=3600)
    # Connections held at once; auto: the process's file limit less 256 (or a quarter).
    max_connections: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    log_level: str = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    storage: StorageSettings = Field(default_factory=StorageSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    invocations: InvocationSettings = Field(default_factory=InvocationSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    collections: CollectionSettings = Field(default_factory=CollectionSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    quotas: QuotaSettings = Field(default_factory=QuotaSettings)
    # Per-tenant overrides, by tenant name.
    tenants: dict[str, TenantSettings] = Field(default_factory=dict)

    def running_limit(self, tenant: str) -> int | None:
        """Most runs ``tenant`` may have started and not ended."""
        own = self.tenants.get(tenant)
        if own is not None and own.running is not None:
            return own.running
        return self.quotas.running

    def stored_limit(self, tenant: str) -> int | None:
        """Most bytes ``tenant`` may store in the service's stores."""
        own = self.tenants.get(tenant)
        if own is not None and own.stored_bytes is not None:
            return own.stored_bytes
        return self.quotas.stored_bytes

    def queued_limit(self, tenant: str) -> int | None:
        """Most runs ``tenant`` may have accepted and not started, beyond those running."""
        own = self.tenants.get(tenant)
        if own is not None and own.queued is not None:
            return own.queued
        return self.quotas.queued

    def run_lifetime(self, tenant: str) -> float:
        """How long an ended run of ``tenant``'s is kept when its flow asks for nothing."""
        own = self.tenants.get(tenant)
        if own is not None and own.retention is not None:
            return own.retention
        return self.retention.runs

    @model_validator(mode="after")
    def _known_tiers(self) -> Settings:
        if self.worker.tiers != "auto":
            unknown = [t for t in self.worker.tiers if t not in TIERS]
            if unknown:
                raise ValueError(f"worker.tiers: unknown tier(s) {unknown}")
            if self.worker.enabled:
                self.worker.check_holds(self.worker.tiers)
        return self

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        return _origins_only(origins, "an origin", "https://app.example.com")

    @property
    def base_url(self) -> str:
        """Where clients reach this service (used in presigned URLs of the local store)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def internal_url(self) -> str:
        """Where workers reach the service: queue.worker_url, else loopback (its own worker)."""
        if self.queue.worker_url:
            return self.queue.worker_url.rstrip("/")
        return f"http://127.0.0.1:{self.port}"

    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def _positive_size(value: str | int) -> int:
    try:
        size = parse_size(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a size; write bytes, or 512m, 50g") from None
    if size <= 0:
        raise ValueError("must be positive")
    return size


def parse_size(value: str | int) -> int:
    """``512m``, ``2g``, ``2GiB``, ``1048576`` → bytes."""
    if isinstance(value, int):
        return value
    text = value.strip().lower().removesuffix("ib").removesuffix("b")
    units = {"k": 1024, "m": 1024**2, "g": GIB, "t": 1024 * GIB}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def _total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 4 * GIB


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Settings from a YAML file (if given) with CLI overrides on top (None = not given)."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must be a mapping of keys")
        data.update(loaded)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}  # a flag wins over its key in the file
        elif value is not None:
            data[key] = value
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from exc


__all__ = [
    "ExecutorSettings",
    "QueueSettings",
    "QuotaSettings",
    "RetentionSettings",
    "RetrySettings",
    "Settings",
    "StorageSettings",
    "StoreSettings",
    "TenantSettings",
    "WorkerSettings",
    "load_settings",
    "parse_size",
]
