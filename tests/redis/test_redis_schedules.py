"""Redis-specific behaviour of schedules and their run index (the contract is in
tests/conformance/test_schedules.py): every deletion path keeps the index exact and leaves no
key of a deleted run behind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from monoq.backends.redis import RedisBackend
from monoq.backends.redis import _backend as redis_backend_module
from monoq.core.ids import new_id
from monoq.core.models import Finish, JobQuery, JobState, NewJob, Outcome, Schedule

pytestmark = pytest.mark.redis

T0 = datetime(2030, 1, 1, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def run(schedule_id: str, n: int, queue: str = "reports") -> NewJob:
    return NewJob(
        id=new_id(), queue=queue, handler="echo", payload_json=b"1",
        idempotency_key=f"cron:{schedule_id}:{n}", schedule_id=schedule_id,
    )


async def complete_all(b: RedisBackend, queues: list[str], now: datetime) -> None:
    leases = await b.claim(queues, limit=1000, lease_for=LEASE, worker_id="w", now=now)
    await b.finish([Finish(lease, Outcome.COMPLETED) for lease in leases], now=now)


async def keys(client: aioredis.Redis) -> set[str]:
    return {k.decode() async for k in client.scan_iter(count=1000)}


async def test_schedule_times_round_trip_to_the_microsecond(redis_backend: RedisBackend) -> None:
    t = datetime(2030, 1, 1, 3, 0, 0, 123456, tzinfo=UTC)
    s = Schedule(id="s", handler="echo", every=60.0, created_at=t, updated_at=t, last_fire_at=t)
    await redis_backend.put_schedule(s)
    assert await redis_backend.get_schedule("s") == s
    assert await redis_backend.advance_schedule("s", t + timedelta(microseconds=1))
    assert not await redis_backend.advance_schedule("s", t)


async def test_purged_runs_leave_no_key_and_no_index_entry(
    redis_backend: RedisBackend, redis_client: aioredis.Redis
) -> None:
    b = redis_backend
    await b.enqueue([run("s", n) for n in range(5)], now=T0)
    await complete_all(b, ["reports"], T0)
    assert await b.purge_schedule_runs("s", keep=0) == 5
    # purge by horizon goes through the same index
    await b.enqueue([run("s", n) for n in range(5, 8)], now=T0)
    await complete_all(b, ["reports"], T0)
    assert await b.purge(states={JobState.COMPLETED}, finished_before=T0 + LEASE) == 3
    assert await b.purge_schedule_runs("s", keep=0) == 0
    left = await keys(redis_client)
    assert not any(":job:" in k or ":att:" in k for k in left), left
    assert "monoq:schedruns:s" not in left  # an empty ZSET is no key
    for key in ("monoq:jobq", "monoq:{reports}:idem"):
        assert not await redis_client.exists(key)
    assert not [k for k in left if ":ids" in k], left  # no id index holds them either
    assert await redis_client.zcard("monoq:{reports}:completed") == 0
    assert (await b.list_jobs(JobQuery(schedule_id="s"))).jobs == []


async def test_runs_across_queues_are_one_history(redis_backend: RedisBackend) -> None:
    b = redis_backend
    # the schedule's queue was edited between runs: its history spans two queues
    old = await b.enqueue([run("s", n, queue="a") for n in range(3)], now=T0)
    new = await b.enqueue([run("s", n, queue="b") for n in range(3, 5)], now=T0)
    await complete_all(b, ["a", "b"], T0)
    everything = await b.list_jobs(JobQuery(schedule_id="s", limit=2))
    assert [j.id for j in everything.jobs] == [new[1].job.id, new[0].job.id]
    rest = await b.list_jobs(JobQuery(schedule_id="s", cursor=everything.next_cursor))
    assert [j.id for j in rest.jobs] == [e.job.id for e in reversed(old)]
    only_a = await b.list_jobs(JobQuery(schedule_id="s", queue="a", handler="echo"))
    assert len(only_a.jobs) == 3
    assert await b.purge_schedule_runs("s", keep=3) == 2  # the two oldest, in queue a
    remaining = await b.list_jobs(JobQuery(schedule_id="s"))
    assert [j.id for j in remaining.jobs] == [
        new[1].job.id, new[0].job.id, old[2].job.id
    ]


async def test_orphan_index_entries_are_skipped_and_dropped(
    redis_backend: RedisBackend, redis_client: aioredis.Redis
) -> None:
    b = redis_backend
    jobs = await b.enqueue([run("s", n) for n in range(3)], now=T0)
    await complete_all(b, ["reports"], T0)
    ghost = new_id()  # newer than every run: an entry whose job is gone
    await redis_client.zadd("monoq:schedruns:s", {ghost: 0})
    page = await b.list_jobs(JobQuery(schedule_id="s"))
    assert [j.id for j in page.jobs] == [e.job.id for e in reversed(jobs)]
    # the ghost does not count as one of the kept runs, and is cleaned up
    assert await b.purge_schedule_runs("s", keep=1) == 2
    assert await redis_client.zrange("monoq:schedruns:s", 0, -1) == [jobs[2].job.id.encode()]


async def test_purge_runs_carries_on_past_the_scan_budget(
    redis_backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_backend_module, "_LIST_SCAN", 3)
    b = redis_backend
    done = await b.enqueue([run("s", n, queue="done") for n in range(4)], now=T0)
    await complete_all(b, ["done"], T0)
    # newer runs that are still queued: more than one scan's worth
    await b.enqueue([run("s", n, queue="waiting") for n in range(4, 12)], now=T0)
    assert await b.purge_schedule_runs("s", keep=2, limit=3) == 3
    assert await b.purge_schedule_runs("s", keep=2) == 1
    assert await b.get(done[0].job.id) is None
    assert len((await b.list_jobs(JobQuery(schedule_id="s", limit=100))).jobs) == 8


async def test_schedule_runs_come_in_bounded_pages(
    redis_backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One call walks at most ``_PAGE_SCAN`` runs: a rare match deep in the run index comes
    after short pages with cursors, once, and the last page has no cursor."""
    b = redis_backend
    [failed] = await b.enqueue([run("s", 0)], now=T0)
    [lease] = await b.claim(["reports"], limit=1, lease_for=LEASE, worker_id="w", now=T0)
    await b.finish([Finish(lease, Outcome.DEAD)], now=T0)
    await b.enqueue([run("s", n) for n in range(1, 8)], now=T0)
    await complete_all(b, ["reports"], T0)
    monkeypatch.setattr(redis_backend_module, "_PAGE_SCAN", 3)
    first = await b.list_jobs(JobQuery(schedule_id="s", states={JobState.DEAD}, limit=1))
    assert first.jobs == []
    assert first.next_cursor is not None
    seen: list[str] = []
    cursor: str | None = first.next_cursor
    calls = 1
    while cursor is not None:
        page = await b.list_jobs(JobQuery(schedule_id="s", states={JobState.DEAD}, limit=1,
                                 cursor=cursor))
        seen += [job.id for job in page.jobs]
        cursor = page.next_cursor
        calls += 1
        assert calls < 10
    assert seen == [failed.job.id]
    # a full page within the walk: the cursor is its last job
    newest = await b.list_jobs(JobQuery(schedule_id="s", states={JobState.COMPLETED}, limit=2))
    assert len(newest.jobs) == 2
    assert newest.next_cursor == newest.jobs[-1].id
