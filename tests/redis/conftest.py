"""Fixtures of the Redis-specific tests.

The redis-server fixtures (``redis_server``, ``private_redis``, ``redis_client``,
``redis_backend``) live in tests/conftest.py, because the conformance suite needs them too.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """redis.asyncio runs on asyncio only."""
    return "asyncio"
