"""What a handler gets besides its payload: ``monoq.Context``.

Kept apart from the worker, so that a handler package's ``import monoq`` does not import the
worker, anyio's task machinery or the Prometheus client.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TypeVar

import attrs

from monoq.core.models import PROGRESS_MESSAGE_LIMIT, Job
from monoq.errors import ConfigError
from monoq.plugin import Plugin

P = TypeVar("P", bound=Plugin)


@attrs.define(eq=False)
class Context:
    """What a handler gets besides its payload.

    ``cancelled`` is set when the job should stop (cancelled, lease lost, shutdown); async
    handlers are also interrupted by cancellation, sync ones should check it.
    """

    job: Job
    lease_token: str
    worker_id: str
    _plugins: Mapping[type[Plugin], Plugin] = attrs.field(factory=dict, kw_only=True,
                                                          alias="plugins")
    _logger: logging.LoggerAdapter[logging.Logger] | None = attrs.field(default=None, init=False)
    _cancelled: threading.Event | None = attrs.field(default=None, init=False)
    _stop: bool = attrs.field(default=False, init=False)
    # The latest progress report not yet sent (the worker sends it at most once a second).
    _progress: tuple[float, str | None] | None = attrs.field(default=None, init=False)

    @property
    def cancelled(self) -> threading.Event:
        """Set when the job should stop: cancelled, timed out, lease lost or shutdown."""
        if self._cancelled is None:  # made on first use: most handlers never look
            self._cancelled = threading.Event()
            if self._stop:
                self._cancelled.set()
        return self._cancelled

    def _signal_stop(self) -> None:
        self._stop = True
        if self._cancelled is not None:
            self._cancelled.set()

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger named after the handler that tags every record with ``job_id``."""
        if self._logger is None:
            self._logger = logging.LoggerAdapter(
                logging.getLogger(f"monoq.job.{self.job.handler}"), {"job_id": self.job.id})
        return self._logger

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Say how far the job is: ``fraction`` from 0 to 1, and an optional short message
        (at most 500 characters; longer ones are cut). Cheap enough for a tight loop: only the
        latest report is kept and the worker stores it at most once a second (and once more
        when the job ends). Shown by ``GET /api/v1/jobs/{id}``, ``monoq job show`` and the
        dashboard; a retry clears it. Callable from async and sync handlers (and threads)."""
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) \
                or not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress must be a number from 0 to 1, got {fraction!r}")
        if message is not None:
            message = str(message)
            if len(message) > PROGRESS_MESSAGE_LIMIT:
                message = message[: PROGRESS_MESSAGE_LIMIT - 1] + "…"
        self._progress = (float(fraction), message)

    def _take_progress(self) -> tuple[float, str | None] | None:
        """The report to send, if any, now marked as sent."""
        report, self._progress = self._progress, None
        return report

    def plugin(self, cls: type[P]) -> P:
        """This worker's running instance of the plugin class ``cls``."""
        found = self._plugins.get(cls)
        if found is None:
            raise ConfigError(f"plugin {cls.name or cls.__qualname__!r} is not running in this "
                              "worker (is its module a registered handler module?)")
        return found  # type: ignore[return-value]  # keyed by its own class

    @property
    def job_id(self) -> str:
        """The job's id."""
        return self.job.id

    @property
    def attempt(self) -> int:
        """This run's attempt number, 1 for the first run."""
        return self.job.attempt

    @property
    def queue(self) -> str:
        """The job's queue."""
        return self.job.queue
