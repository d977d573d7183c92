"""Redis Cluster: the URL, queues spread over the masters, waits across them, doctor, and work
that goes on after a master is killed and its replica takes over."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis.crc import key_slot

import monoq
from monoq.backends.redis import RedisBackend
from monoq.backends.redis._connect import ClusterTarget, parse_cluster_url
from monoq.client import Client, connect
from monoq.context import Context
from monoq.core.models import JobQuery, JobState, NewJob
from monoq.errors import BackendUnavailable, ConfigError
from monoq.registry import Registry, open_backend
from monoq.testing.support import T0, new_job
from monoq.worker import Worker, WorkerSettings

from .conftest import Cluster, ask, running_cluster, until

pytestmark = pytest.mark.redis

LEASE = timedelta(seconds=30)
# Short timeouts so that calls to a dead master fail fast and are retried.
FAST = {"socket_timeout": 1.0, "connect_timeout": 0.5, "pool_timeout": 5.0}
# The slot ranges redis-cli --cluster create gives the three masters, in the order given.
RANGES = ((0, 5460), (5461, 10922), (10923, 16383))


def queues_on_each_master(prefix: str = "q") -> list[str]:
    """One queue name whose keys hash into each master's slot range."""
    names: list[str] = []
    n = 0
    for lo, hi in RANGES:
        while True:
            name = f"{prefix}{n}"
            n += 1
            if lo <= key_slot(f"monoq:{{{name}}}:".encode()) <= hi:
                names.append(name)
                break
    return names


# -- the URL ----------------------------------------------------------------------------------


def test_a_cluster_url_names_some_nodes_and_the_credentials() -> None:
    assert parse_cluster_url("redis+cluster://10.0.0.1:7000,10.0.0.2:7001/") == ClusterTarget(
        nodes=(("10.0.0.1", 7000), ("10.0.0.2", 7001)))
    assert parse_cluster_url("rediss+cluster://u:p%40ss@[::1]:7000,h/0") == ClusterTarget(
        nodes=(("::1", 7000), ("h", 6379)), username="u", password="p@ss", tls=True)  # noqa: S106


@pytest.mark.parametrize(("url", "says"), [
    ("redis+cluster://h:7000/1", "only database 0"),
    ("redis+cluster://h:port/", "is not a host:port"),
    ("redis+cluster://h:7000,:7001/", "is not a host:port"),
])
def test_a_bad_cluster_url_is_refused_with_the_part_named(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        RedisBackend(url)


@pytest.mark.parametrize(("url", "options", "says"), [
    ("redis+cluster://h:7000/", {"replicas_ack": 1}, "not supported with redis\\+cluster"),
    ("redis+cluster://h:7000/", {"ssl_ca_certs": "/ca.pem"}, "only applies to rediss://"),
    ("redis+cluster://h:7000/", {"sentinel_password": "x"}, "only applies to redis\\+sentinel"),
])
def test_bad_cluster_options_are_refused(url: str, options: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        RedisBackend(url, options)


def test_the_description_of_a_cluster_backend_carries_no_password() -> None:
    backend = RedisBackend("redis+cluster://:hunter2@127.0.0.1:7000,127.0.0.1:7001/")
    assert "hunter2" not in backend.description
    assert backend.description == "cluster 127.0.0.1:7000,127.0.0.1:7001"
    assert isinstance(open_backend("rediss+cluster://127.0.0.1:7000/"), RedisBackend)


# -- on the cluster ---------------------------------------------------------------------------


async def test_queues_spread_over_the_masters_work_as_one(cluster: Cluster) -> None:
    names = queues_on_each_master()
    b = RedisBackend(cluster.url)
    await b.connect()
    try:
        stored = await b.enqueue([new_job(q) for q in names for _ in range(2)], now=T0)
        assert all(e.created for e in stored)
        # a claim across the masters takes the queues in the order given
        leases = await b.claim(list(reversed(names)), limit=5, lease_for=LEASE,
                               worker_id="w", now=T0)
        assert [lease.job.queue for lease in leases] == [names[2]] * 2 + [names[1]] * 2 + [
            names[0]]
        # a job is found by its id alone, whichever master holds it
        assert [j.queue if j else None for j in await b.get_many([e.job.id for e in stored])
                ] == [e.job.queue for e in stored]
        page = await b.list_jobs(JobQuery(limit=4))
        assert [j.id for j in page.jobs] == sorted((e.job.id for e in stored), reverse=True)[:4]
        assert [s.queue for s in await b.stats()] == sorted(names)
    finally:
        await b.aclose()


async def test_a_wait_across_masters_is_woken_by_an_enqueue_to_any_of_them(
        cluster: Cluster) -> None:
    names = queues_on_each_master()
    b = RedisBackend(cluster.url)
    producer = RedisBackend(cluster.url)
    await b.connect()
    await producer.connect()
    try:
        for q in names:
            # The wait's own timeout is far beyond the test's patience: returning at all means
            # the enqueue woke it (no wall-clock bound that a loaded machine could break).
            waiting = asyncio.ensure_future(b.wait_for_jobs(names, timeout=600))
            await asyncio.sleep(0.2)
            assert not waiting.done()
            await producer.enqueue([new_job(q)], now=T0)
            await asyncio.wait_for(waiting, timeout=60)
            await b.claim([q], limit=1, lease_for=LEASE, worker_id="w", now=T0)
        # a scheduler's wait covers every queue's changes list and the global one
        waiting = asyncio.ensure_future(b.wait_for_changes(timeout=600))
        await asyncio.sleep(0.2)
        await producer.enqueue([new_job("brand-new-queue")], now=T0)
        await asyncio.wait_for(waiting, timeout=60)
    finally:
        await b.aclose()
        await producer.aclose()


async def test_doctor_checks_every_master(cluster: Cluster) -> None:
    b = RedisBackend(cluster.url)
    await b.connect()
    try:
        checks = {name: (level, message) for name, level, message in await b.doctor()}
    finally:
        await b.aclose()
    assert checks["redis.cluster"] == ("ok", ("cluster_state ok, 3 masters, 16384 of 16384 "
                                             "slots ok"))
    assert checks["redis.maxmemory-policy"] == ("ok", "noeviction")
    level, message = checks["redis.persistence"]  # the test cluster has no persistence
    assert level == "warn" and message.count("127.0.0.1:") == 3


# -- a master dies ----------------------------------------------------------------------------

RUNS: Counter[str] = Counter()  # job id -> runs of its handler, in this process


@monoq.handler("cluster.record")
async def record(ctx: Context, payload: Any) -> Any:
    RUNS[ctx.job.id] += 1
    return payload


async def _submit_until_acknowledged(client: Client, new: NewJob) -> None:
    """Retry the same job (same id) until it is acknowledged."""
    while True:
        try:
            await client.submit_job(new)
            return
        except BackendUnavailable:
            await anyio.sleep(0.05)


async def _wait_all_completed(client: Client, ids: list[str], timeout: float) -> None:
    with anyio.fail_after(timeout):
        while True:
            try:
                jobs = await client.backend.get_many(ids)
            except BackendUnavailable:
                jobs = []
            if jobs and all(j is not None and j.state is JobState.COMPLETED for j in jobs):
                return
            await anyio.sleep(0.1)


@pytest.mark.slow
async def test_work_goes_on_after_a_master_is_killed_and_its_replica_takes_over(
        tmp_path: Path) -> None:
    names = queues_on_each_master("fail")
    with running_cluster(tmp_path) as cluster:
        # The master of the global id index: every enqueue and get goes through it.
        victim = next(node for node in cluster.masters()
                      if RANGES[_range_of(key_slot(b"monoq:jobq"))][0] in _slots_of(node))
        RUNS.clear()
        registry = Registry()
        registry.add_function(record)
        acked: list[str] = []
        async with connect(cluster.url, options=FAST) as client:
            worker = Worker(client, registry, WorkerSettings(
                queues=tuple(names), concurrency=4, lease=timedelta(seconds=3),
                heartbeat=timedelta(seconds=1), grace=timedelta(seconds=5), idle_wait=0.5))
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)

                async def produce(n: int) -> None:
                    for i in range(n):
                        new = client.build("cluster.record", {"n": len(acked) + i},
                                           queue=names[i % len(names)])
                        await _submit_until_acknowledged(client, new)
                        acked.append(new.id)

                await produce(60)
                victim.kill()
                async with anyio.create_task_group() as during:
                    during.start_soon(produce, 30)
                    await anyio.to_thread.run_sync(
                        lambda: until(lambda: len(cluster.masters()) == 3,
                                      "a replica to take the dead master's slots", 60))
                    await anyio.to_thread.run_sync(cluster.wait_ok)
                after = len(acked)
                await produce(60)  # work goes on on every master, with no restart
                await _wait_all_completed(client, acked[after:], timeout=90)
                worker.stop()
        # Without WAIT Redis replicates asynchronously: a job acknowledged just before the
        # kill may be lost, so only the work after the failover must all be done.
        assert all(RUNS[job_id] >= 1 for job_id in acked[after:])
        assert set(names) <= {j.queue for j in await _jobs(cluster.url, acked[after:])}


async def _jobs(url: str, ids: list[str]) -> list[Any]:
    b = RedisBackend(url)
    await b.connect()
    try:
        return [j for j in await b.get_many(ids) if j is not None]
    finally:
        await b.aclose()


def _range_of(slot: int) -> int:
    return next(n for n, (lo, hi) in enumerate(RANGES) if lo <= slot <= hi)


def _slots_of(node: Any) -> set[int]:
    """The first slot of each range of slots a node serves (from CLUSTER NODES)."""
    myself = ask(node.port, "CLUSTER", "MYID").split(b"\r\n")[1]
    firsts: set[int] = set()
    for line in ask(node.port, "CLUSTER", "NODES").split(b"\n"):
        fields = line.split()
        if fields and fields[0] == myself:
            firsts |= {int(part.split(b"-")[0]) for part in fields[8:]}
    return firsts
