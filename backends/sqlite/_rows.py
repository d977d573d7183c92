"""Rows of the SQLite tables and the values they hold: jobs and schedules to and from rows,
times to and from integers (epoch milliseconds; a schedule's times in microseconds)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from monoq.core.models import (
    EPOCH,
    Job,
    JobState,
    MisfirePolicy,
    OverlapPolicy,
    Schedule,
    from_ms,
    to_ms,
)

_STATES: Final = {s.value: s for s in JobState}

_JOB_COLUMNS: Final = (
    "id, queue, handler, payload, priority, state, attempt, max_retries, timeout, run_at, "
    "created_at, started_at, finished_at, idempotency_key, schedule_id, result, error, "
    "cancel_requested, worker_id, lease_expires_at, lease_token, trace_context, progress, "
    "progress_message, stack_requested, stack, stack_at"
)
_TOKEN: Final = 20  # index of lease_token in _JOB_COLUMNS

_SCHEDULE_COLUMNS: Final = (
    "id, handler, cron, every, timezone, payload, queue, priority, max_retries, timeout, "
    "enabled, overlap, misfire, origin, created_at, updated_at, last_fire_at"
)
_ms = to_ms
_dt = from_ms


def _odt(ms: int | None) -> datetime | None:
    return None if ms is None else from_ms(ms)


def _job(r: Sequence[Any]) -> Job:
    return Job(
        id=r[0],
        queue=r[1],
        handler=r[2],
        payload_json=r[3],
        priority=r[4],
        state=_STATES[r[5]],
        attempt=r[6],
        max_retries=r[7],
        timeout=r[8],
        run_at=_dt(r[9]),
        created_at=_dt(r[10]),
        started_at=_odt(r[11]),
        finished_at=_odt(r[12]),
        idempotency_key=r[13],
        schedule_id=r[14],
        result_json=r[15],
        error=r[16],
        cancel_requested=bool(r[17]),
        worker_id=r[18],
        lease_expires_at=_odt(r[19]),
        trace_context=r[21],
        progress=r[22],
        progress_message=r[23],
        stack_requested=bool(r[24]),
        stack=r[25],
        stack_at=_odt(r[26]),
    )


def _oms(dt: datetime | None) -> int | None:
    return None if dt is None else _ms(dt)


_ONE_US: Final = timedelta(microseconds=1)


def _us(dt: datetime) -> int:
    """Exact epoch microseconds: how a schedule's times are stored (schema version 6)."""
    return (dt - EPOCH) // _ONE_US


def _ous(dt: datetime | None) -> int | None:
    return None if dt is None else _us(dt)


def _odt_us(us: int | None) -> datetime | None:
    return None if us is None else EPOCH + us * _ONE_US


def _schedule_row(s: Schedule) -> tuple[Any, ...]:
    return (
        s.id,
        s.handler,
        s.cron,
        s.every,
        s.timezone,
        s.payload_json,
        s.queue,
        s.priority,
        s.max_retries,
        s.timeout,
        int(s.enabled),
        s.overlap.value,
        s.misfire.value,
        s.origin,
        _ous(s.created_at),
        _ous(s.updated_at),
        _ous(s.last_fire_at),
    )


def _schedule(r: Sequence[Any]) -> Schedule:
    return Schedule(
        id=r[0],
        handler=r[1],
        cron=r[2],
        every=r[3],
        timezone=r[4],
        payload_json=bytes(r[5]),
        queue=r[6],
        priority=r[7],
        max_retries=r[8],
        timeout=r[9],
        enabled=bool(r[10]),
        overlap=OverlapPolicy(r[11]),
        misfire=MisfirePolicy(r[12]),
        origin=r[13],
        created_at=_odt_us(r[14]),
        updated_at=_odt_us(r[15]),
        last_fire_at=_odt_us(r[16]),
    )


