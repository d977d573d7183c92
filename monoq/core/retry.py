"""The retry policy: when a job runs again after a failed attempt (exponential backoff,
capped, with optional jitter), or None when its retries are used up. Pure; no I/O.

This is the automatic retry ([retry] in the config, the RETRY outcome, the RETRYING state);
the operator's retry of a dead or cancelled job is a requeue (``Backend.requeue``), and
connection retries belong to the drivers (see docs/DESIGN.md §3,
"Four meanings of retry").
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import attrs

from monoq.core.models import Job


@attrs.frozen
class RetryPolicy:
    """``delay(n) = min(base * factor ** (n - 1), max)``, then +/- ``jitter`` of it at random.

    The defaults give 2 s, 4 s, 8 s; with ``max_retries = 3`` the fourth failure is dead.
    """

    base: float = 2.0
    factor: float = 2.0
    max: float = 3600.0
    jitter: float = 0.0  # fraction of the delay, 0 <= jitter <= 1

    def __attrs_post_init__(self) -> None:
        if self.base < 0 or self.max < 0:
            raise ValueError("retry delays must not be negative")
        if self.factor < 1:
            raise ValueError("retry factor must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("retry jitter must be between 0 and 1")

    def delay(self, attempt: int, rng: random.Random | None = None) -> timedelta:
        """The wait after failed attempt number ``attempt`` (1-based)."""
        exponent = max(attempt - 1, 0)
        try:
            seconds = min(self.base * self.factor**exponent, self.max)
        except OverflowError:
            seconds = self.max
        if self.jitter:
            spread = seconds * self.jitter
            seconds += (rng or random).uniform(-spread, spread)  # jitter, not security
        return timedelta(seconds=max(seconds, 0.0))

    def next_retry_at(
        self,
        job: Job,
        now: datetime,
        *,
        after: timedelta | None = None,
        rng: random.Random | None = None,
    ) -> datetime | None:
        """When to run ``job`` again after its current attempt failed, or None for dead.

        ``after`` (from ``Retry(after=...)``) replaces the backoff but not the retry budget.
        """
        if job.attempt > job.max_retries:
            return None
        return now + (after if after is not None else self.delay(job.attempt, rng))
