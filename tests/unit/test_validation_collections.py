"""Validation of collection shapes (COLL_*): collection edges and mapped nodes, as
``collection_shape`` decides them, and what a flow asks for that does not fit it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from orchestrator.documents import schema_errors
from orchestrator.models import FlowSubmission
from orchestrator.validation import (
    CODES,
    ValidationEntry,
    ValidationResult,
    resolve_defs,
    topological_order,
    validate,
)
from orchestrator.validation.collections import CollectionShape, collection_shape

RESIZE = {
    "Publisher": "t",
    "Name": "resize",
    "Image": "i",
    "Inputs": [{"Name": "image", "Required": True, "Type": ["image/*"]}],
    "Outputs": [{"Name": "resized", "Required": True, "Type": ["image/png"]}],
}
MARK = {
    "Publisher": "t",
    "Name": "mark",
    "Image": "i",
    "Inputs": [{"Name": "image", "Type": ["image/png"]}, {"Name": "logo", "Type": ["image/*"]}],
    "Outputs": [{"Name": "marked", "Type": ["image/png"]}],
}
ZIP = {
    "Publisher": "t",
    "Name": "zip",
    "Image": "i",
    "Inputs": [{"Name": "images", "Required": True, "Collection": True, "Type": ["image/*"]}],
    "Outputs": [{"Name": "archive", "Type": ["application/zip"]}],
}
SPLIT = {
    "Publisher": "t",
    "Name": "split",
    "Image": "i",
    "Inputs": [{"Name": "in"}],
    "Outputs": [{"Name": "parts", "Collection": True, "Type": ["image/png"]}],
}
PAIR = {
    "Publisher": "t",
    "Name": "pair",
    "Image": "i",
    "Inputs": [{"Name": "a"}, {"Name": "b"}],
    "Outputs": [{"Name": "out"}],
}
DEFS = [RESIZE, MARK, ZIP, SPLIT, PAIR]


def node(
    node_id: str, uses: str, inputs: dict[str, str], outputs: dict[str, str], **fields: Any
) -> dict[str, Any]:
    return {
        "ID": node_id,
        "Uses": f"t/{uses}",
        "Inputs": [{"Name": k, "Edge": v} for k, v in inputs.items()],
        "Outputs": [{"Name": k, "Edge": v} for k, v in outputs.items()],
        **fields,
    }


def submission(nodes: list[dict[str, Any]], **flow: Any) -> FlowSubmission:
    return FlowSubmission.model_validate(
        {"Flow": {"Name": "f", "Nodes": nodes, **flow}, "NodeDefs": DEFS}
    )


def shape_of(sub: FlowSubmission) -> CollectionShape:
    return collection_shape(sub.flow, resolve_defs(sub), topological_order(sub.flow))


def only(result: ValidationResult, code: str) -> ValidationEntry:
    assert [e.code for e in result.errors] == [code], result.errors
    return result.errors[0]


def resize(inputs: str = "photos", **fields: Any) -> dict[str, Any]:
    return node("resize", "resize", {"image": inputs}, {"resized": "thumbs"}, **fields)


def gather(edge: str = "thumbs") -> dict[str, Any]:
    return node("gather", "zip", {"images": edge}, {"archive": "archive"})


# ------------------------------------------------------------------ valid flows


def test_upload_map_gather_is_valid_and_has_its_shape():
    # Declared consumer first: the shape follows the edges, not the list.
    nodes = [gather(), resize(Map={"Concurrency": 4, "MinSuccess": 0.9})]
    for wells in ({}, {"DataWells": [{"Edge": "photos", "Source": "upload"}, {"Edge": "archive"}]}):
        sub = submission(nodes, Collections=["photos"], **wells)
        result = validate(sub)
        assert result.ok and result.errors == [] and result.warnings == [], result
        shape = shape_of(sub)
        assert shape.edges == {"photos", "thumbs"}
        assert dict(shape.mapped) == {"resize": "image"}
        assert dict(shape.overmapped) == {}
    # Map is optional on a mapped node.
    assert validate(submission([resize(), gather()], Collections=["photos"])).ok


def test_chained_maps_a_collection_output_and_a_broadcast_input_are_valid():
    nodes = [
        node("split", "split", {"in": "sheet"}, {"parts": "parts"}),
        node("mark", "mark", {"image": "parts", "logo": "logo"}, {"marked": "marked"}, Map={}),
        node("again", "resize", {"image": "marked"}, {"resized": "small"}),
        node("gather", "zip", {"images": "small"}, {"archive": "archive"}),
    ]
    sub = submission(nodes)
    assert validate(sub).ok, validate(sub).errors
    shape = shape_of(sub)
    assert shape.edges == {"parts", "marked", "small"}
    assert dict(shape.mapped) == {"mark": "image", "again": "image"}


def test_a_flow_without_collections_has_no_collection_edges():
    sub = submission([resize(), node("mark", "mark", {"image": "thumbs"}, {"marked": "out"})])
    assert validate(sub).ok
    shape = shape_of(sub)
    assert shape.edges == frozenset() and dict(shape.mapped) == {}


def test_every_coll_code_is_ours():
    colls = {code: text for code, text in CODES.items() if code.startswith("COLL_")}
    assert sorted(colls) == [f"COLL_00{n}" for n in range(1, 8)]
    assert all(text.endswith("(ours)") for text in colls.values())


# ------------------------------------------------------------------ COLL


def test_coll_001_collections_names_an_edge_no_node_binds():
    entry = only(validate(submission([resize()], Collections=["phots"])), "COLL_001")
    assert entry.edge == "phots" and entry.field == "Flow.Collections.0"
    assert entry.message == (
        "Collections lists edge 'phots', which no node binds (did you mean 'photos'?); "
        "list an edge that a node reads and no node produces ('photos') or remove it"
    )


def test_coll_002_collections_names_an_edge_a_node_produces_as_one_file():
    entry = only(validate(submission([resize(), gather()], Collections=["thumbs"])), "COLL_002")
    assert (entry.node, entry.edge, entry.field) == ("resize", "thumbs", "Flow.Collections.0")
    assert "node 'resize' produces it as one file" in entry.message
    assert "output 'resized' is not declared Collection in 't/resize'" in entry.message
    assert "remove 'thumbs' from Collections" in entry.message


def test_coll_002_not_for_a_collection_output_nor_a_mapped_node():
    nodes = [node("split", "split", {"in": "sheet"}, {"parts": "parts"}), gather("parts")]
    assert validate(submission(nodes, Collections=["parts"])).ok
    mapped = submission([resize(), gather()], Collections=["photos", "thumbs"])
    assert validate(mapped).ok


def test_coll_003_collection_input_on_an_upload_not_listed_in_collections():
    entry = only(validate(submission([gather("photos")])), "COLL_003")
    assert (entry.node, entry.edge, entry.field) == (
        "gather",
        "photos",
        "Flow.Nodes.0.Inputs.0.Edge",
    )
    assert entry.message == (
        "node 'gather' input 'images' is declared Collection in 't/zip', but its edge 'photos' "
        "carries one file; list 'photos' in the flow's Collections (its upload is then a zip "
        "or tar of items), or bind 'images' to an edge that carries a collection"
    )


def test_coll_003_collection_input_on_a_single_file_output():
    entry = only(validate(submission([resize(), gather()])), "COLL_003")
    assert (entry.node, entry.edge) == ("gather", "thumbs")
    assert "node 'resize' produces it from output 'resized'" in entry.message
    assert "bind 'images' to an edge that carries a collection" in entry.message


def test_coll_004_a_node_maps_over_one_collection():
    nodes = [node("pair", "pair", {"a": "photos", "b": "masks"}, {"out": "out"})]
    entry = only(validate(submission(nodes, Collections=["photos", "masks"])), "COLL_004")
    assert (entry.node, entry.edge, entry.field) == ("pair", "masks", "Flow.Nodes.0.Inputs.1.Edge")
    assert entry.message == (
        "node 'pair' binds file inputs 'a' (edge 'photos') and 'b' (edge 'masks') to "
        "collections, but a node maps over one collection (here 'a'); gather the others: "
        "declare 'b' Collection in 't/pair' (\"Collection\": true) so that each item's run "
        "gets all of their items, or bind 'b' to an edge that carries one file"
    )
    sub = submission(nodes, Collections=["photos", "masks"])
    assert dict(shape_of(sub).overmapped) == {"pair": ("b",)}


def test_coll_005_map_on_a_node_that_is_not_mapped():
    entry = only(validate(submission([resize(Map={"Concurrency": 2})])), "COLL_005")
    assert (entry.node, entry.field) == ("resize", "Flow.Nodes.0.Map")
    assert entry.message.startswith("node 'resize' has Map, but it is not mapped")
    assert entry.message.endswith("remove Map, or bind one of its file inputs to a collection")


@pytest.mark.parametrize(
    "well",
    [
        {"Edge": "photos", "Source": "static", "Key": "in/photos.zip"},
        {"Edge": "photos", "Source": "webhook", "Key": "in/${RUN_ID}/photos"},
    ],
)
def test_coll_006_a_collection_is_uploaded_not_static_nor_webhook(well):
    sub = submission(
        [resize(), gather()], Collections=["photos"], DataWells=[well, {"Edge": "archive"}]
    )
    entry = only(validate(sub), "COLL_006")
    assert (entry.edge, entry.well, entry.field) == ("photos", "photos", "Flow.DataWells.0.Source")
    assert f"its DataWell has Source {well['Source']!r}" in entry.message
    assert 'use Source "upload"' in entry.message


def test_coll_007_a_mapped_node_cannot_output_a_collection():
    nodes = [node("split", "split", {"in": "photos"}, {"parts": "parts"}), gather("parts")]
    entry = only(validate(submission(nodes, Collections=["photos"])), "COLL_007")
    assert (entry.node, entry.edge, entry.field) == (
        "split",
        "parts",
        "Flow.Nodes.0.Outputs.0.Name",
    )
    assert "node 'split' is mapped over input 'in' (edge 'photos')" in entry.message
    assert "a collection of collections is not supported" in entry.message


# ------------------------------------------------------------------ with other checks


def test_types_of_collections_compare_item_types():
    # A mapped node's outputs are collections of its items, typed as its output is.
    nodes = [resize(), node("json", "zip", {"images": "thumbs"}, {"archive": "out"})]
    defs_json = {**ZIP, "Name": "zip", "Inputs": [{**ZIP["Inputs"][0], "Type": ["text/plain"]}]}
    body = {
        "Flow": {"Name": "f", "Nodes": nodes, "Collections": ["photos"]},
        "NodeDefs": [RESIZE, defs_json],
    }
    entry = only(validate(FlowSubmission.model_validate(body)), "EDGE_003")
    assert (entry.node, entry.edge) == ("json", "thumbs")
    assert "carries image/png from node 'resize'" in entry.message


def test_no_collection_errors_pile_on_a_missing_nodedef():
    nodes = [
        node("x", "missing", {"in": "photos"}, {"out": "mid"}, Map={}),
        node("gather", "zip", {"images": "mid"}, {"archive": "archive"}),
        node("after", "pair", {"a": "archive"}, {"out": "out"}, Map={}),
    ]
    entry = only(validate(submission(nodes)), "NODE_001")
    assert entry.node == "x"


def test_every_problem_at_once_with_collections():
    nodes = [
        resize(),
        node("gather", "zip", {"images": "photos"}, {"archive": "archive"}, Map={}),
        node("pair", "pair", {"a": "photos", "b": "masks"}, {"out": "out"}),
    ]
    result = validate(submission(nodes, Collections=["masks", "nope"]))
    assert result.codes() == ["COLL_001", "COLL_003", "COLL_005"]
    assert [e.node for e in result.errors] == [None, "gather", "gather"]


# ------------------------------------------------------------------ Map's bounds


@pytest.mark.parametrize(
    ("spec", "field", "says"),
    [
        ({"Concurrency": 0}, "Flow.Nodes.0.Map.Concurrency", "greater than or equal to 1"),
        ({"Concurrency": 10_001}, "Flow.Nodes.0.Map.Concurrency", "less than or equal to 10000"),
        ({"MinSuccess": 1.5}, "Flow.Nodes.0.Map.MinSuccess", "less than or equal to 1"),
        ({"MinSuccess": -0.1}, "Flow.Nodes.0.Map.MinSuccess", "greater than or equal to 0"),
        ({"Concurrenc": 2}, "Flow.Nodes.0.Map.Concurrenc", "Extra inputs are not permitted"),
    ],
)
def test_map_bounds_are_schema_errors_naming_the_field(spec, field, says):
    with pytest.raises(ValidationError) as caught:
        submission([resize(Map=spec)], Collections=["photos"])
    [entry] = schema_errors(caught.value)
    assert entry["code"] == "SCHEMA_001" and entry["field"] == field
    assert entry["message"].startswith(f"{field}: ") and says in entry["message"]


def test_no_collection_errors_pile_on_a_cycle():
    nodes = [
        node("a", "pair", {"a": "e2"}, {"out": "e1"}, Map={}),
        node("b", "zip", {"images": "e1"}, {"archive": "e2"}),
    ]
    entry = only(validate(submission(nodes)), "FLOW_001")
    assert entry.node == "a"
