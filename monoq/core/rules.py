"""Rules every backend applies the same way, each written once here.

A backend calls these instead of writing its own copy, so the memory, SQLite and Redis
backends cannot drift apart on them. The Redis backend's Lua scripts cannot call Python: where
a script applies one of these rules itself, it says so beside its copy, and the conformance
suite (``monoq.testing``) pins both to the same answers.
"""

from __future__ import annotations

from datetime import datetime

from monoq.core.models import Job, JobState, NewJob, Outcome, from_ms, to_ms

# The outcomes a cancel requested during the run turns into CANCELLED at finish.
CANCELLABLE_OUTCOMES = frozenset({Outcome.RETRY, Outcome.DEAD, Outcome.RELEASED})


def admitted(new: NewJob, now: datetime) -> Job:
    """The job ``Backend.enqueue`` stores for ``new`` at ``now``: SCHEDULED when its ``run_at``
    (truncated to the millisecond, in UTC) is after ``now``, else QUEUED with ``run_at = now``;
    ``created_at = now``, ``attempt = 0``, every other field as given."""
    run_at = None if new.run_at is None else from_ms(to_ms(new.run_at))
    later = run_at is not None and run_at > now
    return Job(
        id=new.id,
        queue=new.queue,
        handler=new.handler,
        payload_json=new.payload_json,
        priority=new.priority,
        state=JobState.SCHEDULED if later else JobState.QUEUED,
        attempt=0,
        max_retries=new.max_retries,
        timeout=float(new.timeout),
        run_at=run_at if later and run_at is not None else now,
        created_at=now,
        idempotency_key=new.idempotency_key,
        schedule_id=new.schedule_id,
        trace_context=new.trace_context,
    )


def finish_outcome(outcome: Outcome, cancel_requested: bool) -> Outcome:
    """The outcome ``Backend.finish`` applies: RETRY, DEAD and RELEASED become CANCELLED when a
    cancel was requested during the run; every other outcome stays as the worker reported."""
    if cancel_requested and outcome in CANCELLABLE_OUTCOMES:
        return Outcome.CANCELLED
    return outcome


__all__ = ["CANCELLABLE_OUTCOMES", "admitted", "finish_outcome"]
