"""The stores a run can name: the operator's, by name, and a flow's own ``Stores``.

The operator's stores (``storage.default`` and ``storage.stores``) are opened
once at start. A flow names them in its DataWells without declaring them; its
runs' objects there live under its tenant's namespace (``runtime.plan_run``).

A flow may declare a store of its own only where the operator allows it
(validation checks ``storage.flow_store_endpoints``): an s3 store with its own
credentials, which never falls back on the service's. Those are opened on
demand and kept in a bounded LRU, keyed by everything that makes them differ,
so submissions that vary a parameter cannot grow the service without end.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from orchestrator.config import RetentionSettings, Settings, StorageSettings
from orchestrator.models import Flow, StoreInput
from orchestrator.validation import StorePolicy
from storage import LocalStore, Store, StoreError, StoreUnavailable, open_store

T = TypeVar("T")

DEFAULT_STORE = "default"
#: Seconds past a WaitingURL's TTL before its run gives up on the upload: S3 rounds a
#: URL's lifetime up to a whole second, and a PUT let in at the last moment must land.
UPLOAD_GRACE = 1.0


class StoreRegistry:
    def __init__(self, settings: Settings, secret: bytes) -> None:
        self.settings = settings
        self.secret = secret
        self.operator: dict[str, Store] = {
            name: self._open_store(name, declared.type, declared.params)
            for name, declared in settings.storage.operator_stores().items()
        }
        self.default = self.operator[DEFAULT_STORE]
        self._flow_stores: OrderedDict[str, Store] = OrderedDict()
        # prepare() runs in the store thread pool, get() on the event loop.
        self._lock = threading.Lock()

    def _open_store(self, name: str, type_: str, params: dict) -> Store:  # type: ignore[type-arg]
        return open_store(
            name,
            type_,
            params,
            data_dir=Path(self.settings.data_dir),
            public_base_url=self.settings.base_url,
            internal_base_url=self.settings.internal_url,
            secret=self.secret,
            hash_objects=self.settings.cache.enabled,
        )

    def _flow_store(self, declared: StoreInput) -> Store:
        # The digest stands for the parameters, credentials included, without holding them.
        fingerprint = hashlib.sha256(
            json.dumps([declared.name, declared.type, declared.params], sort_keys=True).encode()
        ).hexdigest()
        with self._lock:
            store = self._flow_stores.get(fingerprint)
            if store is not None:
                self._flow_stores.move_to_end(fingerprint)
                return store
        if declared.type != "s3":
            raise StoreError(f"store {declared.name!r}: a flow may only declare s3 stores")
        # A flow's store carries its own credentials; validation has checked they are there.
        store = self._open_store(declared.name, declared.type, dict(declared.params))
        with self._lock:
            self._flow_stores[fingerprint] = store
            while len(self._flow_stores) > self.settings.storage.flow_stores_open:
                # Dropped, not closed: an attempt may still hold it; its clients go with it.
                self._flow_stores.popitem(last=False)
        return store

    def prepare(self, flow: Flow) -> None:
        """Open every store the flow declares. Blocks (clients, buckets): call off the loop."""
        for declared in flow.stores:
            self._flow_store(declared)

    def get(self, name: str, flow: Flow | None = None) -> Store:
        """The store called ``name`` for a flow: its own declaration first, then the operator's.

        Does not block once ``prepare(flow)`` has run (unless the LRU dropped it meanwhile).
        """
        for declared in flow.stores if flow else []:
            if declared.name == name:
                return self._flow_store(declared)
        store = self.operator.get(name)
        if store is None:
            raise StoreError(f"store {name!r} is neither the flow's nor one of the service's")
        return store

    def is_flow_store(self, store: Store) -> bool:
        """Whether ``store`` is one a flow declared (not one of the operator's)."""
        return all(store is not mine for mine in self.operator.values())

    def local(self, name: str) -> LocalStore | None:
        """The local store serving ``/objects/{name}/…``, if the operator has one by that name."""
        store = self.operator.get(name)
        return store if isinstance(store, LocalStore) else None

    @staticmethod
    def notifies(store: Store) -> bool:
        """Whether uploads to the store reach us as events (else they are polled)."""
        return isinstance(store, LocalStore)

    def close(self) -> None:
        for store in [*self.operator.values(), *self._flow_stores.values()]:
            store.close()
        self._flow_stores.clear()


def store_policy(storage: StorageSettings, retention: RetentionSettings) -> StorePolicy:
    """What validation checks a flow's stores and lifetimes against, from the operator's
    settings."""
    return StorePolicy(
        operator_stores=frozenset(storage.operator_stores()),
        flow_store_endpoints=frozenset(storage.flow_store_endpoints),
        lifetimes=retention.bounds(),
    )


class StoreCalls:
    """Calls to stores, which block (boto3, the filesystem): on bounded threads.

    A flow's own stores (on endpoints the operator allowed, run by whoever sent the
    flow) get threads of their own: a dead one holds those, never the threads every
    tenant's runs need for the service's stores. Calls are counted: a store that
    never answers holds its thread for ever, and the process must not wait for it
    to exit (``cli.serve``).
    """

    def __init__(
        self, stores: StoreRegistry, *, threads: int = 8, flow_threads: int = 4, name: str
    ) -> None:
        self.stores = stores
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=name)
        self._flow_pool = ThreadPoolExecutor(flow_threads, thread_name_prefix=f"{name}-flow")
        self._running = 0
        self._counting = threading.Lock()
        self._waits: set[asyncio.Future[Any]] = set()
        self._stopping = False

    async def call(self, fn: Callable[..., T], *args: Any, store: Store | None = None) -> T:
        """``fn(*args)`` on a store thread: the flow stores' own when ``store`` is one."""
        flows = store is not None and self.stores.is_flow_store(store)
        return await self._on_thread(self._flow_pool if flows else self._pool, fn, *args)

    async def call_for(self, flow: Flow, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` touching any of a flow's stores: on the flow stores' threads
        when the flow declares stores of its own."""
        return await self._on_thread(self._flow_pool if flow.stores else self._pool, fn, *args)

    async def prepare(self, flow: Flow) -> None:
        """Open the stores a flow declares (their clients, their buckets checked)."""
        if flow.stores:
            await self._on_thread(self._flow_pool, self.stores.prepare, flow)

    async def _on_thread(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        def counted() -> T:
            with self._counting:
                self._running += 1
            try:
                return fn(*args)
            finally:
                with self._counting:
                    self._running -= 1

        waiting = asyncio.get_running_loop().run_in_executor(pool, counted)
        self._waits.add(waiting)
        try:
            return await waiting
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._stopping and not (task and task.cancelling()):
                raise StoreUnavailable(
                    "the service is shutting down while this waited on a store; send it "
                    "again once the service is back"
                ) from None
            raise
        finally:
            self._waits.discard(waiting)

    @property
    def stopping(self) -> bool:
        """Whether the service is shutting down (calls still waiting were given up)."""
        return self._stopping

    @property
    def running(self) -> int:
        """Calls still running on a thread (after ``close``: ones that never return)."""
        with self._counting:
            return self._running

    def stop_waiting(self) -> None:
        """The service is stopping: requests waiting on a store call are answered now
        (STORE_UNAVAILABLE), not when a store that never answers gives up."""
        self._stopping = True
        for waiting in list(self._waits):
            waiting.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._flow_pool.shutdown(wait=False, cancel_futures=True)


__all__ = ["DEFAULT_STORE", "UPLOAD_GRACE", "StoreCalls", "StoreRegistry", "store_policy"]
