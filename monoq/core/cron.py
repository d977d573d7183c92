"""Fire times of schedules: cron expressions (via croniter) and fixed intervals, DST-correct.

Cron expressions have 5 fields, or 6 with seconds first (``*/10 * * * * *``). They are evaluated
on the wall clock of the schedule's IANA timezone, then turned into UTC instants:

- a wall time that does not exist (it falls in a spring-forward gap) fires once, at the first
  valid instant after the gap (the moment of the transition);
- a wall time that happens twice (fall back) fires once, at its first occurrence.

Intervals (``every``) fire at whole multiples of the interval since the Unix epoch, so every
scheduler process computes the same fire times without talking to the others.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from monoq.core.models import MAX_EVERY, MIN_EVERY, Schedule, from_ms, to_ms, validate_name
from monoq.errors import ValidationError

_MAX_STEPS = 10_000  # bound on candidate wall times examined per lookup


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """The IANA timezone ``name``; ValueError when it is unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{name!r} is not an IANA timezone (e.g. UTC, Europe/Paris)") from exc


def _with_seconds(expr: str) -> bool:
    return len(expr.split()) == 6


def check_cron(expr: str) -> str:
    """Return ``expr`` if it is a valid 5- or 6-field cron expression, else ValueError."""
    fields = expr.split()
    if len(fields) not in (5, 6):
        raise ValueError(
            f"{expr!r} has {len(fields)} fields; use 5 (minute hour day month weekday) or 6 "
            "(second first)"
        )
    if not croniter.is_valid(expr, second_at_beginning=len(fields) == 6):
        raise ValueError(f"{expr!r} is not a valid cron expression")
    return expr


def validate_schedule(schedule: Schedule) -> Schedule:
    """Check a schedule's definition; ValidationError names the schedule and the field."""
    where = f"schedule {schedule.id!r}"
    validate_name("schedule id", schedule.id)
    validate_name(f"{where}: handler", schedule.handler)
    validate_name(f"{where}: queue", schedule.queue)
    if (schedule.cron is None) == (schedule.every is None):
        raise ValidationError(f"{where}", "give exactly one of cron and every")
    if schedule.cron is not None:
        try:
            check_cron(schedule.cron)
        except ValueError as exc:
            raise ValidationError(f"{where}: cron", str(exc)) from None
    if schedule.every is not None and not MIN_EVERY <= schedule.every <= MAX_EVERY:
        raise ValidationError(f"{where}: every", f"{schedule.every!r} s is outside 1 ms..366 d")
    try:
        zone(schedule.timezone)
    except ValueError as exc:
        raise ValidationError(f"{where}: timezone", str(exc)) from None
    if not 0 <= schedule.priority <= 9:
        raise ValidationError(f"{where}: priority", f"{schedule.priority} is outside 0..9")
    return schedule


def _to_utc(wall: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant of a naive wall time in ``tz`` (see the module docstring for DST)."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == wall:
        return first  # exists; for an ambiguous time fold=0 is the first occurrence
    # In a gap: fold=0 applies the old offset (too late), fold=1 the new one (too early);
    # the transition instant lies between them. Find it to the second.
    low = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    high = first
    before = low.astimezone(tz).utcoffset()
    while high - low > timedelta(seconds=1):
        mid = low + (high - low) / 2
        if mid.astimezone(tz).utcoffset() == before:
            low = mid
        else:
            high = mid
    return high.replace(microsecond=0) if high.microsecond else high


def _cron_iter(expr: str, start: datetime) -> croniter:
    return croniter(expr, start, second_at_beginning=_with_seconds(expr))


def next_fire(schedule: Schedule, after: datetime) -> datetime:
    """The first fire time strictly after ``after`` (aware), in UTC."""
    if schedule.every is not None:
        step = round(schedule.every * 1000)
        return from_ms((to_ms(after) // step + 1) * step)
    assert schedule.cron is not None  # noqa: S101 - validate_schedule guarantees it
    tz = zone(schedule.timezone)
    # Start an hour early in wall time so a fall-back hour is not skipped over.
    wall = after.astimezone(tz).replace(tzinfo=None) - timedelta(hours=1)
    it = _cron_iter(schedule.cron, wall)
    for _ in range(_MAX_STEPS):
        candidate = _to_utc(it.get_next(datetime), tz)
        if candidate > after:
            return candidate
    raise ValueError(f"schedule {schedule.id!r}: no fire time found after {after}")


def latest_fire(schedule: Schedule, now: datetime) -> datetime | None:
    """The latest fire time at or before ``now``, in UTC (None if there is none in a year)."""
    if schedule.every is not None:
        step = round(schedule.every * 1000)
        return from_ms(to_ms(now) // step * step)
    assert schedule.cron is not None  # noqa: S101 - validate_schedule guarantees it
    tz = zone(schedule.timezone)
    # Walk back from an hour after now in wall time (covers a fall-back hour), keep the first
    # candidate at or before now.
    wall = now.astimezone(tz).replace(tzinfo=None) + timedelta(hours=1, seconds=1)
    it = _cron_iter(schedule.cron, wall)
    horizon = now - timedelta(days=366)
    for _ in range(_MAX_STEPS):
        candidate = _to_utc(it.get_prev(datetime), tz)
        if candidate <= now:
            return candidate
        if candidate < horizon:
            break
    return None


def fire_key(schedule_id: str, fire_at: datetime) -> str:
    """The idempotency key of one fire: ``cron:<id>:<fire time UTC>`` (read back by
    ``fire_time_text``)."""
    return f"cron:{schedule_id}:{fire_at.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S')}" + (
        f".{fire_at.microsecond // 1000:03d}Z" if fire_at.microsecond else "Z"
    )


def fire_time_text(schedule_id: str | None, key: str | None) -> str | None:
    """The fire time that ``fire_key`` wrote into a run's idempotency key, as its text; None
    for a job that is not a run of ``schedule_id`` made by a fire."""
    prefix = f"cron:{schedule_id}:"
    if not schedule_id or key is None or not key.startswith(prefix):
        return None
    return key[len(prefix):]
