"""Schedules as JSON: a request body parsed into a ``Schedule``, and a schedule's status and
runs presented for the API, the CLI and the dashboard.

Pure: no I/O. ``Client.build_schedule`` and ``Client.schedule_status`` call these with what
they read from the backend. croniter loads only when a schedule is checked or fired, so this
module imports ``monoq.core.cron`` inside the functions that need it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final

import attrs

from monoq.core.codec import json_encode
from monoq.core.models import (
    MAX_EVERY,
    MAX_RETRIES,
    MAX_TIMEOUT,
    MIN_EVERY,
    Job,
    MisfirePolicy,
    OverlapPolicy,
    Schedule,
    parse_priority,
    rfc3339,
    validate_name,
    validate_number,
)
from monoq.errors import SerializationError, ValidationError

SCHEDULE_FIELDS: Final = frozenset(
    {"id", "handler", "cron", "every", "timezone", "payload", "queue", "priority", "max_retries",
     "timeout", "enabled", "overlap", "misfire"}
)


def parse_schedule(data: Mapping[str, Any], *, base: Schedule | None = None,
                   queue: str, priority: int,
                   check_handler: Callable[[str], None] | None = None) -> Schedule:
    """A validated Schedule from a JSON body; with ``base``, a partial update of it.

    ``every`` takes seconds or a duration ("30s"); ``cron`` 5 fields or 6 with seconds
    first. ``queue`` and ``priority`` are the defaults of a new schedule; ``check_handler``
    raises when the handler named is not allowed. Raises ValidationError naming the schedule
    and the field.
    """
    from monoq.core.cron import validate_schedule
    from monoq.core.durations import parse_duration

    if not isinstance(data, Mapping):
        raise ValidationError("schedule", "must be a JSON object")
    unknown = set(data) - SCHEDULE_FIELDS
    if unknown:
        raise ValidationError(min(unknown),
                              f"unknown field; allowed: {', '.join(sorted(SCHEDULE_FIELDS))}")
    if base is not None and "id" in data and data["id"] != base.id:
        raise ValidationError("id", "a schedule's id cannot change")
    sid = data.get("id", base.id if base else None)
    if sid is None:
        raise ValidationError("id", "is required")
    validate_name("id", sid)
    values: dict[str, Any] = {} if base is None else attrs.asdict(base, recurse=False)
    values["id"] = sid
    for name in ("handler", "cron", "timezone", "queue"):
        if name in data:
            if data[name] is not None and not isinstance(data[name], str):
                raise ValidationError(name, "must be a string")
            values[name] = data[name]
    if "cron" in data and data["cron"] is not None and "every" not in data:
        values["every"] = None
    if "every" in data:
        every = data["every"]
        if isinstance(every, str):
            try:
                every = parse_duration(every)
            except ValueError:
                raise ValidationError("every", f"{every!r} is not a duration") from None
        if every is not None:
            every = validate_number("every", every, low=MIN_EVERY, high=MAX_EVERY)
            if "cron" not in data:
                values["cron"] = None
        values["every"] = every
    if "payload" in data:
        try:
            values["payload_json"] = json_encode(data["payload"])
        except SerializationError as exc:
            raise ValidationError("payload", str(exc)) from exc
    if "priority" in data:
        values["priority"] = parse_priority(data["priority"])
    if "max_retries" in data and data["max_retries"] is not None:
        retries = data["max_retries"]
        if isinstance(retries, bool) or not isinstance(retries, int) or not (
                0 <= retries <= MAX_RETRIES):
            raise ValidationError("max_retries", f"{retries!r} is not 0..{MAX_RETRIES}")
        values["max_retries"] = retries
    elif "max_retries" in data:
        values["max_retries"] = None
    if "timeout" in data:
        values["timeout"] = None if data["timeout"] is None else validate_number(
            "timeout", data["timeout"], low=0.001, high=MAX_TIMEOUT)
    if "enabled" in data:
        if not isinstance(data["enabled"], bool):
            raise ValidationError("enabled", "must be true or false")
        values["enabled"] = data["enabled"]
    for name, enum in (("overlap", OverlapPolicy), ("misfire", MisfirePolicy)):
        if name in data:
            try:
                values[name] = enum(data[name])
            except ValueError:
                allowed = ", ".join(e.value for e in enum)
                raise ValidationError(name, f"{data[name]!r} is not one of {allowed}") \
                    from None
    if "handler" not in values:
        raise ValidationError("handler", "is required")
    values.setdefault("queue", queue)
    values.setdefault("priority", priority)
    if check_handler is not None:
        check_handler(values["handler"])
    try:
        schedule = Schedule(**values)
    except TypeError as exc:
        raise ValidationError("schedule", str(exc)) from None
    return validate_schedule(schedule)


def schedule_status(schedule: Schedule, now: datetime, *, last_success: Job | None,
                    last_failure: Job | None, running: bool) -> dict[str, Any]:
    """The schedule's JSON form plus its next fire (None when disabled or none is found) and
    its last successful and failed runs (``run_to_dict``), and whether a run is unfinished."""
    from monoq.core.cron import next_fire

    data = schedule.to_dict()
    try:
        data["next_fire_at"] = rfc3339(next_fire(schedule, now)) if schedule.enabled \
            else None
    except ValueError:
        data["next_fire_at"] = None
    data["last_success"] = None if last_success is None else run_to_dict(last_success)
    data["last_failure"] = None if last_failure is None else run_to_dict(last_failure)
    data["running"] = running
    return data


def run_to_dict(job: Job) -> dict[str, Any]:
    """One schedule run for the API and CLI: job id, fire time, state, duration, and the run's
    result or error (an http run's result holds the status it got)."""
    from monoq.core.cron import fire_time_text  # croniter loads only where schedules are used

    duration = None
    if job.finished_at is not None and job.started_at is not None:
        duration = (job.finished_at - job.started_at).total_seconds()
    return {"job_id": job.id, "fire_time": fire_time_text(job.schedule_id, job.idempotency_key), "state": str(job.state),
            "attempt": job.attempt, "created_at": rfc3339(job.created_at),
            "finished_at": rfc3339(job.finished_at), "duration": duration,
            "result": job.result, "error": job.error}


__all__ = ["SCHEDULE_FIELDS", "parse_schedule", "run_to_dict", "schedule_status"]
