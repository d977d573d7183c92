"""Fenced leases: finishing runs, heartbeats, reaping expired leases, attempt history."""

from __future__ import annotations

from datetime import datetime, timedelta

import anyio
import attrs
import pytest

from monoq.core.backend import Backend
from monoq.core.models import (
    AttemptOutcome,
    ErrorInfo,
    Finish,
    JobQuery,
    JobState,
    Lease,
    LeaseStatus,
    Outcome,
)
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
    payload,
)

pytestmark = pytest.mark.anyio  # the suite's tests are async, in any host project

FORGED = "0" * 24  # a token no backend issued
BOOM = ErrorInfo("ValueError", "bad input", "Traceback (most recent call last):\n  ...")
EVERY_FINISH = [
    pytest.param(Outcome.COMPLETED, None, id="completed"),
    pytest.param(Outcome.RETRY, at(60), id="retry"),
    pytest.param(Outcome.DEAD, None, id="dead"),
    pytest.param(Outcome.CANCELLED, None, id="cancelled"),
    pytest.param(Outcome.RELEASED, None, id="released"),
]


async def running(backend: Backend) -> Lease:
    """One enqueued and claimed job (at T0)."""
    [job] = await enqueue(backend)
    return await claim_one(backend, job.id)


# -- finishing --------------------------------------------------------------------------------


async def test_complete_stores_the_result(backend: Backend) -> None:
    lease = await running(backend)
    result = payload({"answer": 42, "text": "\u2713"})
    assert await finish(backend, lease, Outcome.COMPLETED, now=at(3), result_json=result)
    job = await backend.get(lease.job.id)
    assert job is not None
    assert job.state is JobState.COMPLETED
    assert job.result_json == result
    assert job.finished_at == at(3)
    assert job.attempt == 1
    assert job.lease_expires_at is None
    assert job.worker_id is None


async def test_retry_waits_for_retry_at(backend: Backend) -> None:
    lease = await running(backend)
    assert await finish(backend, lease, Outcome.RETRY, now=at(1), retry_at=at(9), error=BOOM)
    job = await backend.get(lease.job.id)
    assert job is not None
    assert job.state is JobState.RETRYING
    assert job.run_at == at(9)
    assert job.error is not None
    assert "bad input" in job.error
    assert job.lease_expires_at is None
    assert await claim(backend, now=at(20)) == []
    assert await backend.promote(now=at(9), limit=10) == 1
    [again] = await claim(backend, now=at(10))
    assert again.job.id == job.id
    assert again.job.attempt == 2


async def test_dead_is_dead_lettered(backend: Backend) -> None:
    lease = await running(backend)
    assert await finish(backend, lease, Outcome.DEAD, now=at(1), error=BOOM)
    job = await backend.get(lease.job.id)
    assert job is not None
    assert job.state is JobState.DEAD
    assert job.finished_at == at(1)
    assert job.error is not None
    assert "bad input" in job.error
    assert await backend.promote(now=at(3600), limit=10) == 0
    assert await claim(backend, now=at(3600)) == []
    dlq = await backend.list_jobs(JobQuery(states={JobState.DEAD}))
    assert [j.id for j in dlq.jobs] == [job.id]


async def test_cancelled_outcome_ends_the_job(backend: Backend) -> None:
    lease = await running(backend)
    assert await finish(backend, lease, Outcome.CANCELLED, now=at(1))
    job = await backend.get(lease.job.id)
    assert job is not None
    assert job.state is JobState.CANCELLED
    assert job.finished_at == at(1)


async def test_released_refunds_the_attempt_and_requeues(backend: Backend) -> None:
    lease = await running(backend)
    assert await finish(backend, lease, Outcome.RELEASED, now=at(1))
    job = await backend.get(lease.job.id)
    assert job is not None
    assert job.state is JobState.QUEUED
    assert job.attempt == 0
    assert job.run_at == T0
    assert job.finished_at is None
    [again] = await claim(backend, now=at(2), worker_id="w2")
    assert again.job.id == job.id
    assert again.job.attempt == 1


async def test_released_job_keeps_its_place_in_line(backend: Backend) -> None:
    lease = await running(backend)
    [later] = await enqueue(backend, now=at(1))
    assert await finish(backend, lease, Outcome.RELEASED, now=at(2))
    [first] = await claim(backend, now=at(3))
    assert first.job.id == lease.job.id
    [second] = await claim(backend, now=at(3))
    assert second.job.id == later.id


async def test_finish_batch_answers_per_item(backend: Backend) -> None:
    jobs = await enqueue(backend, new_job(), new_job())
    leases = sorted(await claim(backend, limit=2), key=lambda lease: lease.job.id)
    assert [lease.job.id for lease in leases] == [job.id for job in jobs]
    bogus = attrs.evolve(leases[1], token=FORGED)
    answers = await backend.finish(
        [Finish(leases[0], Outcome.COMPLETED), Finish(bogus, Outcome.COMPLETED)], now=at(1)
    )
    assert answers == [True, False]
    states = [job.state for job in await backend.get_many([j.id for j in jobs]) if job]
    assert states == [JobState.COMPLETED, JobState.RUNNING]


async def test_a_batch_of_outcomes_records_each_run_as_given(backend: Backend) -> None:
    jobs = await enqueue(backend, *(new_job() for _ in range(4)))
    leases = sorted(await claim(backend, limit=4), key=lambda lease: lease.job.id)
    result = b'{"a": [1, "\\u00e9"], "b": "\xc3\xa9"}'  # spaces and escapes kept as sent
    answers = await backend.finish([
        Finish(leases[0], Outcome.COMPLETED, result_json=result),
        Finish(attrs.evolve(leases[1], token=FORGED), Outcome.COMPLETED),
        Finish(leases[2], Outcome.DEAD, error=BOOM),
        Finish(leases[3], Outcome.COMPLETED),
    ], now=at(1))
    assert answers == [True, False, True, True]
    done, running_, dead, bare = await backend.get_many([job.id for job in jobs])
    assert done is not None and done.result_json == result and done.finished_at == at(1)
    assert done.worker_id is None and done.lease_expires_at is None
    assert running_ is not None and running_.state is JobState.RUNNING
    assert dead is not None and dead.state is JobState.DEAD
    assert bare is not None and bare.state is JobState.COMPLETED and bare.result_json is None
    outcomes = [[(a.outcome.value, a.finished_at) for a in await backend.attempts(job.id)]
                for job in jobs]
    assert outcomes == [[("completed", at(1))], [("running", None)], [("failed", at(1))],
                        [("completed", at(1))]]
    [stats] = await backend.stats(["default"])
    assert (stats.counts[JobState.COMPLETED], stats.counts[JobState.DEAD],
            stats.counts[JobState.RUNNING]) == (2, 1, 1)


# -- fencing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("outcome", "retry_at"), EVERY_FINISH)
async def test_made_up_token_changes_nothing(
    backend: Backend, outcome: Outcome, retry_at: datetime | None
) -> None:
    lease = await running(backend)
    before = await backend.get(lease.job.id)
    forged = attrs.evolve(lease, token=FORGED)
    assert not await finish(backend, forged, outcome, now=at(1), retry_at=retry_at)
    assert await backend.extend([forged], lease_for=LEASE, now=at(1)) == [LeaseStatus.LOST]
    assert await backend.get(lease.job.id) == before
    assert await finish(backend, lease, Outcome.COMPLETED, now=at(2))


@pytest.mark.parametrize(("outcome", "retry_at"), EVERY_FINISH)
async def test_stale_token_after_a_new_claim_changes_nothing(
    backend: Backend, outcome: Outcome, retry_at: datetime | None
) -> None:
    stale = await running(backend)
    assert await finish(backend, stale, Outcome.RELEASED, now=at(1))
    current = await claim_one(backend, stale.job.id, now=at(2), worker_id="w2")
    before = await backend.get(stale.job.id)
    assert not await finish(backend, stale, outcome, now=at(3), retry_at=retry_at)
    assert await backend.extend([stale], lease_for=LEASE, now=at(3)) == [LeaseStatus.LOST]
    assert await backend.get(stale.job.id) == before
    assert await backend.extend([current], lease_for=LEASE, now=at(3)) == [LeaseStatus.HELD]


async def test_a_run_can_be_finished_only_once(backend: Backend) -> None:
    lease = await running(backend)
    assert await finish(backend, lease, Outcome.COMPLETED, now=at(1), result_json=payload(1))
    assert not await finish(backend, lease, Outcome.DEAD, now=at(2), error=BOOM)
    assert not await finish(backend, lease, Outcome.COMPLETED, now=at(2), result_json=payload(2))
    assert await backend.extend([lease], lease_for=LEASE, now=at(2)) == [LeaseStatus.LOST]
    job = await backend.get(lease.job.id)
    assert job is not None
    assert job.state is JobState.COMPLETED
    assert job.result_json == payload(1)
    assert job.finished_at == at(1)


# -- heartbeats -------------------------------------------------------------------------------


async def test_extend_moves_the_expiry(backend: Backend) -> None:
    lease = await running(backend)
    assert await backend.extend([lease], lease_for=LEASE, now=at(20)) == [LeaseStatus.HELD]
    job = await backend.get(lease.job.id)
    assert job is not None
    assert job.lease_expires_at == at(20) + LEASE
    assert job.state is JobState.RUNNING
    assert await backend.expired_leases(now=at(45), limit=10) == []
    [expired] = await backend.expired_leases(now=at(51), limit=10)
    assert expired.job.id == lease.job.id


async def test_extend_answers_per_lease(backend: Backend) -> None:
    await enqueue(backend, new_job(), new_job())
    held, lost = await claim(backend, limit=2)
    assert await finish(backend, lost, Outcome.COMPLETED, now=at(1))
    statuses = await backend.extend([held, lost], lease_for=LEASE, now=at(2))
    assert statuses == [LeaseStatus.HELD, LeaseStatus.LOST]


# -- attempts and reaping ---------------------------------------------------------------------


async def test_attempts_are_counted_at_claim(backend: Backend) -> None:
    lease = await running(backend)
    assert lease.job.attempt == 1
    [expired] = await backend.expired_leases(now=at(31), limit=10)
    assert await finish(backend, expired, Outcome.RETRY, now=at(31), retry_at=at(31), error=BOOM)
    assert await backend.promote(now=at(31), limit=10) == 1
    [again] = await claim(backend, now=at(32))
    assert again.job.id == lease.job.id
    assert again.job.attempt == 2


async def test_expired_leases_lists_only_leases_expired_before_now(backend: Backend) -> None:
    lease = await running(backend)
    assert await backend.expired_leases(now=at(29), limit=10) == []
    assert await backend.expired_leases(now=T0 + LEASE, limit=10) == []
    [expired] = await backend.expired_leases(now=T0 + LEASE + timedelta(milliseconds=1), limit=10)
    assert expired.job.id == lease.job.id
    assert expired.token == lease.token
    assert expired.expires_at == T0 + LEASE


async def test_expired_leases_oldest_first_and_limited(backend: Backend) -> None:
    jobs = await enqueue(backend, new_job(), new_job(), new_job())
    leases = sorted(await claim(backend, limit=3), key=lambda lease: lease.job.id)
    first, second, _ = leases  # the third job's lease expires first, then the second's
    assert await backend.extend([first], lease_for=LEASE, now=at(2)) == [LeaseStatus.HELD]
    assert await backend.extend([second], lease_for=LEASE, now=at(1)) == [LeaseStatus.HELD]
    expired = await backend.expired_leases(now=at(100), limit=2)
    assert [lease.job.id for lease in expired] == [jobs[2].id, jobs[1].id]


async def test_expired_leases_ignores_finished_runs(backend: Backend) -> None:
    lease = await running(backend)
    assert await finish(backend, lease, Outcome.COMPLETED, now=at(1))
    assert await backend.expired_leases(now=at(100), limit=10) == []


async def test_reaper_wins_over_a_late_ack(backend: Backend) -> None:
    lease = await running(backend)
    [expired] = await backend.expired_leases(now=at(31), limit=10)
    assert await finish(backend, expired, Outcome.RETRY, now=at(31), retry_at=at(33), error=BOOM)
    assert not await finish(backend, lease, Outcome.COMPLETED, now=at(32), result_json=payload())
    job = await backend.get(lease.job.id)
    assert job is not None
    assert job.state is JobState.RETRYING
    assert job.result_json is None


async def test_an_ack_before_the_reaper_wins(backend: Backend) -> None:
    lease = await running(backend)
    [expired] = await backend.expired_leases(now=at(31), limit=10)
    assert await finish(backend, lease, Outcome.COMPLETED, now=at(31), result_json=payload())
    assert not await finish(backend, expired, Outcome.RETRY, now=at(31), retry_at=at(33))
    job = await backend.get(lease.job.id)
    assert job is not None
    assert job.state is JobState.COMPLETED
    assert job.result_json == payload()


async def test_two_racing_reapers_finish_once(backend: Backend) -> None:
    lease = await running(backend)
    [seen_by_a] = await backend.expired_leases(now=at(31), limit=10)
    [seen_by_b] = await backend.expired_leases(now=at(31), limit=10)
    answers: list[bool] = []

    async def reap(expired: Lease) -> None:
        answers.append(
            await finish(backend, expired, Outcome.RETRY, now=at(31), retry_at=at(40), error=BOOM)
        )

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(reap, seen_by_a)
            tg.start_soon(reap, seen_by_b)
    assert sorted(answers) == [False, True]
    records = await backend.attempts(lease.job.id)
    assert [r.outcome for r in records] == [AttemptOutcome.FAILED]


# -- attempt history --------------------------------------------------------------------------


async def test_attempt_history_has_one_record_per_claim(backend: Backend) -> None:
    first = await running(backend)
    [open_record] = await backend.attempts(first.job.id)
    assert open_record.outcome is AttemptOutcome.RUNNING
    assert open_record.finished_at is None
    assert await finish(backend, first, Outcome.RETRY, now=at(2), retry_at=at(5), error=BOOM)
    assert await backend.promote(now=at(5), limit=10) == 1
    second = await claim_one(backend, first.job.id, now=at(6), worker_id="w2")
    assert await finish(backend, second, Outcome.COMPLETED, now=at(8), result_json=payload())

    failed, completed = await backend.attempts(first.job.id)
    assert failed.job_id == completed.job_id == first.job.id
    assert (failed.attempt, failed.worker_id) == (1, "w1")
    assert (failed.started_at, failed.finished_at) == (T0, at(2))
    assert failed.outcome is AttemptOutcome.FAILED
    assert (failed.error_type, failed.error_message) == ("ValueError", "bad input")
    assert failed.traceback == BOOM.traceback
    assert (completed.attempt, completed.worker_id) == (2, "w2")
    assert (completed.started_at, completed.finished_at) == (at(6), at(8))
    assert completed.outcome is AttemptOutcome.COMPLETED
    assert (completed.error_type, completed.error_message, completed.traceback) == (
        None,
        None,
        None,
    )


async def test_released_run_is_recorded_as_released(backend: Backend) -> None:
    first = await running(backend)
    assert await finish(backend, first, Outcome.RELEASED, now=at(1))
    await claim_one(backend, first.job.id, now=at(2), worker_id="w2")
    released, current = await backend.attempts(first.job.id)
    assert released.outcome is AttemptOutcome.RELEASED
    assert (released.worker_id, released.finished_at) == ("w1", at(1))
    assert current.outcome is AttemptOutcome.RUNNING
    assert (current.worker_id, current.started_at) == ("w2", at(2))
    assert released.attempt == current.attempt == 1


async def test_reaped_run_is_recorded_as_failed(backend: Backend) -> None:
    lease = await running(backend)
    [expired] = await backend.expired_leases(now=at(31), limit=10)
    lost = ErrorInfo("LeaseExpired", "lease expired")
    assert await finish(backend, expired, Outcome.DEAD, now=at(31), error=lost)
    [record] = await backend.attempts(lease.job.id)
    assert record.outcome is AttemptOutcome.FAILED
    assert (record.error_type, record.finished_at) == ("LeaseExpired", at(31))


async def test_attempts_of_an_unknown_job_are_empty(backend: Backend) -> None:
    await running(backend)
    assert await backend.attempts("0" * 26) == []
