"""Cron in the scheduler role: firing, misfire and overlap policies, sync, retention.

Every test drives ``Scheduler.tick`` with a fixed ``now``; nothing sleeps.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import attrs
import pytest

from monoq.backends.memory import MemoryBackend
from monoq.client import Client
from monoq.core.codec import json_encode
from monoq.core.models import (
    ErrorInfo,
    Finish,
    JobQuery,
    JobState,
    MisfirePolicy,
    Outcome,
    OverlapPolicy,
    Schedule,
)
from monoq.registry import Registry
from monoq.scheduler import Scheduler, SchedulerSettings

pytestmark = pytest.mark.anyio

T0 = datetime(2030, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(clock: Clock) -> Client:
    return Client(MemoryBackend(), registry=Registry.discover(), clock=clock)


def every(seconds: float, sid: str = "tick", **changes: object) -> Schedule:
    s = Schedule(id=sid, handler="echo", every=seconds, payload_json=json_encode({"n": 1}),
                 created_at=T0, updated_at=T0)
    return attrs.evolve(s, **changes)  # type: ignore[arg-type]


def scheduler(client: Client, **settings: object) -> Scheduler:
    return Scheduler(client, SchedulerSettings(**settings))  # type: ignore[arg-type]


async def runs(client: Client, sid: str = "tick") -> list[str]:
    page = await client.backend.list_jobs(JobQuery(schedule_id=sid, limit=1000))
    return sorted(j.idempotency_key or "" for j in page.jobs)


async def test_fires_once_per_fire_time_however_often_it_ticks(client: Client,
                                                               clock: Clock) -> None:
    await client.backend.put_schedule(every(60))
    a, b = scheduler(client), scheduler(client)  # two schedulers on one backend
    for second in (0, 0, 1, 30, 59):
        clock.now = T0 + timedelta(seconds=second)
        await a.tick(clock.now)
        await b.tick(clock.now)
    clock.now = T0 + timedelta(seconds=60)
    report = await b.tick(clock.now)
    await a.tick(clock.now)
    assert await runs(client) == ["cron:tick:2030-01-01T00:00:00Z",
                                  "cron:tick:2030-01-01T00:01:00Z"]
    assert report.next_at == T0 + timedelta(seconds=120)
    [job] = (await client.backend.list_jobs(JobQuery(schedule_id="tick", limit=1))).jobs
    assert job.payload == {"n": 1}
    assert job.handler == "echo"
    stored = await client.backend.get_schedule("tick")
    assert stored is not None
    assert stored.last_fire_at == T0 + timedelta(seconds=60)


async def test_fire_times_before_the_schedule_existed_do_not_fire(client: Client,
                                                                  clock: Clock) -> None:
    await client.backend.put_schedule(every(3600, created_at=T0 + timedelta(minutes=10)))
    clock.now = T0 + timedelta(minutes=10)
    await scheduler(client).tick(clock.now)
    assert await runs(client) == []


async def test_after_downtime_skip_fires_nothing_and_once_fires_one(client: Client,
                                                                    clock: Clock) -> None:
    daily = "0 3 * * *"
    await client.backend.put_schedule(every(0, "skipper", every=None, cron=daily,
                                            last_fire_at=T0 + timedelta(hours=3)))
    await client.backend.put_schedule(every(0, "catcher", every=None, cron=daily,
                                            misfire=MisfirePolicy.ONCE,
                                            last_fire_at=T0 + timedelta(hours=3)))
    # the scheduler was down for three days and comes back at 10:00
    clock.now = T0 + timedelta(days=3, hours=10)
    s = scheduler(client)
    await s.tick(clock.now)
    await s.tick(clock.now + timedelta(seconds=1))
    assert await runs(client, "skipper") == []
    assert await runs(client, "catcher") == ["cron:catcher:2030-01-04T03:00:00Z"]  # no burst
    # both are back on their timetable for the next day
    clock.now = T0 + timedelta(days=4, hours=3)
    await s.tick(clock.now)
    assert await runs(client, "skipper") == ["cron:skipper:2030-01-05T03:00:00Z"]


async def test_fire_times_missed_within_the_grace_each_fire_once_in_order(
        client: Client, clock: Clock) -> None:
    # A per-second schedule whose scheduler could not reach the backend for 3.5 s (a Redis
    # restart): every second it missed fires, each once, because each is within the grace.
    await client.backend.put_schedule(every(1, last_fire_at=T0))
    s = scheduler(client, misfire_grace=timedelta(seconds=5))
    clock.now = T0 + timedelta(seconds=3.5)
    report = await s.tick(clock.now)
    await scheduler(client, misfire_grace=timedelta(seconds=5)).tick(clock.now)  # a second one
    assert report.fired == 3
    assert await runs(client) == [f"cron:tick:2030-01-01T00:00:0{n}Z" for n in (1, 2, 3)]
    page = await client.backend.list_jobs(JobQuery(schedule_id="tick", limit=10))
    assert [j.idempotency_key for j in sorted(page.jobs, key=lambda j: j.id)] == \
        [f"cron:tick:2030-01-01T00:00:0{n}Z" for n in (1, 2, 3)]  # enqueued oldest first


async def test_fire_times_older_than_the_grace_are_missed(client: Client,
                                                          clock: Clock) -> None:
    await client.backend.put_schedule(every(1, last_fire_at=T0))
    clock.now = T0 + timedelta(seconds=10.5)  # down for 10 s, grace 5 s
    await scheduler(client, misfire_grace=timedelta(seconds=5)).tick(clock.now)
    assert await runs(client) == [f"cron:tick:2030-01-01T00:00:{n:02d}Z"
                                  for n in range(6, 11)]
    stored = await client.backend.get_schedule("tick")
    assert stored is not None
    assert stored.last_fire_at == T0 + timedelta(seconds=10)


async def test_overlap_skip_waits_for_the_previous_run(client: Client, clock: Clock) -> None:
    await client.backend.put_schedule(every(10, overlap=OverlapPolicy.SKIP))
    s = scheduler(client)
    await s.tick(clock.now)
    clock.now = T0 + timedelta(seconds=10)
    await s.tick(clock.now)  # the first run is still queued: skipped
    assert len(await runs(client)) == 1
    [lease] = await client.backend.claim(["default"], limit=1, lease_for=timedelta(seconds=30),
                                         worker_id="w", now=clock.now)
    await client.backend.finish([Finish(lease, Outcome.COMPLETED, result_json=b"1")],
                                now=clock.now)
    clock.now = T0 + timedelta(seconds=20)
    await s.tick(clock.now)
    assert await runs(client) == ["cron:tick:2030-01-01T00:00:00Z",
                                  "cron:tick:2030-01-01T00:00:20Z"]


async def test_overlap_allow_fires_regardless(client: Client, clock: Clock) -> None:
    await client.backend.put_schedule(every(10))
    s = scheduler(client)
    for second in (0, 10, 20):
        clock.now = T0 + timedelta(seconds=second)
        await s.tick(clock.now)
    assert len(await runs(client)) == 3


async def test_disabled_schedules_do_not_fire(client: Client, clock: Clock) -> None:
    await client.backend.put_schedule(every(10, enabled=False))
    await scheduler(client).tick(clock.now)
    assert await runs(client) == []


async def test_config_sync_adds_updates_and_disables(client: Client, clock: Clock) -> None:
    s = scheduler(client)
    api_made = every(60, "from-api", origin="api")
    await client.backend.put_schedule(api_made)
    report = await s.sync((every(60, "a", origin="config"), every(60, "b", origin="config")),
                          clock.now)
    assert report.added == ("a", "b")
    await client.backend.advance_schedule("a", T0)
    clock.now = T0 + timedelta(hours=1)
    again = await s.sync((every(60, "a", origin="config"), every(60, "b", origin="config")),
                         clock.now)
    assert again == type(again)()  # nothing changed, nothing written
    report = await s.sync((every(30, "a", origin="config"),), clock.now)
    assert report.updated == ("a",)
    assert report.disabled == ("b",)
    a = await client.backend.get_schedule("a")
    b = await client.backend.get_schedule("b")
    assert a is not None
    assert b is not None
    assert a.every == 30
    assert a.last_fire_at == T0  # history kept: no repeat of a fire already made
    assert a.created_at == T0
    assert b.enabled is False
    assert await client.backend.get_schedule("from-api") == api_made  # left alone
    assert [x.id for x in await client.backend.list_schedules()] == ["a", "b", "from-api"]


async def test_retention_keeps_the_last_runs_of_each_schedule(client: Client,
                                                              clock: Clock) -> None:
    await client.backend.put_schedule(every(1))
    s = scheduler(client, runs_per_schedule=10, retention_interval=timedelta(0))
    for second in range(40):
        clock.now = T0 + timedelta(seconds=second)
        await s.tick(clock.now)
        for lease in await client.backend.claim(["default"], limit=10,
                                                lease_for=timedelta(seconds=30),
                                                worker_id="w", now=clock.now):
            await client.backend.finish(
                [Finish(lease, Outcome.DEAD, error=ErrorInfo("E", "x"))], now=clock.now)
    await s.tick(clock.now + timedelta(milliseconds=1))
    kept = await runs(client)
    assert len(kept) == 10
    assert kept[-1] == "cron:tick:2030-01-01T00:00:39Z"


async def test_a_trigger_runs_now_outside_the_timetable(client: Client) -> None:
    schedule = every(3600)
    await client.backend.put_schedule(schedule)
    job = await client.trigger_schedule(schedule.id)
    assert job.schedule_id == "tick"
    assert job.state is JobState.QUEUED
    assert job.idempotency_key is None


async def test_invalid_stored_schedule_is_logged_not_fatal(client: Client, clock: Clock,
                                                           caplog: pytest.LogCaptureFixture
                                                           ) -> None:
    await client.backend.put_schedule(every(0, "broken", every=None, cron="not cron"))
    await client.backend.put_schedule(every(60))
    report = await scheduler(client).tick(clock.now)
    assert report.fired == 1
    assert "schedule broken is invalid" in caplog.text

