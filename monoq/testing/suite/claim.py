"""Claiming: order, limits, paused queues, what a lease carries, and waiting for work."""

from __future__ import annotations

import anyio
import pytest

from monoq.core.backend import Backend
from monoq.core.models import JobQuery, JobState, Outcome
from monoq.testing.support import (
    LEASE,
    T0,
    WAIT,
    at,
    claim,
    claim_one,
    enqueue,
    finish,
    new_job,
)

pytestmark = pytest.mark.anyio  # the suite's tests are async, in any host project


async def claim_ids(
    backend: Backend, queues: list[str] | None = None, *, limit: int = 1
) -> list[str]:
    return [lease.job.id for lease in await claim(backend, queues, limit=limit, now=at(10))]


async def test_claim_on_empty_queues_answers_nothing(backend: Backend) -> None:
    assert await claim(backend, ["default", "other"], limit=10) == []


async def test_lower_priority_number_is_claimed_first(backend: Backend) -> None:
    low, normal, high = await enqueue(
        backend, new_job(priority=9), new_job(priority=5), new_job(priority=0)
    )
    claimed = [await claim_ids(backend) for _ in range(4)]
    assert claimed == [[high.id], [normal.id], [low.id], []]


async def test_fifo_within_a_priority(backend: Backend) -> None:
    jobs = [(await enqueue(backend, now=at(i / 1000)))[0] for i in range(3)]
    claimed = [await claim_ids(backend) for _ in range(3)]
    assert claimed == [[job.id] for job in jobs]


async def test_fifo_within_a_batch(backend: Backend) -> None:
    jobs = await enqueue(backend, new_job(), new_job(), new_job())
    claimed = [await claim_ids(backend) for _ in range(3)]
    assert claimed == [[job.id] for job in jobs]


async def test_priority_beats_age(backend: Backend) -> None:
    [old] = await enqueue(backend, new_job(priority=5), now=T0)
    [urgent] = await enqueue(backend, new_job(priority=0), now=at(5))
    assert await claim_ids(backend) == [urgent.id]
    assert await claim_ids(backend) == [old.id]


async def test_claim_respects_limit(backend: Backend) -> None:
    jobs = await enqueue(backend, *(new_job() for _ in range(10)))
    ids = [job.id for job in jobs]
    first = await claim_ids(backend, limit=3)
    second = await claim_ids(backend, limit=3)
    assert sorted(first) == ids[:3]
    assert sorted(second) == ids[3:6]
    queued = await backend.list_jobs(JobQuery(states={JobState.QUEUED}))
    assert sorted(job.id for job in queued.jobs) == ids[6:]


async def test_claimed_job_is_not_claimed_again(backend: Backend) -> None:
    [job] = await enqueue(backend)
    assert await claim_ids(backend) == [job.id]
    assert await claim_ids(backend, limit=5) == []


async def test_queues_are_tried_in_the_order_given(backend: Backend) -> None:
    a1, a2 = await enqueue(backend, new_job("a", priority=0), new_job("a", priority=0))
    b1, b2 = await enqueue(backend, new_job("b", priority=9), new_job("b", priority=9), now=at(1))
    assert await claim_ids(backend, ["b", "a"], limit=1) == [b1.id]
    assert sorted(await claim_ids(backend, ["b", "a"], limit=2)) == sorted([b2.id, a1.id])
    assert await claim_ids(backend, ["a", "b"], limit=5) == [a2.id]


async def test_only_the_given_queues_are_claimed(backend: Backend) -> None:
    [other] = await enqueue(backend, new_job("other"))
    assert await claim_ids(backend, ["default"], limit=5) == []
    assert await claim_ids(backend, ["other"], limit=5) == [other.id]


async def test_paused_queue_is_skipped_until_resumed(backend: Backend) -> None:
    [a] = await enqueue(backend, new_job("a"))
    [b] = await enqueue(backend, new_job("b"))
    await backend.set_paused("a", True)
    assert await claim_ids(backend, ["a", "b"], limit=5) == [b.id]
    assert await claim_ids(backend, ["a"], limit=5) == []
    await backend.set_paused("a", False)
    assert await claim_ids(backend, ["a"], limit=5) == [a.id]


async def test_claim_leases_the_job(backend: Backend) -> None:
    [job] = await enqueue(backend)
    [lease] = await claim(backend, now=at(2), worker_id="worker-7")
    assert lease.job.id == job.id
    assert lease.expires_at == at(2) + LEASE
    for seen in (lease.job, await backend.get(job.id)):
        assert seen is not None
        assert seen.state is JobState.RUNNING
        assert seen.attempt == 1
        assert seen.worker_id == "worker-7"
        assert seen.started_at == at(2)
        assert seen.lease_expires_at == at(2) + LEASE
        assert seen.run_at == T0
        assert seen.created_at == T0


async def test_every_claim_issues_a_distinct_token(backend: Backend) -> None:
    [job, *_] = await enqueue(backend, *(new_job() for _ in range(5)))
    leases = await claim(backend, limit=5)
    assert len({lease.token for lease in leases}) == 5
    [first] = [lease for lease in leases if lease.job.id == job.id]
    assert await finish(backend, first, Outcome.RELEASED, now=at(1))
    again = await claim_one(backend, job.id, now=at(2))
    assert again.token not in {lease.token for lease in leases}


# -- waiting for work -------------------------------------------------------------------------


async def test_wait_for_jobs_returns_after_an_enqueue(backend: Backend) -> None:
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: backend.wait_for_jobs(["default"], timeout=60))
            await anyio.wait_all_tasks_blocked()
            await enqueue(backend)


async def test_wait_for_jobs_on_several_queues_wakes_for_any(backend: Backend) -> None:
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: backend.wait_for_jobs(["a", "b", "c"], timeout=60))
            await anyio.wait_all_tasks_blocked()
            await enqueue(backend, new_job("b"))


async def test_wait_for_jobs_returns_after_a_promotion(backend: Backend) -> None:
    await enqueue(backend, new_job(run_at=at(60)))
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: backend.wait_for_jobs(["default"], timeout=60))
            await anyio.wait_all_tasks_blocked()
            assert await backend.promote(now=at(60), limit=10) == 1


async def test_wait_for_jobs_returns_after_a_requeue(backend: Backend) -> None:
    [job] = await enqueue(backend)
    assert await backend.cancel(job.id, now=T0) is not None
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: backend.wait_for_jobs(["default"], timeout=60))
            await anyio.wait_all_tasks_blocked()
            assert await backend.requeue([job.id], now=at(1)) == [job.id]


async def test_an_idle_wait_for_jobs_returns_without_being_woken(backend: Backend) -> None:
    # Only that a wait nothing wakes ends by itself (within WAIT); the contract lets
    # wait_for_jobs return before its timeout, so there is no lower bound to check.
    with anyio.fail_after(WAIT):
        await backend.wait_for_jobs(["default"], timeout=0.05)
