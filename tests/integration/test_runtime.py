"""Worker + scheduler under the supervisor, in-process, on the memory backend."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import pytest

import monoq
from monoq.backends.memory import MemoryBackend
from monoq.client import Client
from monoq.config import Config, load_config
from monoq.core.models import AttemptOutcome, JobState
from monoq.registry import Registry
from monoq.supervisor import Supervisor
from tests.integration._inprocess import supervised

pytestmark = pytest.mark.anyio

calls: list[str] = []


@monoq.handler("test.add")
async def add(ctx: monoq.Context, payload: dict[str, int]) -> int:
    return payload["a"] + payload["b"]


@monoq.handler("test.sync_upper")
def sync_upper(ctx: monoq.Context, payload: str) -> str:
    return payload.upper()


@monoq.handler("test.flaky", max_retries=2)
async def flaky(ctx: monoq.Context, payload: Any) -> str:
    raise RuntimeError(f"boom {ctx.attempt}")


@monoq.handler("test.hang", timeout=0.2)
async def hang(ctx: monoq.Context, payload: Any) -> None:
    await anyio.sleep(60)


@monoq.handler("test.retry_fast")
async def retry_fast(ctx: monoq.Context, payload: Any) -> int:
    if ctx.attempt < 3:
        raise monoq.Retry(after=0.01)
    return ctx.attempt


@monoq.handler("test.skip")
async def skip(ctx: monoq.Context, payload: Any) -> None:
    raise monoq.SkipRetry("bad input")


@monoq.handler("test.not_json")
async def not_json(ctx: monoq.Context, payload: Any) -> object:
    return object()


def registry() -> Registry:
    reg = Registry.discover()
    for func in (add, sync_upper, flaky, hang, retry_fast, skip, not_json):
        reg.add_function(func)
    return reg


def fast_config(**worker: Any) -> Config:
    return load_config(os.devnull, env={}, overrides={
        "backend.url": "memory://",
        "worker.heartbeat_seconds": 0.05,
        "worker.lease_seconds": 2,
        "worker.grace_seconds": 2,
        "retry.base_seconds": 0.01,
        "retry.max_seconds": 0.05,
        "scheduler.reap_margin_seconds": 0,
        **{f"worker.{k}": v for k, v in worker.items()},
    })


@asynccontextmanager
async def running(config: Config | None = None, roles: tuple[str, ...] = ("worker", "scheduler")
                  ) -> AsyncIterator[tuple[Client, Supervisor]]:
    async with supervised(config or fast_config(), registry(), roles) as running_roles:
        yield running_roles


async def test_thousand_jobs_all_complete_once() -> None:
    async with running(fast_config(concurrency=20)) as (client, _):
        jobs = await client.enqueue_many(
            [{"handler": "test.add", "payload": {"a": i, "b": 1}} for i in range(1000)])
        with anyio.fail_after(30):
            done = [await client.wait(job.id) for job in jobs]
    assert [job.result for job in done] == [i + 1 for i in range(1000)]
    assert {job.state for job in done} == {JobState.COMPLETED}
    assert {job.attempt for job in done} == {1}


async def test_sync_handler_runs_in_a_thread() -> None:
    async with running() as (client, _):
        job = await client.enqueue("test.sync_upper", "hi")
        with anyio.fail_after(5):
            assert (await client.wait(job.id)).result == "HI"


async def test_failures_retry_with_backoff_then_dead_letter() -> None:
    async with running() as (client, _):
        job = await client.enqueue("test.flaky", None)
        with anyio.fail_after(5):
            done = await client.wait(job.id)
        history = await client.attempts(job.id)
    assert done.state is JobState.DEAD
    assert done.max_retries == 2  # the handler's default
    assert done.attempt == 3
    assert [a.outcome for a in history] == [AttemptOutcome.FAILED] * 3
    assert [a.error_message for a in history] == ["boom 1", "boom 2", "boom 3"]
    assert history[0].traceback is not None and "RuntimeError" in history[0].traceback
    assert done.error == "RuntimeError: boom 3"


async def test_retry_and_skip_retry_steer_the_worker() -> None:
    async with running() as (client, _):
        retried = await client.enqueue("test.retry_fast")
        skipped = await client.enqueue("test.skip")
        with anyio.fail_after(5):
            assert (await client.wait(retried.id)).result == 3
            dead = await client.wait(skipped.id)
    assert dead.state is JobState.DEAD and dead.attempt == 1
    assert dead.error == "SkipRetry: bad input"


async def test_unknown_handler_is_retried_then_dead_never_completed() -> None:
    async with running() as (client, _):
        job = await client.enqueue("no.such.handler", {}, max_retries=1)
        with anyio.fail_after(5):
            done = await client.wait(job.id)
    assert done.state is JobState.DEAD
    assert done.attempt == 2
    assert done.error is not None and done.error.startswith("HandlerNotFound")


async def test_timeout_fails_the_attempt() -> None:
    async with running() as (client, _):
        job = await client.enqueue("test.hang", max_retries=0)
        with anyio.fail_after(5):
            done = await client.wait(job.id)
    assert done.state is JobState.DEAD
    assert done.error is not None and done.error.startswith("TimeoutError")


async def test_result_that_is_not_json_dead_letters() -> None:
    async with running() as (client, _):
        job = await client.enqueue("test.not_json")
        with anyio.fail_after(5):
            done = await client.wait(job.id)
    assert done.state is JobState.DEAD and done.attempt == 1
    assert done.error is not None and done.error.startswith("SerializationError")


async def test_cancel_running_job_stops_it() -> None:
    async with running() as (client, _):
        job = await client.enqueue("sleep", {"seconds": 30})
        with anyio.fail_after(5):
            while (await client.get(job.id)).state is not JobState.RUNNING:
                await anyio.sleep(0.01)
            await client.cancel(job.id)
            done = await client.wait(job.id)
        history = await client.attempts(job.id)
    assert done.state is JobState.CANCELLED
    assert history[-1].outcome is AttemptOutcome.CANCELLED


async def test_delayed_job_runs_after_its_delay_not_before() -> None:
    async with running() as (client, _):
        job = await client.enqueue("echo", "later", delay=0.3)
        assert (await client.get(job.id)).state is JobState.SCHEDULED
        with anyio.fail_after(5):
            done = await client.wait(job.id)
    assert done.result == "later"
    assert done.started_at is not None and done.started_at >= job.run_at


async def test_idle_worker_wakes_on_enqueue() -> None:
    async with running() as (client, _):
        await anyio.wait_all_tasks_blocked()  # the worker has found nothing and waits
        job = await client.enqueue("echo", 1)
        with anyio.fail_after(1):  # far below the worker's idle wait of 5 s
            assert (await client.wait(job.id)).result == 1


async def test_crashed_worker_lease_is_reaped_and_job_reruns() -> None:
    # A worker that claims and then vanishes: the scheduler reaps the lease as a failed attempt.
    async with running(roles=("scheduler",)) as (client, _):
        await client.enqueue("echo", "x")
        [lease] = await client.backend.claim(["default"], limit=1, lease_for=_ms(50),
                                             worker_id="ghost", now=client.clock())
        with anyio.fail_after(5):
            while (await client.get(lease.job_id)).state is not JobState.QUEUED:
                await anyio.sleep(0.02)
        job = await client.get(lease.job_id)
        history = await client.attempts(job.id)
    assert job.attempt == 1
    assert history[0].error_type == "LeaseExpired"


async def test_graceful_stop_releases_unfinished_jobs_with_attempt_refunded() -> None:
    config = attrs.evolve(fast_config(), worker=attrs.evolve(fast_config().worker,
                                                              grace_seconds=0.2))
    backend_client: Client | None = None
    async with running(config, roles=("worker",)) as (client, supervisor):
        backend_client = client
        job = await client.enqueue("sleep", {"seconds": 30})
        quick = await client.enqueue("sleep", {"seconds": 0.05})
        with anyio.fail_after(5):
            while (await client.get(job.id)).state is not JobState.RUNNING:
                await anyio.sleep(0.01)
        supervisor.stop()
    assert backend_client is not None
    released = await backend_client.get(job.id)
    assert released.state is JobState.QUEUED
    assert released.attempt == 0
    assert (await backend_client.get(quick.id)).state is JobState.COMPLETED
    assert (await backend_client.attempts(job.id))[-1].outcome is AttemptOutcome.RELEASED


async def test_crashing_role_is_restarted(caplog: pytest.LogCaptureFixture) -> None:
    class Boom(Exception):
        pass

    reg = registry()
    client = Client(MemoryBackend(), registry=reg)
    supervisor = Supervisor(fast_config(), roles=("scheduler",), client=client, registry=reg,
                            handle_signals=False, restart_backoff=0.01)
    original = client.backend.promote
    failures = 2

    async def flaky_promote(**kwargs: Any) -> int:
        nonlocal failures
        if failures:
            failures -= 1
            raise Boom("scheduler bug")
        return await original(**kwargs)

    client.backend.promote = flaky_promote  # type: ignore[method-assign]
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(supervisor.run)
            while supervisor.restarts["scheduler"] < 2:
                await anyio.sleep(0.01)
            job = await client.enqueue("echo", 1, delay=0.05)
            while (await client.get(job.id)).state is JobState.SCHEDULED:
                await anyio.sleep(0.01)
            supervisor.stop()
    assert "role scheduler crashed" in caplog.text


def _ms(n: int) -> Any:
    from datetime import timedelta

    return timedelta(milliseconds=n)


@contextmanager
def _unused() -> Iterator[Callable[[], None]]:
    yield lambda: None


async def test_roles_follow_the_backend_clock_when_it_has_one() -> None:
    skew = timedelta(minutes=10)

    class SkewedBackend(MemoryBackend):
        async def server_now(self) -> datetime:
            return datetime.now(UTC) + skew

    reg = registry()
    client = Client(SkewedBackend(), registry=reg)
    supervisor = Supervisor(fast_config(), roles=("worker", "scheduler"), client=client,
                            registry=reg, handle_signals=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(supervisor.run)
        with anyio.fail_after(5):
            job = await client.enqueue("sleep", {"seconds": 0.2})
            while (running := await client.get(job.id)).state is not JobState.RUNNING:
                await anyio.sleep(0.01)
        supervisor.stop()
    assert running.lease_expires_at is not None
    # the lease deadline is on the backend's clock: 10 minutes ahead of this host's
    ahead = running.lease_expires_at - datetime.now(UTC)
    assert skew < ahead < skew + timedelta(seconds=5)
