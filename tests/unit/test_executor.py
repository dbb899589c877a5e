"""Who a node's container runs as (the executor's choice, without Docker)."""

from __future__ import annotations

import pytest

from orchestrator.executor.spec import UNPRIVILEGED_USER, container_user
from orchestrator.models import NodeDef


@pytest.mark.parametrize("image_user", ["", "root", "0", "root:root", "0:0"])
def test_an_image_without_a_user_or_with_root_runs_as_nobody(image_user):
    assert container_user(image_user, run_as_root=False) == UNPRIVILEGED_USER == "65534:65534"


@pytest.mark.parametrize("image_user", ["1000", "app", "app:app", "1000:0"])
def test_an_image_with_its_own_user_keeps_it(image_user):
    assert container_user(image_user, run_as_root=False) is None


@pytest.mark.parametrize("image_user", ["", "app"])
def test_run_as_root_runs_as_root(image_user):
    assert container_user(image_user, run_as_root=True) == "0"


def test_run_as_root_is_pascal_case_on_the_wire_and_off_by_default():
    fields = {"Publisher": "p", "Name": "n", "Image": "i"}
    plain = NodeDef.model_validate(fields)
    rooted = NodeDef.model_validate({**fields, "RunAsRoot": True})
    assert plain.run_as_root is False
    assert rooted.run_as_root is True
    assert rooted.model_dump()["RunAsRoot"] is True
