"""Listing by state over several queues: pages newest first that visit every match once, and a
job listed under its current state, and only that one, after every kind of state change.

A backend may keep a separate index per state (Redis does); these tests catch an index that
misses a move.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from monoq.core.backend import Backend
from monoq.core.ids import new_id
from monoq.core.models import (
    ErrorInfo,
    Finish,
    Job,
    JobQuery,
    JobState,
    NewJob,
    Outcome,
    error_type_of,
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

HOUR = timedelta(hours=1)
QUEUES = ("q1", "q2", "q3")
HANDLERS = ("h1", "h2")
ERRORS = (ErrorInfo("ValueError", "bad"), ErrorInfo("KeyError", ""))
# The state each job of the mixed store is brought to, by its position (a pattern that gives
# every queue every state, with the states interleaved by id).
PATTERN = (
    JobState.COMPLETED, JobState.DEAD, JobState.QUEUED, JobState.COMPLETED, JobState.RETRYING,
    JobState.SCHEDULED, JobState.CANCELLED, JobState.COMPLETED, JobState.RUNNING, JobState.DEAD,
    JobState.COMPLETED,
)


async def every_page(backend: Backend, *, limit: int, **filters: Any) -> list[str]:
    """The ids of every page of ``list_jobs(**filters)``, following the cursors to the end."""
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(1000):
        page = await backend.list_jobs(JobQuery(limit=limit, cursor=cursor, **filters))
        assert len(page.jobs) <= limit
        seen.extend(job.id for job in page.jobs)
        cursor = page.next_cursor
        if cursor is None:
            return seen
    raise AssertionError("list_jobs did not reach its last page")


async def mixed_store(backend: Backend, per_queue: int = 22) -> list[Job]:
    """Jobs in three queues, every state in each, ids interleaved across queues and states;
    answers them as stored."""
    count = per_queue * len(QUEUES)
    made = [
        NewJob(id=new_id(), queue=QUEUES[i % len(QUEUES)], handler=HANDLERS[i // 3 % 2],
               payload_json=payload(), max_retries=5)
        for i in range(count)
    ]
    target = {job.id: PATTERN[i % len(PATTERN)] for i, job in enumerate(made)}
    later = [job for job in made if target[job.id] is JobState.SCHEDULED]
    now = [job for job in made if target[job.id] is not JobState.SCHEDULED]
    await backend.enqueue(now, now=T0)
    await backend.enqueue(
        [NewJob(id=j.id, queue=j.queue, handler=j.handler, payload_json=j.payload_json,
                max_retries=j.max_retries, run_at=T0 + HOUR) for j in later],
        now=T0,
    )
    items: list[Finish] = []
    for queue in QUEUES:
        leases = await claim(backend, [queue], limit=count, now=at(1))
        for n, lease in enumerate(leases):
            state = target[lease.job.id]
            error = ERRORS[n % len(ERRORS)]
            if state is JobState.COMPLETED:
                items.append(Finish(lease, Outcome.COMPLETED))
            elif state is JobState.DEAD:
                items.append(Finish(lease, Outcome.DEAD, error=error))
            elif state is JobState.RETRYING:
                items.append(Finish(lease, Outcome.RETRY, error=error, retry_at=T0 + HOUR))
            elif state is JobState.CANCELLED:
                items.append(Finish(lease, Outcome.CANCELLED))
            elif state is JobState.QUEUED:
                items.append(Finish(lease, Outcome.RELEASED))
    assert all(await backend.finish(items, now=at(2)))
    stored = await backend.get_many([job.id for job in made])
    jobs = [job for job in stored if job is not None]
    assert [job.state for job in jobs] == [target[job.id] for job in jobs]
    return jobs


FILTERS: list[tuple[str, dict[str, Any], Callable[[Job], bool]]] = [
    ("dead", {"states": {JobState.DEAD}}, lambda j: j.state is JobState.DEAD),
    ("dead-completed", {"states": {JobState.DEAD, JobState.COMPLETED}},
     lambda j: j.state in (JobState.DEAD, JobState.COMPLETED)),
    ("waiting", {"states": {JobState.QUEUED, JobState.SCHEDULED, JobState.RUNNING}},
     lambda j: j.state in (JobState.QUEUED, JobState.SCHEDULED, JobState.RUNNING)),
    ("every-state", {"states": set(JobState)}, lambda j: True),
    ("no-filter", {}, lambda j: True),
    ("error-type", {"states": {JobState.DEAD, JobState.RETRYING}, "error_type": "ValueError"},
     lambda j: j.state in (JobState.DEAD, JobState.RETRYING)
     and error_type_of(j.error) == "ValueError"),
    ("handler", {"states": {JobState.COMPLETED, JobState.CANCELLED}, "handler": "h2"},
     lambda j: j.state in (JobState.COMPLETED, JobState.CANCELLED) and j.handler == "h2"),
    ("queue", {"queue": "q2", "states": {JobState.CANCELLED, JobState.DEAD}},
     lambda j: j.queue == "q2" and j.state in (JobState.CANCELLED, JobState.DEAD)),
    ("window", {"states": {JobState.DEAD, JobState.CANCELLED}, "finished_after": at(2)},
     lambda j: j.state in (JobState.DEAD, JobState.CANCELLED)),
]


@pytest.mark.parametrize("limit", [1, 4, 50])
@pytest.mark.parametrize(("filters", "wanted"), [(f, w) for _n, f, w in FILTERS],
                         ids=[name for name, _f, _w in FILTERS])
async def test_state_filtered_pages_across_queues_visit_every_match_once_newest_first(
    backend: Backend, filters: dict[str, Any], wanted: Callable[[Job], bool], limit: int
) -> None:
    jobs = await mixed_store(backend)
    expected = sorted((job.id for job in jobs if wanted(job)), reverse=True)
    assert expected
    assert await every_page(backend, limit=limit, **filters) == expected


async def test_a_cursor_in_the_middle_of_the_states_goes_on_below_it(backend: Backend) -> None:
    jobs = await mixed_store(backend)
    states = {JobState.DEAD, JobState.QUEUED, JobState.RETRYING}
    expected = sorted((job.id for job in jobs if job.state in states), reverse=True)
    # any id works as a cursor, also one of a job the filter does not match
    cursor = sorted(job.id for job in jobs)[len(jobs) // 2]
    below = [job_id for job_id in expected if job_id < cursor]
    page = await backend.list_jobs(JobQuery(states=states, cursor=cursor, limit=len(jobs)))
    assert [job.id for job in page.jobs] == below[: len(page.jobs)]
    rest = [] if page.next_cursor is None else await every_page(
        backend, limit=len(jobs), states=states, cursor=page.next_cursor)
    assert [job.id for job in page.jobs] + rest == below


# -- a job is listed under its state only -----------------------------------------------------


async def listed_under(backend: Backend, job: Job) -> list[JobState]:
    """The states whose listing holds the job (by state alone, and with its queue): asserts
    both agree."""
    found: list[JobState] = []
    for state in JobState:
        everywhere = job.id in await every_page(backend, limit=50, states={state})
        in_queue = job.id in await every_page(backend, limit=50, states={state}, queue=job.queue)
        assert everywhere == in_queue
        if everywhere:
            found.append(state)
    return found


async def assert_listed(backend: Backend, job_id: str, state: JobState | None) -> None:
    """The job is in ``state`` (None: gone) and listed under that state alone, and without a
    state filter."""
    stored = await backend.get(job_id)
    if state is None:
        assert stored is None
        for states in ([*JobState], None):
            assert job_id not in await every_page(backend, limit=50, states=states)
        return
    assert stored is not None
    assert stored.state is state
    assert await listed_under(backend, stored) == [state]
    assert job_id in await every_page(backend, limit=50)


async def neighbours(backend: Backend) -> None:
    """Jobs in other states around the one under test, so an index mistake shows."""
    for state in JobState:
        await make_job_in(backend, state, queue=f"other-{state}")


async def test_enqueue_and_promote(backend: Backend) -> None:
    await neighbours(backend)
    [ready, delayed] = await enqueue(
        backend, new_job(), new_job(run_at=at(60)), now=T0)
    await assert_listed(backend, ready.id, JobState.QUEUED)
    await assert_listed(backend, delayed.id, JobState.SCHEDULED)
    assert await backend.promote(now=at(60), limit=10) == 1
    await assert_listed(backend, delayed.id, JobState.QUEUED)


async def test_claim_and_every_finish(backend: Backend) -> None:
    await neighbours(backend)
    boom = ErrorInfo("RuntimeError", "boom")
    [job] = await enqueue(backend, new_job(max_retries=5))
    lease = await claim_one(backend, job.id)
    await assert_listed(backend, job.id, JobState.RUNNING)
    assert await finish(backend, lease, Outcome.RELEASED, now=at(1))
    await assert_listed(backend, job.id, JobState.QUEUED)
    lease = await claim_one(backend, job.id, now=at(2))
    assert await finish(backend, lease, Outcome.RETRY, now=at(3), retry_at=at(10), error=boom)
    await assert_listed(backend, job.id, JobState.RETRYING)
    assert await backend.promote(now=at(10), limit=10) == 1
    await assert_listed(backend, job.id, JobState.QUEUED)
    lease = await claim_one(backend, job.id, now=at(11))
    assert await finish(backend, lease, Outcome.DEAD, now=at(12), error=boom)
    await assert_listed(backend, job.id, JobState.DEAD)
    assert await backend.requeue([job.id], now=at(13)) == [job.id]
    await assert_listed(backend, job.id, JobState.QUEUED)
    lease = await claim_one(backend, job.id, now=at(14))
    assert await finish(backend, lease, Outcome.COMPLETED, now=at(15))
    await assert_listed(backend, job.id, JobState.COMPLETED)
    [other] = await enqueue(backend, new_job(), now=at(16))
    lease = await claim_one(backend, other.id, now=at(16))
    assert await finish(backend, lease, Outcome.CANCELLED, now=at(17))
    await assert_listed(backend, other.id, JobState.CANCELLED)


@pytest.mark.parametrize("state", [JobState.QUEUED, JobState.SCHEDULED, JobState.RETRYING],
                         ids=str)
async def test_cancel_and_requeue(backend: Backend, state: JobState) -> None:
    await neighbours(backend)
    job = await make_job_in(backend, state)
    await assert_listed(backend, job.id, state)
    assert await backend.cancel(job.id, now=at(1)) is not None
    await assert_listed(backend, job.id, JobState.CANCELLED)
    assert await backend.requeue([job.id], now=at(2)) == [job.id]
    await assert_listed(backend, job.id, JobState.QUEUED)


async def test_a_cancel_requested_while_running_ends_cancelled(backend: Backend) -> None:
    await neighbours(backend)
    [job] = await enqueue(backend, new_job())
    lease = await claim_one(backend, job.id)
    requested = await backend.cancel(job.id, now=at(1))
    assert requested is not None
    assert requested.cancel_requested
    await assert_listed(backend, job.id, JobState.RUNNING)
    retry = ErrorInfo("RuntimeError", "boom")
    assert await finish(backend, lease, Outcome.RETRY, now=at(2), retry_at=at(5), error=retry)
    await assert_listed(backend, job.id, JobState.CANCELLED)


@pytest.mark.parametrize("outcome", [Outcome.RETRY, Outcome.DEAD], ids=str)
async def test_reap_of_an_expired_lease(backend: Backend, outcome: Outcome) -> None:
    """What the scheduler's reaper does: the expired leases, then a failed finish of each."""
    await neighbours(backend)
    [job] = await enqueue(backend, new_job())
    await claim_one(backend, job.id)
    late = T0 + LEASE + timedelta(seconds=1)
    expired = [lease for lease in await backend.expired_leases(now=late, limit=10)
               if lease.job.id == job.id]
    assert len(expired) == 1
    error = ErrorInfo("LeaseExpired", "worker w1 stopped renewing its lease")
    retry_at = late + HOUR if outcome is Outcome.RETRY else None
    assert await finish(backend, expired[0], outcome, now=late, error=error, retry_at=retry_at)
    await assert_listed(backend, job.id,
                        JobState.RETRYING if outcome is Outcome.RETRY else JobState.DEAD)


@pytest.mark.parametrize("state", [JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED],
                         ids=str)
async def test_purge(backend: Backend, state: JobState) -> None:
    await neighbours(backend)
    job = await make_job_in(backend, state, now=at(1))
    kept = await make_job_in(backend, state, now=at(100), queue="kept")
    assert await backend.purge(states={state}, finished_before=at(50)) >= 1
    await assert_listed(backend, job.id, None)
    await assert_listed(backend, kept.id, state)


async def test_purge_schedule_runs(backend: Backend) -> None:
    await neighbours(backend)
    runs = [NewJob(id=new_id(), queue="default", handler="echo", payload_json=payload(),
                   schedule_id="s") for _ in range(3)]
    await backend.enqueue(runs, now=T0)
    for run in runs:
        lease = await claim_one(backend, run.id)
        assert await finish(backend, lease, Outcome.COMPLETED, now=at(1))
    assert await backend.purge_schedule_runs("s", keep=1) == 2
    for run in runs[:2]:
        await assert_listed(backend, run.id, None)
    await assert_listed(backend, runs[2].id, JobState.COMPLETED)
    page = await backend.list_jobs(JobQuery(schedule_id="s", states={JobState.COMPLETED}))
    assert [job.id for job in page.jobs] == [runs[2].id]

