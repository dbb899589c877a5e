"""Flow validation: every code, all problems at once, implicit wells, keys, order."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from orchestrator.errors import FlowInvalid
from orchestrator.models import DataWell, FlowSubmission, NodeDef
from orchestrator.validation import (
    CODES,
    DEFAULT_KEY_TEMPLATE,
    StorePolicy,
    ValidationEntry,
    ValidationResult,
    default_store_name,
    effective_wells,
    expand_key,
    resolve_defs,
    topological_order,
    validate,
)

NOW = datetime(2026, 3, 3, 10, 30, 5, tzinfo=UTC)

COPY = {"Publisher": "t", "Name": "copy", "Image": "busybox"}
RESIZE_BUILTIN = NodeDef.model_validate(
    {
        "Publisher": "pipewell",
        "Name": "resize",
        "Image": "pipewell/resize:latest",
        "Inputs": [{"Name": "image", "Required": True, "Type": ["image/png", "image/jpeg"]}],
        "Outputs": [{"Name": "resized", "Type": ["image/*"]}],
        "Flags": [{"Name": "width", "Default": "800"}, {"Name": "height"}],
    }
)
CATALOG = {RESIZE_BUILTIN.uses: RESIZE_BUILTIN}

SEED = {
    "Flow": {
        "Name": "image-resize",
        "Nodes": [
            {
                "ID": "resize-1",
                "Uses": "pupload/resize",
                "Inputs": [{"Name": "image", "Edge": "input-image"}],
                "Outputs": [{"Name": "resized", "Edge": "output-image"}],
                "Flags": [{"Name": "width", "Value": "800"}],
            }
        ],
    },
    "NodeDefs": [
        {
            "Publisher": "pupload",
            "Name": "resize",
            "Image": "pupload/resize:latest",
            "Tier": "c-small",
            "MaxAttempts": 3,
        }
    ],
}


def node(
    node_id: str,
    inputs: dict[str, str] | None = None,
    outputs: dict[str, str] | None = None,
    uses: str = "t/copy",
    **fields: Any,
) -> dict[str, Any]:
    """A node binding {Name: Edge} inputs and outputs."""
    return {
        "ID": node_id,
        "Uses": uses,
        "Inputs": [{"Name": k, "Edge": v} for k, v in (inputs or {}).items()],
        "Outputs": [{"Name": k, "Edge": v} for k, v in (outputs or {}).items()],
        **fields,
    }


FLOW_STORES = StorePolicy(flow_store_endpoints=frozenset({"http://s3.test"}))


def s3_store(name: str, **params: Any) -> dict[str, Any]:
    """A flow's own s3 store on an allowed endpoint with its own credentials; None drops a param."""
    base = {
        "bucket": "b",
        "endpoint_url": "http://s3.test",
        "access_key_id": "AKIDFLOW",
        "secret_access_key": "flow-secret",
    }
    merged = {k: v for k, v in {**base, **params}.items() if v is not None}
    return {"Name": name, "Type": "s3", "Params": merged}


def submission(nodes: list[dict], defs: list[dict] | None = None, **flow: Any) -> FlowSubmission:
    body = {
        "Flow": {"Name": "f", "Nodes": nodes, **flow},
        "NodeDefs": [COPY] if defs is None else defs,
    }
    return FlowSubmission.model_validate(body)


def check(sub: FlowSubmission, **kwargs: Any) -> ValidationResult:
    kwargs.setdefault("catalog", CATALOG)
    return validate(sub, **kwargs)


def only(result: ValidationResult, code: str) -> ValidationEntry:
    """The single error of ``result``, which must have ``code``."""
    assert [e.code for e in result.errors] == [code], result.errors
    return result.errors[0]


def with_code(entries: list[ValidationEntry], code: str) -> list[ValidationEntry]:
    return [e for e in entries if e.code == code]


def chain() -> list[dict]:
    return [
        node("a", {"in": "src"}, {"out": "e1"}),
        node("b", {"in": "e1"}, {"out": "e2"}),
        node("c", {"in": "e2"}, {"out": "out"}),
    ]


# ------------------------------------------------------------------ valid flows


def test_seed_example_is_valid():
    sub = FlowSubmission.model_validate(SEED)
    result = check(sub)
    assert result.ok and result.errors == [] and result.warnings == []
    assert resolve_defs(sub, CATALOG)["resize-1"].image == "pupload/resize:latest"
    assert effective_wells(sub.flow) == [
        DataWell(edge="input-image", source="upload"),
        DataWell(edge="output-image"),
    ]


def test_seed_example_with_the_builtin_def_is_valid():
    body = json.loads(json.dumps(SEED))
    body["Flow"]["Nodes"][0]["Uses"] = "pipewell/resize"
    body["NodeDefs"] = []
    sub = FlowSubmission.model_validate(body)
    assert check(sub).ok
    assert resolve_defs(sub, CATALOG)["resize-1"] is RESIZE_BUILTIN


def test_three_node_chain_is_valid_and_ordered():
    sub = submission(list(reversed(chain())))
    assert check(sub).ok
    assert topological_order(sub.flow) == ["a", "b", "c"]
    assert [(w.edge, w.source) for w in effective_wells(sub.flow)] == [
        ("out", None),
        ("src", "upload"),
    ]


def test_typed_diamond_is_valid_and_ordered():
    defs = [
        {
            "Publisher": "t",
            "Name": "split",
            "Image": "i",
            "Inputs": [{"Name": "in", "Type": ["image/*"]}],
            "Outputs": [{"Name": "out", "Type": ["image/png"]}],
        },
        {
            "Publisher": "t",
            "Name": "join",
            "Image": "i",
            "Inputs": [{"Name": "l", "Type": ["image/*"]}, {"Name": "r", "Type": ["*/*"]}],
            "Outputs": [{"Name": "out", "Type": ["application/json"]}],
        },
    ]
    nodes = [
        node("d", {"l": "left", "r": "right"}, {"out": "result"}, uses="t/join"),
        node("c", {"in": "mid"}, {"out": "right"}, uses="t/split"),
        node("b", {"in": "mid"}, {"out": "left"}, uses="t/split"),
        node("a", {"in": "src"}, {"out": "mid"}, uses="t/split"),
    ]
    sub = submission(nodes, defs)
    assert check(sub).ok
    assert topological_order(sub.flow) == ["a", "c", "b", "d"]


def test_pupload_style_flow_with_declared_wells_and_store_is_valid():
    defs = [
        {
            "Publisher": "pupload",
            "Name": "test",
            "Image": "i",
            "Inputs": [{"Name": "node_in", "Required": True, "Type": ["image/*"]}],
            "Outputs": [{"Name": "node_out", "Required": True, "Type": ["image/*"]}],
            "Flags": [{"Name": "node_flag", "Required": True}],
            "Command": {"Name": "testCommand", "Exec": "exit 1"},
        }
    ]
    nodes = [
        node("n1", {"node_in": "in-1"}, {"node_out": "edge1-2"}, uses="pupload/test"),
        node("n2", {"node_in": "edge1-2"}, {"node_out": "out-2"}, uses="pupload/test"),
    ]
    for n in nodes:
        n["Flags"] = [{"Name": "node_flag", "Value": 10}]
    sub = submission(
        nodes,
        defs,
        Stores=[s3_store("teststore")],
        DataWells=[
            {"Edge": "in-1", "Store": "teststore", "Source": "upload"},
            {"Edge": "edge1-2", "Store": "teststore"},
            {"Edge": "out-2", "Store": "teststore"},
        ],
    )
    result = check(sub, stores=FLOW_STORES)
    assert result.ok, result.errors
    assert result.warnings == []


# ------------------------------------------------------------------ FLOW


def test_flow_001_cycle_names_its_nodes():
    nodes = [
        node("a", {"in": "src", "back": "loop"}, {"out": "x"}),
        node("b", {"in": "x"}, {"out": "loop"}),
        node("c", {"in": "loop"}, {"out": "out"}),
    ]
    entry = only(check(submission(nodes)), "FLOW_001")
    assert entry.node == "a"
    assert "'a' -[x]-> 'b' -[loop]-> 'a'" in entry.message
    assert "'c'" not in entry.message  # downstream of the cycle, not in it
    with pytest.raises(FlowInvalid) as caught:
        topological_order(submission(nodes).flow)
    assert caught.value.errors[0]["code"] == "FLOW_001"


def test_flow_001_self_loop_and_two_separate_cycles():
    nodes = [
        node("self", {"in": "me"}, {"out": "me"}),
        node("p", {"in": "pq"}, {"out": "qp"}),
        node("q", {"in": "qp"}, {"out": "pq"}),
    ]
    result = check(submission(nodes))
    cycles = with_code(result.errors, "FLOW_001")
    assert [e.node for e in cycles] == ["self", "p"]
    assert "'self' -[me]-> 'self'" in cycles[0].message


def test_flow_002_no_nodes():
    entry = only(check(submission([])), "FLOW_002")
    assert "add at least one node" in entry.message


# ------------------------------------------------------------------ NODE


def test_node_001_missing_def_suggests_the_builtin():
    body = json.loads(json.dumps(SEED))
    body["NodeDefs"] = []
    sub = FlowSubmission.model_validate(body)
    entry = only(check(sub), "NODE_001")
    assert entry.node == "resize-1"
    assert entry.field == "Flow.Nodes.0.Uses"
    assert entry.message == (
        "node 'resize-1' uses 'pupload/resize' but no NodeDef with Publisher 'pupload' and "
        "Name 'resize' was given; add it to NodeDefs or use a built-in one: pipewell/resize"
    )
    with pytest.raises(FlowInvalid) as caught:
        resolve_defs(sub, CATALOG)
    assert caught.value.errors[0]["code"] == "NODE_001"


def test_node_001_malformed_uses():
    entry = only(check(submission([node("a", uses="copy")])), "NODE_001")
    assert entry.node == "a"
    assert "not 'publisher/name'" in entry.message


def test_submitted_def_wins_over_the_catalog():
    own = {**COPY, "Publisher": "pipewell", "Name": "resize", "Image": "mine"}
    sub = submission([node("a", {"whatever": "src"}, {"x": "out"}, uses="pipewell/resize")], [own])
    assert check(sub).ok
    assert resolve_defs(sub, CATALOG)["a"].image == "mine"


def test_node_002_and_003_required_input_and_output():
    defs = [
        {
            **COPY,
            "Inputs": [{"Name": "in", "Required": True}, {"Name": "opt"}],
            "Outputs": [{"Name": "out", "Required": True}, {"Name": "log"}],
        }
    ]
    sub = submission([node("a", {"opt": "src"}, {"log": "l"})], defs)
    result = check(sub)
    assert result.codes() == ["NODE_002", "NODE_003"]
    missing_in, missing_out = result.errors
    assert (missing_in.node, missing_out.node) == ("a", "a")
    assert "'in'" in missing_in.message and "Inputs" in missing_in.message
    assert "'out'" in missing_out.message and "Outputs" in missing_out.message


def test_node_004_unknown_tier_lists_valid_ones():
    entry = only(
        check(submission([node("a", {"in": "s"}, {"out": "o"})], [{**COPY, "Tier": "c-huge"}])),
        "NODE_004",
    )
    assert entry.node == "a"
    assert "'c-huge'" in entry.message and "c-small" in entry.message


def test_node_005_required_flag_without_default():
    defs = [
        {
            **COPY,
            "Flags": [
                {"Name": "width", "Required": True},
                {"Name": "height", "Required": True, "Default": 600},
                {"Name": "quality"},
            ],
        }
    ]
    entry = only(check(submission([node("a", {"in": "s"}, {"out": "o"})], defs)), "NODE_005")
    assert entry.node == "a"
    assert "'width'" in entry.message
    given = node("a", {"in": "s"}, {"out": "o"}, Flags=[{"Name": "width", "Value": 1}])
    assert check(submission([given], defs)).ok


def test_node_006_unknown_flag_only_when_the_def_declares_flags():
    defs = [{**COPY, "Flags": [{"Name": "width"}, {"Name": "height"}]}]
    flags = [{"Name": "widht", "Value": "1"}]
    entry = only(
        check(submission([node("a", {"in": "s"}, {"out": "o"}, Flags=flags)], defs)), "NODE_006"
    )
    assert entry.node == "a" and entry.field == "Flow.Nodes.0.Flags.0.Name"
    assert "'widht'" in entry.message and "'width'" in entry.message
    # A def without Flags accepts any flag: the node's own declarations stand.
    assert check(submission([node("a", {"in": "s"}, {"out": "o"}, Flags=flags)])).ok


def test_node_007_duplicate_id():
    nodes = [node("a", {"in": "s"}, {"out": "m"}), node("a", {"in": "m"}, {"out": "o"})]
    entry = only(check(submission(nodes)), "NODE_007")
    assert entry.node == "a"
    assert "Flow.Nodes.0, Flow.Nodes.1" in entry.message


def test_node_008_missing_id():
    entry = only(check(submission([node("", {"in": "s"}, {"out": "o"})])), "NODE_008")
    assert entry.node is None
    assert entry.field == "Flow.Nodes.0.ID"


def test_node_009_command_problems():
    several = {
        **COPY,
        "Name": "multi",
        "Commands": [{"Name": "fast", "Exec": "cp a b"}, {"Name": "slow", "Exec": "cp -v a b"}],
    }
    broken = {**COPY, "Name": "broken", "Command": {"Name": "run", "Exec": "sh -c 'echo hi"}}
    nodes = [
        node("unknown", {"in": "s1"}, {"out": "o1"}, uses="t/multi", Command="medium"),
        node("ambiguous", {"in": "s2"}, {"out": "o2"}, uses="t/multi"),
        node("unbalanced", {"in": "s3"}, {"out": "o3"}, uses="t/broken"),
        node("none", {"in": "s4"}, {"out": "o4"}, Command="run"),
        node("chosen", {"in": "s5"}, {"out": "o5"}, uses="t/multi", Command="slow"),
    ]
    result = check(submission(nodes, [COPY, several, broken]))
    entries = with_code(result.errors, "NODE_009")
    assert result.codes() == ["NODE_009"] * 4
    assert [e.node for e in entries] == ["unknown", "ambiguous", "unbalanced", "none"]
    assert "'fast', 'slow'" in entries[0].message
    assert "must choose one" in entries[1].message
    assert "quotes" in entries[2].message
    assert "remove Command" in entries[3].message


def test_node_010_undeclared_binding_only_when_the_def_declares_some():
    defs = [{**COPY, "Inputs": [{"Name": "image"}], "Outputs": [{"Name": "resized"}]}]
    entry = only(check(submission([node("a", {"img": "s"}, {"resized": "o"})], defs)), "NODE_010")
    assert (entry.node, entry.edge) == ("a", "s")
    assert "'img'" in entry.message and "'image'" in entry.message
    # No Outputs declared: any output name goes.
    defs = [{**COPY, "Inputs": [{"Name": "image"}]}]
    assert check(submission([node("a", {"image": "s"}, {"anything": "o"})], defs)).ok


def test_node_011_same_name_bound_twice():
    bad = node("a", outputs={"out": "o"})
    bad["Inputs"] = [{"Name": "in", "Edge": "s1"}, {"Name": "in", "Edge": "s2"}]
    entry = only(check(submission([bad])), "NODE_011")
    assert entry.node == "a" and entry.field == "Flow.Nodes.0.Inputs.1.Name"


TYPED = {
    **COPY,
    "Flags": [
        {"Name": "width", "Type": "integer", "Min": 1, "Max": 8192, "Default": 800},
        {"Name": "opacity", "Type": "Number", "Min": 0, "Max": 1},
        {"Name": "strip", "Type": "boolean", "Default": "yes"},
        {"Name": "format", "Values": ["png", "jpeg"], "Default": "png"},
        {"Name": "level", "Type": "integer", "Values": [1, 5, 9]},
        {"Name": "label", "Required": True},
    ],
}


def flagged(**flags: Any) -> FlowSubmission:
    values = {"label": "x", **flags}
    sets = [{"Name": k, "Value": v} for k, v in values.items()]
    return submission([node("a", {"in": "s"}, {"out": "o"}, Flags=sets)], [TYPED])


def test_flag_values_that_fit_their_declaration_pass():
    assert check(flagged()).ok
    fits = dict(width="8192", opacity="0.25", strip="OFF", format="jpeg", level=5)
    assert check(flagged(**fits)).ok
    # JSON numbers and booleans are read as their text; an empty value means "not set".
    assert check(flagged(width=1, opacity=1, strip=False, level="")).ok


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("width", "wide", "'wide', which is not an integer; write a whole number"),
        ("width", "12.5", "is not an integer"),
        ("width", "0", "is out of range; use 1 to 8192"),
        ("width", 9000, "'9000', which is out of range; use 1 to 8192"),
        ("opacity", "1e3", "is not a number; write a decimal"),
        ("opacity", "nan", "is not a number"),
        ("opacity", "-0.5", "is out of range; use 0 to 1"),
        ("strip", "maybe", "is not a boolean; use true or false"),
        ("format", "bmp", "'bmp', which is not one of the values it takes: 'png', 'jpeg'"),
        ("format", "PNG", "not one of the values it takes"),
        ("level", "3", "not one of the values it takes: '1', '5', '9'"),
        ("label", " ", "is empty, and the flag is required"),
    ],
)
def test_node_012_flag_value_that_does_not_fit(flag: str, value: Any, says: str):
    entry = only(check(flagged(**{flag: value})), "NODE_012")
    assert says in entry.message, entry.message
    assert entry.node == "a" and entry.field.startswith("Flow.Nodes.0.Flags.")
    assert entry.field.endswith(".Value")


def test_node_012_reports_every_bad_flag_at_once():
    result = check(flagged(width="wide", format="bmp", strip="2"))
    assert result.codes() == ["NODE_012"] * 3
    assert [e.field for e in result.errors] == [f"Flow.Nodes.0.Flags.{k}.Value" for k in (1, 2, 3)]


@pytest.mark.parametrize(
    ("declared", "says"),
    [
        ({"Type": "color"}, "Type 'color' is not a flag type; use one of string, integer"),
        ({"Type": "string", "Max": 3}, "Min and Max apply to integer and number flags"),
        ({"Type": "boolean", "Values": ["yes"]}, "Values does not apply to a boolean"),
        ({"Type": "integer", "Min": 5, "Max": 1}, "Min 5 is greater than Max 1"),
        ({"Type": "integer", "Values": ["one"]}, "Values include 'one', which is not an integer"),
        ({"Type": "integer", "Min": 1, "Default": "0"}, "Default '0' is too small; use 1 or more"),
        ({"Values": ["a", "b"], "Default": "c"}, "Default 'c' is not one of the values"),
    ],
)
def test_def_002_inconsistent_flag_declaration(declared: dict[str, Any], says: str):
    defs = [{**COPY, "Flags": [{"Name": "f", **declared}]}]
    entry = only(check(submission([node("a", {"in": "s"}, {"out": "o"})], defs)), "DEF_002")
    assert says in entry.message, entry.message
    assert entry.field == "NodeDefs.0.Flags.0"


def test_flag_type_defaults_to_string_and_reads_go_zero_value():
    defs = [{**COPY, "Flags": [{"Name": "f", "Type": ""}, {"Name": "g"}]}]
    sub = submission(
        [node("a", {"in": "s"}, {"out": "o"}, Flags=[{"Name": "f", "Value": "x"}])], defs
    )
    assert check(sub).ok
    assert [f.type for f in sub.node_defs[0].flags] == ["string", "string"]


def test_def_001_conflicting_duplicate_defs():
    nodes = [node("a", {"in": "s"}, {"out": "o"})]
    assert check(submission(nodes, [COPY, {**COPY, "ID": 7}])).ok  # the same def twice is fine
    entry = only(check(submission(nodes, [COPY, {**COPY, "Image": "other"}])), "DEF_001")
    assert entry.field == "NodeDefs.1"


# ------------------------------------------------------------------ EDGE


def test_edge_001_and_002_apply_once_wells_are_declared():
    nodes = [node("a", {"in": "src"}, {"out": "out"})]
    # Same flow with a well on an unrelated aspect: nothing is implied any more.
    sub = submission(nodes, DataWells=[{"Edge": "src", "Source": "upload"}])
    entry = only(check(sub), "EDGE_002")
    assert (entry.edge, entry.node) == ("out", "a")
    assert '{"Edge": "out"}' in entry.message
    sub = submission(nodes, DataWells=[{"Edge": "out"}])
    entry = only(check(sub), "EDGE_001")
    assert (entry.edge, entry.node) == ("src", "a")
    assert '"Source": "upload"' in entry.message


def test_edge_001_sink_well_does_not_produce():
    sub = submission(
        [node("a", {"in": "src"}, {"out": "out"})],
        DataWells=[{"Edge": "src", "Source": "none"}, {"Edge": "out"}],
    )
    assert only(check(sub), "EDGE_001").edge == "src"


def test_implicit_wells_only_when_no_well_is_declared():
    nodes = [
        node("a", {"in": "src"}, {"out": "mid", "extra": "spare"}),
        node("b", {"in": "mid", "aux": "side"}, {"out": "out"}),
    ]
    sub = submission(nodes)
    assert check(sub).ok
    assert [(w.edge, w.source, w.store, w.key) for w in effective_wells(sub.flow)] == [
        ("src", "upload", None, None),
        ("spare", None, None, None),
        ("side", "upload", None, None),
        ("out", None, None, None),
    ]
    declared = submission(nodes, DataWells=[{"Edge": "src", "Source": "upload"}, {"Edge": "out"}])
    assert effective_wells(declared.flow) == declared.flow.data_wells
    result = check(declared)
    assert result.codes() == ["EDGE_002", "EDGE_001"]
    assert [e.edge for e in result.errors] == ["spare", "side"]


def test_edge_003_type_mismatch():
    defs = [
        {**COPY, "Name": "img", "Outputs": [{"Name": "out", "Type": ["image/*"]}]},
        {**COPY, "Name": "vid", "Inputs": [{"Name": "in", "Type": ["video/*"]}]},
        {**COPY, "Name": "png", "Inputs": [{"Name": "in", "Type": ["image/png"]}]},
    ]
    nodes = [
        node("p", {"in": "src"}, {"out": "pic"}, uses="t/img"),
        node("v", {"in": "pic"}, {"out": "o1"}, uses="t/vid"),
        node("g", {"in": "pic"}, {"out": "o2"}, uses="t/png"),
        # Fed by an (implied) upload well: untyped, never a mismatch.
        node("w", {"in": "src"}, {"out": "o3"}, uses="t/vid"),
    ]
    entry = only(check(submission(nodes, defs)), "EDGE_003")
    assert (entry.edge, entry.node) == ("pic", "v")
    assert "image/*" in entry.message and "video/*" in entry.message


def test_edge_004_two_producers():
    nodes = [
        node("a", {"in": "s1"}, {"out": "same"}),
        node("b", {"in": "s2"}, {"out": "same"}),
        node("c", {"in": "same"}, {"out": "o"}),
    ]
    entry = only(check(submission(nodes)), "EDGE_004")
    assert entry.edge == "same" and entry.node == "b"
    assert "produced by both node 'a' (output 'out') and node 'b' (output 'out')" in entry.message


def test_edge_004_node_output_and_upload_well():
    nodes = [node("a", {"in": "src"}, {"out": "mid"}), node("b", {"in": "mid"}, {"out": "out"})]
    wells = [
        {"Edge": "src", "Source": "upload"},
        {"Edge": "mid", "Source": "upload"},
        {"Edge": "out"},
    ]
    entry = only(check(submission(nodes, DataWells=wells)), "EDGE_004")
    assert (entry.edge, entry.node, entry.well) == ("mid", "a", "mid")
    # On a final output: one problem, one entry (no EDGE_002 on top).
    wells = [{"Edge": "src", "Source": "upload"}, {"Edge": "out", "Source": "static", "Key": "k"}]
    entry = only(check(submission(nodes, DataWells=wells)), "EDGE_004")
    assert (entry.edge, entry.node) == ("out", "b")


BAD_NAMES = ["bad name", "-starts-with-dash", "", "a" * 129, "ünï", "/etc/passwd", "../x", "a\0b"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_name_001_invalid_edge_name(name):
    entry = only(check(submission([node("a", {"in": name}, {"out": "o"})])), "NAME_001")
    assert (entry.edge, entry.field) == (name, "Flow.Nodes.0.Inputs.0.Edge")


@pytest.mark.parametrize("name", BAD_NAMES)
def test_name_001_invalid_input_name_in_node_and_def(name):
    defs = [{"Publisher": "t", "Name": "copy", "Image": "i", "Inputs": [{"Name": name}]}]
    result = check(submission([node("a", {name: "src"}, {"out": "o"})], defs))
    fields = [e.field for e in result.errors if e.code == "NAME_001"]
    assert fields == ["Flow.Nodes.0.Inputs.0.Name", "NodeDefs.0.Inputs.0.Name"]


# ------------------------------------------------------------------ WELL


def one_node_flow(*wells: dict, **flow: Any) -> FlowSubmission:
    return submission([node("a", {"in": "src"}, {"out": "out"})], DataWells=list(wells), **flow)


SINK = {"Edge": "out"}
UPLOAD = {"Edge": "src", "Source": "upload"}


def test_well_001_invalid_source():
    entry = only(check(one_node_flow({"Edge": "src", "Source": "uplaod"}, SINK)), "WELL_001")
    assert entry.well == "src"
    assert "upload, static, webhook, none" in entry.message
    assert check(one_node_flow({"Edge": "src", "Source": "webhook"}, SINK)).ok


def test_well_002_edge_not_used():
    entry = only(
        check(one_node_flow(UPLOAD, SINK, {"Edge": "sorce", "Source": "upload"})), "WELL_002"
    )
    assert entry.well == "sorce"


def test_well_003_two_wells_on_one_edge():
    entry = only(check(one_node_flow(UPLOAD, SINK, {"Edge": "out"})), "WELL_003")
    assert entry.well == "out" and entry.field == "Flow.DataWells.2"


def test_well_004_unknown_store():
    entry = only(check(one_node_flow(UPLOAD, {"Edge": "out", "Store": "archive"})), "WELL_004")
    assert (entry.well, entry.store) == ("out", "archive")
    # The default store always exists.
    assert check(one_node_flow(UPLOAD, {"Edge": "out", "Store": "default"})).ok


@pytest.mark.parametrize(
    "key",
    [
        "${RUN_ID}/${NODE_ID}",
        "../../etc/${RUN_ID}",
        "/abs/${RUN_ID}",
        "a//${RUN_ID}",
        "a\\${RUN_ID}",
        "${RUN_ID}/./x",
        "${RUN_ID",
        "price$/${RUN_ID}",
    ],
)
def test_well_005_bad_key_template(key):
    entry = only(check(one_node_flow({**UPLOAD, "Key": key}, SINK)), "WELL_005")
    assert entry.well == "src"


def test_well_005_message_lists_allowed_variables():
    entry = only(check(one_node_flow({**UPLOAD, "Key": "${RUN_ID}/${NODE_ID}"}, SINK)), "WELL_005")
    assert "${NODE_ID}" in entry.message and "${TIMESTAMP}" in entry.message


def test_well_006_static_without_key():
    entry = only(check(one_node_flow({"Edge": "src", "Source": "static"}, SINK)), "WELL_006")
    assert entry.well == "src"
    assert check(one_node_flow({"Edge": "src", "Source": "static", "Key": "models/w.bin"}, SINK)).ok


def test_well_007_static_key_with_variable():
    well = {"Edge": "src", "Source": "static", "Key": "models/${DATE}.bin"}
    entry = only(check(one_node_flow(well, SINK)), "WELL_007")
    assert entry.well == "src" and "${DATE}" in entry.message


def test_well_008_upload_key_without_variable():
    entry = only(check(one_node_flow({**UPLOAD, "Key": "inbox/latest.png"}, SINK)), "WELL_008")
    assert entry.well == "src"
    assert "overwrite" in entry.message


def test_well_008_warnings_for_weak_keys():
    result = check(one_node_flow({**UPLOAD, "Key": "${DATE}/${EDGE}"}, {**SINK, "Key": "latest"}))
    assert result.ok
    assert [(w.code, w.well) for w in result.warnings] == [("WELL_008", "src"), ("WELL_008", "out")]


def test_well_009_two_edges_on_one_key():
    result = check(
        one_node_flow({**UPLOAD, "Key": "${RUN_ID}/data"}, {**SINK, "Key": "${RUN_ID}/data"})
    )
    entry = only(result, "WELL_009")
    assert (entry.edge, entry.store) == ("out", "default")
    # A DefaultDataWell key without ${EDGE} collides across its edges too.
    sub = submission(
        [node("a", {"in": "src"}, {"out": "out"})],
        DefaultDataWell={"Edge": "", "Key": "runs/${RUN_ID}"},
    )
    assert only(check(sub), "WELL_009").edge == "out"


# ------------------------------------------------------------------ STORE


def test_store_001_undeclared_default_store():
    entry = only(check(one_node_flow(UPLOAD, SINK, DefaultStore="archive")), "STORE_001")
    assert entry.store == "archive" and entry.field == "Flow.DefaultStore"
    sub = one_node_flow(UPLOAD, SINK, DefaultDataWell={"Edge": "", "Store": "gone"})
    entry = only(check(sub), "STORE_001")
    assert entry.store == "gone" and entry.field == "Flow.DefaultDataWell.Store"


def test_store_002_invalid_type():
    stores = [{"Name": "ftp", "Type": "ftp"}]
    sub = one_node_flow(UPLOAD, {**SINK, "Store": "ftp"}, Stores=stores)
    entry = only(check(sub), "STORE_002")
    assert entry.store == "ftp" and "local, s3" in entry.message
    assert check(sub, store_types=("local", "s3", "ftp")).ok


def test_store_003_s3_needs_a_bucket_and_known_params():
    stores = [s3_store("s3", bucket=None, region="eu-west-1")]
    sub = one_node_flow(UPLOAD, {**SINK, "Store": "s3"}, Stores=stores)
    entry = only(check(sub, stores=FLOW_STORES), "STORE_003")
    assert entry.store == "s3" and entry.field == "Flow.Stores.0.Params.bucket"
    stores = [s3_store("s3", bukket="c")]
    sub = one_node_flow(UPLOAD, {**SINK, "Store": "s3"}, Stores=stores)
    entry = only(check(sub, stores=FLOW_STORES), "STORE_003")
    assert "'bukket'" in entry.message and entry.field == "Flow.Stores.0.Params"


def test_store_004_unused_store_is_a_warning():
    stores = [s3_store("disk"), s3_store("spare")]
    result = check(
        one_node_flow(UPLOAD, SINK, Stores=stores, DefaultStore="disk"), stores=FLOW_STORES
    )
    assert result.ok
    assert [(w.code, w.store) for w in result.warnings] == [("STORE_004", "spare")]


def test_store_005_duplicate_store_name():
    stores = [s3_store("disk"), s3_store("disk")]
    sub = one_node_flow(UPLOAD, {**SINK, "Store": "disk"}, Stores=stores)
    entry = only(check(sub, stores=FLOW_STORES), "STORE_005")
    assert entry.store == "disk" and entry.field == "Flow.Stores.1.Name"


def test_store_005_a_flow_store_cannot_take_an_operator_stores_name():
    policy = StorePolicy(frozenset({"default", "archive"}), FLOW_STORES.flow_store_endpoints)
    sub = one_node_flow(UPLOAD, {**SINK, "Store": "archive"}, Stores=[s3_store("archive")])
    entry = only(check(sub, stores=policy), "STORE_005")
    assert entry.field == "Flow.Stores.0.Name" and "one of this service's stores" in entry.message


def test_operator_stores_are_named_without_being_declared():
    policy = StorePolicy(frozenset({"default", "archive"}))
    sub = one_node_flow(UPLOAD, {**SINK, "Store": "archive"})
    assert check(sub, stores=policy).ok
    assert only(check(sub), "WELL_004").store == "archive"


@pytest.mark.parametrize(
    ("store", "policy", "field", "says"),
    [
        ({"Name": "disk", "Type": "local"}, FLOW_STORES, "Type", "cannot declare a local store"),
        (s3_store("s"), StorePolicy(), "Type", "does not let flows declare stores"),
        (s3_store("s", access_key_id=None), FLOW_STORES, "Params.access_key_id", "own credentials"),
        (s3_store("s", secret_access_key=""), FLOW_STORES, "Params.secret_access_key", "own"),
        (s3_store("s", endpoint_url=None), FLOW_STORES, "Params.endpoint_url", "http://s3.test"),
        (
            s3_store("s", endpoint_url="http://169.254.169.254"),
            FLOW_STORES,
            "Params.endpoint_url",
            "must be one of the endpoints",
        ),
        (
            s3_store("s", public_endpoint_url="http://elsewhere"),
            FLOW_STORES,
            "Params.public_endpoint_url",
            "must be one of the endpoints",
        ),
        # A dead endpoint must not hold the service's threads (or its shutdown) for long.
        (s3_store("s", max_attempts=1000000), FLOW_STORES, "Params.max_attempts", "at most 3"),
        (s3_store("s", connect_timeout=1000), FLOW_STORES, "Params.connect_timeout", "at most 5"),
        (s3_store("s", read_timeout="60"), FLOW_STORES, "Params.read_timeout", "a number"),
        (s3_store("s", connect_timeout=0), FLOW_STORES, "Params.connect_timeout", "over 0"),
        (s3_store("s", create_bucket=True), FLOW_STORES, "Params.create_bucket", "create"),
    ],
)
def test_store_006_what_a_flow_may_not_declare(store, policy, field, says):
    sub = one_node_flow(UPLOAD, {**SINK, "Store": store["Name"]}, Stores=[store])
    entry = only(check(sub, stores=policy), "STORE_006")
    assert entry.field == f"Flow.Stores.0.{field}"
    assert says in entry.message


# ------------------------------------------------------------------ TYPE


def test_type_001_invalid_mime():
    defs = [{**COPY, "Inputs": [{"Name": "in", "Type": ["image/png", "png", "*/jpeg"]}]}]
    entry = only(check(submission([node("a", {"in": "s"}, {"out": "o"})], defs)), "TYPE_001")
    assert entry.field == "NodeDefs.0.Inputs.0.Type"
    assert "'png', '*/jpeg'" in entry.message


def test_type_002_empty_type_list():
    defs = [
        {**COPY, "Name": "src", "Outputs": [{"Name": "out", "Type": []}]},
        {**COPY, "Name": "dst", "Inputs": [{"Name": "in", "Type": ["image/png"]}]},
    ]
    nodes = [
        node("a", {"in": "s"}, {"out": "m"}, uses="t/src"),
        node("b", {"in": "m"}, {"out": "o"}, uses="t/dst"),
    ]
    entry = only(check(submission(nodes, defs)), "TYPE_002")  # and no EDGE_003 on top
    assert entry.field == "NodeDefs.0.Outputs.0.Type"


# ------------------------------------------------------------------ everything at once


def test_every_problem_is_reported_at_once():
    defs = [
        {**COPY, "Tier": "x-large", "Inputs": [{"Name": "in", "Type": ["nonsense"]}]},
        {**COPY, "Name": "flagged", "Flags": [{"Name": "level", "Required": True}]},
    ]
    nodes = [
        node("a", {"in": "src"}, {"out": "x"}),
        node("a", {"in": "x"}, {"out": "y"}, uses="t/flagged"),
        node("c", {"in": "y"}, {"out": "x2"}, uses="nobody/nothing"),
        node("", {"in": "bad edge"}, {"out": "z"}),
    ]
    sub = submission(
        nodes,
        defs,
        Stores=[{"Name": "s3", "Type": "s3"}, {"Name": "ftp", "Type": "ftp"}],
        DataWells=[
            {"Edge": "src", "Source": "upload", "Key": "fixed"},
            {"Edge": "nowhere", "Source": "bogus", "Store": "missing"},
        ],
    )
    result = check(sub)
    codes = set(result.codes())
    assert {
        "TYPE_001",
        "NODE_004",
        "NODE_005",
        "NODE_007",
        "NODE_008",
        "NODE_001",
        "EDGE_001",
        "EDGE_002",
        "NAME_001",
        "WELL_001",
        "WELL_002",
        "WELL_004",
        "WELL_008",
        "STORE_002",
        "STORE_003",
    } <= codes
    assert {w.code for w in result.warnings} == {"STORE_004"}
    by_code = {e.code: e for e in result.errors}
    assert by_code["NODE_001"].node == "c"
    assert by_code["NODE_005"].node == "a"
    assert by_code["NAME_001"].edge == "bad edge"
    assert by_code["WELL_004"].store == "missing"
    assert all(e.message for e in result.errors)
    assert set(CODES) >= codes


def test_entries_dump_without_empty_fields():
    entry = only(check(submission([])), "FLOW_002")
    assert set(entry.model_dump()) == {"code", "message"}
    assert set(json.loads(entry.model_dump_json())) == {"code", "message"}
    body = check(submission([])).model_dump()
    assert set(body["errors"][0]) == {"code", "message"}


# ------------------------------------------------------------------ keys and stores


def test_expand_key_for_a_fixed_time():
    values = {"run_id": "0" * 32, "flow_name": "image-resize", "edge": "input-image", "uuid": "u-1"}
    assert expand_key(DEFAULT_KEY_TEMPLATE, now=NOW, **values) == f"{'0' * 32}/input-image"
    template = "${FLOW_NAME}/${YEAR}/${MONTH}/${DAY}/${DATE}/${TIMESTAMP}/${EDGE}-${UUID}.bin"
    assert expand_key(template, now=NOW, **values) == (
        "image-resize/2026/03/03/2026-03-03/2026-03-03T10:30:05Z/input-image-u-1.bin"
    )
    assert expand_key("$RUN_ID/$EDGE", now=NOW, **values) == f"{'0' * 32}/input-image"
    # Other time zones are read in UTC; naive times are taken as UTC.
    tokyo = NOW.astimezone(timezone(timedelta(hours=9)))
    assert expand_key("${TIMESTAMP}", now=tokyo, **values) == "2026-03-03T10:30:05Z"
    assert expand_key("${DATE}", now=NOW.replace(tzinfo=None), **values) == "2026-03-03"


def test_expand_key_makes_values_safe():
    values = {"run_id": "r", "edge": "e", "uuid": "u", "now": NOW}
    assert expand_key("${FLOW_NAME}/x", flow_name="../etc/pass wd", **values) == ".._etc_pass_wd/x"
    assert expand_key("${FLOW_NAME}/x", flow_name="..", **values) == "__/x"
    assert expand_key("${FLOW_NAME}/x", flow_name="", **values) == "_/x"
    with pytest.raises(ValueError, match="NODE_ID"):
        expand_key("${NODE_ID}", flow_name="f", **values)
    with pytest.raises(ValueError):
        expand_key("${RUN_ID", flow_name="f", **values)


def test_default_store_name():
    assert default_store_name(submission([]).flow) == "default"
    stores = [{"Name": "disk", "Type": "local"}]
    assert default_store_name(submission([], Stores=stores, DefaultStore="disk").flow) == "disk"


def test_a_flow_store_within_the_bounds_is_accepted():
    store = s3_store("s", connect_timeout=2, read_timeout=30, max_attempts=3, create_bucket=False)
    sub = one_node_flow(UPLOAD, {**SINK, "Store": "s"}, Stores=[store])
    assert check(sub, stores=FLOW_STORES).ok


def test_flow_003_a_flow_over_the_node_limit_is_refused_before_anything_else():
    nodes = [
        {"ID": f"n{i}", "Uses": "test/nope", "Inputs": [{"Name": "in", "Edge": f"e{i}"}]}
        for i in range(4)
    ]
    result = validate(submission(nodes), max_nodes=3)
    assert [(e.code, e.field) for e in result.errors] == [("FLOW_003", "Flow.Nodes")]
    assert "4 nodes, over this service's limit of 3 (max_flow_nodes)" in result.errors[0].message
    assert "FLOW_003" not in validate(submission(nodes), max_nodes=4).codes()
