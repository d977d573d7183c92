"""The scheduler role: promote due jobs, reap expired leases, enforce retention.

It sleeps until the next thing comes due (the earliest delayed or retrying job, or lease expiry),
and the backend wakes it early when that moves earlier; there is no fixed tick. Every step is
safe with several schedulers running: promotion moves each job once, and a reaped lease is ended
with its own token, so exactly one scheduler wins.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Final

import anyio
import anyio.abc
import attrs

from monoq import metrics
from monoq.client import Client
from monoq.core.cron import fire_key, latest_fire, next_fire, validate_schedule
from monoq.core.models import (
    TERMINAL_STATES,
    ErrorInfo,
    Finish,
    JobQuery,
    JobState,
    MisfirePolicy,
    Outcome,
    OverlapPolicy,
    Schedule,
    rfc3339,
)
from monoq.core.retry import RetryPolicy
from monoq.errors import BackendError
from monoq.errors import ValidationError as MonoqValidationError

logger = logging.getLogger(__name__)

# Most fire times one pass catches up on for one schedule (a per-second schedule with a
# grace of 1000 s and more): older ones are missed.
_MAX_CATCH_UP: Final = 1000


def _default_retention() -> dict[JobState, timedelta]:
    return {
        JobState.COMPLETED: timedelta(days=1),
        JobState.DEAD: timedelta(days=30),
        JobState.CANCELLED: timedelta(days=30),
    }


@attrs.frozen
class SchedulerSettings:
    """How the scheduler runs; built from ``[scheduler]``, ``[retention]`` and ``[retry]``."""

    # The retry policy: the backoff after a failed attempt ([retry]).
    retry_policy: RetryPolicy = attrs.Factory(RetryPolicy)
    reap_margin: timedelta = timedelta(seconds=1)  # tolerate clock skew between hosts
    max_sleep: timedelta = timedelta(seconds=60)
    batch_size: int = 1000
    retention: Mapping[JobState, timedelta] = attrs.Factory(_default_retention)
    retention_interval: timedelta = timedelta(seconds=60)
    misfire_grace: timedelta = timedelta(seconds=5)
    runs_per_schedule: int = 10
    # How long audit log entries are kept ([audit] retention_seconds); None: forever.
    audit_retention: timedelta | None = timedelta(days=90)
    # The [[schedules]] of config.toml, synced at start; None leaves stored schedules alone.
    config_schedules: tuple[Schedule, ...] | None = None


@attrs.frozen
class TickReport:
    """What one pass did, and when the next one is due."""

    promoted: int
    reaped: int
    purged: int
    next_at: datetime
    fired: int = 0


@attrs.frozen
class SyncReport:
    """What a config sync changed, by schedule id."""

    added: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    disabled: tuple[str, ...] = ()


def _definition(schedule: Schedule) -> Schedule:
    """The schedule without its bookkeeping, to tell whether a definition changed."""
    return attrs.evolve(schedule, created_at=None, updated_at=None, last_fire_at=None)


def default_scheduler_id() -> str:
    """``<hostname>-<pid>``: what a scheduler calls itself unless told otherwise."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Scheduler:
    """Keeps time-based transitions happening for every queue of the backend.

    Each pass also records a beat named ``scheduler:<scheduler_id>`` (``Backend.beat``), so a
    dashboard can tell which schedulers are alive; ``scheduler_id`` defaults to
    ``<hostname>-<pid>``.
    """

    def __init__(
        self,
        client: Client,
        settings: SchedulerSettings | None = None,
        *,
        scheduler_id: str | None = None,
    ) -> None:
        self.client = client
        self.id = scheduler_id or default_scheduler_id()
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
        if self.settings.config_schedules is not None:
            while not self._stopping.is_set():
                try:
                    await self.sync(self.settings.config_schedules, self.clock())
                    break
                except BackendError as exc:
                    logger.warning("schedule sync failed (%s); retrying in %.1fs", exc, backoff)
                    with anyio.move_on_after(backoff):
                        await self._stopping.wait()
                    backoff = min(backoff * 2, 10.0)
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
        """One pass at ``now``: beat, promote, reap, fire schedules, maybe purge; answers when
        the next pass is due."""
        settings = self.settings
        await self._beat(now)
        promoted = 0
        while True:
            n = await self.backend.promote(now=now, limit=settings.batch_size)
            promoted += n
            if n < settings.batch_size:
                break
        reaped = await self._reap(now)
        schedules = await self.backend.list_schedules()
        fired = 0
        next_fires: list[datetime] = []
        for schedule in (s for s in schedules if s.enabled):
            try:
                did_fire, upcoming = await self._fire(schedule, now)
            except (ValueError, MonoqValidationError) as exc:
                logger.error("schedule %s is invalid and does not fire: %s", schedule.id, exc)
                continue
            fired += did_fire
            next_fires.append(upcoming)
        purged = 0
        if self._next_purge is None or now >= self._next_purge:
            purged = await self._purge(now, [s.id for s in schedules])
            self._next_purge = now + settings.retention_interval
        if promoted or reaped or fired:
            logger.debug("scheduler: promoted %d, reaped %d, fired %d", promoted, reaped, fired)
        next_at = await self._next_at(now)
        return TickReport(promoted, reaped, purged, min([next_at, *next_fires]), fired)

    async def _beat(self, now: datetime) -> None:
        """Tell the backend this scheduler is alive. A failure is logged and the pass goes on:
        a missing beat only shows on a dashboard, while the pass keeps jobs moving."""
        try:
            await self.backend.beat(f"scheduler:{self.id}", now=now)
        except BackendError as exc:
            logger.warning("scheduler %s: recording its beat failed: %s", self.id, exc)

    # -- schedules ------------------------------------------------------------------------------

    async def _fire(self, schedule: Schedule, now: datetime) -> tuple[int, datetime]:
        """Enqueue the schedule's due fires, if any; answers (runs enqueued, next fire time).

        Every fire time newer than ``last_fire_at`` (and not before the schedule was created)
        that is at most the misfire grace old fires, oldest first, each as its own run: a
        scheduler that could not reach the backend for a few seconds (a Redis restart, a
        failover) catches up on every fire time it missed, so a per-second schedule still
        fires once per second. Fire times older than the grace are missed: the latest of them
        runs only with ``misfire = once``, so long downtime yields at most one catch-up run.
        ``overlap = skip`` fires only the latest due time, and skips it while an earlier run
        is unfinished. Each fire uses the key ``cron:<id>:<fire time>``, so schedulers racing
        on the same fire enqueue one job; the job is enqueued before ``last_fire_at`` moves,
        so a scheduler that dies in between leaves the fire to the next one, which the key
        turns into the same job.
        """
        validate_schedule(schedule)
        upcoming = next_fire(schedule, now)
        due = latest_fire(schedule, now)
        if due is None:
            return 0, upcoming
        handled = schedule.last_fire_at
        if handled is None and schedule.created_at is not None:
            handled = schedule.created_at - timedelta(milliseconds=1)
        if handled is not None and due <= handled:
            return 0, upcoming
        grace = self.settings.misfire_grace
        if now - due > grace:  # missed, beyond the grace
            fire_times = [due] if schedule.misfire is MisfirePolicy.ONCE else []
            if not fire_times:
                logger.info("schedule %s: missed the fire of %s; misfire policy is skip",
                            schedule.id, rfc3339(due))
        elif schedule.overlap is OverlapPolicy.SKIP or handled is None:
            fire_times = [due]
        else:
            fire_times = self._missed_within_grace(schedule, handled, due, now - grace)
        fired = 0
        for at in fire_times:
            fired += await self._fire_one(schedule, at, late=now - at > grace)
            await self.backend.advance_schedule(schedule.id, at)
        if not fire_times:
            await self.backend.advance_schedule(schedule.id, due)
        return fired, upcoming

    @staticmethod
    def _missed_within_grace(schedule: Schedule, handled: datetime, due: datetime,
                             oldest: datetime) -> list[datetime]:
        """The fire times after ``handled`` and not before ``oldest``, up to ``due``, oldest
        first (at most ``_MAX_CATCH_UP``; older ones are the ones dropped)."""
        times: list[datetime] = []
        at = next_fire(schedule, max(handled, oldest - timedelta(milliseconds=1)))
        while at < due:
            times.append(at)
            at = next_fire(schedule, at)
        return [*times[-(_MAX_CATCH_UP - 1):], due]

    async def _fire_one(self, schedule: Schedule, due: datetime, *, late: bool) -> bool:
        """Enqueue the run of ``due`` (unless ``overlap = skip`` finds one unfinished); with
        tracing, inside the fire's span (a new trace: ``monoq.tracing``)."""
        tracing = self.client.tracing
        if tracing is None:
            return await self._fire_run(schedule, due, late=late) == "enqueued"
        with tracing.fire(schedule.id, due, late=late) as span:
            outcome = await self._fire_run(schedule, due, late=late)
            span.set_attribute("monoq.schedule.outcome", outcome)
            return outcome == "enqueued"

    async def _fire_run(self, schedule: Schedule, due: datetime, *, late: bool) -> str:
        """Enqueue the run of ``due``: "enqueued", "duplicate" (already fired, by another
        scheduler) or "skipped" (``overlap = skip`` found a run unfinished)."""
        if schedule.overlap is OverlapPolicy.SKIP:
            unfinished = await self.backend.list_jobs(JobQuery(
                schedule_id=schedule.id, states=set(JobState) - TERMINAL_STATES, limit=1))
            if unfinished.jobs:
                logger.info("schedule %s: skipping the fire of %s, run %s is unfinished",
                            schedule.id, rfc3339(due), unfinished.jobs[0].id)
                return "skipped"
        answer = await self.client.submit(
            schedule.handler, schedule.payload, queue=schedule.queue,
            priority=schedule.priority, max_retries=schedule.max_retries,
            timeout=schedule.timeout, idempotency_key=fire_key(schedule.id, due),
            schedule_id=schedule.id,
        )
        if answer.created:
            logger.info("schedule %s fired for %s%s: job %s", schedule.id, rfc3339(due),
                        " (late, catching up once)" if late else "", answer.job.id)
        return "enqueued" if answer.created else "duplicate"

    async def sync(self, wanted: tuple[Schedule, ...], now: datetime) -> SyncReport:
        """Make the stored schedules match the config's ``[[schedules]]``.

        New ones are added, changed ones updated (their fire history kept), and schedules that
        came from the config but are no longer in it are disabled, not deleted, so their runs
        stay visible. Schedules made over the API or CLI are left alone unless the config
        defines the same id, in which case the config takes it over.
        """
        stored = {s.id: s for s in await self.backend.list_schedules()}
        added: list[str] = []
        updated: list[str] = []
        disabled: list[str] = []
        for schedule in wanted:
            validate_schedule(schedule)
            current = stored.get(schedule.id)
            target = attrs.evolve(schedule, origin="config")
            if current is None:
                await self.backend.put_schedule(
                    attrs.evolve(target, created_at=now, updated_at=now, last_fire_at=None))
                added.append(schedule.id)
            elif _definition(current) != _definition(target):
                if current.origin != "config":
                    logger.warning("schedule %s: config.toml takes over a schedule made over "
                                   "the API", schedule.id)
                await self.backend.put_schedule(attrs.evolve(
                    target, created_at=current.created_at, updated_at=now,
                    last_fire_at=current.last_fire_at))
                updated.append(schedule.id)
        names = {s.id for s in wanted}
        for current in stored.values():
            if current.origin == "config" and current.id not in names and current.enabled:
                await self.backend.put_schedule(attrs.evolve(current, enabled=False,
                                                             updated_at=now))
                disabled.append(current.id)
        if added or updated or disabled:
            logger.info("schedules synced from config: added %s, updated %s, disabled %s",
                        added or "none", updated or "none", disabled or "none")
        return SyncReport(tuple(added), tuple(updated), tuple(disabled))

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
                retry_at = settings.retry_policy.next_retry_at(lease.job, now)
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

    async def _purge(self, now: datetime, schedule_ids: list[str]) -> int:
        purged = 0
        for schedule_id in schedule_ids:
            while True:
                n = await self.backend.purge_schedule_runs(
                    schedule_id, keep=self.settings.runs_per_schedule,
                    limit=self.settings.batch_size)
                purged += n
                if n < self.settings.batch_size:
                    break
        for state, keep in self.settings.retention.items():
            while True:
                n = await self.backend.purge(states={state}, finished_before=now - keep,
                                             limit=self.settings.batch_size)
                purged += n
                if n < self.settings.batch_size:
                    break
        if purged:
            logger.info("retention: deleted %d finished jobs", purged)
        if self.settings.audit_retention is not None:
            gone = 0
            while True:
                n = await self.backend.purge_audit(before=now - self.settings.audit_retention,
                                                   limit=self.settings.batch_size)
                gone += n
                if n < self.settings.batch_size:
                    break
            if gone:
                logger.info("retention: deleted %d audit log entries", gone)
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
