"""What each tenant stores: measured in the service's stores every ``quotas.measure_every``
seconds (a listing of every object, off the event loop), shown by ``/api/v1/workers`` and
``/metrics``, and held against ``quotas.stored_bytes``: a tenant over it gets no new run
(429 QUOTA_EXCEEDED) until retention or deletions bring it under.

Measured, not counted as objects come and go: a count kept by every path that writes
(uploads, outputs, items, cache copies, retries) would drift on the first one missed;
a measure is right at each pass, and a tenant over its quota by what it wrote since the
last one is held to it at the next.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from orchestrator.config import Settings
from orchestrator.errors import TooBusy
from orchestrator.stores import StoreCalls, StoreRegistry
from orchestrator.validation.object_keys import TENANTS_ROOT, tenant_prefix

#: Seconds a refused client is told to wait: about until the next measure could free it.
RETRY_AFTER_STORED = 60


class StorageUsage:
    def __init__(self, settings: Settings, stores: StoreRegistry, calls: StoreCalls) -> None:
        self.settings = settings
        self.stores = stores
        self.calls = calls
        #: Tenant namespace (``tenants/<segment>``'s segment) → bytes, at ``measured_at``.
        self._bytes: dict[str, int] = {}
        self.measured_at: float | None = None
        self.on_measured: list[Callable[[dict[str, int]], None]] = []

    async def measure(self) -> dict[str, int]:
        """Bytes per tenant namespace in every store of the operator's, now."""
        found: dict[str, int] = {}
        for store in self.stores.operator.values():
            sizes = await self.calls.call(store.sizes, TENANTS_ROOT, store=store)
            for segment, size in sizes.items():
                found[segment] = found.get(segment, 0) + size
        self._bytes, self.measured_at = found, time.time()
        for listener in self.on_measured:
            listener(found)
        return found

    def tenants(self) -> list[str]:
        """The tenants that stored something at the last measure (by name: a tenant
        that is not a name has a digest for a namespace, and is not listed)."""
        return [segment for segment in self._bytes if not segment.startswith("~")]

    def of(self, tenant: str) -> int | None:
        """What ``tenant`` stored at the last measure (None before the first)."""
        if self.measured_at is None:
            return None
        return self._bytes.get(tenant_prefix(tenant).split("/", 1)[1], 0)

    def check(self, tenant: str) -> None:
        """TooBusy when the tenant stored more than its quota at the last measure."""
        limit = self.settings.stored_limit(tenant)
        stored = self.of(tenant)
        if limit is None or stored is None or stored < limit:
            return
        raise TooBusy(
            "QUOTA_EXCEEDED",
            f"your tenant stores {_size(stored)}, its most is {_size(limit)} "
            "(quotas.stored_bytes): no new run until its older runs expire or are deleted; "
            "nothing of this one was kept",
            RETRY_AFTER_STORED,
        )


def _size(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


__all__ = ["StorageUsage"]
