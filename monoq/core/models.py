"""Values that cross the Backend protocol: jobs, leases, attempts, stats, pages.

Everything here is an immutable attrs value. Payloads and results travel as JSON bytes so that a
backend stores them without decoding; ``Job.payload`` and ``Job.result`` decode on access.
Datetimes are aware UTC.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final

import attrs

from monoq.core.codec import json_decode
from monoq.errors import ValidationError


class JobState(enum.StrEnum):
    """Where a job is in its life (docs/DESIGN.md §3)."""

    SCHEDULED = "scheduled"  # run_at is in the future (first run)
    QUEUED = "queued"  # ready to be claimed
    RUNNING = "running"  # leased by a worker
    RETRYING = "retrying"  # failed an attempt, waiting for its backoff
    COMPLETED = "completed"
    DEAD = "dead"  # retries exhausted or a non-retryable error: the dead-letter queue
    CANCELLED = "cancelled"


TERMINAL_STATES: Final = frozenset({JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED})
WAITING_STATES: Final = frozenset({JobState.SCHEDULED, JobState.RETRYING})

PRIORITY_NAMES: Final[Mapping[str, int]] = {"high": 0, "normal": 5, "low": 9}
DEFAULT_PRIORITY: Final = 5
DEFAULT_QUEUE: Final = "default"
# The bounds of a job's ``max_retries`` and ``timeout`` (seconds), wherever one is given.
MAX_RETRIES: Final = 1000
MAX_TIMEOUT: Final = 7 * 86400.0

NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
# Idempotency keys carry cron fire times and user ids, so they allow a wider alphabet than names.
KEY_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@/+=-]{0,199}$")


def validate_name(field: str, value: object) -> str:
    """Return ``value`` if it is a valid queue or handler name, else raise ValidationError."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise ValidationError(
            field,
            f"{value!r} is not a valid name: 1-128 characters of letters, digits and _ . : -, "
            "starting with a letter or digit",
        )
    return value


def validate_key(field: str, value: object) -> str:
    """Return ``value`` if it is a valid idempotency key, else raise ValidationError."""
    if not isinstance(value, str) or not KEY_RE.fullmatch(value):
        raise ValidationError(
            field,
            f"{value!r} is not a valid key: 1-200 characters of letters, digits and _ . : @ / + = -,"
            " starting with a letter or digit",
        )
    return value


def validate_number(field: str, value: object, *, low: float, high: float) -> float:
    """``value`` as a float if it is a number (not a bool) from ``low`` to ``high``, else
    raise ValidationError."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(field, f"{value!r} is not a number")
    if not low <= value <= high:  # also refuses NaN, which compares false
        raise ValidationError(field, f"{value!r} is outside {low:g}..{high:g}")
    return float(value)


def parse_priority(value: object) -> int:
    """Turn 0-9 or ``high``/``normal``/``low`` into an int priority (0 runs first)."""
    if isinstance(value, str):
        if value.lower() in PRIORITY_NAMES:
            return PRIORITY_NAMES[value.lower()]
        if value.isdigit():
            value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 9:
        return value
    raise ValidationError("priority", f"{value!r} is not 0-9 or one of high, normal, low")


EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS: Final = timedelta(milliseconds=1)


def to_ms(dt: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime, exactly (integer arithmetic: float
    timestamps can be off by one for far dates). What backends store."""
    return (dt - EPOCH) // ONE_MS


def to_ms_ceil(dt: datetime) -> int:
    """Epoch milliseconds of ``dt`` rounded up: for whole-millisecond stored times ``t``,
    ``t >= dt`` is ``t >= to_ms_ceil(dt)`` and ``t < dt`` is ``t < to_ms_ceil(dt)``."""
    return -((EPOCH - dt) // ONE_MS)


def from_ms(ms: int) -> datetime:
    """The aware UTC datetime of epoch milliseconds, exactly.

    Memoised (datetimes are immutable): the jobs of one claim share their start and lease
    expiry, those of one batch their creation time, and decoding a job makes four of these."""
    dt = _FROM_MS_CACHE.get(ms)
    if dt is None:
        if len(_FROM_MS_CACHE) >= _FROM_MS_CACHE_SIZE:
            _FROM_MS_CACHE.clear()
        dt = _FROM_MS_CACHE[ms] = EPOCH + timedelta(milliseconds=ms)
    return dt


_FROM_MS_CACHE: dict[int, datetime] = {}
_FROM_MS_CACHE_SIZE = 4096


def truncate_ms(dt: datetime) -> datetime:
    """``dt`` truncated to whole milliseconds (towards the past): the precision of every time
    a backend stores for jobs, leases, attempts and workers."""
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def utcnow() -> datetime:
    """The current time, aware UTC, truncated to milliseconds (what every backend stores)."""
    return truncate_ms(datetime.now(UTC))


def rfc3339(dt: datetime | None) -> str | None:
    """RFC 3339 UTC text (``2030-01-01T00:00:00.000Z``) or None."""
    if dt is None:
        return None
    if dt.tzinfo is UTC:  # what backends answer: memoised, as batches share their times
        text = _RFC3339_CACHE.get(dt)
        if text is None:
            if len(_RFC3339_CACHE) >= _RFC3339_CACHE_SIZE:
                _RFC3339_CACHE.clear()
            text = _RFC3339_CACHE[dt] = dt.isoformat(timespec="milliseconds")[:-6] + "Z"
        return text
    return dt.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


_RFC3339_CACHE: Final[dict[datetime, str]] = {}
_RFC3339_CACHE_SIZE: Final = 4096


@attrs.frozen
class NewJob:
    """A job to enqueue. The client fills every default; backends store it as given."""

    id: str
    queue: str
    handler: str
    payload_json: bytes
    priority: int = DEFAULT_PRIORITY
    run_at: datetime | None = None  # None or <= now: queued at once
    max_retries: int = 3
    timeout: float = 300.0  # seconds
    idempotency_key: str | None = None
    schedule_id: str | None = None
    # W3C trace context of the enqueue (see monoq.tracing), stored as given; None untraced
    trace_context: str | None = None


@attrs.frozen
class Job:
    """A stored job, as a backend returns it."""

    id: str
    queue: str
    handler: str
    payload_json: bytes
    priority: int
    state: JobState
    attempt: int  # attempts started so far (counted at claim)
    max_retries: int
    timeout: float
    run_at: datetime
    created_at: datetime
    started_at: datetime | None = None  # start of the latest attempt
    finished_at: datetime | None = None
    idempotency_key: str | None = None
    schedule_id: str | None = None
    result_json: bytes | None = None
    error: str | None = None  # the latest error, "Type: message"
    cancel_requested: bool = False
    worker_id: str | None = None  # holder of the current lease
    lease_expires_at: datetime | None = None
    trace_context: str | None = None  # as NewJob.trace_context
    progress: float | None = None  # 0..1, reported by the running handler; cleared by a retry
    progress_message: str | None = None
    stack_requested: bool = False  # someone asked the running handler's stack (monoq job stack)
    stack: str | None = None  # the latest stack the worker answered with
    stack_at: datetime | None = None

    @property
    def payload(self) -> Any:
        """The payload, decoded from JSON."""
        return json_decode(self.payload_json)

    @property
    def result(self) -> Any:
        """The handler's return value, decoded from JSON (None until completed)."""
        return None if self.result_json is None else json_decode(self.result_json)

    @property
    def terminal(self) -> bool:
        """True once the job is completed, dead or cancelled."""
        return self.state in TERMINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of docs/DESIGN.md §3 (API responses and ``--json`` output)."""
        return {
            "id": self.id,
            "queue": self.queue,
            "handler": self.handler,
            "payload": self.payload,
            "priority": self.priority,
            "state": str(self.state),
            "attempt": self.attempt,
            "max_retries": self.max_retries,
            "timeout": self.timeout,
            "run_at": rfc3339(self.run_at),
            "created_at": rfc3339(self.created_at),
            "started_at": rfc3339(self.started_at),
            "finished_at": rfc3339(self.finished_at),
            "idempotency_key": self.idempotency_key,
            "schedule_id": self.schedule_id,
            "result": self.result,
            "error": self.error,
            "progress": None if self.progress is None else {
                "fraction": self.progress, "message": self.progress_message},
        }


@attrs.frozen
class Enqueued:
    """The answer to one enqueued job: the stored job, and whether this call created it.

    ``created`` is False when the idempotency key matched an existing job; ``job`` is then the
    original.
    """

    job: Job
    created: bool


@attrs.frozen
class Lease:
    """A claim on a running job. Every later call about this run must present ``token``."""

    job: Job
    token: str
    expires_at: datetime

    @property
    def job_id(self) -> str:
        """The leased job's id."""
        return self.job.id


class LeaseStatus(enum.StrEnum):
    """What a heartbeat learns about a lease."""

    HELD = "held"  # extended
    LOST = "lost"  # the token is stale: the job was reaped, released or finished elsewhere
    CANCEL_REQUESTED = "cancel_requested"  # extended, but the job should stop: it was cancelled
    STACK_REQUESTED = "stack_requested"  # extended; someone asked where the handler is now


class Outcome(enum.StrEnum):
    """How a run ends; the worker (or the reaper) picks one, the backend applies it."""

    COMPLETED = "completed"  # -> completed, result stored
    # -> retrying until retry_at, as the retry policy decided (cancelled instead if a cancel was
    # requested); not the operator's retry of a dead job, which is Backend.requeue
    RETRY = "retry"
    DEAD = "dead"  # -> dead (cancelled instead if a cancel was requested)
    CANCELLED = "cancelled"  # -> cancelled
    RELEASED = "released"  # -> queued, attempt refunded (graceful shutdown)


@attrs.frozen
class ErrorInfo:
    """Why an attempt failed."""

    type: str
    message: str
    traceback: str | None = None

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type


def error_type_of(error: str | None) -> str | None:
    """The type part of a stored ``Job.error`` (``str(ErrorInfo)``: "Type: message", or just
    "Type" when the message is empty): the text before the first ": ". None for None.

    What ``list_jobs(error_type=...)`` compares on every backend."""
    if error is None:
        return None
    return error.partition(": ")[0]


# What backpressure counts: jobs that wait to run.
BACKLOG_STATES: Final = (JobState.QUEUED, JobState.SCHEDULED, JobState.RETRYING)


@attrs.frozen
class DepthLimits:
    """Backpressure for ``Backend.enqueue``: the most waiting jobs (queued, scheduled and
    retrying) a queue may hold (``queues`` by name, else ``default``), and all queues together
    (``total``); 0 means no limit."""

    default: int = 0
    queues: Mapping[str, int] = attrs.field(factory=dict)
    total: int = 0

    def limit_for(self, queue: str) -> int:
        """The limit of ``queue`` (0: none)."""
        return self.queues.get(queue, self.default)

    def per_queue(self, jobs: Iterable[NewJob]) -> dict[str, tuple[int, int]]:
        """For each limited queue of ``jobs``: (its limit, how many of ``jobs`` go there)."""
        out: dict[str, tuple[int, int]] = {}
        for job in jobs:
            limit = self.limit_for(job.queue)
            if limit:
                n = out.get(job.queue, (limit, 0))[1]
                out[job.queue] = (limit, n + 1)
        return out


PROGRESS_MESSAGE_LIMIT: Final = 500


@attrs.frozen
class Progress:
    """How far a running job is, for ``Backend.report_progress``: fenced by its lease."""

    lease: Lease
    fraction: float  # 0..1
    message: str | None = None  # at most PROGRESS_MESSAGE_LIMIT characters

    def __attrs_post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:  # also refuses NaN
            raise ValueError(f"progress must be between 0 and 1, got {self.fraction!r}")
        if self.message is not None and len(self.message) > PROGRESS_MESSAGE_LIMIT:
            raise ValueError(f"a progress message is at most {PROGRESS_MESSAGE_LIMIT} characters")


@attrs.frozen
class Finish:
    """One fenced end of a run, for ``Backend.finish``."""

    lease: Lease
    outcome: Outcome
    result_json: bytes | None = None
    error: ErrorInfo | None = None
    retry_at: datetime | None = None  # required for RETRY

    def __attrs_post_init__(self) -> None:
        if self.outcome is Outcome.RETRY and self.retry_at is None:
            raise ValueError("Outcome.RETRY needs retry_at")


class AttemptOutcome(enum.StrEnum):
    """How one recorded attempt ended."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RELEASED = "released"  # handed back on shutdown; its number is reused by the next run


OUTCOME_TO_ATTEMPT: Final[Mapping[Outcome, AttemptOutcome]] = {
    Outcome.COMPLETED: AttemptOutcome.COMPLETED,
    Outcome.RETRY: AttemptOutcome.FAILED,
    Outcome.DEAD: AttemptOutcome.FAILED,
    Outcome.CANCELLED: AttemptOutcome.CANCELLED,
    Outcome.RELEASED: AttemptOutcome.RELEASED,
}

TRACEBACK_LIMIT: Final = 8192


@attrs.frozen
class Attempt:
    """One run of a job: who ran it, when, and how it ended."""

    job_id: str
    attempt: int
    worker_id: str
    started_at: datetime
    finished_at: datetime | None = None
    outcome: AttemptOutcome = AttemptOutcome.RUNNING
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None

    @property
    def duration(self) -> timedelta | None:
        """How long the attempt ran, once it ended."""
        return None if self.finished_at is None else self.finished_at - self.started_at

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the API and ``--json`` output."""
        duration = self.duration
        return {
            "job_id": self.job_id,
            "attempt": self.attempt,
            "worker_id": self.worker_id,
            "started_at": rfc3339(self.started_at),
            "finished_at": rfc3339(self.finished_at),
            "duration": None if duration is None else duration.total_seconds(),
            "outcome": str(self.outcome),
            "error_type": self.error_type,
            "error_message": self.error_message,
            "traceback": self.traceback,
        }


@attrs.frozen
class QueueStats:
    """Counts by state of one queue, whether it is paused, and how old its oldest ready job is.

    ``oldest_queued_at`` is the smallest ``run_at`` among the queue's QUEUED jobs (None when
    none is queued): how long the head of the line has been waiting. SCHEDULED and RETRYING
    jobs do not count until they are promoted.
    """

    queue: str
    counts: Mapping[JobState, int]
    paused: bool = False
    oldest_queued_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the API and ``--json`` output."""
        return {
            "queue": self.queue,
            "paused": self.paused,
            "counts": {str(s): self.counts.get(s, 0) for s in JobState},
            "oldest_queued_at": rfc3339(self.oldest_queued_at),
        }


@attrs.frozen
class ThroughputBucket:
    """Runs that ended in ``[start, start + bucket)``, as ``Backend.throughput`` answers them.

    ``completed`` counts attempts that ended COMPLETED, ``failed`` attempts that ended FAILED
    (whether the job was retried later or went dead; an expired lease reaped by a scheduler is
    a failed attempt too), ``dead`` jobs that became DEAD (each such job also counts once in
    ``failed``, since its last attempt failed). ``start`` is aware UTC and aligned to a
    multiple of the bucket size since the epoch.
    """

    start: datetime
    completed: int = 0
    failed: int = 0
    dead: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the API."""
        return {
            "start": rfc3339(self.start),
            "completed": self.completed,
            "failed": self.failed,
            "dead": self.dead,
        }


def _query_states(value: Iterable[JobState | str] | None) -> frozenset[JobState] | None:
    """``JobQuery.states`` as a set of states (None: every state)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    states: set[JobState] = set()
    for item in value:
        try:
            states.add(JobState(item))
        except ValueError:
            allowed = ", ".join(s.value for s in JobState)
            raise ValidationError("state", f"{item!r} is not one of {allowed}") from None
    return frozenset(states)


@attrs.frozen
class JobQuery:
    """What one ``list_jobs`` page asks for: the filters, the page size and the cursor.

    One value carries every filter from the API, the dashboard and the CLI through the client
    to the backends, so that adding a filter touches this class and the backends that serve
    it. Building one checks it (``ValidationError``, nothing is read): ``states`` are states
    or their names, the names and texts are non-empty strings, the times are aware.

    ``schedule_id`` selects the runs of one schedule; ``error_type`` the jobs whose last error
    has that type (``error_type_of``); ``finished_after`` (inclusive) and ``finished_before``
    (exclusive) bound ``finished_at``, so a job that has not finished matches neither.
    ``cursor`` is the ``next_cursor`` of the previous page. A ``limit`` of zero or less asks
    for nothing (the protocol's rule); the client and the API allow 1..``MAX_LIMIT``.
    """

    queue: str | None = None
    states: frozenset[JobState] | None = attrs.field(default=None, converter=_query_states)
    handler: str | None = None
    limit: int = 50
    cursor: str | None = None
    schedule_id: str | None = None
    error_type: str | None = None
    finished_after: datetime | None = None
    finished_before: datetime | None = None

    MAX_LIMIT: ClassVar[int] = 1000

    def __attrs_post_init__(self) -> None:
        for field in ("queue", "handler", "cursor", "schedule_id", "error_type"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValidationError(field, f"{value!r} is not a non-empty string")
        if isinstance(self.limit, bool) or not isinstance(self.limit, int):
            raise ValidationError("limit", f"{self.limit!r} is not an integer")
        for field in ("finished_after", "finished_before"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
                raise ValidationError(field, f"{value!r} is not an aware datetime; use UTC")

    @property
    def windowed(self) -> bool:
        """Whether a finish window (either bound) is given."""
        return self.finished_after is not None or self.finished_before is not None

    def listed_states(self) -> frozenset[JobState] | None:
        """The states a match may be in: ``states`` (None: any), narrowed to the terminal ones
        when a finish window is given (only they have a finish time)."""
        if not self.windowed:
            return self.states
        return TERMINAL_STATES if self.states is None else self.states & TERMINAL_STATES

    @property
    def empty(self) -> bool:
        """Whether the query cannot match anything (no page to read): a limit of zero or less,
        no states, or a finish window with no terminal state asked for."""
        listed = self.listed_states()
        return self.limit <= 0 or (listed is not None and not listed)

    def matches(self, job: Job) -> bool:
        """Whether ``job`` passes every filter (the cursor and the limit aside)."""
        if self.queue is not None and job.queue != self.queue:
            return False
        if self.states is not None and job.state not in self.states:
            return False
        if self.handler is not None and job.handler != self.handler:
            return False
        if self.schedule_id is not None and job.schedule_id != self.schedule_id:
            return False
        if self.error_type is not None and error_type_of(job.error) != self.error_type:
            return False
        if self.windowed:
            done = job.finished_at
            if done is None:
                return False
            if self.finished_after is not None and done < self.finished_after:
                return False
            if self.finished_before is not None and done >= self.finished_before:
                return False
        return True


@attrs.frozen
class Page:
    """One page of ``list_jobs``: newest first; pass ``next_cursor`` for the next page."""

    jobs: list[Job]
    next_cursor: str | None


@attrs.frozen
class WorkerInfo:
    """A live worker process, as its heartbeat reports it."""

    id: str
    host: str
    pid: int
    roles: tuple[str, ...]
    queues: tuple[str, ...]
    concurrency: int
    busy: int
    started_at: datetime
    last_seen: datetime
    # Jobs this worker process has run to an outcome since it started.
    processed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the API and ``--json`` output."""
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "roles": list(self.roles),
            "queues": list(self.queues),
            "concurrency": self.concurrency,
            "busy": self.busy,
            "started_at": rfc3339(self.started_at),
            "last_seen": rfc3339(self.last_seen),
            "processed": self.processed,
        }


class OverlapPolicy(enum.StrEnum):
    """What a schedule does when its previous run has not finished at fire time."""

    ALLOW = "allow"  # fire anyway
    SKIP = "skip"  # skip this fire


class MisfirePolicy(enum.StrEnum):
    """What a schedule does about fire times missed while no scheduler ran."""

    SKIP = "skip"  # forget them; fire again at the next fire time
    ONCE = "once"  # fire one catch-up run (for the latest missed time), never a burst


SCHEDULE_ORIGINS: Final = ("config", "api")
# The bounds of a schedule's ``every``, in seconds: 1 ms to 366 days.
MIN_EVERY: Final = 0.001
MAX_EVERY: Final = 366 * 86400.0


@attrs.frozen
class Schedule:
    """A recurring job: a cron expression or a fixed interval, and the job it enqueues.

    ``last_fire_at`` is the newest fire time (UTC) already handled, fired or skipped; schedulers
    advance it after each fire so that a restart neither repeats nor bursts. ``origin`` tells
    whether ``config.toml`` owns the schedule (config sync disables it when it leaves the file)
    or it was made over the API or CLI.
    """

    id: str
    handler: str
    cron: str | None = None  # 5 fields, or 6 with seconds first
    every: float | None = None  # seconds; exactly one of cron and every is set
    timezone: str = "UTC"  # IANA name
    payload_json: bytes = b"null"
    queue: str = DEFAULT_QUEUE
    priority: int = DEFAULT_PRIORITY
    max_retries: int | None = None  # None: the handler's or config's default
    timeout: float | None = None
    enabled: bool = True
    overlap: OverlapPolicy = OverlapPolicy.ALLOW
    misfire: MisfirePolicy = MisfirePolicy.SKIP
    origin: str = "api"
    created_at: datetime | None = None
    updated_at: datetime | None = None
    last_fire_at: datetime | None = None

    @property
    def payload(self) -> Any:
        """The payload of each run, decoded from JSON."""
        return json_decode(self.payload_json)

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the API and ``--json`` output."""
        return {
            "id": self.id,
            "handler": self.handler,
            "cron": self.cron,
            "every": self.every,
            "timezone": self.timezone,
            "payload": self.payload,
            "queue": self.queue,
            "priority": self.priority,
            "max_retries": self.max_retries,
            "timeout": self.timeout,
            "enabled": self.enabled,
            "overlap": str(self.overlap),
            "misfire": str(self.misfire),
            "origin": self.origin,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
            "last_fire_at": rfc3339(self.last_fire_at),
        }
