"""``monoq job stack``: a running job's stack is asked for, the holder's heartbeat learns it,
and the worker's answer is stored, fenced by its lease."""

from __future__ import annotations

import attrs
import pytest

from monoq.core.backend import Backend
from monoq.core.models import ErrorInfo, Finish, JobState, LeaseStatus, Outcome
from monoq.testing.support import LEASE, at, claim, enqueue, new_job

pytestmark = pytest.mark.anyio


async def test_a_stack_request_reaches_the_holder_and_its_answer_is_stored(
        backend: Backend) -> None:
    [job] = await enqueue(backend, new_job())
    [lease] = await claim(backend, now=at(1))
    asked = await backend.request_stack(job.id, now=at(2))
    assert asked is not None and asked.stack_requested and asked.stack is None
    assert await backend.extend([lease], lease_for=LEASE, now=at(3)) == [
        LeaseStatus.STACK_REQUESTED]
    assert await backend.put_stack(lease, "File handler.py, line 3", now=at(4))
    got = await backend.get(job.id)
    assert got is not None
    assert (got.stack, got.stack_at, got.stack_requested) == (
        "File handler.py, line 3", at(4), False)
    assert await backend.extend([lease], lease_for=LEASE, now=at(5)) == [LeaseStatus.HELD]


async def test_a_cancel_outranks_a_stack_request(backend: Backend) -> None:
    [job] = await enqueue(backend, new_job())
    [lease] = await claim(backend, now=at(1))
    await backend.request_stack(job.id, now=at(2))
    await backend.cancel(job.id, now=at(2))
    assert await backend.extend([lease], lease_for=LEASE, now=at(3)) == [
        LeaseStatus.CANCEL_REQUESTED]


async def test_only_a_running_job_is_asked_and_only_its_holder_answers(
        backend: Backend) -> None:
    [queued, running] = await enqueue(backend, new_job(priority=9), new_job(priority=0))
    [lease] = await claim(backend, now=at(1))
    assert lease.job.id == running.id
    waiting = await backend.request_stack(queued.id, now=at(2))
    assert waiting is not None and waiting.state is JobState.QUEUED
    assert not waiting.stack_requested
    assert await backend.request_stack("01NOSUCHJOB0000000000000000", now=at(2)) is None
    stale = attrs.evolve(lease, token="not-the-token")  # noqa: S106 - a stale lease token
    assert not await backend.put_stack(stale, "x", now=at(3))
    got = await backend.get(running.id)
    assert got is not None and got.stack is None


async def test_the_end_of_a_run_drops_a_pending_request(backend: Backend) -> None:
    [job] = await enqueue(backend, new_job())
    [lease] = await claim(backend, now=at(1))
    await backend.request_stack(job.id, now=at(2))
    assert await backend.finish([Finish(lease, Outcome.COMPLETED, result_json=b"1")],
                                now=at(3)) == [True]
    got = await backend.get(job.id)
    assert got is not None and not got.stack_requested


async def test_a_worker_that_lost_the_lease_adds_where_it_was_to_the_closed_record(
        backend: Backend) -> None:
    [job] = await enqueue(backend, new_job())
    await claim(backend, now=at(1), worker_id="w1")
    [reaped] = await backend.expired_leases(now=at(1) + LEASE * 2, limit=10)
    await backend.finish([Finish(reaped, Outcome.RETRY, retry_at=at(200),
                                 error=ErrorInfo("LeaseExpired", "no heartbeat"))],
                         now=at(1) + LEASE * 2)
    assert await backend.note_attempt(job.id, 1, "w1", "File report.py, line 9")
    [record] = await backend.attempts(job.id)
    assert (record.error_type, record.traceback) == ("LeaseExpired", "File report.py, line 9")
    # Once only, for that run's worker, of a job that exists.
    assert not await backend.note_attempt(job.id, 1, "w1", "again")
    assert not await backend.note_attempt(job.id, 1, "w2", "other worker")
    assert not await backend.note_attempt(job.id, 2, "w1", "no such attempt")
    assert not await backend.note_attempt("01NOSUCHJOB0000000000000000", 1, "w1", "x")
    [record] = await backend.attempts(job.id)
    assert record.traceback == "File report.py, line 9"
