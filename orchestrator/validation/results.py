"""Validation entries and results, the codes they carry, and how names are quoted in them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict

from orchestrator.errors import FlowInvalid
from orchestrator.models import Node

CODES: dict[str, str] = {
    "FLOW_001": "the nodes form a cycle",
    "FLOW_002": "the flow has no nodes",
    "FLOW_003": "the flow has more nodes than the service takes (max_flow_nodes; ours)",
    "FLOW_004": "the flow's Lifetime is not a duration, or outside the service's bounds (ours)",
    "NODE_001": "no NodeDef for the node's Uses",
    "NODE_002": "a required input is not bound",
    "NODE_003": "a required output is not bound",
    "NODE_004": "the NodeDef's Tier is unknown",
    "NODE_005": "a required flag without Default is not given",
    "NODE_006": "a flag the NodeDef does not declare",
    "NODE_007": "two nodes share one ID",
    "NODE_008": "a node has no ID",
    "NODE_009": "unknown or missing Command, or an Exec that cannot be split (ours)",
    "NODE_010": "an input/output Name the NodeDef does not declare (ours)",
    "NODE_011": "a node binds one input, output or flag Name twice (ours)",
    "NODE_012": "a flag's value does not fit its NodeDef's Type, Values, Min or Max (ours)",
    "NODE_013": "Recompute names a node the flow does not have (ours)",
    "DEF_001": "two different NodeDefs with one Publisher/Name (ours)",
    "DEF_002": "a NodeDef's flag declaration is inconsistent: unknown Type, Min/Max or Values "
    "that do not fit it, or a Default outside them (ours)",
    "DEF_003": "a NodeDef's CacheIgnore names an input it does not declare (ours)",
    "EDGE_001": "an edge is consumed but nothing produces it",
    "EDGE_002": "an edge is produced but nothing consumes or stores it",
    "EDGE_003": "producer and consumer MIME types do not intersect",
    "EDGE_004": "an edge has two producers (Pipewell's use of the code)",
    "NAME_001": "a name (input, output, flag, node, edge, store, command) is not an identifier "
    "(ours; Pupload's EDGE_005 for edges)",
    "WELL_001": "invalid Source",
    "WELL_002": "the well's edge is not used by any node",
    "WELL_003": "two wells on one edge",
    "WELL_004": "the well names an undeclared store",
    "WELL_005": "invalid Key template",
    "WELL_006": "static well without Key",
    "WELL_007": "static well whose Key uses a variable",
    "WELL_008": "upload/webhook well whose Key uses no variable (warning for sinks)",
    "WELL_009": "two edges of a run would be stored under one key (ours)",
    "WELL_010": "a static well's object is not in its store, checked when a run starts (ours)",
    "WELL_011": "a DataWell's Lifetime is not a duration, or outside the service's bounds (ours)",
    "STORE_001": "DefaultStore or DefaultDataWell.Store names an undeclared store",
    "STORE_002": "invalid store Type",
    "STORE_003": "invalid store Params",
    "STORE_004": "a declared store is not used (warning)",
    "STORE_005": "two stores share one Name, or a flow's store takes the name of one of the "
    "service's (ours)",
    "STORE_006": "a store the flow may not declare: local, without its own credentials, on "
    "an endpoint the operator does not allow, creating its bucket, or with timeouts or tries "
    "past the service's bounds (ours)",
    "TYPE_001": "invalid MIME type in a NodeDef's Type",
    "TYPE_002": "empty Type list in a NodeDef",
    "COLL_001": "Collections lists an edge no node binds (ours)",
    "COLL_002": "Collections lists an edge a node produces as one file: its output is not "
    "declared Collection and the node is not mapped (ours)",
    "COLL_003": "an input declared Collection is bound to an edge that carries one file (ours)",
    "COLL_004": "a node binds more than one file input to collections; it maps over one (ours)",
    "COLL_005": "Map on a node that is not mapped (ours)",
    "COLL_006": "a collection filled by a static or webhook DataWell, not supported yet (ours)",
    "COLL_007": "a mapped node with an output declared Collection: a collection of "
    "collections (ours)",
}


class _WithoutNones(BaseModel):
    """Dumps leave out None fields by default: where-fields that do not apply."""

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("exclude_none", True)
        return super().model_dump(**kwargs)

    def model_dump_json(self, **kwargs: Any) -> str:
        kwargs.setdefault("exclude_none", True)
        return super().model_dump_json(**kwargs)


class ValidationEntry(_WithoutNones):
    """One problem: its code, what to fix, and what it is about."""

    model_config = ConfigDict(extra="forbid")

    code: str
    message: str
    node: str | None = None
    edge: str | None = None
    well: str | None = None
    store: str | None = None
    field: str | None = None


class ValidationResult(_WithoutNones):
    errors: list[ValidationEntry] = []
    warnings: list[ValidationEntry] = []

    @property
    def ok(self) -> bool:
        return not self.errors

    def codes(self) -> list[str]:
        """Error codes, in report order (handy for tests and logs)."""
        return [e.code for e in self.errors]

    def raise_if_invalid(self) -> None:
        """FlowInvalid with every entry, when there are errors."""
        if self.errors:
            raise FlowInvalid(
                [e.model_dump() for e in self.errors], [w.model_dump() for w in self.warnings]
            )


def node_label(node: Node, index: int, ambiguous: bool = False) -> str:
    if not node.id:
        return f"#{index} (no ID)"
    return f"{node.id!r} (#{index})" if ambiguous else repr(node.id)


def duplicated_ids(nodes: list[Node]) -> set[str]:
    counts = Counter(n.id for n in nodes if n.id)
    return {node_id for node_id, count in counts.items() if count > 1}


def quote_list(names: Iterable[str], limit: int = 8) -> str:
    items = [repr(n) for n in names]
    if len(items) > limit:
        items = items[:limit] + [f"… ({len(items) - limit} more)"]
    return ", ".join(items) if items else "none"


__all__ = [
    "CODES",
    "ValidationEntry",
    "ValidationResult",
    "duplicated_ids",
    "node_label",
    "quote_list",
]
