"""Every check of a submission, in one pass that reports every problem at once.

:func:`validate` builds one :class:`~.context.CheckContext` (``context``: what the
checks read, and the result they add to) and runs the topics over it, in the
order their entries are reported: ``names`` (NAME_001), ``stores`` (STORE_*),
``nodedefs`` (DEF_*, TYPE_*), ``nodes`` (FLOW_002, NODE_*), ``edges`` (EDGE_*,
FLOW_001), ``wells`` (WELL_*) and ``collections`` (COLL_*; FLOW_001 comes last).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from orchestrator.models import FlowSubmission, NodeDef
from orchestrator.validation.checks import collections, edges, names, nodedefs, nodes, wells
from orchestrator.validation.checks import stores as store_checks  # validate() takes `stores`
from orchestrator.validation.checks.context import CheckContext
from orchestrator.validation.checks.stores import FLOW_STORE_BOUNDS
from orchestrator.validation.defs import EMPTY_CATALOG
from orchestrator.validation.results import ValidationEntry, ValidationResult
from orchestrator.validation.wells import STORE_TYPES, StorePolicy

#: The checks in report order; each appends its entries to the context.
CHECKS: tuple[Callable[[CheckContext], None], ...] = (
    nodes.check_present,
    names.check,
    store_checks.check,
    nodedefs.check,
    nodes.check_ids,
    nodes.check_recompute,
    nodes.check,
    edges.check,
    wells.check,
    wells.check_key_collisions,
    collections.check,
    edges.check_cycles,
)


def validate(
    submission: FlowSubmission,
    *,
    catalog: Mapping[str, NodeDef] | None = EMPTY_CATALOG,
    store_types: Iterable[str] = STORE_TYPES,
    stores: StorePolicy | None = None,
    max_nodes: int | None = None,
) -> ValidationResult:
    """Every problem of a submission, errors and warnings, in one result.

    NodeDefs are looked up in the submission's ``NodeDefs`` first, then in
    ``catalog`` (keys ``publisher/name``). ``store_types`` are the store Types
    this service can open; ``stores`` what flows may use here (by default: the
    ``default`` store only, no store of their own). A flow of over ``max_nodes``
    nodes gets FLOW_003 alone: nothing else of it is checked, nor would run.
    """
    count = len(submission.flow.nodes)
    if max_nodes is not None and count > max_nodes:
        return ValidationResult(
            errors=[
                ValidationEntry(
                    code="FLOW_003",
                    message=f"the flow has {count} nodes, over this service's limit of "
                    f"{max_nodes} (max_flow_nodes); split it into flows of at most {max_nodes}, "
                    "or ask its operator for a higher limit",
                    field="Flow.Nodes",
                )
            ]
        )
    ctx = CheckContext.of(
        submission, catalog or EMPTY_CATALOG, tuple(store_types), stores or StorePolicy()
    )
    for check in CHECKS:
        check(ctx)
    return ctx.result


__all__ = ["CHECKS", "FLOW_STORE_BOUNDS", "validate"]
