"""pipewell/resize through the service, by its catalog name: the NodeDef and image together."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.catalog import run_node
from tests.samples import picture

pytestmark = pytest.mark.docker


async def test_the_catalog_nodedef_resizes_with_its_default_width(start_service):
    client = await start_service()
    done = await run_node(client, "pipewell/resize", {"image": picture((1600, 1000), "JPEG")},
                          ["resized"])  # fmt: skip
    assert done.status == "COMPLETE", done.error
    resized = Image.open(io.BytesIO(done.outputs["resized"]))
    assert (resized.format, resized.size) == ("JPEG", (800, 500))
