"""What every check of one submission reads, and where the checks record what they find."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from orchestrator.mime import is_valid_mime
from orchestrator.models import DataWell, Flow, FlowSubmission, NodeDef
from orchestrator.validation.defs import DefLookup
from orchestrator.validation.results import (
    ValidationEntry,
    ValidationResult,
    duplicated_ids,
    node_label,
)
from orchestrator.validation.wells import DEFAULT_STORE, StorePolicy, effective_wells

#: (node index, input or output Name) of each binding of an edge, in node order.
Bindings = tuple[tuple[int, str], ...]


def type_list_problem(types: list[str] | None) -> tuple[str, list[str]] | None:
    """Why a declared Type list can match no file: TYPE_002 (empty) or TYPE_001 (its bad entries).

    The NodeDefs check reports it; the context notes the defs that have one, so that
    the edges check does not compare types that were already reported.
    """
    if types is None:
        return None
    if not types:
        return "TYPE_002", []
    bad = [t for t in types if not is_valid_mime(t)]
    return ("TYPE_001", bad) if bad else None


@dataclass(frozen=True, eq=False)
class CheckContext:
    """One submission as the checks see it, derived once; only ``result`` grows."""

    submission: FlowSubmission
    defs: DefLookup
    store_types: tuple[str, ...]
    stores: StorePolicy
    producers: Mapping[str, Bindings]
    consumers: Mapping[str, Bindings]
    #: Every edge a node binds, in order of first binding.
    used_edges: tuple[str, ...]
    declared_stores: frozenset[str]
    #: Node IDs that more than one node has (their labels then carry the index too).
    duplicated: frozenset[str]
    #: The wells a run would use: the declared ones, else the implied ones.
    wells: tuple[DataWell, ...]
    #: ``id()`` of each submitted NodeDef with an invalid Type list.
    mistyped_defs: frozenset[int]
    result: ValidationResult = field(default_factory=ValidationResult)

    @classmethod
    def of(
        cls,
        submission: FlowSubmission,
        catalog: Mapping[str, NodeDef],
        store_types: tuple[str, ...],
        stores: StorePolicy,
    ) -> CheckContext:
        flow = submission.flow
        producers: dict[str, list[tuple[int, str]]] = defaultdict(list)
        consumers: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for i, node in enumerate(flow.nodes):
            for binding in node.outputs:
                producers[binding.edge].append((i, binding.name))
            for binding in node.inputs:
                consumers[binding.edge].append((i, binding.name))
        return cls(
            submission=submission,
            defs=DefLookup(submission.node_defs, catalog),
            store_types=store_types,
            stores=stores,
            producers={edge: tuple(found) for edge, found in producers.items()},
            consumers={edge: tuple(found) for edge, found in consumers.items()},
            used_edges=tuple(
                dict.fromkeys(b.edge for n in flow.nodes for b in (*n.inputs, *n.outputs))
            ),
            declared_stores=frozenset(s.name for s in flow.stores),
            duplicated=frozenset(duplicated_ids(flow.nodes)),
            wells=tuple(effective_wells(flow)),
            mistyped_defs=frozenset(
                id(node_def)
                for node_def in submission.node_defs
                if any(type_list_problem(e.type) for e in (*node_def.inputs, *node_def.outputs))
            ),
        )

    @property
    def flow(self) -> Flow:
        return self.submission.flow

    def error(self, code: str, message: str, **where: str | None) -> None:
        self.result.errors.append(ValidationEntry(code=code, message=message, **where))

    def warning(self, code: str, message: str, **where: str | None) -> None:
        self.result.warnings.append(ValidationEntry(code=code, message=message, **where))

    def node_name(self, index: int) -> str:
        node = self.flow.nodes[index]
        return f"node {node_label(node, index, node.id in self.duplicated)}"

    def store_known(self, name: str) -> bool:
        return name in self.declared_stores or name in self.stores.operator_stores

    def store_choices(self) -> list[str]:
        """The stores a flow may name, for messages: the default first, then the others."""
        operator = sorted(self.stores.operator_stores - {DEFAULT_STORE})
        declared = sorted(self.declared_stores - self.stores.operator_stores)
        return [DEFAULT_STORE, *operator, *declared]

    def types_usable(self, node_def: NodeDef) -> bool:
        """Whether ``node_def``'s Type lists can be compared (catalog ones always can)."""
        return id(node_def) not in self.mistyped_defs


__all__ = ["Bindings", "CheckContext", "type_list_problem"]
