"""The optional protocols of ``monoq.core.backend``, run where a backend implements them:
``ServerTime`` (a clock of the storage's own), ``Doctor`` (checks of the storage's setup) and
``MemoryUse`` (the storage's memory, per queue)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from monoq.core.backend import Backend, Doctor, MemoryUse, ServerTime
from monoq.testing.support import enqueue, new_job

pytestmark = pytest.mark.anyio  # the suite's tests are async, in any host project


async def test_server_now_is_aware_utc_in_whole_milliseconds(backend: Backend) -> None:
    if not isinstance(backend, ServerTime):
        pytest.skip(f"{type(backend).__name__} does not implement ServerTime")
    for _ in range(3):
        now = await backend.server_now()
        assert now.utcoffset() == timedelta(0)
        assert now.microsecond % 1000 == 0


async def test_doctor_answers_named_checks_with_a_level_each(backend: Backend) -> None:
    if not isinstance(backend, Doctor):
        pytest.skip(f"{type(backend).__name__} does not implement Doctor")
    checks = await backend.doctor()
    assert isinstance(checks, list)
    for check, level, message in checks:
        assert isinstance(check, str) and check
        assert level in {"ok", "warn", "error"}
        assert isinstance(message, str) and message


async def test_memory_use_covers_every_known_queue(backend: Backend) -> None:
    if not isinstance(backend, MemoryUse):
        pytest.skip(f"{type(backend).__name__} does not implement MemoryUse")
    await enqueue(backend, new_job(queue="mem-a"), new_job(queue="mem-b"))
    report = await backend.memory_use()
    assert {"mem-a", "mem-b"} <= set(report.queues)
    assert all(size > 0 for size in report.queues.values())
    assert report.used_bytes > 0 and report.max_bytes >= 0
    assert report.taken_at.utcoffset() == timedelta(0)
