"""Every conformance test, gathered for ``from monoq.testing.suite import *`` in one test module
of the project that runs the suite (see ``monoq.testing``).

Each module holds one part of the contract and may be imported alone the same way
(``from monoq.testing.suite.claim import *``), which is how monoq's own tests/conformance runs
them: one thin test module per part.
"""

from __future__ import annotations

from types import ModuleType

import pytest

from monoq.testing.suite import (
    admin,
    agreement,
    audit,
    backpressure,
    claim,
    dashboard,
    enqueue,
    finish_and_claim,
    leases,
    lifecycle,
    listing_scale,
    maintenance,
    optional,
    progress,
    schedules,
    stacks,
    stats,
    wakeups,
)

MODULES: tuple[ModuleType, ...] = (
    admin,
    agreement,
    audit,
    backpressure,
    claim,
    dashboard,
    enqueue,
    finish_and_claim,
    leases,
    lifecycle,
    listing_scale,
    maintenance,
    optional,
    progress,
    schedules,
    stacks,
    stats,
    wakeups,
)


def gather(modules: tuple[ModuleType, ...] = MODULES) -> dict[str, object]:
    """The test functions of ``modules`` by name; two with one name would hide one of them from
    pytest, so that is an error here."""
    found: dict[str, object] = {}
    for module in modules:
        for name, obj in vars(module).items():
            if name.startswith("test_") and callable(obj):
                if name in found:
                    raise RuntimeError(f"two conformance tests are named {name}")
                found[name] = obj
    return found


globals().update(gather())
pytestmark = pytest.mark.anyio  # the tests are async, whatever the host project's anyio mode
