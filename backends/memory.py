"""MemoryBackend: every job in this process's memory.

Fast and dependency-free, for tests and for trying monoq out. Its state dies with the process and
cannot be shared with another one, so every role (and every CLI command) must run in the same
process: ``capabilities.shared_across_processes`` is False and the supervisor refuses split roles.
Each method runs without awaiting in the middle, so on one event loop it is atomic.
"""

from __future__ import annotations

import bisect
import collections
import heapq
from collections import defaultdict, deque
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import anyio
import attrs

from monoq.core.audit import AuditEntry, AuditFilter, AuditPage, scan_page
from monoq.core.backend import Capabilities
from monoq.core.counters import (
    BEAT_HORIZON,
    COUNTER_RETENTION_MINUTES,
    WAITS_KEPT,
    Counts,
    bucket_plan,
    finish_counts,
    first_wait_ms,
    fold_minutes,
    minute_of,
)
from monoq.core.ids import new_token
from monoq.core.models import (
    BACKLOG_STATES,
    OUTCOME_TO_ATTEMPT,
    TERMINAL_STATES,
    WAITING_STATES,
    Attempt,
    AttemptOutcome,
    DepthLimits,
    Enqueued,
    Finish,
    Job,
    JobQuery,
    JobState,
    Lease,
    LeaseStatus,
    NewJob,
    Outcome,
    Page,
    Progress,
    QueueStats,
    Schedule,
    ThroughputBucket,
    WorkerInfo,
    to_ms,
    to_ms_ceil,
    utcnow,
)
from monoq.core.options import known_options
from monoq.core.rules import admitted, finish_outcome
from monoq.errors import QueueFull


class _Signal:
    """A broadcast wake-up: every waiter returns at the next ``fire``."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = anyio.Event()

    async def wait(self, timeout: float) -> None:
        event = self._event
        with anyio.move_on_after(max(timeout, 0.0)):
            await event.wait()


@attrs.define
class _Row:
    job: Job
    token: str | None = None


class MemoryBackend:
    """The in-process backend for ``memory://`` URLs."""

    capabilities = Capabilities(shared_across_processes=False, cross_process_wakeup=False)

    def __init__(self, url: str = "memory://", options: Mapping[str, Any] | None = None) -> None:
        known_options("memory://", options, ())
        self.url = url
        self._rows: dict[str, _Row] = {}
        # ready heap per queue: (priority, run_at, id); stale entries are skipped lazily
        self._ready: dict[str, list[tuple[int, datetime, str]]] = defaultdict(list)
        self._waiting: list[tuple[datetime, str]] = []  # (run_at, id) of scheduled/retrying
        self._keys: dict[tuple[str, str], str] = {}
        self._attempts: dict[str, list[Attempt]] = defaultdict(list)
        self._queues: set[str] = set()
        self._paused: set[str] = set()
        self._workers: dict[str, tuple[WorkerInfo, datetime]] = {}
        self._wake: dict[str, _Signal] = defaultdict(_Signal)
        self._changes = _Signal()
        self._schedules: dict[str, Schedule] = {}
        # throughput: epoch minute -> queue -> [completed, failed, dead]
        self._minutes: dict[int, dict[str, list[int]]] = {}
        self._waits: dict[str, deque[int]] = defaultdict(lambda: deque(maxlen=WAITS_KEPT))
        self._beats: dict[str, datetime] = {}
        self._audit: list[AuditEntry] = []  # by sort_key, oldest first

    # -- lifecycle ------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Nothing to open."""

    async def aclose(self) -> None:
        """Nothing to close; the jobs stay until the object is dropped."""

    async def ping(self) -> None:
        """Always reachable."""

    # -- producer -------------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob], *, now: datetime,
                      limits: DepthLimits | None = None) -> list[Enqueued]:
        """Store jobs; see ``Backend.enqueue``."""
        if limits is not None:
            self._check_depth(jobs, limits)
        answers: list[Enqueued] = []
        woken: set[str] = set()
        delayed = False
        for new in jobs:
            existing = self._rows.get(new.id)
            if existing is not None:  # the same job again (a retried call): answer what is stored
                answers.append(Enqueued(existing.job, created=False))
                continue
            if new.idempotency_key is not None:
                known = self._keys.get((new.queue, new.idempotency_key))
                if known is not None:
                    answers.append(Enqueued(self._rows[known].job, created=False))
                    continue
            job = admitted(new, now)
            later = job.state is JobState.SCHEDULED
            self._rows[job.id] = _Row(job)
            self._queues.add(job.queue)
            if new.idempotency_key is not None:
                self._keys[(new.queue, new.idempotency_key)] = job.id
            if later:
                heapq.heappush(self._waiting, (job.run_at, job.id))
                delayed = True
            else:
                heapq.heappush(self._ready[job.queue], (job.priority, job.run_at, job.id))
                woken.add(job.queue)
            answers.append(Enqueued(job, created=True))
        for queue in woken:
            self._wake[queue].fire()
        if delayed:
            self._changes.fire()
        return answers

    # -- consumer -------------------------------------------------------------------------------

    async def claim(
        self,
        queues: Sequence[str],
        *,
        limit: int,
        lease_for: timedelta,
        worker_id: str,
        now: datetime,
    ) -> list[Lease]:
        """Lease ready jobs; see ``Backend.claim``."""
        leases: list[Lease] = []
        expires = now + lease_for
        for queue in queues:
            if queue in self._paused:
                continue
            heap = self._ready.get(queue)
            while heap and len(leases) < limit:
                entry = heapq.heappop(heap)
                row = self._live(entry)
                if row is None:
                    continue  # stale heap entry
                job_id = row.job.id
                token = new_token()
                row.job = attrs.evolve(
                    row.job,
                    state=JobState.RUNNING,
                    attempt=row.job.attempt + 1,
                    started_at=now,
                    worker_id=worker_id,
                    lease_expires_at=expires,
                )
                row.token = token
                if row.job.attempt == 1:
                    self._waits[queue].appendleft(first_wait_ms(to_ms(row.job.run_at), to_ms(now)))
                self._attempts[job_id].append(
                    Attempt(
                        job_id=job_id, attempt=row.job.attempt, worker_id=worker_id, started_at=now
                    )
                )
                leases.append(Lease(job=row.job, token=token, expires_at=expires))
            if len(leases) >= limit:
                break
        if leases:
            self._changes.fire()
        return leases

    async def wait_for_jobs(self, queues: Sequence[str], *, timeout: float) -> None:
        """Wait for an enqueue, promotion or requeue into one of ``queues``."""
        if any(self._has_ready(q) for q in queues):
            return
        if len(queues) == 1:
            await self._wake[queues[0]].wait(timeout)
            return
        with anyio.move_on_after(max(timeout, 0.0)):
            async with anyio.create_task_group() as tg:

                async def one(queue: str) -> None:
                    await self._wake[queue].wait(timeout)
                    tg.cancel_scope.cancel()

                for queue in queues:
                    tg.start_soon(one, queue)

    def _has_ready(self, queue: str) -> bool:
        if queue in self._paused:
            return False
        heap = self._ready.get(queue)
        while heap:
            if self._live(heap[0]) is not None:
                return True
            heapq.heappop(heap)
        return False

    def _live(self, entry: tuple[int, datetime, str]) -> _Row | None:
        """The row of a ready-heap entry, or None if the entry is stale.

        An entry is stale once its job left QUEUED, and also when the job came back to QUEUED
        with another ``run_at`` (cancelled, then requeued): the old entry must not let it jump
        the line.
        """
        priority, run_at, job_id = entry
        row = self._rows.get(job_id)
        if row is None or row.job.state is not JobState.QUEUED:
            return None
        if (row.job.priority, row.job.run_at) != (priority, run_at):
            return None
        return row

    def _current(self, lease: Lease) -> _Row | None:
        row = self._rows.get(lease.job.id)
        if row is None or row.token is None or row.token != lease.token:
            return None
        return row

    async def extend(
        self, leases: Sequence[Lease], *, lease_for: timedelta, now: datetime
    ) -> list[LeaseStatus]:
        """Heartbeat; see ``Backend.extend``."""
        statuses: list[LeaseStatus] = []
        for lease in leases:
            row = self._current(lease)
            if row is None:
                statuses.append(LeaseStatus.LOST)
                continue
            row.job = attrs.evolve(row.job, lease_expires_at=now + lease_for)
            statuses.append(
                LeaseStatus.CANCEL_REQUESTED if row.job.cancel_requested
                else LeaseStatus.STACK_REQUESTED if row.job.stack_requested
                else LeaseStatus.HELD
            )
        return statuses

    def _check_depth(self, jobs: Sequence[NewJob], limits: DepthLimits) -> None:
        """Backpressure: raise QueueFull before anything is written (see Backend.enqueue)."""
        waiting: collections.Counter[str] = collections.Counter(
            row.job.queue for row in self._rows.values() if row.job.state in BACKLOG_STATES)
        for queue, (limit, n) in limits.per_queue(jobs).items():
            if waiting[queue] + n > limit:
                raise QueueFull(queue, waiting[queue], limit)
        total = sum(waiting.values())
        if limits.total and total + len(jobs) > limits.total:
            raise QueueFull(None, total, limits.total)

    async def request_stack(self, job_id: str, *, now: datetime) -> Job | None:
        """Ask the running handler's stack; see ``Backend.request_stack``."""
        row = self._rows.get(job_id)
        if row is None:
            return None
        if row.job.state is JobState.RUNNING:
            row.job = attrs.evolve(row.job, stack_requested=True)
        return row.job

    async def note_attempt(self, job_id: str, attempt: int, worker_id: str, traceback: str
                           ) -> bool:
        """Add a traceback to a closed attempt record; see ``Backend.note_attempt``."""
        records = self._attempts.get(job_id, [])
        for i in range(len(records) - 1, -1, -1):
            record = records[i]
            if record.attempt == attempt and record.worker_id == worker_id:
                if record.traceback is not None:
                    return False
                records[i] = attrs.evolve(record, traceback=traceback)
                return True
        return False

    async def put_stack(self, lease: Lease, stack: str, *, now: datetime) -> bool:
        """Store the worker's answer; see ``Backend.put_stack``."""
        row = self._current(lease)
        if row is None or row.job.state is not JobState.RUNNING:
            return False
        row.job = attrs.evolve(row.job, stack=stack, stack_at=now, stack_requested=False)
        return True

    async def report_progress(self, items: Sequence[Progress], *, now: datetime) -> list[bool]:
        """Store how far running jobs are, fenced by token; see ``Backend.report_progress``."""
        answers: list[bool] = []
        for item in items:
            row = self._current(item.lease)
            if row is None or row.job.state is not JobState.RUNNING:
                answers.append(False)
                continue
            row.job = attrs.evolve(row.job, progress=item.fraction,
                                   progress_message=item.message)
            answers.append(True)
        return answers

    async def finish_and_claim(
        self,
        items: Sequence[Finish],
        queues: Sequence[str],
        *,
        limit: int,
        lease_for: timedelta,
        worker_id: str,
        now: datetime,
    ) -> tuple[list[bool], list[Lease]]:
        """``finish`` then ``claim``, with nothing in between; see
        ``Backend.finish_and_claim``."""
        applied = await self.finish(items, now=now)
        leases = await self.claim(queues, limit=limit, lease_for=lease_for,
                                  worker_id=worker_id, now=now)
        return applied, leases

    async def finish(self, items: Sequence[Finish], *, now: datetime) -> list[bool]:
        """End runs, fenced by token; see ``Backend.finish``."""
        answers: list[bool] = []
        woken: set[str] = set()
        changed = False
        for item in items:
            row = self._current(item.lease)
            if row is None:
                answers.append(False)
                continue
            job = row.job
            outcome = item.outcome
            outcome = finish_outcome(outcome, job.cancel_requested)
            # A failed or cancelled run stores its error when it has one (else the last one
            # stays); a completed or released run leaves the job's error alone.
            error = job.error if item.error is None else str(item.error)
            common: dict[str, Any] = {"worker_id": None, "lease_expires_at": None,
                                      "stack_requested": False}
            if outcome is Outcome.COMPLETED:
                job = attrs.evolve(
                    job,
                    state=JobState.COMPLETED,
                    result_json=item.result_json,
                    finished_at=now,
                    **common,
                )
            elif outcome is Outcome.RETRY:
                retry_at = item.retry_at or now  # Finish guarantees it is set for RETRY
                job = attrs.evolve(
                    job, state=JobState.RETRYING, run_at=retry_at, error=error,
                    progress=None, progress_message=None, **common
                )
                heapq.heappush(self._waiting, (retry_at, job.id))
                changed = True
            elif outcome is Outcome.DEAD:
                job = attrs.evolve(job, state=JobState.DEAD, error=error, finished_at=now, **common)
            elif outcome is Outcome.CANCELLED:
                job = attrs.evolve(
                    job,
                    state=JobState.CANCELLED,
                    finished_at=now,
                    error=error,
                    **common,
                )
            else:  # RELEASED
                job = attrs.evolve(job, state=JobState.QUEUED, attempt=job.attempt - 1,
                                   progress=None, progress_message=None, **common)
                heapq.heappush(self._ready[job.queue], (job.priority, job.run_at, job.id))
                woken.add(job.queue)
            row.job = job
            row.token = None
            self._close_attempt(job.id, item, now)
            self._count(job.queue, now, finish_counts(item.outcome, outcome))
            answers.append(True)
        for queue in woken:
            self._wake[queue].fire()
        if changed:
            self._changes.fire()
        return answers

    def _count(self, queue: str, now: datetime, counts: Counts) -> None:
        if not any(counts):
            return
        minute = minute_of(now)
        per_queue = self._minutes.get(minute)
        if per_queue is None:
            # A new minute: drop the minutes past retention, so the dict stays bounded.
            horizon = minute - COUNTER_RETENTION_MINUTES
            for old in [m for m in self._minutes if m < horizon]:
                del self._minutes[old]
            per_queue = self._minutes[minute] = {}
        row = per_queue.setdefault(queue, [0, 0, 0])
        for i, n in enumerate(counts):
            row[i] += n

    def _close_attempt(self, job_id: str, item: Finish, now: datetime) -> None:
        records = self._attempts[job_id]
        if not records or records[-1].outcome is not AttemptOutcome.RUNNING:
            return
        err = item.error
        records[-1] = attrs.evolve(
            records[-1],
            finished_at=now,
            outcome=OUTCOME_TO_ATTEMPT[item.outcome],
            error_type=None if err is None else err.type,
            error_message=None if err is None else err.message,
            traceback=None if err is None else err.traceback,
        )

    # -- scheduler ------------------------------------------------------------------------------

    async def promote(self, *, now: datetime, limit: int) -> int:
        """Move due scheduled/retrying jobs to queued; see ``Backend.promote``."""
        moved = 0
        woken: set[str] = set()
        while self._waiting and moved < limit and self._waiting[0][0] <= now:
            run_at, job_id = heapq.heappop(self._waiting)
            row = self._rows.get(job_id)
            if row is None or row.job.state not in WAITING_STATES or row.job.run_at != run_at:
                continue
            row.job = attrs.evolve(row.job, state=JobState.QUEUED)
            heapq.heappush(self._ready[row.job.queue], (row.job.priority, run_at, job_id))
            woken.add(row.job.queue)
            moved += 1
        for queue in woken:
            self._wake[queue].fire()
        return moved

    async def next_wakeup(self, *, now: datetime) -> datetime | None:
        """Earliest due time or lease expiry; see ``Backend.next_wakeup``."""
        candidates: list[datetime] = []
        while self._waiting:
            run_at, job_id = self._waiting[0]
            row = self._rows.get(job_id)
            if row is not None and row.job.state in WAITING_STATES and row.job.run_at == run_at:
                candidates.append(run_at)
                break
            heapq.heappop(self._waiting)
        candidates.extend(
            row.job.lease_expires_at
            for row in self._rows.values()
            if row.job.state is JobState.RUNNING and row.job.lease_expires_at is not None
        )
        return min(candidates, default=None)

    async def wait_for_changes(self, *, timeout: float) -> None:
        """Wait for a delayed enqueue, a retry or a claim."""
        await self._changes.wait(timeout)

    async def expired_leases(self, *, now: datetime, limit: int) -> list[Lease]:
        """Running jobs whose lease ran out; see ``Backend.expired_leases``."""
        expired = sorted(
            (
                row
                for row in self._rows.values()
                if row.job.state is JobState.RUNNING
                and row.job.lease_expires_at is not None
                and row.job.lease_expires_at < now
                and row.token is not None
            ),
            key=lambda r: (r.job.lease_expires_at, r.job.id),
        )
        return [
            Lease(job=row.job, token=row.token, expires_at=row.job.lease_expires_at)
            for row in expired[: max(0, limit)]
            if row.token is not None and row.job.lease_expires_at is not None
        ]

    async def purge(
        self,
        *,
        states: Collection[JobState],
        finished_before: datetime,
        queue: str | None = None,
        limit: int = 1000,
    ) -> int:
        """Delete old finished jobs; see ``Backend.purge``."""
        wanted = set(states) & TERMINAL_STATES
        victims = [
            row.job
            for row in self._rows.values()
            if row.job.state in wanted
            and row.job.finished_at is not None
            and row.job.finished_at < finished_before
            and (queue is None or row.job.queue == queue)
        ][: max(0, limit)]
        for job in victims:
            self._forget(job.id)
        return len(victims)

    # -- inspection and admin -------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        """The job or None."""
        row = self._rows.get(job_id)
        return None if row is None else row.job

    async def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        """Several jobs, in the order asked."""
        return [await self.get(job_id) for job_id in job_ids]

    async def attempts(self, job_id: str) -> list[Attempt]:
        """Attempt records, oldest first."""
        return list(self._attempts.get(job_id, ()))

    async def list_jobs(self, query: JobQuery) -> Page:
        """Newest first with cursor (always full pages); see ``Backend.list_jobs``."""
        if query.empty:
            return Page(jobs=[], next_cursor=None)
        limit, cursor = query.limit, query.cursor
        matches: list[Job] = []
        for job_id in sorted(self._rows, reverse=True):
            if cursor is not None and job_id >= cursor:
                continue
            job = self._rows[job_id].job
            if not query.matches(job):
                continue
            matches.append(job)
            if len(matches) > limit:
                break
        page = matches[:limit]
        more = len(matches) > limit
        return Page(jobs=page, next_cursor=page[-1].id if more and page else None)

    async def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """Counts by state per queue."""
        # Each queue once, in the order first asked.
        names = sorted(self._queues | self._paused) if queues is None else list(
            dict.fromkeys(queues))
        counts: dict[str, dict[JobState, int]] = {
            name: dict.fromkeys(JobState, 0) for name in names
        }
        oldest: dict[str, datetime] = {}
        for row in self._rows.values():
            job = row.job
            per_queue = counts.get(job.queue)
            if per_queue is not None:
                per_queue[job.state] += 1
                if job.state is JobState.QUEUED:
                    seen = oldest.get(job.queue)
                    if seen is None or job.run_at < seen:
                        oldest[job.queue] = job.run_at
        return [
            QueueStats(
                queue=name,
                counts=counts[name],
                paused=name in self._paused,
                oldest_queued_at=oldest.get(name),
            )
            for name in names
        ]

    async def count_jobs(
        self,
        *,
        states: Collection[JobState],
        queue: str | None = None,
        finished_before: datetime | None = None,
    ) -> int:
        """Jobs in ``states`` (a walk of every job: memory has no indexes to keep); see
        ``Backend.count_jobs``."""
        wanted = set(states)
        return sum(
            1
            for row in self._rows.values()
            if row.job.state in wanted
            and (queue is None or row.job.queue == queue)
            and (
                finished_before is None
                or (row.job.finished_at is not None and row.job.finished_at < finished_before)
            )
        )

    async def throughput(
        self,
        *,
        since: datetime,
        until: datetime,
        bucket: timedelta,
        queue: str | None = None,
    ) -> list[ThroughputBucket]:
        """Sums of the per-minute counters; see ``Backend.throughput``."""
        first, count, per = bucket_plan(since, until, bucket)
        minutes: dict[int, Counts] = {}
        for minute, per_queue in self._minutes.items():
            rows = per_queue.values() if queue is None else [per_queue.get(queue, [0, 0, 0])]
            minutes[minute] = (
                sum(r[0] for r in rows),
                sum(r[1] for r in rows),
                sum(r[2] for r in rows),
            )
        return fold_minutes(first, count, per, minutes)

    async def recent_waits(self, queue: str, *, limit: int = 500) -> list[float]:
        """The queue's first-attempt waits, newest first; see ``Backend.recent_waits``."""
        ring = self._waits.get(queue)
        if ring is None or limit <= 0:
            return []
        return [ms / 1000 for ms in list(ring)[:limit]]

    async def beat(self, name: str, *, now: datetime) -> None:
        """Record a component's beat (the latest time wins); see ``Backend.beat``."""
        seen = self._beats.get(name)
        if seen is None or now > seen:
            self._beats[name] = now
        horizon = now - BEAT_HORIZON
        for old in [n for n, at in self._beats.items() if at < horizon]:
            del self._beats[old]

    async def beats(self, *, now: datetime | None = None) -> dict[str, datetime]:
        """Components that beat within 24 h of ``now``, by name; see ``Backend.beats``."""
        horizon = (utcnow() if now is None else now) - BEAT_HORIZON
        return {name: at for name, at in sorted(self._beats.items()) if at >= horizon}

    async def count_finished(
        self, *, since: datetime, queue: str | None = None
    ) -> dict[JobState, int]:
        """Jobs per terminal state finished at or after ``since`` (a scan of every job); see
        ``Backend.count_finished``."""
        counts = dict.fromkeys((s for s in JobState if s in TERMINAL_STATES), 0)
        for row in self._rows.values():
            job = row.job
            if (
                job.state in TERMINAL_STATES
                and job.finished_at is not None
                and job.finished_at >= since
                and (queue is None or job.queue == queue)
            ):
                counts[job.state] += 1
        return counts

    async def cancel(self, job_id: str, *, now: datetime) -> Job | None:
        """Cancel now, or request it of the running worker; see ``Backend.cancel``."""
        row = self._rows.get(job_id)
        if row is None:
            return None
        job = row.job
        if job.state is JobState.RUNNING:
            row.job = attrs.evolve(job, cancel_requested=True)
        elif job.state not in TERMINAL_STATES:
            row.job = attrs.evolve(job, state=JobState.CANCELLED, finished_at=now)
        return row.job

    async def requeue(self, job_ids: Sequence[str], *, now: datetime) -> list[str]:
        """Dead or cancelled jobs back to queued; see ``Backend.requeue``."""
        moved: list[str] = []
        for job_id in job_ids:
            row = self._rows.get(job_id)
            if row is None or row.job.state not in (JobState.DEAD, JobState.CANCELLED):
                continue
            row.job = attrs.evolve(
                row.job,
                state=JobState.QUEUED,
                attempt=0,
                run_at=now,
                error=None,
                result_json=None,
                finished_at=None,
                cancel_requested=False,
                progress=None,
                progress_message=None,
            )
            heapq.heappush(self._ready[row.job.queue], (row.job.priority, now, job_id))
            moved.append(job_id)
        for queue in {self._rows[job_id].job.queue for job_id in moved}:
            self._wake[queue].fire()
        return moved

    async def set_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume a queue."""
        if paused:
            self._paused.add(queue)
        else:
            self._paused.discard(queue)
            self._wake[queue].fire()
        self._queues.add(queue)

    # -- schedules ------------------------------------------------------------------------------

    async def put_schedule(self, schedule: Schedule) -> None:
        """Insert or replace a schedule."""
        self._schedules[schedule.id] = schedule
        self._changes.fire()

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        """The schedule or None."""
        return self._schedules.get(schedule_id)

    async def list_schedules(self) -> list[Schedule]:
        """Every schedule, by id."""
        return [self._schedules[key] for key in sorted(self._schedules)]

    async def delete_schedule(self, schedule_id: str) -> bool:
        """Delete a schedule; its runs stay."""
        return self._schedules.pop(schedule_id, None) is not None

    async def advance_schedule(self, schedule_id: str, fire_at: datetime) -> bool:
        """Move ``last_fire_at`` forward."""
        current = self._schedules.get(schedule_id)
        if current is None or (current.last_fire_at is not None
                               and current.last_fire_at >= fire_at):
            return False
        self._schedules[schedule_id] = attrs.evolve(current, last_fire_at=fire_at)
        return True

    async def purge_schedule_runs(self, schedule_id: str, *, keep: int, limit: int = 1000
                                  ) -> int:
        """Delete terminal runs beyond the newest ``keep``."""
        runs = sorted((job_id for job_id, row in self._rows.items()
                       if row.job.schedule_id == schedule_id), reverse=True)
        victims = [job_id for job_id in runs[max(0, keep):]
                   if self._rows[job_id].job.state in TERMINAL_STATES][: max(0, limit)]
        for job_id in victims:
            self._forget(job_id)
        return len(victims)

    def _forget(self, job_id: str) -> None:
        job = self._rows.pop(job_id).job
        self._attempts.pop(job_id, None)
        if job.idempotency_key is not None:
            self._keys.pop((job.queue, job.idempotency_key), None)

    # -- workers --------------------------------------------------------------------------------

    async def report_worker(self, info: WorkerInfo, *, ttl: timedelta) -> None:
        """Record a heartbeat, and forget the workers whose listing ended before it was taken
        (as the other backends do, so that dead workers do not pile up)."""
        for worker_id in [w for w, (_, until) in self._workers.items() if until < info.last_seen]:
            del self._workers[worker_id]
        self._workers[info.id] = (info, info.last_seen + ttl)

    async def remove_worker(self, worker_id: str) -> None:
        """Forget a worker."""
        self._workers.pop(worker_id, None)

    async def list_workers(self, *, now: datetime) -> list[WorkerInfo]:
        """Workers seen within their ttl."""
        return [info for wid, (info, until) in sorted(self._workers.items()) if until >= now]

    # -- audit log ------------------------------------------------------------------------------

    async def append_audit(self, entry: AuditEntry) -> None:
        """Keep the entry in ``(at, id)`` order; see ``Backend.append_audit``."""
        bisect.insort(self._audit, entry, key=lambda e: e.sort_key)

    async def list_audit(self, *, filters: AuditFilter | None = None, limit: int = 50,
                         cursor: str | None = None) -> AuditPage:
        """Entries newest first, filtered; see ``Backend.list_audit``."""
        entries = self._audit

        async def fetch(below: tuple[int, str] | None, n: int) -> list[AuditEntry]:
            end = len(entries) if below is None else bisect.bisect_left(
                entries, below, key=lambda e: e.sort_key)
            return entries[max(0, end - n):end][::-1]

        return await scan_page(fetch, filters, limit, cursor)

    async def purge_audit(self, *, before: datetime, limit: int = 1000) -> int:
        """Delete the oldest entries before ``before``; see ``Backend.purge_audit``."""
        if limit <= 0:
            return 0
        horizon = bisect.bisect_left(self._audit, (to_ms_ceil(before), ""),
                                     key=lambda e: e.sort_key)
        gone = min(horizon, limit)
        del self._audit[:gone]
        return gone
