"""``monoq bench --only scale`` on a Redis Cluster: the jobs are spread over one queue per
master, every job runs once, and the table gives each drain as a ratio to one worker process,
with each master's CPU. Tiny sizes, no speed asserted: the figures are for the README."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import attrs
import pytest
import redis

from monoq.backends.redis._backend import RedisBackend
from monoq.bench import Bench, print_table, spread_queues
from monoq.core.models import Job, JobQuery, JobState

from .conftest import Cluster

pytestmark = pytest.mark.redis

JOBS = 300
PREFIX = "monoqbench"  # the bench's key prefix on a cluster


@attrs.frozen
class Left:
    """What a drain left on the cluster, read before the bench empties it."""

    jobs: list[Job]
    tags: dict[str, set[str]]  # master "host:port" -> hash tags of the bench keys it holds


def _jobs(url: str) -> list[Job]:
    async def read() -> list[Job]:
        backend = RedisBackend(url, {"key_prefix": PREFIX})
        await backend.connect()
        try:
            jobs: list[Job] = []
            cursor = None
            while True:
                page = await backend.list_jobs(JobQuery(limit=500, cursor=cursor))
                jobs += page.jobs
                if page.next_cursor is None:
                    return jobs
                cursor = page.next_cursor
        finally:
            await backend.aclose()

    # fresh() is called from inside the bench's event loop: read on a loop of our own
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, read()).result()


def _tags(cluster: Cluster) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for node in cluster.masters():
        r = redis.Redis(port=node.port)
        try:
            found[f"127.0.0.1:{node.port}"] = {
                key.decode().split("{", 1)[1].split("}", 1)[0]
                for key in r.scan_iter(match=PREFIX + ":{*", count=1000)}
        finally:
            r.close()
    return found


def _bench_keys(cluster: Cluster) -> int:
    total = 0
    for node in cluster.masters():
        r = redis.Redis(port=node.port)
        try:
            total += sum(1 for _ in r.scan_iter(match=PREFIX + ":*", count=1000))
        finally:
            r.close()
    return total


def _inspecting(bench: Bench, cluster: Cluster, seen: list[Left]) -> Callable[[], None]:
    """The bench's own fresh(), after a look at what the last section left."""
    empty = bench.fresh
    assert empty is not None  # a cluster bench empties its keys itself

    def fresh() -> None:
        seen.append(Left(_jobs(cluster.url), _tags(cluster)))
        empty()

    return fresh


def _columns(table: str, name: str) -> list[str]:
    lines = [line for line in table.splitlines() if line.startswith(f"| {name} |")]
    assert len(lines) == 1, f"{name!r} in\n{table}"
    return [cell.strip() for cell in lines[0].strip("|").split("|")]


@pytest.mark.slow
async def test_the_scale_bench_spreads_the_jobs_over_the_masters_and_runs_each_once(
        cluster: Cluster) -> None:
    bench = Bench(cluster.url, jobs=JOBS, processes=(1, 2))
    seen: list[Left] = []
    bench.fresh = _inspecting(bench, cluster, seen)
    rows = await bench.run({"scale"})
    table = print_table(rows, cluster.url)

    # fresh() ran before each drain and once at the end: nothing before, two drains' jobs after
    assert [len(left.jobs) for left in seen] == [0, JOBS, JOBS]
    masters = {f"127.0.0.1:{node.port}" for node in cluster.masters()}
    assert len(masters) == 3
    for left in seen[1:]:
        assert len({job.id for job in left.jobs}) == JOBS
        assert {job.state for job in left.jobs} == {JobState.COMPLETED}
        assert {job.attempt for job in left.jobs} == {1}  # each ran once, none retried
        per_queue = Counter(job.queue for job in left.jobs)
        assert sorted(per_queue.values()) == [JOBS // 3] * 3
        # each master holds the keys of exactly one of the queues, a different one each
        assert set(left.tags) == masters
        assert all(len(tags) == 1 for tags in left.tags.values()), left.tags
        assert set().union(*left.tags.values()) == set(per_queue)
    assert _bench_keys(cluster) == 0  # the bench emptied its keys when it was done

    plural = {1: "", 2: "es"}
    holder = {next(iter(tags)): master for master, tags in seen[1].tags.items()}
    for k in (1, 2):
        drain = _columns(table, f"scale: drain {JOBS} no-op jobs over 3 queues on 3 masters, "
                                f"{k} worker process{plural[k]}, concurrency 10 each")
        assert re.match(r"[\d,]+ jobs/s", drain[1]), drain
        # the table says which master held which queue, as the cluster itself does
        named = {}
        for row in rows:
            match = re.fullmatch(rf"scale: master (\S+) \(queue (\S+)\) CPU per job of its "
                                 rf"queue, {k} worker process{plural[k]}", row.name)
            if match:
                named[match.group(2)] = match.group(1)
                assert row.unit == "µs" and f"{JOBS // 3} jobs" in row.note, row
        assert named == holder
        for name in (f"scale: worker CPU per job, {k} process{plural[k]}",
                     f"scale: all masters' CPU per job, {k} worker process{plural[k]}",
                     f"scale: all replicas' CPU per job, {k} worker process{plural[k]}",
                     f"scale: machine CPU busy, {k} worker process{plural[k]}"):
            assert _columns(table, name)[1], name
    # the two-process drain as a ratio to the one-process drain
    two = _columns(table, f"scale: drain {JOBS} no-op jobs over 3 queues on 3 masters, "
                          "2 worker processes, concurrency 10 each")
    assert two[2].endswith("(1 worker process, same drain)")
    assert re.fullmatch(r"\d+\.\d\d\u00d7", two[3]), two
    assert "3 replicas" in _columns(
        table, "scale: all replicas' CPU per job, 2 worker processes")[1]


def test_one_queue_is_found_for_each_master_in_the_masters_order() -> None:
    from redis.crc import key_slot

    ranges = {"a:1": (0, 5460), "b:2": (5461, 10922), "c:3": (10923, 16383)}

    def master_of(key: str) -> str:
        slot = key_slot(key.encode())
        return next(m for m, (lo, hi) in ranges.items() if lo <= slot <= hi)

    found = spread_queues(["c:3", "a:1", "b:2"], master_of, PREFIX)
    assert [master for _, master, _ in found] == ["c:3", "a:1", "b:2"]
    assert len({queue for queue, _, _ in found}) == 3
    for queue, master, slot in found:
        assert slot == key_slot(f"{PREFIX}:{{{queue}}}:ready".encode())
        lo, hi = ranges[master]
        assert lo <= slot <= hi


def test_a_master_no_queue_name_reaches_is_named_in_the_error() -> None:
    def master_of(key: str) -> str:
        return "a:1"

    with pytest.raises(RuntimeError, match="b:2"):
        spread_queues(["a:1", "b:2"], master_of, PREFIX, tries=50)
