"""The tracing tests' OpenTelemetry SDK: one provider with an in-memory exporter.

It is installed as the global provider once per test session (OpenTelemetry allows that
once), so that ``client_from_config`` and the API pick it up as they do in production.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))
trace.set_tracer_provider(PROVIDER)

# The hook the worker needs (monoq/worker.py is edited separately): tests of consumer spans
# fail with this message until Worker._call opens Tracing.consume around the handler.
HOOK_MISSING = ("no 'process' span: the worker hook is missing (Worker._call must run the "
                "handler inside client.tracing.consume(job, worker_id) and record the Finish; "
                "see monoq.tracing.Tracing.consume)")


class Spans:
    """The finished spans, with look-ups by name and kind."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self.exporter = exporter

    def all(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [s for s in self.all() if s.name.startswith(prefix)]

    def kind(self, kind: trace.SpanKind) -> list[ReadableSpan]:
        return [s for s in self.all() if s.kind is kind]

    def consumers(self) -> list[ReadableSpan]:
        """The process spans, oldest first; fails loudly when the worker hook is missing."""
        found = sorted(self.kind(trace.SpanKind.CONSUMER), key=lambda s: s.start_time or 0)
        assert found, HOOK_MISSING
        return found
