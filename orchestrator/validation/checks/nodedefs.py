"""The submitted NodeDefs: DEF_001 conflicting twins, DEF_002 flag declarations, DEF_003
CacheIgnore names, TYPE_* lists."""

from __future__ import annotations

from orchestrator.models import EdgeDef, NodeDef
from orchestrator.validation.checks.context import CheckContext, type_list_problem
from orchestrator.validation.flags import definition_problem
from orchestrator.validation.results import quote_list


def check(ctx: CheckContext) -> None:
    node_defs = ctx.submission.node_defs
    first: dict[str, int] = {}
    for i, node_def in enumerate(node_defs):
        where = f"NodeDefs.{i}"
        if node_def.uses in first:
            j = first[node_def.uses]
            earlier = node_defs[j]
            if earlier.model_dump(exclude={"id"}) != node_def.model_dump(exclude={"id"}):
                ctx.error(
                    "DEF_001",
                    f"NodeDefs.{j} and {where} are both {node_def.uses!r} but differ; "
                    "keep one, or give the other its own Publisher/Name",
                    field=where,
                )
        else:
            first[node_def.uses] = i
        for k, flag_def in enumerate(node_def.flags):
            problem = definition_problem(flag_def)
            if problem:
                ctx.error(
                    "DEF_002",
                    f"NodeDef {node_def.uses!r} flag {flag_def.name!r}: {problem}",
                    field=f"{where}.Flags.{k}",
                )
        inputs = {edge_def.name for edge_def in node_def.inputs}
        for k, name in enumerate(node_def.cache_ignore):
            if name not in inputs:
                ctx.error(
                    "DEF_003",
                    f"NodeDef {node_def.uses!r} CacheIgnore names {name!r}, which is not one "
                    f"of its Inputs ({quote_list(sorted(inputs))}); name an input, "
                    "or remove it",
                    field=f"{where}.CacheIgnore.{k}",
                )
        for direction, declared in (("Inputs", node_def.inputs), ("Outputs", node_def.outputs)):
            for k, edge_def in enumerate(declared):
                place = f"{where}.{direction}.{k}"
                _check_type(ctx, node_def, place, direction[:-1].lower(), edge_def)


def _check_type(
    ctx: CheckContext, node_def: NodeDef, where: str, kind: str, edge_def: EdgeDef
) -> None:
    problem = type_list_problem(edge_def.type)
    if problem is None:
        return
    code, bad = problem
    what = f"NodeDef {node_def.uses!r} {kind} {edge_def.name!r}"
    if code == "TYPE_002":
        message = (
            f"{what} has an empty Type list, which "
            'no file can satisfy; list MIME types (e.g. ["image/png"]) or leave Type '
            "out to accept anything"
        )
    else:
        message = (
            f"{what} has invalid MIME type(s) "
            f"{quote_list(bad)}; write type/subtype (e.g. 'image/png'), a family "
            "('image/*') or '*/*'"
        )
    ctx.error(code, message, field=f"{where}.Type")


__all__ = ["check"]
