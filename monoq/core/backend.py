"""The Backend protocol: the storage contract every backend implements.

Backends are storage state machines; policy (retry backoff, lease length, what to reap) lives in
core and the roles. Every method that depends on time takes ``now`` (aware UTC, millisecond
precision), so the conformance suite never sleeps; the times of jobs, leases, attempts and
workers are whole milliseconds (callers pass them so), a ``Schedule``'s are kept as given.

Every state change is one atomic step in the backend (one transaction, one Lua script): a call
is applied entirely or not at all, and no reader sees it half-way. The exceptions are named
where they apply: an ``enqueue`` of more jobs than a backend writes in one step, and calls that
change jobs of several queues (``extend``, ``finish``, ``promote``, ``purge``, ``requeue``),
which a backend may apply queue by queue, each queue's part one atomic step, one after the other
(answers are then those of the parts in turn; a failure half-way leaves the parts before it
applied), and ``purge_schedule_runs``, which may walk a schedule's runs in bounded steps. Expected outcomes are return values (``created=False``, ``False`` for a stale token),
not exceptions; driver errors surface as ``BackendUnavailable`` (transient) or ``BackendError``
and never as the driver's own classes.

A ``limit`` of zero or less always means none (nothing claimed, moved, deleted or answered).

Ordering: jobs are claimed by ``(priority, run_at, id)``; ``run_at`` of a job queued at once is its
enqueue time, so within a priority claims are FIFO.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

import attrs

from monoq.core.audit import AuditEntry, AuditFilter, AuditPage
from monoq.core.models import (
    Attempt,
    DepthLimits,
    Enqueued,
    Finish,
    Job,
    JobQuery,
    JobState,
    Lease,
    LeaseStatus,
    NewJob,
    Page,
    Progress,
    QueueStats,
    Schedule,
    ThroughputBucket,
    WorkerInfo,
)


@attrs.frozen
class Capabilities:
    """What a backend can do beyond the common contract.

    The conformance suite (``monoq.testing``) runs the tests of a capability only on backends
    that declare it, so a flag set to True is a promise the suite checks.
    """

    # False for memory://: its state lives in one process, so roles and CLI commands in other
    # processes cannot reach it. True: another instance built from the same URL and options
    # (in this process or another) sees the same jobs, and its enqueue wakes this instance's
    # ``wait_for_jobs``, and its delayed enqueue (an earlier due time) this instance's
    # ``wait_for_changes`` (polling allowed: within the backend's poll interval, not the
    # caller's ``timeout``).
    shared_across_processes: bool
    # True when such wake-ups from other instances arrive without polling (within about a
    # network round trip): ``wait_for_jobs`` on an enqueue, ``wait_for_changes`` on a delayed
    # enqueue (even to a queue unknown when the wait began) and on a ``put_schedule``. Implies
    # ``shared_across_processes``.
    cross_process_wakeup: bool = False
    # True when the backend's work is done by a server outside this process (Redis): while a
    # call is in flight this process's CPU is free, so a worker keeps two outcome calls in
    # flight (see monoq.worker). False when the calls run in this process (memory; SQLite's
    # writer thread, where two smaller transactions cost more than one). A performance hint:
    # it changes nothing the contract states, so the suite has nothing to check for it.
    served_out_of_process: bool = False


DoctorCheck = tuple[str, str, str]
"""One finding of ``Doctor.doctor``: ``(check, level, message)``, level ``ok``, ``warn`` or
``error``."""


@runtime_checkable
class ServerTime(Protocol):
    """Optional: a backend whose storage has a clock of its own (Redis ``TIME``).

    Roles spread over hosts whose clocks drift then agree on lease deadlines, retry times and
    cron fires: the supervisor and ``monoq.connect`` measure this host's offset to it
    (``core.clock.ServerClock``) and take ``now`` from there. A backend without one is read on
    the local clock. Test with ``isinstance(backend, ServerTime)``.
    """

    async def server_now(self) -> datetime:
        """The storage's current time: aware UTC, truncated to whole milliseconds. Reads only;
        raises ``BackendUnavailable`` or ``BackendError`` like any call."""
        ...


@runtime_checkable
class Doctor(Protocol):
    """Optional: a backend that can check how its storage is set up for monoq.

    ``monoq doctor`` lists the findings, and the supervisor logs the ``warn`` and ``error``
    ones at start (an ``error`` does not stop it). Test with ``isinstance(backend, Doctor)``.
    """

    async def doctor(self) -> list[DoctorCheck]:
        """Findings about the connected storage's settings (e.g. an eviction policy that can
        drop jobs, no persistence), each ``(check, level, message)``: ``check`` a dotted name
        (``"redis.maxmemory-policy"``), ``level`` one of ``ok``, ``warn`` or ``error``,
        ``message`` a sentence for the operator. Reads only, changes nothing; raises
        ``BackendError`` (or ``BackendUnavailable``) when the storage cannot be asked."""
        ...


@attrs.frozen
class MemoryReport:
    """What ``MemoryUse.memory_use`` answers: the storage's memory in bytes, and an estimate
    per queue."""

    used_bytes: int  # what the storage uses in all (Redis ``used_memory``; summed on a cluster)
    max_bytes: int  # its limit (Redis ``maxmemory``), 0 when it has none
    queues: Mapping[str, int]  # estimated bytes of each known queue's jobs and indexes
    taken_at: datetime  # when it was measured (a report may be reused for a few seconds)


@runtime_checkable
class MemoryUse(Protocol):
    """Optional: a backend whose storage has a memory limit worth watching (Redis).

    The API's ``/metrics`` exports the report as ``monoq_queue_memory_bytes{queue}``,
    ``monoq_backend_memory_used_bytes`` and ``monoq_backend_memory_max_bytes``, so that an
    operator sees a queue filling memory before the storage refuses writes. Test with
    ``isinstance(backend, MemoryUse)``.
    """

    async def memory_use(self) -> MemoryReport:
        """The storage's memory and an estimate per known queue. Bounded work whatever the
        number of jobs (sampling, never a walk of every job): the cost grows with the number
        of queues only. A backend may answer the report it took within the last few seconds
        (``taken_at`` says when), so that frequent scrapes cost nothing more. Reads only;
        raises ``BackendUnavailable`` or ``BackendError`` like any call."""
        ...


@runtime_checkable
class Backend(Protocol):
    """Storage for jobs, leases, attempts and queue flags."""

    url: str
    capabilities: Capabilities

    async def connect(self) -> None:
        """Open connections and create or migrate the schema. Idempotent."""
        ...

    async def aclose(self) -> None:
        """Release every resource. Safe to call twice or without ``connect``."""
        ...

    async def ping(self) -> None:
        """Return if the storage answers; raise ``BackendUnavailable`` otherwise."""
        ...

    # -- producer -----------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob], *, now: datetime,
                      limits: DepthLimits | None = None) -> list[Enqueued]:
        """Store ``jobs`` in one atomic step (all or nothing) and answer one ``Enqueued`` each.

        With ``limits`` (backpressure), the call first counts the waiting jobs (queued,
        scheduled, retrying) of each limited queue among ``jobs``; if that count plus the
        batch's jobs for the queue would pass the queue's limit, it raises ``QueueFull`` and
        writes nothing (the whole batch is refused, even jobs an idempotency key would have
        answered). The per-queue check is part of the atomic step. ``limits.total`` (all queues
        together) is checked the same way on one server; Redis checks it just before the step
        (it spans every queue's slot), so concurrent calls may pass it by a batch each.

        A job is SCHEDULED when ``run_at > now``, else QUEUED with ``run_at = now``.
        ``created_at = now``, ``attempt = 0``; ``trace_context`` is stored as given. A job
        whose id is already stored, in whatever queue (a caller retrying a call whose answer
        it lost), is answered with the stored job and ``created=False``, whatever its key. Else, when ``idempotency_key`` matches a job of
        the same queue that has not been purged, nothing is written for it and the answer
        carries that original job with ``created=False``. Jobs of one batch are taken in order,
        each seeing the ones before it: of two with the same id, or the same key in one queue,
        the first is stored and the second answered with it. A queue becomes known (see
        ``stats``) when a job is stored in it. Idle ``wait_for_jobs`` callers on the job's
        queue are woken.

        A batch larger than what a backend writes in one step (Redis: its ``batch_size``
        option, 1000 by default; memory and SQLite have no such size) is written in parts of
        that size, in order, each one atomic step; the answers are the same as for one step.
        If such a call raises, a first few parts may be stored (each one whole) and the others
        not; calling again with the same jobs is safe and completes it: the stored ones are
        answered with ``created=False``.
        On Redis Cluster a batch is one atomic step per hash slot (queue) among its jobs; a
        failure may leave some queues' jobs stored and not others', and calling again completes
        it.
        """
        ...

    # -- consumer -----------------------------------------------------------------------------

    async def claim(
        self,
        queues: Sequence[str],
        *,
        limit: int,
        lease_for: timedelta,
        worker_id: str,
        now: datetime,
    ) -> list[Lease]:
        """Lease up to ``limit`` QUEUED jobs from ``queues`` in one atomic step.

        Queues are tried in the order given (the worker rotates it for fairness; a name given
        twice counts once); paused queues are skipped; within a queue, jobs go by
        ``(priority, run_at, id)``; the leases are answered in the order claimed. The step is
        one however many queues are given (on Redis Cluster: one step per hash slot, tried in
        order). Each claimed job becomes
        RUNNING with ``attempt += 1`` (counted here, so a job that kills its worker still uses up
        its retries), ``started_at = now``, ``worker_id``, a fresh token and
        ``expires_at = now + lease_for``; an attempt record is opened. Never blocks.

        A claim that makes a job's first attempt (``attempt`` becomes 1) also records, in the
        same step, its wait ``now - run_at`` (never negative) in the queue's ring of waits (see
        ``recent_waits``).
        """
        ...

    async def wait_for_jobs(self, queues: Sequence[str], *, timeout: float) -> None:
        """Return when a job may have become ready in one of ``queues``, or after ``timeout`` s.

        Returning early without new work is allowed; callers claim and wait again.
        """
        ...

    async def extend(
        self, leases: Sequence[Lease], *, lease_for: timedelta, now: datetime
    ) -> list[LeaseStatus]:
        """Heartbeat: move each held lease's expiry to ``now + lease_for``.

        Per lease: HELD if the token is current, CANCEL_REQUESTED if it is current but the job was
        cancelled (the lease is still extended), else STACK_REQUESTED if it is current and
        ``request_stack`` asked for the handler's stack, LOST if the token is stale (nothing
        changes).
        Leases of several queues may be extended queue by queue (see the module docstring).
        """
        ...

    async def report_progress(self, items: Sequence[Progress], *, now: datetime) -> list[bool]:
        """Store how far running jobs are: ``progress`` and ``progress_message`` become the
        item's, fenced by its lease token; answer per item whether it applied (False for a
        stale token or a job that is not running, which changes nothing). The worker sends the
        latest report of each run at most once a second, so a tight loop cannot flood the
        backend. Progress is cleared by a retry (``finish`` RETRY or RELEASED, ``requeue``).
        """
        ...

    async def request_stack(self, job_id: str, *, now: datetime) -> Job | None:
        """Ask the worker running ``job_id`` where its handler is: a RUNNING job gets
        ``stack_requested``, which the holder's next ``extend`` answers as STACK_REQUESTED;
        other states change nothing. Answers the job afterwards (None when unknown)."""
        ...

    async def note_attempt(self, job_id: str, attempt: int, worker_id: str, traceback: str
                           ) -> bool:
        """Give the latest record of ``attempt`` run by ``worker_id`` a ``traceback`` when it
        has none; answer whether it did. Not fenced by a lease on purpose: it is how a worker
        that lost a run's lease says where the handler was, after the reaper closed the record
        (as ``LeaseExpired``) without knowing. Nothing else of the job changes."""
        ...

    async def put_stack(self, lease: Lease, stack: str, *, now: datetime) -> bool:
        """The worker's answer to ``request_stack``: ``stack`` and ``stack_at = now`` are
        stored and ``stack_requested`` cleared, fenced by the lease token (a stale one changes
        nothing and answers False)."""
        ...

    async def finish(self, items: Sequence[Finish], *, now: datetime) -> list[bool]:
        """End runs, each fenced by its lease token; answer per item whether it applied.

        A stale token (the job was reaped, released, cancelled or finished) changes nothing and
        answers False. Otherwise, by outcome:
        COMPLETED: state completed, result stored, finished_at = now.
        RETRY: state retrying with run_at = retry_at, error stored.
        DEAD: state dead, error stored, finished_at = now.
        CANCELLED: state cancelled, error stored, finished_at = now.
        RELEASED: state queued with ``attempt -= 1`` (the run is refunded), run_at kept.
        RETRY, DEAD and RELEASED become CANCELLED when a cancel was requested during the run
        (the attempt record keeps what the worker reported). RETRY and RELEASED clear the
        job's progress (the next run starts over); the others keep it. Every outcome clears a
        pending ``stack_requested`` (the stored stack stays). "error stored": the job's
        ``error`` becomes ``str(item.error)`` when the item has one, and stays the last error
        when it has none; COMPLETED and RELEASED leave ``error`` as it was (an error they carry
        goes to the attempt record only). The lease is cleared (``worker_id`` and
        ``lease_expires_at`` become None; ``cancel_requested`` stays) and the run's attempt
        record is closed with finished_at, outcome and the item's error (type, message and
        traceback as given, an empty text kept as empty).
        In the same step the throughput counters of the job's queue for the minute of ``now``
        grow as ``core.counters.finish_counts`` says: completed for a COMPLETED run, failed for
        a run the worker (or reaper) reported as RETRY or DEAD, dead when the job becomes DEAD.
        Items are applied in one atomic step each, in order (a batch may be one transaction;
        items of several queues may be applied queue by queue).
        """
        ...

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
        """``finish(items)``, then ``claim(queues, limit=...)``, in one call: a worker whose runs
        ended hands their outcomes back and takes work for the freed slots in one round trip
        (BullMQ's ``moveToFinished`` does the same). Answers ``(applied, leases)``, each
        exactly what ``finish`` and ``claim`` would answer called one after the other with the
        same ``now``: the finish comes first, so a job RELEASED by ``items`` may be leased again
        by the claim. ``limit <= 0`` or no queues claims nothing; no items finishes nothing.
        Each part is as atomic as its own method promises; the two may share one atomic step.
        """
        ...

    # -- scheduler ----------------------------------------------------------------------------

    async def promote(self, *, now: datetime, limit: int) -> int:
        """Move up to ``limit`` SCHEDULED and RETRYING jobs with ``run_at <= now`` to QUEUED.

        Answers how many moved (``min(limit, due)`` when nothing else runs); waiting workers of
        their queues are woken. Which of more than ``limit`` due jobs move first is up to the
        backend (callers repeat until fewer than ``limit`` move, and then every due job has).
        Jobs of several queues may be moved queue by queue. Safe to run from several schedulers
        at once (each job moves once).
        """
        ...

    async def next_wakeup(self, *, now: datetime) -> datetime | None:
        """The earliest time scheduler work comes due: the earliest ``run_at`` of a SCHEDULED or
        RETRYING job, or the earliest lease expiry of a RUNNING job. None when there is none."""
        ...

    async def wait_for_changes(self, *, timeout: float) -> None:
        """Return when ``next_wakeup`` may have moved earlier (a delayed enqueue, a retry, a
        claim) or a schedule was put, or after ``timeout`` seconds. Returning early is allowed;
        across processes a backend may notice schedule changes only at the timeout."""
        ...

    async def expired_leases(self, *, now: datetime, limit: int) -> list[Lease]:
        """Up to ``limit`` RUNNING jobs whose lease expired before ``now``, oldest expiry first
        (ties by id), each with its current token.

        The caller ends each with ``finish`` (a failed attempt); when several schedulers race,
        the token lets exactly one of them win.
        """
        ...

    async def purge(
        self,
        *,
        states: Collection[JobState],
        finished_before: datetime,
        queue: str | None = None,
        limit: int = 1000,
    ) -> int:
        """Delete up to ``limit`` jobs in terminal ``states`` finished before the horizon.

        Their attempt records and idempotency keys go with them. Non-terminal states in
        ``states`` are ignored. Answers how many were deleted. Which of more than ``limit``
        such jobs go first is up to the backend (callers repeat until fewer than ``limit`` go);
        jobs of several queues may be deleted queue by queue.
        """
        ...

    # -- inspection and admin -----------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        """The job, or None if there is no such job: exactly ``get_many([job_id])[0]``.

        Kept as a call of its own because it is the most frequent read (every job page, every
        poll of a waiting client), one key with no batch to build.
        """
        ...

    async def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        """``get`` for several ids in one round trip, in the order given."""
        ...

    async def attempts(self, job_id: str) -> list[Attempt]:
        """The job's attempt records, oldest first (empty for an unknown job)."""
        ...

    async def list_jobs(self, query: JobQuery) -> Page:
        """Jobs matching every filter of ``query`` (see ``JobQuery``), newest first (descending
        id), at most ``query.limit``.

        ``query.cursor`` is the ``next_cursor`` of the previous page; the next page holds the
        jobs with ids below it. ``next_cursor`` is None on the last page. A backend may end a
        page early, holding fewer than ``limit`` jobs (even none) with a ``next_cursor``, when
        the filters match rarely: a page costs a bounded amount of work, never a scan of every
        job, and paging on until ``next_cursor`` is None visits every matching job once.
        """
        ...

    async def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """Counts by state for the given queues, each once, in the order first asked (an
        unknown one answers zero counts); every known queue, by name, when None.

        A queue is known once a job was stored in it (an enqueue that only answered stored jobs
        makes none known) or it was paused or resumed; it stays known. ``oldest_queued_at``
        is the smallest ``run_at`` of the queue's QUEUED jobs (None when none is queued), read
        from the claim order index, not by visiting the queued jobs.
        """
        ...

    async def count_jobs(
        self,
        *,
        states: Collection[JobState],
        queue: str | None = None,
        finished_before: datetime | None = None,
    ) -> int:
        """How many jobs are in ``states`` (in ``queue``, or in every queue when None).

        With ``finished_before``, only jobs whose ``finished_at`` is before it count (so only
        terminal ones). Read from indexes (a sorted-set ZCOUNT, an indexed COUNT), never by
        visiting every job. An empty ``states`` counts nothing.

        Not folded into ``stats`` (per-queue counts of every state, no time bound) nor
        ``count_finished`` (per terminal state, a lower bound on ``finished_at``): this one
        answers one total over chosen states and an upper bound, which is what purging a
        horizon needs to know before it deletes.
        """
        ...

    async def throughput(
        self,
        *,
        since: datetime,
        until: datetime,
        bucket: timedelta,
        queue: str | None = None,
    ) -> list[ThroughputBucket]:
        """Every bucket whose start lies in ``[floor(since), until)``, oldest first, zeros
        included; ``floor`` aligns to a multiple of ``bucket`` since the epoch.

        ``bucket`` is a whole number of minutes (60 s at least) dividing a day; anything else,
        naive times or more than ``core.counters.MAX_BUCKETS`` buckets raise
        ``ValidationError``. Counts are those of ``ThroughputBucket``, for ``queue`` or summed
        over every queue. They are counters written by ``finish``, per queue and minute, so the
        cost grows with the buckets asked for, never with the jobs stored, and purging jobs
        leaves them alone. Counters are kept at least 24 h (older buckets may read as zero).
        """
        ...

    async def recent_waits(self, queue: str, *, limit: int = 500) -> list[float]:
        """Seconds from each job's due time (``run_at``) to the start of its first attempt, for
        the most recent first attempts claimed in ``queue``, newest first, at most ``limit``
        (at most ``core.counters.WAITS_KEPT``: storage is a ring of the last 1000 per queue).

        Only claims that made ``attempt`` 1 are recorded: retries are not waits for a worker.
        A job requeued from the dead-letter queue starts over at attempt 1 and is recorded
        again, and so is a first run released at shutdown (its attempt is refunded) when it is
        claimed anew. Within one claim, the job claimed last is the newest.
        """
        ...

    async def beat(self, name: str, *, now: datetime) -> None:
        """Record that the component ``name`` (e.g. ``"scheduler:<id>"``) was alive at ``now``.

        The latest time wins (a beat older than the stored one changes nothing). Beats older
        than 24 h before ``now`` are forgotten, so storage stays bounded.
        """
        ...

    async def beats(self, *, now: datetime | None = None) -> dict[str, datetime]:
        """The last beat of every component that beat within the 24 h before ``now`` (the
        current time when None), by name; a beat exactly 24 h old is still answered."""
        ...

    async def count_finished(
        self, *, since: datetime, queue: str | None = None
    ) -> dict[JobState, int]:
        """How many jobs reached each terminal state at or after ``since``.

        Counts the jobs whose state is COMPLETED, DEAD or CANCELLED and whose ``finished_at``
        is ``>= since`` (a job that finished exactly at ``since`` counts), in ``queue`` or in
        every queue when it is None. The answer always has exactly these three keys (zero when
        none). It is read from the stored jobs, so it covers runs that any process finished; but
        only jobs still stored count: purged ones do not, and neither do jobs that left their
        terminal state again (a requeued DEAD job counts when it finishes anew). Non-terminal
        jobs never count. Reads only; cost grows with the jobs finished since ``since``, not
        with all jobs stored. (``count_jobs`` bounds ``finished_at`` from above and sums the
        states; this one bounds it from below and answers each state apart.)
        """
        ...

    async def cancel(self, job_id: str, *, now: datetime) -> Job | None:
        """Cancel a job and answer it as it is afterwards (None if there is no such job).

        SCHEDULED, QUEUED and RETRYING become CANCELLED with finished_at = now. RUNNING gets
        ``cancel_requested`` (its worker learns it at the next heartbeat and ends it CANCELLED).
        Terminal jobs are answered unchanged.
        """
        ...

    async def requeue(self, job_ids: Sequence[str], *, now: datetime) -> list[str]:
        """Move DEAD or CANCELLED jobs back to QUEUED with ``attempt = 0``, ``run_at = now``:
        the operator's retry (``POST /jobs/{id}/retry``, ``monoq job retry``,
        ``monoq dlq requeue``), not a RETRY
        outcome of ``finish``.

        Error, result, finished_at, cancel_requested and progress are cleared; attempt records
        stay. Jobs in other states are left alone. Answers the ids that moved, each once, in the
        order given. Waiting workers are woken. Jobs of several queues may be moved queue by
        queue.
        """
        ...

    async def set_paused(self, queue: str, paused: bool) -> None:
        """Pause (claims skip the queue) or resume a queue. Enqueue still works when paused."""
        ...

    # -- schedules ----------------------------------------------------------------------------

    async def put_schedule(self, schedule: Schedule) -> None:
        """Insert or replace the schedule with ``schedule.id``: every field is stored as given,
        ``last_fire_at`` included (callers that edit a definition carry it over), times to the
        microsecond."""
        ...

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        """The schedule, or None."""
        ...

    async def list_schedules(self) -> list[Schedule]:
        """Every schedule, enabled or not, by id."""
        ...

    async def delete_schedule(self, schedule_id: str) -> bool:
        """Delete a schedule; its runs stay (they keep their ``schedule_id``). False if absent."""
        ...

    async def advance_schedule(self, schedule_id: str, fire_at: datetime) -> bool:
        """Set ``last_fire_at = fire_at`` if it is later than the stored one, atomically.

        Answers whether it moved; safe for several schedulers (the latest fire time wins).
        False for an unknown schedule.
        """
        ...

    async def purge_schedule_runs(self, schedule_id: str, *, keep: int, limit: int = 1000
                                  ) -> int:
        """Delete the schedule's terminal runs that are not among its ``keep`` newest runs.

        The newest ``keep`` jobs with this ``schedule_id`` (any state; none when ``keep <= 0``)
        are kept; of the older ones, up to ``limit`` terminal jobs are deleted, newest first,
        with their attempts and idempotency keys. Answers how many were deleted. A backend may
        walk the runs in several atomic steps of a bounded number of runs each (Redis: 2000),
        so that many unfinished old runs never hold the storage for long.
        """
        ...

    # -- audit log ----------------------------------------------------------------------------

    async def append_audit(self, entry: AuditEntry) -> None:
        """Store one audit log entry (``core.audit``) as given, every field exactly. Entries
        are never changed afterwards; ``purge_audit`` deletes old ones. One atomic step (on
        Redis one key, so it works on Redis Cluster)."""
        ...

    async def list_audit(self, *, filters: AuditFilter | None = None, limit: int = 50,
                         cursor: str | None = None) -> AuditPage:
        """Audit entries matching ``filters`` (every given field exactly; ``since`` inclusive,
        ``until`` exclusive on ``at``), newest first: by ``(at, id)`` descending.

        ``cursor`` is the ``next_cursor`` of the previous page (``core.audit.audit_cursor``
        of its last entry): the next page holds the entries below it. ``next_cursor`` is None
        on the last page. Like ``list_jobs``, a page costs bounded work: a backend may end it
        early, with fewer than ``limit`` entries (even none) and a ``next_cursor``, when the
        filters match rarely; paging on until ``next_cursor`` is None visits every matching
        entry once. A malformed cursor raises ``ValidationError``.
        """
        ...

    async def purge_audit(self, *, before: datetime, limit: int = 1000) -> int:
        """Delete up to ``limit`` audit entries whose ``at`` is before ``before``, oldest
        first; answer how many went (callers repeat until fewer than ``limit`` go)."""
        ...

    # -- workers ------------------------------------------------------------------------------

    async def report_worker(self, info: WorkerInfo, *, ttl: timedelta) -> None:
        """Record a worker heartbeat; it is listed while ``now <= info.last_seen + ttl``.

        In the same step, the workers whose listing ended before ``info.last_seen`` are
        forgotten (so dead workers do not pile up): they would not be listed at any ``now``
        from this heartbeat on.
        """
        ...

    async def remove_worker(self, worker_id: str) -> None:
        """Forget a worker (clean shutdown)."""
        ...

    async def list_workers(self, *, now: datetime) -> list[WorkerInfo]:
        """Workers whose last heartbeat is still within its ttl at ``now`` (``now <=
        last_seen + ttl``: a worker exactly at the end of its ttl is listed), by id."""
        ...


class BackendFactory(Protocol):
    """What the ``monoq.backends`` entry point names: a class built from a URL and options."""

    def __call__(self, url: str, options: Mapping[str, Any] | None = None) -> Backend: ...
