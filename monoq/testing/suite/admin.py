"""Admin and inspection: cancel, requeue, pause, stats, list_jobs, workers."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

import attrs
import pytest

from monoq.core.backend import Backend
from monoq.core.ids import new_id
from monoq.core.models import (
    TERMINAL_STATES,
    JobQuery,
    JobState,
    LeaseStatus,
    Outcome,
    Page,
    QueueStats,
    WorkerInfo,
)
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
    payload,
)

pytestmark = pytest.mark.anyio  # the suite's tests are async, in any host project

# -- cancel -----------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [JobState.QUEUED, JobState.SCHEDULED, JobState.RETRYING], ids=str)
async def test_cancel_of_a_waiting_job_cancels_it(backend: Backend, state: JobState) -> None:
    job = await make_job_in(backend, state)
    cancelled = await backend.cancel(job.id, now=at(5))
    assert cancelled is not None
    assert cancelled.id == job.id
    assert cancelled.state is JobState.CANCELLED
    assert cancelled.finished_at == at(5)
    assert await backend.get(job.id) == cancelled
    assert await backend.promote(now=at(7200), limit=10) == 0
    assert await claim(backend, now=at(7200)) == []


async def test_cancel_of_a_running_job_is_requested(backend: Backend) -> None:
    job = await make_job_in(backend, JobState.RUNNING)
    answered = await backend.cancel(job.id, now=at(5))
    assert answered is not None
    assert answered.state is JobState.RUNNING
    assert answered.cancel_requested
    assert await backend.get(job.id) == answered


async def test_heartbeat_learns_of_the_cancel_and_keeps_the_lease(backend: Backend) -> None:
    [job] = await enqueue(backend)
    lease = await claim_one(backend, job.id)
    assert await backend.cancel(job.id, now=at(5)) is not None
    statuses = await backend.extend([lease], lease_for=LEASE, now=at(10))
    assert statuses == [LeaseStatus.CANCEL_REQUESTED]
    stored = await backend.get(job.id)
    assert stored is not None
    assert stored.lease_expires_at == at(10) + LEASE
    assert await finish(backend, lease, Outcome.CANCELLED, now=at(11))
    stored = await backend.get(job.id)
    assert stored is not None
    assert stored.state is JobState.CANCELLED
    assert stored.finished_at == at(11)


@pytest.mark.parametrize("outcome", [Outcome.RETRY, Outcome.DEAD, Outcome.RELEASED], ids=str)
async def test_failing_or_releasing_after_a_cancel_request_ends_cancelled(
    backend: Backend, outcome: Outcome
) -> None:
    [job] = await enqueue(backend)
    lease = await claim_one(backend, job.id)
    assert await backend.cancel(job.id, now=at(5)) is not None
    retry_at = at(60) if outcome is Outcome.RETRY else None
    assert await finish(backend, lease, outcome, now=at(6), retry_at=retry_at)
    stored = await backend.get(job.id)
    assert stored is not None
    assert stored.state is JobState.CANCELLED
    assert stored.finished_at == at(6)
    assert await backend.promote(now=at(7200), limit=10) == 0
    assert await claim(backend, now=at(7200)) == []  # not back in the queue either


async def test_completing_after_a_cancel_request_stays_completed(backend: Backend) -> None:
    [job] = await enqueue(backend)
    lease = await claim_one(backend, job.id)
    assert await backend.cancel(job.id, now=at(5)) is not None
    assert await finish(backend, lease, Outcome.COMPLETED, now=at(6), result_json=payload(7))
    stored = await backend.get(job.id)
    assert stored is not None
    assert stored.state is JobState.COMPLETED
    assert stored.result_json == payload(7)


@pytest.mark.parametrize("state", sorted(TERMINAL_STATES), ids=str)
async def test_cancel_of_a_finished_job_changes_nothing(backend: Backend, state: JobState) -> None:
    job = await make_job_in(backend, state)
    answered = await backend.cancel(job.id, now=at(5))
    assert answered == job
    assert await backend.get(job.id) == job


async def test_cancel_of_an_unknown_job_is_none(backend: Backend) -> None:
    await enqueue(backend)
    assert await backend.cancel(new_id(), now=T0) is None


# -- requeue ----------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [JobState.DEAD, JobState.CANCELLED], ids=str)
async def test_requeue_makes_the_job_new_again(backend: Backend, state: JobState) -> None:
    job = await make_job_in(backend, state)
    records = await backend.attempts(job.id)
    assert await backend.requeue([job.id], now=at(5)) == [job.id]
    stored = await backend.get(job.id)
    assert stored is not None
    assert stored.state is JobState.QUEUED
    assert stored.attempt == 0
    assert stored.run_at == at(5)
    assert (stored.error, stored.result_json, stored.finished_at) == (None, None, None)
    assert await backend.attempts(job.id) == records
    [lease] = await claim(backend, now=at(6))
    assert lease.job.id == job.id
    assert lease.job.attempt == 1


async def test_requeue_leaves_other_jobs_alone(backend: Backend) -> None:
    dead = await make_job_in(backend, JobState.DEAD, queue="q1")
    others = [
        await make_job_in(backend, state, queue=f"q{i}")
        for i, state in enumerate(
            [
                JobState.COMPLETED,
                JobState.RUNNING,
                JobState.QUEUED,
                JobState.SCHEDULED,
                JobState.RETRYING,
            ],
            start=2,
        )
    ]
    unknown = new_id()
    moved = await backend.requeue([o.id for o in others] + [unknown, dead.id], now=at(5))
    assert moved == [dead.id]
    assert await backend.get_many([o.id for o in others]) == others


async def test_requeued_job_waits_behind_older_jobs(backend: Backend) -> None:
    [job] = await enqueue(backend, now=T0)
    assert await backend.cancel(job.id, now=at(1)) is not None
    [older] = await enqueue(backend, now=at(2))
    assert await backend.requeue([job.id], now=at(3)) == [job.id]
    claimed = [await claim(backend, now=at(4)) for _ in range(2)]
    assert [[lease.job.id for lease in leases] for leases in claimed] == [[older.id], [job.id]]


# -- pause and stats --------------------------------------------------------------------------


def by_queue(stats: list[QueueStats]) -> dict[str, tuple[dict[JobState, int], bool]]:
    return {s.queue: (nonzero(s.counts), s.paused) for s in stats}


def nonzero(counts: Mapping[JobState, int]) -> dict[JobState, int]:
    return {state: n for state, n in counts.items() if n}


async def test_stats_count_jobs_by_state_per_queue(backend: Backend) -> None:
    await make_job_in(backend, JobState.COMPLETED, queue="a")
    await make_job_in(backend, JobState.RUNNING, queue="a")
    await enqueue(backend, new_job("a"), new_job("a"), new_job("a", run_at=at(60)))
    await make_job_in(backend, JobState.DEAD, queue="b")
    stats = await backend.stats()
    assert [s.queue for s in stats] == ["a", "b"]
    assert by_queue(stats) == {
        "a": (
            {JobState.COMPLETED: 1, JobState.RUNNING: 1, JobState.QUEUED: 2, JobState.SCHEDULED: 1},
            False,
        ),
        "b": ({JobState.DEAD: 1}, False),
    }


async def test_stats_filtered_by_queue(backend: Backend) -> None:
    await enqueue(backend, new_job("a"), new_job("b"), new_job("c"))
    stats = await backend.stats(["c", "a"])
    assert by_queue(stats) == {
        "a": ({JobState.QUEUED: 1}, False),
        "c": ({JobState.QUEUED: 1}, False),
    }


async def test_pause_and_resume_show_in_stats(backend: Backend) -> None:
    await enqueue(backend, new_job("a"))
    await backend.set_paused("a", True)
    [stats] = await backend.stats(["a"])
    assert stats.paused
    await backend.set_paused("a", False)
    [stats] = await backend.stats(["a"])
    assert not stats.paused


async def test_pausing_an_empty_queue_makes_it_known(backend: Backend) -> None:
    await backend.set_paused("quiet", True)
    assert by_queue(await backend.stats()) == {"quiet": ({}, True)}


async def test_enqueue_into_a_paused_queue_still_works(backend: Backend) -> None:
    await backend.set_paused("default", True)
    [job] = await enqueue(backend)
    assert job.state is JobState.QUEUED
    assert await claim(backend) == []
    await backend.set_paused("default", False)
    [lease] = await claim(backend)
    assert lease.job.id == job.id


# -- list_jobs --------------------------------------------------------------------------------


async def test_list_jobs_is_newest_first(backend: Backend) -> None:
    jobs = [(await enqueue(backend, now=at(i)))[0] for i in range(3)]
    page = await backend.list_jobs(JobQuery())
    assert [job.id for job in page.jobs] == [job.id for job in reversed(jobs)]
    assert page.next_cursor is None


async def test_list_jobs_filters(backend: Backend) -> None:
    dead = await make_job_in(backend, JobState.DEAD, queue="b")
    a_echo, a_send, b_echo = await enqueue(
        backend, new_job("a", "echo"), new_job("a", "send"), new_job("b", "echo")
    )

    def ids(page: Page) -> list[str]:
        return [job.id for job in page.jobs]

    assert ids(await backend.list_jobs(JobQuery(queue="a"))) == [a_send.id, a_echo.id]
    assert ids(await backend.list_jobs(JobQuery(handler="echo"))) == [b_echo.id, a_echo.id, dead.id]
    assert ids(await backend.list_jobs(JobQuery(states={JobState.DEAD}))) == [dead.id]
    both = await backend.list_jobs(JobQuery(queue="b", states={JobState.QUEUED, JobState.DEAD}))
    assert ids(both) == [b_echo.id, dead.id]
    every = await backend.list_jobs(JobQuery(queue="b", handler="echo", states=[JobState.QUEUED]))
    assert ids(every) == [b_echo.id]
    assert ids(await backend.list_jobs(JobQuery(queue="nowhere"))) == []


async def test_list_jobs_pages_visit_every_job_once(backend: Backend) -> None:
    wanted = [new_job("a") for _ in range(25)]
    noise = [new_job("b") for _ in range(10)]
    mixed = [job for pair in zip(wanted, noise + [None] * 15, strict=True) for job in pair if job]
    await enqueue(backend, *mixed)
    sizes: list[int] = []
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(5):
        page = await backend.list_jobs(JobQuery(queue="a", limit=10, cursor=cursor))
        sizes.append(len(page.jobs))
        seen.extend(job.id for job in page.jobs)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sizes == [10, 10, 5]
    assert seen == [job.id for job in reversed(wanted)]


async def test_list_jobs_full_last_page_has_no_cursor(backend: Backend) -> None:
    await enqueue(backend, *(new_job() for _ in range(10)))
    page = await backend.list_jobs(JobQuery(limit=10))
    assert len(page.jobs) == 10
    assert page.next_cursor is None


async def test_list_jobs_of_an_empty_backend(backend: Backend) -> None:
    page = await backend.list_jobs(JobQuery())
    assert page.jobs == []
    assert page.next_cursor is None


# -- workers ----------------------------------------------------------------------------------


def worker(worker_id: str, *, last_seen: int = 0) -> WorkerInfo:
    return WorkerInfo(
        id=worker_id,
        host="host-1",
        pid=1234,
        roles=("worker",),
        queues=("default", "emails"),
        concurrency=4,
        busy=1,
        started_at=T0,
        last_seen=at(last_seen),
    )


async def test_reported_workers_are_listed_by_id(backend: Backend) -> None:
    ttl = timedelta(seconds=30)
    await backend.report_worker(worker("w2"), ttl=ttl)
    await backend.report_worker(worker("w1"), ttl=ttl)
    assert await backend.list_workers(now=at(10)) == [worker("w1"), worker("w2")]


async def test_workers_expire_after_their_ttl(backend: Backend) -> None:
    await backend.report_worker(worker("short"), ttl=timedelta(seconds=10))
    await backend.report_worker(worker("long"), ttl=timedelta(seconds=60))
    assert [w.id for w in await backend.list_workers(now=at(5))] == ["long", "short"]
    assert [w.id for w in await backend.list_workers(now=at(11))] == ["long"]
    assert await backend.list_workers(now=at(61)) == []


async def test_the_processed_count_of_the_latest_heartbeat_is_listed(backend: Backend) -> None:
    ttl = timedelta(seconds=30)
    await backend.report_worker(attrs.evolve(worker("w1"), processed=7), ttl=ttl)
    [listed] = await backend.list_workers(now=at(1))
    assert listed.processed == 7
    await backend.report_worker(attrs.evolve(worker("w1", last_seen=2), processed=1234), ttl=ttl)
    [listed] = await backend.list_workers(now=at(3))
    assert listed == attrs.evolve(worker("w1", last_seen=2), processed=1234)
    assert listed.to_dict()["processed"] == 1234


async def test_a_new_heartbeat_renews_the_worker(backend: Backend) -> None:
    ttl = timedelta(seconds=10)
    await backend.report_worker(worker("w1"), ttl=ttl)
    await backend.report_worker(worker("w1", last_seen=8), ttl=ttl)
    assert await backend.list_workers(now=at(15)) == [worker("w1", last_seen=8)]


async def test_removed_worker_is_not_listed(backend: Backend) -> None:
    ttl = timedelta(seconds=30)
    await backend.report_worker(worker("w1"), ttl=ttl)
    await backend.report_worker(worker("w2"), ttl=ttl)
    await backend.remove_worker("w1")
    await backend.remove_worker("never-seen")
    assert await backend.list_workers(now=at(1)) == [worker("w2")]
