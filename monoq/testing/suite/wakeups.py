"""Wake-ups across instances: another process's enqueue or schedule wakes a waiting worker or
scheduler. Gated on ``Capabilities``: ``shared_across_processes`` (polling allowed) and
``cross_process_wakeup`` (no polling: within a round trip). The wake-ups within one instance are
in claim.py and maintenance.py."""

from __future__ import annotations

import time
from datetime import timedelta

import anyio
import pytest

from monoq.core.backend import Backend
from monoq.core.models import Schedule
from monoq.testing import OpenBackend
from monoq.testing.support import (
    LEASE,
    T0,
    WAIT,
    at,
    claim,
    enqueue,
    new_job,
    require_capability,
)

pytestmark = pytest.mark.anyio  # the suite's tests are async, in any host project


async def test_capabilities_agree_with_each_other(backend: Backend) -> None:
    capabilities = backend.capabilities
    assert capabilities.shared_across_processes or not capabilities.cross_process_wakeup


async def test_another_instance_wakes_a_waiter_by_polling_at_least(
    backend: Backend, monoq_backend_factory: OpenBackend
) -> None:
    require_capability(backend, "shared_across_processes")
    async with monoq_backend_factory() as producer:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: backend.wait_for_jobs(["default"], timeout=600))
                await anyio.sleep(0.1)
                await enqueue(producer, new_job())
        [lease] = await claim(backend, ["default"], limit=5)
        assert lease.job.queue == "default"

        # wait_for_changes: an earlier due time made by the other instance.
        await enqueue(producer, new_job(run_at=at(3600)))
        assert await backend.next_wakeup(now=T0) == T0 + LEASE
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: backend.wait_for_changes(timeout=600))
                await anyio.sleep(0.1)
                await enqueue(producer, new_job(run_at=at(5)))


async def test_wait_for_jobs_wakes_on_an_enqueue_from_another_instance(
    backend: Backend, monoq_backend_factory: OpenBackend
) -> None:
    require_capability(backend, "cross_process_wakeup")
    async with monoq_backend_factory() as producer:
        woke_after: list[float] = []

        async def waiter() -> None:
            start = time.monotonic()
            await backend.wait_for_jobs(["other", "default"], timeout=30)
            woke_after.append(time.monotonic() - start)

        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await anyio.sleep(0.1)  # the waiter is blocked (e.g. in a BLPOP) by now
                sent = time.monotonic()
                await enqueue(producer, new_job())
            latency = time.monotonic() - sent
        assert woke_after
        assert latency < 0.5, latency  # no polling


async def test_wait_for_changes_wakes_on_a_delayed_enqueue_from_another_instance(
    backend: Backend, monoq_backend_factory: OpenBackend
) -> None:
    require_capability(backend, "cross_process_wakeup")
    async with monoq_backend_factory() as producer:
        # "fresh" is unknown when the scheduler starts waiting: the wait still covers it
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: backend.wait_for_changes(timeout=30))
                await anyio.sleep(0.1)
                await enqueue(producer, new_job("fresh", run_at=T0 + timedelta(hours=1)))


async def test_wait_for_changes_wakes_on_a_schedule_put_by_another_instance(
    backend: Backend, monoq_backend_factory: OpenBackend
) -> None:
    require_capability(backend, "cross_process_wakeup")
    async with monoq_backend_factory() as editor:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: backend.wait_for_changes(timeout=30))
                await anyio.sleep(0.1)
                await editor.put_schedule(
                    Schedule(id="s", handler="echo", every=60, created_at=T0, updated_at=T0)
                )
