"""The dashboard rules every backend shares (monoq.core.counters and the model helpers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from monoq.core.counters import bucket_plan, finish_counts, first_wait_ms, fold_minutes, minute_of
from monoq.core.models import (
    ErrorInfo,
    JobState,
    Outcome,
    QueueStats,
    ThroughputBucket,
    error_type_of,
    to_ms_ceil,
)
from monoq.errors import ValidationError

T0 = datetime(2030, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@pytest.mark.parametrize(
    ("reported", "applied", "counts"),
    [
        (Outcome.COMPLETED, Outcome.COMPLETED, (1, 0, 0)),
        (Outcome.RETRY, Outcome.RETRY, (0, 1, 0)),
        (Outcome.DEAD, Outcome.DEAD, (0, 1, 1)),
        (Outcome.RETRY, Outcome.CANCELLED, (0, 1, 0)),  # failed, then the pending cancel won
        (Outcome.DEAD, Outcome.CANCELLED, (0, 1, 0)),
        (Outcome.CANCELLED, Outcome.CANCELLED, (0, 0, 0)),
        (Outcome.RELEASED, Outcome.RELEASED, (0, 0, 0)),
        (Outcome.RELEASED, Outcome.CANCELLED, (0, 0, 0)),
    ],
)
def test_finish_counts(reported: Outcome, applied: Outcome, counts: tuple[int, int, int]) -> None:
    assert finish_counts(reported, applied) == counts


def test_first_wait_is_never_negative() -> None:
    assert first_wait_ms(1000, 3500) == 2500
    assert first_wait_ms(5000, 3500) == 0


def test_minutes_are_floored_also_before_the_epoch() -> None:
    assert minute_of(datetime(1970, 1, 1, 0, 1, 59, tzinfo=UTC)) == 1
    assert minute_of(datetime(1969, 12, 31, 23, 59, 30, tzinfo=UTC)) == -1


def test_bucket_plan_aligns_and_counts() -> None:
    first, count, per = bucket_plan(T0 + timedelta(minutes=7), T0 + timedelta(minutes=21),
                                    timedelta(minutes=5))
    assert (first, count, per) == (minute_of(T0) + 5, 4, 5)  # 00:05, 00:10, 00:15, 00:20
    assert bucket_plan(T0, T0, MINUTE)[1] == 0
    assert bucket_plan(T0, T0 + timedelta(microseconds=1), MINUTE)[1] == 1


def test_bucket_plan_refuses_bad_input() -> None:
    with pytest.raises(ValidationError, match="bucket"):
        bucket_plan(T0, T0 + MINUTE, timedelta(minutes=11))
    with pytest.raises(ValidationError, match="since"):
        bucket_plan(T0.replace(tzinfo=None), T0 + MINUTE, MINUTE)


def test_fold_minutes_sums_and_fills_with_zeros() -> None:
    first = minute_of(T0)
    folded = fold_minutes(first, 3, 2, {first: (1, 0, 0), first + 1: (2, 1, 1),
                                        first + 5: (0, 4, 0), first + 6: (9, 9, 9),
                                        first - 1: (9, 9, 9)})
    assert folded == [
        ThroughputBucket(T0, 3, 1, 1),
        ThroughputBucket(T0 + 2 * MINUTE),
        ThroughputBucket(T0 + 4 * MINUTE, 0, 4, 0),
    ]
    assert folded[0].to_dict() == {"start": "2030-01-01T00:00:00.000Z", "completed": 3,
                                   "failed": 1, "dead": 1}


def test_error_type_is_the_text_before_the_first_separator() -> None:
    assert error_type_of(str(ErrorInfo("ValueError", "bad: input"))) == "ValueError"
    assert error_type_of(str(ErrorInfo("KeyError", ""))) == "KeyError"
    assert error_type_of(None) is None


def test_ceiling_milliseconds() -> None:
    assert to_ms_ceil(T0 + timedelta(microseconds=1)) == to_ms_ceil(T0) + 1
    assert to_ms_ceil(T0 + timedelta(milliseconds=2)) == to_ms_ceil(T0) + 2


def test_queue_stats_json_has_the_oldest_queued_time() -> None:
    stats = QueueStats(queue="q", counts={JobState.QUEUED: 1})
    assert stats.to_dict()["oldest_queued_at"] is None
    stats = QueueStats(queue="q", counts={}, oldest_queued_at=T0)
    assert stats.to_dict()["oldest_queued_at"] == "2030-01-01T00:00:00.000Z"
