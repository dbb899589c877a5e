"""NodeDefs by ``publisher/name``: the submitted ones first, then the catalog."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from orchestrator.errors import FlowInvalid
from orchestrator.models import FlowSubmission, Node, NodeDef
from orchestrator.validation.results import ValidationEntry

EMPTY_CATALOG: Mapping[str, NodeDef] = MappingProxyType({})


def resolve_defs(
    submission: FlowSubmission, catalog: Mapping[str, NodeDef] | None = None
) -> dict[str, NodeDef]:
    """Node ID → its NodeDef: the submission's NodeDefs first, then ``catalog``.

    Raises FlowInvalid (``NODE_001`` entries) when a node's def is missing.
    """
    lookup = DefLookup(submission.node_defs, catalog or EMPTY_CATALOG)
    found: dict[str, NodeDef] = {}
    missing: list[dict[str, Any]] = []
    for node in submission.flow.nodes:
        node_def = lookup.get(node.uses)
        if node_def is None:
            missing.append(
                ValidationEntry(
                    code="NODE_001", message=lookup.missing_message(node), node=node.id
                ).model_dump()
            )
        else:
            found[node.id] = node_def
    if missing:
        raise FlowInvalid(missing)
    return found


class DefLookup:
    """NodeDefs by ``publisher/name``: submitted first (first one wins), then the catalog."""

    def __init__(self, submitted: list[NodeDef], catalog: Mapping[str, NodeDef]) -> None:
        self.submitted: dict[str, NodeDef] = {}
        for node_def in submitted:
            self.submitted.setdefault(node_def.uses, node_def)
        self.catalog = catalog

    def get(self, uses: str) -> NodeDef | None:
        found = self.submitted.get(uses)
        return found if found is not None else self.catalog.get(uses)

    def missing_message(self, node: Node) -> str:
        who = f"node {node.id!r}" if node.id else "a node without ID"
        publisher, slash, name = node.uses.partition("/")
        if not slash or not publisher or not name or "/" in name:
            head = (
                f"{who} has Uses {node.uses!r}, which is not 'publisher/name'; "
                "write the Publisher and Name of a NodeDef, e.g. 'pipewell/resize'"
            )
        else:
            head = (
                f"{who} uses {node.uses!r} but no NodeDef with Publisher {publisher!r} "
                f"and Name {name!r} was given; add it to NodeDefs"
            )
        same_name = sorted(k for k in self.catalog if k.partition("/")[2] == name and name)
        if same_name:
            return f"{head} or use a built-in one: {', '.join(same_name)}"
        known = [*self.submitted, *self.catalog]
        close = difflib.get_close_matches(node.uses, known, n=3, cutoff=0.6)
        if close:
            return f"{head} (did you mean {', '.join(close)}?)"
        if self.catalog:
            return f"{head} or use a built-in one: {', '.join(sorted(self.catalog)[:6])}"
        return head


__all__ = [
    "EMPTY_CATALOG",
    "DefLookup",
    "resolve_defs",
]
