"""The conformance kit's pytest plugin: ``pytest_plugins = ["monoq.testing.plugin"]`` in the
top-level conftest.py (or ``-p monoq.testing.plugin``).

It provides the fixtures the suite's tests take:

- ``backend``: a connected instance of the backend under test, closed after the test;
- ``monoq_backend_factory``: how to open one. The plugin's own only says that it is missing:
  define yours (an ``OpenBackend``, see ``monoq.testing``), parametrized if several backends
  run the suite in one project;
- ``anyio_backend``: ``"asyncio"`` (monoq runs on asyncio; a conftest may override it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from monoq.core.backend import Backend
from monoq.testing import OpenBackend


@pytest.fixture
def monoq_backend_factory() -> OpenBackend:
    """Defined by the project that runs the suite; this one explains that it is missing."""
    pytest.fail(
        "the monoq conformance suite needs a `monoq_backend_factory` fixture answering a "
        "monoq.testing.OpenBackend, e.g. `return monoq.testing.connected(lambda: "
        "MyBackend(url))` (see the monoq.testing docstring)",
        pytrace=False,
    )


@pytest.fixture
async def backend(monoq_backend_factory: OpenBackend) -> AsyncIterator[Backend]:
    """A connected instance of the backend under test, on storage that starts empty."""
    async with monoq_backend_factory() as opened:
        yield opened


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """monoq is an asyncio program (its roles, the SQLite and Redis backends): no trio run."""
    return "asyncio"
