"""Scheduler-side work: delayed jobs and promote, next_wakeup, wait_for_changes, purge."""

from __future__ import annotations

import anyio
import pytest

from monoq.core.backend import Backend
from monoq.core.models import TERMINAL_STATES, JobQuery, JobState, Outcome
from monoq.testing.support import (
    LEASE,
    T0,
    WAIT,
    at,
    claim,
    claim_one,
    enqueue,
    finish,
    make_job_in,
    new_job,
)

pytestmark = pytest.mark.anyio  # the suite's tests are async, in any host project

# -- delayed jobs and promote -----------------------------------------------------------------


async def test_delayed_job_is_not_claimable_early(backend: Backend) -> None:
    [job] = await enqueue(backend, new_job(run_at=at(60)))
    assert await claim(backend, now=at(59)) == []
    assert await backend.promote(now=at(59.999), limit=10) == 0
    assert await claim(backend, now=at(59.999)) == []
    stored = await backend.get(job.id)
    assert stored is not None
    assert stored.state is JobState.SCHEDULED


async def test_delayed_job_is_claimable_after_promote(backend: Backend) -> None:
    [job] = await enqueue(backend, new_job(run_at=at(60)))
    assert await backend.promote(now=at(60), limit=10) == 1
    stored = await backend.get(job.id)
    assert stored is not None
    assert stored.state is JobState.QUEUED
    assert stored.run_at == at(60)
    [lease] = await claim(backend, now=at(61))
    assert lease.job.id == job.id
    assert lease.job.attempt == 1


async def test_promote_is_idempotent(backend: Backend) -> None:
    await enqueue(backend, new_job(run_at=at(60)))
    assert await backend.promote(now=at(61), limit=10) == 1
    assert await backend.promote(now=at(61), limit=10) == 0
    assert await backend.promote(now=at(120), limit=10) == 0
    assert len(await claim(backend, limit=10, now=at(120))) == 1


async def test_promote_respects_limit(backend: Backend) -> None:
    await enqueue(backend, *(new_job(run_at=at(60 + i)) for i in range(5)))
    moved = [await backend.promote(now=at(100), limit=2) for _ in range(4)]
    assert moved == [2, 2, 1, 0]


async def test_promote_moves_only_due_jobs(backend: Backend) -> None:
    soon, late = await enqueue(backend, new_job(run_at=at(10)), new_job(run_at=at(20)))
    assert await backend.promote(now=at(15), limit=10) == 1
    jobs = await backend.get_many([soon.id, late.id])
    assert [job.state if job else None for job in jobs] == [JobState.QUEUED, JobState.SCHEDULED]


async def test_promoted_jobs_go_by_priority_then_run_at(backend: Backend) -> None:
    late_high, early, late = await enqueue(
        backend,
        new_job(run_at=at(30), priority=0),
        new_job(run_at=at(10)),
        new_job(run_at=at(20)),
    )
    assert await backend.promote(now=at(30), limit=10) == 3
    claimed = [(await claim(backend, now=at(31)))[0].job.id for _ in range(3)]
    assert claimed == [late_high.id, early.id, late.id]


# -- next_wakeup ------------------------------------------------------------------------------


async def test_next_wakeup_is_none_when_idle(backend: Backend) -> None:
    assert await backend.next_wakeup(now=T0) is None
    await make_job_in(backend, JobState.COMPLETED)
    await make_job_in(backend, JobState.QUEUED)
    assert await backend.next_wakeup(now=T0) is None


async def test_next_wakeup_is_the_earliest_scheduled_run(backend: Backend) -> None:
    await enqueue(backend, new_job(run_at=at(90)), new_job(run_at=at(45)), new_job(run_at=at(60)))
    assert await backend.next_wakeup(now=T0) == at(45)
    assert await backend.promote(now=at(45), limit=10) == 1
    assert await backend.next_wakeup(now=at(45)) == at(60)


async def test_next_wakeup_counts_retries(backend: Backend) -> None:
    await enqueue(backend, new_job(run_at=at(3600)))
    [ready] = await enqueue(backend)
    lease = await claim_one(backend, ready.id)
    assert await finish(backend, lease, Outcome.RETRY, now=at(1), retry_at=at(50))
    assert await backend.next_wakeup(now=at(1)) == at(50)


async def test_next_wakeup_counts_lease_expiry(backend: Backend) -> None:
    await enqueue(backend, new_job(run_at=at(3600)))
    [ready] = await enqueue(backend)
    lease = await claim_one(backend, ready.id, now=at(5))
    assert await backend.next_wakeup(now=at(5)) == at(5) + LEASE
    assert await finish(backend, lease, Outcome.COMPLETED, now=at(6))
    assert await backend.next_wakeup(now=at(6)) == at(3600)


async def test_next_wakeup_forgets_cancelled_jobs(backend: Backend) -> None:
    [job] = await enqueue(backend, new_job(run_at=at(60)))
    assert await backend.cancel(job.id, now=at(1)) is not None
    assert await backend.next_wakeup(now=at(1)) is None


async def test_wait_for_changes_wakes_on_a_delayed_enqueue(backend: Backend) -> None:
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: backend.wait_for_changes(timeout=60))
            await anyio.wait_all_tasks_blocked()
            await enqueue(backend, new_job(run_at=at(60)))


async def test_an_idle_wait_for_changes_returns_without_being_woken(backend: Backend) -> None:
    # Only that a wait nothing wakes ends by itself (within WAIT); the contract lets
    # wait_for_changes return before its timeout, so there is no lower bound to check.
    with anyio.fail_after(WAIT):
        await backend.wait_for_changes(timeout=0.05)


# -- purge ------------------------------------------------------------------------------------


async def test_purge_deletes_old_finished_jobs(backend: Backend) -> None:
    job = await make_job_in(backend, JobState.COMPLETED, now=at(1))
    assert await backend.attempts(job.id) != []
    assert await backend.purge(states={JobState.COMPLETED}, finished_before=at(2)) == 1
    assert await backend.get(job.id) is None
    assert await backend.attempts(job.id) == []
    assert (await backend.list_jobs(JobQuery())).jobs == []


@pytest.mark.parametrize("state", sorted(TERMINAL_STATES), ids=str)
async def test_purge_deletes_only_the_given_states(backend: Backend, state: JobState) -> None:
    jobs = {s: await make_job_in(backend, s, queue=str(s)) for s in sorted(TERMINAL_STATES)}
    assert await backend.purge(states={state}, finished_before=at(1)) == 1
    left = {s for s, job in jobs.items() if await backend.get(job.id) is not None}
    assert left == TERMINAL_STATES - {state}


async def test_purge_ignores_unfinished_states(backend: Backend) -> None:
    unfinished = [
        await make_job_in(backend, state, queue=str(state))
        for state in (JobState.QUEUED, JobState.SCHEDULED, JobState.RUNNING, JobState.RETRYING)
    ]
    done = await make_job_in(backend, JobState.COMPLETED, queue="done")
    assert await backend.purge(states=set(JobState), finished_before=at(3600)) == 1
    assert await backend.get(done.id) is None
    assert await backend.get_many([job.id for job in unfinished]) == unfinished


async def test_purge_keeps_jobs_finished_at_or_after_the_horizon(backend: Backend) -> None:
    old = await make_job_in(backend, JobState.DEAD, now=at(1))
    edge = await make_job_in(backend, JobState.DEAD, now=at(3))
    new = await make_job_in(backend, JobState.DEAD, now=at(5))
    assert await backend.purge(states={JobState.DEAD}, finished_before=at(3)) == 1
    jobs = await backend.get_many([old.id, edge.id, new.id])
    assert jobs == [None, edge, new]


async def test_purge_respects_limit(backend: Backend) -> None:
    for i in range(5):
        await make_job_in(backend, JobState.COMPLETED, now=at(i))
    purged = [
        await backend.purge(states={JobState.COMPLETED}, finished_before=at(10), limit=2)
        for _ in range(4)
    ]
    assert purged == [2, 2, 1, 0]


async def test_purge_filters_by_queue(backend: Backend) -> None:
    keep = await make_job_in(backend, JobState.DEAD, queue="a")
    drop = await make_job_in(backend, JobState.DEAD, queue="b")
    purged = await backend.purge(states={JobState.DEAD}, finished_before=at(1), queue="b")
    assert purged == 1
    assert await backend.get_many([keep.id, drop.id]) == [keep, None]


async def test_purged_jobs_leave_the_stats(backend: Backend) -> None:
    await make_job_in(backend, JobState.COMPLETED, queue="a", now=T0)
    await enqueue(backend, new_job("a"), now=at(1))
    assert await backend.purge(states={JobState.COMPLETED}, finished_before=at(1)) == 1
    [stats] = await backend.stats(["a"])
    assert {s: n for s, n in stats.counts.items() if n} == {JobState.QUEUED: 1}


async def test_promote_after_purge_finds_nothing(backend: Backend) -> None:
    job = await make_job_in(backend, JobState.SCHEDULED)
    assert await backend.cancel(job.id, now=at(1)) is not None
    assert await backend.purge(states={JobState.CANCELLED}, finished_before=at(2)) == 1
    assert await backend.promote(now=at(7200), limit=10) == 0
    assert await backend.next_wakeup(now=at(2)) is None
