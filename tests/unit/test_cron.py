"""Fire times: cron in a timezone (DST included) and fixed intervals, with a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from monoq.core.cron import (
    check_cron,
    fire_key,
    fire_time_text,
    latest_fire,
    next_fire,
    validate_schedule,
)
from monoq.core.models import Schedule
from monoq.errors import ValidationError


def cron(expr: str, tz: str = "UTC") -> Schedule:
    return Schedule(id="s", handler="echo", cron=expr, timezone=tz)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[arg-type,misc]


def test_five_fields_in_utc() -> None:
    s = cron("0 3 * * *")
    assert next_fire(s, utc(2030, 1, 1, 2, 59)) == utc(2030, 1, 1, 3)
    assert next_fire(s, utc(2030, 1, 1, 3)) == utc(2030, 1, 2, 3)  # strictly after
    assert latest_fire(s, utc(2030, 1, 1, 3)) == utc(2030, 1, 1, 3)  # at or before
    assert latest_fire(s, utc(2030, 1, 1, 2, 59)) == utc(2029, 12, 31, 3)


def test_six_fields_have_seconds_first() -> None:
    s = cron("*/10 * * * * *")
    assert next_fire(s, utc(2030, 1, 1, 0, 0, 10)) == utc(2030, 1, 1, 0, 0, 20)
    assert latest_fire(s, utc(2030, 1, 1, 0, 0, 19)) == utc(2030, 1, 1, 0, 0, 10)


def test_timezone_shifts_the_wall_clock() -> None:
    s = cron("0 9 * * *", "Asia/Tokyo")  # UTC+9, no DST
    assert next_fire(s, utc(2030, 5, 31, 23)) == utc(2030, 6, 1, 0)
    assert next_fire(s, utc(2030, 6, 1, 0)) == utc(2030, 6, 2, 0)


def test_a_time_in_the_spring_gap_fires_once_at_the_transition() -> None:
    # New York 2030-03-10: 02:00 EST jumps to 03:00 EDT (07:00 UTC); 02:30 does not exist.
    s = cron("30 2 * * *", "America/New_York")
    fires = [next_fire(s, utc(2030, 3, 9, 12))]
    for _ in range(2):
        fires.append(next_fire(s, fires[-1]))
    assert fires == [utc(2030, 3, 10, 7), utc(2030, 3, 11, 6, 30), utc(2030, 3, 12, 6, 30)]


def test_every_minute_through_the_gap_has_no_duplicate_fire() -> None:
    s = cron("* * * * *", "America/New_York")
    t = utc(2030, 3, 10, 6, 58)
    fires = []
    for _ in range(4):
        t = next_fire(s, t)
        fires.append(t)
    assert fires == [utc(2030, 3, 10, 6, 59), utc(2030, 3, 10, 7), utc(2030, 3, 10, 7, 1),
                     utc(2030, 3, 10, 7, 2)]


def test_a_time_that_happens_twice_fires_once() -> None:
    # New York 2030-11-03: 01:30 happens at 05:30 UTC (EDT) and again at 06:30 UTC (EST).
    s = cron("30 1 * * *", "America/New_York")
    first = next_fire(s, utc(2030, 11, 2, 12))
    assert first == utc(2030, 11, 3, 5, 30)
    assert next_fire(s, first) == utc(2030, 11, 4, 6, 30)
    # a scheduler looking during the repeated hour does not see a second 01:30
    assert latest_fire(s, utc(2030, 11, 3, 6, 45)) == utc(2030, 11, 3, 5, 30)


def test_intervals_align_to_the_epoch_so_every_process_agrees() -> None:
    s = Schedule(id="s", handler="echo", every=30)
    assert latest_fire(s, utc(2030, 1, 1, 0, 0, 44)) == utc(2030, 1, 1, 0, 0, 30)
    assert next_fire(s, utc(2030, 1, 1, 0, 0, 30)) == utc(2030, 1, 1, 0, 1)
    ms = Schedule(id="s", handler="echo", every=0.25)
    assert next_fire(ms, utc(2030, 1, 1)) == utc(2030, 1, 1) + timedelta(milliseconds=250)


def test_fire_keys_name_the_schedule_and_the_utc_time() -> None:
    assert fire_key("nightly", utc(2030, 1, 1, 3)) == "cron:nightly:2030-01-01T03:00:00Z"
    assert fire_key("t", utc(2030, 1, 1) + timedelta(milliseconds=250)) == (
        "cron:t:2030-01-01T00:00:00.250Z")


@pytest.mark.parametrize("expr", ["61 * * * *", "* * *", "* * * * * * *", "every day", ""])
def test_bad_cron_expressions_are_refused(expr: str) -> None:
    with pytest.raises(ValueError, match=r"cron|fields"):
        check_cron(expr)


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"cron": "61 * * * *"}, "cron"), ({"timezone": "Mars/Olympus"}, "timezone"),
     ({"cron": None}, "cron and every"), ({"every": 0.0}, "cron and every"),
     ({"handler": "bad name"}, "handler")],
)
def test_invalid_schedules_name_the_schedule_and_field(changes: dict[str, object],
                                                       field: str) -> None:
    import attrs

    schedule = attrs.evolve(cron("0 3 * * *"), **changes)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="schedule 's'") as err:
        validate_schedule(schedule)
    assert field in str(err.value)


def test_the_fire_time_written_into_a_runs_key_is_read_back() -> None:
    at = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    key = fire_key("nightly", at)
    assert fire_time_text("nightly", key) == "2030-01-02T03:04:05.678Z"
    assert fire_time_text("nightly", fire_key("nightly", at.replace(microsecond=0))) == (
        "2030-01-02T03:04:05Z")
    assert fire_time_text("other", key) is None  # another schedule's key
    assert fire_time_text(None, key) is None  # a job enqueued by hand
    assert fire_time_text("nightly", None) is None
