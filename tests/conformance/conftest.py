"""The conformance kit (``monoq.testing``) on every built-in backend.

The tests are the kit's (``monoq.testing.suite``, one thin module here per part); the plugin
(``monoq.testing.plugin``, registered in tests/conftest.py) turns ``monoq_backend_factory`` into
the ``backend`` they take. This file only says which backends run them: one param each, exactly
as a third-party backend's project would (CONTRIBUTING.md, "Adding a backend").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from monoq.backends.memory import MemoryBackend
from monoq.backends.redis import RedisBackend
from monoq.backends.sqlite import SqliteBackend
from monoq.testing import OpenBackend, connected


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """monoq is an asyncio program (SQLite threads, redis.asyncio, uvicorn): no trio run."""
    return "asyncio"


@pytest.fixture(
    params=[
        pytest.param("memory", id="memory"),
        pytest.param("sqlite", id="sqlite"),
        pytest.param("redis", id="redis", marks=pytest.mark.redis),
    ]
)
def monoq_backend_factory(request: pytest.FixtureRequest, tmp_path: Path) -> OpenBackend:
    """Opens instances of each built-in backend on storage of this test alone: memory (one
    instance: it cannot be shared), a SQLite file in ``tmp_path``, or the session's
    redis-server with its database flushed first."""
    if request.param == "memory":
        return connected(MemoryBackend)
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'monoq.db'}"
        return connected(lambda: SqliteBackend(url))
    # Deliberately a sync fixture: anyio's plugin refuses getfixturevalue() of an async fixture
    # (redis_client flushes the database) from inside a running async fixture.
    request.getfixturevalue("redis_client")
    server = request.getfixturevalue("redis_server")
    return connected(lambda: RedisBackend(server.url))
