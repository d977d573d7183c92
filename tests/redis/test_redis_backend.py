"""Redis-specific behaviour of RedisBackend (the shared contract is in tests/conformance)."""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import anyio
import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from monoq.backends.redis import RedisBackend
from monoq.core.backend import Backend, Doctor, ServerTime
from monoq.core.ids import new_id
from monoq.core.models import ErrorInfo, Finish, JobQuery, JobState, NewJob, Outcome
from monoq.errors import BackendError, BackendUnavailable, ConfigError

pytestmark = pytest.mark.redis

T0 = datetime(2030, 1, 1, tzinfo=UTC)
LEASE = timedelta(seconds=30)
GLOBAL_KEYS = {"queues", "jobq", "changes", "workers", "workerinfo", "beats"}


class Server(Protocol):
    """What the tests use of tests/conftest.py's RedisServer."""

    url: str
    directory: Path

    def start(self, timeout: float = 10.0) -> None: ...

    def stop(self) -> None: ...


def job(queue: str = "default", **kwargs: object) -> NewJob:
    return NewJob(
        id=new_id(),
        queue=queue,
        handler=str(kwargs.pop("handler", "echo")),
        payload_json=b'{"n":1}',
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
async def private_backend(private_redis: Server) -> AsyncIterator[RedisBackend]:
    """A connected backend on a redis-server of this test alone."""
    backend = RedisBackend(private_redis.url)
    await backend.connect()
    try:
        yield backend
    finally:
        await backend.aclose()


async def _all_keys(client: aioredis.Redis) -> list[str]:
    return sorted([k.decode() async for k in client.scan_iter(count=1000)])


# -- registration and options -------------------------------------------------------------------


def test_entry_points_name_the_backend() -> None:
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="monoq.backends")}
    assert eps["redis"].load() is RedisBackend
    assert eps["rediss"].load() is RedisBackend


def test_satisfies_the_protocol() -> None:
    backend = RedisBackend("redis://localhost:6379/0")
    assert isinstance(backend, Backend)
    assert backend.capabilities.shared_across_processes
    assert backend.capabilities.cross_process_wakeup
    assert isinstance(backend, ServerTime)
    assert isinstance(backend, Doctor)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"nope": 1}, "backend.options.nope"),
        ({"pool_size": 0}, "backend.options.pool_size"),
        ({"pool_size": True}, "backend.options.pool_size"),
        ({"socket_timeout": -1}, "backend.options.socket_timeout"),
        ({"connect_timeout": "fast"}, "backend.options.connect_timeout"),
        ({"key_prefix": ""}, "backend.options.key_prefix"),
        ({"key_prefix": "a{b}"}, "backend.options.key_prefix"),
        ({"batch_size": 0}, "backend.options.batch_size"),
        ({"ssl_ca_certs": "/ca.pem"}, "backend.options.ssl_ca_certs"),  # redis://, not rediss://
    ],
)
def test_bad_options_are_config_errors_naming_the_key(options: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}:"):
        RedisBackend("redis://localhost:6379/0", options)


def test_tls_options_are_accepted_for_rediss() -> None:
    backend = RedisBackend(
        "rediss://localhost:6380/0",
        {"ssl_ca_certs": "/ca.pem", "ssl_cert_reqs": "required", "key_prefix": "x"},
    )
    assert repr(backend) == "RedisBackend(prefix='x')"
    with pytest.raises(ConfigError, match=r"^backend.options.ssl_cert_reqs:"):
        RedisBackend("rediss://localhost:6380/0", {"ssl_cert_reqs": "sometimes"})


def test_other_schemes_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"^backend.url:"):
        RedisBackend("sqlite:///x.db")


# -- key scheme -----------------------------------------------------------------------------------


async def test_every_queue_key_is_hash_tagged_with_its_queue(
    redis_backend: RedisBackend, redis_client: aioredis.Redis
) -> None:
    b = redis_backend
    await b.enqueue(
        [job("alpha"), job("alpha", run_at=T0 + timedelta(hours=1)), job("beta")], now=T0
    )
    leases = await b.claim(["alpha", "beta"], limit=5, lease_for=LEASE, worker_id="w", now=T0)
    await b.finish(
        [
            Finish(leases[0], Outcome.RETRY, error=ErrorInfo("E", "x"), retry_at=T0),
            Finish(leases[1], Outcome.COMPLETED, result_json=b"1"),
        ],
        now=T0,
    )
    await b.set_paused("gamma", True)
    await b.beat("scheduler:s1", now=T0)
    keys = await _all_keys(redis_client)
    slots: dict[str, set[int]] = {}
    for key in keys:
        assert key.startswith("monoq:")
        rest = key.removeprefix("monoq:")
        if rest in GLOBAL_KEYS:
            continue
        assert rest.startswith("{"), key
        queue = rest[1 : rest.index("}")]
        slots.setdefault(queue, set()).add(key_slot(key.encode()))
    assert set(slots) == {"alpha", "beta", "gamma"}
    assert all(len(s) == 1 for s in slots.values()), slots
    # job hashes and attempt lists sit under their queue's tag too
    assert any(k.startswith("monoq:{alpha}:job:") for k in keys)
    assert any(k.startswith("monoq:{alpha}:att:") for k in keys)
    # so do the dashboard's counters and waits, written by the finish and claim scripts
    assert {"monoq:{alpha}:tput", "monoq:{alpha}:waits", "monoq:{beta}:waits"} <= set(keys)
    assert "monoq:beats" in keys


async def test_key_prefix_isolates_deployments(
    redis_server: Server, redis_client: aioredis.Redis
) -> None:
    a = RedisBackend(redis_server.url, {"key_prefix": "one"})
    b = RedisBackend(redis_server.url, {"key_prefix": "two"})
    await a.connect()
    await b.connect()
    try:
        [enq] = await a.enqueue([job()], now=T0)
        assert await b.get(enq.job.id) is None
        assert await b.stats() == []
        assert (await b.list_jobs(JobQuery())).jobs == []
        assert await b.claim(["default"], limit=1, lease_for=LEASE, worker_id="w", now=T0) == []
        assert await a.get(enq.job.id) == enq.job
        assert all(k.startswith("one:") for k in await _all_keys(redis_client))
    finally:
        await a.aclose()
        await b.aclose()


# -- scripts --------------------------------------------------------------------------------------


async def test_scripts_survive_script_flush(
    redis_backend: RedisBackend, redis_client: aioredis.Redis
) -> None:
    b = redis_backend
    await b.enqueue([job()], now=T0)
    await redis_client.script_flush()
    [enq] = await b.enqueue([job()], now=T0)  # NOSCRIPT -> SCRIPT LOAD -> EVALSHA
    assert enq.created
    await redis_client.script_flush()
    leases = await b.claim(["default"], limit=5, lease_for=LEASE, worker_id="w", now=T0)
    assert len(leases) == 2


async def test_finish_and_claim_is_one_round_trip_and_survives_script_flush(
    redis_backend: RedisBackend, redis_client: aioredis.Redis
) -> None:
    """The finish scripts and the claim go out in one pipeline; a flushed script cache is
    reloaded, and every outcome is applied exactly once."""
    b = redis_backend
    await b.enqueue([job() for _ in range(4)] + [job("other")], now=T0)
    leases = await b.claim(["default", "other"], limit=3, lease_for=LEASE, worker_id="w",
                           now=T0)
    async def evalsha_calls() -> int:
        stats = await redis_client.info("commandstats")
        return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

    before = await evalsha_calls()
    applied, more = await b.finish_and_claim(
        [Finish(leases[0], Outcome.COMPLETED)], ["default", "other"], limit=1,
        lease_for=LEASE, worker_id="w", now=T0)
    assert applied == [True] and len(more) == 1
    assert await evalsha_calls() - before == 2  # one finish script, one claim script
    await redis_client.script_flush()
    applied, more = await b.finish_and_claim(
        [Finish(leases[1], Outcome.COMPLETED), Finish(more[0], Outcome.COMPLETED)],
        ["default", "other"], limit=3, lease_for=LEASE, worker_id="w", now=T0)
    assert applied == [True, True]
    # "default" is empty now: the claim went on to the next queue
    assert [lease.job.queue for lease in more] == ["other"]
    [stats] = await b.stats(["default"])
    assert stats.counts[JobState.COMPLETED] == 3 and stats.counts[JobState.RUNNING] == 1


async def test_a_corrupt_key_is_a_backend_error_not_unavailable(
    redis_backend: RedisBackend, redis_client: aioredis.Redis
) -> None:
    await redis_client.set("monoq:{default}:ready", "not a zset")
    with pytest.raises(BackendError) as info:
        await redis_backend.enqueue([job()], now=T0)
    assert not isinstance(info.value, BackendUnavailable)
    assert info.value.__cause__ is not None


async def test_large_batches_are_split_into_capped_script_calls(private_redis: Server) -> None:
    # A server of this test alone: commandstats counts every client's calls.
    b = RedisBackend(private_redis.url, {"batch_size": 3})
    await b.connect()
    client = aioredis.Redis.from_url(private_redis.url)
    try:
        jobs = [job() for _ in range(10)]
        await client.config_resetstat()
        answers = await b.enqueue(jobs, now=T0)
        stats = await client.info("commandstats")
        # 10 jobs in chunks of 3: four script calls
        assert stats["cmdstat_evalsha"]["calls"] == 4
        assert [a.job.id for a in answers] == [j.id for j in jobs]
        assert all(a.created for a in answers)
        assert (await b.stats())[0].counts[JobState.QUEUED] == 10
    finally:
        await client.aclose()
        await b.aclose()


async def test_keys_repeated_across_chunks_keep_the_first_job_of_the_batch(
    redis_server: Server, redis_client: aioredis.Redis
) -> None:
    # Chunks run one after the other, each seeing what the ones before it stored: the job
    # stored for a key is the batch's first with that key, as in a single script call.
    b = RedisBackend(redis_server.url, {"batch_size": 2})
    await b.connect()
    try:
        jobs = [job(idempotency_key=f"k{i % 6}") for i in range(60)]
        # a replayed id (of a stored job) is answered with that job, before its own key counts
        jobs.append(NewJob(id=jobs[2].id, queue="default", handler="echo", payload_json=b"1",
                           idempotency_key="fresh"))
        answers = await b.enqueue(jobs, now=T0)
        assert [a.created for a in answers] == [True] * 6 + [False] * 55
        assert [a.job.id for a in answers[:60]] == [jobs[i % 6].id for i in range(60)]
        assert answers[60].job.id == jobs[2].id
        assert (await b.stats())[0].counts[JobState.QUEUED] == 6
    finally:
        await b.aclose()


async def test_a_failed_part_keeps_the_parts_before_it_and_a_retry_completes_the_call(
    redis_server: Server, redis_client: aioredis.Redis
) -> None:
    # What the protocol promises of an enqueue larger than one step: parts in order, each
    # whole; a part that fails leaves the ones before it stored and sends none after it.
    b = RedisBackend(redis_server.url, {"batch_size": 2})
    await b.connect()
    try:
        jobs = [job() for _ in range(6)]
        # the first job of the second part is a key of the wrong type: that script fails
        await redis_client.set(f"monoq:{{default}}:job:{jobs[2].id}", "not a hash")
        with pytest.raises(BackendError):
            await b.enqueue(jobs, now=T0)
        stored = await b.get_many([j.id for j in jobs])
        assert [s is not None for s in stored] == [True, True, False, False, False, False]
        await redis_client.delete(f"monoq:{{default}}:job:{jobs[2].id}")
        answers = await b.enqueue(jobs, now=T0)  # the same call again completes it
        assert [a.created for a in answers] == [False, False, True, True, True, True]
        assert [a.job.id for a in answers] == [j.id for j in jobs]
        assert (await b.stats())[0].counts[JobState.QUEUED] == 6
    finally:
        await b.aclose()


async def test_a_claim_across_queues_is_one_script_call(private_redis: Server) -> None:
    # One atomic step, as the protocol promises (it was one script per queue).
    b = RedisBackend(private_redis.url)
    await b.connect()
    client = aioredis.Redis.from_url(private_redis.url)
    try:
        await b.enqueue([job("a"), job("b"), job("c"), job("c")], now=T0)
        await b.set_paused("b", True)
        await client.config_resetstat()
        leases = await b.claim(["a", "b", "c", "a"], limit=3, lease_for=LEASE, worker_id="w",
                               now=T0)
        stats = await client.info("commandstats")
        assert stats["cmdstat_evalsha"]["calls"] == 1
        assert [lease.job.queue for lease in leases] == ["a", "c", "c"]
        assert len({lease.token for lease in leases}) == 3
    finally:
        await client.aclose()
        await b.aclose()


async def test_attempt_records_keep_unicode_errors(redis_backend: RedisBackend) -> None:
    b = redis_backend
    [enq] = await b.enqueue([job()], now=T0)
    [lease] = await b.claim(["default"], limit=1, lease_for=LEASE, worker_id="w", now=T0)
    err = ErrorInfo("ValueError", 'ünïcödé "quoted" ✓\n', traceback="Traceback…\n  line 1")
    later = T0 + timedelta(seconds=2)
    finish = Finish(lease, Outcome.RETRY, error=err, retry_at=later)
    assert await b.finish([finish], now=later) == [True]
    [attempt] = await b.attempts(enq.job.id)
    assert attempt.error_type == "ValueError"
    assert attempt.error_message == err.message
    assert attempt.traceback == err.traceback
    assert attempt.finished_at == later
    stored = await b.get(enq.job.id)  # read with HGETALL
    assert stored is not None
    assert stored.error == str(err)
    assert await b.promote(now=later, limit=10) == 1
    [again] = await b.claim(["default"], limit=1, lease_for=LEASE, worker_id="w", now=later)
    assert again.job.error == str(err)  # read through the script's JSON reply
    assert again.job.payload_json == enq.job.payload_json


async def test_list_jobs_continues_past_the_scan_budget(redis_backend: RedisBackend) -> None:
    """A rare match below more than a call's walk of ids: the first page ends short with a
    cursor, and paging on finds it, then ends."""
    b = redis_backend
    [rare] = await b.enqueue([job(handler="rare")], now=T0)
    await b.enqueue([job(handler="common") for _ in range(4500)], now=T0)
    first = await b.list_jobs(JobQuery(handler="rare", limit=10))
    assert first.jobs == []
    assert first.next_cursor is not None
    page = await b.list_jobs(JobQuery(handler="rare", limit=10, cursor=first.next_cursor))
    assert [j.id for j in page.jobs] == [rare.job.id]
    assert page.next_cursor is None


async def test_list_jobs_by_state_pages_through_big_and_small_indexes(
    redis_backend: RedisBackend,
) -> None:
    b = redis_backend
    await b.enqueue([job() for _ in range(2501)], now=T0)
    leases = await b.claim(["default"], limit=2501, lease_for=LEASE, worker_id="w", now=T0)
    err = ErrorInfo("E", "x")
    items = [Finish(lease, Outcome.COMPLETED) for lease in leases[:-1]]
    items.append(Finish(leases[-1], Outcome.DEAD, error=err))
    assert all(await b.finish(items, now=T0))
    # small index (1 dead job): read through the state index
    page = await b.list_jobs(JobQuery(queue="default", states=[JobState.DEAD]))
    assert [j.id for j in page.jobs] == [leases[-1].job.id]
    # big index (2500 completed jobs): the id scan, page by page
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await b.list_jobs(JobQuery(states=[JobState.COMPLETED], limit=700, cursor=cursor))
        seen += [j.id for j in page.jobs]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    expected = sorted((lease.job.id for lease in leases[:-1]), reverse=True)
    assert seen == expected


async def test_server_now_reads_the_redis_clock(redis_backend: RedisBackend) -> None:
    now = await redis_backend.server_now()
    assert abs((now - datetime.now(UTC)).total_seconds()) < 5
    assert now.microsecond % 1000 == 0


# -- wakeups --------------------------------------------------------------------------------------
# Wake-ups by another instance are conformance tests (monoq.testing.suite.wakeups), run here
# because RedisBackend declares cross_process_wakeup.


async def test_a_blocked_waiter_does_not_starve_commands(redis_server: Server) -> None:
    b = RedisBackend(redis_server.url, {"pool_size": 1})
    await b.connect()
    try:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: b.wait_for_jobs(["default"], timeout=30))
                await anyio.sleep(0.1)
                await b.ping()
                await b.enqueue([job()], now=T0)  # also wakes the waiter
    finally:
        await b.aclose()


async def test_a_cancelled_wait_leaves_the_blocking_connection_usable(
    redis_backend: RedisBackend,
) -> None:
    b = redis_backend
    with anyio.move_on_after(0.1):
        await b.wait_for_jobs(["default"], timeout=30)
    await b.enqueue([job()], now=T0)  # one token
    with anyio.fail_after(5):
        await b.wait_for_jobs(["default"], timeout=30)  # takes the token at once
    start = time.monotonic()
    await b.wait_for_jobs(["default"], timeout=0.2)  # nothing left: waits out the timeout
    assert time.monotonic() - start >= 0.15


# -- outages --------------------------------------------------------------------------------------


async def test_a_server_restart_is_unavailable_then_works_again(
    private_redis: Server, private_backend: RedisBackend
) -> None:
    b = private_backend
    await b.enqueue([job()], now=T0)
    private_redis.stop()
    with anyio.fail_after(3):  # fails fast, never hangs
        with pytest.raises(BackendUnavailable):
            await b.ping()
        with pytest.raises(BackendUnavailable) as info:
            await b.enqueue([job()], now=T0)
        assert info.value.__cause__ is not None
        with pytest.raises(BackendUnavailable):
            await b.claim(["default"], limit=1, lease_for=LEASE, worker_id="w", now=T0)
        with pytest.raises(BackendUnavailable):
            await b.get(new_id())
        with pytest.raises(BackendUnavailable):
            await b.wait_for_jobs(["default"], timeout=10)
    private_redis.start()
    with anyio.fail_after(5):
        # the new server has no scripts cached and the pooled sockets are dead: both recover
        [enq] = await b.enqueue([job()], now=T0)
        [lease] = await b.claim(["default"], limit=1, lease_for=LEASE, worker_id="w", now=T0)
        assert lease.job.id == enq.job.id
        await b.enqueue([job()], now=T0)
        await b.wait_for_jobs(["default"], timeout=10)


async def test_an_unreachable_server_fails_fast() -> None:
    # Nothing listens on port 1: connection refused, within the connect timeout either way.
    b = RedisBackend("redis://127.0.0.1:1/0", {"connect_timeout": 0.5})
    try:
        with anyio.fail_after(3), pytest.raises(BackendUnavailable):
            await b.connect()
        with anyio.fail_after(3), pytest.raises(BackendUnavailable):
            await b.enqueue([job()], now=T0)
    finally:
        await b.aclose()


# -- doctor ---------------------------------------------------------------------------------------


async def test_doctor_on_a_default_server(private_backend: RedisBackend) -> None:
    checks = {name: (level, message) for name, level, message in await private_backend.doctor()}
    assert checks["redis.version"][0] == "ok"
    assert checks["redis.maxmemory-policy"] == ("ok", "noeviction")
    level, message = checks["redis.persistence"]  # the test server runs with --save ''
    assert level == "warn"
    assert "no persistence" in message


async def test_doctor_flags_eviction_and_rdb_only(
    private_redis: Server, private_backend: RedisBackend
) -> None:
    client = aioredis.Redis.from_url(private_redis.url)
    try:
        await client.config_set("maxmemory-policy", "allkeys-lru")
        await client.config_set("save", "3600 1")
        checks = {name: (level, msg) for name, level, msg in await private_backend.doctor()}
        level, message = checks["redis.maxmemory-policy"]
        assert level == "error"
        assert "allkeys-lru" in message
        level, message = checks["redis.persistence"]
        assert level == "warn"
        assert "RDB snapshots only" in message
        await client.config_set("appendonly", "yes")
        checks = {name: (level, msg) for name, level, msg in await private_backend.doctor()}
        assert checks["redis.persistence"] == ("ok", "AOF enabled")
    finally:
        await client.aclose()


async def test_a_submit_answered_by_its_idempotency_key_leaves_no_entry_in_the_id_index(
    redis_backend: RedisBackend, redis_client: aioredis.Redis
) -> None:
    first = job(idempotency_key="order-7")
    [stored] = await redis_backend.enqueue([first], now=T0)
    # Retries of a request that build a new job (a new id) each time, with the same key.
    retries = [job(idempotency_key="order-7") for _ in range(20)]
    for retry in retries:
        [answer] = await redis_backend.enqueue([retry], now=T0)
        assert not answer.created and answer.job.id == first.id
    assert await redis_client.hlen("monoq:jobq") == 1
    assert await redis_backend.get_many([r.id for r in retries]) == [None] * 20
    assert stored.created
