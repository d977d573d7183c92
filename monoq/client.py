"""The Python client: what producers, the CLI and the API use to talk to a backend.

``Client`` turns friendly arguments (a dict payload, ``priority="high"``, ``delay=10``) into
validated ``NewJob`` values, applies the handler's and the config's defaults, and wraps the
backend's answers into errors a caller can act on (``JobNotFound``, ``Conflict``). Validation
happens before anything is written, so bad input changes nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import anyio
import attrs

from monoq.core.audit import (
    MAX_DETAIL_IDS,
    MAX_TEXT,
    SOURCES,
    Actor,
    AuditFilter,
    AuditNote,
    AuditPage,
    audit_scope,
    audited,
    parse_audit_cursor,
)
from monoq.core.backend import Backend, MemoryReport, MemoryUse, ServerTime
from monoq.core.coalesce import EnqueueCoalescer
from monoq.core.codec import json_encode
from monoq.core.counters import WAITS_KEPT, bucket_plan
from monoq.core.ids import new_id, new_ids
from monoq.core.models import (
    DEFAULT_PRIORITY,
    DEFAULT_QUEUE,
    MAX_RETRIES,
    MAX_TIMEOUT,
    TERMINAL_STATES,
    Attempt,
    DepthLimits,
    Enqueued,
    Job,
    JobQuery,
    JobState,
    NewJob,
    Page,
    QueueStats,
    Schedule,
    ThroughputBucket,
    WorkerInfo,
    parse_priority,
    utcnow,
    validate_key,
    validate_name,
    validate_number,
)
from monoq.core.schedules import parse_schedule, schedule_status
from monoq.errors import (
    Conflict,
    HandlerNotFound,
    JobNotFound,
    ScheduleNotFound,
    SerializationError,
    ValidationError,
    WaitTimeout,
)
from monoq.registry import Registry, open_backend

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal

    from monoq.config import Config
    from monoq.tracing import Tracing

MAX_DELAY: Final = timedelta(days=3650)
SUBMIT_FIELDS: Final = frozenset(
    {"handler", "name", "payload", "queue", "priority", "delay", "run_at", "max_retries",
     "timeout", "idempotency_key"}
)


@attrs.frozen
class JobDefaults:
    """Values a new job gets when neither the caller nor its handler sets them."""

    queue: str = DEFAULT_QUEUE
    priority: int = DEFAULT_PRIORITY
    max_retries: int = 3
    timeout: float = 300.0


class _Options(NamedTuple):
    """A job's checked queue, priority, retries and timeout (``Client._options``)."""

    queue: str
    priority: int
    max_retries: int
    timeout: float


def _parse_time(field: str, value: object) -> datetime:
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError(field, f"{value!r} is not an RFC 3339 time") from None
    else:
        raise ValidationError(field, f"{value!r} is not an RFC 3339 time")
    if dt.tzinfo is None:
        raise ValidationError(field, f"{value!r} has no timezone; use UTC (…Z)")
    return dt.astimezone(UTC)


def _job_detail(_args: Mapping[str, Any], job: Job) -> dict[str, Any]:
    return {"queue": job.queue, "state": str(job.state)}


def _requeue_detail(args: Mapping[str, Any], moved: list[str]) -> dict[str, Any]:
    detail: dict[str, Any] = {"requeued": len(moved), "ids": moved[:MAX_DETAIL_IDS]}
    if args.get("ids") is not None:
        detail["asked"] = len(args["ids"])
    if args.get("handler") is not None:
        detail["handler"] = args["handler"]
    return detail


def _purge_detail(args: Mapping[str, Any], purged: int) -> dict[str, Any]:
    older: timedelta = args.get("older_than", timedelta(0))
    return {"purged": purged, "older_than_seconds": older.total_seconds()}


def _schedule_detail(_args: Mapping[str, Any], schedule: Schedule) -> dict[str, Any]:
    return {"queue": schedule.queue, "handler": schedule.handler, "cron": schedule.cron,
            "every": schedule.every, "enabled": schedule.enabled}


def _run_detail(_args: Mapping[str, Any], job: Job) -> dict[str, Any]:
    return {"queue": job.queue, "job_id": job.id}


def _text_filter(field: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT \
            or not value.isprintable():
        raise ValidationError(field, f"{str(value)[:40]!r} is not a non-empty printable text "
                                     f"of at most {MAX_TEXT} characters")
    return value


class Client:
    """Enqueue, inspect and administer jobs on one backend.

    ``registry``, when given, supplies per-handler defaults; with ``known_handlers_only`` an
    enqueue for a handler it does not know is refused (``HandlerNotFound``). ``tracing``, when
    given, makes a producer span per enqueued job and stores its trace context with the job
    (``monoq.tracing``); the worker and the scheduler of this client use it too.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        registry: Registry | None = None,
        defaults: JobDefaults | None = None,
        clock: Callable[[], datetime] = utcnow,
        known_handlers_only: bool = False,
        tracing: Tracing | None = None,
        limits: DepthLimits | None = None,
    ) -> None:
        self.backend = backend
        self.tracing = tracing
        self.limits = limits  # backpressure: enqueues past these raise QueueFull
        self.registry = registry
        self.defaults = defaults or JobDefaults()
        self.clock = clock
        self.known_handlers_only = known_handlers_only
        self._coalescer = EnqueueCoalescer(self._enqueue_now)

    async def _enqueue_now(self, jobs: Sequence[NewJob]) -> list[Enqueued]:
        if self.limits is not None:
            return await self.backend.enqueue(jobs, now=self.clock(), limits=self.limits)
        return await self.backend.enqueue(jobs, now=self.clock())

    # -- building jobs --------------------------------------------------------------------------

    def build(
        self,
        handler: str,
        payload: Any = None,
        *,
        queue: str | None = None,
        priority: int | str | None = None,
        delay: float | timedelta | None = None,
        run_at: datetime | str | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
        idempotency_key: str | None = None,
        schedule_id: str | None = None,
        now: datetime | None = None,
    ) -> NewJob:
        """Validate arguments and fill defaults; raises ValidationError, writes nothing."""
        options = self._options(handler, queue, priority, max_retries, timeout)
        return self._assemble(new_id(), handler, options, payload, delay=delay, run_at=run_at,
                              idempotency_key=idempotency_key, schedule_id=schedule_id, now=now)

    def _options(self, handler: object, queue: object, priority: object, max_retries: object,
                 timeout: object) -> _Options:
        """The handler name checked, and the queue, priority, retries and timeout it runs
        with (given, else the handler's, else the client's defaults), checked."""
        handler = validate_name("handler", handler)
        spec = self.registry.find(handler) if self.registry is not None else None
        if spec is None and self.known_handlers_only:
            known = ", ".join(s.name for s in self.registry or ()) or "none"
            raise HandlerNotFound(f"handler: no handler named {handler!r} (known: {known})")
        if queue is None:
            queue = spec.queue if spec is not None and spec.queue else self.defaults.queue
        name = validate_name("queue", queue)
        if priority is None:
            priority = spec.priority if spec and spec.priority is not None else None
        prio = self.defaults.priority if priority is None else parse_priority(priority)
        if max_retries is None:
            max_retries = spec.max_retries if spec and spec.max_retries is not None else None
        retries = self.defaults.max_retries if max_retries is None else max_retries
        if isinstance(retries, bool) or not isinstance(retries, int):
            raise ValidationError("max_retries", f"{retries!r} is not an integer")
        if not 0 <= retries <= MAX_RETRIES:
            raise ValidationError("max_retries", f"{retries} is outside 0..{MAX_RETRIES}")
        if timeout is None:
            timeout = spec.timeout if spec and spec.timeout is not None else self.defaults.timeout
        seconds = validate_number("timeout", timeout, low=0.001, high=MAX_TIMEOUT)
        return _Options(name, prio, retries, seconds)

    def _assemble(self, job_id: str, handler: str, options: _Options, payload: Any, *,
                  delay: object, run_at: object, idempotency_key: object,
                  schedule_id: str | None, now: datetime | None) -> NewJob:
        """The job with ``options`` (checked already): the rest of its fields checked."""
        key = None if idempotency_key is None else validate_key("idempotency_key", idempotency_key)
        if delay is not None and run_at is not None:
            raise ValidationError("delay", "give delay or run_at, not both")
        when: datetime | None = None
        if delay is not None:
            if isinstance(delay, timedelta):
                delay = delay.total_seconds()
            secs = validate_number("delay", delay, low=0, high=MAX_DELAY.total_seconds())
            when = (now or self.clock()) + timedelta(seconds=secs) if secs else None
        elif run_at is not None:
            when = _parse_time("run_at", run_at)
        try:
            payload_json = json_encode(payload)
        except SerializationError as exc:
            raise ValidationError("payload", str(exc)) from exc
        return NewJob(
            id=job_id,
            queue=options.queue,
            handler=handler,
            payload_json=payload_json,
            priority=options.priority,
            run_at=when,
            max_retries=options.max_retries,
            timeout=options.timeout,
            idempotency_key=key,
            schedule_id=schedule_id,
        )

    def build_from_dict(self, data: Mapping[str, Any], *, now: datetime | None = None) -> NewJob:
        """Build from a submit body (docs/DESIGN.md §3: ``handler`` or its alias ``name``, …)."""
        return self._from_dict(data, new_id(), now, None)

    def build_many(self, jobs: Iterable[Mapping[str, Any] | NewJob], *,
                   now: datetime | None = None) -> list[NewJob]:
        """Build a batch: each mapping as ``build_from_dict`` would, each NewJob as it is. An
        error names the job (``jobs[3].priority``) and nothing is built.

        Jobs that share their options (handler, queue, priority, retries, timeout) share one
        check of them, and the batch's ids are made in one step: a batch of 1 000 jobs of one
        handler checks its options once.
        """
        items = list(jobs)
        ids = iter(new_ids(sum(1 for item in items if not isinstance(item, NewJob))))
        seen: dict[tuple[object, ...], _Options] = {}
        built: list[NewJob] = []
        for index, item in enumerate(items):
            if isinstance(item, NewJob):
                built.append(item)
                continue
            try:
                built.append(self._from_dict(item, next(ids), now, seen))
            except ValidationError as exc:
                raise ValidationError(f"jobs[{index}].{exc.field}", exc.message) from exc
        return built

    def _from_dict(self, data: Mapping[str, Any], job_id: str, now: datetime | None,
                   seen: dict[tuple[object, ...], _Options] | None) -> NewJob:
        """``build_from_dict`` with the id given; ``seen`` keeps options already checked."""
        if not isinstance(data, Mapping):
            raise ValidationError("job", "each job must be a JSON object")
        if not SUBMIT_FIELDS.issuperset(data) and (unknown := set(data) - SUBMIT_FIELDS):
            raise ValidationError(
                min(unknown),
                f"unknown field; allowed: {', '.join(sorted(SUBMIT_FIELDS))}",
            )
        handler = data.get("handler", data.get("name"))
        if handler is None:
            raise ValidationError("handler", "is required")
        given = (handler, data.get("queue"), data.get("priority"), data.get("max_retries"),
                 data.get("timeout"))
        options: _Options | None = None
        key: tuple[object, ...] | None = None
        if seen is not None:
            # The types are part of the key: 1, 1.0 and True are equal but check differently.
            key = (*given, *map(type, given))
            try:
                options = seen.get(key)
            except TypeError:  # a list or an object where a name or number belongs
                key = None
        if options is None:
            options = self._options(*given)
            if key is not None and seen is not None:
                seen[key] = options
        return self._assemble(job_id, handler, options, data.get("payload"),
                              delay=data.get("delay"), run_at=data.get("run_at"),
                              idempotency_key=data.get("idempotency_key"), schedule_id=None,
                              now=now)

    # -- producing ------------------------------------------------------------------------------

    async def enqueue(self, handler: str, payload: Any = None, **options: Any) -> Job:
        """Enqueue one job and answer it (the original one when the idempotency key matched)."""
        return (await self.submit(handler, payload, **options)).job

    async def submit(self, handler: str, payload: Any = None, **options: Any) -> Enqueued:
        """Like ``enqueue`` but also tells whether the job was created by this call."""
        return await self.submit_job(self.build(handler, payload, **options))

    async def submit_job(self, new: NewJob) -> Enqueued:
        """Enqueue one built job. Concurrent calls share backend calls (see
        ``monoq.core.coalesce``), each getting its own answer."""
        if self.tracing is not None:
            return await self.tracing.send(new, self._coalescer.submit)
        return await self._coalescer.submit(new)

    async def enqueue_many(self, jobs: Iterable[Mapping[str, Any] | NewJob]) -> list[Job]:
        """Enqueue a batch in one backend call; every job is validated before any is written."""
        return [answer.job for answer in await self.submit_many(jobs)]

    async def submit_many(self, jobs: Iterable[Mapping[str, Any] | NewJob]) -> list[Enqueued]:
        """Like ``enqueue_many`` but also tells which jobs were created by this call."""
        now = self.clock()
        built = self.build_many(jobs, now=now)
        if not built:
            return []
        if self.tracing is not None:
            return await self.tracing.send_many(
                built, lambda traced: self._enqueue_batch(traced, now))
        return await self._enqueue_batch(built, now)

    async def _enqueue_batch(self, jobs: Sequence[NewJob], now: datetime) -> list[Enqueued]:
        if self.limits is not None:
            return await self.backend.enqueue(jobs, now=now, limits=self.limits)
        return await self.backend.enqueue(jobs, now=now)

    # -- inspecting -----------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job:
        """The job, or JobNotFound."""
        job = await self.backend.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Wait until the job is completed, dead or cancelled; WaitTimeout after ``timeout`` s."""
        delay = 0.002
        with anyio.move_on_after(timeout) as scope:
            while True:
                job = await self.get(job_id)
                if job.terminal:
                    return job
                await anyio.sleep(delay)
                delay = min(delay * 1.5, 0.25)
        if scope.cancelled_caught:
            raise WaitTimeout(f"job {job_id} did not finish within {timeout} s")
        raise AssertionError("unreachable")  # pragma: no cover

    async def attempts(self, job_id: str) -> list[Attempt]:
        """The job's attempts, oldest first; JobNotFound for an unknown job."""
        await self.get(job_id)
        return await self.backend.attempts(job_id)

    async def list_jobs(self, query: JobQuery) -> Page:
        """Jobs newest first, filtered by ``query`` (``JobQuery``: its filters, page size and
        cursor), one page at a time; ``query.limit`` is 1..1000.

        A page may hold fewer than ``limit`` jobs and still carry a ``next_cursor`` when the
        filters match rarely (see ``Backend.list_jobs``): page on until ``next_cursor`` is None.
        """
        if not 1 <= query.limit <= JobQuery.MAX_LIMIT:
            raise ValidationError("limit", f"{query.limit} is outside 1..{JobQuery.MAX_LIMIT}")
        return await self.backend.list_jobs(query)

    async def count_jobs(
        self,
        *,
        states: Iterable[JobState | str],
        queue: str | None = None,
        finished_before: datetime | None = None,
    ) -> int:
        """How many jobs are in ``states`` (of ``queue``; finished before the time when given),
        read from the backend's indexes, not by visiting every job."""
        wanted = {self._state(s) for s in states}
        before = (
            None if finished_before is None else _parse_time("finished_before", finished_before)
        )
        return await self.backend.count_jobs(states=wanted, queue=queue, finished_before=before)

    async def throughput(
        self,
        *,
        since: datetime,
        until: datetime,
        bucket: timedelta,
        queue: str | None = None,
    ) -> list[ThroughputBucket]:
        """Completed, failed and dead runs per bucket of ``bucket`` (whole minutes dividing a
        day) from ``since`` (floored to the bucket) until ``until``, oldest first, zeros
        included, of ``queue`` or of every queue. Counters are kept at least 24 h.
        ValidationError for a bad bucket, naive times or too many buckets."""
        start = _parse_time("since", since)
        end = _parse_time("until", until)
        bucket_plan(start, end, bucket)  # refuse bad input before touching the backend
        if queue is not None:
            validate_name("queue", queue)
        return await self.backend.throughput(since=start, until=end, bucket=bucket, queue=queue)

    async def recent_waits(self, queue: str, *, limit: int = 500) -> list[float]:
        """Seconds each of the queue's most recent first attempts waited from its due time to
        its claim, newest first, at most ``limit`` (1..1000)."""
        validate_name("queue", queue)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= WAITS_KEPT:
            raise ValidationError("limit", f"{limit!r} is outside 1..{WAITS_KEPT}")
        return await self.backend.recent_waits(queue, limit=limit)

    async def beats(self) -> dict[str, datetime]:
        """The last beat of every component (``scheduler:<id>``, ...) that beat within the last
        24 h by this client's clock, by name."""
        return await self.backend.beats(now=self.clock())

    @staticmethod
    def _state(value: JobState | str) -> JobState:
        try:
            return JobState(value)
        except ValueError:
            allowed = ", ".join(s.value for s in JobState)
            raise ValidationError("state", f"{value!r} is not one of {allowed}") from None

    async def queues(self, names: Sequence[str] | None = None) -> list[QueueStats]:
        """Counts by state per queue."""
        return await self.backend.stats(names)

    async def workers(self) -> list[WorkerInfo]:
        """Workers with a recent heartbeat."""
        return await self.backend.list_workers(now=self.clock())

    async def memory_use(self) -> MemoryReport | None:
        """The storage's memory and an estimate per queue (``MemoryUse``), or None when the
        backend does not measure it (memory, SQLite)."""
        if isinstance(self.backend, MemoryUse):
            return await self.backend.memory_use()
        return None

    # -- audit log ------------------------------------------------------------------------------

    def auditing(self, action: str, *, target: str | None = None, queue: str | None = None,
                 actor: Actor | None = None) -> contextlib.AbstractAsyncContextManager[AuditNote]:
        """Record the operator action run inside the block in the audit log, with the current
        actor (``monoq.core.audit.current_actor``) or ``actor``; see
        ``monoq.core.audit.audit_scope``. The admin methods below are recorded this way."""
        return audit_scope(self.backend.append_audit, self.clock, new_id, action,
                           target=target, queue=queue, actor=actor)

    async def list_audit(
        self,
        *,
        action: str | None = None,
        actor: str | None = None,
        source: str | None = None,
        queue: str | None = None,
        target: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> AuditPage:
        """The audit log, newest first, filtered, one page at a time (a page may end early
        with a ``next_cursor`` when the filters match rarely: page on until it is None).
        ValidationError for a bad filter, limit or cursor, before anything is read."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise ValidationError("limit", f"{limit!r} is outside 1..1000")
        if source is not None and source not in SOURCES:
            raise ValidationError("source", f"{str(source)[:40]!r} is not one of "
                                            f"{', '.join(SOURCES)}")
        start = None if since is None else _parse_time("since", since)
        end = None if until is None else _parse_time("until", until)
        if cursor is not None:
            parse_audit_cursor(cursor)
        filters = AuditFilter(
            action=_text_filter("action", action), actor=_text_filter("actor", actor),
            source=source, queue=None if queue is None else validate_name("queue", queue),
            target=_text_filter("target", target), since=start, until=end)
        return await self.backend.list_audit(filters=filters, limit=limit, cursor=cursor or None)

    # -- administering --------------------------------------------------------------------------

    @audited("cancel", target="job_id", describe=_job_detail)
    async def cancel(self, job_id: str) -> Job:
        """Cancel a job: at once if it waits, at its next heartbeat if it runs.

        Conflict if it already completed or died; cancelling a cancelled job is a no-op.
        """
        job = await self.backend.cancel(job_id, now=self.clock())
        if job is None:
            raise JobNotFound(job_id)
        if job.state in (JobState.COMPLETED, JobState.DEAD):
            raise Conflict(f"job {job_id} is already {job.state}; it cannot be cancelled")
        return job

    @audited("retry", target="job_id", describe=_job_detail)
    async def retry(self, job_id: str) -> Job:
        """The operator's retry: put a dead or cancelled job back in its queue with a fresh
        retry budget (``Backend.requeue``). Not the retry policy, which runs a job again after
        a failed attempt on its own."""
        moved = await self.backend.requeue([job_id], now=self.clock())
        job = await self.get(job_id)
        if not moved:
            raise Conflict(f"job {job_id} is {job.state}; only dead or cancelled jobs can be retried")
        return job

    # -- schedules ------------------------------------------------------------------------------

    def build_schedule(self, data: Mapping[str, Any], *, base: Schedule | None = None
                       ) -> Schedule:
        """A validated Schedule from a JSON body; with ``base``, a partial update of it
        (``core.schedules.parse_schedule``, with this client's default queue and priority; a
        handler the registry does not know is ``HandlerNotFound`` with
        ``known_handlers_only``). Raises ValidationError naming the schedule and the field;
        writes nothing.
        """
        def check_handler(handler: str) -> None:
            if self.known_handlers_only and self.registry is not None \
                    and handler not in self.registry:
                raise HandlerNotFound(f"handler: no handler named {handler!r}")

        return parse_schedule(data, base=base, queue=self.defaults.queue,
                              priority=self.defaults.priority, check_handler=check_handler)

    @audited("schedule.put", target="schedule.id", queue="schedule.queue",
             describe=_schedule_detail)
    async def put_schedule(self, schedule: Schedule) -> Schedule:
        """Store a schedule made over the API or CLI (origin ``api``); history is kept."""
        from monoq.core.cron import validate_schedule

        validate_schedule(schedule)
        now = self.clock()
        current = await self.backend.get_schedule(schedule.id)
        stored = attrs.evolve(
            schedule,
            origin=current.origin if current is not None else "api",
            created_at=current.created_at if current is not None else now,
            updated_at=now,
            last_fire_at=current.last_fire_at if current is not None else None,
        )
        await self.backend.put_schedule(stored)
        return stored

    async def get_schedule(self, schedule_id: str) -> Schedule:
        """The schedule, or JobNotFound-like ``ScheduleNotFound``."""
        schedule = await self.backend.get_schedule(schedule_id)
        if schedule is None:
            raise ScheduleNotFound(schedule_id)
        return schedule

    async def list_schedules(self) -> list[Schedule]:
        """Every schedule, by id."""
        return await self.backend.list_schedules()

    @audited("schedule.delete", target="schedule_id")
    async def delete_schedule(self, schedule_id: str) -> None:
        """Delete a schedule (its runs stay until retention removes them)."""
        if not await self.backend.delete_schedule(schedule_id):
            raise ScheduleNotFound(schedule_id)

    @audited(lambda args: "schedule.enable" if args["enabled"] else "schedule.disable",
             target="schedule_id", describe=_schedule_detail)
    async def set_schedule_enabled(self, schedule_id: str, enabled: bool) -> Schedule:
        """Enable or disable a schedule."""
        current = await self.get_schedule(schedule_id)
        updated = attrs.evolve(current, enabled=enabled, updated_at=self.clock())
        await self.backend.put_schedule(updated)
        return updated

    @audited("schedule.trigger", target="schedule_id", describe=_run_detail)
    async def trigger_schedule(self, schedule_id: str) -> Job:
        """Run a schedule once now, outside its timetable."""
        schedule = await self.get_schedule(schedule_id)
        return await self.enqueue(
            schedule.handler, schedule.payload, queue=schedule.queue,
            priority=schedule.priority, max_retries=schedule.max_retries,
            timeout=schedule.timeout, schedule_id=schedule.id,
        )

    async def schedule_runs(self, schedule_id: str, *, limit: int = 50,
                            cursor: str | None = None) -> Page:
        """The schedule's runs, newest first."""
        await self.get_schedule(schedule_id)
        return await self.backend.list_jobs(JobQuery(schedule_id=schedule_id, limit=limit,
                                                     cursor=cursor))

    async def schedule_status(self, schedule: Schedule) -> dict[str, Any]:
        """The schedule's JSON form plus its next fire and its last success and failure
        (``core.schedules.schedule_status``)."""
        now = self.clock()
        last: dict[JobState, Job | None] = {}
        for state in (JobState.COMPLETED, JobState.DEAD):
            page = await self.backend.list_jobs(
                JobQuery(schedule_id=schedule.id, states={state}, limit=1))
            last[state] = page.jobs[0] if page.jobs else None
        unfinished = await self.backend.list_jobs(JobQuery(
            schedule_id=schedule.id, states=set(JobState) - TERMINAL_STATES, limit=1))
        return schedule_status(schedule, now, last_success=last[JobState.COMPLETED],
                               last_failure=last[JobState.DEAD], running=bool(unfinished.jobs))

    @audited("pause", target="queue", queue="queue")
    async def pause(self, queue: str) -> None:
        """Stop workers claiming from ``queue`` (enqueue still works)."""
        await self.backend.set_paused(validate_name("queue", queue), True)

    @audited("resume", target="queue", queue="queue")
    async def resume(self, queue: str) -> None:
        """Let workers claim from ``queue`` again."""
        await self.backend.set_paused(validate_name("queue", queue), False)

    async def dead_jobs(
        self, *, queue: str | None = None, handler: str | None = None
    ) -> AsyncIterator[Job]:
        """Every dead job matching the filters, newest first."""
        cursor: str | None = None
        while True:
            page = await self.backend.list_jobs(JobQuery(
                queue=queue, states={JobState.DEAD}, handler=handler, limit=500, cursor=cursor
            ))
            for job in page.jobs:
                yield job
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    @audited("requeue", target="queue", queue="queue", describe=_requeue_detail)
    async def requeue_dead(
        self,
        ids: Sequence[str] | None = None,
        *,
        queue: str | None = None,
        handler: str | None = None,
    ) -> list[str]:
        """Requeue dead jobs by id, or every dead job matching the filters."""
        if ids is None:
            ids = [job.id async for job in self.dead_jobs(queue=queue, handler=handler)]
        moved: list[str] = []
        for start in range(0, len(ids), 500):
            moved += await self.backend.requeue(ids[start : start + 500], now=self.clock())
        return moved

    @audited("purge", target="queue", queue="queue", describe=_purge_detail)
    async def purge_dead(
        self, *, queue: str | None = None, older_than: timedelta = timedelta(0)
    ) -> int:
        """Delete dead jobs (of ``queue``) that died more than ``older_than`` ago."""
        horizon = self.clock() - older_than + timedelta(milliseconds=1)
        total = 0
        while True:
            n = await self.backend.purge(
                states={JobState.DEAD}, finished_before=horizon, queue=queue, limit=1000
            )
            total += n
            if n < 1000:
                return total


def client_from_config(config: Config, *, backend: Backend | None = None,
                       registry: Registry | None = None) -> Client:
    """A client over the configured backend (built, not connected) with the config's defaults
    and its ``[tracing]`` (ConfigError when tracing is enabled without opentelemetry-api)."""
    from monoq.tracing import from_config  # imports OpenTelemetry only when enabled

    tracing = from_config(config.tracing)
    if backend is None:
        backend = open_backend(config.backend.url, config.backend.options)
    if registry is None:
        registry = Registry.discover(config.monoq.imports)
    jobs = config.jobs
    defaults = JobDefaults(queue=jobs.queue, priority=parse_priority(jobs.priority),
                           max_retries=jobs.max_retries, timeout=jobs.timeout_seconds)
    return Client(backend, registry=registry, defaults=defaults, tracing=tracing,
                  limits=config.backpressure.limits())


@contextlib.asynccontextmanager
async def connect(
    url: str | None = None,
    *,
    config: str | os.PathLike[str] | Config | None = None,
    options: Mapping[str, Any] | None = None,
) -> AsyncIterator[Client]:
    """Open a client: ``connect("redis://…")`` or ``connect(config="config.toml")``.

    With a URL, the handlers installed as plugins supply per-handler defaults.
    """
    from monoq.config import Config, load_config  # config imports the client's models

    if url is not None:
        client = Client(open_backend(url, options), registry=Registry.discover())
    else:
        cfg = config if isinstance(config, Config) else load_config(config)
        client = client_from_config(cfg)
    await client.backend.connect()
    try:
        if isinstance(client.backend, ServerTime):  # delays and run_at follow its clock
            from monoq.core.clock import ServerClock

            clock = ServerClock()
            await clock.sync(client.backend.server_now)
            client.clock = clock
        yield client
    finally:
        with anyio.CancelScope(shield=True):
            await client.backend.aclose()


class SyncClient:
    """A blocking facade over ``Client`` for sync code (Django, Flask, scripts).

    It runs an event loop in a background thread; every method blocks until the backend answers.
    """

    def __init__(self, portal: BlockingPortal, client: Client) -> None:
        self._portal = portal
        self.client = client

    def enqueue(self, handler: str, payload: Any = None, **options: Any) -> Job:
        """See ``Client.enqueue``."""
        return self._portal.call(lambda: self.client.enqueue(handler, payload, **options))

    def enqueue_many(self, jobs: Iterable[Mapping[str, Any] | NewJob]) -> list[Job]:
        """See ``Client.enqueue_many``."""
        items = list(jobs)
        return self._portal.call(self.client.enqueue_many, items)

    def get(self, job_id: str) -> Job:
        """See ``Client.get``."""
        return self._portal.call(self.client.get, job_id)

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """See ``Client.wait``."""
        return self._portal.call(self.client.wait, job_id, timeout)

    def cancel(self, job_id: str) -> Job:
        """See ``Client.cancel``."""
        return self._portal.call(self.client.cancel, job_id)

    def retry(self, job_id: str) -> Job:
        """See ``Client.retry``."""
        return self._portal.call(self.client.retry, job_id)

    def attempts(self, job_id: str) -> list[Attempt]:
        """See ``Client.attempts``."""
        return self._portal.call(self.client.attempts, job_id)

    def queues(self) -> list[QueueStats]:
        """See ``Client.queues``."""
        return self._portal.call(self.client.queues)


@contextlib.contextmanager
def connect_sync(
    url: str | None = None,
    *,
    config: str | os.PathLike[str] | Config | None = None,
    options: Mapping[str, Any] | None = None,
) -> Iterator[SyncClient]:
    """The blocking twin of ``connect``."""
    with anyio.from_thread.start_blocking_portal() as portal:
        manager = connect(url, config=config, options=options)
        client = portal.call(manager.__aenter__)
        try:
            yield SyncClient(portal, client)
        finally:
            portal.call(manager.__aexit__, None, None, None)
