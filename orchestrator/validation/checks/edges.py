"""EDGE_*: who produces and consumes each edge, and whether their types meet; FLOW_001 cycles."""

from __future__ import annotations

from collections import defaultdict

from orchestrator.mime import intersects
from orchestrator.validation.checks.context import Bindings, CheckContext
from orchestrator.validation.graph import Graph
from orchestrator.validation.wells import PRODUCING_SOURCES, WELL_SOURCES


def check(ctx: CheckContext) -> None:
    nodes = ctx.flow.nodes
    well_sources: dict[str, list[str | None]] = defaultdict(list)
    for well in ctx.wells:
        well_sources[well.edge].append(well.source)
    for edge in ctx.used_edges:
        producers = ctx.producers.get(edge, ())
        consumers = ctx.consumers.get(edge, ())
        sources = well_sources.get(edge, [])
        well_fed = [s for s in sources if s in PRODUCING_SOURCES]
        # An invalid Source is WELL_001's business: do not pile edge errors on it.
        odd_source = any(s is not None and s not in WELL_SOURCES for s in sources)
        sink = any(s in (None, "none") for s in sources)
        if len(producers) > 1:
            names = [f"{ctx.node_name(i)} (output {out!r})" for i, out in producers]
            ctx.error(
                "EDGE_004",
                f"edge {edge!r} is produced by both {' and '.join(names)}; an edge has one "
                "producer: bind one of these outputs to another edge",
                edge=edge,
                node=nodes[producers[1][0]].id or None,
            )
        if producers and well_fed:
            i, out = producers[0]
            ctx.error(
                "EDGE_004",
                f"edge {edge!r} is produced by both {ctx.node_name(i)} (output {out!r}) and "
                f"a DataWell with Source {well_fed[0]!r}; remove the well's Source to only "
                "store the output, or bind the output to another edge",
                edge=edge,
                node=nodes[i].id or None,
                well=edge,
            )
        if consumers and not producers and not well_fed and not odd_source:
            i, name = consumers[0]
            ctx.error(
                "EDGE_001",
                f"edge {edge!r} is read by {ctx.node_name(i)} (input {name!r}) but nothing "
                'produces it; add a DataWell {"Edge": "' + edge + '", "Source": '
                '"upload"} (or "static" with a Key), or bind a node output to it',
                edge=edge,
                node=nodes[i].id or None,
            )
        if producers and not consumers and not sink and not well_fed and not odd_source:
            i, name = producers[0]
            ctx.error(
                "EDGE_002",
                f"edge {edge!r} is produced by {ctx.node_name(i)} (output {name!r}) but "
                'nothing consumes or stores it; add a DataWell {"Edge": "' + edge + '"} '
                "to keep it, or bind it to a node input",
                edge=edge,
                node=nodes[i].id or None,
            )
        if producers and consumers and not well_fed:
            _check_types(ctx, edge, producers, consumers)


def check_cycles(ctx: CheckContext) -> None:
    """FLOW_001: nodes whose edges lead back to themselves."""
    ctx.result.errors.extend(Graph(ctx.flow.nodes).cycle_entries())


def _check_types(ctx: CheckContext, edge: str, producers: Bindings, consumers: Bindings) -> None:
    """EDGE_003: every producer's types meet every consumer's."""
    for p, out in producers:
        usable, made = _bound_types(ctx, p, out, output=True)
        if not usable or made is None:
            continue
        for c, name in consumers:
            usable, accepted = _bound_types(ctx, c, name, output=False)
            if not usable or accepted is None or intersects(made, accepted):
                continue
            ctx.error(
                "EDGE_003",
                f"edge {edge!r} carries {', '.join(made)} from {ctx.node_name(p)} (output "
                f"{out!r}) but {ctx.node_name(c)} input {name!r} accepts only "
                f"{', '.join(accepted)}; connect outputs and inputs whose types overlap",
                edge=edge,
                node=ctx.flow.nodes[c].id or None,
            )


def _bound_types(
    ctx: CheckContext, index: int, name: str, output: bool
) -> tuple[bool, list[str] | None]:
    """(usable, Type list) of a node's bound input/output; unusable: no def, or bad types."""
    node_def = ctx.defs.get(ctx.flow.nodes[index].uses)
    # A missing def or a bad Type list has its own entry already (NODE_001, TYPE_*).
    if node_def is None or not ctx.types_usable(node_def):
        return False, None
    for edge_def in node_def.outputs if output else node_def.inputs:
        if edge_def.name == name:
            return True, edge_def.type
    return True, None


__all__ = ["check", "check_cycles"]
