"""The scheduler role: promote due jobs, reap expired leases, enforce retention.

It sleeps until the next thing comes due (the earliest delayed or retrying job, or lease expiry),
and the backend wakes it early when that moves earlier; there is no fixed tick. Every step is
safe with several schedulers running: promotion moves each job once, and a reaped lease is ended
with its own token, so exactly one scheduler wins.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta

import anyio
import anyio.abc
import attrs

from monoq import metrics
from monoq.client import Client
from monoq.core.models import ErrorInfo, Finish, JobState, Outcome, rfc3339
from monoq.core.retry import RetryPolicy
from monoq.errors import BackendError

logger = logging.getLogger(__name__)


def _default_retention() -> dict[JobState, timedelta]:
    return {
        JobState.COMPLETED: timedelta(days=1),
        JobState.DEAD: timedelta(days=30),
        JobState.CANCELLED: timedelta(days=30),
    }


@attrs.frozen
class SchedulerSettings:
    """How the scheduler runs; built from ``[scheduler]``, ``[retention]`` and ``[retry]``."""

    retry: RetryPolicy = attrs.Factory(RetryPolicy)
    reap_margin: timedelta = timedelta(seconds=1)  # tolerate clock skew between hosts
    max_sleep: timedelta = timedelta(seconds=60)
    batch_size: int = 1000
    retention: Mapping[JobState, timedelta] = attrs.Factory(_default_retention)
    retention_interval: timedelta = timedelta(seconds=60)


@attrs.frozen
class TickReport:
    """What one pass did, and when the next one is due."""

    promoted: int
    reaped: int
    purged: int
    next_at: datetime


class Scheduler:
    """Keeps time-based transitions happening for every queue of the backend."""

    def __init__(self, client: Client, settings: SchedulerSettings | None = None) -> None:
        self.client = client
        self.backend = client.backend
        self.settings = settings or SchedulerSettings()
        self.clock = client.clock
        self._stopping = anyio.Event()
        self._sleep_scope: anyio.CancelScope | None = None
        self._next_purge: datetime | None = None

    def stop(self) -> None:
        """Finish the current pass and return from ``run``."""
        self._stopping.set()
        if self._sleep_scope is not None:
            self._sleep_scope.cancel()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        """Run passes until ``stop``; a backend outage is logged and retried with backoff."""
        logger.info("scheduler started")
        task_status.started()
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                report = await self.tick(self.clock())
                backoff = 0.1
                delay = (report.next_at - self.clock()).total_seconds()
            except BackendError as exc:
                logger.warning("scheduler pass failed (%s); retrying in %.1fs", exc, backoff)
                delay, backoff = backoff, min(backoff * 2, 10.0)
            with anyio.CancelScope() as scope:
                self._sleep_scope = scope
                if self._stopping.is_set():
                    break
                if delay > 0:
                    try:
                        await self.backend.wait_for_changes(timeout=delay)
                    except BackendError:
                        await anyio.sleep(min(delay, 1.0))
            self._sleep_scope = None
        logger.info("scheduler stopped")

    async def tick(self, now: datetime) -> TickReport:
        """One pass at ``now``: promote, reap, maybe purge; answers when the next is due."""
        settings = self.settings
        promoted = 0
        while True:
            n = await self.backend.promote(now=now, limit=settings.batch_size)
            promoted += n
            if n < settings.batch_size:
                break
        reaped = await self._reap(now)
        purged = 0
        if self._next_purge is None or now >= self._next_purge:
            purged = await self._purge(now)
            self._next_purge = now + settings.retention_interval
        if promoted or reaped:
            logger.debug("scheduler: promoted %d, reaped %d", promoted, reaped)
        return TickReport(promoted, reaped, purged, await self._next_at(now))

    async def _reap(self, now: datetime) -> int:
        """End every lease that expired more than the margin ago as a failed attempt."""
        settings = self.settings
        reaped = 0
        while True:
            expired = await self.backend.expired_leases(now=now - settings.reap_margin,
                                                        limit=settings.batch_size)
            if not expired:
                return reaped
            items = []
            for lease in expired:
                error = ErrorInfo(
                    "LeaseExpired",
                    f"worker {lease.job.worker_id} stopped renewing its lease, which expired at "
                    f"{rfc3339(lease.expires_at)}",
                )
                retry_at = settings.retry.next_retry_at(lease.job, now)
                if retry_at is None:
                    items.append(Finish(lease, Outcome.DEAD, error=error))
                else:
                    items.append(Finish(lease, Outcome.RETRY, error=error, retry_at=retry_at))
            applied = await self.backend.finish(items, now=now)
            for item, ok in zip(items, applied, strict=True):
                if ok:
                    reaped += 1
                    metrics.lease_reclaimed(item.lease.job.queue)
                    logger.warning("job %s: lease expired on attempt %d; %s", item.lease.job_id,
                                   item.lease.job.attempt,
                                   "dead" if item.outcome is Outcome.DEAD else "will retry")
            if len(expired) < settings.batch_size:
                return reaped

    async def _purge(self, now: datetime) -> int:
        purged = 0
        for state, keep in self.settings.retention.items():
            while True:
                n = await self.backend.purge(states={state}, finished_before=now - keep,
                                             limit=self.settings.batch_size)
                purged += n
                if n < self.settings.batch_size:
                    break
        if purged:
            logger.info("retention: deleted %d finished jobs", purged)
        return purged

    async def _next_at(self, now: datetime) -> datetime:
        settings = self.settings
        candidates = [now + settings.max_sleep]
        if self._next_purge is not None:
            candidates.append(self._next_purge)
        due = await self.backend.next_wakeup(now=now)
        if due is not None:
            # A lease expiry inside the margin is not reapable yet: look again after the margin.
            candidates.append(due if due > now else now + max(settings.reap_margin,
                                                              timedelta(milliseconds=10)))
        return min(candidates)
