"""JSON and YAML documents, read as the API reads a body and the CLI a flow file.

A document is untrusted: its YAML aliases may not expand beyond a bound, its
nesting is bounded, and a string that is not text (a lone surrogate) is refused,
each with a ValueError saying what to send instead. Pure: no I/O, no HTTP.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from pydantic import ValidationError

#: Nodes a YAML document may hold once its aliases are expanded.
MAX_YAML_NODES = 100_000
#: Levels of nested objects and arrays a body may have.
MAX_DEPTH = 64


class _TooLarge(ValueError):
    pass


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses recursive aliases and alias expansion beyond MAX_YAML_NODES."""

    def compose_document(self):  # type: ignore[no-untyped-def]
        node = super().compose_document()
        _check_expansion(node)
        return node


def _check_expansion(root: yaml.Node) -> None:
    """Count the nodes of ``root`` as if every alias were copied out (an alias bomb's size)."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # the ancestors of the node being visited
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        children = _children(node)
        if finished:
            open_nodes.discard(id(node))
            size = 1 + sum(sizes[id(c)] for c in children)
            if size > MAX_YAML_NODES:
                raise _TooLarge(
                    f"its aliases expand to over {MAX_YAML_NODES} values; write the document "
                    "without aliases, or with fewer"
                )
            sizes[id(node)] = size
        elif id(node) in open_nodes:
            raise _TooLarge("an alias refers to a node that contains it (a recursive document)")
        elif id(node) not in sizes:
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; send a finite number")


def _check_shape(value: Any) -> None:
    """Refuse nesting over MAX_DEPTH, and strings that are not text (lone surrogates).

    JSON's ``\\ud800`` escape, alone, decodes to a string no file, argv or
    database can hold: refused here, not when a node's attempt writes it.
    """
    level: list[Any] = [value]
    for _ in range(MAX_DEPTH + 1):
        for item in level:
            for text in item.keys() if isinstance(item, dict) else (item,):
                if isinstance(text, str) and not text.isascii():
                    _check_text(text)
        level = [
            child
            for item in level
            if isinstance(item, dict | list)
            for child in (item.values() if isinstance(item, dict) else item)
        ]
        if not level:
            return
    raise ValueError(f"it nests objects and arrays over {MAX_DEPTH} levels deep")


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = f"\\u{ord(text[exc.start]):04x}"
        raise ValueError(
            f"a string holds a lone surrogate ({bad}), which is not text; send UTF-8, "
            "or a surrogate pair for a character beyond U+FFFF"
        ) from None


def parse_body(body: bytes, kind: str) -> Any:
    """The JSON or YAML document in ``body``; ValueError saying why it cannot be read."""
    try:
        if kind == "yaml":
            value = yaml.load(body, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader
        else:
            value = json.loads(body, parse_constant=_no_constants)
    except RecursionError:
        raise ValueError(f"it nests objects and arrays over {MAX_DEPTH} levels deep") from None
    _check_shape(value)
    return value


def schema_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """pydantic's errors as validation entries: where, and what to fix."""
    entries = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        entries.append(
            {"code": "SCHEMA_001", "message": f"{where}: {error['msg']}", "field": where}
        )
    return entries


__all__ = ["MAX_DEPTH", "MAX_YAML_NODES", "parse_body", "schema_errors"]
