"""Generic fixtures shared by the whole suite (keep this minimal)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis_server import redis_server, redis_server_binary


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a private redis-server started for this test session.

    Tests sharing it must namespace their keys (RedisStore(prefix=...)) or use
    their own database number."""
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed")
    with redis_server() as url:
        yield url
