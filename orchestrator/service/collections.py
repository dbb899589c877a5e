"""Collections as callers see them: a mapped node's items paged by status, a
collection's items paged with their download URLs, and a collection an upload fills
item by item (a PutURL per item name, then closed) for clients that do not zip.

A run the scheduler holds is read live; one it no longer holds, from the rows the
state store wrote (items are never part of the run's status: 10,000 would not be).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from orchestrator.collections.archives import ArchiveRefused, check_names
from orchestrator.collections.bundles import item_key
from orchestrator.config import Settings
from orchestrator.errors import (
    CollectionClosed,
    CollectionNotFound,
    NodeNotMapped,
    RequestRefused,
    RunNotFound,
)
from orchestrator.mime import SNIFF_BYTES, sniff
from orchestrator.models import CollectionItem, ItemProgress, ItemState, NodeStatus, utcnow
from orchestrator.runtime import RunPlan
from orchestrator.scheduler import Scheduler
from orchestrator.service.runs import RunRecord, Runs
from orchestrator.state import StateStore
from storage import Store

#: Items one page holds at most.
MAX_PAGE = 1000


@dataclass(frozen=True)
class ItemPage:
    node: str
    progress: ItemProgress | None
    items: list[ItemState]
    next_after: str | None


@dataclass(frozen=True)
class MemberPage:
    edge: str
    complete: bool
    count: int
    items: list[dict[str, Any]]  # CollectionItem fields and a download URL
    next_after: str | None


class Collections:
    def __init__(
        self, settings: Settings, scheduler: Scheduler, state: StateStore, runs: Runs
    ) -> None:
        self.settings = settings
        self.scheduler = scheduler
        self.state = state
        self.runs = runs

    # ------------------------------------------------------------ reading

    async def items(
        self,
        run_id: str,
        tenant: str | None,
        node_id: str,
        status: NodeStatus | None,
        after: str | None,
        limit: int,
    ) -> ItemPage:
        """A page of a mapped node's items (of ``status``, if given) after ``after``."""
        record = await self.runs.resolve(run_id, tenant)
        state = record.run.node_state.get(node_id)
        mapped = await self._mapped_nodes(record)
        if state is None or node_id not in mapped:
            raise NodeNotMapped(run_id, node_id, mapped)
        live = self.scheduler.live(run_id)
        if live is not None:
            page, next_after = live.item_page(node_id, status, after, limit)
        else:
            rows = await self.state.item_page(
                run_id, node_id, status.value if status else None, after, limit + 1
            )
            page = [ItemState.model_validate({"Name": name, **row}) for name, row in rows]
            next_after = page[limit - 1].name if len(page) > limit else None
            page = page[:limit]
        return ItemPage(node_id, state.items, page, next_after)

    async def members(
        self, run_id: str, tenant: str | None, edge: str, after: str | None, limit: int
    ) -> MemberPage:
        """A page of a collection's items, each with a URL to download it."""
        record = await self.runs.resolve(run_id, tenant)
        plan = await self._plan(record)
        if not plan.edges.get(edge, {}).get("collection"):
            raise CollectionNotFound(run_id, edge, "collection", _collections(plan))
        live = self.scheduler.live(run_id)
        artifact = record.run.artifacts.get(edge)
        chosen = await self.runs.collection_items(record, edge, after, limit + 1)
        if live is not None:
            collection = live.collections[edge]
            complete, count = collection.complete, len(collection.items)
        else:
            complete = artifact is not None
            count = artifact.items or 0 if artifact is not None else len(chosen)
        next_after = chosen[limit - 1].name if len(chosen) > limit else None
        chosen = chosen[:limit]
        store = await self.runs.store_of(record, plan.edge(edge).store)
        ttl = self.settings.storage.url_ttl
        urls = await self.runs.io_call(lambda: [store.get_url(m.object_name, ttl) for m in chosen])
        items = [
            {**m.model_dump(mode="json"), "URL": url} for m, url in zip(chosen, urls, strict=True)
        ]
        return MemberPage(edge, complete, count, items, next_after)

    # ------------------------------------------------------------ filling by item

    async def put_urls(
        self, run_id: str, tenant: str, edge: str, names: list[str]
    ) -> tuple[dict[str, str], datetime]:
        """A PutURL per item name of an upload collection still open, and when they expire."""
        run, store, key = await self._open_collection(run_id, tenant, edge)
        most = self.settings.collections.max_items
        if len(names) > most:
            raise RequestRefused(
                "COLLECTION_TOO_LARGE",
                f"{len(names)} item names for edge {edge!r}, over collections.max_items "
                f"({most}); send the batch in several runs",
            )
        try:
            check_names(names, self.scheduler.limits())
        except ArchiveRefused as exc:
            raise RequestRefused("ITEM_NAME_INVALID", str(exc)) from None
        ttl = self.settings.storage.url_ttl
        expires = utcnow() + timedelta(seconds=ttl)

        def presign() -> dict[str, str]:
            return {n: store.put_url(item_key(key, n), ttl, create_only=True) for n in names}

        return await self.runs.io_call(presign), expires

    async def close(self, run_id: str, tenant: str, edge: str) -> int:
        """The collection is complete with the items put so far: how many it has."""
        run, store, key = await self._open_collection(run_id, tenant, edge)
        most = self.settings.collections.max_items
        found = await self.runs.io_call(partial(store.list, key, most + 1))
        limits = self.settings.collections
        too_big = [info.key[len(key) + 1 :] for info in found if info.size > limits.max_item_bytes]
        if len(found) > most or too_big or sum(i.size for i in found) > limits.max_total_bytes:
            # The same bounds as an archive's: items put one by one are no way around them.
            raise RequestRefused(
                "COLLECTION_TOO_LARGE",
                f"edge {edge!r} holds over collections.max_items ({most}) items, an item over "
                f"max_item_bytes ({limits.max_item_bytes}: {', '.join(too_big[:3]) or 'none'}) "
                f"or over max_total_bytes ({limits.max_total_bytes}) in all; send the batch "
                "in several runs",
            )
        members = await self.runs.io_call(partial(_described, store, key, found))
        await self.scheduler.collection_filled(run_id, edge, members)
        return len(members)

    async def _open_collection(self, run_id: str, tenant: str, edge: str) -> tuple[Any, Store, str]:
        record = await self.runs.resolve(run_id, tenant)
        live = self.scheduler.live(run_id)
        plan = await self._plan(record)
        planned = plan.edges.get(edge, {})
        if not planned.get("collection") or planned.get("source") != "upload":
            raise CollectionNotFound(
                run_id, edge, "collection that uploads fill", _collections(plan, uploads=True)
            )
        if live is None or live.status.finished:
            raise CollectionClosed(edge, f"its run has ended ({record.run.status.value})")
        if live.collections[edge].complete:
            raise CollectionClosed(edge, "the collection is complete already")
        store = await self.runs.store_of(record, planned["store"])
        return live, store, planned["key"]

    async def _plan(self, record: RunRecord) -> RunPlan:
        live = self.scheduler.live(record.run.id)
        if live is not None:
            return live.plan
        snapshot = await self.state.load(record.run.id)
        if snapshot is None:
            raise RunNotFound(record.run.id)
        # A 10,000-node plan takes a fifth of a second to parse: not on the loop.
        return await self.runs.io_call(RunPlan.model_validate, snapshot["plan"])

    async def _mapped_nodes(self, record: RunRecord) -> list[str]:
        return sorted((await self._plan(record)).mapped)


def _collections(plan: RunPlan, *, uploads: bool = False) -> list[str]:
    return sorted(
        name
        for name, edge in plan.edges.items()
        if edge.get("collection") and (not uploads or edge.get("source") == "upload")
    )


def _described(store: Store, key: str, found: list[Any]) -> list[CollectionItem]:
    """Each object put under the collection's key, read once for its type and hash."""
    members = []
    for info in found:
        digest = hashlib.sha256()
        head = b""
        with store.open_read(info.key) as reader:
            while chunk := reader.read(1 << 20):
                if len(head) < SNIFF_BYTES:
                    head += chunk[: SNIFF_BYTES - len(head)]
                digest.update(chunk)
        members.append(
            CollectionItem(
                name=info.key[len(key) + 1 :],
                object_name=info.key,
                size=info.size,
                content_type=sniff(head, complete=info.size < SNIFF_BYTES),
                sha256=digest.hexdigest(),
            )
        )
    return members


__all__ = ["MAX_PAGE", "Collections", "ItemPage", "MemberPage"]
