"""Saved flows: versions kept with their NodeDefs written in, what a caller needs to
invoke one, and its config profiles (flag values checked against the NodeDefs)."""

from __future__ import annotations

from typing import Any

from orchestrator.database import Database
from orchestrator.errors import ConfigNotFound, FlowNotFound, InvalidInvocation
from orchestrator.models import FlowSubmission, NodeDef, NodeFlag
from orchestrator.registry import FlagProfile, FlowRegistry, SavedFlow
from orchestrator.runtime import entry_edges, terminal_edges
from orchestrator.service.inputs import file_types, takes_json
from orchestrator.service.submissions import Submissions
from orchestrator.validation import resolve_defs
from orchestrator.validation.flags import value_problem


class SavedFlows:
    def __init__(self, db: Database, submissions: Submissions, catalog: dict[str, NodeDef]) -> None:
        self.registry = FlowRegistry(db.connection, db.path)
        self._db = db.run
        self.submissions = submissions
        self.catalog = catalog

    async def save(self, tenant: str, submission: FlowSubmission) -> tuple[SavedFlow, bool]:
        (await self.submissions.validate(submission)).raise_if_invalid()
        return await self._db(self.registry.save, tenant, self._compile(submission))

    def _compile(self, submission: FlowSubmission) -> FlowSubmission:
        """The submission with each NodeDef it uses written in, once: a saved flow runs
        as saved, whatever the catalog becomes."""
        defs = resolve_defs(submission, self.catalog)
        used = {d.uses: d for d in defs.values()}
        return FlowSubmission(flow=submission.flow, node_defs=list(used.values()))

    async def find(self, tenant: str, ref: str, version: int | None = None) -> SavedFlow:
        flow = await self._db(self.registry.find, tenant, ref, version)
        if flow is None:
            raise FlowNotFound(ref if version is None else f"{ref} version {version}")
        return flow

    async def by_seq(self, tenant: str, seq: int) -> SavedFlow:
        """The flow of an integer id (Scade's), deleted since or not."""
        flow = await self._db(self.registry.by_seq, tenant, seq)
        if flow is None:
            raise FlowNotFound(str(seq))
        return flow

    async def list(self, tenant: str, name: str | None = None) -> list[SavedFlow]:
        return await self._db(self.registry.list, tenant, name)

    async def delete(self, tenant: str, graph_id: str) -> None:
        if not await self._db(self.registry.delete, tenant, graph_id):
            raise FlowNotFound(graph_id)

    def describe(self, flow: SavedFlow) -> dict[str, Any]:
        """What a caller needs to invoke it: entry edges (and which take files), results,
        nodes and their flags."""
        submission = flow.submission
        defs = resolve_defs(submission, self.catalog)
        entry = entry_edges(submission.flow)
        readers = edge_readers(submission, defs)
        return {
            **flow.summary(),
            "entry_edges": entry,
            "entry_files": {
                edge: file_types(readers.get(edge, []))
                for edge in entry
                if not takes_json(readers.get(edge, []))
            },
            "terminal_edges": terminal_edges(submission.flow),
            "nodes": [
                {"id": n.id, "uses": n.uses, "flags": [f.name for f in defs[n.id].flags]}
                for n in submission.flow.nodes
            ],
        }

    # ------------------------------------------------------------ config profiles

    async def put_config(
        self, flow: SavedFlow, config_id: str, flags: Any
    ) -> tuple[FlagProfile, bool]:
        if not config_id.strip() or len(config_id) > 100:
            raise InvalidInvocation("CONFIG_INVALID", "a config_id is 1 to 100 characters")
        profile = self.check_flags(flow.submission, flags, what="flags")
        return profile, await self._db(self.registry.put_config, flow.graph_id, config_id, profile)

    async def configs(self, flow: SavedFlow) -> dict[str, FlagProfile]:
        return await self._db(self.registry.configs, flow.graph_id)

    async def config(self, flow: SavedFlow, config_id: str) -> FlagProfile:
        profile = await self._db(self.registry.config, flow.graph_id, config_id)
        if profile is None:
            raise ConfigNotFound(flow.graph_id, config_id)
        return profile

    async def delete_config(self, flow: SavedFlow, config_id: str) -> None:
        if not await self._db(self.registry.delete_config, flow.graph_id, config_id):
            await self.config(flow, config_id)  # raises CONFIG_NOT_FOUND

    def check_flags(
        self,
        submission: FlowSubmission,
        flags: Any,
        *,
        what: str,
        defs: dict[str, NodeDef] | None = None,
    ) -> FlagProfile:
        """``{node_id: {flag: value}}`` checked against the flow's nodes and their NodeDefs
        (``defs``, node ID → NodeDef, when the caller has them resolved already)."""
        if flags is None:
            return {}
        if not isinstance(flags, dict) or not all(isinstance(v, dict) for v in flags.values()):
            raise InvalidInvocation(
                "FLAGS_INVALID", f"{what} must be an object {{node_id: {{flag: value}}}}"
            )
        defs = defs if defs is not None else resolve_defs(submission, self.catalog)
        profile: FlagProfile = {}
        for node_id, values in flags.items():
            if node_id not in defs:
                raise InvalidInvocation(
                    "FLAGS_INVALID",
                    f"{what}: the flow has no node {node_id!r}; its nodes are "
                    + ", ".join(map(repr, defs)),
                )
            declared = {f.name: f for f in defs[node_id].flags}
            for name, value in values.items():
                if name not in declared:
                    raise InvalidInvocation(
                        "FLAGS_INVALID",
                        f"{what}: node {node_id!r} has no flag {name!r}; its flags are "
                        + (", ".join(map(repr, declared)) or "none"),
                    )
                if value is None or isinstance(value, dict | list):
                    raise InvalidInvocation(
                        "FLAGS_INVALID",
                        f"{what}: {node_id}.{name} must be a string, number or boolean",
                    )
                text = NodeFlag(name=name, value=value).value
                problem = value_problem(declared[name], text)
                if problem:
                    raise InvalidInvocation(
                        "FLAGS_INVALID", f"{what}: {node_id}.{name} is {text!r}, which {problem}"
                    )
                profile.setdefault(node_id, {})[name] = text
        return profile


def node_outputs(flow: SavedFlow, node_id: str | None, *, field: str) -> list[str] | None:
    """The edges a node of the flow writes (the answer of a dialect that names a node:
    Langflow's output_component, Scade's result node); None for no node. NODE_UNKNOWN,
    naming ``field``, when the flow has no such node."""
    if node_id is None:
        return None
    for node in flow.submission.flow.nodes:
        if node.id == node_id:
            return [o.edge for o in node.outputs]
    nodes = ", ".join(repr(n.id) for n in flow.submission.flow.nodes)
    raise InvalidInvocation(
        "NODE_UNKNOWN", f"{field} {node_id!r} is not a node of the flow; its nodes are {nodes}"
    )


def edge_readers(
    submission: FlowSubmission, defs: dict[str, NodeDef]
) -> dict[str, list[list[str] | None]]:
    """Each edge's readers' ``Type`` lists (None: the input takes anything). An upload
    collection is read as the archive that carries its items."""
    readers: dict[str, list[list[str] | None]] = {}
    for node in submission.flow.nodes:
        declared = {d.name: d.type for d in defs[node.id].inputs}
        for binding in node.inputs:
            readers.setdefault(binding.edge, []).append(declared.get(binding.name))
    for edge in submission.flow.collections:
        readers[edge] = [list(ARCHIVE_TYPES)]
    return readers


def with_flags(submission: FlowSubmission, profile: FlagProfile) -> FlowSubmission:
    """The submission with ``profile``'s flag values set on its nodes."""
    if not profile:
        return submission
    changed = submission.model_copy(deep=True)
    for node in changed.flow.nodes:
        for name, value in profile.get(node.id, {}).items():
            node.flags = [f for f in node.flags if f.name != name]
            node.flags.append(NodeFlag(name=name, value=value))
    return changed


#: What an upload collection's archive may be: a zip, a tar, or a gzipped tar.
ARCHIVE_TYPES = ("application/zip", "application/x-tar", "application/gzip")

__all__ = ["ARCHIVE_TYPES", "SavedFlows", "edge_readers", "node_outputs", "with_flags"]
