"""``monoq bench``: throughput, latency and memory of one backend, measured on this machine.

The rows the project's performance targets are stated in are measured in the setup the targets
name: the worker is a real ``monoq run --roles worker`` child process (concurrency 10) on the
same backend URL, started by the bench in an empty directory and stopped at the end of its
section, and the handlers are async no-ops that record a timestamp. Each figure is printed
beside its floor, measured in the same run because absolute times on a shared machine drift by
tens of percent: the bare driver doing the same storage work (stdlib ``sqlite3`` with the same
``synchronous`` setting, or redis-py on the same kind of connection), or a bare event loop for
the sleeping jobs. A row shows the figure, the floor, the ratio figure/floor and the target
with whether it is met.

A drain through the child is timed from the stored jobs: from the earliest ``started_at`` (the
moment the child sent its first claim) to the latest ``finished_at`` (the moment it sent the
last outcome), both read back after the run, so the bench's own polling for completion does not
count. In-process rows (a ``Worker`` in the bench process) are kept where they are still
useful, such as the drain at concurrency 100.

The scale section (not run by default) drains the same N no-op jobs with 1, 2 and 4 worker
children at concurrency 10 each, and gives each rate as a ratio to one child, with the CPU the
children spent per job and, on Redis, the CPU Redis spent per job (``INFO cpu``) and how busy
its one command thread was: where the figures stop growing, that says which side is the limit.
On a Redis Cluster (``redis+cluster://``) the jobs are spread evenly over one queue per master,
named so that each queue's hash slot sits on a different master (``ClusterLayout``); each child
consumes every queue, starting with a different one, and the CPU of each master and of the
replicas is read from their own ``INFO cpu``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import attrs

import monoq
from monoq.client import Client
from monoq.config import SOURCE_ENV_NAMES
from monoq.core.codec import json_decode
from monoq.core.loop import loop_name
from monoq.core.models import Job, JobState
from monoq.progress import Progress
from monoq.registry import Registry, open_backend
from monoq.worker import Worker, WorkerSettings

SECTIONS = ("single", "enqueue", "drain", "sleep", "latency", "floor", "backlog", "scale")
SCALE_PROCESSES = (1, 2, 4)  # worker children of the scale section, one drain each
WORKER_CONCURRENCY = 10  # the worker child's, as the targets are stated
READY_LINE = "monoq running roles"  # the supervisor's log line once the backend is connected
TIMES = "\u00d7"  # the multiplication sign, as in "0.8x floor"

_started: dict[str, float] = {}
_events: dict[str, anyio.Event] = {}


@monoq.handler("monoq.bench.noop")
async def noop(ctx: monoq.Context, payload: Any) -> float:
    """Do nothing but record when it ran (throughput benchmarks): answers ``time.time()``."""
    return time.time()


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


# -- rows and targets ----------------------------------------------------------------------------


@attrs.frozen
class Target:
    """A stated target: the figure (or, with ``of_floor``, the ratio figure/floor) must be at
    least ``low`` and at most ``high``."""

    text: str
    low: float | None = None
    high: float | None = None
    of_floor: bool = False

    @classmethod
    def at_least(cls, value: float, unit: str) -> Target:
        """The figure must be >= ``value``."""
        return cls(f"≥ {value:,g} {unit}", low=value)

    @classmethod
    def at_most(cls, value: float, unit: str) -> Target:
        """The figure must be <= ``value``."""
        return cls(f"≤ {value:,g} {unit}", high=value)

    @classmethod
    def floor_times(cls, factor: float) -> Target:
        """The figure must be >= ``factor`` times its floor."""
        return cls(f"≥ {factor:g}{TIMES} floor", low=factor, of_floor=True)

    def met(self, value: float, ratio: float | None) -> bool | None:
        """Whether it is met; None when it bounds the ratio and no floor was measured."""
        subject = ratio if self.of_floor else value
        if subject is None:
            return None
        if self.low is not None and subject < self.low:
            return False
        return not (self.high is not None and subject > self.high)


@attrs.define
class Row:
    """One line of the benchmark table; ``floor`` is in the row's unit."""

    name: str
    value: float
    unit: str
    floor: float | None = None
    ratio: float | None = None  # value / floor
    target: str | None = None
    met: bool | None = None  # None: no target, or a ratio target without a floor
    floor_name: str | None = None  # what the floor measures
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The row as a JSON object."""
        return attrs.asdict(self)


@attrs.frozen
class _Floor:
    name: str
    unit: str
    measure: Callable[[], Awaitable[None]]  # fills Bench.floors for this key (and maybe others)


def _registry() -> Registry:
    registry = Registry.discover()
    registry.add_module(sys.modules[__name__])
    return registry


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    if unit == "ms":
        return f"{value:,.2f} ms"
    if unit.endswith("/s"):
        return f"{value:,.0f} {unit}"
    return f"{value:,.1f} {unit}"


def proc_memory(pid: int) -> dict[str, float]:
    """``VmRSS`` and ``VmHWM`` (peak) of a process in MiB, from /proc (empty elsewhere)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    except OSError:
        return {}
    found: dict[str, float] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(rest.split()[0]) / 1024  # kB
    return found


def proc_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used, from /proc (None elsewhere)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # after "pid (comm)": state is field 3
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def machine_cpu() -> float | None:
    """CPU seconds all CPUs of this machine have been busy (not idle nor waiting on I/O),
    from /proc/stat (None elsewhere)."""
    try:
        first = Path("/proc/stat").read_text(encoding="utf-8").splitlines()[0]
    except (OSError, IndexError):
        return None
    ticks = [int(x) for x in first.split()[1:9]]  # user nice system idle iowait irq soft steal
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def _cpu_used(before: Sequence[float | None], after: Sequence[float | None]) -> float | None:
    """CPU seconds used in all by processes read twice with ``proc_cpu`` (None off Linux)."""
    used = 0.0
    for first, last in zip(before, after, strict=True):
        if first is None or last is None:
            return None
        used += last - first
    return used


def _remove_db(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)


def _absolute(url: str) -> str:
    """A ``sqlite:///relative.db`` URL made absolute, so the worker child (which runs in its own
    directory) opens the same file."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url[len(prefix) :].startswith("/"):
        return prefix + str(Path.cwd() / url[len(prefix) :])
    return url


# -- Redis Cluster -------------------------------------------------------------------------------


@attrs.frozen
class ClusterLayout:
    """The masters of a Redis Cluster (``host:port``, the nodes that serve slots), their
    replicas, and the bench's queues: one per master, as ``(queue, master, slot)``."""

    masters: tuple[str, ...]
    replicas: tuple[str, ...]
    queues: tuple[tuple[str, str, int], ...]

    @property
    def names(self) -> list[str]:
        """The queue names, in the masters' order."""
        return [queue for queue, _, _ in self.queues]


def spread_queues(masters: Sequence[str], master_of: Callable[[str], str], prefix: str,
                  stem: str = "scale", tries: int = 100_000) -> list[tuple[str, str, int]]:
    """One queue per master: the first names ``<stem>-0``, ``<stem>-1``, ... whose keys
    (``<prefix>:{<name>}:...``, the hash tag of ``monoq.backends.redis._keys``) hash to a slot
    of a master that has no queue yet. ``master_of`` answers the master serving a key's slot.
    Answers ``(queue, master, slot)`` in the order of ``masters``."""
    from redis.crc import key_slot

    from monoq.backends.redis._keys import Keys

    keys = Keys(prefix)
    found: dict[str, tuple[str, str, int]] = {}
    for i in range(tries):
        if len(found) == len(masters):
            break
        name = f"{stem}-{i}"
        key = keys.q(name, "")
        master = master_of(key)
        if master in masters and master not in found:
            found[master] = (name, master, key_slot(key.encode()))
    missing = [m for m in masters if m not in found]
    if missing:
        raise RuntimeError(f"no queue name of {tries} tried hashes to a slot of "
                           f"{', '.join(missing)}")
    return [found[m] for m in masters]


def _rotated(items: Sequence[str], by: int) -> list[str]:
    """``items`` starting at index ``by`` (modulo its length), wrapping around."""
    if not items:
        return []
    by %= len(items)
    return [*items[by:], *items[:by]]


def _replicas_of(info: dict[str, Any]) -> list[str]:
    """``host:port`` of each replica a master lists in ``INFO replication`` (``slaveN``)."""
    found: list[str] = []
    for key, value in info.items():
        if key.startswith("slave") and key[5:].isdigit() and isinstance(value, dict):
            found.append(f"{value['ip']}:{value['port']}")
    return sorted(found)


def _cpu_of(info: dict[str, Any]) -> float:
    """A server's own CPU seconds so far (``INFO cpu``: used_cpu_sys + used_cpu_user)."""
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


# -- the worker child ------------------------------------------------------------------------------


class WorkerChild:
    """A running ``monoq run --roles worker`` child: its process and the tail of its log."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self.pid = process.pid
        self.log: deque[str] = deque(maxlen=40)
        self._ready = anyio.Event()
        self._ended = False

    async def read_log(self) -> None:
        """Keep the tail of the child's stderr; note the ready line and the end of the output."""
        stream = self.process.stderr
        if stream is None:
            raise RuntimeError("the worker child has no stderr pipe")
        pending = b""
        try:
            async for chunk in stream:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    text = line.decode(errors="replace")
                    self.log.append(text)
                    if READY_LINE in text:
                        self._ready.set()
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        finally:
            self._ended = True
            self._ready.set()

    def check(self) -> None:
        """Raise if the child has exited (it should run until the bench stops it)."""
        if self._ended or self.process.returncode is not None:
            tail = "\n".join(self.log)
            raise RuntimeError(f"the worker child (pid {self.pid}) exited early:\n{tail}")

    async def wait_ready(self, timeout: float = 60) -> None:
        """Wait for the child's "monoq running roles" log line (its backend is connected)."""
        with anyio.fail_after(timeout):
            await self._ready.wait()
        self.check()

    async def stop(self) -> None:
        """SIGTERM (a graceful stop), then SIGKILL if it lingers; reap it."""
        process = self.process
        if process.returncode is None:
            process.terminate()
            with anyio.move_on_after(15):
                await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
        sys.stderr.write(f"  worker child pid {self.pid} exited ({process.returncode})\n")


# -- the bench -------------------------------------------------------------------------------------


class Bench:
    """Runs the benchmark sections against fresh backends built from ``url``.

    ``loop`` is the event loop the worker child runs (``[monoq] loop``); pass the one this
    process runs on, so the child and the bare-loop floor run the same loop.
    """

    def __init__(self, url: str, options: dict[str, Any] | None = None, *, jobs: int = 10_000,
                 fresh: Callable[[], None] | None = None, loop: str = "auto",
                 progress: Progress | None = None,
                 processes: Sequence[int] = SCALE_PROCESSES) -> None:
        self.url = _absolute(url)
        self.progress = progress if progress is not None else Progress(enabled=False)
        scheme = self.url.split("://", 1)[0]
        self.kind = "redis" if scheme in ("redis", "rediss", "unix") else scheme
        self.cluster = scheme in ("redis+cluster", "rediss+cluster")
        self.options = dict(options or {})
        if self.cluster:
            # The bench's keys under a prefix of their own, which fresh() empties on every master.
            self.options.setdefault("key_prefix", "monoqbench")
            if fresh is None:
                fresh = self._empty_cluster
        self.jobs = jobs
        self.processes = tuple(processes)  # worker children of the scale section's drains
        self.fresh = fresh  # empties the storage between sections
        self.loop = loop
        self.rows: list[Row] = []
        self.floors: dict[str, float] = {}  # floor key -> value, in the order measured
        self.with_floors = False
        self.children: list[int] = []  # pids of the worker children started
        self._plan: dict[str, _Floor] = {}
        # Sizes: the targets' own counts at --jobs 10000, smaller for a smoke run.
        self.n_single = min(jobs, 2000)
        self.n_flight = min(jobs, 5000)
        self.n_sleep = min(jobs, 2000)
        self.n_sleep_wide = min(2 * jobs, 20_000)
        self.samples_same = max(20, min(300, jobs // 30))
        self.samples_cross = max(20, min(200, jobs // 50))
        self._scale_base: float | None = None  # jobs/s of the scale section's one child

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

    def _target(self, what: str) -> Target | None:
        """The project's target for ``what`` on this kind of backend (None: no target)."""
        if self.kind not in ("sqlite", "redis"):
            return None
        if what == "single":
            return Target.floor_times(0.8)
        if what == "bulk":
            return Target.at_least(100_000, "jobs/s")
        if what == "drain":
            return Target.at_least(13_000 if self.kind == "redis" else 10_000, "jobs/s")
        if what == "sleep":
            return Target.floor_times(0.95)
        if what == "latency" and self.kind == "redis":
            return Target.at_most(0.7, "ms")
        if what == "rss":
            return Target.at_most(60, "MiB")
        return None

    async def record(self, name: str, value: float, unit: str, *, floor: str | None = None,
                     target: Target | None = None, note: str = "",
                     baseline: tuple[float, str] | None = None) -> None:
        """Add a figure with its floor (measured now if it was not yet) and target; or, with
        ``baseline`` (value, what it is), with that figure in the floor's place."""
        row = Row(name, value, unit, note=note, target=None if target is None else target.text)
        spec = self._plan.get(floor) if floor is not None and self.with_floors else None
        if baseline is not None:
            row.floor, row.floor_name = baseline
            row.ratio = value / row.floor if row.floor else None
        elif floor is not None and spec is not None:
            if floor not in self.floors:
                await spec.measure()
            row.floor = self.floors.get(floor)  # None: not measurable here (RSS off Linux)
            if row.floor is not None:
                row.floor_name = spec.name
                row.ratio = value / row.floor if row.floor else None
        if target is not None:
            row.met = target.met(value, row.ratio)
        self.rows.append(row)
        floor_text = "" if row.floor is None else f" (floor {_fmt(row.floor, unit)}, " \
                                                  f"ratio {row.ratio or 0:.2f})"
        verdict = {True: " ✓", False: " ✗", None: " ?"}[row.met] if row.target else ""
        sys.stderr.write(f"  {name}: {_fmt(value, unit)}{floor_text}"
                         f"{' target ' + row.target + verdict if row.target else ''}"
                         f"{' ' + note if note else ''}\n")

    # -- the worker child ----------------------------------------------------------------------

    def _child_env(self, queues: Sequence[str] | None = None) -> dict[str, str]:
        """The environment of the worker child: this one without any monoq setting (nor the
        source systems' names that monoq reads), plus exactly the bench's; with ``queues``,
        the queues it consumes, tried in that order."""
        foreign = {*SOURCE_ENV_NAMES, "REDIS_ADDR", "REDIS_PASSWORD", "REDIS_DB", "HTTP_ADDR"}
        env = {key: value for key, value in os.environ.items()
               if not key.startswith("MONOQ_") and key not in foreign}
        env.update({
            "MONOQ_BACKEND_URL": self.url,
            "MONOQ_WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
            "MONOQ_MONOQ_IMPORTS": "monoq.bench",
            "MONOQ_MONOQ_LOOP": self.loop,
            "MONOQ_MONOQ_LOG_LEVEL": "INFO",  # the ready line is an INFO record
            "MONOQ_MONOQ_LOG_FORMAT": "text",
        })
        if self.options:  # e.g. the key_prefix: the child must look where this client writes
            env["MONOQ_BACKEND_OPTIONS"] = json.dumps(self.options)
        if queues:
            env["MONOQ_WORKER_QUEUES"] = ",".join(queues)
        return env

    @contextlib.asynccontextmanager
    async def worker_child(self, queues: Sequence[str] | None = None
                           ) -> AsyncIterator[WorkerChild]:
        """Start ``monoq run --roles worker`` on this backend in an empty directory (so no
        config.toml applies), consuming ``queues`` (default: the default queue); stop it when
        the block ends."""
        home = tempfile.mkdtemp(prefix="monoq-bench-worker-")
        process = await anyio.open_process(
            [sys.executable, "-m", "monoq", "run", "--roles", "worker"], cwd=home,
            env=self._child_env(queues), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        child = WorkerChild(process)
        self.children.append(child.pid)
        sys.stderr.write(f"  worker child pid {child.pid} started\n")
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(child.read_log)
                try:
                    yield child
                finally:
                    with anyio.CancelScope(shield=True):
                        await child.stop()
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await process.aclose()
            shutil.rmtree(home, ignore_errors=True)

    async def _fill(self, client: Client, handler: str, n: int, payload: Any = None,
                    queues: Sequence[str] = ("default",)) -> list[str]:
        """Enqueue ``n`` jobs in calls of 1000, spread evenly over ``queues`` (one queue per
        call, the first ones taking one more when ``n`` does not divide); answers their ids."""
        ids: list[str] = []
        task = self.progress.add("filling", n)
        for index, queue in enumerate(queues):
            share = n // len(queues) + (1 if index < n % len(queues) else 0)
            for first in range(0, share, 1000):
                count = min(1000, share - first)
                item = {"handler": handler, "payload": payload}
                if queue != "default":
                    item["queue"] = queue
                jobs = await client.enqueue_many([item] * count)
                ids.extend(job.id for job in jobs)
                self.progress.advance(task, count)
        self.progress.finish(task)
        return ids

    async def _wait_terminal(self, client: Client, n: int, *children: WorkerChild,
                             queues: Sequence[str] = ("default",)) -> None:
        """Poll the queues' counts (twenty times a second) until ``n`` jobs are terminal."""
        terminal = (JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED)
        task = self.progress.add("draining", n)
        with anyio.fail_after(120 + n / 100):
            while True:
                for child in children:
                    child.check()
                done = sum(stats.counts.get(state, 0)
                           for stats in await client.queues(list(queues)) for state in terminal)
                self.progress.update(task, completed=done)
                if done >= n:
                    break
                await anyio.sleep(0.05)
        self.progress.finish(task)

    @staticmethod
    async def _read_jobs(client: Client, ids: Sequence[str]) -> list[Job]:
        jobs: list[Job] = []
        for first in range(0, len(ids), 1000):
            for job_id, job in zip(ids[first : first + 1000],
                                   await client.backend.get_many(ids[first : first + 1000]),
                                   strict=True):
                if job is None:
                    raise RuntimeError(f"job {job_id} vanished during the bench")
                jobs.append(job)
        return jobs

    @staticmethod
    def _span(jobs: Sequence[Job]) -> float:
        """Seconds from the first claim to the last outcome, as the worker stamped them."""
        not_done = [job for job in jobs if job.state is not JobState.COMPLETED]
        if not_done:
            raise RuntimeError(f"{len(not_done)} of {len(jobs)} jobs did not complete "
                               f"(first: {not_done[0].id} {not_done[0].state} "
                               f"{not_done[0].error or ''})")
        starts = [job.started_at for job in jobs if job.started_at is not None]
        ends = [job.finished_at for job in jobs if job.finished_at is not None]
        return (max(ends) - min(starts)).total_seconds()

    async def _drain_child(self, client: Client, handler: str, n: int, payload: Any = None
                           ) -> tuple[float, dict[str, float]]:
        """Pre-fill the queue, let a worker child drain it; answers the seconds from its first
        claim to its last outcome, and the child's memory after the drain."""
        ids = await self._fill(client, handler, n, payload)
        async with self.worker_child() as child:
            await self._wait_terminal(client, n, child)
            memory = proc_memory(child.pid)
        return self._span(await self._read_jobs(client, ids)), memory

    # -- sections ------------------------------------------------------------------------------

    async def single_enqueue(self, client: Client) -> None:
        """One awaited enqueue at a time."""
        n = self.n_single
        start = time.perf_counter()
        for i in range(n):
            await client.enqueue("monoq.bench.noop", i)
        floor = {"sqlite": "sqlite_single", "redis": "redis_lpush"}.get(self.kind)
        await self.record("single awaited enqueue", _rate(n, time.perf_counter() - start),
                          "jobs/s", floor=floor, target=self._target("single"),
                          note=f"({n} jobs, one at a time)")

    async def enqueue_bulk(self, client: Client, size: int) -> None:
        """``enqueue_many`` of N jobs (at least ``size``) in calls of ``size`` (the backend
        splits big calls into its own batches)."""
        n = max(self.jobs // size, 1) * size
        items = [{"handler": "monoq.bench.noop", "payload": i} for i in range(size)]
        start = time.perf_counter()
        for _ in range(n // len(items)):
            await client.enqueue_many(items)
        floor = {"sqlite": "sqlite_insert", "redis": "redis_lua_enqueue"}.get(self.kind)
        await self.record(f"bulk enqueue_many, {len(items)} per call",
                          _rate(n, time.perf_counter() - start), "jobs/s", floor=floor,
                          target=self._target("bulk") if size == 1000 else None)

    async def enqueue_concurrent(self, client: Client) -> None:
        """Single enqueues, 100 in flight."""
        n = self.n_flight
        limiter = anyio.Semaphore(100)

        async def one(i: int) -> None:
            async with limiter:
                await client.enqueue("monoq.bench.noop", i)

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i)
        await self.record("single enqueue, 100 in flight", _rate(n, time.perf_counter() - start),
                          "jobs/s")

    async def _drain_here(self, client: Client, handler: str, n: int, concurrency: int,
                          payload: Any = None) -> float:
        """A ``Worker`` in this process drains ``n`` pre-filled jobs; answers the seconds."""
        await self._fill(client, handler, n, payload)
        worker = Worker(client, client.registry or _registry(), WorkerSettings(
            concurrency=concurrency, lease=timedelta(seconds=60),
            heartbeat=timedelta(seconds=20), grace=timedelta(seconds=5), worker_id="bench"))
        task = self.progress.add("draining", n)
        began = time.perf_counter()
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            # polling a counter costs less than an event per job
            while worker.processed < n:
                await anyio.sleep(0.002)
                self.progress.update(task, completed=worker.processed)
            worker.stop()
        took = time.perf_counter() - began
        self.progress.finish(task)
        [stats] = await client.queues(["default"])
        done = stats.counts.get(JobState.COMPLETED, 0)
        if done != n:
            raise RuntimeError(f"drain finished with {done} of {n} jobs completed")
        return took

    def _claim_floor(self) -> str | None:
        return {"sqlite": "sqlite_claim_ack", "redis": "redis_lua_claim_ack"}.get(self.kind)

    async def drain_worker_process(self, client: Client) -> None:
        """A ``monoq run --roles worker`` child (concurrency 10) drains N pre-filled no-op
        jobs; then its memory."""
        n = self.jobs
        took, memory = await self._drain_child(client, "monoq.bench.noop", n)
        await self.record(f"drain {n} no-op jobs, worker process, concurrency "
                          f"{WORKER_CONCURRENCY}", _rate(n, took), "jobs/s",
                          floor=self._claim_floor(), target=self._target("drain"))
        if "VmRSS" in memory:
            await self.record("worker process RSS after the drain (VmRSS)", memory["VmRSS"],
                              "MiB", floor="python_rss", target=self._target("rss"))
        if "VmHWM" in memory:
            await self.record("worker process peak RSS (VmHWM)", memory["VmHWM"], "MiB",
                              floor="python_rss", target=self._target("rss"))

    async def drain_in_process(self, client: Client, concurrency: int) -> None:
        """A ``Worker`` in this process draining N no-op jobs."""
        took = await self._drain_here(client, "monoq.bench.noop", self.jobs, concurrency)
        await self.record(f"drain {self.jobs} no-op jobs, in process, concurrency {concurrency}",
                          _rate(self.jobs, took), "jobs/s", floor=self._claim_floor())

    async def sleep_worker_process(self, client: Client) -> None:
        """Jobs of ``await sleep(10 ms)`` drained by a worker child at concurrency 10."""
        n = self.n_sleep
        took, _ = await self._drain_child(client, "monoq.bench.sleep", n, 0.01)
        await self.record(f"{n} jobs sleeping 10 ms, worker process, concurrency "
                          f"{WORKER_CONCURRENCY}", _rate(n, took), "jobs/s", floor="loop_10",
                          target=self._target("sleep"))

    async def sleep_in_process(self, client: Client, concurrency: int, n: int) -> None:
        """Jobs of ``await sleep(10 ms)`` drained by a ``Worker`` in this process."""
        took = await self._drain_here(client, "monoq.bench.sleep", n, concurrency, 0.01)
        await self.record(f"{n} jobs sleeping 10 ms, in process, concurrency {concurrency}",
                          _rate(n, took), "jobs/s",
                          floor={10: "loop_10", 500: "loop_500"}.get(concurrency))

    async def latency_same_process(self, client: Client) -> None:
        """Enqueue-to-start with an idle worker in this process."""
        worker = Worker(client, client.registry or _registry(),
                        WorkerSettings(concurrency=10, worker_id="bench-latency"))
        lat: list[float] = []
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            await anyio.sleep(0.05)
            for _ in range(self.samples_same):
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
        await self.record("enqueue-to-start p50, same process", statistics.median(lat), "ms")
        await self.record("enqueue-to-start p99, same process", _pct(lat, 0.99), "ms")

    async def latency_cross_process(self, client: Client) -> None:
        """Enqueue-to-start with an idle worker child: from before the enqueue call here to the
        handler's first line there (both ``time.time()`` on this host)."""
        lat: list[float] = []
        async with self.worker_child() as child:
            await child.wait_ready()
            warm = await client.enqueue("monoq.bench.stamp")
            await client.wait(warm.id, timeout=30)
            for _ in range(self.samples_cross):
                child.check()
                await anyio.sleep(0.02)  # let the worker go idle again
                t0 = time.time()
                job = await client.enqueue("monoq.bench.stamp")
                done = await client.wait(job.id, timeout=30)
                lat.append((float(json_decode(done.result_json or b"0")) - t0) * 1000)
        redis = self.kind == "redis"
        await self.record("enqueue-to-start p50, across processes", statistics.median(lat), "ms",
                          floor="redis_hop_p50" if redis else None,
                          target=self._target("latency"))
        await self.record("enqueue-to-start p99, across processes", _pct(lat, 0.99), "ms",
                          floor="redis_hop_p99" if redis else None)

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
                task = self.progress.add(f"filling {depth:,}", depth)
                started = time.perf_counter()
                for first in range(0, depth, 1000):
                    count = min(1000, depth - first)
                    await client.enqueue_many(
                        [{"handler": "monoq.bench.noop", "payload": payload}] * count)
                    self.progress.advance(task, count)
                filled = time.perf_counter() - started
                self.progress.finish(task)
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
                    await self.record(f"batch enqueue up to {label} (1000 per call)",
                                      _rate(depth, filled), "jobs/s")
                    await self.record("Redis memory per queued job (100-byte payload)",
                                      used / depth, "bytes",
                                      note=f"(used_memory delta / {depth:,})")
                await self.record(f"claim+finish {take} jobs, {batch} per claim, {label}",
                                  sum(lat), "ms",
                                  note=f"(p50 {statistics.median(lat):.2f} ms, "
                                       f"p99 {_pct(lat, 0.99):.2f} ms per batch)")
        finally:
            await r.aclose()
            if self.fresh is not None:
                self.fresh()  # give the deep backlog's memory back

    async def _redis_cpu(self) -> float | None:
        """Redis' own CPU seconds so far (``INFO cpu``: used_cpu_sys + used_cpu_user)."""
        if self.kind != "redis":
            return None
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(self.url)
        try:
            info = await r.info("cpu")
        finally:
            await r.aclose()
        return _cpu_of(info)

    # -- Redis Cluster -------------------------------------------------------------------------

    def _node_kwargs(self) -> dict[str, Any]:
        """How the bench's own connections reach cluster nodes: the URL's credentials, TLS."""
        from monoq.backends.redis._connect import parse_cluster_url

        target = parse_cluster_url(self.url)
        kwargs: dict[str, Any] = {"username": target.username, "password": target.password,
                                  "socket_timeout": 10.0, "socket_connect_timeout": 5.0}
        if target.tls:
            kwargs["ssl"] = True
            kwargs.update({k: v for k, v in self.options.items() if k.startswith("ssl_")})
        return kwargs

    def _startup_nodes(self) -> list[tuple[str, int]]:
        from monoq.backends.redis._connect import parse_cluster_url

        return list(parse_cluster_url(self.url).nodes)

    async def _node_info(self, node: str, section: str) -> dict[str, Any]:
        """``INFO <section>`` of one node (``host:port``), on a connection of its own."""
        import redis.asyncio as aioredis

        host, _, port = node.rpartition(":")
        r = aioredis.Redis(host=host, port=int(port), **self._node_kwargs())
        try:
            info: dict[str, Any] = await r.info(section)
        finally:
            await r.aclose()
        return info

    async def cluster_layout(self) -> ClusterLayout:
        """The cluster's masters (from its slot map, as redis-py's cluster client reads it with
        CLUSTER SLOTS), the replicas each master lists, and one bench queue per master."""
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        rc = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in self._startup_nodes()],
                          **self._node_kwargs())
        try:
            await rc.initialize()
            masters = sorted((node.host, node.port) for node in rc.get_primaries())
            names = tuple(f"{host}:{port}" for host, port in masters)

            def master_of(key: str) -> str:
                node = rc.get_node_from_key(key)
                if node is None:
                    raise RuntimeError(f"no master serves the slot of {key!r}")
                return f"{node.host}:{node.port}"

            queues = spread_queues(names, master_of, str(self.options["key_prefix"]))
        finally:
            await rc.aclose()
        replicas: list[str] = []
        for master in names:
            replicas += _replicas_of(await self._node_info(master, "replication"))
        return ClusterLayout(names, tuple(sorted(replicas)), tuple(queues))

    def _empty_cluster(self) -> None:
        """Delete every key under the bench's key prefix, on each master (the replicas follow):
        SCAN there, then UNLINK each key it found (keys of several slots cannot share one
        UNLINK), 10 000 per pipeline."""
        from redis.cluster import ClusterNode, RedisCluster

        pattern = f"{self.options['key_prefix']}:*"
        nodes = [ClusterNode(h, p)  # type: ignore[no-untyped-call]
                 for h, p in self._startup_nodes()]
        rc = RedisCluster(startup_nodes=nodes, **self._node_kwargs())

        def unlink(r: Any, keys: list[bytes]) -> None:
            pipe = r.pipeline(transaction=False)
            for key in keys:
                pipe.unlink(key)
            pipe.execute()
            keys.clear()

        try:
            for node in rc.get_primaries():  # type: ignore[no-untyped-call]
                r = rc.get_redis_connection(node)
                doomed: list[bytes] = []
                for key in r.scan_iter(match=pattern, count=10_000):
                    doomed.append(key)
                    if len(doomed) >= 10_000:
                        unlink(r, doomed)
                if doomed:
                    unlink(r, doomed)
        finally:
            rc.close()

    async def _servers_cpu(self, layout: ClusterLayout | None) -> dict[str, float] | None:
        """The CPU seconds so far of each Redis server the bench uses: ``{"redis": ...}`` on
        one Redis, each master and replica by ``host:port`` on a cluster (None elsewhere)."""
        if layout is None:
            used = await self._redis_cpu()
            return None if used is None else {"redis": used}
        return {node: _cpu_of(await self._node_info(node, "cpu"))
                for node in (*layout.masters, *layout.replicas)}

    async def scale(self, client: Client, processes: int) -> None:
        """``processes`` worker children (concurrency 10 each) drain N pre-filled no-op jobs.

        The queue is paused while it is filled and the children start; once every child is
        connected (and idle on the paused queue), it is resumed, which wakes them all at once,
        so no child drains alone while the others boot. The rate is timed from the stored jobs
        as in the drain section. Around the drain, the CPU time of the children (/proc) and of
        Redis (``INFO cpu``) is read; per job, and as cores busy over the drain.

        On a cluster the jobs are spread evenly over one queue per master (``cluster_layout``),
        all paused and then resumed together; child ``i`` consumes every queue, starting with
        queue ``i`` (modulo their number), so the children start on different masters. Each
        master's CPU is given per job of its own queue, and the replicas' together per job.
        """
        n = self.jobs
        plural = "es" if processes > 1 else ""
        layout = await self.cluster_layout() if self.cluster else None
        queues = layout.names if layout is not None else ["default"]
        if layout is not None:
            where = ", ".join(f"{queue} on {master} (slot {slot})"
                              for queue, master, slot in layout.queues)
            sys.stderr.write(f"  scale: queues {where}; {len(layout.replicas)} replicas\n")
        for queue in queues:
            await client.pause(queue)
        ids = await self._fill(client, "monoq.bench.noop", n, queues=queues)
        async with contextlib.AsyncExitStack() as stack:
            children = [await stack.enter_async_context(
                self.worker_child(None if layout is None else _rotated(queues, i)))
                for i in range(processes)]
            for child in children:
                await child.wait_ready()
            await anyio.sleep(0.5)  # each child's first claim found the queue paused
            servers_before = await self._servers_cpu(layout)
            cpu_before = [proc_cpu(child.pid) for child in children]
            machine_before, own_before = machine_cpu(), time.process_time()
            began = time.perf_counter()
            for queue in queues:
                await client.resume(queue)  # wakes every child waiting on it
            await self._wait_terminal(client, n, *children, queues=queues)
            wall = time.perf_counter() - began
            machine_after, own_after = machine_cpu(), time.process_time()
            servers_after = await self._servers_cpu(layout)
            cpu_after = [proc_cpu(child.pid) for child in children]
        jobs = await self._read_jobs(client, ids)
        rate = _rate(n, self._span(jobs))
        name = f"scale: drain {n} no-op jobs, {processes} worker process{plural}"
        if layout is not None:
            name = (f"scale: drain {n} no-op jobs over {len(queues)} queues on "
                    f"{len(layout.masters)} masters, {processes} worker process{plural}")
        if processes == self.processes[0]:
            self._scale_base = rate
            await self.record(f"{name}, concurrency {WORKER_CONCURRENCY} each", rate, "jobs/s",
                              note=f"({os.cpu_count()} CPUs here)")
        else:
            base = f"{self.processes[0]} worker process{'es' if self.processes[0] > 1 else ''}"
            await self.record(f"{name}, concurrency {WORKER_CONCURRENCY} each", rate, "jobs/s",
                              baseline=None if self._scale_base is None
                              else (self._scale_base, f"{base}, same drain"))
        workers_used = _cpu_used(cpu_before, cpu_after)
        if workers_used is not None:
            await self.record(f"scale: worker CPU per job, {processes} process{plural}",
                              workers_used / n * 1e6, "µs",
                              note=f"({workers_used / wall:.2f} cores busy)")
        servers_used = None
        if servers_before is not None and servers_after is not None:
            used = {node: servers_after[node] - servers_before[node] for node in servers_before}
            servers_used = sum(used.values())
            if layout is None:
                await self.record(
                    f"scale: Redis CPU per job, {processes} worker process{plural}",
                    used["redis"] / n * 1e6, "µs",
                    note=f"(Redis busy {used['redis'] / wall:.0%} of its one core)")
            else:
                await self._record_cluster_cpu(layout, jobs, used, wall, processes)
        if machine_before is not None and machine_after is not None:
            # What the machine's CPUs did meanwhile, and how much of it was not this test:
            # on a shared machine, other processes' load explains a flat curve.
            busy = machine_after - machine_before
            ours = (workers_used or 0.0) + (servers_used or 0.0) + own_after - own_before
            await self.record(f"scale: machine CPU busy, {processes} worker process{plural}",
                              busy / wall, "cores",
                              note=f"(of {os.cpu_count()}; {max(busy - ours, 0) / wall:.2f} "
                                   "cores by other processes)")

    async def _record_cluster_cpu(self, layout: ClusterLayout, jobs: Sequence[Job],
                                  used: dict[str, float], wall: float, processes: int) -> None:
        """Rows of the cluster's CPU over a scale drain: each master per job of its queue
        (its share of the jobs), all masters per job, the replicas together per job."""
        plural = "es" if processes > 1 else ""
        per_queue: dict[str, int] = {}
        for job in jobs:
            per_queue[job.queue] = per_queue.get(job.queue, 0) + 1
        n = len(jobs)
        for queue, master, slot in layout.queues:
            held = per_queue.get(queue, 0)
            await self.record(
                f"scale: master {master} (queue {queue}) CPU per job of its queue, "
                f"{processes} worker process{plural}",
                used[master] / held * 1e6 if held else 0.0, "µs",
                note=f"(slot {slot}, {held} jobs; busy {used[master] / wall:.0%} of its "
                     "one core)")
        masters = sum(used[m] for m in layout.masters)
        await self.record(f"scale: all masters' CPU per job, {processes} worker process{plural}",
                          masters / n * 1e6, "µs",
                          note=f"({len(layout.masters)} masters, {masters / wall:.2f} cores "
                               "busy)")
        if layout.replicas:
            replicas = sum(used[r] for r in layout.replicas)
            await self.record(
                f"scale: all replicas' CPU per job, {processes} worker process{plural}",
                replicas / n * 1e6, "µs",
                note=f"({len(layout.replicas)} replicas, {replicas / wall:.2f} cores busy)")

    async def run(self, sections: set[str]) -> list[Row]:
        """Run the chosen sections in order; answers the table."""
        unknown = sections - set(SECTIONS)
        if unknown:
            raise ValueError(f"unknown bench sections: {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(SECTIONS)})")
        self.with_floors = "floor" in sections
        shared = open_backend(self.url, self.options).capabilities.shared_across_processes
        self._plan = self._floor_plan(shared)
        plan: list[tuple[str, Callable[[Client], Awaitable[None]]]] = [
            ("single", self.single_enqueue),
            ("enqueue", lambda c: self.enqueue_bulk(c, 1000)),
            ("enqueue", lambda c: self.enqueue_bulk(c, 10_000)),
            ("enqueue", self.enqueue_concurrent),
            ("drain", self.drain_worker_process if shared
             else lambda c: self.drain_in_process(c, WORKER_CONCURRENCY)),
            ("drain", lambda c: self.drain_in_process(c, 100)),
            ("sleep", self.sleep_worker_process if shared
             else lambda c: self.sleep_in_process(c, WORKER_CONCURRENCY, self.n_sleep)),
            ("sleep", lambda c: self.sleep_in_process(c, 500, self.n_sleep_wide)),
            ("latency", self.latency_same_process),
        ]
        if shared:
            plan.append(("latency", self.latency_cross_process))
        if self.kind == "redis":
            # Not a default section: it queues 1 000 000 jobs (about a minute, ~1.4 GB of Redis).
            plan.append(("backlog", self.backlog))
        if shared:  # not a default section either: three drains, seven worker children
            plan += [("scale", functools.partial(self.scale, processes=k))
                     for k in self.processes]
        elif "scale" in sections:
            sys.stderr.write(f"  scale: skipped, {self.url} lives in one process\n")
        steps = [(section, body) for section, body in plan if section in sections]
        task = self.progress.add("bench", len(steps), "steps")
        for section, body in steps:
            self.progress.update(task, description=f"bench: {section}")
            await self._with_client(body)
            self.progress.advance(task, 1)
        self.progress.finish(task)
        if self.with_floors:
            measured: set[Callable[[], Awaitable[None]]] = set()
            for key, spec in self._plan.items():  # the floors no figure asked for
                if key not in self.floors and spec.measure not in measured:
                    measured.add(spec.measure)
                    if self.fresh is not None:
                        self.fresh()
                    await spec.measure()
            for key, value in self.floors.items():
                spec = self._plan[key]
                self.rows.append(Row(f"floor: {spec.name}", value, spec.unit))
        if self.fresh is not None:
            self.fresh()  # leave no jobs of the last section behind
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        await self.record("peak RSS of the benchmark process", rss, "MiB")
        return self.rows

    # -- floors --------------------------------------------------------------------------------

    def _floor_plan(self, shared: bool) -> dict[str, _Floor]:
        """The floors of this backend, by key; several keys may share one measurement."""
        plan: dict[str, _Floor] = {}
        if self.kind == "sqlite":
            sync = self._sqlite_synchronous()
            plan["sqlite_single"] = _Floor(
                f"bare sqlite3, one-row INSERT + COMMIT per job (WAL, synchronous={sync}), "
                f"{self.n_single} one at a time", "jobs/s", self._floor_sqlite_single)
            plan["sqlite_insert"] = _Floor(
                f"bare sqlite3, INSERT of 1000 rows per transaction (synchronous={sync})",
                "jobs/s", self._floor_sqlite_batches)
            plan["sqlite_claim_ack"] = _Floor(
                f"bare sqlite3, claim + ack of 500 rows per transaction (synchronous={sync})",
                "jobs/s", self._floor_sqlite_batches)
        elif self.kind == "redis":
            plan["redis_lpush"] = _Floor(
                f"bare redis-py, LPUSH awaited one at a time ({self.n_single}), same pool kind",
                "jobs/s", self._floor_redis_single)
            plan["redis_lpush_lmove"] = _Floor(
                "bare redis-py, LPUSH then LMOVE, one awaited call each", "jobs/s",
                self._floor_redis_single)
            plan["redis_lua_enqueue"] = _Floor(
                "bare redis-py, Lua enqueue of 1000 jobs per call (HSET + ZADD each)", "jobs/s",
                self._floor_redis_batches)
            plan["redis_lua_claim_ack"] = _Floor(
                "bare redis-py, Lua claim + ack of 500 jobs per call", "jobs/s",
                self._floor_redis_batches)
            plan["redis_hop_p50"] = _Floor(
                "bare redis-py, LPUSH to a BLPOP in another process, p50", "ms",
                self._floor_redis_hop)
            plan["redis_hop_p99"] = _Floor(
                "bare redis-py, LPUSH to a BLPOP in another process, p99", "ms",
                self._floor_redis_hop)
        loop = self._loop_name()
        plan["loop_10"] = _Floor(
            f"bare {loop} loop, 10 tasks sleeping 10 ms, {self.n_sleep} sleeps in all",
            "jobs/s", lambda: self._floor_loop("loop_10", 10, self.n_sleep))
        plan["loop_500"] = _Floor(
            f"bare {loop} loop, 500 tasks sleeping 10 ms, {self.n_sleep_wide} sleeps in all",
            "jobs/s", lambda: self._floor_loop("loop_500", 500, self.n_sleep_wide))
        if shared:
            plan["python_rss"] = _Floor(
                f"bare python process, idle {loop} loop with the driver imported (VmRSS)",
                "MiB", self._floor_python_rss)
        return plan

    @staticmethod
    def _loop_name() -> str:
        try:
            return loop_name()
        except RuntimeError:  # no running loop
            return "asyncio"

    async def _floor_loop(self, key: str, tasks: int, n: int) -> None:
        """``tasks`` tasks each doing ``await asyncio.sleep(0.01)`` until ``n`` sleeps are done;
        timed from the start to the end of the last sleep."""
        begun = 0
        last = 0.0

        async def sleeper() -> None:
            nonlocal begun, last
            while begun < n:
                begun += 1
                await asyncio.sleep(0.01)
                last = time.perf_counter()

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(tasks):
                tg.start_soon(sleeper)
        self.floors[key] = _rate(n, last - start)

    # SQLite: the stdlib driver on the calling thread, WAL, the backend's synchronous setting.

    def _sqlite_synchronous(self) -> str:
        return str(self.options.get("synchronous", "FULL")).upper()

    def _sqlite_floor_db(self) -> tuple[sqlite3.Connection, str]:
        path = self.url.split("://", 1)[1][1:] + ".floor"
        _remove_db(path)
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self._sqlite_synchronous()}")
        db.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, state INTEGER NOT NULL, "
                   "priority INTEGER NOT NULL, payload BLOB)")
        db.execute("CREATE INDEX jobs_ready ON jobs (state, priority, id)")
        return db, path

    async def _floor_sqlite_single(self) -> None:
        """One ``BEGIN IMMEDIATE; INSERT; COMMIT`` per row."""
        db, path = self._sqlite_floor_db()
        try:
            n = self.n_single
            start = time.perf_counter()
            for i in range(n):
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT INTO jobs (id, state, priority, payload) VALUES (?, 0, 5, ?)",
                           (i, b"null"))
                db.execute("COMMIT")
            self.floors["sqlite_single"] = _rate(n, time.perf_counter() - start)
        finally:
            db.close()
            _remove_db(path)

    async def _floor_sqlite_batches(self) -> None:
        """Insert N rows 1000 per transaction, then claim and ack them 500 per transaction."""
        db, path = self._sqlite_floor_db()
        try:
            n = self.jobs
            start = time.perf_counter()
            for first in range(0, n, 1000):
                db.execute("BEGIN IMMEDIATE")
                db.executemany("INSERT INTO jobs (id, state, priority, payload) "
                               "VALUES (?, 0, 5, ?)",
                               [(i, b"null") for i in range(first, min(first + 1000, n))])
                db.execute("COMMIT")
            self.floors["sqlite_insert"] = _rate(n, time.perf_counter() - start)
            start = time.perf_counter()
            while True:
                db.execute("BEGIN IMMEDIATE")
                ids = [row[0] for row in db.execute(
                    "UPDATE jobs SET state = 1 WHERE id IN (SELECT id FROM jobs WHERE state = 0 "
                    "ORDER BY priority, id LIMIT 500) RETURNING id").fetchall()]
                db.execute("COMMIT")
                if not ids:
                    break
                db.execute("BEGIN IMMEDIATE")
                db.executemany("UPDATE jobs SET state = 2 WHERE id = ?", [(i,) for i in ids])
                db.execute("COMMIT")
            self.floors["sqlite_claim_ack"] = _rate(n, time.perf_counter() - start)
        finally:
            db.close()
            _remove_db(path)

    # Redis: redis-py asyncio on the same kind of pool as the backend (BlockingConnectionPool,
    # hiredis when installed, no retries), keys under the bench's prefix.

    def _redis(self) -> Any:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        pool = aioredis.BlockingConnectionPool.from_url(
            self.url, max_connections=50, timeout=5.0, socket_timeout=5.0,
            socket_connect_timeout=2.0, retry=Retry(NoBackoff(), 0))
        return aioredis.Redis(connection_pool=pool)

    def _key(self, name: str) -> str:
        return f"{self.options.get('key_prefix', 'monoqbench')}:floor:{name}"

    async def _floor_redis_single(self) -> None:
        """LPUSH awaited one at a time; then LMOVE of each (LPUSH then LMOVE per job)."""
        n = self.n_single
        q, running = self._key("q"), self._key("run")
        r = self._redis()
        try:
            await r.delete(q, running)
            start = time.perf_counter()
            for i in range(n):
                await r.lpush(q, i)
            pushed = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(n):
                await r.lmove(q, running, "RIGHT", "LEFT")
            moved = time.perf_counter() - start
            self.floors["redis_lpush"] = _rate(n, pushed)
            self.floors["redis_lpush_lmove"] = _rate(n, pushed + moved)
            await r.delete(q, running)
        finally:
            await r.aclose(close_connection_pool=True)

    async def _floor_redis_batches(self) -> None:
        """Lua enqueue of 1000 jobs per call, then Lua claim + ack of 500 per call."""
        n = self.jobs
        r = self._redis()
        prefix, q = self._key("job:"), self._key("ready")
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
        try:
            start = time.perf_counter()
            for first in range(0, n, 1000):
                await push(keys=[prefix, q],
                           args=[str(i) for i in range(first, min(first + 1000, n))])
            self.floors["redis_lua_enqueue"] = _rate(n, time.perf_counter() - start)
            start = time.perf_counter()
            while True:
                ids = await take(keys=[q, prefix], args=[500])
                if not ids:
                    break
                await ack(keys=[prefix], args=ids)
            self.floors["redis_lua_claim_ack"] = _rate(n, time.perf_counter() - start)
            keys = [key async for key in r.scan_iter(self._key("*"), count=1000)]
            for first in range(0, len(keys), 1000):
                await r.unlink(*keys[first : first + 1000])
        finally:
            await r.aclose(close_connection_pool=True)

    async def _floor_redis_hop(self) -> None:
        """A child process blocked in BLPOP answers the time it popped each LPUSH of ours:
        the one-way trip from before our LPUSH to its wake-up, sampled like the latency row."""
        request, reply = self._key("hop:req"), self._key("hop:rep")
        lat: list[float] = []
        r = self._redis()
        try:
            await r.delete(request, reply)
            async with await anyio.open_process(
                    [sys.executable, "-c", _HOP_CHILD, self.url, request, reply,
                     self._loop_name()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL) as process:
                try:
                    with anyio.fail_after(60):
                        await r.blpop([reply])  # "ready"
                        for _ in range(self.samples_cross):
                            await anyio.sleep(0.02)  # idle, as the latency row's worker is
                            t0 = time.time()
                            await r.lpush(request, "x")
                            popped = await r.blpop([reply])
                            lat.append((float(popped[1]) - t0) * 1000)
                        await r.lpush(request, "stop")
                        await process.wait()
                finally:
                    if process.returncode is None:
                        process.kill()
            await r.delete(request, reply)
        finally:
            await r.aclose(close_connection_pool=True)
        self.floors["redis_hop_p50"] = statistics.median(lat)
        self.floors["redis_hop_p99"] = _pct(lat, 0.99)

    async def _floor_python_rss(self) -> None:
        """The resident memory of a bare interpreter that ran an event loop and imported the
        backend's driver (what any worker process costs before monoq's own code)."""
        driver = "redis.asyncio" if self.kind == "redis" else "sqlite3"
        run = ("import uvloop; uvloop.run(asyncio.sleep(0))" if self._loop_name() == "uvloop"
               else "asyncio.run(asyncio.sleep(0))")
        code = (f"import asyncio, sys, {driver}; {run}; "
                "sys.stdout.write('ready\\n'); sys.stdout.flush(); sys.stdin.read()")
        async with await anyio.open_process(
                [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL) as process:
            if process.stdout is None or process.stdin is None:
                raise RuntimeError("no pipes to the floor process")
            with anyio.fail_after(30):
                await process.stdout.receive()
                memory = proc_memory(process.pid)
                await process.stdin.aclose()
                await process.wait()
        if "VmRSS" in memory:  # not on Linux: no worker figure to compare either
            self.floors["python_rss"] = memory["VmRSS"]


_HOP_CHILD = """
import asyncio, sys, time
import redis.asyncio as aioredis

async def main():
    r = aioredis.Redis.from_url(sys.argv[1])
    request, reply = sys.argv[2], sys.argv[3]
    await r.lpush(reply, "ready")
    while True:
        _, value = await r.blpop([request])
        now = time.time()
        if value == b"stop":
            break
        await r.lpush(reply, repr(now))
    await r.aclose()

if sys.argv[4] == "uvloop":
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""


def print_table(rows: list[Row], url: str) -> str:
    """The rows as a Markdown table: figure, floor, ratio figure/floor, target met or not."""
    lines = [f"| {url} | value | floor | ratio | target |", "|---|---:|---:|---:|---|"]
    for row in rows:
        note = f" {row.note}" if row.note else ""
        floor = "" if row.floor is None else f"{_fmt(row.floor, row.unit)} ({row.floor_name})"
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}{TIMES}"
        target = ""
        if row.target is not None:
            target = f"{row.target} {({True: '✓', False: '✗', None: '?'})[row.met]}"
        lines.append(f"| {row.name} | {_fmt(row.value, row.unit)}{note} | {floor} | {ratio} "
                     f"| {target} |")
    return "\n".join(lines)
