"""Schedule storage and schedule runs: the part of the contract the cron scheduler relies on."""

from __future__ import annotations

import attrs
import pytest

from monoq.core.backend import Backend
from monoq.core.ids import new_id
from monoq.core.models import (
    JobQuery,
    JobState,
    MisfirePolicy,
    NewJob,
    Outcome,
    OverlapPolicy,
    Schedule,
)
from monoq.testing.support import T0, at, claim_one, enqueue, finish, payload

pytestmark = pytest.mark.anyio  # the suite's tests are async, in any host project


def schedule(schedule_id: str = "nightly", **changes: object) -> Schedule:
    base = Schedule(
        id=schedule_id, handler="echo", cron="0 3 * * *", timezone="Europe/Paris",
        payload_json=payload({"report": True}), queue="reports", priority=2, max_retries=4,
        timeout=60.0, overlap=OverlapPolicy.SKIP, misfire=MisfirePolicy.ONCE, origin="config",
        created_at=T0, updated_at=T0,
    )
    return attrs.evolve(base, **changes)  # type: ignore[arg-type]


def run(schedule_id: str, n: int, priority: int = 5) -> NewJob:
    return NewJob(id=new_id(), queue="reports", handler="echo", payload_json=payload(n),
                  priority=priority, idempotency_key=f"cron:{schedule_id}:{n}",
                  schedule_id=schedule_id)


async def test_schedule_round_trips_every_field(backend: Backend) -> None:
    original = schedule(every=None, last_fire_at=at(5))
    await backend.put_schedule(original)
    assert await backend.get_schedule("nightly") == original
    interval = schedule("tick", cron=None, every=1.5, enabled=False, overlap=OverlapPolicy.ALLOW,
                        misfire=MisfirePolicy.SKIP, max_retries=None, timeout=None,
                        timezone="UTC", origin="api")
    await backend.put_schedule(interval)
    assert await backend.get_schedule("tick") == interval


async def test_unknown_schedule_is_none(backend: Backend) -> None:
    assert await backend.get_schedule("nope") is None
    assert await backend.delete_schedule("nope") is False
    assert await backend.advance_schedule("nope", at(1)) is False


async def test_put_replaces_and_list_is_by_id(backend: Backend) -> None:
    await backend.put_schedule(schedule("b"))
    await backend.put_schedule(schedule("a"))
    await backend.put_schedule(schedule("b", cron="*/5 * * * *", enabled=False))
    listed = await backend.list_schedules()
    assert [s.id for s in listed] == ["a", "b"]
    assert listed[1].cron == "*/5 * * * *"
    assert listed[1].enabled is False


async def test_delete_keeps_the_runs(backend: Backend) -> None:
    await backend.put_schedule(schedule())
    [job] = await enqueue(backend, run("nightly", 1))
    assert await backend.delete_schedule("nightly") is True
    assert await backend.get_schedule("nightly") is None
    assert await backend.list_schedules() == []
    kept = await backend.get(job.id)
    assert kept is not None
    assert kept.schedule_id == "nightly"


async def test_advance_only_moves_forward(backend: Backend) -> None:
    await backend.put_schedule(schedule())
    assert await backend.advance_schedule("nightly", at(10)) is True
    assert await backend.advance_schedule("nightly", at(5)) is False
    assert await backend.advance_schedule("nightly", at(10)) is False
    stored = await backend.get_schedule("nightly")
    assert stored is not None
    assert stored.last_fire_at == at(10)
    assert await backend.advance_schedule("nightly", at(11)) is True


async def test_list_jobs_filters_by_schedule(backend: Backend) -> None:
    mine = await enqueue(backend, run("a", 1), run("a", 2))
    await enqueue(backend, run("b", 1))
    page = await backend.list_jobs(JobQuery(schedule_id="a"))
    assert [j.id for j in page.jobs] == [mine[1].id, mine[0].id]
    assert all(j.schedule_id == "a" for j in page.jobs)
    unfinished = await backend.list_jobs(JobQuery(schedule_id="a", states={JobState.RUNNING}))
    assert unfinished.jobs == []


async def test_same_fire_key_fires_once(backend: Backend) -> None:
    first = run("nightly", 7)
    second = attrs.evolve(run("nightly", 7), id=new_id())
    [a] = await backend.enqueue([first], now=T0)
    [b] = await backend.enqueue([second], now=at(1))
    assert a.created
    assert not b.created
    assert b.job.id == a.job.id


async def test_purge_runs_keeps_the_newest_and_unfinished(backend: Backend) -> None:
    # the oldest run has the lowest priority, so it stays queued while the others finish
    jobs = await enqueue(backend, run("s", 0, priority=9), *(run("s", n) for n in range(1, 15)))
    for job in jobs[1:]:
        lease = await claim_one(backend, job.id, now=at(1))
        await finish(backend, lease, Outcome.COMPLETED, now=at(2))
    other = await enqueue(backend, run("other", 1))
    deleted = await backend.purge_schedule_runs("s", keep=10, limit=1000)
    assert deleted == 4  # jobs[1:5]: old and finished; jobs[0] is old but still queued
    remaining = await backend.list_jobs(JobQuery(schedule_id="s", limit=100))
    assert {j.id for j in remaining.jobs} == {jobs[0].id} | {j.id for j in jobs[5:]}
    assert await backend.get(other[0].id) is not None
    # the purged runs' keys are free again
    [again] = await backend.enqueue([run("s", 1)], now=at(3))
    assert again.created


async def test_purge_runs_respects_limit(backend: Backend) -> None:
    jobs = await enqueue(backend, *(run("s", n) for n in range(6)))
    for job in jobs:
        lease = await claim_one(backend, job.id, now=at(1))
        await finish(backend, lease, Outcome.COMPLETED, now=at(2))
    assert await backend.purge_schedule_runs("s", keep=1, limit=2) == 2
    assert await backend.purge_schedule_runs("s", keep=1, limit=100) == 3
    assert [j.id for j in (await backend.list_jobs(JobQuery(schedule_id="s"))).jobs] == [jobs[-1].id]
