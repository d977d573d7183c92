"""The per-state id indexes (``P:{q}:ids:<state>``, see _keys.py): every job id is in exactly
the index of its job's ``st`` after every kind of state change, and a store written with the
old single index per queue (``P:{q}:ids``) is moved to them on connect.

Listing through the indexes is covered for every backend in
tests/conformance/test_listing_scale.py.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from monoq.backends.redis import RedisBackend
from monoq.backends.redis import _backend as redis_backend_module
from monoq.core.ids import new_id
from monoq.core.models import ErrorInfo, Finish, JobQuery, JobState, NewJob, Outcome
from tests.conftest import RedisFactory, RedisServer

pytestmark = pytest.mark.redis

T0 = datetime(2030, 1, 1, tzinfo=UTC)
LEASE = timedelta(seconds=30)
BOOM = ErrorInfo("RuntimeError", "boom")
STATES = [str(s) for s in JobState]


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def job(queue: str = "default", *, run_at: datetime | None = None,
        schedule_id: str | None = None, max_retries: int = 5) -> NewJob:
    return NewJob(id=new_id(), queue=queue, handler="echo", payload_json=b"1", run_at=run_at,
                  schedule_id=schedule_id, max_retries=max_retries)


async def check_indexes(client: aioredis.Redis, prefix: str = "monoq") -> dict[str, int]:
    """Assert that every job id is in exactly the id index of its ``st`` (and in no other of
    its queue), that every index entry has a job in that state, and that no old single id
    index is left. Answers the number of jobs per state."""
    jobs: dict[tuple[str, str], str] = {}
    async for raw in client.scan_iter(match=f"{prefix}:*:job:*", count=1000):
        key = text(raw)
        queue = key[key.index("{") + 1 : key.index("}")]
        job_id = key.rsplit(":job:", 1)[1]
        state = await client.hget(key, "st")
        assert state is not None, key
        jobs[(queue, job_id)] = text(state)
    indexed: dict[tuple[str, str], list[str]] = defaultdict(list)
    async for raw in client.scan_iter(match=f"{prefix}:*:ids*", count=1000):
        key = text(raw)
        assert ":ids:" in key, f"{key}: an id index of the old layout"
        queue = key[key.index("{") + 1 : key.index("}")]
        state = key.rsplit(":ids:", 1)[1]
        assert state in STATES, key
        members: list[Any] = await client.zrange(key, 0, -1, withscores=True)
        for member, score in members:
            assert score == 0
            indexed[(queue, text(member))].append(state)
    for where, st in jobs.items():
        assert indexed.get(where) == [st], (where, st, indexed.get(where))
    assert set(indexed) == set(jobs), set(indexed) - set(jobs)
    counts: dict[str, int] = defaultdict(int)
    for state in jobs.values():
        counts[state] += 1
    return dict(counts)


async def finish_one(b: RedisBackend, job_id: str, outcome: Outcome, *, now: datetime,
                     retry_at: datetime | None = None, queue: str = "default") -> None:
    """Claim the queue's ready jobs, end ``job_id``'s run with ``outcome`` and release the
    others (back to queued, attempt refunded)."""
    leases = await b.claim([queue], limit=100, lease_for=LEASE, worker_id="w", now=now)
    error = None if outcome in (Outcome.COMPLETED, Outcome.RELEASED) else BOOM
    items = [
        Finish(lease, outcome, error=error, retry_at=retry_at) if lease.job.id == job_id
        else Finish(lease, Outcome.RELEASED)
        for lease in leases
    ]
    assert job_id in [lease.job.id for lease in leases]
    assert all(await b.finish(items, now=now))


async def test_every_state_change_moves_the_id_between_the_indexes(
    redis_backend: RedisBackend, redis_client: aioredis.Redis
) -> None:
    b, r = redis_backend, redis_client

    async def step(expected: dict[str, int]) -> None:
        assert await check_indexes(r) == {k: v for k, v in expected.items() if v}

    a, s = job(), job(run_at=T0 + timedelta(minutes=1))
    await b.enqueue([a, s], now=T0)
    await step({"queued": 1, "scheduled": 1})
    await b.claim(["default"], limit=1, lease_for=LEASE, worker_id="w", now=T0)
    await step({"running": 1, "scheduled": 1})
    [lease] = await b.expired_leases(now=T0 + LEASE + timedelta(seconds=1), limit=10)
    reaped = Finish(lease, Outcome.RETRY, error=BOOM, retry_at=T0 + timedelta(minutes=2))
    assert await b.finish([reaped], now=T0 + LEASE + timedelta(seconds=1)) == [True]
    await step({"retrying": 1, "scheduled": 1})
    assert await b.promote(now=T0 + timedelta(minutes=5), limit=10) == 2
    await step({"queued": 2})
    await finish_one(b, a.id, Outcome.RELEASED, now=T0 + timedelta(minutes=6))
    await step({"queued": 2})
    await finish_one(b, a.id, Outcome.DEAD, now=T0 + timedelta(minutes=7))
    await step({"queued": 1, "dead": 1})
    assert await b.requeue([a.id], now=T0 + timedelta(minutes=8)) == [a.id]
    await step({"queued": 2})
    assert await b.cancel(s.id, now=T0 + timedelta(minutes=9)) is not None
    await step({"queued": 1, "cancelled": 1})
    await finish_one(b, a.id, Outcome.COMPLETED, now=T0 + timedelta(minutes=10))
    await step({"completed": 1, "cancelled": 1})
    c = job()
    await b.enqueue([c], now=T0 + timedelta(minutes=11))
    leases = await b.claim(["default"], limit=1, lease_for=LEASE, worker_id="w",
                           now=T0 + timedelta(minutes=11))
    assert await b.cancel(c.id, now=T0 + timedelta(minutes=11)) is not None  # requested
    await step({"running": 1, "completed": 1, "cancelled": 1})
    assert await b.finish([Finish(leases[0], Outcome.DEAD, error=BOOM)],
                          now=T0 + timedelta(minutes=12)) == [True]
    await step({"completed": 1, "cancelled": 2})
    assert await b.requeue([s.id, c.id], now=T0 + timedelta(minutes=13)) == [s.id, c.id]
    await step({"queued": 2, "completed": 1})
    await finish_one(b, s.id, Outcome.RETRY, now=T0 + timedelta(minutes=14),
                     retry_at=T0 + timedelta(hours=1))
    await step({"queued": 1, "retrying": 1, "completed": 1})
    assert await b.cancel(s.id, now=T0 + timedelta(minutes=15)) is not None
    await step({"queued": 1, "cancelled": 1, "completed": 1})
    assert await b.purge(states={JobState.COMPLETED, JobState.CANCELLED},
                         finished_before=T0 + timedelta(hours=1)) == 2
    await step({"queued": 1})
    runs = [job(schedule_id="sched") for _ in range(3)]
    await b.enqueue(runs, now=T0 + timedelta(hours=2))
    for run in runs:
        await finish_one(b, run.id, Outcome.COMPLETED, now=T0 + timedelta(hours=2))
    await finish_one(b, c.id, Outcome.DEAD, now=T0 + timedelta(hours=2))
    await step({"completed": 3, "dead": 1})
    assert await b.purge_schedule_runs("sched", keep=1) == 2
    await step({"completed": 1, "dead": 1})


async def test_big_batches_keep_the_indexes_exact(
    redis_backend: RedisBackend, redis_client: aioredis.Redis
) -> None:
    """The scripts update an id index once per batch, in calls of at most 500 ids."""
    b = redis_backend
    await b.enqueue([job() for _ in range(1400)]
                    + [job(run_at=T0 + timedelta(hours=1)) for _ in range(600)], now=T0)
    assert await check_indexes(redis_client) == {"queued": 1400, "scheduled": 600}
    leases = await b.claim(["default"], limit=1200, lease_for=LEASE, worker_id="w", now=T0)
    assert len(leases) == 1200
    assert await check_indexes(redis_client) == {"queued": 200, "running": 1200,
                                                 "scheduled": 600}
    outcomes = [Outcome.COMPLETED] * 700 + [Outcome.DEAD] * 300 + [Outcome.RELEASED] * 200
    items = [Finish(lease, outcome, error=None if outcome is not Outcome.DEAD else BOOM)
             for lease, outcome in zip(leases, outcomes, strict=True)]
    assert all(await b.finish(items, now=T0))
    assert await check_indexes(redis_client) == {"queued": 400, "completed": 700, "dead": 300,
                                                 "scheduled": 600}


# -- the old layout ---------------------------------------------------------------------------


async def write_old_layout(r: aioredis.Redis, queue: str,
                           jobs: Sequence[dict[str, str]],
                           ghosts: Sequence[str] = ()) -> None:
    """Jobs as the scripts of the layout before the per-state id indexes wrote them: the job
    hash, the queue's single id index ``ids`` (every id, score 0), the state ZSET, ``jobq``
    and ``queues``. ``ghosts``: ids in ``ids`` whose job is gone."""
    index = {"queued": "ready"}
    await r.sadd("monoq:queues", queue)
    for fields in jobs:
        job_id, state = fields["id"], fields["st"]
        mapping: dict[FieldT, EncodableT] = dict(fields.items())
        await r.hset(f"monoq:{{{queue}}}:job:{job_id}", mapping=mapping)
        await r.hset("monoq:jobq", job_id, queue)
        await r.zadd(f"monoq:{{{queue}}}:ids", {job_id: 0})
        if state == "queued":
            score = int(fields["pr"]) * 10**13 + int(fields["ra"])
        elif state == "running":
            score = int(fields["le"])
        elif state in ("scheduled", "retrying"):
            score = int(fields["ra"])
        else:
            score = int(fields["fa"])
        await r.zadd(f"monoq:{{{queue}}}:{index.get(state, state)}", {job_id: score})
    for ghost in ghosts:
        await r.zadd(f"monoq:{{{queue}}}:ids", {ghost: 0})


def old_job(queue: str, state: str, **extra: Any) -> dict[str, str]:
    created = ms(T0)
    fields: dict[str, Any] = {
        "id": new_id(), "q": queue, "h": "echo", "p": "1", "pr": 5, "st": state, "a": 0,
        "mr": 3, "to": "300.0", "ra": created, "ca": created,
    }
    if state in ("completed", "dead", "cancelled"):
        fields.update(a=1, sa=created, fa=created + 1000)
    if state == "completed":
        fields["r"] = "true"
    if state == "dead":
        fields["e"] = "ValueError: bad"
    if state == "scheduled":
        fields["ra"] = created + 3_600_000
    fields.update(extra)
    return {name: str(value) for name, value in fields.items()}


async def test_a_store_of_the_old_layout_is_moved_on_connect(
    redis_server: RedisServer, redis_client: aioredis.Redis, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r = redis_client
    queued = old_job("old", "queued")
    completed = old_job("old", "completed")
    dead = old_job("old", "dead")
    scheduled = old_job("old", "scheduled")
    ghost = new_id()
    await write_old_layout(r, "old", [queued, completed, dead, scheduled], ghosts=[ghost])
    many = [old_job("big", "completed") for _ in range(7)] + [old_job("big", "dead")]
    await write_old_layout(r, "big", many)
    monkeypatch.setattr(redis_backend_module, "_MIGRATE_STEP", 3)  # several steps for "big"
    b = RedisBackend(redis_server.url)
    caplog.set_level(logging.INFO, logger="monoq.backends.redis._backend")
    try:
        await b.connect()
        assert not await r.exists("monoq:{old}:ids", "monoq:{big}:ids")
        assert await check_indexes(r) == {"queued": 1, "completed": 8, "dead": 2,
                                          "scheduled": 1}
        moved = [rec.getMessage() for rec in caplog.records if "per-state" in rec.getMessage()]
        assert len(moved) == 2
        assert "big: moved 8 ids" in moved[0]
        assert "old: moved 4 ids" in moved[1]
        assert "1 of jobs that no longer exist dropped" in moved[1]

        page = await b.list_jobs(JobQuery(states={JobState.DEAD}))
        assert [j.id for j in page.jobs] == [many[-1]["id"], dead["id"]]
        page = await b.list_jobs(JobQuery(queue="old"))
        expected = sorted((f["id"] for f in (queued, completed, dead, scheduled)), reverse=True)
        assert [j.id for j in page.jobs] == expected
        assert (await b.list_jobs(JobQuery(error_type="ValueError", queue="old"))).jobs[0].id == dead["id"]
        [stats] = await b.stats(["old"])
        assert stats.counts[JobState.QUEUED] == 1
        assert stats.counts[JobState.COMPLETED] == 1

        [lease] = await b.claim(["old"], limit=5, lease_for=LEASE, worker_id="w", now=T0)
        assert lease.job.id == queued["id"]
        assert await b.finish([Finish(lease, Outcome.COMPLETED)], now=T0) == [True]
        assert await check_indexes(r) == {"completed": 9, "dead": 2, "scheduled": 1}
        page = await b.list_jobs(JobQuery(queue="old", states={JobState.COMPLETED}))
        assert [j.id for j in page.jobs] == sorted([queued["id"], completed["id"]], reverse=True)
        assert await b.requeue([dead["id"]], now=T0) == [dead["id"]]
        assert await check_indexes(r) == {"queued": 1, "completed": 9, "dead": 1,
                                          "scheduled": 1}
    finally:
        await b.aclose()

    # Nothing left to move: a later connect runs no migration step.
    steps: list[str] = []
    again = RedisBackend(redis_server.url)
    real_run = again._run

    async def counting_run(name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        steps.append(name)
        return await real_run(name, keys, args)

    monkeypatch.setattr(again, "_run", counting_run)
    try:
        await again.connect()
    finally:
        await again.aclose()
    assert "migrate" not in steps


async def test_ids_written_by_the_old_layout_after_the_move_are_moved_again(
    redis_server: RedisServer, redis_client: aioredis.Redis
) -> None:
    """An old process that still ran wrote the old index again: the next connect moves it."""
    r = redis_client
    b = RedisBackend(redis_server.url)
    try:
        await b.connect()
        new = job("mixed")
        await b.enqueue([new], now=T0)
        stray = old_job("mixed", "dead")
        await write_old_layout(r, "mixed", [stray])
        await b.connect()
        assert await check_indexes(r) == {"queued": 1, "dead": 1}
        page = await b.list_jobs(JobQuery(queue="mixed"))
        assert [j.id for j in page.jobs] == [stray["id"], new.id]
    finally:
        await b.aclose()


# -- the server's locale ----------------------------------------------------------------------

# Ids a client may choose (any case, punctuation), and ids with "CH", which Czech collation
# sorts after "H".
ODD_IDS = ("CH1", "HZ", "a-1", "B_2", "b.3", "c", "Z", "_z", "0-a", "CZ", "H0", "CHA", "ch2",
           "A.b", "A-b", "A_b")


def _cannot(why: str) -> None:
    """Skip where the machine cannot build the locale; under CI, fail instead."""
    if os.environ.get("CI"):
        pytest.fail(why + "; CI must run this test", pytrace=False)
    pytest.skip(why)


@pytest.fixture
def czech_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                redis_factory: RedisFactory) -> RedisServer:
    """A redis-server whose LC_COLLATE is cs_CZ.UTF-8 (Redis sets it from its environment, and
    Lua compares strings with strcoll), compiled here with localedef into a private LOCPATH."""
    localedef = shutil.which("localedef")
    if localedef is None or not Path("/usr/share/i18n/locales/cs_CZ").exists():
        _cannot("localedef and the glibc locale sources (apt-get install locales) are needed "
                "to build cs_CZ.UTF-8")
    assert localedef is not None
    built = subprocess.run([localedef, "-i", "cs_CZ", "-f", "UTF-8",
                            str(tmp_path / "cs_CZ.UTF-8")], capture_output=True, check=False)
    if built.returncode not in (0, 1):  # 1: built, with warnings
        _cannot(f"localedef failed: {built.stderr.decode(errors='replace')[:200]}")
    monkeypatch.setenv("LOCPATH", str(tmp_path))
    monkeypatch.setenv("LC_ALL", "cs_CZ.UTF-8")
    return redis_factory()


async def test_listing_merges_in_byte_order_whatever_the_server_locale(
    czech_redis: RedisServer,
) -> None:
    client = aioredis.Redis.from_url(czech_redis.url)
    b = RedisBackend(czech_redis.url)
    try:
        if await client.eval("return tostring('CH1' > 'HZ')", 0) != b"true":
            _cannot("the server did not take the cs_CZ collation")
        await b.connect()
        jobs = [NewJob(id=i, queue=("q1", "q2")[n % 2], handler="h", payload_json=b"1")
                for n, i in enumerate(ODD_IDS)]
        await b.enqueue(jobs, now=T0)
        for queue in ("q1", "q2"):
            leases = await b.claim([queue], limit=4, lease_for=LEASE, worker_id="w", now=T0)
            await b.finish([Finish(lease, Outcome.DEAD, error=BOOM) for lease in leases],
                           now=T0 + timedelta(seconds=1))
        newest_first = sorted(ODD_IDS, key=lambda i: i.encode(), reverse=True)
        dead = {j.id for j in (await b.list_jobs(JobQuery(states={JobState.DEAD}, limit=100))).jobs}
        assert len(dead) == 8

        async def every_page(**filters: Any) -> list[str]:
            seen: list[str] = []
            cursor: str | None = None
            for _ in range(50):
                page = await b.list_jobs(JobQuery(limit=3, cursor=cursor, **filters))
                seen += [j.id for j in page.jobs]
                cursor = page.next_cursor
                if cursor is None:
                    return seen
            raise AssertionError("no last page")

        assert await every_page() == newest_first
        assert await every_page(states={JobState.DEAD, JobState.QUEUED}) == newest_first
        # a finish window reads the dead ids by score and sorts them
        assert await every_page(states={JobState.DEAD}, finished_after=T0) == [
            i for i in newest_first if i in dead
        ]
    finally:
        await b.aclose()
        await client.aclose()
