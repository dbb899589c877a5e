"""The built-in NodeDefs' texts reach users whole (the catalog, the UI, pipewell nodes)."""

from __future__ import annotations

import re

from orchestrator.catalog import BUILTIN_DIR, load_catalog
from orchestrator.validation.flags import definition_problem

DESCRIPTION = re.compile(r"^\s*-?\s*Description:\s*(.+?)\s*$")


def _descriptions(node_def) -> set[str]:  # type: ignore[no-untyped-def]
    texts = {node_def.description}
    for group in (node_def.flags, node_def.inputs, node_def.outputs, node_def.all_commands()):
        texts.update(item.description for item in group)
    return texts


def test_every_catalog_description_is_read_as_written():
    """A plain YAML scalar ends at ' #' (a comment): '(a name or #rrggbb)' was cut."""
    loaded = set().union(*(_descriptions(d) for d in load_catalog().values()))
    written = []
    for path in sorted(BUILTIN_DIR.glob("*.y*ml")):
        for line in path.read_text().splitlines():
            match = DESCRIPTION.match(line)
            # Block scalars (>-, |) hold '#' as text: only one-line values can be cut.
            if match and match.group(1)[0] not in ">|":
                text = match.group(1)
                if text[0] in "\"'" and text[-1] == text[0]:
                    text = text[1:-1].replace('\\"', '"')
                written.append((path.name, text))
    assert len(written) > 50
    cut = [(name, text) for name, text in written if text not in loaded]
    assert cut == []


def test_every_catalog_flag_declaration_is_consistent():
    """Types, Values, Min and Max fit together and every Default fits them."""
    problems = [
        (uses, flag.name, definition_problem(flag))
        for uses, node_def in load_catalog().items()
        for flag in node_def.flags
        if definition_problem(flag)
    ]
    assert problems == []
    declared = sum(
        1
        for node_def in load_catalog().values()
        for flag in node_def.flags
        if flag.values or flag.min is not None or flag.max is not None
    )
    assert declared > 40
