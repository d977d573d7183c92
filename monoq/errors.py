"""Every exception monoq raises on purpose.

This module imports nothing from monoq, so every layer can use it.
"""

from __future__ import annotations

from datetime import timedelta


class MonoqError(Exception):
    """Base for every error monoq raises on purpose."""


class ConfigError(MonoqError):
    """The configuration is invalid; the message starts with the dotted key."""


class ValidationError(MonoqError):
    """A value given by a caller (name, priority, delay, payload) is not acceptable.

    Nothing was changed. ``field`` names the offending input.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class BackendError(MonoqError):
    """The backend failed; the driver's exception is ``__cause__``."""


class BackendUnavailable(BackendError):
    """Transient failure (connection refused, locked, timeout): the call changed nothing; call
    again later (a caller's retry of the call, not a job's retry)."""


class BackendNotShared(MonoqError):
    """The backend lives inside one process and cannot be reached from another."""


class UnknownBackend(ConfigError):
    """No backend is registered for the URL's scheme."""


class HandlerNotFound(MonoqError):
    """No handler is registered under this name."""


class JobNotFound(MonoqError):
    """No job has this id (or it was purged by retention)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class ScheduleNotFound(MonoqError):
    """No schedule has this id."""

    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"no schedule with id {schedule_id!r}")
        self.schedule_id = schedule_id


class Conflict(MonoqError):
    """The job is in a state that does not allow the operation (e.g. cancel a finished job)."""


class QueueFull(MonoqError):
    """An enqueue refused by backpressure: the queue (or every queue together) already holds
    its most waiting jobs. Nothing of the call was written; retry later (HTTP: 429)."""

    def __init__(self, queue: str | None, depth: int, limit: int) -> None:
        self.queue, self.depth, self.limit = queue, depth, limit
        where = f"queue {queue!r}" if queue is not None else "all queues together"
        key = "backpressure.max_total" if queue is None else "backpressure.max_depth"
        super().__init__(f"{where} already hold{'s' if queue else ''} {depth} waiting jobs, "
                         f"and this call would pass the limit of {limit} ({key}); nothing was "
                         "enqueued, retry later")


class SerializationError(MonoqError):
    """A payload or result is not JSON."""


class WaitTimeout(MonoqError):
    """``wait`` gave up before the job reached a terminal state."""


class JobControl(Exception):  # a signal from a handler, not an error
    """Raised by handlers to steer the worker; not an error."""


class Retry(JobControl):
    """Retry this job after ``after`` (default: the retry policy's backoff).

    The handler's request for the RETRY outcome: the attempt fails and still counts towards
    ``max_retries``; when none are left the job goes dead as with any failure.
    """

    def __init__(self, after: timedelta | float | None = None, reason: str = "") -> None:
        if isinstance(after, int | float):
            after = timedelta(seconds=after)
        self.after = after
        self.reason = reason
        super().__init__(reason or f"retry requested (after={after})")


class SkipRetry(JobControl):
    """Dead-letter the job now, whatever retries remain."""

    def __init__(self, reason: str = "") -> None:
        self.reason = reason
        super().__init__(reason or "handler asked not to retry")
