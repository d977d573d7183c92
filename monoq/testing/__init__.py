"""The conformance kit: monoq's backend contract as a pytest suite any backend can run.

A backend, built in or third-party, is done when it passes this suite. To run it against
yours, register the plugin, give it a factory, and import the tests into one test module::

    # conftest.py
    import pytest
    from monoq.testing import OpenBackend, connected

    pytest_plugins = ["monoq.testing.plugin"]

    @pytest.fixture
    def monoq_backend_factory(tmp_path) -> OpenBackend:
        return connected(lambda: MyDbBackend(f"mydb://{tmp_path}/db"))

    # test_monoq_conformance.py
    from monoq.testing.suite import *  (collects every conformance test here)

The tests take the ``backend`` fixture (a connected instance made by your factory) and read
what else they may assume from it: ``backend.capabilities`` (``monoq.core.backend.Capabilities``)
and the optional protocols it implements (``ServerTime``, ``Doctor``). A test of something your
backend does not declare is skipped, never failed; the kit never looks at a backend's name.

``monoq.testing.support`` holds the suite's helpers (a fixed clock, job builders), for tests of
your own. This package imports pytest: it is for test code, and ``import monoq`` never loads it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import pytest

# Before the suite is imported: its plain ``assert`` statements then report both sides.
pytest.register_assert_rewrite("monoq.testing.support", "monoq.testing.suite")

from monoq.core.backend import Backend

OpenBackend = Callable[[], AbstractAsyncContextManager[Backend]]
"""What the ``monoq_backend_factory`` fixture answers: each call opens a connected instance of
the backend under test, and closes it when the ``async with`` ends.

Every call made within one test reaches the same storage (the same file, server database,
...), which starts empty for each test. When the backend declares
``capabilities.shared_across_processes``, a second call is how the suite plays another process:
an instance of its own on that storage. Otherwise the suite calls it once per test.
"""


def connected(make: Callable[[], Backend]) -> OpenBackend:
    """An ``OpenBackend`` from a function that builds an unconnected instance: each call builds
    one with ``make()``, ``connect()``s it, and ``aclose()``s it at the end."""

    @contextlib.asynccontextmanager
    async def open_backend() -> AsyncIterator[Backend]:
        backend = make()
        await backend.connect()
        try:
            yield backend
        finally:
            await backend.aclose()

    return open_backend


__all__ = ["OpenBackend", "connected"]
