"""Fixtures more than one integration module uses, beyond tests/conftest.py's."""

from tests.integration.test_redis_scaleout import redis_server, start_worker  # noqa: F401
