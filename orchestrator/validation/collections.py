"""Which edges of a flow carry collections and which nodes map over them.

An edge is a collection when the flow lists it in ``Collections`` (an upload),
when the output that produces it is declared ``Collection``, or when its
producer is mapped. A node is mapped when a file input of it (one its NodeDef
does not declare ``Collection``) is bound to a collection edge: it then runs
once per item, and every output of it is a collection keyed by item name.
Decided in topological order, since a mapped node makes its outputs collections.

Pure and total: it never raises on a flow that did not validate (the checks use
it to report what is wrong, ``plan_run`` to plan what is right).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from orchestrator.models import EdgeDef, Flow, NodeDef


@dataclass(frozen=True)
class CollectionShape:
    #: Every edge that carries a collection.
    edges: frozenset[str]
    #: Mapped node ID → the Name of the input it maps over (the first one, in
    #: binding order, when it binds several: ``overmapped`` has the rest).
    mapped: Mapping[str, str]
    #: Node ID → further file inputs bound to collections (a node maps over one).
    overmapped: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def declared_edge(defn: NodeDef | None, name: str, direction: str) -> EdgeDef | None:
    if defn is None:
        return None
    for edge_def in defn.inputs if direction == "in" else defn.outputs:
        if edge_def.name == name:
            return edge_def
    return None


def is_collection_port(defn: NodeDef | None, name: str, direction: str) -> bool:
    declared = declared_edge(defn, name, direction)
    return declared is not None and declared.collection


def collection_shape(
    flow: Flow, defs: Mapping[str, NodeDef | None], order: list[str] | None = None
) -> CollectionShape:
    """The flow's collection edges and mapped nodes (``defs``: node ID → its NodeDef,
    None where it cannot be found; ``order``: node IDs, producers first)."""
    nodes = {node.id: node for node in flow.nodes}
    collections = set(flow.collections)
    mapped: dict[str, str] = {}
    overmapped: dict[str, tuple[str, ...]] = {}
    for node_id in order or [node.id for node in flow.nodes]:
        node = nodes.get(node_id)
        if node is None:
            continue
        defn = defs.get(node_id)
        over = [
            binding.name
            for binding in node.inputs
            if binding.edge in collections and not is_collection_port(defn, binding.name, "in")
        ]
        if over:
            mapped[node_id] = over[0]
            if len(over) > 1:
                overmapped[node_id] = tuple(over[1:])
        for binding in node.outputs:
            if node_id in mapped or is_collection_port(defn, binding.name, "out"):
                collections.add(binding.edge)
    return CollectionShape(frozenset(collections), mapped, overmapped)


__all__ = ["CollectionShape", "collection_shape", "declared_edge", "is_collection_port"]
