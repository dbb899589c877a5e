"""COLL_*: collection edges and mapped nodes, as :func:`collection_shape` decides them.

Which edges carry collections and which nodes map over them is decided once, by
:func:`~orchestrator.validation.collections.collection_shape`; these checks report
where the flow asks for something that shape cannot be. Where it depends on a
NodeDef that is missing (NODE_001), or on a node caught in a cycle (FLOW_001), it
is not known: nothing is reported about it, or about what it feeds.
"""

from __future__ import annotations

import difflib

from orchestrator.models import NodeDef
from orchestrator.validation.checks.context import CheckContext
from orchestrator.validation.collections import (
    CollectionShape,
    collection_shape,
    declared_edge,
    is_collection_port,
)
from orchestrator.validation.graph import Graph
from orchestrator.validation.results import quote_list

#: Well sources that cannot fill a collection (yet): an upload can.
UNSUPPORTED_SOURCES = ("static", "webhook")

_WHERE_COLLECTIONS_COME_FROM = (
    "an upload edge listed in Collections, an output its NodeDef declares Collection, "
    "or an output of a mapped node"
)


def check(ctx: CheckContext) -> None:
    flow = ctx.flow
    order, cyclic = _order(ctx)
    defs: dict[str, NodeDef | None] = {node.id: ctx.defs.get(node.uses) for node in flow.nodes}
    shape = collection_shape(flow, defs, [flow.nodes[i].id for i in order])
    unknown_nodes, unknown_edges = _unknown(ctx, order, cyclic)
    _check_listed(ctx, shape, unknown_edges)
    _check_wells(ctx, shape)
    for index, node in enumerate(flow.nodes):
        if index in unknown_nodes:
            continue
        node_def = ctx.defs.get(node.uses)
        _check_gathers(ctx, shape, index, node_def, unknown_edges)
        _check_mapping(ctx, shape, index, node_def)


def _order(ctx: CheckContext) -> tuple[list[int], set[int]]:
    """Node indexes, producers first (as ``topological_order`` orders them), then the
    nodes a cycle holds back, in flow order; and the set of those."""
    order = Graph(ctx.flow.nodes).order()
    placed = set(order)
    held = [i for i in range(len(ctx.flow.nodes)) if i not in placed]
    return order + held, set(held)


def _unknown(ctx: CheckContext, order: list[int], cyclic: set[int]) -> tuple[set[int], set[str]]:
    """Nodes whose shape is not known (no NodeDef, no ID of their own, held back by a
    cycle, or fed by such a node), and the edges they produce: whether those carry
    collections is a guess."""
    nodes: set[int] = set()
    edges: set[str] = set()
    for index in order:
        node = ctx.flow.nodes[index]
        if (
            index in cyclic
            or ctx.defs.get(node.uses) is None
            # The shape knows nodes by ID: one of two that share it (NODE_007, NODE_008).
            or not node.id
            or node.id in ctx.duplicated
            or any(b.edge in edges for b in node.inputs)
        ):
            nodes.add(index)
            edges.update(b.edge for b in node.outputs)
    return nodes, edges


def _check_listed(ctx: CheckContext, shape: CollectionShape, unknown_edges: set[str]) -> None:
    """COLL_001: Collections names edges nodes bind; COLL_002: none a node makes as one file."""
    flow = ctx.flow
    used = set(ctx.used_edges)
    # What Collections is for: edges a node reads and no node produces.
    entries = [e for e in ctx.used_edges if e in ctx.consumers and e not in ctx.producers]
    for i, edge in enumerate(flow.collections):
        field = f"Flow.Collections.{i}"
        if edge not in used:
            close = difflib.get_close_matches(edge, entries, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            choices = (
                f"list an edge that a node reads and no node produces ({quote_list(entries)}) "
                "or remove it"
                if entries
                else "remove it"
            )
            ctx.error(
                "COLL_001",
                f"Collections lists edge {edge!r}, which no node binds{hint}; {choices}",
                edge=edge,
                field=field,
            )
            continue
        if edge in unknown_edges:
            continue
        for p, out in ctx.producers.get(edge, ()):
            producer = flow.nodes[p]
            node_def = ctx.defs.get(producer.uses)
            if producer.id in shape.mapped or is_collection_port(node_def, out, "out"):
                continue
            uses = node_def.uses if node_def is not None else producer.uses
            ctx.error(
                "COLL_002",
                f"Collections lists edge {edge!r}, but {ctx.node_name(p)} produces it as one "
                f"file (its output {out!r} is not declared Collection in {uses!r}, and the "
                f"node is not mapped); remove {edge!r} from Collections, which lists the "
                "collections a client uploads: a node's output is a collection when its "
                "NodeDef declares it Collection or the node is mapped",
                node=producer.id or None,
                edge=edge,
                field=field,
            )
            break


def _check_wells(ctx: CheckContext, shape: CollectionShape) -> None:
    """COLL_006: a collection no node produces is filled by an upload, not static or webhook."""
    for i, well in enumerate(ctx.flow.data_wells):
        if (
            well.source not in UNSUPPORTED_SOURCES
            or well.edge not in shape.edges
            or well.edge in ctx.producers  # EDGE_004's business
        ):
            continue
        ctx.error(
            "COLL_006",
            f"edge {well.edge!r} carries a collection (it is listed in Collections) but its "
            f"DataWell has Source {well.source!r}, which does not fill collections yet; use "
            'Source "upload" (the client PUTs a zip or tar of the items to its WaitingURL, '
            f"or puts them one by one), or remove {well.edge!r} from Collections to read one "
            "file",
            well=well.edge,
            edge=well.edge,
            field=f"Flow.DataWells.{i}.Source",
        )


def _check_gathers(
    ctx: CheckContext,
    shape: CollectionShape,
    index: int,
    node_def: NodeDef | None,
    unknown_edges: set[str],
) -> None:
    """COLL_003: an input declared Collection reads an edge that carries a collection."""
    if node_def is None:
        return
    node = ctx.flow.nodes[index]
    who = ctx.node_name(index)
    for k, binding in enumerate(node.inputs):
        edge = binding.edge
        if (
            not is_collection_port(node_def, binding.name, "in")
            or edge in shape.edges
            or edge in unknown_edges
        ):
            continue
        head = (
            f"{who} input {binding.name!r} is declared Collection in {node_def.uses!r}, "
            f"but its edge {edge!r} carries one file"
        )
        producers = ctx.producers.get(edge, ())
        sources = [w.source for w in ctx.wells if w.edge == edge]
        if producers:
            p, out = producers[0]
            fix = (
                f": {ctx.node_name(p)} produces it from output {out!r}; bind "
                f"{binding.name!r} to an edge that carries a collection "
                f"({_WHERE_COLLECTIONS_COME_FROM})"
            )
        elif any(s in UNSUPPORTED_SOURCES for s in sources):
            source = next(s for s in sources if s in UNSUPPORTED_SOURCES)
            fix = (
                f", from its {source} DataWell; bind {binding.name!r} to an edge that carries "
                f"a collection ({_WHERE_COLLECTIONS_COME_FROM})"
            )
        else:
            fix = (
                f"; list {edge!r} in the flow's Collections (its upload is then a zip or tar "
                f"of items), or bind {binding.name!r} to an edge that carries a collection"
            )
        ctx.error(
            "COLL_003",
            head + fix,
            node=node.id or None,
            edge=edge,
            field=f"Flow.Nodes.{index}.Inputs.{k}.Edge",
        )


def _check_mapping(
    ctx: CheckContext, shape: CollectionShape, index: int, node_def: NodeDef | None
) -> None:
    """COLL_004: one collection mapped over; COLL_005: Map only where mapped; COLL_007: no
    collection output on a mapped node."""
    node = ctx.flow.nodes[index]
    who = ctx.node_name(index)
    where = f"Flow.Nodes.{index}"
    uses = node_def.uses if node_def is not None else node.uses
    mapped_over = shape.mapped.get(node.id)
    edges_of = {b.name: b.edge for b in node.inputs}
    extra = shape.overmapped.get(node.id, ())
    if mapped_over is not None and extra:
        bound = [f"{name!r} (edge {edges_of.get(name)!r})" for name in (mapped_over, *extra)]
        others = " and ".join(repr(name) for name in extra)
        first = next(k for k, b in enumerate(node.inputs) if b.name == extra[0])
        ctx.error(
            "COLL_004",
            f"{who} binds file inputs {', '.join(bound[:-1])} and {bound[-1]} to "
            f"collections, but a node maps over one collection (here {mapped_over!r}); "
            f"gather the others: declare {others} Collection in {uses!r} "
            '("Collection": true) so that each item\'s run gets all of their items, or bind '
            f"{others} to an edge that carries one file",
            node=node.id or None,
            edge=edges_of.get(extra[0]),
            field=f"{where}.Inputs.{first}.Edge",
        )
    if node.map is not None and mapped_over is None:
        ctx.error(
            "COLL_005",
            f"{who} has Map, but it is not mapped: none of its file inputs (those "
            f"{uses!r} does not declare Collection) is bound to an edge that carries a "
            f"collection ({_WHERE_COLLECTIONS_COME_FROM}); remove Map, or bind one of its "
            "file inputs to a collection",
            node=node.id or None,
            field=f"{where}.Map",
        )
    if mapped_over is None:
        return
    for k, binding in enumerate(node.outputs):
        declared = declared_edge(node_def, binding.name, "out")
        if declared is None or not declared.collection:
            continue
        ctx.error(
            "COLL_007",
            f"{who} is mapped over input {mapped_over!r} (edge {edges_of.get(mapped_over)!r}), "
            f"so each of its outputs is a collection of one file per item, but its output "
            f"{binding.name!r} is declared Collection in {uses!r}: a collection of "
            f"collections is not supported; use a NodeDef whose output {binding.name!r} is one "
            f"file, or declare input {mapped_over!r} Collection to gather all the items in "
            "one run instead of mapping",
            node=node.id or None,
            edge=binding.edge,
            field=f"{where}.Outputs.{k}.Name",
        )


__all__ = ["UNSUPPORTED_SOURCES", "check"]
