"""The cache's and retry policy's fields as validation sees them."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from orchestrator.models import FlowSubmission, NodeDef
from orchestrator.validation import validate

COPY: dict[str, Any] = {
    "Publisher": "t",
    "Name": "copy",
    "Image": "busybox",
    "Inputs": [{"Name": "in"}, {"Name": "hint", "Required": False}],
    "Outputs": [{"Name": "out"}],
    "Command": {"Name": "run", "Exec": "cp ${in} ${out}"},
}


def submission(node_def: dict[str, Any], **fields: Any) -> FlowSubmission:
    flow = {
        "Name": "f",
        "Nodes": [
            {
                "ID": "a",
                "Uses": "t/copy",
                "Inputs": [{"Name": "in", "Edge": "src"}],
                "Outputs": [{"Name": "out", "Edge": "dst"}],
            }
        ],
    }
    return FlowSubmission.model_validate({"Flow": flow, "NodeDefs": [node_def], **fields})


def codes(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [entry.code for entry in result.errors]


def test_cache_ignore_names_inputs_the_nodedef_declares():
    assert validate(submission({**COPY, "CacheIgnore": ["hint"]})).ok
    result = validate(submission({**COPY, "CacheIgnore": ["hint", "colour"]}))
    assert codes(result) == ["DEF_003"]
    entry = result.errors[0]
    assert entry.field == "NodeDefs.0.CacheIgnore.1"
    assert "'colour', which is not one of its Inputs ('hint', 'in')" in entry.message


def test_recompute_names_nodes_of_the_flow():
    assert validate(submission(COPY, Recompute=["a"])).ok
    result = validate(submission(COPY, Recompute=["a", "b"]))
    assert codes(result) == ["NODE_013"]
    assert result.errors[0].field == "Recompute.1"
    assert "node 'b', which the flow does not have; its nodes are 'a'" in result.errors[0].message


def test_a_retry_policy_takes_exit_codes_of_1_to_255():
    node_def = NodeDef.model_validate({**COPY, "Retry": {"FailExitCodes": [2, 255]}})
    assert node_def.retry.fail_exit_codes == [2, 255]
    assert node_def.retry.tier_up_on_oom is False
    for bad in (0, 256):
        with pytest.raises(ValidationError, match="FailExitCodes"):
            NodeDef.model_validate({**COPY, "Retry": {"FailExitCodes": [bad]}})
