"""A new run from an ended one: what succeeded is taken over, the rest runs.

The retry is a run of the same submission, planned anew (its own ID and keys). Its
inputs that arrived in the old run are copied to its keys inside their store (a
hard link on the local store: no byte is read); inputs that never came get new
WaitingURLs. Nodes that succeeded are COMPLETE from the start, their outputs
copied the same way and marked ``Cached`` from the old run, whatever their
NodeDef's ``Cache`` says: a retry keeps what is done. Failed, stopped and never-run
nodes run, and so do the nodes named to recompute and every node after them (which
look nothing up in the cache either). The two runs name each other: ``RetryOf``
and ``RetriedBy``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import structlog

from orchestrator.collections.bundles import item_key
from orchestrator.errors import FlowInvalid, RunNotEnded, RunNotFound
from orchestrator.models import CacheHit, CollectionItem, FlowRun, NodeStatus
from orchestrator.runtime import ReusedOutputs, RunState
from orchestrator.scheduler import Scheduler
from orchestrator.service.runs import Runs
from orchestrator.service.submissions import Submissions
from orchestrator.state import StateStore
from orchestrator.validation import ValidationEntry
from storage import ObjectNotFound, Store

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class _Copy:
    """One object to copy from the old run's key to the new run's, in one store, for
    its owner: the input edge, or the node whose output it is."""

    owner: str
    store: str
    source: str
    target: str


class Retries:
    def __init__(
        self, scheduler: Scheduler, state: StateStore, submissions: Submissions, runs: Runs
    ) -> None:
        self.scheduler = scheduler
        self.state = state
        self.submissions = submissions
        self.runs = runs

    async def retry(self, run_id: str, tenant: str, recompute: Iterable[str] = ()) -> FlowRun:
        """A new run of ``run_id`` (ended, the tenant's) that takes over what succeeded.

        ``recompute``: nodes to run again although they succeeded, with every node
        after them. RunNotEnded while it is waiting or running; FlowInvalid (NODE_013)
        for a node it does not have.
        """
        old = await self._ended_run(run_id, tenant)
        recompute = list(dict.fromkeys(recompute))
        unknown = [n for n in recompute if n not in old.plan.order]
        if unknown:
            raise FlowInvalid(
                [
                    ValidationEntry(
                        code="NODE_013",
                        message=f"Recompute names node {node_id!r}, which run {run_id} does "
                        f"not have; its nodes are {', '.join(map(repr, old.plan.order))}",
                        field="Recompute",
                    ).model_dump()
                    for node_id in unknown
                ]
            )
        again = _with_descendants(old, recompute)
        # A new run of the tenant's: held to its quota like any other.
        async with self.scheduler.admission(old.tenant):
            return await self._start(old, again)

    async def _start(self, old: RunState, again: set[str]) -> FlowRun:
        """The retry of ``old``, running ``again`` anew and taking over the rest."""
        submission = old.plan.submission.model_copy(update={"recompute": sorted(again)})
        run, static = await self.submissions.prepare(submission, old.tenant)
        run.run.retry_of = old.id
        taken = [
            n
            for n in old.plan.order
            if n not in again and old.state(n).status == NodeStatus.COMPLETE
        ]
        copies, members, reused = _what_to_copy(old, run, taken)
        inputs = [e for e in run.upload_edges() if e in old.run.artifacts]
        for edge in inputs:
            if run.is_collection(edge):
                members[edge] = _moved_members(old, run, edge, f"edge:{edge}", copies)
            else:
                copies.append(_copy_of(old, run, edge, f"edge:{edge}"))
        # An object gone from its store since (deleted, expired): its input is asked
        # for again and the nodes that read it run; its node runs again; and so does
        # every node after those.
        gone = await self._copy(run, copies)
        lost = [e for e in inputs if f"edge:{e}" in gone]
        inputs = [e for e in inputs if e not in lost]
        redo = [n for n in reused if f"node:{n}" in gone]
        redo += [n.id for n in run.flow.nodes if any(b.edge in lost for b in n.inputs)]
        for node_id in _with_descendants(old, redo):
            reused.pop(node_id, None)
        arrived = {e: old.run.artifacts[e].digest for e in inputs if not run.is_collection(e)}
        collections = {e: members[e] for e in inputs if run.is_collection(e)}
        for node_id, outputs in reused.items():
            outputs.collections.update(
                {o.edge: members[o.edge] for o in run.node(node_id).outputs if o.edge in members}
            )
        missing = [e for e in run.upload_edges() if e not in inputs]
        waiting = await self.submissions.waiting_urls(run, missing)
        accepted = await self.scheduler.accept(
            run, waiting, arrived=arrived, static=static, members=collections, reused=reused
        )
        await self.scheduler.retried(old.id, run.id)
        self.runs.changed(old.id)
        log.info(
            "run_retried",
            run_id=old.id,
            retry=run.id,
            taken=len(reused),
            gone=len(gone),
            inputs=len(inputs),
            uploads=len(missing),
        )
        return accepted

    async def _ended_run(self, run_id: str, tenant: str) -> RunState:
        live = self.scheduler.live(run_id)
        if live is not None and not live.status.finished:
            if live.tenant != tenant:
                raise RunNotFound(run_id)
            raise RunNotEnded(run_id, live.status.value)
        snapshot = await self.state.load(run_id, items=True) if run_id.isalnum() else None
        if snapshot is None:
            raise self.runs.missing(run_id)
        if snapshot["plan"].get("tenant") != tenant:
            raise RunNotFound(run_id)
        # A 10,000-node run takes a second to rebuild: on the reads pool, not the loop.
        old = await self.runs.io_call(RunState.restore, snapshot, self.submissions.catalog)
        if not old.status.finished:
            raise RunNotEnded(run_id, old.status.value)
        return old

    async def _copy(self, run: RunState, copies: list[_Copy]) -> set[str]:
        """Make the copies; the owners (an input edge, a node) of those whose source
        is gone from its store."""
        stores: dict[str, Store] = {}
        for copy in copies:
            if copy.store not in stores:
                stores[copy.store] = self.submissions.stores.get(copy.store, run.flow)

        def copy_all() -> set[str]:
            gone: set[str] = set()
            for copy in copies:
                if copy.owner in gone:
                    continue
                try:
                    stores[copy.store].copy(copy.source, copy.target)
                except ObjectNotFound:
                    gone.add(copy.owner)
            return gone

        return await self.submissions.calls.call_for(run.flow, copy_all)


def _with_descendants(run: RunState, nodes: Iterable[str]) -> set[str]:
    """``nodes`` and every node that reads, directly or not, what they make."""
    readers: dict[str, list[str]] = {}
    for node in run.flow.nodes:
        for binding in node.inputs:
            readers.setdefault(binding.edge, []).append(node.id)
    found: set[str] = set()
    todo = list(nodes)
    while todo:
        node_id = todo.pop()
        if node_id in found:
            continue
        found.add(node_id)
        for binding in run.node(node_id).outputs:
            todo.extend(readers.get(binding.edge, ()))
    return found


def _copy_of(old: RunState, new: RunState, edge: str, owner: str) -> _Copy:
    source = old.run.artifacts[edge]
    return _Copy(owner, source.store_name, source.object_name, new.artifact_for(edge).object_name)


def _moved_members(
    old: RunState, new: RunState, edge: str, owner: str, copies: list[_Copy]
) -> list[CollectionItem]:
    """A collection's items at the new run's keys (their copies added to ``copies``)."""
    old_key = old.artifact_for(edge).object_name
    new_artifact = new.artifact_for(edge)
    moved = []
    for member in old.collections[edge].items.values():
        target = item_key(new_artifact.object_name, member.object_name[len(old_key) + 1 :])
        copies.append(_Copy(owner, new_artifact.store_name, member.object_name, target))
        moved.append(member.model_copy(update={"object_name": target}))
    return moved


def _what_to_copy(
    old: RunState, new: RunState, taken: list[str]
) -> tuple[list[_Copy], dict[str, list[CollectionItem]], dict[str, ReusedOutputs]]:
    """The outputs of the nodes ``taken`` over: the copies to make, the items of their
    collection outputs (by edge), and each node's outputs as the new run takes them."""
    copies: list[_Copy] = []
    members: dict[str, list[CollectionItem]] = {}
    reused: dict[str, ReusedOutputs] = {}
    for node_id in taken:
        digests: dict[str, str | None] = {}
        for binding in new.node(node_id).outputs:
            if new.is_collection(binding.edge):
                owner = f"node:{node_id}"
                members[binding.edge] = _moved_members(old, new, binding.edge, owner, copies)
            else:
                copies.append(_copy_of(old, new, binding.edge, f"node:{node_id}"))
                digests[binding.edge] = old.run.artifacts[binding.edge].digest
        reused[node_id] = ReusedOutputs(hit=CacheHit(run=old.id, node=node_id), digests=digests)
    return copies, members, reused


__all__ = ["Retries"]
