"""How the queue reaches Redis: the password from a file, the environment or the URL (in
that order), Sentinel URLs read or refused with what to write, and no password shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import load_settings
from orchestrator.errors import ConfigError
from orchestrator.redis_access import PASSWORD_VARIABLE, RedisAccess, _sentinel_parts, safe_url


def test_the_password_file_wins_over_the_environment_which_wins_over_the_url(
    tmp_path: Path, monkeypatch
):
    url = "redis://:in-the-url@10.0.0.5:6379/0"
    monkeypatch.delenv(PASSWORD_VARIABLE, raising=False)
    assert RedisAccess(url).password() == "in-the-url"
    monkeypatch.setenv(PASSWORD_VARIABLE, "from-env")
    assert RedisAccess(url).password() == "from-env"
    secret = tmp_path / "password"
    secret.write_text("from-file\n")
    assert RedisAccess(url, password_file=secret).password() == "from-file"
    with pytest.raises(ConfigError, match="cannot read the Redis password file .*missing"):
        RedisAccess(url, password_file=tmp_path / "missing").password()


def test_a_sentinel_url_names_its_sentinels_master_and_database():
    url = "redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26380/pipewell/3"
    assert _sentinel_parts(url) == ([("10.0.0.1", 26379), ("10.0.0.2", 26380)], "pipewell", 3)
    assert _sentinel_parts("redis+sentinel://h:1/m")[1:] == ("m", 0)
    with pytest.raises(ConfigError, match="names no master"):
        _sentinel_parts("redis+sentinel://h:1,h:2/")
    with pytest.raises(ConfigError, match="'h' in the queue URL is not host:port"):
        _sentinel_parts("redis+sentinel://h/m/0")
    assert safe_url(url) == "redis+sentinel://***@10.0.0.1:26379,10.0.0.2:26380/pipewell/3"


def test_a_url_that_is_not_redis_is_refused_without_showing_its_password():
    with pytest.raises(ConfigError, match="is not a Redis URL") as refused:
        load_settings(queue={"url": "http://:secret@host:6379/0"})
    assert "secret" not in str(refused.value)
    settings = load_settings(queue={"url": "rediss+sentinel://h1:26379,h2:26379/m/0"})
    assert settings.queue.redis().url.startswith("rediss+sentinel://")
