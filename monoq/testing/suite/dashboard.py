"""The dashboard data: throughput counters, first-attempt waits, the oldest queued job, indexed
counts, the list filters by error type and finish time, and component beats.

Every time is on the suite's fixed clock (``T0`` is midnight, so minutes, hours and days are
aligned); nothing sleeps.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from monoq.core.backend import Backend
from monoq.core.models import (
    ErrorInfo,
    Finish,
    Job,
    JobQuery,
    JobState,
    Outcome,
    Page,
    ThroughputBucket,
)
from monoq.errors import ValidationError
from monoq.testing.support import (
    LEASE,
    T0,
    at,
    claim,
    claim_one,
    enqueue,
    finish,
    make_job_in,
    new_job,
)

pytestmark = pytest.mark.anyio  # the suite's tests are async, in any host project

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
MS = timedelta(milliseconds=1)
BOOM = ErrorInfo("RuntimeError", "boom")


def bucket(start: datetime, completed: int = 0, failed: int = 0, dead: int = 0
           ) -> ThroughputBucket:
    return ThroughputBucket(start=start, completed=completed, failed=failed, dead=dead)


def minutes(*counts: tuple[int, int, int], first: datetime = T0) -> list[ThroughputBucket]:
    """One-minute buckets from ``first``, with these (completed, failed, dead) counts."""
    return [bucket(first + i * MINUTE, *c) for i, c in enumerate(counts)]


async def run_once(
    backend: Backend,
    outcome: Outcome,
    *,
    now: datetime,
    queue: str = "default",
    error: ErrorInfo | None = None,
) -> Job:
    """Enqueue a job into an otherwise idle ``queue``, claim it and end the run at ``now``."""
    [job] = await enqueue(backend, new_job(queue), now=now)
    lease = await claim_one(backend, job.id, now=now)
    if error is None and outcome in (Outcome.RETRY, Outcome.DEAD):
        error = BOOM
    retry_at = now + HOUR if outcome is Outcome.RETRY else None
    assert await finish(backend, lease, outcome, now=now, retry_at=retry_at, error=error)
    stored = await backend.get(job.id)
    assert stored is not None
    return stored


# -- throughput -------------------------------------------------------------------------------


async def test_throughput_of_nothing_is_zero_filled_and_aligned(backend: Backend) -> None:
    # since is floored to the bucket; a bucket starting at until is left out
    assert await backend.throughput(since=at(90), until=at(300), bucket=MINUTE) == minutes(
        (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), first=at(60)
    )
    five = timedelta(minutes=5)
    assert await backend.throughput(since=at(450), until=at(1201), bucket=five) == [
        bucket(at(300)), bucket(at(600)), bucket(at(900)), bucket(at(1200))
    ]
    hourly = await backend.throughput(since=T0 + 90 * MINUTE, until=T0 + 3 * HOUR, bucket=HOUR)
    assert hourly == [bucket(T0 + HOUR), bucket(T0 + 2 * HOUR)]
    # until inside a minute: the bucket starting in that minute, before until, is in
    assert await backend.throughput(since=T0, until=at(60.5), bucket=MINUTE) == minutes(
        (0, 0, 0), (0, 0, 0)
    )
    assert await backend.throughput(since=at(60), until=at(60), bucket=MINUTE) == []
    assert await backend.throughput(since=at(120), until=at(60), bucket=MINUTE) == []
    day = await backend.throughput(since=T0 + HOUR, until=T0 + 2 * timedelta(days=1),
                                   bucket=timedelta(days=1))
    assert day == [bucket(T0), bucket(T0 + timedelta(days=1))]
    assert all(b.start.tzinfo is UTC for b in hourly)


async def test_throughput_counts_each_kind_of_end_in_its_minute(backend: Backend) -> None:
    await run_once(backend, Outcome.COMPLETED, now=at(10))
    await run_once(backend, Outcome.COMPLETED, now=at(70))
    await run_once(backend, Outcome.COMPLETED, now=at(119.999))
    await run_once(backend, Outcome.RETRY, now=at(75))  # failed, retried later
    await run_once(backend, Outcome.DEAD, now=at(130))  # failed and dead
    await run_once(backend, Outcome.CANCELLED, now=at(140))  # counts nowhere
    await run_once(backend, Outcome.RELEASED, now=at(150))  # counts nowhere

    expected = minutes((1, 0, 0), (2, 1, 0), (0, 1, 1), (0, 0, 0))
    assert await backend.throughput(since=T0, until=at(240), bucket=MINUTE) == expected
    five = await backend.throughput(since=T0, until=at(300), bucket=timedelta(minutes=5))
    assert five == [bucket(T0, 3, 2, 1)]
    # a window that starts mid-minute still reads the whole first minute
    later = await backend.throughput(since=at(61), until=at(120), bucket=MINUTE)
    assert later == minutes((2, 1, 0), first=at(60))


async def test_throughput_is_per_queue_and_in_total(backend: Backend) -> None:
    await run_once(backend, Outcome.COMPLETED, now=at(10), queue="a")
    await run_once(backend, Outcome.COMPLETED, now=at(20), queue="a")
    await run_once(backend, Outcome.DEAD, now=at(30), queue="b")
    await run_once(backend, Outcome.RETRY, now=at(70), queue="b")

    async def per(queue: str | None) -> list[ThroughputBucket]:
        return await backend.throughput(since=T0, until=at(120), bucket=MINUTE, queue=queue)

    assert await per("a") == minutes((2, 0, 0), (0, 0, 0))
    assert await per("b") == minutes((0, 1, 1), (0, 1, 0))
    assert await per(None) == minutes((2, 1, 1), (0, 1, 0))
    assert await per("unknown") == minutes((0, 0, 0), (0, 0, 0))


async def test_a_finish_batch_counts_every_item(backend: Backend) -> None:
    await enqueue(backend, *(new_job() for _ in range(3)), now=T0)
    leases = await claim(backend, limit=3, now=T0)
    applied = await backend.finish(
        [
            Finish(leases[0], Outcome.COMPLETED),
            Finish(leases[1], Outcome.COMPLETED),
            Finish(leases[2], Outcome.DEAD, error=BOOM),
        ],
        now=at(5),
    )
    assert applied == [True, True, True]
    # a stale token changes nothing, counters included
    assert await backend.finish([Finish(leases[0], Outcome.COMPLETED)], now=at(6)) == [False]
    assert await backend.throughput(since=T0, until=at(60), bucket=MINUTE) == minutes((2, 1, 1))


async def test_a_reaped_lease_counts_as_a_failed_attempt(backend: Backend) -> None:
    [job] = await enqueue(backend, new_job(max_retries=1), now=T0)
    await claim_one(backend, job.id, now=T0)
    # what the scheduler's reaper does: end the expired lease with its own token
    expired = ErrorInfo("LeaseExpired", "the worker stopped renewing its lease")
    [stale] = await backend.expired_leases(now=T0 + LEASE + MS, limit=10)
    assert await finish(backend, stale, Outcome.RETRY, now=at(40), retry_at=at(50),
                        error=expired)
    assert await backend.promote(now=at(70), limit=10) == 1
    await claim_one(backend, job.id, now=at(70))
    [stale] = await backend.expired_leases(now=at(70) + LEASE + MS, limit=10)
    assert await finish(backend, stale, Outcome.DEAD, now=at(110), error=expired)

    assert await backend.throughput(since=T0, until=at(120), bucket=MINUTE) == minutes(
        (0, 1, 0), (0, 1, 1)
    )


async def test_a_requeued_job_counts_again_in_throughput_when_it_finishes_anew(
    backend: Backend,
) -> None:
    dead = await run_once(backend, Outcome.DEAD, now=at(10))
    assert await backend.requeue([dead.id], now=at(20)) == [dead.id]
    lease = await claim_one(backend, dead.id, now=at(30))
    assert await finish(backend, lease, Outcome.COMPLETED, now=at(40))
    assert await backend.throughput(since=T0, until=at(60), bucket=MINUTE) == minutes((1, 1, 1))
    # counters are not the stored jobs: purging the job leaves them
    assert await backend.purge(states={JobState.COMPLETED}, finished_before=at(41)) == 1
    assert await backend.throughput(since=T0, until=at(60), bucket=MINUTE) == minutes((1, 1, 1))


async def test_a_pending_cancel_counts_the_failed_run_but_no_dead_job(backend: Backend) -> None:
    [failing, completing] = await enqueue(backend, new_job(), new_job(), now=T0)
    first = await claim_one(backend, failing.id, now=T0)
    second = await claim_one(backend, completing.id, now=T0)
    await backend.cancel(failing.id, now=at(1))
    await backend.cancel(completing.id, now=at(1))
    assert await finish(backend, first, Outcome.DEAD, now=at(2), error=BOOM)
    assert await finish(backend, second, Outcome.COMPLETED, now=at(3))
    stored = await backend.get(failing.id)
    assert stored is not None and stored.state is JobState.CANCELLED
    assert await backend.throughput(since=T0, until=at(60), bucket=MINUTE) == minutes((1, 1, 0))


async def test_counters_are_kept_for_a_day(backend: Backend) -> None:
    await run_once(backend, Outcome.COMPLETED, now=at(10))
    day = timedelta(days=1)
    # later finishes (and whatever pruning they do) keep the day-old minute
    await run_once(backend, Outcome.COMPLETED, now=T0 + day + 30 * MINUTE)
    await run_once(backend, Outcome.DEAD, now=T0 + day + 59 * MINUTE)
    assert await backend.throughput(since=T0, until=at(60), bucket=MINUTE) == minutes((1, 0, 0))
    hourly = await backend.throughput(since=T0, until=T0 + day + HOUR, bucket=HOUR)
    assert len(hourly) == 25
    assert hourly[0] == bucket(T0, 1, 0, 0)
    assert hourly[-1] == bucket(T0 + day, 1, 1, 1)
    assert all(b == bucket(b.start) for b in hourly[1:-1])


@pytest.mark.parametrize(
    "size",
    [
        timedelta(0),
        timedelta(seconds=30),
        timedelta(seconds=90),
        timedelta(minutes=7),  # does not divide a day
        timedelta(days=2),
        -MINUTE,
    ],
)
async def test_throughput_refuses_a_bad_bucket(backend: Backend, size: timedelta) -> None:
    with pytest.raises(ValidationError, match="bucket"):
        await backend.throughput(since=T0, until=at(600), bucket=size)


async def test_throughput_refuses_naive_times_and_too_many_buckets(backend: Backend) -> None:
    with pytest.raises(ValidationError, match="since"):
        await backend.throughput(since=T0.replace(tzinfo=None), until=at(60), bucket=MINUTE)
    with pytest.raises(ValidationError, match="until"):
        await backend.throughput(since=T0, until=at(60).replace(tzinfo=None), bucket=MINUTE)
    with pytest.raises(ValidationError, match="buckets"):
        await backend.throughput(since=T0, until=T0 + timedelta(days=400), bucket=MINUTE)


# -- recent waits -----------------------------------------------------------------------------


async def test_recent_waits_are_first_attempts_newest_first(backend: Backend) -> None:
    [a] = await enqueue(backend, new_job(), now=at(0))
    [b] = await enqueue(backend, new_job(), now=at(1))
    [c] = await enqueue(backend, new_job(run_at=at(10)), now=at(0))  # due at 10
    await claim_one(backend, a.id, now=at(3))
    lease_b = await claim_one(backend, b.id, now=at(5.5))
    assert await backend.promote(now=at(12), limit=10) == 1
    await claim_one(backend, c.id, now=at(12.25))
    # b's second attempt is not a wait for a worker's first look
    assert await finish(backend, lease_b, Outcome.RETRY, now=at(20), retry_at=at(30),
                        error=BOOM)
    assert await backend.promote(now=at(30), limit=10) == 1
    await claim_one(backend, b.id, now=at(40))

    assert await backend.recent_waits("default") == [2.25, 4.5, 3.0]
    assert await backend.recent_waits("default", limit=2) == [2.25, 4.5]
    assert await backend.recent_waits("default", limit=0) == []
    assert await backend.recent_waits("elsewhere") == []


async def test_within_one_claim_the_last_claimed_is_the_newest(backend: Backend) -> None:
    await enqueue(backend, new_job(priority=9), now=at(0))
    await enqueue(backend, new_job(priority=0), now=at(1))
    await enqueue(backend, new_job(priority=5), now=at(2))
    leases = await claim(backend, limit=3, now=at(10))
    assert [lease.job.priority for lease in leases] == [0, 5, 9]
    assert await backend.recent_waits("default") == [10.0, 8.0, 9.0]


async def test_a_requeued_job_waits_again_from_its_requeue(backend: Backend) -> None:
    dead = await run_once(backend, Outcome.DEAD, now=at(10))  # claimed at once: waited 0
    assert await backend.requeue([dead.id], now=at(20)) == [dead.id]
    await claim_one(backend, dead.id, now=at(27))
    assert await backend.recent_waits("default") == [7.0, 0.0]


async def test_a_claim_stamped_before_the_due_time_waited_zero(backend: Backend) -> None:
    [job] = await enqueue(backend, new_job(), now=at(10))
    await claim_one(backend, job.id, now=at(4))  # another host's clock, behind
    assert await backend.recent_waits("default") == [0.0]


async def test_recent_waits_keep_the_last_thousand_per_queue(backend: Backend) -> None:
    await enqueue(backend, *(new_job() for _ in range(5)), now=at(0))
    assert len(await claim(backend, limit=5, now=at(100))) == 5  # waited 100 s each
    await enqueue(backend, *(new_job() for _ in range(1000)), now=at(200))
    assert len(await claim(backend, limit=1000, now=at(201))) == 1000  # waited 1 s each
    await enqueue(backend, new_job("other"), now=at(300))
    await claim(backend, ["other"], now=at(302))

    kept = await backend.recent_waits("default", limit=1000)
    assert kept == [1.0] * 1000
    assert await backend.recent_waits("default", limit=5000) == kept
    assert await backend.recent_waits("other") == [2.0]


# -- oldest queued job ------------------------------------------------------------------------


async def test_oldest_queued_at_is_none_without_queued_jobs(backend: Backend) -> None:
    await backend.set_paused("empty", True)
    await make_job_in(backend, JobState.RUNNING, now=at(5), queue="busy")
    stats = {s.queue: s for s in await backend.stats()}
    assert stats["empty"].oldest_queued_at is None
    assert stats["busy"].oldest_queued_at is None
    [unknown] = await backend.stats(["unknown"])
    assert unknown.oldest_queued_at is None


async def test_oldest_queued_at_ignores_waiting_jobs_and_follows_claims(
    backend: Backend,
) -> None:
    # waiting jobs with older run_at than any queued one: a retrying job due at 2 and a
    # scheduled one due at 3
    [retrying] = await enqueue(backend, new_job("q"), now=at(0))
    lease = await claim_one(backend, retrying.id, now=at(0))
    assert await finish(backend, lease, Outcome.RETRY, now=at(1), retry_at=at(2), error=BOOM)
    await enqueue(backend, new_job("q", run_at=at(3)), now=at(0))
    # queued: x due at 5 and y at 7 (priority 5), z at 6 in a later priority band
    [x] = await enqueue(backend, new_job("q", priority=5), now=at(5))
    [z] = await enqueue(backend, new_job("q", priority=9), now=at(6))
    [y] = await enqueue(backend, new_job("q", priority=5), now=at(7))
    await enqueue(backend, new_job("other"), now=at(1))

    async def oldest() -> datetime | None:
        [stats] = await backend.stats(["q"])
        return stats.oldest_queued_at

    assert await oldest() == at(5)
    every = {s.queue: s.oldest_queued_at for s in await backend.stats()}
    assert every == {"q": at(5), "other": at(1)}
    await claim_one(backend, x.id, now=at(8))
    assert await oldest() == at(6)  # z, although it is claimed last
    await claim_one(backend, y.id, now=at(8))
    assert await oldest() == at(6)
    await claim_one(backend, z.id, now=at(8))
    assert await oldest() is None
    assert await backend.promote(now=at(9), limit=10) == 2  # now they are queued
    assert await oldest() == at(2)


async def test_queue_stats_json_carries_the_oldest_queued_time(backend: Backend) -> None:
    await enqueue(backend, new_job(), now=at(1.5))
    [stats] = await backend.stats(["default"])
    assert stats.to_dict()["oldest_queued_at"] == "2030-01-01T00:00:01.500Z"


# -- count_jobs -------------------------------------------------------------------------------


async def test_count_jobs_by_state_queue_and_finish_time(backend: Backend) -> None:
    completed, dead, cancelled = JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED
    await make_job_in(backend, completed, now=at(10), queue="a")
    await make_job_in(backend, completed, now=at(20), queue="a")
    await make_job_in(backend, dead, now=at(30), queue="a")
    await make_job_in(backend, completed, now=at(15), queue="b")
    await make_job_in(backend, cancelled, now=at(25), queue="b")
    await make_job_in(backend, JobState.RUNNING, now=at(40), queue="c")
    await make_job_in(backend, JobState.QUEUED, now=at(40), queue="c")
    await make_job_in(backend, JobState.SCHEDULED, now=at(40), queue="d")

    async def count(states: set[JobState], queue: str | None = None,
                    before: datetime | None = None) -> int:
        return await backend.count_jobs(states=states, queue=queue, finished_before=before)

    assert await count({completed}) == 3
    assert await count({completed}, "a") == 2
    assert await count({completed, dead}, "a") == 3
    assert await count({completed, cancelled}) == 4
    assert await count(set(JobState)) == 8
    assert await count({JobState.QUEUED, JobState.RUNNING, JobState.SCHEDULED}) == 3
    assert await count({completed}, before=at(20)) == 2  # before is exclusive
    assert await count({completed}, before=at(20) + MS) == 3
    assert await count({completed}, "a", before=at(20)) == 1
    assert await count({completed}, before=at(10)) == 0
    assert await count({completed, dead, cancelled}, "b", before=at(26)) == 2
    # unfinished jobs have no finish time, so a horizon counts none of them
    assert await count({JobState.QUEUED, JobState.RUNNING}, before=at(1000)) == 0
    assert await count(set()) == 0
    assert await count({completed}, "unknown") == 0

    await backend.purge(states={completed}, finished_before=at(16))
    assert await count({completed}) == 1


async def test_count_jobs_follows_requeue_and_cancel(backend: Backend) -> None:
    dead = await make_job_in(backend, JobState.DEAD, now=at(10))
    assert await backend.count_jobs(states={JobState.DEAD}) == 1
    await backend.requeue([dead.id], now=at(20))
    assert await backend.count_jobs(states={JobState.DEAD}) == 0
    assert await backend.count_jobs(states={JobState.QUEUED}) == 1
    await backend.cancel(dead.id, now=at(30))
    assert await backend.count_jobs(states={JobState.CANCELLED}, finished_before=at(31)) == 1
    assert await backend.count_jobs(states={JobState.CANCELLED}, finished_before=at(30)) == 0


# -- list_jobs: error type and finish time ----------------------------------------------------


def ids(page: Page) -> list[str]:
    return [job.id for job in page.jobs]


async def make_failures(backend: Backend) -> dict[str, Job]:
    """Jobs with assorted errors and finish times, enqueued in this order (ids ascending)."""
    made: dict[str, Job] = {}
    made["timeout_a"] = await run_once(backend, Outcome.DEAD, now=at(10), queue="a",
                                       error=ErrorInfo("TimeoutError", "slow"))
    made["value_a"] = await run_once(backend, Outcome.DEAD, now=at(20), queue="a",
                                     error=ErrorInfo("ValueError", "bad: input"))
    made["value_b"] = await run_once(backend, Outcome.DEAD, now=at(30), queue="b",
                                     error=ErrorInfo("ValueError", "worse"))
    made["retrying_a"] = await run_once(backend, Outcome.RETRY, now=at(35), queue="a",
                                        error=ErrorInfo("ValueError", "again"))
    made["done_a"] = await run_once(backend, Outcome.COMPLETED, now=at(40), queue="a")
    made["bare_b"] = await run_once(backend, Outcome.DEAD, now=at(45), queue="b",
                                    error=ErrorInfo("KeyError", ""))
    made["cancelled_b"] = await make_job_in(backend, JobState.CANCELLED, now=at(50), queue="b")
    made["queued_a"] = (await enqueue(backend, new_job("a"), now=at(60)))[0]
    return made


async def test_list_jobs_by_error_type(backend: Backend) -> None:
    jobs = await make_failures(backend)

    async def listed(error_type: str, **filters: object) -> list[str]:
        return ids(await backend.list_jobs(JobQuery(error_type=error_type, **filters)))  # type: ignore[arg-type]

    assert await listed("ValueError") == [
        jobs["retrying_a"].id, jobs["value_b"].id, jobs["value_a"].id
    ]
    assert await listed("ValueError", states={JobState.DEAD}) == [
        jobs["value_b"].id, jobs["value_a"].id
    ]
    assert await listed("ValueError", states={JobState.DEAD}, queue="a") == [jobs["value_a"].id]
    assert await listed("ValueError", queue="a") == [jobs["retrying_a"].id, jobs["value_a"].id]
    assert await listed("KeyError") == [jobs["bare_b"].id]  # an error without a message
    assert await listed("TimeoutError", handler="echo") == [jobs["timeout_a"].id]
    assert await listed("TimeoutError", handler="other") == []
    assert await listed("Value") == []  # the whole type, not a prefix
    assert await listed("ValueError: bad") == []
    assert await listed("ValueError", states={JobState.COMPLETED}) == []


async def test_list_jobs_by_finish_time(backend: Backend) -> None:
    jobs = await make_failures(backend)

    async def listed(**filters: object) -> list[str]:
        return ids(await backend.list_jobs(JobQuery(**filters)))  # type: ignore[arg-type]

    def named(*names: str) -> list[str]:
        return [jobs[name].id for name in names]

    assert await listed(finished_after=at(20)) == named(
        "cancelled_b", "bare_b", "done_a", "value_b", "value_a"
    )
    assert await listed(finished_before=at(40)) == named("value_b", "value_a", "timeout_a")
    assert await listed(finished_after=at(20), finished_before=at(40)) == named(
        "value_b", "value_a"
    )
    assert await listed(finished_after=at(20) + MS, finished_before=at(40) + MS) == named(
        "done_a", "value_b"
    )
    assert await listed(finished_after=at(20), queue="a") == named("done_a", "value_a")
    assert await listed(finished_before=at(100), states={JobState.DEAD}, queue="b") == named(
        "bare_b", "value_b"
    )
    assert await listed(finished_after=T0, states={JobState.COMPLETED}) == named("done_a")
    # unfinished jobs have no finish time
    assert await listed(finished_after=T0, states={JobState.QUEUED, JobState.RETRYING}) == []
    assert await listed(
        finished_after=T0, error_type="ValueError", states={JobState.DEAD, JobState.RETRYING}
    ) == named("value_b", "value_a")
    assert await listed(finished_after=at(60)) == []


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"error_type": "ValueError"}, ["retrying_a", "value_b", "value_a"]),
        ({"finished_after": at(10)},
         ["cancelled_b", "bare_b", "done_a", "value_b", "value_a", "timeout_a"]),
        ({"finished_before": at(46), "queue": "b"}, ["bare_b", "value_b"]),
        ({"finished_after": at(10), "states": {JobState.DEAD}},
         ["bare_b", "value_b", "value_a", "timeout_a"]),
    ],
    ids=["error-type", "finished-after", "finished-before-queue", "window-state"],
)
async def test_filtered_pages_visit_every_match_once(
    backend: Backend, filters: dict[str, object], expected: list[str]
) -> None:
    jobs = await make_failures(backend)
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(20):
        page = await backend.list_jobs(JobQuery(limit=2, cursor=cursor, **filters))  # type: ignore[arg-type]
        assert len(page.jobs) <= 2
        seen.extend(ids(page))
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [jobs[name].id for name in expected]


# -- beats ------------------------------------------------------------------------------------


async def test_beats_round_trip_by_name(backend: Backend) -> None:
    assert await backend.beats(now=T0) == {}
    await backend.beat("scheduler:b", now=T0 + HOUR)
    await backend.beat("scheduler:a", now=at(1.5))
    answer = await backend.beats(now=T0 + HOUR)
    assert list(answer.items()) == [("scheduler:a", at(1.5)), ("scheduler:b", T0 + HOUR)]
    # the latest beat wins, whatever order the calls come in
    await backend.beat("scheduler:a", now=T0 + 2 * HOUR)
    await backend.beat("scheduler:a", now=T0 + HOUR)
    assert (await backend.beats(now=T0 + 2 * HOUR))["scheduler:a"] == T0 + 2 * HOUR


async def test_beats_older_than_a_day_are_not_answered(backend: Backend) -> None:
    day = timedelta(days=1)
    await backend.beat("scheduler:old", now=T0)
    await backend.beat("scheduler:new", now=T0 + HOUR)
    assert set(await backend.beats(now=T0 + day)) == {"scheduler:old", "scheduler:new"}
    assert set(await backend.beats(now=T0 + day + MS)) == {"scheduler:new"}
    assert await backend.beats(now=T0 + day + HOUR + MS) == {}
    # a beat forgets those more than a day older than it, so storage stays bounded
    await backend.beat("scheduler:later", now=T0 + 2 * day)
    assert await backend.beats(now=T0) == {"scheduler:later": T0 + 2 * day}
