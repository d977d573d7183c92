"""``monoq bench``: throughput, latency and memory of one backend, measured on this machine.

Everything runs against the configured (or ``--backend``) URL, with the same client and worker
code that ``monoq run`` uses; the cross-process latency starts a real ``monoq run --roles
worker`` child. Each run also measures the raw floor of the storage (a bare driver loop doing the
same writes) so the table shows what monoq's own overhead costs.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import attrs

import monoq
from monoq.client import Client
from monoq.core.codec import json_decode
from monoq.core.models import JobState
from monoq.registry import Registry, open_backend
from monoq.worker import Worker, WorkerSettings

_started: dict[str, float] = {}
_events: dict[str, anyio.Event] = {}


@monoq.handler("monoq.bench.noop")
async def noop(ctx: monoq.Context, payload: Any) -> None:
    """Do nothing (throughput benchmarks)."""


@monoq.handler("monoq.bench.sleep")
async def sleep10(ctx: monoq.Context, payload: Any) -> None:
    """Sleep ``payload`` seconds (default 10 ms)."""
    await anyio.sleep(float(payload or 0.01))


@monoq.handler("monoq.bench.stamp")
async def stamp(ctx: monoq.Context, payload: Any) -> float:
    """Answer the wall-clock time at which the job started (latency benchmarks)."""
    now = time.time()
    event = _events.get(ctx.job_id)
    if event is not None:
        _started[ctx.job_id] = time.perf_counter()
        event.set()
    return now


@attrs.define
class Row:
    """One line of the benchmark table."""

    name: str
    value: float
    unit: str
    note: str = ""


def _registry() -> Registry:
    registry = Registry.discover()
    registry.add_module(sys.modules[__name__])
    return registry


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Bench:
    """Runs the benchmark sections against fresh backends built from ``url``."""

    def __init__(self, url: str, options: dict[str, Any] | None = None, *, jobs: int = 10_000,
                 fresh: Callable[[], None] | None = None) -> None:
        self.url = url
        self.options = options or {}
        self.jobs = jobs
        self.fresh = fresh  # empties the storage between sections
        self.rows: list[Row] = []

    def _client(self) -> Client:
        return Client(open_backend(self.url, self.options), registry=_registry())

    async def _with_client(self, body: Callable[[Client], Awaitable[None]]) -> None:
        if self.fresh is not None:
            self.fresh()
        client = self._client()
        await client.backend.connect()
        try:
            await body(client)
        finally:
            await client.backend.aclose()

    def add(self, name: str, value: float, unit: str, note: str = "") -> None:
        """Record a figure and print it as it comes."""
        self.rows.append(Row(name, value, unit, note))
        sys.stderr.write(f"  {name}: {value:,.1f} {unit} {note}\n")

    # -- sections -------------------------------------------------------------------------------

    async def enqueue_batch(self, client: Client) -> None:
        """Batch enqueue of N jobs in batches of 500."""
        n, size = self.jobs, 500
        items = [{"handler": "monoq.bench.noop", "payload": i} for i in range(size)]
        start = time.perf_counter()
        for _ in range(n // size):
            await client.enqueue_many(items)
        self.add("batch enqueue (500 per call)", _rate(n, time.perf_counter() - start), "jobs/s")

    async def enqueue_bulk(self, client: Client) -> None:
        """Bulk enqueue: N jobs in calls of 10 000 (the backend splits and pipelines them)."""
        n, size = self.jobs, 10_000
        items = [{"handler": "monoq.bench.noop", "payload": i} for i in range(min(size, n))]
        start = time.perf_counter()
        for _ in range(max(n // size, 1)):
            await client.enqueue_many(items)
        self.add(f"bulk enqueue ({len(items)} per call)",
                 _rate(max(n // size, 1) * len(items), time.perf_counter() - start), "jobs/s")

    async def enqueue_concurrent(self, client: Client) -> None:
        """Single enqueues, 100 in flight."""
        n = min(self.jobs, 5000)
        limiter = anyio.Semaphore(100)

        async def one(i: int) -> None:
            async with limiter:
                await client.enqueue("monoq.bench.noop", i)

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i)
        self.add("single enqueue, 100 in flight", _rate(n, time.perf_counter() - start),
                 "jobs/s")

    async def _drain(self, client: Client, handler: str, n: int, concurrency: int,
                     payload: Any = None) -> float:
        items = [{"handler": handler, "payload": payload} for _ in range(500)]
        for start in range(0, n, 500):
            await client.enqueue_many(items[: min(500, n - start)])
        worker = Worker(client, client.registry or _registry(), WorkerSettings(
            concurrency=concurrency, lease=timedelta(seconds=60),
            heartbeat=timedelta(seconds=20), grace=timedelta(seconds=5), worker_id="bench"))
        began = time.perf_counter()
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            # polling a counter costs less than an event per job
            while worker.processed < n:  # noqa: ASYNC110
                await anyio.sleep(0.002)
            worker.stop()
        took = time.perf_counter() - began
        [stats] = await client.queues(["default"])
        done = stats.counts.get(JobState.COMPLETED, 0)
        if done != n:
            raise RuntimeError(f"drain finished with {done} of {n} jobs completed")
        return took

    async def drain_noop(self, client: Client, concurrency: int) -> None:
        """One worker draining N no-op jobs."""
        took = await self._drain(client, "monoq.bench.noop", self.jobs, concurrency)
        self.add(f"drain {self.jobs} no-op jobs, concurrency {concurrency}",
                 _rate(self.jobs, took), "jobs/s")

    async def drain_sleep(self, client: Client, concurrency: int = 10, n: int = 2000) -> None:
        """Jobs that sleep 10 ms."""
        took = await self._drain(client, "monoq.bench.sleep", n, concurrency, 0.01)
        self.add(f"{n} jobs sleeping 10 ms, concurrency {concurrency}", _rate(n, took),
                 "jobs/s", f"(ideal {concurrency * 100})")

    async def latency_same_process(self, client: Client, samples: int = 300) -> None:
        """Enqueue-to-start with an idle worker in this process."""
        worker = Worker(client, client.registry or _registry(),
                        WorkerSettings(concurrency=10, worker_id="bench-latency"))
        lat: list[float] = []
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            await anyio.sleep(0.05)
            for _ in range(samples):
                await anyio.sleep(0.002)  # let the worker go idle again
                event = anyio.Event()
                t0 = time.perf_counter()
                job = client.build("monoq.bench.stamp")
                _events[job.id] = event
                await client.backend.enqueue([job], now=client.clock())
                with anyio.fail_after(10):
                    await event.wait()
                lat.append((_started.pop(job.id) - t0) * 1000)
                _events.pop(job.id, None)
            worker.stop()
        self.add("enqueue-to-start p50, same process", statistics.median(lat), "ms")
        self.add("enqueue-to-start p99, same process", _pct(lat, 0.99), "ms")

    async def latency_cross_process(self, client: Client, samples: int = 200) -> None:
        """Enqueue-to-start with an idle ``monoq run --roles worker`` child process."""
        env = {**os.environ, "MONOQ_MONOQ_IMPORTS": __name__, "MONOQ_MONOQ_LOG_LEVEL": "WARNING"}
        if self.options:  # e.g. the key_prefix: the child must look where this client writes
            env["MONOQ_BACKEND_OPTIONS"] = json.dumps(dict(self.options))
        child = subprocess.Popen(  # noqa: ASYNC220 - started once, not on the loop's hot path
            [sys.executable, "-m", "monoq", "run", "--roles", "worker", "--backend", self.url],
            env=env,
        )
        try:
            warm = await client.enqueue("monoq.bench.stamp")
            await client.wait(warm.id, timeout=30)
            lat: list[float] = []
            for _ in range(samples):
                await anyio.sleep(0.02)
                t0 = time.time()
                job = await client.enqueue("monoq.bench.stamp")
                done = await client.wait(job.id, timeout=30)
                lat.append((float(json_decode(done.result_json or b"0")) - t0) * 1000)
        finally:
            child.terminate()
            child.wait(timeout=30)
        self.add("enqueue-to-start p50, across processes", statistics.median(lat), "ms")
        self.add("enqueue-to-start p99, across processes", _pct(lat, 0.99), "ms")

    async def backlog(self, client: Client, deep: int = 1_000_000, shallow: int = 1000,
                      take: int = 1000, batch: int = 10) -> None:
        """Redis only: claim+finish latency behind a deep vs a shallow backlog; memory per job.

        For each depth the queue is filled in 1000-job calls with 100-byte payloads (a JSON
        string of 98 characters), then ``take`` jobs are claimed and finished ``batch`` at a
        time, as a worker with that prefetch would. Redis's ``used_memory`` before and after the
        deep fill gives the memory one queued job costs.
        """
        import redis.asyncio as aioredis

        from monoq.core.models import Finish, Outcome

        r = aioredis.Redis.from_url(self.url)
        payload = "x" * 98  # 100 bytes once JSON-encoded
        try:
            for depth in (shallow, deep):
                if self.fresh is not None:
                    self.fresh()
                before = int((await r.info("memory"))["used_memory"])
                started = time.perf_counter()
                for first in range(0, depth, 1000):
                    count = min(1000, depth - first)
                    await client.enqueue_many(
                        [{"handler": "monoq.bench.noop", "payload": payload}] * count)
                filled = time.perf_counter() - started
                used = int((await r.info("memory"))["used_memory"]) - before
                lat: list[float] = []
                for _ in range(take // batch):
                    t0 = time.perf_counter()
                    leases = await client.backend.claim(
                        ["default"], limit=batch, lease_for=timedelta(seconds=60),
                        worker_id="bench-backlog", now=client.clock())
                    applied = await client.backend.finish(
                        [Finish(lease, Outcome.COMPLETED, result_json=b"null")
                         for lease in leases], now=client.clock())
                    lat.append((time.perf_counter() - t0) * 1000)
                    if len(leases) != batch or not all(applied):
                        raise RuntimeError(f"backlog {depth}: claimed {len(leases)} of {batch}")
                label = f"{depth:,} queued"
                if depth == deep:
                    self.add(f"batch enqueue up to {label} (1000 per call)",
                             _rate(depth, filled), "jobs/s")
                    self.add("Redis memory per queued job (100-byte payload)", used / depth,
                             "bytes", f"(used_memory delta / {depth:,})")
                self.add(f"claim+finish {take} jobs, {batch} per claim, {label}", sum(lat),
                         "ms", f"(p50 {statistics.median(lat):.2f} ms, "
                               f"p99 {_pct(lat, 0.99):.2f} ms per batch)")
        finally:
            await r.aclose()
            if self.fresh is not None:
                self.fresh()  # give the deep backlog's memory back

    def _ratios(self) -> None:
        """monoq against the raw floor of the same storage, measured in this run."""
        values = {row.name: row.value for row in self.rows}
        pairs = [
            ("batch enqueue (500 per call)", "floor: bare aiosqlite insert (500 per transaction)"),
            ("batch enqueue (500 per call)", "floor: batched Lua enqueue (500 per call)"),
            (f"drain {self.jobs} no-op jobs, concurrency 100",
             "floor: bare aiosqlite claim+ack (500 per transaction)"),
            (f"drain {self.jobs} no-op jobs, concurrency 100",
             "floor: batched Lua claim+ack (500 per call)"),
        ]
        for ours, floor in pairs:
            if ours in values and floor in values and values[floor]:
                self.add(f"ratio: {ours} / {floor}", values[ours] / values[floor] * 100, "%")

    async def run(self, sections: set[str]) -> list[Row]:
        """Run the chosen sections in order; answers the table."""
        shared = open_backend(self.url, self.options).capabilities.shared_across_processes
        plan: list[tuple[str, Callable[[Client], Awaitable[None]]]] = [
            ("enqueue", self.enqueue_batch),
            ("enqueue", self.enqueue_bulk),
            ("enqueue", self.enqueue_concurrent),
            ("drain", lambda c: self.drain_noop(c, 10)),
            ("drain", lambda c: self.drain_noop(c, 100)),
            ("sleep", lambda c: self.drain_sleep(c, 10)),
            ("sleep", lambda c: self.drain_sleep(c, 500, 20_000)),
            ("latency", self.latency_same_process),
        ]
        if shared:
            plan.append(("latency", self.latency_cross_process))
        if self.url.split("://", 1)[0] in ("redis", "rediss", "unix"):
            # Not a default section: it queues 1 000 000 jobs (about a minute, ~1.4 GB of Redis).
            plan.append(("backlog", self.backlog))
        for section, body in plan:
            if section in sections:
                await self._with_client(body)
        if "floor" in sections:
            floor = _floors().get(self.url.split("://", 1)[0])
            if floor is not None:
                if self.fresh is not None:
                    self.fresh()
                await floor(self)
                self._ratios()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.add("peak RSS of the benchmark process", rss, "MiB")
        return self.rows


def _remove_db(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)


def _floors() -> dict[str, Callable[[Bench], Awaitable[None]]]:
    """Raw-floor measurements by URL scheme: the bare driver doing the same writes."""
    return {"sqlite": _sqlite_floor, "redis": _redis_floor}


async def _sqlite_floor(bench: Bench) -> None:
    """Bare aiosqlite: insert N rows in 500-row transactions, then claim+ack them in batches."""
    import aiosqlite

    path = bench.url.split("://", 1)[1][1:] + ".floor"
    _remove_db(path)
    n, size = bench.jobs, 500
    async with aiosqlite.connect(path, isolation_level=None) as db:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=FULL")
        await db.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, state INTEGER NOT NULL, "
                         "priority INTEGER NOT NULL, payload BLOB)")
        await db.execute("CREATE INDEX jobs_ready ON jobs (state, priority, id)")
        start = time.perf_counter()
        for batch in range(n // size):
            await db.execute("BEGIN IMMEDIATE")
            await db.executemany("INSERT INTO jobs (id, state, priority, payload) "
                                 "VALUES (?, 0, 5, ?)",
                                 [(batch * size + i, b"null") for i in range(size)])
            await db.execute("COMMIT")
        bench.add("floor: bare aiosqlite insert (500 per transaction)",
                  _rate(n, time.perf_counter() - start), "rows/s")
        start = time.perf_counter()
        while True:
            await db.execute("BEGIN IMMEDIATE")
            cur = await db.execute(
                "UPDATE jobs SET state = 1 WHERE id IN (SELECT id FROM jobs WHERE state = 0 "
                "ORDER BY priority, id LIMIT ?) RETURNING id", (size,))
            ids = [row[0] for row in await cur.fetchall()]
            await db.execute("COMMIT")
            if not ids:
                break
            await db.execute("BEGIN IMMEDIATE")
            await db.executemany("UPDATE jobs SET state = 2 WHERE id = ?", [(i,) for i in ids])
            await db.execute("COMMIT")
        bench.add("floor: bare aiosqlite claim+ack (500 per transaction)",
                  _rate(n, time.perf_counter() - start), "rows/s")
    _remove_db(path)


async def _redis_floor(bench: Bench) -> None:
    """Bare redis-py: LPUSH+LMOVE one at a time, then batched Lua enqueue and claim+ack."""
    import redis.asyncio as aioredis

    n = min(bench.jobs, 10_000)
    r = aioredis.Redis.from_url(bench.url)
    try:
        await r.delete("bench:floor:q", "bench:floor:run", "bench:floor:done")
        start = time.perf_counter()
        for i in range(n):
            await r.lpush("bench:floor:q", i)
        for _ in range(n):
            await r.lmove("bench:floor:q", "bench:floor:run", "RIGHT", "LEFT")
        bench.add("floor: LPUSH then LMOVE, one call each",
                  _rate(n, time.perf_counter() - start), "jobs/s")
        await r.delete("bench:floor:q", "bench:floor:run")
        push = r.register_script(
            "for i = 1, #ARGV do redis.call('HSET', KEYS[1] .. ARGV[i], 'p', 'null', 's', 'q') "
            "redis.call('ZADD', KEYS[2], 5, ARGV[i]) end return #ARGV")
        take = r.register_script(
            "local ids = redis.call('ZPOPMIN', KEYS[1], ARGV[1]) local out = {} "
            "for i = 1, #ids, 2 do redis.call('HSET', KEYS[2] .. ids[i], 's', 'r') "
            "out[#out + 1] = ids[i] end return out")
        ack = r.register_script(
            "for i = 1, #ARGV do redis.call('HSET', KEYS[1] .. ARGV[i], 's', 'd') end "
            "return #ARGV")
        start = time.perf_counter()
        for batch in range(n // 500):
            await push(keys=["bench:floor:job:", "bench:floor:q"],
                       args=[str(batch * 500 + i) for i in range(500)])
        bench.add("floor: batched Lua enqueue (500 per call)",
                  _rate(n, time.perf_counter() - start), "jobs/s")
        start = time.perf_counter()
        while True:
            ids = await take(keys=["bench:floor:q", "bench:floor:job:"], args=[500])
            if not ids:
                break
            await ack(keys=["bench:floor:job:"], args=ids)
        bench.add("floor: batched Lua claim+ack (500 per call)",
                  _rate(n, time.perf_counter() - start), "jobs/s")
        keys = [key async for key in r.scan_iter("bench:floor:*", count=1000)]
        for i in range(0, len(keys), 1000):
            await r.delete(*keys[i : i + 1000])
    finally:
        await r.aclose()


def print_table(rows: list[Row], url: str) -> str:
    """The rows as a Markdown table (what the README shows)."""
    lines = [f"| {url} | value |", "|---|---:|"]
    for row in rows:
        note = f" {row.note}" if row.note else ""
        lines.append(f"| {row.name} | {row.value:,.1f} {row.unit}{note} |")
    return "\n".join(lines)
