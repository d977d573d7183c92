"""Tracing with OpenTelemetry: a span for every enqueue and for every attempt of a job.

Off unless ``opentelemetry-api`` is installed (the ``monoq[otel]`` extra) and ``[tracing]
enabled = true``. When it is off nothing here imports OpenTelemetry, ``Client.tracing`` is None
and the enqueue path pays one attribute check. Spans go to the tracer provider the application
set up (an SDK and an exporter, e.g. ``opentelemetry-instrument monoq run``, or a module in
``[monoq] imports`` that configures the SDK); with the API alone they are no-ops, but the trace
context of an incoming request still travels with the job.

Spans (OpenTelemetry's messaging semantic conventions, ``messaging.system = "monoq"``):

- ``send {queue}`` (PRODUCER), one per enqueued job, in the caller's context: the Python
  client, the CLI, the HTTP API (whose incoming ``traceparent`` is the parent: see
  ``monoq.api.tracecontext``) and cron fires. Attributes: ``messaging.operation.type`` "send",
  ``messaging.destination.name`` (the queue), ``messaging.message.id`` (the job id; the
  original job's on an idempotent replay), ``monoq.job.handler``, ``monoq.job.created``
  (False on a replay), ``monoq.schedule.id`` for a schedule's run. A batch
  (``Client.submit_many``) makes one such span per job, plus ``messaging.batch.message_count``.
- ``process {queue}`` (CONSUMER), one per attempt, around the handler, current while it runs
  (spans a handler makes are its children). ``[tracing] consumer`` says how it relates to the
  job's producer span: ``child`` (default) makes it a child, so the request's trace shows the
  job's every attempt, and also links to it, as the conventions ask of consumers; ``link``
  makes each attempt the root of a trace of its own, linked to the producer span (for jobs that
  run long after the request, or fan-outs that would make one trace huge). Attributes:
  ``messaging.operation.type`` "process", ``messaging.destination.name``,
  ``messaging.message.id``, ``messaging.client.id`` (the worker id), ``monoq.job.handler``,
  ``monoq.job.attempt`` (1 for the first), ``monoq.job.outcome`` (completed, retry, dead,
  cancelled, released; ``interrupted`` when the worker itself was stopped mid-call),
  ``monoq.job.retry_at`` for a retry, ``monoq.job.lease_lost`` when the outcome was discarded,
  ``monoq.job.stop_reason`` for a cancelled or released attempt (not an error of the job).
  A failed attempt (retry or dead) has status ERROR, ``error.type`` and an ``exception``
  event (``exception.type``, ``exception.message``, ``exception.stacktrace``) made from the
  error the worker records, so timeouts and failures in a child process are recorded alike.
  A sync handler's thread sees the span as current too; a handler with ``isolation =
  "process"`` runs in a child process, whose own spans are not parented to it.
- ``fire {schedule id}`` (INTERNAL) around each cron fire: the root of a new trace, with the
  producer span of the run under it, so one run of a schedule, its retries included, is one
  trace. A schedule lives for months; one trace for all its runs would never end, and the
  request that created the schedule is long over. Attributes ``monoq.schedule.id``,
  ``monoq.schedule.fire_time``, ``monoq.schedule.late`` and ``monoq.schedule.outcome``
  (enqueued; duplicate when another scheduler fired it first; skipped when ``overlap = skip``
  found the previous run unfinished). A manual trigger (``POST .../trigger``) is an ordinary
  enqueue, in the trace of its request.

Retries, manual retries and requeues from the dead-letter queue run the same job, so they keep
its stored context: every attempt is in the original trace.

The stored trace context (``NewJob.trace_context`` and ``Job.trace_context``) is the W3C
``traceparent`` header value of the producer span (``00-<trace id>-<span id>-<flags>``),
followed by one space and the W3C ``tracestate`` value when there is one; at most 1024
characters (``TRACE_CONTEXT_MAX``: a ``tracestate`` that would pass it is left out). None when
the job was enqueued untraced. A context the caller put on a ``NewJob`` is kept as given.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import attrs

from monoq.core.models import Enqueued, Finish, Job, NewJob, Outcome, rfc3339
from monoq.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.context import Context as OtelContext
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from monoq.config import TracingConfig

__all__ = [
    "CONSUMER_MODES",
    "SYSTEM",
    "TRACE_CONTEXT_MAX",
    "ConsumerSpan",
    "Tracing",
    "from_config",
    "otel_installed",
]

SYSTEM: Final = "monoq"  # messaging.system
TRACE_CONTEXT_MAX: Final = 1024
CONSUMER_MODES: Final = ("child", "link")
EXTRA_HINT: Final = "pip install 'monoq[otel]'"
_FAILED: Final = frozenset({Outcome.RETRY, Outcome.DEAD})


def otel_installed() -> bool:
    """Whether ``opentelemetry-api`` can be imported (found without importing it)."""
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except (ImportError, ValueError):
        return False


def from_config(config: TracingConfig) -> Tracing | None:
    """The process's ``Tracing`` for ``[tracing]``, or None when it is disabled.

    ConfigError naming ``tracing.enabled`` when it is enabled but ``opentelemetry-api`` is
    missing.
    """
    if not config.enabled:
        return None
    if not otel_installed():
        raise ConfigError(
            "tracing.enabled: tracing is enabled but opentelemetry-api is not installed; "
            f"install the otel extra ({EXTRA_HINT}) or set tracing.enabled = false")
    return Tracing(consumer=config.consumer)


def _version() -> str | None:
    try:
        return importlib.metadata.version("monoq")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a checkout
        return None


class Tracing:
    """Makes monoq's spans. One per process, held by ``Client.tracing``.

    ``tracer_provider`` defaults to OpenTelemetry's global one (looked up at each span, so a
    provider the application sets after monoq started is used).
    """

    def __init__(self, *, consumer: str = "child",
                 tracer_provider: TracerProvider | None = None) -> None:
        if consumer not in CONSUMER_MODES:
            raise ValueError(f"consumer must be one of {', '.join(CONSUMER_MODES)}")
        from opentelemetry import trace
        from opentelemetry.context import Context as OtelContext
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.consumer = consumer
        self._trace = trace
        self._root = OtelContext  # Context() is an empty context: a new trace's root
        self._w3c = TraceContextTextMapPropagator()
        self.tracer: Tracer = trace.get_tracer("monoq", _version(),
                                               tracer_provider=tracer_provider)

    # -- the stored context -----------------------------------------------------------------

    def inject(self, span: Span) -> str | None:
        """``span``'s context in the stored format, or None when it has none (no SDK, no
        parent)."""
        context = span.get_span_context()  # formatted as the W3C propagator does, faster
        if not context.is_valid:
            return None
        parent = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
        state = context.trace_state.to_header() if context.trace_state else ""
        if state and len(parent) + 1 + len(state) <= TRACE_CONTEXT_MAX:
            return f"{parent} {state}"
        return parent

    def extract(self, stored: str | None) -> OtelContext | None:
        """The context of a stored trace context, or None when there is none or it is not
        valid (a job enqueued untraced, or stored by something else)."""
        if not stored:
            return None
        parent, _, state = stored[:TRACE_CONTEXT_MAX].partition(" ")
        carrier = {"traceparent": parent}
        if state:
            carrier["tracestate"] = state
        context = self._w3c.extract(carrier, context=self._root())
        span = self._trace.get_current_span(context)
        return context if span.get_span_context().is_valid else None

    # -- producing ----------------------------------------------------------------------------

    def _send_span(self, new: NewJob, batch: int | None = None) -> Span:
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.destination.name": new.queue,
            "messaging.message.id": new.id,
            "monoq.job.handler": new.handler,
        }
        if new.schedule_id is not None:
            attributes["monoq.schedule.id"] = new.schedule_id
        if batch is not None:
            attributes["messaging.batch.message_count"] = batch
        return self.tracer.start_span(f"send {new.queue}", kind=self._trace.SpanKind.PRODUCER,
                                      attributes=attributes)

    def _with_context(self, new: NewJob, span: Span) -> NewJob:
        if new.trace_context is not None:
            return new
        return attrs.evolve(new, trace_context=self.inject(span))

    @staticmethod
    def _sent(span: Span, answer: Enqueued) -> None:
        span.set_attribute("messaging.message.id", answer.job.id)
        span.set_attribute("monoq.job.created", answer.created)

    async def send(self, new: NewJob, enqueue: Callable[[NewJob], Awaitable[Enqueued]]
                   ) -> Enqueued:
        """``enqueue(new)`` in a producer span, with the span's context stored on the job."""
        span = self._send_span(new)
        with self._trace.use_span(span, end_on_exit=True, record_exception=False,
                                  set_status_on_exception=False):
            try:
                answer = await enqueue(self._with_context(new, span))
            except Exception as exc:
                self._error(span, type(exc).__name__, str(exc))
                span.record_exception(exc)
                raise
            self._sent(span, answer)
            return answer

    async def send_many(self, jobs: Sequence[NewJob],
                        enqueue: Callable[[list[NewJob]], Awaitable[list[Enqueued]]]
                        ) -> list[Enqueued]:
        """``enqueue(jobs)`` (one backend call) with one producer span per job."""
        spans = [self._send_span(new, len(jobs)) for new in jobs]
        try:
            answers = await enqueue([self._with_context(new, span)
                                     for new, span in zip(jobs, spans, strict=True)])
            for span, answer in zip(spans, answers, strict=True):
                self._sent(span, answer)
        except Exception as exc:
            for span in spans:
                self._error(span, type(exc).__name__, str(exc))
                span.record_exception(exc)
            raise
        finally:
            for span in spans:
                span.end()
        return answers

    # -- consuming ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def consume(self, job: Job, worker_id: str) -> Iterator[ConsumerSpan]:
        """The span of one attempt of ``job`` (as claimed: ``job.attempt`` is this one's
        number), current while the block runs. Call ``record(finish)`` on it with the
        attempt's outcome; an exception leaving the block is recorded as an error."""
        trace = self._trace
        producer = self.extract(job.trace_context)
        links = []
        if producer is not None:
            links.append(trace.Link(trace.get_current_span(producer).get_span_context()))
        parent = producer if producer is not None and self.consumer == "child" else self._root()
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": job.queue,
            "messaging.message.id": job.id,
            "messaging.client.id": worker_id,
            "monoq.job.handler": job.handler,
            "monoq.job.attempt": job.attempt,
        }
        if job.schedule_id is not None:
            attributes["monoq.schedule.id"] = job.schedule_id
        with self.tracer.start_as_current_span(
                f"process {job.queue}", context=parent, kind=trace.SpanKind.CONSUMER,
                links=links, attributes=attributes, record_exception=False,
                set_status_on_exception=False) as span:
            handle = ConsumerSpan(span, self)
            try:
                yield handle
            except Exception as exc:
                span.set_attribute("monoq.job.outcome", "error")
                self._error(span, type(exc).__name__, str(exc))
                span.record_exception(exc)
                raise
            except BaseException:  # cancelled with the worker: not the job's failure
                span.set_attribute("monoq.job.outcome", "interrupted")
                raise

    def _error(self, span: Span, type_name: str, message: str) -> None:
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute("error.type", type_name)
        span.set_status(Status(StatusCode.ERROR, f"{type_name}: {message}" if message
                               else type_name))

    # -- cron ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def fire(self, schedule_id: str, due: datetime, *, late: bool) -> Iterator[Span]:
        """The span of one cron fire: a new trace's root, current while the block runs (the
        run's producer span is its child). Set ``monoq.schedule.outcome`` on it."""
        attributes: dict[str, Any] = {
            "monoq.schedule.id": schedule_id,
            "monoq.schedule.fire_time": rfc3339(due) or "",
            "monoq.schedule.late": late,
        }
        with self.tracer.start_as_current_span(
                f"fire {schedule_id}", context=self._root(), kind=self._trace.SpanKind.INTERNAL,
                attributes=attributes) as span:
            yield span


@attrs.define(eq=False)
class ConsumerSpan:
    """One attempt's span, as ``Tracing.consume`` yields it."""

    span: Span
    _tracing: Tracing

    def record(self, finish: Finish, *, lost: bool = False) -> None:
        """Record how the attempt ended: ``monoq.job.outcome``, and for a failed attempt
        (retry or dead) status ERROR with an ``exception`` event from ``finish.error``.
        ``lost``: the lease was lost meanwhile, so the outcome was discarded."""
        span = self.span
        span.set_attribute("monoq.job.outcome", str(finish.outcome))
        if lost:
            span.set_attribute("monoq.job.lease_lost", True)
        if finish.retry_at is not None:
            span.set_attribute("monoq.job.retry_at", rfc3339(finish.retry_at) or "")
        error = finish.error
        if finish.outcome in _FAILED and error is not None:
            self._tracing._error(span, error.type, error.message)
            event: dict[str, Any] = {"exception.type": error.type,
                                     "exception.message": error.message}
            if error.traceback:
                event["exception.stacktrace"] = error.traceback
            span.add_event("exception", event)
        elif error is not None:  # cancelled or released: said, not an error of the job
            span.set_attribute("monoq.job.stop_reason", str(error))
