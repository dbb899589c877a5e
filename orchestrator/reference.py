"""The reference of every Flow and NodeDef field, rendered from the wire models.

``docs/reference.md`` is this module's output::

    python -m orchestrator.reference > docs/reference.md

Each field's name, type, limits, default and description come from the pydantic
models that parse requests (:mod:`orchestrator.models`), which the OpenAPI document
is built from too, and a unit test compares the page with a fresh rendering: a field
cannot change without its documentation following.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
import types
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

from orchestrator.models import NAME_RULE, FlowSubmission
from orchestrator.tiers import GIB, MIB, TIERS
from orchestrator.validation.object_keys import KEY_VARIABLES, key_values

REGENERATE = "python -m orchestrator.reference > docs/reference.md"

_SCALARS: dict[type, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}

# Sample values for the key variables' examples: fixed, so the page is the same each time.
_SAMPLE_KEY_VALUES = key_values(
    run_id="4bf92f3577b34da6a3ce929d0e0e4736",
    flow_name="image-resize",
    edge="input-image",
    now=datetime(2026, 3, 3, 10, 30, 5, tzinfo=UTC),
    uuid="0f6c1d2e3b4a59687766554433221100",
)


def wire_models(root: type[BaseModel] = FlowSubmission) -> list[type[BaseModel]]:
    """``root`` and every model its fields use, depth first in field order."""
    found: list[type[BaseModel]] = []

    def visit(model: type[BaseModel]) -> None:
        if model in found:
            return
        found.append(model)
        for field in model.model_fields.values():
            for nested in _models_in(field.annotation):
                visit(nested)

    visit(root)
    return found


def reference_markdown() -> str:
    """The whole page, ending with a newline; the same models give the same text."""
    models = wire_models()
    places = _places(models)
    out = [
        "# Flow and NodeDef reference",
        "",
        f"<!-- Generated from orchestrator/models.py by `{REGENERATE}`; do not edit by hand. -->",
        "",
        "Every field of the body of `POST /api/v1/flow/test` (and of `/api/v1/flow/validate` "
        "and `/api/v1/flows`): a Flow, and the NodeDefs its nodes use. The page is generated "
        "from the models that parse these requests, the ones the OpenAPI document "
        "(`/openapi.json`) is built from; to change it, change a field's `description` in "
        "`orchestrator/models.py` and run:",
        "",
        "```sh",
        REGENERATE,
        "```",
        "",
        "A unit test fails while the two differ.",
        "",
        "Field names are the JSON keys, as shown; a key a model does not list is refused "
        "unless its section says otherwise. A *type* of `null` means the field may be sent "
        "as null, which is the same as leaving it out. A *default* is what a field left out "
        "means; a *required* field must be given. An *identifier* is a name "
        f"that must {NAME_RULE}: names become file names and environment variables, never "
        "paths.",
        "",
        *(f"- [{model.__name__}](#{_anchor(model)})" for model in models),
        "- [Tiers](#tiers)",
        "- [Key template variables](#key-template-variables)",
    ]
    for model in models:
        out += ["", *_model_section(model, places.get(model, []))]
    out += ["", *_tier_section(), "", *_key_section()]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- sections


def _model_section(model: type[BaseModel], places: list[str]) -> list[str]:
    lines = [f"## {model.__name__}", ""]
    doc = model.__dict__.get("__doc__")
    if doc:
        lines += [_rst_to_markdown(inspect.cleandoc(doc)), ""]
    if places:
        lines += ["Found at " + ", ".join(f"`{p}`" for p in places) + ".", ""]
    if model.model_config.get("extra") != "forbid":
        lines += ["Keys it does not list are accepted and ignored.", ""]
    if not model.model_fields:
        lines.append("It has no fields of its own.")
        return lines
    schema = model.model_json_schema(mode="validation")
    lines += ["| Field | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for name, field in model.model_fields.items():
        key = field.alias or name
        prop = schema["properties"][key]
        kind = _input_type_text(model, name, field)
        limits = _limits(prop)
        if limits:
            kind = f"{kind}; {limits}"
        cells = [f"`{key}`", kind, _default_text(field, prop), field.description or ""]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def _tier_section() -> list[str]:
    lines = [
        "## Tiers",
        "",
        "What a NodeDef's `Tier` gives each container of its nodes. The default "
        "`MaxOutputBytes` is capped by the operator's `executor.max_output_bytes`.",
        "",
        "| Tier | CPUs | Memory | GPU | Default `MaxOutputBytes` |",
        "| --- | --- | --- | --- | --- |",
    ]
    for tier in TIERS.values():
        gpu = f"{tier.gpus} ({tier.gpu_vendor})" if tier.gpus else "none"
        lines.append(
            f"| `{tier.name}` | {tier.cpus} | {_bytes(tier.memory)} | {gpu} "
            f"| {_bytes(tier.output_bytes)} |"
        )
    return lines


def _key_section() -> list[str]:
    lines = [
        "## Key template variables",
        "",
        "What each variable of a DataWell's `Key` becomes, for a run of the flow "
        f"`{_SAMPLE_KEY_VALUES['FLOW_NAME']}` started at {_SAMPLE_KEY_VALUES['TIMESTAMP']} "
        f"and its edge `{_SAMPLE_KEY_VALUES['EDGE']}`.",
        "",
        "| Variable | Example |",
        "| --- | --- |",
    ]
    lines += [f"| `${{{name}}}` | `{_SAMPLE_KEY_VALUES[name]}` |" for name in KEY_VARIABLES]
    return lines


# ---------------------------------------------------------------- fields


def _places(models: list[type[BaseModel]]) -> dict[type[BaseModel], list[str]]:
    """Where each model occurs, as ``Parent.Field`` (``[]`` for a list's items)."""
    places: dict[type[BaseModel], list[str]] = {}
    for parent in models:
        for name, field in parent.model_fields.items():
            item = "[]" if get_origin(field.annotation) is list else ""
            for nested in _models_in(field.annotation):
                key = field.alias or name
                places.setdefault(nested, []).append(f"{parent.__name__}.{key}{item}")
    return places


def _input_type_text(model: type[BaseModel], name: str, field: FieldInfo) -> str:
    # A before-validator that declares the input it takes accepts more than the
    # annotation (numbers as flag values, one MIME type as a list): say what is sent.
    for decorator in model.__pydantic_decorators__.field_validators.values():
        accepted = decorator.info.json_schema_input_type
        if name in decorator.info.fields and accepted is not PydanticUndefined:
            return _type_text(accepted)
    return _type_text(field.annotation)


def _type_text(annotation: Any) -> str:
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        return _type_text(args[0])
    if origin in (Union, types.UnionType):
        parts = [_type_text(a) for a in args if a is not type(None)]
        if type(None) in args:
            parts.append("null")
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]
    if origin is list:
        return f"list of {_grouped(_type_text(args[0]))}"
    if origin is dict:
        return f"map of {_type_text(args[0])} to {_grouped(_type_text(args[1]))}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{_anchor(annotation)})"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "string"
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    # A new kind of field should be described on purpose, not printed as Python.
    raise TypeError(f"no reference wording for the type {annotation!r}")


def _grouped(text: str) -> str:
    return f"({text})" if " or " in text else text


def _limits(prop: dict[str, Any]) -> str:
    """The bounds the schema states, on the field or on one of its alternatives."""
    found: dict[str, Any] = {}
    for part in (prop, *prop.get("anyOf", ())):
        found.update((k, v) for k, v in part.items() if k not in found)
    said: list[str] = []
    for low, high, unit in (
        ("minLength", "maxLength", "character"),
        ("minItems", "maxItems", "item"),
    ):
        if low in found or high in found:
            said.append(_count_range(found.get(low), found.get(high), unit))
    lowest, highest = found.get("minimum"), found.get("maximum")
    if lowest is not None and highest is not None:
        said.append(f"{_number(lowest)} to {_number(highest)}")
    else:
        if lowest is not None:
            said.append(f"at least {_number(lowest)}")
        if highest is not None:
            said.append(f"at most {_number(highest)}")
    if "exclusiveMinimum" in found:
        said.insert(0, f"over {_number(found['exclusiveMinimum'])}")
    if "exclusiveMaximum" in found:
        said.append(f"under {_number(found['exclusiveMaximum'])}")
    return ", ".join(said)


def _count_range(low: int | None, high: int | None, unit: str) -> str:
    if low == 1 and high is None and unit == "character":
        return "not empty"
    if low is not None and high is not None:
        return f"{low} to {high} {unit}s"
    if low is not None:
        return f"at least {low} {unit}{'' if low == 1 else 's'}"
    return f"at most {high} {unit}{'' if high == 1 else 's'}"


def _default_text(field: FieldInfo, prop: dict[str, Any]) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    # A default the schema's own bounds refuse is there for validation to name the
    # problem (models._refused_below), not a value a user may leave out.
    if isinstance(value, str | list) and len(value) < prop.get(
        "minLength" if isinstance(value, str) else "minItems", 0
    ):
        return "required"
    return f"`{json.dumps(to_jsonable_python(value))}`"


# ---------------------------------------------------------------- text


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in get_args(annotation):
        yield from _models_in(arg)


def _anchor(model: type[BaseModel]) -> str:
    return model.__name__.lower()


def _rst_to_markdown(text: str) -> str:
    return re.sub(r"``([^`]+)``", r"`\1`", text)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _bytes(count: int) -> str:
    if count % GIB == 0:
        return f"{count // GIB} GiB"
    return f"{count // MIB} MiB"


def main() -> None:
    sys.stdout.write(reference_markdown())


if __name__ == "__main__":
    main()


__all__ = ["REGENERATE", "main", "reference_markdown", "wire_models"]
