"""Retry policy: the backoff users see between attempts."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from monoq.core.models import Job, JobState
from monoq.core.retry import RetryPolicy

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def job(attempt: int, max_retries: int = 3) -> Job:
    return Job(id="01J", queue="default", handler="echo", payload_json=b"null", priority=5,
               state=JobState.RUNNING, attempt=attempt, max_retries=max_retries, timeout=300,
               run_at=T0, created_at=T0)


def test_defaults_wait_2_4_8_seconds_then_dead() -> None:
    policy = RetryPolicy()
    waits = [policy.next_retry_at(job(n), T0) for n in (1, 2, 3)]
    assert waits == [T0 + timedelta(seconds=s) for s in (2, 4, 8)]
    assert policy.next_retry_at(job(4), T0) is None


def test_cap_applies_to_long_backoffs() -> None:
    policy = RetryPolicy(base=10, factor=10, max=60)
    assert policy.delay(1) == timedelta(seconds=10)
    assert policy.delay(2) == timedelta(seconds=60)
    assert policy.delay(5000) == timedelta(seconds=60)  # no overflow


def test_jitter_stays_within_its_fraction() -> None:
    policy = RetryPolicy(base=10, jitter=0.2)
    rng = random.Random(7)
    delays = [policy.delay(1, rng).total_seconds() for _ in range(200)]
    assert min(delays) >= 8
    assert max(delays) <= 12
    assert len(set(delays)) > 100  # really spread


def test_retry_after_overrides_the_backoff_not_the_budget() -> None:
    policy = RetryPolicy()
    assert policy.next_retry_at(job(1), T0, after=timedelta(minutes=5)) == T0 + timedelta(
        minutes=5)
    assert policy.next_retry_at(job(4), T0, after=timedelta(seconds=1)) is None


def test_zero_retries_means_first_failure_is_dead() -> None:
    assert RetryPolicy().next_retry_at(job(1, max_retries=0), T0) is None


@pytest.mark.parametrize("kwargs", [{"base": -1}, {"factor": 0.5}, {"jitter": 1.5}])
def test_bad_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="retry"):
        RetryPolicy(**kwargs)
