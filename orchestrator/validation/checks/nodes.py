"""FLOW_002 and NODE_*: node IDs, and each node against its NodeDef (bindings, flags, command)."""

from __future__ import annotations

import difflib
from collections import defaultdict

from orchestrator.command import split_exec
from orchestrator.models import Node, NodeDef
from orchestrator.tiers import TIERS
from orchestrator.validation.checks.context import CheckContext
from orchestrator.validation.flags import value_problem
from orchestrator.validation.results import quote_list

_TIER_EXAMPLES = ("c-nano", "c-small", "c-large", "m-small", "gn-small")


def check_present(ctx: CheckContext) -> None:
    """FLOW_002: a flow without nodes."""
    if not ctx.flow.nodes:
        ctx.error("FLOW_002", "the flow has no nodes, so nothing would run; add at least one node")


def check_ids(ctx: CheckContext) -> None:
    """NODE_008 and NODE_007: each node has an ID of its own."""
    positions: dict[str, list[int]] = defaultdict(list)
    for i, node in enumerate(ctx.flow.nodes):
        if not node.id:
            ctx.error(
                "NODE_008",
                f"node #{i} has no ID; give it a unique ID such as "
                f"{(node.uses.rpartition('/')[2] or 'node') + f'-{i + 1}'!r}",
                field=f"Flow.Nodes.{i}.ID",
            )
        else:
            positions[node.id].append(i)
    for node_id, where in positions.items():
        if len(where) > 1:
            places = ", ".join(f"Flow.Nodes.{i}" for i in where)
            ctx.error(
                "NODE_007",
                f"node ID {node_id!r} is used by {len(where)} nodes ({places}); "
                "give each node its own ID",
                node=node_id,
                field=f"Flow.Nodes.{where[1]}.ID",
            )


def check_recompute(ctx: CheckContext) -> None:
    """NODE_013: the nodes a submission asks to recompute are the flow's."""
    known = {node.id for node in ctx.flow.nodes}
    for k, node_id in enumerate(ctx.submission.recompute):
        if node_id not in known:
            ctx.error(
                "NODE_013",
                f"Recompute names node {node_id!r}, which the flow does not have; its nodes "
                f"are {quote_list(sorted(known))}",
                field=f"Recompute.{k}",
            )


def check(ctx: CheckContext) -> None:
    """Each node, in order: all of one node's entries before the next node's."""
    for index, node in enumerate(ctx.flow.nodes):
        _check_duplicate_bindings(ctx, index, node)
        node_def = ctx.defs.get(node.uses)
        if node_def is None:
            ctx.error(
                "NODE_001",
                ctx.defs.missing_message(node),
                node=node.id or None,
                field=f"Flow.Nodes.{index}.Uses",
            )
            continue
        _check_tier(ctx, index, node, node_def)
        _check_bindings(ctx, index, node, node_def)
        _check_flags(ctx, index, node, node_def)
        _check_command(ctx, index, node, node_def)


def _check_duplicate_bindings(ctx: CheckContext, index: int, node: Node) -> None:
    who = ctx.node_name(index)
    for plural, names in (
        ("Inputs", [b.name for b in node.inputs]),
        ("Outputs", [b.name for b in node.outputs]),
        ("Flags", [f.name for f in node.flags]),
    ):
        seen: set[str] = set()
        for k, name in enumerate(names):
            if name in seen:
                ctx.error(
                    "NODE_011",
                    f"{who} lists {name!r} twice in its {plural}; keep one",
                    node=node.id or None,
                    field=f"Flow.Nodes.{index}.{plural}.{k}.Name",
                )
            seen.add(name)


def _check_tier(ctx: CheckContext, index: int, node: Node, node_def: NodeDef) -> None:
    if node_def.tier in TIERS:
        return
    close = difflib.get_close_matches(node_def.tier, list(TIERS), n=2)
    hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
    sample = [t for t in _TIER_EXAMPLES if t in TIERS]
    ctx.error(
        "NODE_004",
        f"{ctx.node_name(index)} uses NodeDef {node_def.uses!r}, whose Tier {node_def.tier!r} "
        f"is not a known tier{hint}; use one of {', '.join(sample)}, … ({len(TIERS)} tiers: "
        "c-*, m-*, g-*, gn-*, ga-*, gi-*)",
        node=node.id or None,
        field=f"Flow.Nodes.{index}.Uses",
    )


def _check_bindings(ctx: CheckContext, index: int, node: Node, node_def: NodeDef) -> None:
    """NODE_002, NODE_003: required ones bound; NODE_010: only declared ones bound."""
    where, who, uses = f"Flow.Nodes.{index}", ctx.node_name(index), node_def.uses
    for direction, bound, declared, code in (
        ("input", node.inputs, node_def.inputs, "NODE_002"),
        ("output", node.outputs, node_def.outputs, "NODE_003"),
    ):
        names = {b.name for b in bound}
        plural = direction.capitalize() + "s"
        for edge_def in declared:
            if edge_def.required and edge_def.name not in names:
                ctx.error(
                    code,
                    f"{who} does not bind the required {direction} {edge_def.name!r} of "
                    f'{uses!r}; add {{"Name": "{edge_def.name}", "Edge": "…"}} to '
                    f"its {plural}",
                    node=node.id or None,
                    field=f"{where}.{plural}",
                )
        # A NodeDef that declares none takes whatever the node binds.
        if declared:
            known = [d.name for d in declared]
            for k, binding in enumerate(bound):
                if binding.name not in known:
                    ctx.error(
                        "NODE_010",
                        f"{who} binds {direction} {binding.name!r}, which {uses!r} does not "
                        f"declare; use one of {quote_list(known)}",
                        node=node.id or None,
                        edge=binding.edge,
                        field=f"{where}.{plural}.{k}.Name",
                    )


def _check_flags(ctx: CheckContext, index: int, node: Node, node_def: NodeDef) -> None:
    """NODE_005: required flags set; NODE_006: only declared ones; NODE_012: values that fit."""
    where, who, uses = f"Flow.Nodes.{index}", ctx.node_name(index), node_def.uses
    given = {f.name for f in node.flags}
    for flag_def in node_def.flags:
        if flag_def.required and flag_def.default is None and flag_def.name not in given:
            ctx.error(
                "NODE_005",
                f"{who} does not set the required flag {flag_def.name!r} of {uses!r}; add "
                f'{{"Name": "{flag_def.name}", "Value": "…"}} to its Flags',
                node=node.id or None,
                field=f"{where}.Flags",
            )
    # A NodeDef that declares none takes whatever flags the node sets.
    if not node_def.flags:
        return
    declared_flags = {f.name: f for f in node_def.flags}
    for k, flag in enumerate(node.flags):
        flag_def = declared_flags.get(flag.name)
        if flag_def is None:
            ctx.error(
                "NODE_006",
                f"{who} sets flag {flag.name!r}, which {uses!r} does not declare; use "
                f"one of {quote_list(declared_flags)}",
                node=node.id or None,
                field=f"{where}.Flags.{k}.Name",
            )
            continue
        problem = value_problem(flag_def, flag.value)
        if problem is None and flag_def.required and not flag.value.strip():
            problem = "is empty, and the flag is required"
        if problem:
            ctx.error(
                "NODE_012",
                f"{who} sets flag {flag.name!r} to {flag.value!r}, which {problem}"
                + (f" ({flag_def.description})" if flag_def.description else ""),
                node=node.id or None,
                field=f"{where}.Flags.{k}.Value",
            )


def _check_command(ctx: CheckContext, index: int, node: Node, node_def: NodeDef) -> None:
    """NODE_009: the command the node runs exists, is chosen when there are several, and splits."""
    who = ctx.node_name(index)
    field = f"Flow.Nodes.{index}.Command"
    commands = node_def.all_commands()
    names = [c.name for c in commands]
    if node.command is not None:
        chosen = [c for c in commands if c.name == node.command]
        if not chosen:
            fix = (
                f"use one of {quote_list(names)}"
                if names
                else "remove Command: the image's own command runs"
            )
            ctx.error(
                "NODE_009",
                f"{who} asks for Command {node.command!r}, which {node_def.uses!r} does "
                f"not have; {fix}",
                node=node.id or None,
                field=field,
            )
            return
        command = chosen[0]
    elif len(commands) > 1:
        ctx.error(
            "NODE_009",
            f"{node_def.uses!r} has {len(commands)} commands, so {who} must choose one; set "
            f"its Command to one of {quote_list(names)}",
            node=node.id or None,
            field=field,
        )
        return
    elif commands:
        command = commands[0]
    else:
        return
    try:
        tokens = split_exec(command.exec)
    except ValueError as exc:
        ctx.error(
            "NODE_009",
            f"{who} runs command {command.name!r} of {node_def.uses!r}, whose Exec "
            f"{command.exec!r} cannot be split into arguments ({exc}); balance its quotes",
            node=node.id or None,
            field=field,
        )
        return
    if not tokens:
        ctx.error(
            "NODE_009",
            f"{who} runs command {command.name!r} of {node_def.uses!r}, whose Exec is empty; "
            "write the program and its arguments, or remove the command",
            node=node.id or None,
            field=field,
        )


__all__ = ["check", "check_ids", "check_present"]
