"""Shared values and helpers of the conformance suite (``monoq.testing.suite``).

Only ``monoq.core`` and ``monoq.errors`` are imported, so a third-party backend can run the suite
by providing a fixture. Times sit on a fixed clock at millisecond precision (what backends store);
nothing sleeps, except where a test waits for a wake-up (bounded by ``WAIT``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest

from monoq.core.backend import Backend, Capabilities
from monoq.core.ids import new_id
from monoq.core.models import ErrorInfo, Finish, Job, JobState, Lease, NewJob, Outcome

T0 = datetime(2030, 1, 1, tzinfo=UTC)
LEASE = timedelta(seconds=30)
WAIT = 5.0  # seconds: the generous bound (anyio.fail_after) for anything that waits


def require_capability(backend: Backend, capability: str) -> None:
    """Skip the test unless ``backend.capabilities`` declares ``capability`` (a field name of
    ``Capabilities``)."""
    if capability not in attrs.fields_dict(Capabilities):
        raise ValueError(f"Capabilities has no field {capability!r}")
    if not getattr(backend.capabilities, capability):
        pytest.skip(f"{type(backend).__name__} does not declare {capability}")


def at(seconds: float = 0.0) -> datetime:
    """``T0`` plus ``seconds``, rounded to the millisecond."""
    return T0 + timedelta(milliseconds=round(seconds * 1000))


def payload(value: Any = None) -> bytes:
    """JSON bytes as the client would produce them."""
    return json.dumps({"n": 1} if value is None else value).encode()


def new_job(
    queue: str = "default",
    handler: str = "echo",
    *,
    priority: int = 5,
    run_at: datetime | None = None,
    key: str | None = None,
    payload_json: bytes | None = None,
    max_retries: int = 3,
) -> NewJob:
    """A ``NewJob`` with a fresh id."""
    return NewJob(
        id=new_id(),
        queue=queue,
        handler=handler,
        payload_json=payload() if payload_json is None else payload_json,
        priority=priority,
        run_at=run_at,
        max_retries=max_retries,
        idempotency_key=key,
    )


async def enqueue(backend: Backend, *jobs: NewJob, now: datetime = T0) -> list[Job]:
    """Enqueue ``jobs`` (one default job when none given) and answer the stored jobs."""
    answers = await backend.enqueue(list(jobs) or [new_job()], now=now)
    return [answer.job for answer in answers]


async def claim(
    backend: Backend,
    queues: list[str] | None = None,
    *,
    limit: int = 1,
    now: datetime = T0,
    worker_id: str = "w1",
) -> list[Lease]:
    """Claim with the suite's default lease length."""
    return await backend.claim(
        queues or ["default"], limit=limit, lease_for=LEASE, worker_id=worker_id, now=now
    )


async def claim_one(
    backend: Backend, job_id: str, *, now: datetime = T0, worker_id: str = "w1"
) -> Lease:
    """Claim the next job of its queue, which the caller expects to be ``job_id``."""
    job = await backend.get(job_id)
    assert job is not None
    [lease] = await claim(backend, [job.queue], now=now, worker_id=worker_id)
    assert lease.job.id == job_id
    return lease


async def finish(
    backend: Backend,
    lease: Lease,
    outcome: Outcome,
    *,
    now: datetime,
    retry_at: datetime | None = None,
    result_json: bytes | None = None,
    error: ErrorInfo | None = None,
) -> bool:
    """``finish`` one lease; answer whether it applied."""
    [applied] = await backend.finish(
        [Finish(lease, outcome, result_json=result_json, error=error, retry_at=retry_at)],
        now=now,
    )
    return applied


async def make_job_in(
    backend: Backend, state: JobState, *, now: datetime = T0, queue: str = "default"
) -> Job:
    """A job brought to ``state`` at ``now``; the queue must hold no other ready job."""
    if state is JobState.SCHEDULED:
        [job] = await enqueue(backend, new_job(queue, run_at=now + timedelta(hours=1)), now=now)
        return job
    [job] = await enqueue(backend, new_job(queue), now=now)
    if state is JobState.QUEUED:
        return job
    if state is JobState.CANCELLED:
        cancelled = await backend.cancel(job.id, now=now)
        assert cancelled is not None
        return cancelled
    lease = await claim_one(backend, job.id, now=now)
    if state is not JobState.RUNNING:
        outcome = {
            JobState.COMPLETED: Outcome.COMPLETED,
            JobState.DEAD: Outcome.DEAD,
            JobState.RETRYING: Outcome.RETRY,
        }[state]
        error = None if outcome is Outcome.COMPLETED else ErrorInfo("RuntimeError", "boom")
        retry_at = now + timedelta(hours=1) if outcome is Outcome.RETRY else None
        assert await finish(backend, lease, outcome, now=now, retry_at=retry_at, error=error)
    stored = await backend.get(job.id)
    assert stored is not None
    assert stored.state is state
    return stored
