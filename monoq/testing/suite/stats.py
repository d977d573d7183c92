"""count_finished: jobs per terminal state finished since a time (what throughput is made of)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from monoq.core.backend import Backend
from monoq.core.models import JobState, Outcome
from monoq.testing.support import (
    T0,
    at,
    claim_one,
    enqueue,
    finish,
    make_job_in,
    new_job,
)

pytestmark = pytest.mark.anyio  # the suite's tests are async, in any host project

COMPLETED, DEAD, CANCELLED = JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED
MS = timedelta(milliseconds=1)


def counts(completed: int = 0, dead: int = 0, cancelled: int = 0) -> dict[JobState, int]:
    return {COMPLETED: completed, DEAD: dead, CANCELLED: cancelled}


async def test_nothing_finished_answers_zero_for_each_terminal_state(backend: Backend) -> None:
    assert await backend.count_finished(since=T0) == counts()
    assert await backend.count_finished(since=T0, queue="default") == counts()
    answer = await backend.count_finished(since=T0 - timedelta(days=365))
    assert list(answer) == [COMPLETED, DEAD, CANCELLED]


async def test_counts_each_terminal_state_finished_since(backend: Backend) -> None:
    await make_job_in(backend, COMPLETED, now=at(10))
    await make_job_in(backend, COMPLETED, now=at(20))
    await make_job_in(backend, DEAD, now=at(30))
    await make_job_in(backend, CANCELLED, now=at(40))  # cancelled while queued
    [running] = await enqueue(backend, new_job(), now=at(50))
    lease = await claim_one(backend, running.id, now=at(50))
    assert await finish(backend, lease, Outcome.CANCELLED, now=at(60))  # ended by its worker

    assert await backend.count_finished(since=T0) == counts(2, 1, 2)
    assert await backend.count_finished(since=at(15)) == counts(1, 1, 2)
    assert await backend.count_finished(since=at(35)) == counts(0, 0, 2)
    assert await backend.count_finished(since=at(45)) == counts(0, 0, 1)
    assert await backend.count_finished(since=at(61)) == counts()


async def test_a_job_finished_exactly_at_since_counts(backend: Backend) -> None:
    await make_job_in(backend, COMPLETED, now=at(10))
    await make_job_in(backend, DEAD, now=at(20))
    await make_job_in(backend, CANCELLED, now=at(30))
    assert await backend.count_finished(since=at(10)) == counts(1, 1, 1)
    assert await backend.count_finished(since=at(10) + MS) == counts(0, 1, 1)
    assert await backend.count_finished(since=at(20)) == counts(0, 1, 1)
    assert await backend.count_finished(since=at(20) + MS) == counts(0, 0, 1)
    assert await backend.count_finished(since=at(30)) == counts(0, 0, 1)
    assert await backend.count_finished(since=at(30) + MS) == counts()


async def test_queue_filter(backend: Backend) -> None:
    await make_job_in(backend, COMPLETED, now=at(10), queue="a")
    await make_job_in(backend, COMPLETED, now=at(10), queue="a")
    await make_job_in(backend, DEAD, now=at(10), queue="a")
    await make_job_in(backend, COMPLETED, now=at(10), queue="b")
    await make_job_in(backend, CANCELLED, now=at(10), queue="b")

    assert await backend.count_finished(since=T0, queue="a") == counts(2, 1, 0)
    assert await backend.count_finished(since=T0, queue="b") == counts(1, 0, 1)
    assert await backend.count_finished(since=T0) == counts(3, 1, 1)
    assert await backend.count_finished(since=T0, queue="unknown") == counts()
    assert await backend.count_finished(since=at(11), queue="a") == counts()


async def test_purged_jobs_are_not_counted(backend: Backend) -> None:
    await make_job_in(backend, COMPLETED, now=at(10))
    await make_job_in(backend, DEAD, now=at(10))
    await make_job_in(backend, COMPLETED, now=at(20))
    assert await backend.count_finished(since=T0) == counts(2, 1, 0)

    purged = await backend.purge(states=[COMPLETED, DEAD], finished_before=at(15))
    assert purged == 2
    assert await backend.count_finished(since=T0) == counts(1, 0, 0)
    assert await backend.count_finished(since=T0, queue="default") == counts(1, 0, 0)


async def test_non_terminal_jobs_are_not_counted(backend: Backend) -> None:
    await make_job_in(backend, JobState.SCHEDULED, now=at(10), queue="s")
    await make_job_in(backend, JobState.RUNNING, now=at(10), queue="r")
    await make_job_in(backend, JobState.RETRYING, now=at(10), queue="t")
    await make_job_in(backend, JobState.QUEUED, now=at(10), queue="q")
    # a released run goes back to QUEUED without finishing
    [released] = await enqueue(backend, new_job("rel"), now=at(10))
    lease = await claim_one(backend, released.id, now=at(10))
    assert await finish(backend, lease, Outcome.RELEASED, now=at(11))
    # a requeued dead job is QUEUED again: its old finish no longer counts
    dead = await make_job_in(backend, DEAD, now=at(12), queue="d")
    assert await backend.count_finished(since=T0) == counts(0, 1, 0)
    assert await backend.requeue([dead.id], now=at(13)) == [dead.id]

    assert await backend.count_finished(since=T0) == counts()
    for queue in ("s", "r", "t", "q", "rel", "d"):
        assert await backend.count_finished(since=T0, queue=queue) == counts()


async def test_a_requeued_job_counts_again_when_it_finishes_anew(backend: Backend) -> None:
    dead = await make_job_in(backend, DEAD, now=at(10))
    assert await backend.requeue([dead.id], now=at(20)) == [dead.id]
    lease = await claim_one(backend, dead.id, now=at(30))
    assert await finish(backend, lease, Outcome.COMPLETED, now=at(40))
    assert await backend.count_finished(since=T0) == counts(1, 0, 0)
    assert await backend.count_finished(since=at(41)) == counts()
