"""A worker hands its outcomes back and takes new work in the same backend call, and never runs
more jobs at once than its concurrency, whichever path claimed them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import anyio
import pytest

import monoq
from monoq.backends.memory import MemoryBackend
from monoq.client import Client
from monoq.core.backend import Capabilities
from monoq.core.models import Finish, Job, JobState, Lease
from monoq.registry import Registry
from monoq.worker import Worker, WorkerSettings

pytestmark = pytest.mark.anyio

running_now = 0
most_at_once = 0


@monoq.handler("test.step")
async def step(ctx: monoq.Context, payload: Any) -> int:
    global running_now, most_at_once
    running_now += 1
    most_at_once = max(most_at_once, running_now)
    try:
        for _ in range(int(payload) % 3 + 1):
            await anyio.lowlevel.checkpoint()
        return int(payload)
    finally:
        running_now -= 1


async def steps(backend: MemoryBackend, n: int) -> tuple[Client, list[Job], Worker]:
    """``n`` test.step jobs enqueued on ``backend``, and a worker of concurrency 4 for them
    (not started); resets the most-at-once count."""
    global most_at_once
    most_at_once = 0
    registry = Registry()
    registry.add_function(step)
    client = Client(backend, registry=registry)
    jobs = await client.enqueue_many([{"handler": "test.step", "payload": i}
                                      for i in range(n)])
    worker = Worker(client, registry, WorkerSettings(
        concurrency=4, heartbeat=timedelta(seconds=5), grace=timedelta(seconds=5)))
    return client, jobs, worker


class CountingBackend(MemoryBackend):
    """Counts the calls a worker makes, and lets every call yield to the loop once, so that
    the claim loop and the ack flush interleave as they do over a network."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, int] = {}

    def _tally(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    async def claim(self, queues: Sequence[str], **kw: Any) -> list[Lease]:
        self._tally("claim")
        await anyio.lowlevel.checkpoint()
        return await super().claim(queues, **kw)

    async def finish(self, items: Sequence[Finish], *, now: datetime) -> list[bool]:
        self._tally("finish")
        await anyio.lowlevel.checkpoint()
        return await super().finish(items, now=now)

    async def finish_and_claim(self, items: Sequence[Finish], queues: Sequence[str],
                               **kw: Any) -> tuple[list[bool], list[Lease]]:
        self._tally("finish_and_claim")
        await anyio.lowlevel.checkpoint()
        applied = await MemoryBackend.finish(self, items, now=kw["now"])
        leases = await MemoryBackend.claim(self, queues, limit=kw["limit"],
                                           lease_for=kw["lease_for"],
                                           worker_id=kw["worker_id"], now=kw["now"])
        return applied, leases


async def test_freed_slots_are_refilled_by_the_ack_call_within_the_concurrency() -> None:
    backend = CountingBackend()
    client, jobs, worker = await steps(backend, 300)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        with anyio.fail_after(30):
            done = [await client.wait(job.id) for job in jobs]
        worker.stop()
    assert [job.result for job in done] == list(range(300))
    assert {job.state for job in done} == {JobState.COMPLETED}
    assert most_at_once <= 4
    # Outcomes never travel alone while there is work left: no plain finish calls, and the
    # claims that are not part of an ack call are a handful (the start, idle moments).
    assert backend.calls.get("finish", 0) == 0
    assert backend.calls["finish_and_claim"] >= 300 // 4 // 2
    assert backend.calls.get("claim", 0) <= 10, backend.calls


class StallingBackend(MemoryBackend):
    """The first ``finish_and_claim`` call waits until ``release`` is set; the others answer
    at once. Counts the outcomes other calls handed back while that call was held. It says it
    is served out of process, as a network backend is."""

    capabilities = Capabilities(shared_across_processes=False, served_out_of_process=True)

    def __init__(self) -> None:
        super().__init__()
        self.release = anyio.Event()
        self.held = anyio.Event()
        self.calls = 0
        self.completed_while_held = 0
        self.twenty_while_held = anyio.Event()

    async def finish_and_claim(self, items: Sequence[Finish], queues: Sequence[str],
                               **kw: Any) -> tuple[list[bool], list[Lease]]:
        self.calls += 1
        if self.calls == 1:
            self.held.set()
            await self.release.wait()
        elif self.held.is_set() and not self.release.is_set():
            self.completed_while_held += len(items)
            if self.completed_while_held >= 20:
                self.twenty_while_held.set()
        return await super().finish_and_claim(items, queues, **kw)


async def test_while_one_ack_call_waits_on_the_backend_the_other_half_of_the_slots_works_on(
) -> None:
    backend = StallingBackend()
    client, jobs, worker = await steps(backend, 200)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        with anyio.fail_after(30):
            await backend.held.wait()
            # One call is held with its outcomes and the slots it would refill; the other
            # slots keep taking jobs and handing back outcomes meanwhile.
            await backend.twenty_while_held.wait()
            backend.release.set()
            done = [await client.wait(job.id) for job in jobs]
        worker.stop()
    assert {job.state for job in done} == {JobState.COMPLETED}
    assert most_at_once <= 4


handler_ended = anyio.Event()
handler_started = anyio.Event()


@monoq.handler("test.forever")
async def forever(ctx: monoq.Context, payload: Any) -> None:
    handler_started.set()
    try:
        await anyio.sleep_forever()
    finally:
        handler_ended.set()


@monoq.handler("test.reports")
async def reports(ctx: monoq.Context, payload: Any) -> None:
    ctx.progress(0.5)


class BrokenProgress(MemoryBackend):
    """A bug outside any handler: storing progress raises what no backend should."""

    async def report_progress(self, items: Any, *, now: Any) -> list[bool]:
        raise ZeroDivisionError("a bug in the backend")


async def test_a_worker_torn_down_mid_job_stops_the_handler_and_records_no_outcome() -> None:
    global handler_started, handler_ended
    handler_started, handler_ended = anyio.Event(), anyio.Event()
    backend = MemoryBackend()
    registry = Registry()
    registry.add_function(forever)
    client = Client(backend, registry=registry)
    job = await client.enqueue("test.forever")
    worker = Worker(client, registry, WorkerSettings(
        concurrency=2, heartbeat=timedelta(seconds=5), grace=timedelta(seconds=5)))
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            await handler_started.wait()
            tg.cancel_scope.cancel()  # not a graceful stop: the worker itself is cancelled
        await handler_ended.wait()
    # No outcome: the job stays RUNNING under its lease, for the reaper to hand out again.
    stored = await client.get(job.id)
    assert stored is not None and stored.state is JobState.RUNNING


async def test_an_error_outside_the_handler_stops_the_worker_and_is_raised() -> None:
    backend = BrokenProgress()
    registry = Registry()
    registry.add_function(reports)
    client = Client(backend, registry=registry)
    await client.enqueue("test.reports")
    worker = Worker(client, registry, WorkerSettings(
        concurrency=2, heartbeat=timedelta(seconds=5), grace=timedelta(seconds=5)))
    with anyio.fail_after(10), pytest.raises(BaseExceptionGroup) as raised:
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
    assert [type(e) for e in leaves(raised.value)] == [ZeroDivisionError]


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]
