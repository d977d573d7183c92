"""A job's trace context, stored as given, and its progress: reported by the running handler
(fenced by the lease), kept when the job ends, cleared by a retry."""

from __future__ import annotations

import attrs
import pytest

from monoq.core.backend import Backend
from monoq.core.models import ErrorInfo, Finish, JobState, Outcome, Progress
from monoq.testing.support import at, claim, enqueue, new_job

pytestmark = pytest.mark.anyio

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 vendor=opaque"


async def test_the_trace_context_is_stored_as_given_and_travels_with_the_job(
        backend: Backend) -> None:
    traced = attrs.evolve(new_job(), trace_context=TRACE)
    [stored, plain] = await enqueue(backend, traced, new_job())
    assert stored.trace_context == TRACE
    assert plain.trace_context is None
    [got] = await backend.get_many([stored.id])
    assert got is not None and got.trace_context == TRACE
    leases = await claim(backend, limit=2, now=at(1))
    assert [lease.job.trace_context for lease in leases] == [TRACE, None]


async def test_progress_is_stored_for_the_current_lease_only(backend: Backend) -> None:
    [job, other] = await enqueue(backend, new_job(), new_job())
    [lease] = await claim(backend, now=at(1))
    assert await backend.report_progress([Progress(lease, 0.25, "step 1 of 4")],
                                         now=at(2)) == [True]
    got = await backend.get(job.id)
    assert got is not None and (got.progress, got.progress_message) == (0.25, "step 1 of 4")
    assert await backend.report_progress([Progress(lease, 0.5)], now=at(3)) == [True]
    got = await backend.get(job.id)
    assert got is not None and (got.progress, got.progress_message) == (0.5, None)
    # A stale token, or a job that is not running, changes nothing.
    stale = attrs.evolve(lease, token="not-the-token")  # noqa: S106 - a stale lease token
    queued = attrs.evolve(lease, job=other)
    assert await backend.report_progress([Progress(stale, 0.9), Progress(queued, 0.9)],
                                         now=at(4)) == [False, False]
    got, untouched = await backend.get_many([job.id, other.id])
    assert got is not None and got.progress == 0.5
    assert untouched is not None and untouched.progress is None
    assert await backend.report_progress([], now=at(5)) == []


async def test_progress_is_kept_when_the_job_ends(backend: Backend) -> None:
    await enqueue(backend, new_job(), new_job(max_retries=0))
    done, dead = await claim(backend, limit=2, now=at(1))
    await backend.report_progress([Progress(done, 1.0, "all rows"),
                                   Progress(dead, 0.7, "row 700")], now=at(2))
    await backend.finish([Finish(done, Outcome.COMPLETED, result_json=b"1"),
                          Finish(dead, Outcome.DEAD, error=ErrorInfo("Boom", "x"))], now=at(3))
    a, b = await backend.get_many([done.job.id, dead.job.id])
    assert a is not None and a.state is JobState.COMPLETED and a.progress == 1.0
    assert b is not None and b.state is JobState.DEAD and b.progress_message == "row 700"


async def test_a_retry_clears_the_progress(backend: Backend) -> None:
    await enqueue(backend, new_job(), new_job(), new_job(max_retries=0))
    retried, released, dead = await claim(backend, limit=3, now=at(1))
    await backend.report_progress([Progress(lease, 0.4, "half") for lease in
                                   (retried, released, dead)], now=at(2))
    await backend.finish([
        Finish(retried, Outcome.RETRY, error=ErrorInfo("Boom", "x"), retry_at=at(30)),
        Finish(released, Outcome.RELEASED),
        Finish(dead, Outcome.DEAD, error=ErrorInfo("Boom", "y")),
    ], now=at(3))
    assert await backend.requeue([dead.job.id], now=at(4)) == [dead.job.id]
    jobs = await backend.get_many([retried.job.id, released.job.id, dead.job.id])
    assert [(j.state, j.progress, j.progress_message) for j in jobs if j is not None] == [
        (JobState.RETRYING, None, None), (JobState.QUEUED, None, None),
        (JobState.QUEUED, None, None)]


def test_a_progress_report_is_checked() -> None:
    lease = None
    with pytest.raises(ValueError, match="between 0 and 1"):
        Progress(lease, 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="between 0 and 1"):
        Progress(lease, float("nan"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at most 500"):
        Progress(lease, 0.5, "x" * 501)  # type: ignore[arg-type]
