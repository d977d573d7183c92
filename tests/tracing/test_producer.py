"""Producer spans: every enqueue through the client makes one, and stores its context."""

from __future__ import annotations

import attrs
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from monoq.backends.memory import MemoryBackend
from monoq.client import Client, client_from_config
from monoq.config import BackendConfig, Config, TracingConfig
from monoq.core.models import Enqueued, NewJob
from monoq.errors import BackendUnavailable
from monoq.tracing import TRACE_CONTEXT_MAX, Tracing
from tests.tracing._support import PROVIDER, Spans

pytestmark = pytest.mark.anyio

TRACER = PROVIDER.get_tracer("tests")


def traceparent(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    assert ctx is not None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


def traced_client() -> Client:
    return Client(MemoryBackend(), tracing=Tracing())


async def test_submit_makes_a_producer_span_under_the_callers_span(spans: Spans) -> None:
    client = traced_client()
    with TRACER.start_as_current_span("request") as request:
        answer = await client.submit("emails.send", {"to": "a@example.com"}, queue="mail")
    [send] = spans.named("send")
    assert send.name == "send mail"
    assert send.kind is SpanKind.PRODUCER
    assert send.parent is not None
    assert send.parent.span_id == request.get_span_context().span_id
    assert send.context is not None
    assert send.context.trace_id == request.get_span_context().trace_id
    assert dict(send.attributes or {}) == {
        "messaging.system": "monoq",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "mail",
        "messaging.message.id": answer.job.id,
        "monoq.job.handler": "emails.send",
        "monoq.job.created": True,
    }
    assert send.status.status_code is StatusCode.UNSET
    stored = await client.get(answer.job.id)
    assert stored.trace_context == traceparent(send)
    assert answer.job.trace_context == traceparent(send)


async def test_without_a_current_span_the_producer_span_is_a_root(spans: Spans) -> None:
    answer = await traced_client().submit("noop")
    [send] = spans.named("send")
    assert send.parent is None
    assert answer.job.trace_context == traceparent(send)


async def test_a_batch_makes_one_producer_span_per_job(spans: Spans) -> None:
    client = traced_client()
    with TRACER.start_as_current_span("request") as request:
        jobs = await client.enqueue_many([{"handler": "a", "queue": "q1"},
                                          {"handler": "b", "queue": "q2"}])
    sends = sorted(spans.named("send"), key=lambda s: str((s.attributes or {})["monoq.job.handler"]))
    assert [s.name for s in sends] == ["send q1", "send q2"]
    for job, send in zip(jobs, sends, strict=True):
        assert send.parent is not None
        assert send.parent.span_id == request.get_span_context().span_id
        attributes = send.attributes or {}
        assert attributes["messaging.message.id"] == job.id
        assert attributes["messaging.batch.message_count"] == 2
        assert job.trace_context == traceparent(send)
        assert (await client.get(job.id)).trace_context == traceparent(send)


async def test_an_idempotent_replay_keeps_the_original_context(spans: Spans) -> None:
    client = traced_client()
    first = await client.submit("noop", idempotency_key="k1")
    again = await client.submit("noop", idempotency_key="k1")
    assert not again.created
    assert again.job.id == first.job.id
    assert again.job.trace_context == first.job.trace_context
    original, replay = sorted(spans.named("send"), key=lambda s: s.start_time or 0)
    assert (replay.attributes or {})["messaging.message.id"] == first.job.id
    assert (replay.attributes or {})["monoq.job.created"] is False
    assert first.job.trace_context == traceparent(original)


async def test_a_context_set_by_the_caller_is_kept(spans: Spans) -> None:
    client = traced_client()
    given = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    new = attrs.evolve(client.build("noop"), trace_context=given)
    answer = await client.submit_job(new)
    assert answer.job.trace_context == given
    assert len(spans.named("send")) == 1


async def test_a_failed_enqueue_is_an_error_span(spans: Spans) -> None:
    class Down(MemoryBackend):
        async def enqueue(self, jobs: object, **kw: object) -> list[Enqueued]:
            raise BackendUnavailable("backend is down")

    client = Client(Down(), tracing=Tracing())
    with pytest.raises(BackendUnavailable):
        await client.submit("noop")
    with pytest.raises(BackendUnavailable):
        await client.submit_many([{"handler": "noop"}, {"handler": "noop"}])
    sends = spans.named("send")
    assert len(sends) == 3
    for send in sends:
        assert send.status.status_code is StatusCode.ERROR
        assert (send.attributes or {})["error.type"] == "BackendUnavailable"
        assert [e.name for e in send.events] == ["exception"]


async def test_client_from_config_traces_only_when_enabled(spans: Spans) -> None:
    backend = BackendConfig(url="memory://")
    off = client_from_config(Config(backend=backend))
    assert off.tracing is None
    await off.submit("noop")
    assert spans.all() == []
    on = client_from_config(Config(backend=backend, tracing=TracingConfig(
        enabled=True, consumer="link")))
    assert on.tracing is not None
    assert on.tracing.consumer == "link"
    answer = await on.submit("noop")
    [send] = spans.named("send")
    assert answer.job.trace_context == traceparent(send)


def test_the_stored_format_is_traceparent_then_tracestate() -> None:
    tracing = Tracing()
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    context = tracing.extract(f"{parent} vendor=abc,other=x")
    assert context is not None
    span = trace.get_current_span(context)
    assert span.get_span_context().trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert span.get_span_context().trace_state.get("vendor") == "abc"
    assert tracing.inject(span) == f"{parent} vendor=abc,other=x"
    assert tracing.extract(parent) is not None


def test_a_tracestate_too_long_to_store_is_left_out() -> None:
    tracing = Tracing()
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    members = ",".join(f"k{i}={'v' * 200}" for i in range(6))
    context = tracing.extract(f"{parent} {members}"[:4000])
    assert context is not None
    stored = tracing.inject(trace.get_current_span(context))
    assert stored is not None
    assert len(stored) <= TRACE_CONTEXT_MAX


@pytest.mark.parametrize("stored", [None, "", "garbage", "00-" + "0" * 32 + "-" + "0" * 16 + "-01",
                                    "01-zz"])
def test_no_or_bad_stored_context_extracts_to_none(stored: str | None) -> None:
    assert Tracing().extract(stored) is None


def test_the_consumer_mode_is_checked() -> None:
    with pytest.raises(ValueError, match="child, link"):
        Tracing(consumer="sibling")


def test_new_jobs_carry_no_context_untraced() -> None:
    new = Client(MemoryBackend()).build("noop")
    assert isinstance(new, NewJob)
    assert new.trace_context is None
