"""WELL_*: the declared DataWells, their Keys, and edges that a run would store on one key."""

from __future__ import annotations

import difflib
from collections import defaultdict
from datetime import UTC, datetime

from orchestrator.models import DataWell
from orchestrator.validation.checks.context import CheckContext
from orchestrator.validation.object_keys import (
    DEFAULT_KEY_TEMPLATE,
    KEY_VARIABLES,
    PER_RUN_VARIABLES,
    expand_key,
    key_problem,
    key_variables,
)
from orchestrator.validation.results import quote_list
from orchestrator.validation.wells import WELL_SOURCES, default_store_name, lifetime_problem


def check(ctx: CheckContext) -> None:
    flow = ctx.flow
    used = set(ctx.used_edges)
    positions: dict[str, list[int]] = defaultdict(list)
    problem = lifetime_problem(flow.lifetime, ctx.stores.lifetimes)
    if problem is not None:
        ctx.error(
            "FLOW_004",
            f"the flow's Lifetime: {problem}; write how long its runs are kept after they "
            "end, e.g. 7d, or leave Lifetime out for the service's default",
            field="Flow.Lifetime",
        )
    for i, well in enumerate(flow.data_wells):
        where = f"Flow.DataWells.{i}"
        positions[well.edge].append(i)
        problem = lifetime_problem(well.lifetime, ctx.stores.lifetimes)
        if problem is not None:
            ctx.error(
                "WELL_011",
                f"the DataWell on edge {well.edge!r}, Lifetime: {problem}; write how long "
                "its objects are kept after the run ends, e.g. 90d, or leave Lifetime out "
                "to keep them as long as the run",
                well=well.edge,
                edge=well.edge,
                field=f"{where}.Lifetime",
            )
        if well.source is not None and well.source not in WELL_SOURCES:
            ctx.error(
                "WELL_001",
                f"the DataWell on edge {well.edge!r} has Source {well.source!r}; use one of "
                f"{', '.join(WELL_SOURCES)} (or leave Source out to only store a node's "
                "output)",
                well=well.edge,
                edge=well.edge,
                field=f"{where}.Source",
            )
        if well.edge not in used:
            close = difflib.get_close_matches(well.edge, ctx.used_edges, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            ctx.error(
                "WELL_002",
                f"the DataWell on edge {well.edge!r} names an edge no node uses{hint}; "
                f"use one of {quote_list(ctx.used_edges)} or remove the well",
                well=well.edge,
                edge=well.edge,
                field=f"{where}.Edge",
            )
        if well.store is not None and not ctx.store_known(well.store):
            ctx.error(
                "WELL_004",
                f"the DataWell on edge {well.edge!r} names store {well.store!r}, which is "
                f"not declared; declare it in Stores or use one of "
                f"{quote_list(ctx.store_choices())}",
                well=well.edge,
                store=well.store,
                field=f"{where}.Store",
            )
        _check_key(ctx, well, where)
    for edge, where in positions.items():
        if len(where) > 1:
            places = ", ".join(f"Flow.DataWells.{i}" for i in where)
            ctx.error(
                "WELL_003",
                f"edge {edge!r} has {len(where)} DataWells ({places}); keep one",
                well=edge,
                edge=edge,
                field=f"Flow.DataWells.{where[1]}",
            )
    _check_template_key(ctx)


def check_key_collisions(ctx: CheckContext) -> None:
    """WELL_009: two edges a run writes must not land on one (store, key)."""
    flow = ctx.flow
    wells = {w.edge: w for w in ctx.wells}
    template_well = flow.default_data_well
    default_store = default_store_name(flow)
    moment = datetime(2000, 1, 1, tzinfo=UTC)
    targets: dict[tuple[str, str], list[str]] = defaultdict(list)
    for n, edge in enumerate(ctx.used_edges):
        well = wells.get(edge)
        if well is not None and well.source == "static":
            continue  # read, never written
        store = (well and well.store) or (template_well and template_well.store) or default_store
        key = (well and well.key) or (template_well and template_well.key)
        key = key or DEFAULT_KEY_TEMPLATE
        if key_problem(key):
            continue
        # Each edge its own UUID: only what the Key spells out can make two edges collide.
        expanded = expand_key(
            key, run_id="run", flow_name=flow.name, edge=edge, now=moment, uuid=f"uuid{n}"
        )
        targets[(store, expanded)].append(edge)
    for (store, key), edges in targets.items():
        if len(edges) > 1:
            ctx.error(
                "WELL_009",
                f"edges {quote_list(edges)} would all be stored as {key!r} in store "
                f"{store!r} and overwrite each other; put ${{EDGE}} in their Key",
                edge=edges[1],
                store=store,
            )


def _check_key(ctx: CheckContext, well: DataWell, where: str) -> None:
    """WELL_005 to WELL_008 for one well's Key, as its Source reads or writes it."""
    key, source = well.key, well.source
    field = f"{where}.Key"
    about: dict[str, str | None] = {"well": well.edge, "edge": well.edge, "field": field}
    if source == "static" and not key:
        ctx.error(
            "WELL_006",
            f"the static DataWell on edge {well.edge!r} has no Key; set Key to the object "
            'that already exists in the store (e.g. "models/weights.bin")',
            **about,
        )
        return
    if key is None:
        return
    if key == "":
        ctx.error(
            "WELL_005",
            f"the DataWell on edge {well.edge!r} has an empty Key; remove Key to use "
            f"{DEFAULT_KEY_TEMPLATE!r} or write one",
            **about,
        )
        return
    problem = key_problem(key)
    if problem:
        ctx.error(
            "WELL_005",
            f"the DataWell on edge {well.edge!r} has Key {key!r}, which is invalid: {problem}",
            **about,
        )
    variables = key_variables(key)
    if source == "static":
        if variables:
            names = ", ".join(f"${{{v}}}" for v in dict.fromkeys(variables))
            ctx.error(
                "WELL_007",
                f"the static DataWell on edge {well.edge!r} has Key {key!r}, which uses "
                f"{names}; a static Key names one existing object: write it literally",
                **about,
            )
        return
    if problem:
        return
    known = [v for v in variables if v in KEY_VARIABLES]
    per_run = [v for v in known if v in PER_RUN_VARIABLES]
    if source in ("upload", "webhook"):
        if not known:
            ctx.error(
                "WELL_008",
                f"the {source} DataWell on edge {well.edge!r} has Key {key!r}, which uses "
                "no variable: every run would overwrite the same object; include "
                '${RUN_ID} (e.g. "uploads/${RUN_ID}/${EDGE}")',
                **about,
            )
        elif not per_run:
            ctx.warning(
                "WELL_008",
                f"the {source} DataWell on edge {well.edge!r} has Key {key!r}, which has no "
                "${RUN_ID} or ${UUID}: runs started close together would overwrite each "
                "other's object",
                **about,
            )
    elif source in (None, "none") and not known:
        ctx.warning(
            "WELL_008",
            f"the DataWell on edge {well.edge!r} has Key {key!r}, which uses no variable: "
            "each run replaces the previous run's object (fine for a 'latest' copy; add "
            "${RUN_ID} to keep every run's)",
            **about,
        )


def _check_template_key(ctx: CheckContext) -> None:
    """WELL_005 and WELL_008 for DefaultDataWell's Key, which every well without one uses."""
    template = ctx.flow.default_data_well
    if template is None or template.key is None:
        return
    field = "Flow.DefaultDataWell.Key"
    problem = key_problem(template.key)
    if problem:
        ctx.error(
            "WELL_005",
            f"DefaultDataWell Key {template.key!r} is invalid: {problem}",
            field=field,
        )
    elif not key_variables(template.key):
        ctx.error(
            "WELL_008",
            f"DefaultDataWell Key {template.key!r} uses no variable, so every edge of "
            "every run would overwrite one object; include ${RUN_ID} and ${EDGE}",
            field=field,
        )


__all__ = ["check", "check_key_collisions"]
