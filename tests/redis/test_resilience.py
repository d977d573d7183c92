"""Resilience on Redis: durability across a crash with AOF, and the real roles riding out an
outage.

Issue: workers and schedulers survive Redis restarts and outages (reconnect with capped
backoff, no crash loop, no lost acknowledged job when Redis runs with AOF); an enqueue during
an outage fails fast with a clear error instead of hanging.

These tests run their own ``redis-server`` with ``--appendonly yes --appendfsync always`` (the
``aof_redis`` fixture of tests/conftest.py; the others run without persistence), which they
SIGKILL and restart on the same directory.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from monoq.backends.redis import RedisBackend
from monoq.client import Client
from monoq.config import load_config
from monoq.core.models import Finish, Job, JobState, Outcome
from monoq.errors import BackendUnavailable
from monoq.registry import Registry
from monoq.supervisor import Supervisor
from tests.conftest import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


@contextlib.asynccontextmanager
async def connected(url: str) -> AsyncIterator[RedisBackend]:
    backend = RedisBackend(url)
    await backend.connect()
    try:
        yield backend
    finally:
        await backend.aclose()


async def snapshot(backend: RedisBackend, ids: list[str]) -> list[Job | None]:
    out: list[Job | None] = []
    for start in range(0, len(ids), 500):
        out.extend(await backend.get_many(ids[start : start + 500]))
    return out


# -- (1) durability ----------------------------------------------------------------------------


async def test_every_acknowledged_enqueue_survives_a_sigkill_with_aof(
    aof_redis: RedisServer,
) -> None:
    async with connected(aof_redis.url) as backend:
        client = Client(backend)
        ids: list[str] = []
        for i in range(1000):  # one acknowledged call per job
            delay: dict[str, Any] = {"delay": 3600} if i % 10 == 0 else {}
            job = await client.enqueue("echo", {"i": i}, queue=f"q{i % 3}", **delay)
            ids.append(job.id)
        # move some of them on, so that every state change is durable too, not only enqueues
        leases = await backend.claim(
            ["q0", "q1", "q2"], limit=300, lease_for=timedelta(minutes=5), worker_id="w",
            now=client.clock(),
        )
        assert len(leases) == 300
        await backend.finish(
            [Finish(lease, Outcome.COMPLETED, result_json=b"1") for lease in leases[:100]],
            now=client.clock(),
        )
        before = await snapshot(backend, ids)
        attempts_before = await backend.attempts(leases[0].job.id)
    assert all(job is not None for job in before)
    states = {job.state for job in before if job is not None}
    assert states == {JobState.SCHEDULED, JobState.QUEUED, JobState.RUNNING, JobState.COMPLETED}

    aof_redis.kill()
    aof_redis.start()

    async with connected(aof_redis.url) as backend:
        after = await snapshot(backend, ids)
        missing = [job_id for job_id, job in zip(ids, after, strict=True) if job is None]
        assert missing == [], f"{len(missing)} acknowledged jobs lost"
        assert after == before  # every field, the state included
        assert await backend.attempts(leases[0].job.id) == attempts_before
        stats = {s.queue: s.counts for s in await backend.stats()}
        assert sum(sum(c.values()) for c in stats.values()) == 1000


# -- (2) an outage while the roles run ---------------------------------------------------------


@pytest.mark.slow
async def test_worker_and_scheduler_ride_out_an_outage(aof_redis: RedisServer) -> None:
    config = load_config(env={}, overrides={
        "backend.url": "redis://127.0.0.1:6379/0",  # unused: the client brings its backend
        "worker.concurrency": 5,
        "worker.heartbeat_seconds": 0.1,
        "worker.lease_seconds": 2,
        "worker.grace_seconds": 2,
        "retry.base_seconds": 0.01,
        "retry.max_seconds": 0.05,
        "scheduler.reap_margin_seconds": 0,
    })
    backend = RedisBackend(aof_redis.url)
    registry = Registry.discover()
    client = Client(backend, registry=registry)
    supervisor = Supervisor(config, roles=("worker", "scheduler"), client=client,
                            registry=registry, handle_signals=False)
    exit_codes: list[int] = []

    async def supervise() -> None:
        exit_codes.append(await supervisor.run())

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(supervise)
            await anyio.lowlevel.checkpoint()
            try:
                jobs = await client.enqueue_many(
                    [{"handler": "sleep", "payload": {"seconds": 0.05}} for _ in range(200)]
                )
                ids = [job.id for job in jobs]
                # 200 x 50 ms over 5 slots is ~2 s of work: cut Redis off part-way through
                with anyio.fail_after(30):
                    while True:
                        done = [j for j in await snapshot(backend, ids)
                                if j is not None and j.state is JobState.COMPLETED]
                        if len(done) >= 40:
                            break
                        await anyio.sleep(0.02)
                assert len(done) < 200, "the run finished before the outage began"

                aof_redis.kill()
                outage_began = time.monotonic()
                with anyio.fail_after(5):  # fails fast, never hangs
                    with pytest.raises(BackendUnavailable):
                        await client.enqueue("sleep", {"seconds": 0.05})
                await anyio.sleep(max(0.0, 2.0 - (time.monotonic() - outage_began)))
                assert not exit_codes, "the supervisor exited during the outage"
                aof_redis.start()

                with anyio.fail_after(60):
                    while True:
                        final = await snapshot(backend, ids)
                        if all(j is not None and j.terminal for j in final):
                            break
                        await anyio.sleep(0.05)
                assert not exit_codes, "the supervisor exited after the outage"
                # the roles handled the outage themselves: no crash, no restart loop
                assert supervisor.restarts == {"scheduler": 0, "worker": 0}
            finally:
                supervisor.stop()
        assert exit_codes == [0]
    finally:
        await backend.aclose()

    lost = [job_id for job_id, job in zip(ids, final, strict=True) if job is None]
    assert lost == []
    states = {job.state for job in final if job is not None}
    assert states == {JobState.COMPLETED}, states  # none stuck running, none dead
    assert all(job is not None and job.attempt >= 1 for job in final)


@pytest.mark.slow
async def test_a_graceful_stop_during_an_outage_keeps_the_finished_jobs_ack(
    aof_redis: RedisServer,
) -> None:
    config = load_config(env={}, overrides={
        "backend.url": "redis://127.0.0.1:6379/0",  # unused: the client brings its backend
        "worker.concurrency": 1,
        "worker.heartbeat_seconds": 0.1,
        "worker.lease_seconds": 30,  # no reaping can hide a dropped ack (and no scheduler runs)
        "worker.grace_seconds": 10,
    })
    backend = RedisBackend(aof_redis.url)
    registry = Registry.discover()
    client = Client(backend, registry=registry)
    supervisor = Supervisor(config, roles=("worker",), client=client, registry=registry,
                            handle_signals=False)
    exit_codes: list[int] = []

    async def supervise() -> None:
        exit_codes.append(await supervisor.run())

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(supervise)
            job = await client.enqueue("sleep", {"seconds": 0.5})
            with anyio.fail_after(10):
                while (await client.get(job.id)).state is not JobState.RUNNING:
                    await anyio.sleep(0.01)
            aof_redis.kill()
            supervisor.stop()  # graceful: the running job finishes within the grace period
            await anyio.sleep(1.5)  # it has finished; its ack cannot reach Redis yet
            aof_redis.start()
            with anyio.fail_after(20):
                while not exit_codes:
                    await anyio.sleep(0.05)
        assert exit_codes == [0]
        stored = await client.get(job.id)
        assert stored.state is JobState.COMPLETED, stored.state
    finally:
        await backend.aclose()
