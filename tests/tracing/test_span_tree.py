"""The whole trace: enqueue over HTTP with a ``traceparent``, run with a worker, fail once and
retry, and check the span tree; and a cron fire's run.

The consumer ("process") spans come from the worker hook (``Worker._call`` runs the handler
inside ``client.tracing.consume``): until it is in, these tests fail with ``HOOK_MISSING``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from litestar.testing import AsyncTestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

import monoq
from monoq.api import create_app
from monoq.client import Client, client_from_config
from monoq.config import ApiConfig, Config, load_config
from monoq.core.codec import json_encode
from monoq.core.models import JobQuery, JobState, Schedule
from monoq.registry import Registry
from monoq.scheduler import Scheduler, SchedulerSettings
from monoq.supervisor import Supervisor
from tests.tracing._support import HOOK_MISSING, PROVIDER, Spans

pytestmark = pytest.mark.anyio

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
TRACER = PROVIDER.get_tracer("handlers")


@monoq.handler("tracing.flaky")
async def flaky(ctx: monoq.Context, payload: Any) -> str:
    """Fails its first attempt; makes a span of its own in each."""
    with TRACER.start_as_current_span(f"inside attempt {ctx.attempt}"):
        if ctx.attempt == 1:
            raise ValueError("boom on the first attempt")
        return "ok"


@monoq.handler("tracing.sync_inner")
def sync_inner(ctx: monoq.Context, payload: Any) -> str:
    """A sync handler (run in a thread): its spans are children of the attempt's too."""
    with TRACER.start_as_current_span("inside the thread"):
        return "done"


@monoq.handler("tracing.doomed", max_retries=0)
async def doomed(ctx: monoq.Context, payload: Any) -> None:
    raise KeyError("missing")


def registry() -> Registry:
    reg = Registry.discover()
    for func in (flaky, sync_inner, doomed):
        reg.add_function(func)
    return reg


def config(consumer: str = "child") -> Config:
    return load_config(os.devnull, env={}, overrides={
        "backend.url": "memory://",
        "worker.heartbeat_seconds": 0.05,
        "worker.lease_seconds": 2,
        "worker.grace_seconds": 2,
        "retry.base_seconds": 0.01,
        "retry.max_seconds": 0.05,
        "tracing.enabled": True,
        "tracing.consumer": consumer,
        "worker.queues": ["default", "work"],
    })


@asynccontextmanager
async def running(cfg: Config) -> AsyncIterator[Client]:
    """A worker and a scheduler in this process over a traced client from ``cfg``."""
    reg = registry()
    client = client_from_config(cfg, registry=reg)
    assert client.tracing is not None
    supervisor = Supervisor(cfg, roles=("worker", "scheduler"), client=client, registry=reg,
                            handle_signals=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(supervisor.run)
        await anyio.lowlevel.checkpoint()
        try:
            yield client
        finally:
            supervisor.stop()


async def submit_over_http(client: Client, body: dict[str, Any]) -> str:
    async with AsyncTestClient(app=create_app(client, ApiConfig())) as http:
        response = await http.post("/api/v1/jobs", json=body,
                                   headers={"traceparent": TRACEPARENT})
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}"


def attrs_of(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_http_enqueue_a_failed_attempt_and_its_retry_form_one_tree(spans: Spans) -> None:
    async with running(config("child")) as client:
        job_id = await submit_over_http(client, {"handler": "tracing.flaky", "queue": "work"})
        with anyio.fail_after(10):
            job = await client.wait(job_id)
    assert job.state is JobState.COMPLETED
    assert job.attempt == 2

    [send] = spans.named("send")
    assert send.parent is not None
    assert f"{send.parent.span_id:016x}" == PARENT_ID
    assert trace_id(send) == TRACE_ID

    first, second = spans.consumers()
    for number, span in ((1, first), (2, second)):
        assert span.name == "process work"
        assert span.kind is SpanKind.CONSUMER
        assert trace_id(span) == TRACE_ID  # the retry stays in the original trace
        assert span.parent is not None
        assert span.parent.span_id == span_id(send)  # child of the producer span ...
        assert [link.context.span_id for link in span.links] == [span_id(send)]  # ... and linked
        attributes = attrs_of(span)
        assert attributes["messaging.system"] == "monoq"
        assert attributes["messaging.operation.type"] == "process"
        assert attributes["messaging.destination.name"] == "work"
        assert attributes["messaging.message.id"] == job_id
        assert attributes["monoq.job.handler"] == "tracing.flaky"
        assert attributes["monoq.job.attempt"] == number
        assert isinstance(attributes["messaging.client.id"], str)

    assert attrs_of(first)["monoq.job.outcome"] == "retry"
    assert "monoq.job.retry_at" in attrs_of(first)
    assert first.status.status_code is StatusCode.ERROR
    assert attrs_of(first)["error.type"] == "ValueError"
    [event] = [e for e in first.events if e.name == "exception"]
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "ValueError"
    assert event.attributes["exception.message"] == "boom on the first attempt"
    assert "boom on the first attempt" in str(event.attributes["exception.stacktrace"])

    assert attrs_of(second)["monoq.job.outcome"] == "completed"
    assert second.status.status_code is not StatusCode.ERROR
    assert not [e for e in second.events if e.name == "exception"]

    # the handler's own spans are children of their attempt's span
    inner = {s.name: s for s in spans.named("inside attempt")}
    assert inner["inside attempt 1"].parent is not None
    assert inner["inside attempt 1"].parent.span_id == span_id(first)
    assert inner["inside attempt 2"].parent is not None
    assert inner["inside attempt 2"].parent.span_id == span_id(second)


async def test_with_consumer_link_each_attempt_is_a_root_linked_to_the_enqueue(
        spans: Spans) -> None:
    async with running(config("link")) as client:
        job_id = await submit_over_http(client, {"handler": "tracing.flaky"})
        with anyio.fail_after(10):
            await client.wait(job_id)
    [send] = spans.named("send")
    assert trace_id(send) == TRACE_ID
    first, second = spans.consumers()
    for span in (first, second):
        assert span.parent is None
        assert trace_id(span) != TRACE_ID
        [link] = span.links
        assert link.context.span_id == span_id(send)
        assert f"{link.context.trace_id:032x}" == TRACE_ID
    assert trace_id(first) != trace_id(second)
    assert attrs_of(first)["monoq.job.outcome"] == "retry"
    assert attrs_of(second)["monoq.job.outcome"] == "completed"


async def test_a_sync_handlers_spans_are_children_of_its_attempt(spans: Spans) -> None:
    async with running(config()) as client:
        job = await client.enqueue("tracing.sync_inner")
        with anyio.fail_after(10):
            await client.wait(job.id)
    [process] = spans.consumers()
    [inner] = spans.named("inside the thread")
    assert inner.parent is not None
    assert inner.parent.span_id == span_id(process)


async def test_a_dead_attempt_records_its_exception(spans: Spans) -> None:
    async with running(config()) as client:
        job = await client.enqueue("tracing.doomed")
        with anyio.fail_after(10):
            done = await client.wait(job.id)
    assert done.state is JobState.DEAD
    [process] = spans.consumers()
    assert attrs_of(process)["monoq.job.outcome"] == "dead"
    assert process.status.status_code is StatusCode.ERROR
    [event] = [e for e in process.events if e.name == "exception"]
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "KeyError"


async def test_a_manual_retry_of_a_dead_job_stays_in_its_trace(spans: Spans) -> None:
    async with running(config()) as client:
        job = await client.enqueue("tracing.doomed")
        with anyio.fail_after(10):
            await client.wait(job.id)
            await client.retry(job.id)
            while len(await client.attempts(job.id)) < 2 \
                    or not (await client.get(job.id)).terminal:
                await anyio.sleep(0.01)
    [send] = spans.named("send")
    attempts = spans.consumers()
    assert len(attempts) == 2
    assert {trace_id(s) for s in attempts} == {trace_id(send)}


async def test_a_cron_runs_attempts_are_in_the_fires_trace(spans: Spans) -> None:
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    async with running(config()) as client:
        await client.backend.put_schedule(Schedule(
            id="nightly", handler="tracing.flaky", every=60.0, payload_json=json_encode(None),
            created_at=t0, updated_at=t0))
        scheduler = Scheduler(client, SchedulerSettings())
        await scheduler.tick(t0 + timedelta(seconds=60))
        [run] = (await client.backend.list_jobs(JobQuery(schedule_id="nightly", limit=5))).jobs
        with anyio.fail_after(10):
            await client.wait(run.id)
    [fire] = spans.named("fire")
    attempts = spans.consumers()
    assert len(attempts) == 2
    assert {trace_id(s) for s in attempts} == {trace_id(fire)}
    assert {attrs_of(s)["monoq.schedule.id"] for s in attempts} == {"nightly"}


def test_hook_message_names_what_is_missing() -> None:
    assert "Worker._call" in HOOK_MISSING
    assert trace.get_tracer_provider() is PROVIDER
