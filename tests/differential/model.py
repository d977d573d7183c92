"""A reference model of the Backend protocol: what ``monoq/core/backend.py`` promises, as plain
Python over dicts, with no indexes, no batching and no cleverness.

It is written from the protocol text (each method's docstring), not from a backend: where the
text leaves a choice to the backend (which of more than ``limit`` due jobs ``promote`` moves,
which of more than ``limit`` finished jobs ``purge`` deletes), the model answers how many and
the differential test lets the backends choose, then completes the step on all of them alike.
Lease tokens are the model's own (``m1``, ``m2``, ...); the test compares leases by the job they
lease.

Where a backend may apply a call in several atomic parts (an ``enqueue`` larger than Redis's
``batch_size``, which the differential test sets to 2; calls spanning queues, applied queue by
queue), the protocol promises the answers of the parts applied in turn, each seeing the ones
before it: that is how the model applies every call, one job, one item, one queue after the
other. What only a failure half-way could show (the parts before it stay) is pinned by
tests/redis.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

import attrs

from monoq.core.counters import MAX_BUCKETS, MINUTE, WAITS_KEPT, bucket_plan
from monoq.core.models import (
    EPOCH,
    OUTCOME_TO_ATTEMPT,
    TERMINAL_STATES,
    Attempt,
    AttemptOutcome,
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
    QueueStats,
    Schedule,
    ThroughputBucket,
    WorkerInfo,
    error_type_of,
)

BEAT_HORIZON: Final = timedelta(hours=24)
WAITING: Final = (JobState.SCHEDULED, JobState.RETRYING)


def _ms(delta: timedelta) -> int:
    return delta // timedelta(milliseconds=1)


class Model:
    """The protocol's state: jobs by id, idempotency keys, attempts, queues, counters."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.tokens: dict[str, str] = {}  # job id -> token of its current lease
        self.keys: dict[tuple[str, str], str] = {}  # (queue, idempotency key) -> job id
        self.attempt_records: dict[str, list[Attempt]] = {}
        self.known: set[str] = set()
        self.paused: set[str] = set()
        self.minutes: dict[tuple[int, str], list[int]] = {}  # (minute, queue) -> [c, f, d]
        self.waits: dict[str, list[int]] = {}  # queue -> first-attempt waits (ms), newest first
        self.beat_times: dict[str, datetime] = {}
        self.schedules: dict[str, Schedule] = {}
        self.workers: dict[str, tuple[WorkerInfo, datetime]] = {}  # id -> (info, listed until)
        self._minted = 0

    # -- producer ---------------------------------------------------------------------------

    def enqueue(self, jobs: Sequence[NewJob], *, now: datetime) -> list[Enqueued]:
        """Per job, in order: a stored id answers the stored job; else a key already held in
        the queue answers its job; else the job is stored, SCHEDULED when ``run_at > now``,
        else QUEUED with ``run_at = now``, and its queue is known from then on."""
        answers: list[Enqueued] = []
        for new in jobs:
            stored = self.jobs.get(new.id)
            if stored is None and new.idempotency_key is not None:
                owner = self.keys.get((new.queue, new.idempotency_key))
                stored = None if owner is None else self.jobs[owner]
            if stored is not None:
                answers.append(Enqueued(stored, created=False))
                continue
            later = new.run_at is not None and new.run_at > now
            job = Job(
                id=new.id,
                queue=new.queue,
                handler=new.handler,
                payload_json=new.payload_json,
                priority=new.priority,
                state=JobState.SCHEDULED if later else JobState.QUEUED,
                attempt=0,
                max_retries=new.max_retries,
                timeout=new.timeout,
                run_at=new.run_at if later and new.run_at is not None else now,
                created_at=now,
                idempotency_key=new.idempotency_key,
                schedule_id=new.schedule_id,
            )
            self.jobs[job.id] = job
            self.known.add(job.queue)
            if new.idempotency_key is not None:
                self.keys[(new.queue, new.idempotency_key)] = job.id
            answers.append(Enqueued(job, created=True))
        return answers

    # -- consumer ---------------------------------------------------------------------------

    def _mint(self) -> str:
        self._minted += 1
        return f"m{self._minted}"

    def claim(
        self,
        queues: Sequence[str],
        *,
        limit: int,
        lease_for: timedelta,
        worker_id: str,
        now: datetime,
    ) -> list[Lease]:
        """Queues in the order given, paused ones skipped, each by (priority, run_at, id)."""
        leases: list[Lease] = []
        expires = now + lease_for
        for queue in queues:
            if len(leases) >= limit:
                break
            if queue in self.paused:
                continue
            ready = sorted(
                (j for j in self.jobs.values() if j.queue == queue and j.state is JobState.QUEUED),
                key=lambda j: (j.priority, j.run_at, j.id),
            )
            for job in ready[: limit - len(leases)]:
                claimed = attrs.evolve(
                    job,
                    state=JobState.RUNNING,
                    attempt=job.attempt + 1,
                    started_at=now,
                    worker_id=worker_id,
                    lease_expires_at=expires,
                )
                self.jobs[job.id] = claimed
                token = self.tokens[job.id] = self._mint()
                self.attempt_records.setdefault(job.id, []).append(
                    Attempt(job_id=job.id, attempt=claimed.attempt, worker_id=worker_id,
                            started_at=now)
                )
                if claimed.attempt == 1:
                    wait = max(0, _ms(now - job.run_at))
                    self.waits[queue] = [wait, *self.waits.get(queue, [])][:WAITS_KEPT]
                leases.append(Lease(job=claimed, token=token, expires_at=expires))
        return leases

    def _holds(self, lease: Lease) -> Job | None:
        """The leased job when ``lease`` carries its current token (the job is RUNNING)."""
        job = self.jobs.get(lease.job.id)
        if job is None or job.state is not JobState.RUNNING:
            return None
        return job if self.tokens.get(job.id) == lease.token else None

    def extend(
        self, leases: Sequence[Lease], *, lease_for: timedelta, now: datetime
    ) -> list[LeaseStatus]:
        statuses: list[LeaseStatus] = []
        for lease in leases:
            job = self._holds(lease)
            if job is None:
                statuses.append(LeaseStatus.LOST)
                continue
            self.jobs[job.id] = attrs.evolve(job, lease_expires_at=now + lease_for)
            statuses.append(
                LeaseStatus.CANCEL_REQUESTED if job.cancel_requested else LeaseStatus.HELD
            )
        return statuses

    def finish(self, items: Sequence[Finish], *, now: datetime) -> list[bool]:
        """Each item fenced by its token. The job's ``error`` becomes the item's error for
        RETRY, DEAD and CANCELLED when the item has one (else it stays); COMPLETED and RELEASED
        leave it alone. The attempt record keeps what the worker reported."""
        applied: list[bool] = []
        for item in items:
            job = self._holds(item.lease)
            if job is None:
                applied.append(False)
                continue
            outcome = item.outcome
            if job.cancel_requested and outcome in (Outcome.RETRY, Outcome.DEAD,
                                                     Outcome.RELEASED):
                outcome = Outcome.CANCELLED
            error = job.error if item.error is None else str(item.error)
            cleared = attrs.evolve(job, worker_id=None, lease_expires_at=None)
            if outcome is Outcome.COMPLETED:
                after = attrs.evolve(cleared, state=JobState.COMPLETED,
                                     result_json=item.result_json, finished_at=now)
            elif outcome is Outcome.RETRY:
                assert item.retry_at is not None
                after = attrs.evolve(cleared, state=JobState.RETRYING, run_at=item.retry_at,
                                     error=error)
            elif outcome is Outcome.DEAD:
                after = attrs.evolve(cleared, state=JobState.DEAD, error=error, finished_at=now)
            elif outcome is Outcome.CANCELLED:
                after = attrs.evolve(cleared, state=JobState.CANCELLED, error=error,
                                     finished_at=now)
            else:
                after = attrs.evolve(cleared, state=JobState.QUEUED, attempt=job.attempt - 1)
            self.jobs[job.id] = after
            del self.tokens[job.id]
            records = self.attempt_records[job.id]
            err = item.error
            records[-1] = attrs.evolve(
                records[-1],
                finished_at=now,
                outcome=OUTCOME_TO_ATTEMPT[item.outcome],
                error_type=None if err is None else err.type,
                error_message=None if err is None else err.message,
                traceback=None if err is None else err.traceback,
            )
            counter = self.minutes.setdefault(((now - EPOCH) // MINUTE, job.queue), [0, 0, 0])
            counter[0] += outcome is Outcome.COMPLETED
            counter[1] += OUTCOME_TO_ATTEMPT[item.outcome] is AttemptOutcome.FAILED
            counter[2] += outcome is Outcome.DEAD
            applied.append(True)
        return applied

    def finish_and_claim(
        self,
        items: Sequence[Finish],
        queues: Sequence[str],
        *,
        limit: int,
        lease_for: timedelta,
        worker_id: str,
        now: datetime,
    ) -> tuple[list[bool], list[Lease]]:
        applied = self.finish(items, now=now)
        return applied, self.claim(queues, limit=limit, lease_for=lease_for,
                                   worker_id=worker_id, now=now)

    # -- scheduler --------------------------------------------------------------------------

    def due(self, now: datetime) -> list[str]:
        """The ids ``promote`` may move at ``now``."""
        return sorted(j.id for j in self.jobs.values() if j.state in WAITING and j.run_at <= now)

    def promote(self, *, now: datetime, limit: int) -> int:
        """How many move; the model moves them only when every due job moves (see
        ``promote_all``), as the protocol leaves the choice among more to the backend."""
        return max(0, min(limit, len(self.due(now))))

    def promote_all(self, now: datetime) -> int:
        due = self.due(now)
        for job_id in due:
            self.jobs[job_id] = attrs.evolve(self.jobs[job_id], state=JobState.QUEUED)
        return len(due)

    def next_wakeup(self, *, now: datetime) -> datetime | None:
        times = [j.run_at for j in self.jobs.values() if j.state in WAITING]
        times += [j.lease_expires_at for j in self.jobs.values()
                  if j.state is JobState.RUNNING and j.lease_expires_at is not None]
        return min(times, default=None)

    def expired_leases(self, *, now: datetime, limit: int) -> list[Lease]:
        expired = sorted(
            (j for j in self.jobs.values() if j.state is JobState.RUNNING
             and j.lease_expires_at is not None and j.lease_expires_at < now),
            key=lambda j: (j.lease_expires_at, j.id),
        )
        return [Lease(job=j, token=self.tokens[j.id], expires_at=j.lease_expires_at)
                for j in expired[: max(0, limit)] if j.lease_expires_at is not None]

    def purgeable(
        self,
        *,
        states: Collection[JobState],
        finished_before: datetime,
        queue: str | None = None,
    ) -> list[str]:
        """The ids ``purge`` may delete."""
        return sorted(
            j.id for j in self.jobs.values()
            if j.state in states and j.state in TERMINAL_STATES
            and j.finished_at is not None and j.finished_at < finished_before
            and (queue is None or j.queue == queue)
        )

    def delete(self, job_id: str) -> None:
        """Delete a job with its attempts and idempotency key."""
        job = self.jobs.pop(job_id)
        self.tokens.pop(job_id, None)
        self.attempt_records.pop(job_id, None)
        if job.idempotency_key is not None and self.keys.get(
            (job.queue, job.idempotency_key)
        ) == job_id:
            del self.keys[(job.queue, job.idempotency_key)]

    # -- inspection and admin ---------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        return [self.jobs.get(job_id) for job_id in job_ids]

    def attempts(self, job_id: str) -> list[Attempt]:
        return list(self.attempt_records.get(job_id, []))

    def list_jobs(self, query: JobQuery) -> Page:
        """Newest first (descending id), below the cursor; full pages (the protocol allows a
        backend short ones, which the test accepts only as the model's prefix)."""
        queue, states, handler, limit, cursor = (
            query.queue, query.states, query.handler, query.limit, query.cursor)
        schedule_id, error_type = query.schedule_id, query.error_type
        finished_after, finished_before = query.finished_after, query.finished_before
        window = finished_after is not None or finished_before is not None
        found = sorted(
            (
                j for j in self.jobs.values()
                if (cursor is None or j.id < cursor)
                and (queue is None or j.queue == queue)
                and (states is None or j.state in states)
                and (handler is None or j.handler == handler)
                and (schedule_id is None or j.schedule_id == schedule_id)
                and (error_type is None or error_type_of(j.error) == error_type)
                and (not window or (
                    j.finished_at is not None
                    and (finished_after is None or j.finished_at >= finished_after)
                    and (finished_before is None or j.finished_at < finished_before)
                ))
            ),
            key=lambda j: j.id,
            reverse=True,
        )
        if limit <= 0:
            return Page(jobs=[], next_cursor=None)
        page = found[:limit]
        return Page(jobs=page, next_cursor=page[-1].id if len(found) > limit else None)

    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """Each queue asked for once, in the order first asked (every known queue by name when
        None); unknown queues answer zero counts."""
        names = sorted(self.known) if queues is None else list(dict.fromkeys(queues))
        answers = []
        for name in names:
            counts = dict.fromkeys(JobState, 0)
            queued: list[datetime] = []
            for job in self.jobs.values():
                if job.queue == name:
                    counts[job.state] += 1
                    if job.state is JobState.QUEUED:
                        queued.append(job.run_at)
            answers.append(QueueStats(queue=name, counts=counts, paused=name in self.paused,
                                      oldest_queued_at=min(queued, default=None)))
        return answers

    def count_jobs(
        self,
        *,
        states: Collection[JobState],
        queue: str | None = None,
        finished_before: datetime | None = None,
    ) -> int:
        return sum(
            1 for j in self.jobs.values()
            if j.state in states and (queue is None or j.queue == queue)
            and (finished_before is None
                 or (j.finished_at is not None and j.finished_at < finished_before))
        )

    def throughput(
        self,
        *,
        since: datetime,
        until: datetime,
        bucket: timedelta,
        queue: str | None = None,
    ) -> list[ThroughputBucket]:
        first, count, per = bucket_plan(since, until, bucket)  # the protocol's rules, in core
        assert count <= MAX_BUCKETS
        answers = []
        for n in range(count):
            start = first + n * per
            sums = [0, 0, 0]
            for (minute, name), counter in self.minutes.items():
                if start <= minute < start + per and (queue is None or name == queue):
                    sums = [a + b for a, b in zip(sums, counter, strict=True)]
            answers.append(ThroughputBucket(start=EPOCH + start * MINUTE, completed=sums[0],
                                            failed=sums[1], dead=sums[2]))
        return answers

    def recent_waits(self, queue: str, *, limit: int = 500) -> list[float]:
        return [ms / 1000 for ms in self.waits.get(queue, [])[: max(0, min(limit, WAITS_KEPT))]]

    def beat(self, name: str, *, now: datetime) -> None:
        seen = self.beat_times.get(name)
        if seen is None or now > seen:
            self.beat_times[name] = now

    def beats(self, *, now: datetime | None = None) -> dict[str, datetime]:
        horizon = (datetime.now(UTC) if now is None else now) - BEAT_HORIZON
        return {name: at for name, at in sorted(self.beat_times.items()) if at >= horizon}

    def count_finished(
        self, *, since: datetime, queue: str | None = None
    ) -> dict[JobState, int]:
        counts = {s: 0 for s in JobState if s in TERMINAL_STATES}
        for job in self.jobs.values():
            if (job.state in TERMINAL_STATES and job.finished_at is not None
                    and job.finished_at >= since and (queue is None or job.queue == queue)):
                counts[job.state] += 1
        return counts

    def cancel(self, job_id: str, *, now: datetime) -> Job | None:
        job = self.jobs.get(job_id)
        if job is None:
            return None
        if job.state is JobState.RUNNING:
            job = attrs.evolve(job, cancel_requested=True)
        elif job.state not in TERMINAL_STATES:
            job = attrs.evolve(job, state=JobState.CANCELLED, finished_at=now)
        self.jobs[job_id] = job
        return job

    def requeue(self, job_ids: Sequence[str], *, now: datetime) -> list[str]:
        moved: list[str] = []
        for job_id in job_ids:
            job = self.jobs.get(job_id)
            if job is None or job.state not in (JobState.DEAD, JobState.CANCELLED):
                continue
            self.jobs[job_id] = attrs.evolve(
                job, state=JobState.QUEUED, attempt=0, run_at=now, error=None, result_json=None,
                finished_at=None, cancel_requested=False,
            )
            moved.append(job_id)
        return moved

    def set_paused(self, queue: str, paused: bool) -> None:
        self.known.add(queue)
        if paused:
            self.paused.add(queue)
        else:
            self.paused.discard(queue)

    # -- schedules --------------------------------------------------------------------------

    def put_schedule(self, schedule: Schedule) -> None:
        self.schedules[schedule.id] = schedule

    def get_schedule(self, schedule_id: str) -> Schedule | None:
        return self.schedules.get(schedule_id)

    def list_schedules(self) -> list[Schedule]:
        return [self.schedules[s] for s in sorted(self.schedules)]

    def delete_schedule(self, schedule_id: str) -> bool:
        return self.schedules.pop(schedule_id, None) is not None

    def advance_schedule(self, schedule_id: str, fire_at: datetime) -> bool:
        schedule = self.schedules.get(schedule_id)
        if schedule is None or (schedule.last_fire_at is not None
                                and schedule.last_fire_at >= fire_at):
            return False
        self.schedules[schedule_id] = attrs.evolve(schedule, last_fire_at=fire_at)
        return True

    def purge_schedule_runs(self, schedule_id: str, *, keep: int, limit: int = 1000) -> int:
        """Runs newest first: the first ``keep`` stay; of the rest, the newest ``limit``
        terminal ones go."""
        runs = sorted((j for j in self.jobs.values() if j.schedule_id == schedule_id),
                      key=lambda j: j.id, reverse=True)
        victims = [j.id for j in runs[max(0, keep):] if j.state in TERMINAL_STATES]
        victims = victims[: max(0, limit)]
        for job_id in victims:
            self.delete(job_id)
        return len(victims)

    # -- workers ----------------------------------------------------------------------------

    def report_worker(self, info: WorkerInfo, *, ttl: timedelta) -> None:
        """Listed while ``now <= last_seen + ttl``; a heartbeat forgets the workers whose
        listing ended before its ``last_seen``."""
        for worker_id, (_, until) in list(self.workers.items()):
            if until < info.last_seen:
                del self.workers[worker_id]
        self.workers[info.id] = (info, info.last_seen + ttl)

    def remove_worker(self, worker_id: str) -> None:
        self.workers.pop(worker_id, None)

    def list_workers(self, *, now: datetime) -> list[WorkerInfo]:
        return [info for _, (info, until) in sorted(self.workers.items()) if now <= until]
