"""Object keys can never leave their bucket or data directory."""

import pytest

from storage import InvalidKey, check_key


@pytest.mark.parametrize("key", ["runs/abc/input-image", "a", "x/y.z/w_1-2+3=4@5,6:7~8"])
def test_relative_keys_are_accepted(key):
    assert check_key(key) == key


@pytest.mark.parametrize(
    "key", ["", "/etc/passwd", "../up", "a/../../b", "a//b", "a/./b", "a\\b", "a/\x00", "a/"]
)
def test_escaping_or_odd_keys_are_refused(key):
    with pytest.raises(InvalidKey):
        check_key(key)
