"""The ``backend`` fixture: every conformance test runs once per backend.

litestar's pattern: each param names another fixture, resolved by ``request.getfixturevalue``, so a
backend that needs a server or a temporary file only builds it when its params run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest

from monoq.backends.memory import MemoryBackend
from monoq.backends.sqlite import SqliteBackend
from monoq.core.backend import Backend


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """monoq is an asyncio program (SQLite threads, redis.asyncio, uvicorn): no trio run."""
    return "asyncio"


@pytest.fixture
async def memory_backend() -> AsyncIterator[Backend]:
    backend = MemoryBackend()
    await backend.connect()
    try:
        yield backend
    finally:
        await backend.aclose()


@pytest.fixture
async def sqlite_backend(tmp_path: Path) -> AsyncIterator[Backend]:
    backend = SqliteBackend(f"sqlite:///{tmp_path / 'monoq.db'}")
    await backend.connect()
    try:
        yield backend
    finally:
        await backend.aclose()


@pytest.fixture(
    params=[
        pytest.param("memory_backend", id="memory"),
        # Add one pytest.param per backend here, naming its fixture, e.g.
        # pytest.param("sqlite_backend", id="sqlite"),
        # pytest.param("redis_backend", id="redis", marks=pytest.mark.redis),
        pytest.param("sqlite_backend", id="sqlite"),
        pytest.param("redis_backend", id="redis", marks=pytest.mark.redis),
    ]
)
def backend(request: pytest.FixtureRequest) -> Backend:
    # Deliberately sync: anyio's plugin refuses getfixturevalue() of an async fixture from inside
    # a running async fixture ("Cannot schedule a coroutine in the test runner...").
    return cast(Backend, request.getfixturevalue(request.param))
