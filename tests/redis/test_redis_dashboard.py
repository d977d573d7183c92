"""Redis-specific promises of the dashboard data: bounded pages that merge across queues,
finish windows read from the terminal sorted sets by score, and a self-pruning counter hash.

The shared contract is in tests/conformance/test_dashboard.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from monoq.backends.redis import RedisBackend
from monoq.backends.redis import _backend as redis_backend_module
from monoq.core.counters import COUNTER_RETENTION_MINUTES, minute_of
from monoq.core.ids import new_id
from monoq.core.models import ErrorInfo, Finish, Job, JobQuery, JobState, NewJob, Outcome

pytestmark = pytest.mark.redis

T0 = datetime(2030, 1, 1, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def new_job(queue: str = "default") -> NewJob:
    return NewJob(id=new_id(), queue=queue, handler="echo", payload_json=b"1")


async def finish_all(backend: RedisBackend, jobs: list[NewJob], outcome: Outcome, *,
                     now: datetime) -> list[Job]:
    """Enqueue ``jobs`` (one queue), claim them and end every run with ``outcome`` at ``now``."""
    queue = jobs[0].queue
    await backend.enqueue(jobs, now=now)
    leases = await backend.claim([queue], limit=len(jobs), lease_for=LEASE, worker_id="w",
                                 now=now)
    error = ErrorInfo("Boom", "x") if outcome is Outcome.DEAD else None
    await backend.finish([Finish(lease, outcome, error=error) for lease in leases], now=now)
    stored = await backend.get_many([job.id for job in jobs])
    return [job for job in stored if job is not None]


async def test_rare_matches_over_several_queues_come_in_short_pages(
    redis_backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One call walks at most ``_PAGE_SCAN`` ids over the id indexes of every queue, merged
    newest first; a page stops where the walk stopped, and paging on finds every match of every
    queue once, newest first."""
    b = redis_backend
    made: list[Job] = []
    for round_ in range(6):  # interleave the queues' ids
        for queue in ("a", "b"):
            outcome = Outcome.DEAD if (round_ + len(queue)) % 3 == 0 else Outcome.COMPLETED
            made += await finish_all(b, [new_job(queue)], outcome, now=T0)
    expected = [job.id for job in reversed(made) if job.state is JobState.DEAD]
    assert len(expected) == 4
    monkeypatch.setattr(redis_backend_module, "_PAGE_SCAN", 2)
    seen: list[str] = []
    pages = 0
    cursor: str | None = None
    while True:
        page = await b.list_jobs(JobQuery(error_type="Boom", limit=2, cursor=cursor))
        pages += 1
        seen += [job.id for job in page.jobs]
        cursor = page.next_cursor
        if cursor is None:
            break
        assert pages < 20
    assert seen == expected
    assert pages > 2  # whole pages would have taken two


async def test_a_finish_window_reads_the_terminal_set_by_score(
    redis_backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Old jobs finished in the window lie far down the completed id index; the window is
    read from the completed set by score instead, so one page holds them all."""
    b = redis_backend
    early = await finish_all(b, [new_job() for _ in range(3)], Outcome.COMPLETED,
                             now=T0 + timedelta(hours=1))
    await finish_all(b, [new_job() for _ in range(30)], Outcome.COMPLETED, now=T0)
    monkeypatch.setattr(redis_backend_module, "_PAGE_SCAN", 2)  # an id walk would stop short
    page = await b.list_jobs(JobQuery(
        states={JobState.COMPLETED},
        finished_after=T0 + timedelta(minutes=30),
        finished_before=T0 + timedelta(hours=2),
    ))
    assert [job.id for job in page.jobs] == [job.id for job in reversed(early)]
    assert page.next_cursor is None
    # the same without the states: a window implies the terminal states
    page = await b.list_jobs(JobQuery(finished_after=T0 + timedelta(minutes=30)))
    assert [job.id for job in page.jobs] == [job.id for job in reversed(early)]


async def test_the_counter_hash_prunes_minutes_past_retention(
    redis_backend: RedisBackend, redis_client: aioredis.Redis
) -> None:
    key = "monoq:{default}:tput"
    now = T0 + timedelta(days=3)
    current = minute_of(now)
    seeded: dict[FieldT, EncodableT] = {
        str(current - 3000 - i): "1:0:0" for i in range(1600)  # two days old and more
    }
    seeded[str(current - 10)] = "2:1:1"
    await redis_client.hset(key, mapping=seeded)
    await finish_all(redis_backend, [new_job()], Outcome.COMPLETED, now=now)
    fields = {text(k): text(v) for k, v in (await redis_client.hgetall(key)).items()}
    assert fields == {str(current - 10): "2:1:1", str(current): "1:0:0"}
    assert all(int(f) >= current - COUNTER_RETENTION_MINUTES for f in fields)
    buckets = await redis_backend.throughput(since=now - timedelta(minutes=10),
                                             until=now + timedelta(minutes=1),
                                             bucket=timedelta(minutes=1))
    assert (buckets[0].completed, buckets[0].failed, buckets[0].dead) == (2, 1, 1)
    assert buckets[-1].completed == 1


async def test_a_long_throughput_range_reads_each_hash_whole(
    redis_backend: RedisBackend,
) -> None:
    """More minutes than a hash keeps: HGETALL instead of HMGET of every minute."""
    await finish_all(redis_backend, [new_job()], Outcome.COMPLETED, now=T0 + timedelta(hours=1))
    buckets = await redis_backend.throughput(
        since=T0, until=T0 + timedelta(days=3), bucket=timedelta(hours=1)
    )
    assert len(buckets) == 72
    assert [b.completed for b in buckets].count(1) == 1
    assert buckets[1].completed == 1


async def test_waits_are_a_capped_list(
    redis_backend: RedisBackend, redis_client: aioredis.Redis
) -> None:
    await finish_all(redis_backend, [new_job() for _ in range(1005)], Outcome.COMPLETED, now=T0)
    assert await redis_client.llen("monoq:{default}:waits") == 1000
