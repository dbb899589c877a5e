"""A flow on disk, as ``pipewell validate`` reads it.

The file is YAML or JSON (by its suffix: ``.json`` is JSON, anything else
YAML): ``{Flow, NodeDefs}`` as the API takes it, or a bare Flow (``Name``,
``Nodes``). NodeDefs come from the file's own ``NodeDefs``, then each
``--nodedefs`` file (one NodeDef, a list of them, or another flow file's
``NodeDefs``), then the ``nodedefs/``
folder beside the flow file, the first of a Publisher/Name winning; the
service's built-in catalog answers for the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from orchestrator.documents import parse_body, schema_errors
from orchestrator.errors import FlowFileUnreadable, FlowInvalid
from orchestrator.models import Flow, FlowSubmission
from orchestrator.validation.wells import effective_wells


def read_flow_file(path: Path, nodedef_files: Sequence[Path] = ()) -> FlowSubmission:
    """The submission the file describes; FlowFileUnreadable, or FlowInvalid for its schema."""
    document = _read(path)
    if isinstance(document, dict) and "Flow" in document:
        flow, defs = document["Flow"], _as_list(document.get("NodeDefs") or [], path)
    else:
        flow, defs = document, []
    beside = path.parent / "nodedefs"
    found = sorted(beside.glob("*.y*ml")) + sorted(beside.glob("*.json")) if beside.is_dir() else []
    known = {_uses(d) for d in defs}
    for extra in [*nodedef_files, *found]:
        for node_def in _as_list(_read(extra), extra):
            if _uses(node_def) not in known:
                known.add(_uses(node_def))
                defs.append(node_def)
    try:
        return FlowSubmission.model_validate({"Flow": flow, "NodeDefs": defs})
    except ValidationError as exc:
        raise FlowInvalid(schema_errors(exc)) from exc


def upload_edges(flow: Flow) -> list[str]:
    """The edges a run of ``flow`` waits for a file on (its WaitingURLs), in node order:
    read by a node, produced by none, and not filled from a store (a static well)."""
    produced = {o.edge for node in flow.nodes for o in node.outputs}
    static = {w.edge for w in effective_wells(flow) if w.source == "static"}
    edges: dict[str, None] = {}
    for node in flow.nodes:
        for binding in node.inputs:
            if binding.edge not in produced and binding.edge not in static:
                edges[binding.edge] = None
    return list(edges)


def _read(path: Path) -> Any:
    try:
        body = path.read_bytes()
    except OSError as exc:
        raise FlowFileUnreadable(path, exc.strerror or str(exc)) from exc
    kind = "json" if path.suffix.lower() == ".json" else "yaml"
    try:
        return parse_body(body, kind)
    except Exception as exc:  # yaml's and json's errors, ValueErrors of the limits
        raise FlowFileUnreadable(path, f"not valid {kind.upper()}: {exc}") from exc


def _as_list(value: Any, path: Path) -> list[Any]:
    if isinstance(value, dict) and "NodeDefs" in value:
        value = value["NodeDefs"] or []
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, dict) for v in values):
        raise FlowFileUnreadable(path, "NodeDefs are objects (Publisher, Name, Image, …)")
    return list(values)


def _uses(node_def: dict[str, Any]) -> str:
    return f"{node_def.get('Publisher')}/{node_def.get('Name')}"


__all__ = ["read_flow_file", "upload_edges"]
