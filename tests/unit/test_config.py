"""New settings refuse what cannot work, saying what to write instead."""

from __future__ import annotations

import pytest

from orchestrator.config import load_settings
from orchestrator.errors import ConfigError


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"queue": {"url": "http://redis:6379"}}, "is not a Redis URL; write redis://"),
        ({"allowed_origins": ["https://app.example.com/path"]}, "is not an origin"),
        ({"storage": {"flow_store_endpoints": ["s3.example.com"]}}, "is not an endpoint"),
        ({"storage": {"stores": {"default": {"type": "local"}}}}, "not 'default'"),
        ({"storage": {"stores": {"../up": {"type": "local"}}}}, "store name '../up'"),
        ({"worker": {"tiers": ["m-4xlarge"], "memory": "1g"}}, "cannot hold m-4xlarge"),
        ({"executor": {"launch": "gated", "transfer": "archive"}}, "set launch: plain"),
        ({"executor": {"launch": "warm"}}, "'gated' or 'plain'"),
    ],
)
def test_settings_that_cannot_work_are_refused(overrides, says):
    with pytest.raises(ConfigError, match=says):
        load_settings(None, **overrides)


def test_a_flag_section_merges_into_the_files(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("queue: {url: 'redis://a:6379/0', reclaim_after: 7}\n")
    settings = load_settings(config, queue={"url": "redis://b:6379/0"})
    assert (settings.queue.url, settings.queue.reclaim_after) == ("redis://b:6379/0", 7)


def test_archive_transfers_alone_launch_plain():
    assert load_settings(None, executor={"transfer": "archive"}).executor.launch == "plain"
    assert load_settings(None).executor.launch == "gated"
