"""isolation="process": the handler runs in a child process that is killed when its job must
stop, so the timeout is hard even for code that ignores ctx.cancelled."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import anyio
import pytest

from monoq.backends.memory import MemoryBackend
from monoq.client import Client
from monoq.core.models import Job, JobState
from monoq.registry import Registry, handler
from monoq.worker import Worker, WorkerSettings


@pytest.fixture
async def worker(handlers: ModuleType) -> AsyncIterator[tuple[Client, Worker]]:
    registry = Registry()
    registry.add_module(handlers)
    client = Client(MemoryBackend(), registry=registry)
    worker = Worker(client, registry, WorkerSettings(
        concurrency=2, heartbeat=timedelta(seconds=5), grace=timedelta(seconds=5)))
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        yield client, worker
        worker.stop()


def _pids(directory: Path) -> dict[str, int]:
    lines = (directory / "pids").read_text().split("\n")
    return {job: int(pid) for job, pid in (line.split() for line in lines if line)}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and \
        Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


async def _done(client: Client, job: Job) -> Job:
    with anyio.fail_after(60):
        return await client.wait(job.id)


async def test_a_sync_handler_that_ignores_cancellation_is_killed_at_its_timeout(
        worker: tuple[Client, Worker], tmp_path: Path) -> None:
    client, _ = worker
    job = await client.enqueue("iso.spin", None, timeout=1, max_retries=0)
    done = await _done(client, job)
    assert done.state is JobState.DEAD
    [attempt] = await client.attempts(job.id)
    assert attempt.error_type == "TimeoutError"
    assert "its process was killed" in (attempt.error_message or "")
    pid = _pids(tmp_path)[job.id]
    with anyio.fail_after(10):
        while _alive(pid):  # killed, not merely abandoned like a thread
            await anyio.sleep(0.02)
    # The pool replaces the killed process: the next job runs, in a fresh one.
    after = await _done(client, await client.enqueue("iso.echo", {"n": 1}))
    assert after.state is JobState.COMPLETED
    assert after.result["pid"] != pid


async def test_a_cancelled_job_has_its_process_killed(worker: tuple[Client, Worker],
                                                      tmp_path: Path) -> None:
    client, _ = worker
    job = await client.enqueue("iso.spin", None, timeout=60)
    with anyio.fail_after(30):
        while not (tmp_path / "pids").exists():
            await anyio.sleep(0.02)
    await client.cancel(job.id)
    done = await _done(client, job)
    assert done.state is JobState.CANCELLED
    pid = _pids(tmp_path)[job.id]
    with anyio.fail_after(15):
        while _alive(pid):
            await anyio.sleep(0.05)


async def test_payload_and_result_cross_as_json_and_children_are_reused(
        worker: tuple[Client, Worker], tmp_path: Path) -> None:
    client, _ = worker
    first = await _done(client, await client.enqueue("iso.echo", {"a": [1, "two", None]}))
    second = await _done(client, await client.enqueue("iso.echo", {"b": 2.5}))
    assert first.result["payload"] == {"a": [1, "two", None]}
    assert second.result["payload"] == {"b": 2.5}
    assert first.result["attempt"] == 1
    assert first.result["pid"] != os.getpid()
    assert second.result["pid"] == first.result["pid"]  # an idle child takes the next job
    async_done = await _done(client, await client.enqueue("iso.async_echo", "x"))
    assert async_done.result["payload"] == "x"


@pytest.mark.parametrize(("kind", "state", "error_type", "says"), [
    ("error", JobState.DEAD, "ValueError", "bad input 7"),
    ("skip", JobState.DEAD, "SkipRetry", "this one can never work"),
    ("crash", JobState.DEAD, "HandlerProcessDied", "exited without an answer"),
])
async def test_what_the_child_raises_is_the_attempts_error(
        worker: tuple[Client, Worker], kind: str, state: JobState, error_type: str,
        says: str) -> None:
    client, _ = worker
    job = await client.enqueue("iso.fail", {"kind": kind, "n": 7}, max_retries=0)
    done = await _done(client, job)
    assert done.state is state
    [attempt] = await client.attempts(job.id)
    assert attempt.error_type == error_type
    assert says in (attempt.error_message or "")
    if kind == "error":  # the child's own traceback, pointing at the handler's line
        assert "monoq_isolation_handlers.py" in (attempt.traceback or "")
        assert "raise ValueError" in (attempt.traceback or "")


async def test_retry_after_from_a_child_is_honoured(worker: tuple[Client, Worker]) -> None:
    client, _ = worker
    job = await client.enqueue("iso.fail", {"kind": "retry"}, max_retries=3)
    with anyio.fail_after(30):
        while (current := await client.get(job.id)).state is not JobState.RETRYING:
            await anyio.sleep(0.02)
    assert current.started_at is not None
    assert current.run_at - current.started_at >= timedelta(seconds=29)


async def test_a_result_that_is_not_json_dead_letters_the_job(
        worker: tuple[Client, Worker]) -> None:
    client, _ = worker
    done = await _done(client, await client.enqueue("iso.not_json", None, max_retries=2))
    assert done.state is JobState.DEAD
    assert "SerializationError" in (done.error or "")


def test_process_isolation_is_declared_on_module_level_functions_only() -> None:
    with pytest.raises(ValueError, match="isolation must be 'thread' or 'process'"):
        handler("x.y", isolation="fork")

    def local(ctx: object, payload: object) -> None: ...

    with pytest.raises(ValueError, match="module-level function"):
        handler("x.y", isolation="process")(local)
