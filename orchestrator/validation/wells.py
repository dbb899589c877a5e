"""Stores and wells: the default store, the sources a well may name, the implied wells."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.durations import describe_duration, parse_duration
from orchestrator.models import DataWell, Flow

DEFAULT_STORE = "default"
STORE_TYPES = ("local", "s3")

#: Sources a well may name; absent means ``none`` (the well only says where
#: a produced edge is stored: a sink).
WELL_SOURCES = ("upload", "static", "webhook", "none")
#: Sources that fill an edge from outside the flow.
PRODUCING_SOURCES = ("upload", "static", "webhook")


@dataclass(frozen=True)
class StorePolicy:
    """The stores a flow may use on this service.

    ``operator_stores``: the service's own, which flows name without declaring.
    ``flow_store_endpoints``: S3 endpoints a flow may declare a store of its own on,
    with its own credentials (none: flows only use the operator's stores).
    """

    operator_stores: frozenset[str] = frozenset({DEFAULT_STORE})
    flow_store_endpoints: frozenset[str] = frozenset()
    #: The shortest and longest Lifetime a flow or a well may ask (retention); None:
    #: any duration (validating a flow away from a service).
    lifetimes: tuple[float, float] | None = None


def lifetime_seconds(value: object) -> float | None:
    """A Lifetime as seconds; None where it asks nothing of its own (absent, or
    Pupload's empty struct). Expects a value that validated."""
    if value is None or not isinstance(value, str | int | float):
        return None
    return parse_duration(value)


def lifetime_problem(value: object, bounds: tuple[float, float] | None) -> str | None:
    """Why a Lifetime cannot be kept to, or None."""
    if value is None or not isinstance(value, str | int | float):
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        return str(exc)
    if bounds is not None and not bounds[0] <= seconds <= bounds[1]:
        low, high = (describe_duration(b) for b in bounds)
        return (
            f"{value!r} is outside what this service keeps: between {low} and {high} "
            "(its operator's retention.min_lifetime and max_lifetime)"
        )
    return None


def default_store_name(flow: Flow) -> str:
    """The store a well without ``Store`` uses: ``DefaultStore``, else ``default``."""
    return flow.default_store or DEFAULT_STORE


def effective_wells(flow: Flow) -> list[DataWell]:
    """The flow's declared wells or, when it declares none, the implied ones.

    Implied: an upload well (``Source: upload``) on each input edge no node
    produces and a sink well (``Source`` None) on each output edge no node
    consumes, in node order; ``Store`` and ``Key`` None (the default store and
    key template apply). Intermediate edges get none.
    """
    if flow.data_wells:
        return list(flow.data_wells)
    produced = {e.edge for node in flow.nodes for e in node.outputs}
    consumed = {e.edge for node in flow.nodes for e in node.inputs}
    wells: dict[str, DataWell] = {}
    for node in flow.nodes:
        for binding in node.inputs:
            if binding.edge not in produced and binding.edge not in wells:
                wells[binding.edge] = DataWell(edge=binding.edge, source="upload")
        for binding in node.outputs:
            if binding.edge not in consumed and binding.edge not in wells:
                wells[binding.edge] = DataWell(edge=binding.edge)
    return list(wells.values())


__all__ = [
    "lifetime_problem",
    "lifetime_seconds",
    "DEFAULT_STORE",
    "PRODUCING_SOURCES",
    "STORE_TYPES",
    "StorePolicy",
    "WELL_SOURCES",
    "default_store_name",
    "effective_wells",
]
