"""ctx.progress: a handler says how far it is; the worker stores the latest report at most once
per interval, and once more when the job ends."""

from __future__ import annotations

import io
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from monoq.backends.memory import MemoryBackend
from monoq.cli import main
from monoq.client import Client, connect
from monoq.context import Context
from monoq.core.models import JobState, Progress
from monoq.registry import Registry, handler
from monoq.worker import Worker, WorkerSettings

gate = anyio.Event()


@handler("progress.loop")
async def loop(ctx: Context, payload: Any) -> str:
    for n in range(1, 20_001):  # a tight loop: 20 000 reports
        ctx.progress(n / 20_000, f"row {n} of 20000")
        if n == 10_000:
            await gate.wait()  # half way: the test looks at what is stored
    return "done"


@handler("progress.sync")
def sync_loop(ctx: Context, payload: Any) -> None:
    ctx.progress(0.5, "from a thread")
    raise RuntimeError("boom")


class Counting(MemoryBackend):
    calls = 0

    async def report_progress(self, items: Any, *, now: Any) -> list[bool]:
        type(self).calls += 1
        return await super().report_progress(items, now=now)


async def test_a_tight_loop_of_reports_becomes_a_few_backend_calls() -> None:
    global gate
    gate = anyio.Event()
    registry = Registry()
    registry.add_function(loop)
    backend = Counting()
    client = Client(backend, registry=registry)
    worker = Worker(client, registry, WorkerSettings(
        concurrency=1, heartbeat=timedelta(seconds=5), progress_interval=0.05))
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        job = await client.enqueue("progress.loop", None)
        with anyio.fail_after(10):
            while (await client.get(job.id)).progress is None:
                await anyio.sleep(0.01)
        half = await client.get(job.id)
        assert half.state is JobState.RUNNING
        assert (half.progress, half.progress_message) == (0.5, "row 10000 of 20000")
        gate.set()
        with anyio.fail_after(10):
            done = await client.wait(job.id)
        worker.stop()
    assert done.state is JobState.COMPLETED
    assert (done.progress, done.progress_message) == (1.0, "row 20000 of 20000")  # its last word
    assert Counting.calls <= 5  # not 20 000


async def test_sync_handlers_report_too_and_a_retry_clears_it() -> None:
    registry = Registry()
    registry.add_function(sync_loop)
    client = Client(MemoryBackend(), registry=registry)
    worker = Worker(client, registry, WorkerSettings(concurrency=1, progress_interval=0.05))
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        job = await client.enqueue("progress.sync", None, max_retries=1)
        with anyio.fail_after(10):
            while (current := await client.get(job.id)).state is not JobState.RETRYING:
                await anyio.sleep(0.01)
        worker.stop()
    assert current.progress is None  # the report was stored, then the retry cleared it
    [attempt] = await client.attempts(job.id)
    assert attempt.error_type == "RuntimeError"


def test_bad_progress_is_refused_by_the_context() -> None:
    ctx = Context(job=None, lease_token="t", worker_id="w")  # type: ignore[arg-type]  # noqa: S106
    for bad in (-0.1, 1.01, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match="from 0 to 1"):
            ctx.progress(bad)  # type: ignore[arg-type]
    ctx.progress(1, "x" * 600)
    fraction, message = ctx._take_progress() or (None, None)
    assert fraction == 1.0
    assert message is not None and len(message) == 500 and message.endswith("…")


def test_monoq_job_show_prints_the_progress(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/q.db"

    async def prepare() -> str:
        async with connect(url) as client:
            job = await client.enqueue("echo", None)
            [lease] = await client.backend.claim(["default"], limit=1,
                                                 lease_for=timedelta(seconds=30),
                                                 worker_id="w", now=client.clock())
            await client.backend.report_progress([Progress(lease, 0.25, "step 1 of 4")],
                                                 now=client.clock())
            return job.id

    job_id = anyio.run(prepare)
    out = io.StringIO()
    assert main(["job", "show", job_id, "--backend", url], out=out) == 0
    assert re.search(r"^progress +25% step 1 of 4$", out.getvalue(), re.MULTILINE), out.getvalue()
