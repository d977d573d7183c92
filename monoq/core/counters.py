"""The rules behind the dashboard data every backend keeps: throughput counters, first-attempt
waits and component beats. Pure functions and constants; the backends store, core decides.

Throughput is counted when a run ends, in the same atomic step as the state change, per queue
and per minute (epoch minutes: ``epoch_ms // 60000``). Larger buckets are sums of minutes, so
reading costs follow the number of minutes asked for, never the number of jobs stored. The Redis
scripts keep a copy of ``finish_counts`` and ``first_wait_ms``; the conformance suite pins all
three backends to the same answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Final

from monoq.core.models import (
    EPOCH,
    OUTCOME_TO_ATTEMPT,
    AttemptOutcome,
    Outcome,
    ThroughputBucket,
    from_ms,
)
from monoq.errors import ValidationError

MINUTE: Final = timedelta(minutes=1)
MINUTE_MS: Final = 60_000
DAY: Final = timedelta(days=1)
# Minute counters are kept at least this long (the contract promises 24 h; the extra hour lets
# a 24 h view whose first bucket started a little earlier still read whole).
COUNTER_RETENTION: Final = timedelta(hours=25)
COUNTER_RETENTION_MINUTES: Final = COUNTER_RETENTION // MINUTE
# The most buckets one throughput call may ask for (a week of one-minute buckets).
MAX_BUCKETS: Final = 7 * 24 * 60
# recent_waits keeps the waits of this many first attempts per queue.
WAITS_KEPT: Final = 1000
# beats answers the components that beat within this long.
BEAT_HORIZON: Final = timedelta(hours=24)

# (completed, failed, dead) added to a minute's counters by one ended run.
Counts = tuple[int, int, int]


def minute_of(when: datetime) -> int:
    """The epoch minute ``when`` falls in (floored, also before the epoch)."""
    return (when - EPOCH) // MINUTE


def finish_counts(reported: Outcome, applied: Outcome) -> Counts:
    """What one run ending adds to its minute's (completed, failed, dead) counters.

    ``reported`` is the outcome the worker (or the reaper) gave; ``applied`` is what the job
    became (a pending cancel turns RETRY and DEAD into CANCELLED). The attempt counts as
    completed or failed by how the run itself ended, like the attempt record; dead counts the
    jobs that became DEAD. Cancelled and released runs count nowhere.
    """
    attempt = OUTCOME_TO_ATTEMPT[reported]
    return (
        int(applied is Outcome.COMPLETED),
        int(attempt is AttemptOutcome.FAILED),
        int(applied is Outcome.DEAD),
    )


def first_wait_ms(run_at_ms: int, started_ms: int) -> int:
    """The wait recorded for a first attempt: from the due time to the claim, in ms.

    Never negative: a claim stamped before the due time (clocks of two hosts disagreeing)
    waited zero.
    """
    return max(0, started_ms - run_at_ms)


def bucket_plan(since: datetime, until: datetime, bucket: timedelta) -> tuple[int, int, int]:
    """Validate a throughput request; answer (first minute, bucket count, minutes per bucket).

    The first bucket starts at ``since`` floored to a multiple of ``bucket`` since the epoch;
    buckets follow while their start is before ``until``. ``bucket`` must be a whole number of
    minutes that divides a day; at most ``MAX_BUCKETS`` buckets. Raises ``ValidationError``.
    """
    for field, value in (("since", since), ("until", until)):
        if value.tzinfo is None:
            raise ValidationError(field, f"{value!r} has no timezone; use UTC")
    if bucket < MINUTE or bucket % MINUTE or DAY % bucket:
        raise ValidationError(
            "bucket", f"{bucket} is not a whole number of minutes (at least one) dividing a day"
        )
    per = bucket // MINUTE
    first = minute_of(since) // per * per
    end = minute_of(until)
    if from_ms(end * MINUTE_MS) < until:
        end += 1  # a bucket starting at the minute ``until`` falls in is before ``until``
    count = max(0, -(-(end - first) // per))
    if count > MAX_BUCKETS:
        raise ValidationError(
            "since", f"{count} buckets of {bucket} asked for; at most {MAX_BUCKETS} at a time"
        )
    return first, count, per


def fold_minutes(
    first: int, count: int, per: int, minutes: Mapping[int, Counts]
) -> list[ThroughputBucket]:
    """Sum per-minute counters into ``count`` buckets of ``per`` minutes from minute ``first``,
    oldest first, zeros included. Minutes outside the buckets are ignored."""
    sums = [[0, 0, 0] for _ in range(count)]
    last = first + count * per
    for minute, (completed, failed, dead) in minutes.items():
        if first <= minute < last:
            row = sums[(minute - first) // per]
            row[0] += completed
            row[1] += failed
            row[2] += dead
    return [
        ThroughputBucket(
            start=from_ms((first + i * per) * MINUTE_MS), completed=c, failed=f, dead=d
        )
        for i, (c, f, d) in enumerate(sums)
    ]
