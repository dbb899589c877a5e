"""The stores a run can name: the service's ``default`` store and a flow's own ``Stores``.

Stores are opened once and kept (their clients hold connections); a flow's
store is keyed by its name and parameters, so two flows declaring the same
store share one client.
"""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.config import Settings
from orchestrator.models import Flow
from storage import LocalStore, Store, StoreError, open_store

DEFAULT_STORE = "default"


class StoreRegistry:
    def __init__(self, settings: Settings, secret: bytes) -> None:
        self.settings = settings
        self.secret = secret
        self._opened: dict[str, Store] = {}
        self.default = self._open(
            DEFAULT_STORE, settings.storage.default.type, settings.storage.default.params
        )

    def _open(self, name: str, type_: str, params: dict) -> Store:  # type: ignore[type-arg]
        cache_key = json.dumps([name, type_, params], sort_keys=True, default=str)
        store = self._opened.get(cache_key)
        if store is None:
            store = open_store(
                name,
                type_,
                params,
                data_dir=Path(self.settings.data_dir),
                public_base_url=self.settings.base_url,
                internal_base_url=self.settings.internal_url,
                secret=self.secret,
            )
            self._opened[cache_key] = store
        return store

    def prepare(self, flow: Flow) -> None:
        """Open every store the flow declares. Blocks (clients, buckets): call off the loop."""
        for declared in flow.stores:
            self._open(declared.name, declared.type, declared.params)

    def get(self, name: str, flow: Flow | None = None) -> Store:
        """The store called ``name`` for a flow: its own declaration first, then ``default``.

        Does not block once ``prepare(flow)`` has run.
        """
        for declared in flow.stores if flow else []:
            if declared.name == name:
                return self._open(declared.name, declared.type, declared.params)
        if name == DEFAULT_STORE:
            return self.default
        raise StoreError(f"store {name!r} is not declared by the flow")

    def local(self, name: str) -> LocalStore | None:
        """The local store serving ``/objects/{name}/…``, if any is open."""
        for store in self._opened.values():
            if isinstance(store, LocalStore) and store.name == name:
                return store
        return None

    @staticmethod
    def notifies(store: Store) -> bool:
        """Whether uploads to the store reach us as events (else they are polled)."""
        return isinstance(store, LocalStore)

    def close(self) -> None:
        for store in self._opened.values():
            store.close()
        self._opened.clear()


__all__ = ["DEFAULT_STORE", "StoreRegistry"]
