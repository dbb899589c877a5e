"""NAME_001: every name that becomes a path, a directory or a variable is an identifier."""

from __future__ import annotations

from collections.abc import Iterator

from orchestrator.models import NAME_RULE, is_name
from orchestrator.validation.checks.context import CheckContext

#: (field, what it is, the name, where-fields) of one name the submission gives.
Named = tuple[str, str, str, dict[str, str | None]]


def check(ctx: CheckContext) -> None:
    for field, what, name, where in named_things(ctx):
        if not is_name(name):
            shown = name if len(name) <= 80 else name[:80] + "…"
            ctx.error(
                "NAME_001",
                f"{what} {shown!r} is not a valid name: {NAME_RULE}. Names become file "
                "names and environment variables, never paths",
                field=field,
                **where,
            )


def named_things(ctx: CheckContext) -> Iterator[Named]:
    """Every name the submission gives, in the order of its fields."""
    flow = ctx.flow
    for i, store in enumerate(flow.stores):
        yield f"Flow.Stores.{i}.Name", "store name", store.name, {"store": store.name}
    if flow.default_store is not None:
        yield (
            "Flow.DefaultStore",
            "DefaultStore",
            flow.default_store,
            {"store": flow.default_store},
        )
    template = flow.default_data_well
    if template is not None and template.store is not None:
        yield (
            "Flow.DefaultDataWell.Store",
            "store name",
            template.store,
            {"store": template.store},
        )
    for i, well in enumerate(flow.data_wells):
        yield f"Flow.DataWells.{i}.Edge", "edge name", well.edge, {"edge": well.edge}
        if well.store is not None:
            yield f"Flow.DataWells.{i}.Store", "store name", well.store, {"store": well.store}
    for i, node in enumerate(flow.nodes):
        where = f"Flow.Nodes.{i}"
        # An empty ID is NODE_008's business.
        if node.id:
            yield f"{where}.ID", "node ID", node.id, {"node": node.id}
        node_id = node.id or None
        for plural, bindings in (("Inputs", node.inputs), ("Outputs", node.outputs)):
            for k, binding in enumerate(bindings):
                what = f"{plural[:-1].lower()} name"
                yield f"{where}.{plural}.{k}.Name", what, binding.name, {"node": node_id}
                yield (
                    f"{where}.{plural}.{k}.Edge",
                    "edge name",
                    binding.edge,
                    {"node": node_id, "edge": binding.edge},
                )
        for k, flag in enumerate(node.flags):
            yield f"{where}.Flags.{k}.Name", "flag name", flag.name, {"node": node_id}
        if node.command is not None:
            yield f"{where}.Command", "command name", node.command, {"node": node_id}
    for i, node_def in enumerate(ctx.submission.node_defs):
        where = f"NodeDefs.{i}"
        for plural, declared in (("Inputs", node_def.inputs), ("Outputs", node_def.outputs)):
            for k, edge_def in enumerate(declared):
                what = f"{plural[:-1].lower()} name"
                yield f"{where}.{plural}.{k}.Name", what, edge_def.name, {}
        for k, flag_def in enumerate(node_def.flags):
            yield f"{where}.Flags.{k}.Name", "flag name", flag_def.name, {}
        if node_def.command is not None:
            yield f"{where}.Command.Name", "command name", node_def.command.name, {}
        for k, command_def in enumerate(node_def.commands):
            yield f"{where}.Commands.{k}.Name", "command name", command_def.name, {}


__all__ = ["check", "named_things"]
