"""Connecting, pinging and closing."""

from __future__ import annotations

import pytest

from monoq.core.backend import Backend, Capabilities
from monoq.testing.support import enqueue

pytestmark = pytest.mark.anyio  # the suite's tests are async, in any host project


async def test_backend_satisfies_the_protocol(backend: Backend) -> None:
    assert isinstance(backend, Backend)
    assert isinstance(backend.capabilities, Capabilities)
    assert isinstance(backend.url, str)


async def test_connect_again_keeps_the_jobs(backend: Backend) -> None:
    [job] = await enqueue(backend)
    await backend.connect()
    await backend.ping()
    assert await backend.get(job.id) == job


async def test_aclose_twice_is_safe(backend: Backend) -> None:
    await backend.aclose()
    await backend.aclose()
