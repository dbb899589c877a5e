"""docs/reference.md: generated from the wire models, and kept in step with them."""

import re
import types
from pathlib import Path
from typing import Union, get_args, get_origin

import pytest

from orchestrator import reference
from orchestrator.models import (
    DEFAULT_MAX_ATTEMPTS,
    MAX_TIMEOUT_SECONDS,
    CommandDef,
    DataWell,
    FlagDef,
    FlagType,
    Flow,
    FlowSubmission,
    Node,
    NodeDef,
)
from orchestrator.reference import REGENERATE, reference_markdown, wire_models
from orchestrator.tiers import TIERS
from orchestrator.validation import DEFAULT_KEY_TEMPLATE, KEY_VARIABLES, WELL_SOURCES

PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference.md"

EVERY_FIELD = [
    (model, name, field) for model in wire_models() for name, field in model.model_fields.items()
]


def _row(page: str, field: str) -> str:
    """The first table row of a field's JSON name."""
    match = re.search(rf"^\| `{re.escape(field)}` \|.*$", page, re.MULTILINE)
    assert match, f"no row for {field}"
    return match.group(0)


def _section(page: str, model: type) -> str:
    return page.split(f"\n## {model.__name__}\n", 1)[1].split("\n## ", 1)[0]


def test_the_page_is_what_the_models_render():
    assert PAGE.read_text(encoding="utf-8") == reference_markdown(), (
        f"docs/reference.md is out of date with orchestrator/models.py; run: {REGENERATE}"
    )


def test_the_page_covers_every_model_of_a_flow_and_a_nodedef():
    names = {model.__name__ for model in wire_models()}
    assert {"FlowSubmission", "Flow", "DataWell", "Node", "NodeDef", "FlagDef"} <= names
    assert wire_models()[0] is FlowSubmission
    page = reference_markdown()
    for model in wire_models():
        assert f"\n## {model.__name__}\n" in page


@pytest.mark.parametrize(
    ("model", "name", "field"),
    EVERY_FIELD,
    ids=[f"{model.__name__}.{field.alias or name}" for model, name, field in EVERY_FIELD],
)
def test_every_field_says_what_it_is(model, name, field):
    assert field.description and field.description.strip()


def test_the_page_names_what_a_user_writes():
    page = reference_markdown()
    for field in ("Exec", "Tier", "MaxAttempts", "Timeout", "Source", "Key"):
        _row(page, field)
    flags = _section(page, FlagDef)
    for field in ("Values", "Min", "Max"):
        _row(flags, field)


def test_rows_carry_the_models_types_limits_and_defaults():
    page = reference_markdown()
    nodedef = _section(page, NodeDef)
    assert _row(nodedef, "MaxAttempts").startswith(
        f"| `MaxAttempts` | integer; 1 to 100 | `{DEFAULT_MAX_ATTEMPTS}` |"
    )
    assert f"at most {MAX_TIMEOUT_SECONDS}" in _row(nodedef, "Timeout")
    assert "| `Image` | string | required |" in nodedef
    # Accepted on the wire as more than the attribute's type, and said so.
    assert "| string, integer, number or boolean | required |" in _row(page, "Value")
    # Defaults that validation refuses are no defaults to a user.
    node = _section(page, Node)
    assert _row(node, "ID").startswith("| `ID` | string; not empty | required |")
    assert "at least 1 item | required |" in _row(_section(page, Flow), "Nodes")
    assert "[CommandDef](#commanddef)" in _row(nodedef, "Command")


def test_the_descriptions_name_what_the_code_takes():
    # The descriptions are prose; these lists are the code's own, so a new source,
    # key variable, flag type or tier family cannot go unmentioned.
    source = DataWell.model_fields["source"].description or ""
    for value in WELL_SOURCES:
        assert f"`{value}`" in source
    key = DataWell.model_fields["key"].description or ""
    for variable in KEY_VARIABLES:
        assert f"`${{{variable}}}`" in key
    assert DEFAULT_KEY_TEMPLATE in key
    flag_type = FlagDef.model_fields["type"].description or ""
    for kind in FlagType:
        assert kind.value in flag_type
    tier = NodeDef.model_fields["tier"].description or ""
    for family in sorted({name.split("-")[0] for name in TIERS}):
        assert f"`{family}-" in tier
    exec_ = CommandDef.model_fields["exec"].description or ""
    for placeholder in ("${InputName}", "${OutputName}", "${FlagName}", "FLAG_<NAME>"):
        assert placeholder in exec_


@pytest.mark.parametrize(
    ("model", "name", "field"),
    EVERY_FIELD,
    ids=[f"{model.__name__}.{field.alias or name}" for model, name, field in EVERY_FIELD],
)
def test_null_means_the_default_as_the_page_says(model, name, field):
    if get_origin(field.annotation) in (Union, types.UnionType) and type(None) in get_args(
        field.annotation
    ):
        assert not field.is_required() and field.get_default() is None


def test_the_module_prints_the_page(capsys):
    reference.main()
    assert capsys.readouterr().out == reference_markdown()
