"""Cases where the backends once answered differently, found by the differential test
(tests/differential), kept here as plain examples that run on every backend."""

from __future__ import annotations

from datetime import timedelta

import attrs
import pytest

from monoq.core.backend import Backend
from monoq.core.models import (
    ErrorInfo,
    JobQuery,
    JobState,
    NewJob,
    Outcome,
    Schedule,
    WorkerInfo,
)
from monoq.testing.support import (
    T0,
    at,
    claim,
    claim_one,
    enqueue,
    finish,
    new_job,
    payload,
)

pytestmark = pytest.mark.anyio  # the suite's tests are async, in any host project

US = timedelta(microseconds=1)


def job(job_id: str, queue: str = "a", key: str | None = None) -> NewJob:
    return NewJob(id=job_id, queue=queue, handler="echo", payload_json=payload(),
                  idempotency_key=key)


# -- stats ------------------------------------------------------------------------------------


async def test_stats_answers_each_queue_once_in_the_order_first_asked(backend: Backend) -> None:
    # memory answered [c, a, a], SQLite [c, a], Redis [a, c]
    await enqueue(backend, new_job("a"), new_job("c"), new_job("c"))
    answer = await backend.stats(["c", "a", "unknown", "a", "c"])
    assert [s.queue for s in answer] == ["c", "a", "unknown"]
    assert [s.counts[JobState.QUEUED] for s in answer] == [2, 1, 0]
    assert [s.queue for s in await backend.stats()] == ["a", "c"]  # known ones, by name


async def test_a_queue_is_known_once_a_job_is_stored_in_it(backend: Backend) -> None:
    # A repeated id naming another queue is answered with the stored job: SQLite and Redis
    # made that queue known (Redis only when the batch fit in one script call), memory did not.
    await enqueue(backend, job("J1", "a"))
    [again] = await backend.enqueue([job("J1", "b")], now=T0)
    assert not again.created and again.job.queue == "a"
    assert [s.queue for s in await backend.stats()] == ["a"]


# -- enqueue: repeated ids and keys -----------------------------------------------------------


async def test_an_id_stored_in_another_queue_is_answered_not_stored_again(
    backend: Backend,
) -> None:
    # Redis looked for the id in the new job's queue only, and stored a second job.
    [first] = await enqueue(backend, job("J1", "a"))
    [again] = await backend.enqueue([job("J1", "b")], now=at(1))
    assert not again.created
    assert again.job == first
    assert await backend.count_jobs(states=[JobState.QUEUED]) == 1
    assert await backend.get("J1") == first


async def test_the_id_decides_before_the_key(backend: Backend) -> None:
    # SQLite answered a job whose key matched before the job with the same id.
    [plain] = await enqueue(backend, job("J1"))
    answers = await backend.enqueue([job("J2", key="k"), job("J1", key="k")], now=T0)
    assert [(a.job.id, a.created) for a in answers] == [("J2", True), ("J1", False)]
    assert answers[1].job == plain
    [again] = await backend.enqueue([job("J1", key="k")], now=T0)  # stored, not in the batch
    assert (again.job.id, again.created) == ("J1", False)


# -- finish: the job's error ------------------------------------------------------------------


async def test_a_completed_or_released_run_leaves_the_error_alone(backend: Backend) -> None:
    # Redis stored the error a COMPLETED (or RELEASED) finish carried; the others did not.
    [queued] = await enqueue(backend, new_job())
    boom = ErrorInfo("Boom", "x")
    lease = await claim_one(backend, queued.id)
    assert await finish(backend, lease, Outcome.RELEASED, now=at(1), error=boom)
    lease = await claim_one(backend, queued.id, now=at(2))
    assert await finish(backend, lease, Outcome.COMPLETED, now=at(3), error=boom,
                        result_json=b"1")
    done = await backend.get(queued.id)
    assert done is not None and done.state is JobState.COMPLETED and done.error is None
    records = await backend.attempts(queued.id)
    assert [(r.error_type, r.error_message) for r in records] == [("Boom", "x")] * 2


async def test_a_failure_without_an_error_keeps_the_last_one(backend: Backend) -> None:
    # memory and SQLite cleared the error of a RETRY or DEAD finish without one; Redis kept it.
    [queued] = await enqueue(backend, new_job())
    lease = await claim_one(backend, queued.id)
    assert await finish(backend, lease, Outcome.RETRY, now=at(1), retry_at=at(2),
                        error=ErrorInfo("Boom", "x"))
    assert await backend.promote(now=at(2), limit=10) == 1
    lease = await claim_one(backend, queued.id, now=at(2))
    assert await finish(backend, lease, Outcome.RETRY, now=at(3), retry_at=at(4))
    retrying = await backend.get(queued.id)
    assert retrying is not None and retrying.error == "Boom: x"
    assert await backend.promote(now=at(4), limit=10) == 1
    lease = await claim_one(backend, queued.id, now=at(4))
    assert await finish(backend, lease, Outcome.DEAD, now=at(5))
    dead = await backend.get(queued.id)
    assert dead is not None and dead.state is JobState.DEAD and dead.error == "Boom: x"


async def test_empty_error_texts_are_kept_as_empty(backend: Backend) -> None:
    # Redis answered None for an empty message or traceback (``raise ValueError()``).
    [queued] = await enqueue(backend, new_job())
    lease = await claim_one(backend, queued.id)
    assert await finish(backend, lease, Outcome.DEAD, now=at(1),
                        error=ErrorInfo("ValueError", "", traceback=""))
    [record] = await backend.attempts(queued.id)
    assert (record.error_type, record.error_message, record.traceback) == ("ValueError", "", "")
    dead = await backend.get(queued.id)
    assert dead is not None and dead.error == "ValueError"


# -- schedules --------------------------------------------------------------------------------


async def test_schedule_times_keep_their_microseconds(backend: Backend) -> None:
    # SQLite stored whole milliseconds.
    schedule = Schedule(
        id="s", handler="echo", every=60.0, created_at=T0 + 1500 * US,
        updated_at=T0 - timedelta(days=3, microseconds=7), last_fire_at=T0 + 654_321 * US,
    )
    await backend.put_schedule(schedule)
    assert await backend.get_schedule("s") == schedule
    assert await backend.list_schedules() == [schedule]
    # advance_schedule compares (and stores) to the microsecond too
    assert not await backend.advance_schedule("s", T0 + 654_321 * US)
    assert await backend.advance_schedule("s", T0 + 654_322 * US)
    stored = await backend.get_schedule("s")
    assert stored is not None and stored.last_fire_at == T0 + 654_322 * US


async def test_negative_keep_and_limits_mean_none(backend: Backend) -> None:
    # memory sliced with them: keep=-1 kept the oldest run, a negative limit took all but one.
    runs = [attrs.evolve(new_job(), schedule_id="s") for _ in range(3)]
    for run in await enqueue(backend, *runs):
        assert await backend.cancel(run.id, now=T0) is not None
    assert await backend.purge_schedule_runs("s", keep=0, limit=-1) == 0
    assert await backend.purge(states=[JobState.CANCELLED], finished_before=at(1), limit=-1) == 0
    assert await backend.purge_schedule_runs("s", keep=-1, limit=1) == 1  # the newest goes
    assert [j.id for j in (await backend.list_jobs(JobQuery(schedule_id="s"))).jobs] == [
        runs[1].id, runs[0].id]
    [running] = await enqueue(backend, new_job("b"))
    await claim(backend, ["b"], now=T0)
    assert await backend.expired_leases(now=at(3600), limit=-1) == []
    assert await backend.expired_leases(now=at(3600), limit=0) == []
    [expired] = await backend.expired_leases(now=at(3600), limit=1)
    assert expired.job.id == running.id


# -- workers ----------------------------------------------------------------------------------


def worker(worker_id: str, last_seen_s: float) -> WorkerInfo:
    return WorkerInfo(id=worker_id, host="h", pid=1, roles=("worker",), queues=("a",),
                      concurrency=1, busy=0, started_at=T0, last_seen=at(last_seen_s))


async def test_a_worker_is_listed_until_the_end_of_its_ttl_inclusive(backend: Backend) -> None:
    # memory and SQLite listed it at last_seen + ttl, Redis did not.
    await backend.report_worker(worker("w1", 0), ttl=timedelta(seconds=10))
    assert [w.id for w in await backend.list_workers(now=at(10))] == ["w1"]
    assert await backend.list_workers(now=at(10) + timedelta(milliseconds=1)) == []
    await backend.report_worker(worker("w2", 0), ttl=timedelta(0))
    assert [w.id for w in await backend.list_workers(now=at(0))] == ["w1", "w2"]


async def test_a_heartbeat_forgets_the_workers_whose_ttl_ended_before_it(
    backend: Backend,
) -> None:
    # SQLite and Redis forgot them, memory kept listing them for an earlier ``now``.
    await backend.report_worker(worker("old", 0), ttl=timedelta(seconds=10))
    await backend.report_worker(worker("edge", 0), ttl=timedelta(seconds=20))
    await backend.report_worker(worker("new", 20), ttl=timedelta(seconds=10))
    assert [w.id for w in await backend.list_workers(now=at(5))] == ["edge", "new"]

