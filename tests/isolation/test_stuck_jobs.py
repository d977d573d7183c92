"""A job that has to stop (timeout, cancel, lost lease) records where it was: its asyncio
task's awaits, or its thread's stack; a sync handler that runs on is reported."""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from monoq.backends.memory import MemoryBackend
from monoq.cli import main
from monoq.client import Client, connect
from monoq.context import Context
from monoq.core.models import ErrorInfo, Finish, JobState, Outcome
from monoq.registry import Registry, handler
from monoq.worker import Worker, WorkerSettings

release = threading.Event()


async def fetch_report(seconds: float) -> None:
    await anyio.sleep(seconds)


@handler("stuck.async")
async def stuck_async(ctx: Context, payload: Any) -> None:
    await fetch_report(3600)


def crunch_numbers() -> None:
    while not release.is_set():  # never looks at ctx.cancelled
        time.sleep(0.01)


@handler("stuck.sync")
def stuck_sync(ctx: Context, payload: Any) -> None:
    crunch_numbers()


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    release.clear()
    registry = Registry()
    registry.add_function(stuck_async)
    registry.add_function(stuck_sync)
    client = Client(MemoryBackend(), registry=registry)
    worker = Worker(client, registry, WorkerSettings(
        concurrency=2, heartbeat=timedelta(milliseconds=100), lease=timedelta(seconds=5),
        grace=timedelta(seconds=2), stop_grace=0.3))
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        yield client
        release.set()
        worker.stop()


async def _attempt_error(client: Client, job_id: str) -> tuple[str, str, str]:
    with anyio.fail_after(30):
        await client.wait(job_id)
    [attempt] = await client.attempts(job_id)
    return attempt.error_type or "", attempt.error_message or "", attempt.traceback or ""


async def test_an_async_job_past_its_timeout_records_its_awaits(client: Client) -> None:
    job = await client.enqueue("stuck.async", None, timeout=0.3, max_retries=0)
    kind, message, stack = await _attempt_error(client, job.id)
    assert kind == "TimeoutError"
    assert "it was at test_stuck_jobs.py:" in message
    assert "in fetch_report" in message  # the innermost frame of the handler's own code
    assert stack.startswith("Where the handler was when its timeout (0.3s) passed "
                            "(asyncio task stack")
    assert stack.index("stuck_async") < stack.index("fetch_report")  # outermost first
    assert "monoq/worker.py" not in stack


async def test_a_sync_job_past_its_timeout_records_its_thread_and_is_reported_when_it_runs_on(
        client: Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "monoq.worker")
    job = await client.enqueue("stuck.sync", None, timeout=0.3, max_retries=0)
    kind, message, stack = await _attempt_error(client, job.id)
    assert kind == "TimeoutError"
    assert "in crunch_numbers" in message
    assert "(thread stack" in stack
    assert "crunch_numbers" in stack
    assert "stuck_sync" in stack
    with anyio.fail_after(10):
        while not any("still runs" in r.getMessage() for r in caplog.records):
            await anyio.sleep(0.05)
    lingering = next(r.getMessage() for r in caplog.records if "still runs" in r.getMessage())
    assert job.id in lingering
    assert 'isolation="process"' in lingering
    assert "crunch_numbers" in lingering


async def test_a_cancelled_job_records_where_it_was(client: Client) -> None:
    job = await client.enqueue("stuck.async", None, timeout=60)
    with anyio.fail_after(10):
        while (await client.get(job.id)).state is not JobState.RUNNING:
            await anyio.sleep(0.02)
    await client.cancel(job.id)
    kind, message, stack = await _attempt_error(client, job.id)
    assert kind == "Cancelled"
    assert "in fetch_report" in message
    assert "when it was cancelled" in stack


async def wait_for_upstream() -> None:
    await anyio.sleep(3600)


@handler("stuck.waiting")
async def stuck_waiting(ctx: Context, payload: Any) -> None:
    await wait_for_upstream()


async def test_monoq_job_stack_asks_the_worker_where_a_running_job_is(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/q.db"
    registry = Registry()
    registry.add_function(stuck_waiting)
    async with connect(url) as client:
        client.registry = registry
        worker = Worker(client, registry, WorkerSettings(
            concurrency=1, heartbeat=timedelta(milliseconds=100), lease=timedelta(seconds=5)))
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            job = await client.enqueue("stuck.waiting", None)
            with anyio.fail_after(10):
                while (await client.get(job.id)).state is not JobState.RUNNING:
                    await anyio.sleep(0.02)
            out = io.StringIO()
            code = await anyio.to_thread.run_sync(
                lambda: main(["job", "stack", job.id, "--backend", url, "--timeout", "10"],
                             out=out))
            still = await client.get(job.id)
            await client.cancel(job.id)
            worker.stop()
    assert code == 0
    text = out.getvalue()
    assert "(asyncio task stack, outermost call first)" in text
    assert text.index("stuck_waiting") < text.index("wait_for_upstream")
    assert still.state is JobState.RUNNING  # asking did not disturb it


def test_monoq_job_stack_of_a_job_that_does_not_run_says_so(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/q.db"

    async def enqueue() -> str:
        async with connect(url) as client:
            return (await client.enqueue("echo", None)).id

    job_id = anyio.run(enqueue)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["job", "stack", job_id, "--backend", url], out=io.StringIO()) != 0
    assert "is queued, not running" in err.getvalue()


async def test_a_job_whose_lease_was_lost_gets_where_it_was_in_its_attempt_record(
        client: Client) -> None:
    job = await client.enqueue("stuck.async", None, timeout=60)
    with anyio.fail_after(10):
        while (await client.get(job.id)).state is not JobState.RUNNING:
            await anyio.sleep(0.02)
    # What a scheduler does to a lease it thinks expired (here: while the worker still runs it).
    backend = client.backend
    [reaped] = await backend.expired_leases(now=client.clock() + timedelta(hours=1), limit=10)
    await backend.finish([Finish(reaped, Outcome.RETRY, retry_at=client.clock()
                                 + timedelta(hours=1), error=ErrorInfo("LeaseExpired", "late"))],
                         now=client.clock())
    with anyio.fail_after(10):
        while not (await client.attempts(job.id))[0].traceback:
            await anyio.sleep(0.02)
    [record] = await client.attempts(job.id)
    assert record.error_type == "LeaseExpired"
    assert (record.traceback or "").startswith("Where the handler was when it lost its lease")
    assert "fetch_report" in (record.traceback or "")
