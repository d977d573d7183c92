"""``finish_and_claim``: a worker's outcomes and its next claim in one call, answering exactly
what ``finish`` then ``claim`` would."""

from __future__ import annotations

from datetime import timedelta

import pytest

from monoq.core.backend import Backend
from monoq.core.models import ErrorInfo, Finish, JobState, Outcome
from monoq.testing.support import LEASE, at, claim, enqueue, new_job

pytestmark = pytest.mark.anyio  # the suite's tests are async, in any host project


async def test_outcomes_are_applied_and_the_freed_slots_are_refilled(backend: Backend) -> None:
    jobs = await enqueue(backend, *(new_job(priority=p) for p in (1, 2, 3, 4, 5)))
    first = await claim(backend, limit=2, now=at(1))
    assert [lease.job.id for lease in first] == [jobs[0].id, jobs[1].id]
    applied, leases = await backend.finish_and_claim(
        [Finish(first[0], Outcome.COMPLETED, result_json=b'"ok"'),
         Finish(first[1], Outcome.DEAD, error=ErrorInfo("Boom", "bad"))],
        ["default"], limit=2, lease_for=LEASE, worker_id="w1", now=at(2),
    )
    assert applied == [True, True]
    assert [lease.job.id for lease in leases] == [jobs[2].id, jobs[3].id]  # claim order kept
    assert all(lease.job.state is JobState.RUNNING and lease.job.attempt == 1
               and lease.expires_at == at(2) + LEASE for lease in leases)
    done, dead = await backend.get(jobs[0].id), await backend.get(jobs[1].id)
    assert done is not None and done.state is JobState.COMPLETED and done.result == "ok"
    assert done.finished_at == at(2)
    assert dead is not None and dead.state is JobState.DEAD and dead.error == "Boom: bad"
    [stats] = await backend.stats(["default"])
    assert stats.counts[JobState.RUNNING] == 2 and stats.counts[JobState.QUEUED] == 1


async def test_a_stale_token_is_refused_and_the_claim_still_happens(backend: Backend) -> None:
    jobs = await enqueue(backend, new_job(), new_job())
    [lease] = await claim(backend, now=at(1))
    [reaped] = await backend.expired_leases(now=at(1) + LEASE * 2, limit=10)
    assert await backend.finish([Finish(reaped, Outcome.RETRY, error=ErrorInfo("Lost", "x"),
                                        retry_at=at(100))], now=at(61)) == [True]
    applied, leases = await backend.finish_and_claim(
        [Finish(lease, Outcome.COMPLETED)], ["default"], limit=5, lease_for=LEASE,
        worker_id="w1", now=at(62),
    )
    assert applied == [False]
    assert [ls.job.id for ls in leases] == [jobs[1].id]


async def test_a_released_job_may_be_claimed_again_by_the_same_call(backend: Backend) -> None:
    [job] = await enqueue(backend, new_job())
    [lease] = await claim(backend, now=at(1))
    applied, leases = await backend.finish_and_claim(
        [Finish(lease, Outcome.RELEASED)], ["default"], limit=1, lease_for=LEASE,
        worker_id="w2", now=at(2),
    )
    assert applied == [True]
    [again] = leases
    assert again.job.id == job.id and again.job.attempt == 1  # the released run was refunded
    assert again.job.worker_id == "w2" and again.token != lease.token
    assert [a.outcome.value for a in await backend.attempts(job.id)] == ["released", "running"]


async def test_no_limit_only_finishes_and_no_items_only_claims(backend: Backend) -> None:
    jobs = await enqueue(backend, new_job(), new_job(), new_job("paused"))
    [lease] = await claim(backend, now=at(1))
    applied, leases = await backend.finish_and_claim(
        [Finish(lease, Outcome.COMPLETED)], ["default"], limit=0, lease_for=LEASE,
        worker_id="w1", now=at(2),
    )
    assert (applied, leases) == ([True], [])
    await backend.set_paused("paused", True)
    applied, leases = await backend.finish_and_claim(
        [], ["paused", "default"], limit=5, lease_for=LEASE, worker_id="w1", now=at(3))
    assert applied == [] and [ls.job.id for ls in leases] == [jobs[1].id]
    assert await backend.finish_and_claim([], ["default"], limit=5, lease_for=LEASE,
                                          worker_id="w1", now=at(4)) == ([], [])


async def test_the_first_attempt_wait_is_recorded_as_by_claim(backend: Backend) -> None:
    await enqueue(backend, new_job(), new_job(), now=at(0))
    [lease] = await claim(backend, now=at(1))
    await backend.finish_and_claim([Finish(lease, Outcome.COMPLETED)], ["default"], limit=1,
                                   lease_for=LEASE, worker_id="w1", now=at(4))
    waits = await backend.recent_waits("default")
    assert waits == [4.0, 1.0]
    assert timedelta(seconds=waits[0]) == at(4) - at(0)
