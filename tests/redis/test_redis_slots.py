"""Every script call stays in one hash slot, so that the backend runs on Redis Cluster.

A workload that calls every method of the backend runs against a private redis-server while a
MONITOR connection records every command the server executes: the clients' EVALSHA calls, and
the commands each script runs (logged as ``[0 lua]`` right after its EVALSHA). Each script
call's KEYS must hash to one slot, and every key its commands touch (those it derives from a
prefix passed in KEYS included) must hash to that slot too. Multi-key commands sent outside
scripts must be single-slot as well.

On one server the backend makes three documented exceptions, kept because the protocol promises
them there or because they halve a single enqueue's time (see ``RedisBackend.claim``,
``_enqueue_one_server`` and ``_blpop``): a claim across several queues is one script over their
slots, an enqueue is one script over its queues' slots and the global id index, queue set and
run indexes, and a wait across queues is one BLPOP. Run as it does on a cluster
(``_cluster``), the same workload makes no exception at all.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Protocol

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from monoq.backends.redis import RedisBackend
from monoq.core.ids import new_id
from monoq.core.models import (
    ErrorInfo,
    Finish,
    JobQuery,
    JobState,
    NewJob,
    Outcome,
    Progress,
    Schedule,
    WorkerInfo,
)
from monoq.testing.support import T0, at, new_job

pytestmark = pytest.mark.redis

LEASE = timedelta(seconds=30)


class Server(Protocol):
    url: str


# Commands scripts run, and where their keys are: every argument ("all") or the first.
_ALL_KEYS = {"DEL", "EXISTS", "UNLINK"}
_FIRST_KEY = {
    "HGET", "HSET", "HMGET", "HGETALL", "HDEL", "HLEN", "HKEYS", "HSETNX", "HINCRBY",
    "ZADD", "ZREM", "ZRANGE", "ZRANGEBYSCORE", "ZREVRANGEBYLEX", "ZCARD", "ZCOUNT",
    "ZRANGEBYLEX", "LPUSH", "RPUSH", "LTRIM", "LRANGE", "SET", "GET", "SADD", "SREM",
    "SMEMBERS", "LLEN", "LINDEX", "LSET",
}
# Multi-key commands outside scripts (their keys: every argument but the last for BLPOP).
_MULTI_KEY = {"DEL", "EXISTS", "UNLINK", "BLPOP", "MGET"}

_LINE = re.compile(rb'^\S+ \[\d+ ([^\]]+)\] (.*)$')
_ARG = re.compile(rb'"((?:[^"\\]|\\.)*)"')


def _args(line: bytes) -> tuple[str, list[bytes]] | None:
    """(source, arguments) of a MONITOR line: source is ``lua`` inside a script."""
    match = _LINE.match(line)
    if match is None:
        return None
    args = [re.sub(rb"\\(.)", rb"\1", a) for a in _ARG.findall(match.group(2))]
    return match.group(1).decode(), args


async def _record(url: str, work: Callable[[], Awaitable[None]]) -> list[bytes]:
    """Run ``work`` while MONITOR records what the server runs; answers the lines."""
    lines: list[bytes] = []
    client = aioredis.Redis.from_url(url)
    try:
        async with client.monitor() as monitor:
            async def read() -> None:
                while True:
                    lines.append(await monitor.connection.read_response())

            reader = asyncio.ensure_future(read())
            try:
                await work()
                marker = new_id()
                await client.get(f"end-of-workload-{marker}")  # the last line to wait for
                while not any(marker.encode() in line for line in lines[-3:]):
                    await asyncio.sleep(0.01)
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
    finally:
        await client.aclose()
    return lines


Exempt = Callable[[str, list[bytes]], bool]
"""Whether a command (a script's name, or a command's) over these keys may span slots."""


def _check(lines: list[bytes], *, exempt: Exempt, names: dict[bytes, str] | None = None
           ) -> dict[str, int]:
    """Assert the slot rules over the recorded lines; answers how many calls of each kind
    were checked."""
    seen = {"scripts": 0, "script commands": 0, "multi-key commands": 0}
    slot: int | None = None
    for line in lines:
        parsed = _args(line)
        if parsed is None:
            continue
        source, args = parsed
        name = args[0].decode().upper()
        if source == "lua":
            if name not in _ALL_KEYS | _FIRST_KEY:
                raise AssertionError(f"a script ran {name}: add it to the key table")
            if slot is None:  # a script exempt from the rule
                continue
            keys = args[1:] if name in _ALL_KEYS else args[1:2]
            for key in keys:
                assert key_slot(key) == slot, f"{line!r}: {key!r} is not in slot {slot}"
            seen["script commands"] += 1
            continue
        slot = None
        if name in ("EVALSHA", "EVAL"):
            keys = args[3 : 3 + int(args[2])]
            if exempt((names or {}).get(args[1], name), keys):
                continue
            slots = {key_slot(k) for k in keys}
            assert len(slots) == 1, f"script call over several slots: {line!r}"
            slot = slots.pop()
            seen["scripts"] += 1
        elif name in _MULTI_KEY and len(args) > 2:
            keys = args[1:-1] if name == "BLPOP" else args[1:]
            if exempt(name, keys):
                continue
            assert len({key_slot(k) for k in keys}) == 1, f"several slots: {line!r}"
            seen["multi-key commands"] += 1
    return seen


async def _workload(b: RedisBackend) -> None:
    """Every method of the backend, over several queues and schedules."""
    queues = ["alpha", "beta", "gamma"]
    schedule = Schedule(id="nightly", handler="echo", every=60.0, queue="alpha", created_at=T0,
                        updated_at=T0)
    await b.put_schedule(schedule)
    await b.put_schedule(Schedule(id="gone", handler="echo", every=5.0))
    assert await b.delete_schedule("gone")
    await b.advance_schedule("nightly", at(1))
    await b.list_schedules()
    await b.get_schedule("nightly")
    runs = [NewJob(id=new_id(), queue=q, handler="echo", payload_json=b"1",
                   schedule_id="nightly") for q in ("alpha", "beta") for _ in range(3)]
    batch = [new_job(q, key=f"k-{q}") for q in queues]
    batch += [new_job(q, run_at=at(5)) for q in queues] + runs
    stored = await b.enqueue(batch, now=T0)
    # a replay, an id stored in another queue, a repeated key
    again = NewJob(id=stored[0].job.id, queue="beta", handler="echo", payload_json=b"1")
    await b.enqueue([*batch[:2], again, new_job("alpha", key="k-alpha")], now=T0)
    await b.set_paused("delta", True)
    await b.set_paused("delta", False)
    await b.wait_for_jobs(queues, timeout=0.01)
    await b.wait_for_changes(timeout=0.01)
    leases = await b.claim([*queues, "delta"], limit=4, lease_for=LEASE, worker_id="w",
                           now=at(1))
    await b.extend(leases, lease_for=LEASE, now=at(2))
    await b.report_progress([Progress(lease, 0.5, "half") for lease in leases], now=at(2))
    done = [Finish(leases[0], Outcome.COMPLETED, result_json=b"1"),
            Finish(leases[1], Outcome.RETRY, error=ErrorInfo("E", "x"), retry_at=at(3)),
            Finish(leases[2], Outcome.DEAD, error=ErrorInfo("F", "y"))]
    await b.finish(done[:1], now=at(3))
    applied, _more = await b.finish_and_claim(done[1:], queues, limit=3, lease_for=LEASE,
                                             worker_id="w", now=at(3))
    assert all(applied)
    await b.promote(now=at(10), limit=100)
    await b.next_wakeup(now=at(10))
    await b.expired_leases(now=at(100), limit=10)
    await b.cancel(stored[1].job.id, now=at(11))
    await b.requeue([leases[2].job.id, stored[1].job.id], now=at(12))
    everything = list(await b.claim(queues, limit=100, lease_for=LEASE,
                                                   worker_id="w", now=at(20)))
    await b.finish([Finish(lease, Outcome.COMPLETED) for lease in everything], now=at(21))
    for kwargs in ({}, {"queue": "alpha"}, {"states": [JobState.COMPLETED]},
                   {"handler": "echo", "limit": 2}, {"error_type": "E"},
                   {"finished_after": at(0), "finished_before": at(30)},
                   {"schedule_id": "nightly", "limit": 2},
                   {"schedule_id": "nightly", "queue": "beta", "states": [JobState.COMPLETED]}):
        page = await b.list_jobs(JobQuery(**kwargs))
        if page.next_cursor:
            await b.list_jobs(JobQuery(cursor=page.next_cursor, **kwargs))
    await b.get_many([j.job.id for j in stored] + [new_id()])
    await b.attempts(stored[0].job.id)
    await b.stats()
    await b.count_jobs(states=list(JobState))
    await b.count_finished(since=T0)
    await b.throughput(since=T0, until=at(60), bucket=timedelta(minutes=1))
    await b.recent_waits("alpha")
    await b.beat("scheduler:s1", now=T0)
    await b.beats(now=T0)
    info = WorkerInfo(id="w1", host="h", pid=1, roles=("worker",), queues=tuple(queues),
                      concurrency=4, busy=0, started_at=T0, last_seen=T0)
    await b.report_worker(info, ttl=timedelta(seconds=5))
    later = WorkerInfo(id="w2", host="h", pid=2, roles=("worker",), queues=("alpha",),
                       concurrency=1, busy=0, started_at=T0, last_seen=at(60))
    await b.report_worker(later, ttl=timedelta(seconds=5))  # forgets w1, expired
    await b.list_workers(now=at(60))
    await b.remove_worker("w2")
    await b.purge_schedule_runs("nightly", keep=1)
    await b.purge(states={JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED},
                  finished_before=at(100))
    await b.server_now()
    await b.doctor()


def _over_queues(name: str, keys: list[bytes]) -> bool:
    """Exempt on one server: an enqueue and a claim over several queues (one atomic step, as
    the protocol promises), a BLPOP over several queues' wake lists."""
    if name in ("enqueue", "claim", "enqueue_server"):
        return True
    return name == "BLPOP" and all(k.endswith((b":wake", b":changes")) for k in keys)


@pytest.mark.parametrize("cluster_mode", [False, True], ids=["one-server", "as-on-cluster"])
async def test_every_script_call_stays_in_one_slot(private_redis: Server,
                                                   cluster_mode: bool) -> None:
    b = RedisBackend(private_redis.url)
    await b.connect()
    b._cluster = cluster_mode
    names = {script.sha.encode(): name for name, script in b._scripts.items()}
    try:
        lines = await _record(private_redis.url, lambda: _workload(b))
    finally:
        await b.aclose()
    exempt: Exempt = (lambda _name, _keys: False) if cluster_mode else _over_queues
    seen = _check(lines, exempt=exempt, names=names)
    assert seen["scripts"] > 40 and seen["script commands"] > 200, seen


@pytest.mark.parametrize(("script", "keys", "error"), [
    ("return redis.call('GET', KEYS[1] .. 'x')", ["p:"], "is not in slot"),
    ("return 1", ["{a}:1", "{b}:1"], "several slots"),
], ids=["derived-key", "declared-keys"])
async def test_the_check_catches_a_script_that_leaves_its_slot(
    private_redis: Server, script: str, keys: list[str], error: str
) -> None:
    client = aioredis.Redis.from_url(private_redis.url)
    try:
        lines = await _record(private_redis.url,
                              lambda: client.eval(script, len(keys), *keys))
    finally:
        await client.aclose()
    with pytest.raises(AssertionError, match=error):
        _check(lines, exempt=lambda _name, _keys: False)


def test_the_recorded_line_parser_keeps_quoted_arguments_whole() -> None:
    parsed = _args(b'1.5 [0 lua] "HSET" "k" "p" "{\\"a\\": \\"b c\\"}"')
    assert parsed == ("lua", [b"HSET", b"k", b"p", b'{"a": "b c"}'])
    assert _args(b"+OK") is None

