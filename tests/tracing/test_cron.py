"""Cron fires: each fire is the root of a new trace, with the run's producer span under it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest
from opentelemetry.trace import SpanKind

from monoq.backends.memory import MemoryBackend
from monoq.client import Client
from monoq.core.codec import json_encode
from monoq.core.models import JobQuery, OverlapPolicy, Schedule
from monoq.registry import Registry
from monoq.scheduler import Scheduler, SchedulerSettings
from monoq.tracing import Tracing
from tests.tracing._support import PROVIDER, Spans

pytestmark = pytest.mark.anyio

T0 = datetime(2030, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def schedule(**changes: Any) -> Schedule:
    s = Schedule(id="nightly", handler="echo", every=60.0, payload_json=json_encode({"n": 1}),
                 created_at=T0, updated_at=T0)
    return attrs.evolve(s, **changes)


async def traced(clock: Clock) -> tuple[Client, Scheduler]:
    client = Client(MemoryBackend(), registry=Registry.discover(), clock=clock,
                    tracing=Tracing())
    return client, Scheduler(client, SchedulerSettings())


def attrs_of(span: Any) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_a_fire_is_a_trace_root_with_the_runs_producer_span_under_it(
        spans: Spans) -> None:
    clock = Clock()
    client, scheduler = await traced(clock)
    await client.backend.put_schedule(schedule())
    clock.now = T0 + timedelta(seconds=60)
    # even when the scheduler runs inside some other span, a fire starts its own trace
    with PROVIDER.get_tracer("tests").start_as_current_span("unrelated"):
        await scheduler.tick(clock.now)
    [fire] = spans.named("fire")
    [send] = spans.named("send")
    assert fire.name == "fire nightly"
    assert fire.kind is SpanKind.INTERNAL
    assert fire.parent is None
    assert attrs_of(fire) == {
        "monoq.schedule.id": "nightly",
        "monoq.schedule.fire_time": "2030-01-01T00:01:00.000Z",
        "monoq.schedule.late": False,
        "monoq.schedule.outcome": "enqueued",
    }
    assert send.parent is not None and fire.context is not None and send.context is not None
    assert send.parent.span_id == fire.context.span_id
    assert send.context.trace_id == fire.context.trace_id
    assert attrs_of(send)["monoq.schedule.id"] == "nightly"
    [run] = (await client.backend.list_jobs(JobQuery(schedule_id="nightly", limit=5))).jobs
    ctx = send.context
    assert run.trace_context == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


async def test_every_fire_is_a_trace_of_its_own(spans: Spans) -> None:
    clock = Clock()
    client, scheduler = await traced(clock)
    await client.backend.put_schedule(schedule())
    for minute in (1, 2):
        clock.now = T0 + timedelta(minutes=minute)
        await scheduler.tick(clock.now)
    fires = spans.named("fire")
    assert len(fires) == 2
    assert len({f.context.trace_id for f in fires if f.context is not None}) == 2


async def test_a_fire_another_scheduler_made_is_a_duplicate(spans: Spans) -> None:
    clock = Clock()
    client, first = await traced(clock)
    second = Scheduler(client, SchedulerSettings())
    await client.backend.put_schedule(schedule())
    clock.now = T0 + timedelta(seconds=60)
    await first.tick(clock.now)
    stored = await client.backend.get_schedule("nightly")
    assert stored is not None
    await client.backend.put_schedule(attrs.evolve(stored, last_fire_at=None))  # as if raced
    await second.tick(clock.now)
    outcomes = sorted(str(attrs_of(f)["monoq.schedule.outcome"]) for f in spans.named("fire"))
    assert outcomes == ["duplicate", "enqueued"]


async def test_a_fire_skipped_for_overlap_says_so(spans: Spans) -> None:
    clock = Clock()
    client, scheduler = await traced(clock)
    await client.backend.put_schedule(schedule(overlap=OverlapPolicy.SKIP))
    for minute in (1, 2):  # the first run is still queued at the second fire
        clock.now = T0 + timedelta(minutes=minute)
        await scheduler.tick(clock.now)
    outcomes = [attrs_of(f)["monoq.schedule.outcome"]
                for f in sorted(spans.named("fire"), key=lambda s: s.start_time or 0)]
    assert outcomes == ["enqueued", "skipped"]
    assert len(spans.named("send")) == 1


async def test_a_manual_trigger_is_an_enqueue_in_the_callers_trace(spans: Spans) -> None:
    clock = Clock()
    client, _ = await traced(clock)
    await client.backend.put_schedule(schedule())
    with PROVIDER.get_tracer("tests").start_as_current_span("request") as request:
        await client.trigger_schedule("nightly")
    assert spans.named("fire") == []
    [send] = spans.named("send")
    assert send.parent is not None
    assert send.parent.span_id == request.get_span_context().span_id


async def test_untraced_fires_make_no_spans(spans: Spans) -> None:
    clock = Clock()
    client = Client(MemoryBackend(), registry=Registry.discover(), clock=clock)
    await client.backend.put_schedule(schedule())
    clock.now = T0 + timedelta(seconds=60)
    await Scheduler(client, SchedulerSettings()).tick(clock.now)
    [run] = (await client.backend.list_jobs(JobQuery(schedule_id="nightly", limit=5))).jobs
    assert run.trace_context is None
    assert spans.all() == []
