"""Fixtures of the Redis-specific tests.

The redis-server fixtures (the ``redis_factory`` fixture factory and its named uses
``redis_server``, ``private_redis``, ``tcp_redis`` and ``aof_redis``; ``redis_client``,
``redis_backend``) live in tests/conftest.py, because the conformance suite and the process
tests need them too.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """redis.asyncio runs on asyncio only."""
    return "asyncio"
