"""``python -m monoq.ui.pagebench``: how long each dashboard page takes over a big store.

The dashboard promises that, with a million jobs stored, every page answers within 150 ms of
server time on SQLite and on Redis. This script checks it on this machine:

1. It seeds a fresh store through the Backend protocol, fast and realistically: a day of
   traffic in six queues and a dozen handlers, enqueued in batches with ``now`` values spread
   over the last 24 hours, claimed and finished in batches (most jobs completed, some failing
   once then succeeding, some dead after two attempts with several error types, a few
   cancelled), one queue falling behind (a backlog of queued jobs), retrying and delayed jobs
   at the end, a few running leases, a paused queue, schedules with their runs, live workers
   and a scheduler beat. Throughput counters and waits are written by those same calls, as a
   live deployment writes them.
2. It builds the api role's app (``monoq.api.create_app``, no tokens: the dashboard is open)
   and finds the pages in the dashboard's route table: every GET route under ``/ui`` (static
   files aside), path parameters filled with a real job id, schedule id or queue, plus the
   filters an operator uses (job states, queue, handler, dead-letter error type and time
   window, purge ages), the "older" page each list links to, and every URL a page polls with
   htmx (requested as htmx does, with ``HX-Request``).
3. It calls the ASGI app in-process (``httpx.ASGITransport``, no sockets), ``--runs`` times per
   page after ``--warmup`` runs, and times each call from the moment the app is entered until
   it returns (the response sent): server time, without the client's parsing. As the floor, the
   same client times a bare litestar endpoint returning a fixed small HTML string, before and
   after the pages, so a page's figure can be quoted as a ratio to the floor.

The table gives p50, p95 and max per page, the ratio of the p50 to the floor's p50, and the
backend calls made by the page's median run with the time they took (the backend is wrapped
by a proxy that times every call), so a slow page names the call that makes it slow. Pages
over the budget are listed at the end with every call. ``--json PATH`` (``-`` = stdout) also
writes every sample.

``--backend``: ``sqlite`` (a file in a temporary directory, removed at the end), ``redis`` (a
private ``redis-server`` on a free loopback port, without persistence, stopped at the end),
``memory``, or a URL of an empty store (a SQLite file that does not exist yet, or a Redis
database that holds no monoq data; it is left seeded). Seeding writes with
``synchronous=NORMAL`` on SQLite; the pages are then measured over a newly opened backend with
the default options, as the api role opens it. ``--reuse --backend URL`` measures a store as it
is, without seeding it (say one an earlier run seeded at that URL; the backend still migrates
an older schema when it opens it), so the figures can be taken again without seeding again.

Exit status: 0, or 1 when a page answered an unexpected status (an error page).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import functools
import gc
import html
import inspect
import json
import logging
import math
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    MutableMapping,
    Sequence,
)
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final, cast
from urllib.parse import unquote, urlencode

import anyio
import attrs
import httpx
from litestar import Litestar, MediaType, get
from litestar.routes import HTTPRoute

from monoq.api import create_app
from monoq.api.app import UI_PATH
from monoq.api.state import STATE_KEY, ApiState
from monoq.client import Client
from monoq.config import ApiConfig, UiConfig
from monoq.core.backend import Backend
from monoq.core.codec import json_encode
from monoq.core.cron import fire_key
from monoq.core.ids import new_id
from monoq.core.models import (
    ErrorInfo,
    Finish,
    JobQuery,
    JobState,
    Lease,
    NewJob,
    Outcome,
    WorkerInfo,
    to_ms,
    utcnow,
)
from monoq.registry import open_backend

logger = logging.getLogger(__name__)

BUDGET_MS: Final = 150.0
BASE_URL: Final = "http://127.0.0.1:8080"  # a loopback Host: the open dashboard answers it
DAY: Final = timedelta(days=1)
LEASE: Final = timedelta(minutes=5)
FINISH_SLICES: Final = 8  # finish calls per batch, spread over the batch's interval
MIN_BATCHES: Final = 24  # even a tiny store spreads over the day
MAX_BATCHES: Final = 1440
FLOOR_HTML: Final = "<!doctype html><title>floor</title><p>ok</p>"
SECRET_TEXT: Final = "s3cr3t-" + "x" * 20

# -- the shape of the seeded traffic ----------------------------------------------------------


@attrs.frozen
class QueueSpec:
    """One seeded queue: its share of the jobs, its handlers (name, payload template as bytes
    %-formatted with ``n`` and ``m``, share of the queue's jobs), its errors (type, message,
    weight) and its worker."""

    name: str
    weight: float
    handlers: tuple[tuple[str, bytes, float], ...]
    errors: tuple[tuple[str, str, int], ...]
    worker: str
    backlog: bool = False  # its workers keep up with 80% of its jobs only


_EMAIL: Final = (b'{"to":"user%(n)d@example.com","template":"welcome","locale":"en",'
                 b'"vars":{"name":"User %(n)d","plan":"pro"},"smtp_password":"'
                 + SECRET_TEXT.encode() + b'"}')
_WEBHOOK: Final = (b'{"url":"https://hooks.example.com/t/%(m)d","event":"order.created",'
                   b'"order_id":%(n)d,"api_token":"' + SECRET_TEXT.encode() + b'"}')
QUEUES: Final = (
    QueueSpec(
        "default", 0.30,
        (("resize_avatar", b'{"user_id":%(n)d,"sizes":[64,128,256],"bucket":"avatars"}', 0.5),
         ("sync_contact", b'{"contact":"c_%(n)d","crm":"hubspot","fields":["email"]}', 0.3),
         ("recalc_stats", b'{"account":%(m)d,"window":"1d"}', 0.2)),
        (("ValueError", "invalid literal for int() with base 10: 'n/a'", 5),
         ("TimeoutError", "operation timed out after 30 s", 3),
         ("PermissionError", "[Errno 13] Permission denied: '/srv/cache/lock'", 1)),
        "web-1-4101",
    ),
    QueueSpec(
        "mail", 0.22,
        (("send_email", _EMAIL, 0.8),
         ("send_digest", b'{"to":"user%(n)d@example.com","template":"digest","items":%(m)d}',
          0.2)),
        (("SMTPTimeout", "smtp.example.com:587 did not answer in 30 s", 6),
         ("SMTPRecipientsRefused", "{'user@example.com': (550, b'mailbox unavailable')}", 3)),
        "web-3-4103",
    ),
    QueueSpec(
        "webhooks", 0.22,
        (("deliver_webhook", _WEBHOOK, 1.0),),
        (("HTTPStatusError",
          "Server error '503 Service Unavailable' for url 'https://hooks.example.com/t/17'", 6),
         ("ConnectTimeout", "timed out connecting to hooks.example.com:443", 4)),
        "web-1-4101",
    ),
    QueueSpec(
        "billing", 0.12,
        (("charge_invoice", b'{"invoice":"inv_%(n)d","amount_cents":%(m)d,"currency":"EUR"}',
          0.97),
         ("refund", b'{"charge":"ch_%(n)d","amount_cents":%(m)d,"reason":"requested"}', 0.03)),
        (("CardDeclined", "card_declined: insufficient_funds", 7),
         ("KeyError", "'customer'", 2)),
        "web-2-4102",
    ),
    QueueSpec(
        "reports", 0.06,
        (("build_report", b'{"report":"daily-sales","region":"eu-west","day":%(m)d}', 1.0),),
        (("MemoryError", "", 2), ("KeyError", "'region'", 3)),
        "web-2-4102",
    ),
    QueueSpec(
        "media", 0.08,
        (("transcode_video", b'{"source":"s3://media/up/%(n)d.mov","profiles":["720p"]}', 0.6),
         ("thumbnail", b'{"source":"s3://media/up/%(n)d.jpg","width":320}', 0.4)),
        (("CalledProcessError",
          "Command '['ffmpeg', '-i', 'in.mov']' returned non-zero exit status 1.", 1),),
        "media-1-4104",
        backlog=True,
    ),
)
PAUSED_QUEUE: Final = "reports"
WORKERS: Final = (
    ("web-1-4101", "web-1", 4101, ("default", "webhooks"), 20),
    ("web-2-4102", "web-2", 4102, ("billing", "reports"), 10),
    ("web-3-4103", "web-3", 4103, ("mail",), 10),
    ("media-1-4104", "media-1", 4104, ("media",), 4),
)
# Outcome shares of a claimed job (the backlog queue's failures die at once, the others after
# a failed first attempt).
DEAD_SHARE: Final = 0.025
FLAKY_SHARE: Final = 0.015  # fails once, then completes
CANCEL_SHARE: Final = 0.003
# Made in the last minute, as shares of the whole store (at least a few each):
DELAYED_SHARE: Final = 0.01  # enqueued with a run_at in the coming day
RETRYING_SHARE: Final = 0.002  # failed a first attempt, waiting for their backoff
FRESH_SHARE: Final = 0.0005  # just enqueued, not claimed yet
RUNNING_SHARE: Final = 0.00002  # held by a worker


@attrs.frozen
class ScheduleSpec:
    """A seeded schedule and how often it fires (seconds)."""

    id: str
    handler: str
    queue: str
    period: float
    cron: str | None = None
    enabled: bool = True
    offset: float = 0.0  # seconds after each multiple of the period (a cron's minute or hour)


SCHEDULES: Final = (
    ScheduleSpec("ping-upstreams", "deliver_webhook", "webhooks", 30.0),
    ScheduleSpec("cleanup-sessions", "recalc_stats", "default", 300.0),
    ScheduleSpec("sync-crm", "sync_contact", "default", 900.0, cron="*/15 * * * *"),
    ScheduleSpec("hourly-digest", "send_digest", "mail", 3600.0, cron="0 * * * *"),
    ScheduleSpec("nightly-sales", "build_report", "reports", 86400.0, cron="0 3 * * *",
                 offset=3 * 3600.0),
    ScheduleSpec("legacy-export", "build_report", "reports", 3600.0, cron="30 * * * *",
                 enabled=False, offset=1800.0),
)


def _traceback(error_type: str, message: str) -> str:
    return (
        "Traceback (most recent call last):\n"
        '  File "/srv/app/.venv/lib/python3.11/site-packages/monoq/worker.py", line 312, in '
        "_run\n    result = await handler(ctx, payload)\n"
        '  File "/srv/app/tasks.py", line 88, in run\n    return client.send(prepared)\n'
        '  File "/srv/app/integrations.py", line 41, in send\n'
        "    raise " + error_type + "(detail)\n"
        + (f"{error_type}: {message}" if message else error_type)
    )


# -- seeding ----------------------------------------------------------------------------------


@attrs.define
class Samples:
    """Ids of real stored things, to fill the pages' path parameters."""

    jobs: dict[str, str] = attrs.field(factory=dict)  # description -> job id
    schedules: dict[str, str] = attrs.field(factory=dict)
    queues: dict[str, str] = attrs.field(factory=dict)


@attrs.define
class SeedReport:
    """What was seeded and how fast."""

    jobs: int = 0
    seconds: float = 0.0
    batches: int = 0
    runs: int = 0
    counts: dict[str, int] = attrs.field(factory=dict)
    samples: Samples = attrs.field(factory=Samples)


class Seeder:
    """Writes a day of traffic into ``backend`` (see the module docstring); ``end`` is the
    last moment of that day (the time seeding started)."""

    def __init__(self, backend: Backend, client: Client, *, jobs: int, batch: int, seed: int,
                 end: datetime, progress: Callable[[str], None] | None = None) -> None:
        self.backend = backend
        self.client = client
        self.total = jobs
        self.batch = batch
        self.rng = random.Random(seed)  # noqa: S311 - test data, repeatable by its seed
        self.end = end
        self.progress = progress or (lambda _line: None)
        self.specs = {q.name: q for q in QUEUES}
        self.cum_weights = list(_cumulative([q.weight for q in QUEUES]))
        self.error_weights = {q.name: list(_cumulative([float(w) for _t, _m, w in q.errors]))
                              for q in QUEUES}
        self.handler_weights = {q.name: list(_cumulative([w for _h, _t, w in q.handlers]))
                                for q in QUEUES}
        self.counter = 0
        self.report = SeedReport()
        self.last_fire: dict[str, datetime] = {}
        self.running: list[Lease] = []

    def _batches(self, regular: int) -> int:
        # at least a minute per batch: a batch's claims and finishes need 45 s of its clock
        return max(MIN_BATCHES, min(MAX_BATCHES, math.ceil(regular / self.batch)))

    # The day's schedule runs: every fire of every enabled schedule in the window, oldest first.
    def _fires(self) -> list[tuple[datetime, ScheduleSpec]]:
        # A small store keeps the runs a small part of it: the window shrinks with the store,
        # but spans a few batches (runs are enqueued by the batches after their fire times).
        window = min(DAY, max(DAY * (self.total / 200_000), 3 * DAY / self._batches(self.total)))
        fires: list[tuple[datetime, ScheduleSpec]] = []
        for spec in SCHEDULES:
            if not spec.enabled:
                continue
            step = timedelta(seconds=spec.period)
            epoch_s = to_ms(self.end) // 1000
            last = self.end - timedelta(seconds=(epoch_s - spec.offset) % spec.period)
            fire = last
            while fire > self.end - window:
                fires.append((fire, spec))
                fire -= step
        fires.sort(key=lambda item: item[0])
        return fires

    async def run(self) -> SeedReport:
        """Seed the store; answers what was written."""
        started = time.perf_counter()
        await self._put_schedules()
        fires = self._fires()
        regular = max(self.total - len(fires), self.total // 2)
        batches = self._batches(regular)
        step = DAY / batches
        # a daily wave: busier in the afternoon than at night
        shape = [1 + 0.4 * math.sin(2 * math.pi * i / batches - math.pi / 2)
                 for i in range(batches)]
        scale = regular / sum(shape)
        sizes = [int(w * scale) for w in shape]
        sizes[-1] += regular - sum(sizes)
        start = self.end - DAY
        # a run is enqueued by the batch after its fire time: none after the last batch
        fires = [item for item in fires if item[0] <= start + step * (batches - 1)]
        fire_times = [f for f, _s in fires]
        done = 0
        shown = 0
        for index, size in enumerate(sizes):
            t = start + step * index
            lo = bisect.bisect_right(fire_times, t - step)
            hi = bisect.bisect_right(fire_times, t)
            await self._batch(t, step, size, fires[lo:hi])
            done += size + (hi - lo)
            if done * 10 // max(1, self.total) > shown:
                shown = done * 10 // max(1, self.total)
                self.progress(f"seeded {done:,} of ~{self.total:,} jobs "
                              f"({time.perf_counter() - started:.1f} s)")
        await self._finale()
        for sid, when in self.last_fire.items():
            await self.backend.advance_schedule(sid, when)
        self.report.seconds = time.perf_counter() - started
        self.report.batches = batches
        self.report.runs = len(fires)
        stats = await self.client.queues()
        counts: Counter[str] = Counter()
        for queue in stats:
            for state, count in queue.counts.items():
                counts[str(state)] += count
        self.report.counts = dict(counts)
        self.report.jobs = sum(counts.values())
        self.report.samples = await pick_samples(
            self.client, runs=Counter(spec.id for _fire, spec in fires),
            running=self.running[0].job.id if self.running else None)
        return self.report

    async def _put_schedules(self) -> None:
        for spec in SCHEDULES:
            body: dict[str, Any] = {
                "id": spec.id, "handler": spec.handler, "queue": spec.queue,
                "payload": {"schedule": spec.id, "limit": 500}, "enabled": spec.enabled,
            }
            if spec.cron is not None:
                body["cron"] = spec.cron
            else:
                body["every"] = spec.period
            schedule = self.client.build_schedule(body)
            await self.backend.put_schedule(attrs.evolve(
                schedule, origin="api", created_at=self.end - 30 * DAY,
                updated_at=self.end - 7 * DAY))

    def _new_job(self, spec: QueueSpec, ms: int, run_at: datetime | None) -> NewJob:
        rng = self.rng
        self.counter += 1
        weights = self.handler_weights[spec.name]
        pick = min(len(weights) - 1, bisect.bisect_left(weights, rng.random() * weights[-1]))
        handler, template, _share = spec.handlers[pick]
        roll = rng.random()
        priority = 0 if roll < 0.05 else 9 if roll < 0.15 else 5
        return NewJob(
            id=new_id(ms), queue=spec.name, handler=handler,
            payload_json=template % {b"n": self.counter, b"m": rng.randrange(1, 5000)},
            priority=priority, run_at=run_at, max_retries=3, timeout=300.0,
        )

    def _error(self, queue: str) -> ErrorInfo:
        spec = self.specs[queue]
        weights = self.error_weights[queue]
        pick = min(len(weights) - 1, bisect.bisect_left(weights, self.rng.random() * weights[-1]))
        error_type, message, _w = spec.errors[pick]
        return ErrorInfo(error_type, message, _traceback(error_type, message))

    def _result(self) -> bytes:
        return b'{"ok":true,"ms":%d}' % self.rng.randrange(3, 4000)

    async def _batch(self, t: datetime, step: timedelta,
                     size: int, fires: Sequence[tuple[datetime, ScheduleSpec]]) -> None:
        rng = self.rng
        ms = to_ms(t)
        chosen = rng.choices(QUEUES, cum_weights=self.cum_weights, k=size)
        jobs = [self._new_job(spec, ms, None) for spec in chosen]
        immediate: Counter[str] = Counter(spec.name for spec in chosen)
        for fire, schedule in fires:
            jobs.append(NewJob(
                id=new_id(ms), queue=schedule.queue, handler=schedule.handler,
                payload_json=json_encode({"schedule": schedule.id, "limit": 500}),
                idempotency_key=fire_key(schedule.id, fire), schedule_id=schedule.id,
            ))
            immediate[schedule.queue] += 1
            self.last_fire[schedule.id] = fire
        await self.backend.enqueue(jobs, now=t)
        # Claims, a little after the enqueue (each queue's workers at their own pace).
        leases: list[Lease] = []
        for spec in QUEUES:
            want = immediate[spec.name]
            if spec.backlog:
                want = int(want * 0.8)
            if want:
                leases += await self.backend.claim(
                    [spec.name], limit=want, lease_for=LEASE, worker_id=spec.worker,
                    now=t + timedelta(milliseconds=rng.randrange(50, 30_000)))
        retry_first: list[Lease] = []
        finishes: list[Finish] = []
        doomed: set[str] = set()
        for lease in leases:
            roll = rng.random()
            backlog = self.specs[lease.job.queue].backlog
            if roll < DEAD_SHARE:
                if backlog:  # dies at once (a non-retryable error)
                    finishes.append(Finish(lease, Outcome.DEAD, error=self._error(lease.job.queue)))
                else:
                    retry_first.append(lease)
                    doomed.add(lease.job.id)
            elif roll < DEAD_SHARE + FLAKY_SHARE and not backlog:
                retry_first.append(lease)
            elif roll < DEAD_SHARE + FLAKY_SHARE + CANCEL_SHARE:
                finishes.append(Finish(lease, Outcome.CANCELLED))
            else:
                finishes.append(Finish(lease, Outcome.COMPLETED, result_json=self._result()))
        if retry_first:
            # The first attempt fails; the backoff passes; the job is claimed again.
            first_end = t + timedelta(seconds=32)
            await self.backend.finish(
                [Finish(lease, Outcome.RETRY, error=self._error(lease.job.queue),
                        retry_at=first_end + timedelta(seconds=2)) for lease in retry_first],
                now=first_end)
            await self.backend.promote(now=first_end + timedelta(seconds=3),
                                       limit=len(retry_first) + 100)
            again: Counter[str] = Counter(lease.job.queue for lease in retry_first)
            for queue, count in again.items():
                for lease in await self.backend.claim(
                        [queue], limit=count, lease_for=LEASE, worker_id=self.specs[queue].worker,
                        now=first_end + timedelta(seconds=4)):
                    if lease.job.id in doomed:
                        finishes.append(Finish(lease, Outcome.DEAD,
                                               error=self._error(lease.job.queue)))
                    else:
                        finishes.append(Finish(lease, Outcome.COMPLETED,
                                               result_json=self._result()))
        # The ends of the runs, spread over the batch's interval so every minute has some.
        rng.shuffle(finishes)
        per = math.ceil(len(finishes) / FINISH_SLICES) or 1
        for number, offset in enumerate(range(0, len(finishes), per), start=1):
            when = t + timedelta(seconds=40) + (step - timedelta(seconds=45)) * (
                number / FINISH_SLICES)
            await self.backend.finish(finishes[offset:offset + per], now=when)

    async def _finale(self) -> None:
        """The last minute: jobs failing a first attempt and waiting for their backoff,
        delayed jobs, fresh jobs in every queue, a few running, one queue paused, and workers
        and schedulers that report in."""
        rng = self.rng

        def share(part: float) -> int:
            return max(len(QUEUES), round(self.total * part))

        # retrying: from the queues whose workers keep up (nothing else is queued there)
        steady = [q for q in QUEUES if not q.backlog and q.name != PAUSED_QUEUE]
        at = self.end - timedelta(seconds=60)
        pool = [self._new_job(steady[i % len(steady)], to_ms(at), None)
                for i in range(share(RETRYING_SHARE))]
        await self.backend.enqueue(pool, now=at)
        failed: list[Finish] = []
        for spec in steady:
            leases = await self.backend.claim(
                [spec.name], limit=len(pool), lease_for=LEASE, worker_id=spec.worker,
                now=at + timedelta(seconds=2))
            failed.extend(
                Finish(lease, Outcome.RETRY, error=self._error(spec.name),
                       retry_at=self.end + timedelta(seconds=rng.uniform(10, 900)))
                for lease in leases)
        await self.backend.finish(failed, now=at + timedelta(seconds=10))
        # delayed, then fresh
        at = self.end - timedelta(seconds=40)
        delayed = [self._new_job(QUEUES[i % len(QUEUES)], to_ms(at),
                                 self.end + timedelta(seconds=rng.uniform(60, 86400)))
                   for i in range(share(DELAYED_SHARE))]
        await self.backend.enqueue(delayed, now=at)
        at = self.end - timedelta(seconds=20)
        fresh = [self._new_job(QUEUES[i % len(QUEUES)], to_ms(at), None)
                 for i in range(share(FRESH_SHARE))]
        await self.backend.enqueue(fresh, now=at)
        busy: Counter[str] = Counter()
        for spec in QUEUES:
            if spec.name == PAUSED_QUEUE:
                continue
            want = 4 if spec.backlog else max(1, share(RUNNING_SHARE) // len(QUEUES))
            leases = await self.backend.claim(
                [spec.name], limit=want, lease_for=timedelta(hours=2), worker_id=spec.worker,
                now=self.end - timedelta(seconds=10))
            self.running += leases
            busy[spec.worker] += len(leases)
        await self.backend.set_paused(PAUSED_QUEUE, True)
        seen = utcnow()
        for wid, host, pid, queues, concurrency in WORKERS:
            await self.backend.report_worker(
                WorkerInfo(id=wid, host=host, pid=pid, roles=("worker",), queues=queues,
                           concurrency=concurrency, busy=min(concurrency, busy[wid]),
                           started_at=self.end - timedelta(hours=30), last_seen=seen),
                ttl=timedelta(hours=6))
        await self.backend.beat("scheduler:sched-a-4201", now=seen)
        await self.backend.beat("scheduler:sched-b-4202", now=seen - timedelta(seconds=1))

async def pick_samples(client: Client, *, runs: Counter[str] | None = None,
                       running: str | None = None) -> Samples:
    """Real jobs, schedules and queues of the store for the pages' path parameters: a job in
    each of the states an operator opens most, a run of a schedule, two schedules (the
    bench's busiest and an hourly one when they exist) and the busiest queues. ``runs``: runs
    per schedule, when the caller knows them (for the labels)."""
    samples = Samples()
    stats = await client.queues()
    if not stats:
        return samples

    def queue_for(state: JobState, preferred: str) -> str | None:
        holding = [q for q in stats if q.counts.get(state, 0)]
        for queue in holding:
            if queue.queue == preferred:
                return preferred
        return max(holding, key=lambda q: q.counts.get(state, 0)).queue if holding else None

    for label, state, preferred in (("completed job", JobState.COMPLETED, "default"),
                                    ("dead job", JobState.DEAD, "mail"),
                                    ("queued job", JobState.QUEUED, "media"),
                                    ("running job", JobState.RUNNING, "")):
        queue = queue_for(state, preferred)
        if queue is None:
            continue
        if state is JobState.RUNNING and running is not None:
            samples.jobs[label] = running
            continue
        page = await client.list_jobs(JobQuery(queue=queue, states={state}, limit=1))
        if page.jobs:
            job = page.jobs[0]
            more = f", {job.attempt} attempts" if job.attempt > 1 else ""
            samples.jobs[f"{label} in {queue}{more}"] = job.id
    schedules = {s.id: s for s in await client.list_schedules()}
    chosen = [sid for sid in (SCHEDULES[0].id, SCHEDULES[3].id) if sid in schedules] \
        or sorted(schedules)[:2]
    for sid in chosen:
        schedule = schedules[sid]
        timetable = f"every {schedule.every:g} s" if schedule.every is not None \
            else f"cron {schedule.cron}"
        count = f", {runs[sid]:,} runs stored" if runs is not None else ""
        samples.schedules[timetable + count] = sid
        if "schedule run" not in samples.jobs:
            page = await client.schedule_runs(sid, limit=1)
            if page.jobs:
                samples.jobs["schedule run"] = page.jobs[0].id
    by_size = sorted(stats, key=lambda q: -sum(q.counts.values()))
    samples.queues = {"busiest queue": by_size[0].queue}
    return samples


def _cumulative(weights: Sequence[float]) -> Iterator[float]:
    total = 0.0
    for weight in weights:
        total += weight
        yield total


# -- timing -----------------------------------------------------------------------------------


class CallLog:
    """The backend calls of the request being measured: (method, seconds)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []


class TimedBackend:
    """A Backend proxy that times every coroutine method into a ``CallLog``; everything else
    passes through unchanged."""

    def __init__(self, inner: Backend, log: CallLog) -> None:
        self._inner = inner
        self._log = log
        self._wrapped: dict[str, Callable[..., Awaitable[Any]]] = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr
        wrapped = self._wrapped.get(name)
        if wrapped is None:
            log = self._log

            async def timed(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    return await attr(*args, **kwargs)
                finally:
                    log.calls.append((name, time.perf_counter() - started))

            wrapped = self._wrapped[name] = timed
        return wrapped


class TimedApp:
    """An ASGI wrapper: ``last`` is the seconds the wrapped app took for the latest call, from
    entering it until it returned (its response sent)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.last = 0.0

    async def __call__(self, scope: MutableMapping[str, Any],
                       receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
                       send: Callable[[MutableMapping[str, Any]], Awaitable[None]]) -> None:
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.last = time.perf_counter() - started


def floor_app() -> Litestar:
    """The floor: a bare litestar app whose one endpoint answers a fixed small HTML page."""

    @get("/", media_type=MediaType.HTML, sync_to_thread=False)
    def bare() -> str:
        return FLOOR_HTML

    return Litestar(route_handlers=[bare], logging_config=None, openapi_config=None,
                    debug=False)


def percentile(samples: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of ``samples``."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@attrs.frozen
class Target:
    """One measured request: a URL (with its query), how it is asked for and what it should
    answer. ``route`` is the route template it exercises."""

    url: str
    route: str
    note: str = ""
    htmx: bool = False
    expect: int = 200

    @property
    def label(self) -> str:
        return ("poll " if self.htmx else "GET ") + self.url


@attrs.define
class Row:
    """The measurements of one target."""

    target: Target
    status: int = 0
    size: int = 0
    samples: list[float] = attrs.field(factory=list)  # milliseconds
    calls: list[list[tuple[str, float]]] = attrs.field(factory=list)  # per run

    @property
    def p50(self) -> float:
        return percentile(self.samples, 0.5)

    @property
    def p95(self) -> float:
        return percentile(self.samples, 0.95)

    @property
    def ok(self) -> bool:
        return self.status == self.target.expect

    def median_calls(self) -> list[tuple[str, int, float]]:
        """The backend calls of the median run: (method, count, ms), slowest first."""
        if not self.calls:
            return []
        order = sorted(range(len(self.samples)), key=lambda i: self.samples[i])
        run = self.calls[order[len(order) // 2]]
        count: Counter[str] = Counter()
        spent: defaultdict[str, float] = defaultdict(float)
        for name, seconds in run:
            count[name] += 1
            spent[name] += seconds * 1000
        return sorted(((n, count[n], spent[n]) for n in count), key=lambda c: -c[2])


# -- the pages --------------------------------------------------------------------------------

# Filters an operator uses, per route template; a route the dashboard does not have is skipped.
VARIANTS: Final[dict[str, tuple[tuple[dict[str, str], str], ...]]] = {
    "/jobs": (
        *(({"state": str(s)}, "") for s in JobState),
        ({"queue": "mail"}, ""),
        ({"queue": "media", "state": "queued"}, "the backlog"),
        ({"handler": "refund"}, "a rare handler"),
        ({"queue": "billing", "handler": "refund", "state": "dead"}, "rare: three filters"),
    ),
    "/dead": (
        ({"queue": "mail"}, ""),
        ({"handler": "charge_invoice"}, ""),
        ({"error_type": "SMTPTimeout"}, "a common error type"),
        ({"error_type": "PermissionError"}, "a rare error type"),
        ({"error_type": "NoSuchError"}, "an error type nothing has"),
        ({"within": "1h"}, ""),
        ({"within": "24h"}, ""),
        ({"queue": "billing", "error_type": "CardDeclined", "within": "24h"}, "three filters"),
    ),
    "/dead/purge": (
        ({"older_than": "1d"}, "nothing that old"),
        ({"older_than": "1h"}, ""),
        ({"older_than": "1h", "queue": "mail"}, ""),
    ),
}
REDIRECTS: Final = {"/login"}  # an open dashboard sends the login form on to the overview
_HX_GET: Final = re.compile(r'\bhx-get="([^"]+)"')
_CURSOR_LINK: Final = re.compile(r'\bhref="([^"]*[?&](?:amp;)?cursor=[^"]*)"')


def ui_routes(app: Litestar) -> list[HTTPRoute]:
    """The dashboard's GET routes (static files aside), from its own route table."""
    from monoq.ui import create_ui

    state = app.state[STATE_KEY]
    assert isinstance(state, ApiState)  # noqa: S101 - create_app puts it there
    ui = create_ui(state, UiConfig(), prefix=UI_PATH)
    return sorted(
        (r for r in ui.routes if isinstance(r, HTTPRoute) and "GET" in r.methods
         and not r.path.startswith("/static")),
        key=lambda r: r.path,
    )


def _fill(route: HTTPRoute, samples: Samples) -> list[tuple[str, str]] | None:
    """The route's path with real values, one per sample: (path, note); None when a
    parameter is of no kind the bench knows."""
    paths: list[tuple[str, str]] = [(route.path_format, "")]
    for name in route.path_parameters:
        lowered = name.lower()
        if "job" in lowered:
            values = samples.jobs
        elif "sid" in lowered or "schedule" in lowered:
            values = samples.schedules
        elif "queue" in lowered or lowered == "name":
            values = samples.queues
        else:
            return None
        paths = [(path.replace("{" + name + "}", value), f"{note}, {label}".strip(", "))
                 for path, note in paths for label, value in values.items()]
    return paths


def targets_of(routes: Sequence[HTTPRoute], samples: Samples
               ) -> tuple[list[Target], list[str]]:
    """Every page to measure, and the routes that could not be filled in."""
    targets: list[Target] = []
    skipped: list[str] = []
    for route in routes:
        filled = _fill(route, samples)
        if filled is None:
            skipped.append(route.path)
            continue
        expect = 303 if route.path_format in REDIRECTS else 200
        for path, note in filled:
            targets.append(Target(UI_PATH + path, route.path_format, note, expect=expect))
        for query, note in VARIANTS.get(route.path_format, ()):
            url = f"{UI_PATH}{route.path_format}?{urlencode(query)}"
            targets.append(Target(url, route.path_format, note))
        if route.path_format == "/jobs" and samples.jobs:
            job = next(iter(samples.jobs.values()))
            targets.append(Target(f"{UI_PATH}/jobs?{urlencode({'id': job})}", "/jobs",
                                  "lookup by id", expect=303))
    return targets, skipped


def _links(pattern: re.Pattern[str], page: str) -> list[str]:
    out = []
    for found in pattern.findall(page):
        url = html.unescape(found)
        if url.startswith(UI_PATH) and url not in out:
            out.append(url)
    return out


async def _request(http: httpx.AsyncClient, timed: TimedApp, log: CallLog, target: Target
                   ) -> tuple[httpx.Response, float, list[tuple[str, float]]]:
    headers = {"HX-Request": "true", "HX-Current-URL": BASE_URL + target.url} \
        if target.htmx else {}
    log.calls = []
    response = await http.get(target.url, headers=headers, follow_redirects=False)
    return response, timed.last * 1000, log.calls


async def measure(http: httpx.AsyncClient, timed: TimedApp, log: CallLog, target: Target, *,
                  runs: int, warmup: int) -> tuple[Row, str]:
    """``warmup`` unmeasured calls, then ``runs`` measured ones; answers the row and the
    body of the last answer."""
    row = Row(target)
    body = ""
    for number in range(warmup + runs):
        response, ms, calls = await _request(http, timed, log, target)
        if number >= warmup:
            row.samples.append(ms)
            row.calls.append(calls)
        row.status = response.status_code
        row.size = len(response.content)
        body = response.text
    return row, body


@attrs.define
class Report:
    """Everything one run measured."""

    backend: str
    seed: SeedReport
    runs: int
    warmup: int
    floor: list[float] = attrs.field(factory=list)
    rows: list[Row] = attrs.field(factory=list)
    skipped: list[str] = attrs.field(factory=list)
    budget_ms: float = BUDGET_MS
    load: float = 0.0  # the 1-minute load average when the measuring ended
    seeded: bool = True  # False: a store measured as it was (--reuse)

    @property
    def floor_p50(self) -> float:
        return percentile(self.floor, 0.5)

    def over_budget(self) -> list[Row]:
        return [row for row in self.rows if row.p95 > self.budget_ms]

    def errors(self) -> list[Row]:
        return [row for row in self.rows if not row.ok]


async def measure_pages(client: Client, log: CallLog, report: Report) -> None:
    """Measure the floor and every dashboard page over ``client``."""
    app = create_app(client, ApiConfig())
    timed = TimedApp(app)
    bare = TimedApp(floor_app())
    floor_log = CallLog()
    runs, warmup = report.runs, report.warmup
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=timed), base_url=BASE_URL
                                 ) as http, \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=bare), base_url=BASE_URL
                              ) as floor_http:
        floor_target = Target("/", "/")

        async def floor() -> None:
            row, _body = await measure(floor_http, bare, floor_log, floor_target,
                                       runs=runs * 5, warmup=warmup * 5)
            report.floor += row.samples

        gc.collect()
        await floor()
        targets, report.skipped = targets_of(ui_routes(app), report.seed.samples)
        seen = {(t.url, t.htmx) for t in targets}
        queue = list(targets)
        while queue:
            target = queue.pop(0)
            row, body = await measure(http, timed, log, target, runs=runs, warmup=warmup)
            report.rows.append(row)
            if target.htmx or "?" in target.url:
                continue
            # what the page polls, and the older page it links to
            found = [Target(url, target.route, "htmx partial", htmx=True)
                     for url in _links(_HX_GET, body)]
            found += [Target(url, target.route, "older page (cursor)")
                      for url in _links(_CURSOR_LINK, body)[:1]]
            for extra in found:
                if (extra.url, extra.htmx) not in seen:
                    seen.add((extra.url, extra.htmx))
                    queue.insert(0, extra)
        await floor()
    report.load = os.getloadavg()[0]


# -- stores -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A ``redis-server`` of this run on a free loopback port, without persistence; yields
    its URL and stops it at the end."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("--backend redis needs redis-server on PATH (apt-get install "
                         "redis-server), or give the URL of an empty Redis database")
    with tempfile.TemporaryDirectory(prefix="monoq-pagebench-redis-") as directory:
        port = _free_port()
        child = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", directory],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 15
            while True:
                if child.poll() is not None:
                    err = child.stderr.read().decode(errors="replace") if child.stderr else ""
                    raise SystemExit(f"redis-server exited: {err.strip()}")
                with contextlib.suppress(OSError), socket.create_connection(
                        ("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
                if time.monotonic() > deadline:
                    raise SystemExit(f"redis-server did not answer on port {port}")
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            if child.stderr is not None:
                child.stderr.close()


@contextlib.contextmanager
def store_url(backend: str) -> Iterator[str]:
    """The URL of a fresh store for ``--backend``."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="monoq-pagebench-") as directory:
            yield f"sqlite:///{directory}/pagebench.db"
    elif backend == "redis":
        with private_redis() as url:
            yield url
    elif backend == "memory":
        yield "memory://"
    else:
        if backend.startswith("sqlite:///"):
            rest = unquote(backend[len("sqlite:///"):])
            path = Path(rest) if rest.startswith("/") else Path.cwd() / rest
            if path.exists():
                raise SystemExit(f"{path} exists: the bench seeds a fresh store; name a new "
                                 "file")
        yield backend


async def _refuse_unless_empty(backend: Backend, url: str) -> None:
    if await backend.stats() or await backend.list_schedules():
        raise SystemExit(f"{url.split('@')[-1]} already holds monoq data: the bench seeds a "
                         "fresh store; give an empty one")


@contextlib.asynccontextmanager
async def connected(url: str, options: dict[str, Any] | None = None
                    ) -> AsyncIterator[Backend]:
    """A connected backend for ``url``, closed at the end."""
    backend = open_backend(url, options)
    await backend.connect()
    try:
        yield backend
    finally:
        with anyio.CancelScope(shield=True):
            await backend.aclose()


async def run(url: str, *, jobs: int, batch: int, runs: int, warmup: int, seed: int,
              budget_ms: float = BUDGET_MS, reuse: bool = False,
              progress: Callable[[str], None] | None = None) -> Report:
    """Seed a fresh store at ``url`` and measure every page; answers the report. With
    ``reuse``, measure the store as it is instead (nothing is written)."""
    end = utcnow()
    say = progress or (lambda _line: None)
    if reuse:
        async with connected(url) as backend:
            found = SeedReport()
            found.samples = await pick_samples(Client(backend))
            for queue in await backend.stats():
                for state, count in queue.counts.items():
                    found.counts[str(state)] = found.counts.get(str(state), 0) + count
            found.jobs = sum(found.counts.values())
            report = Report(backend=url.split("@")[-1], seed=found, runs=runs, warmup=warmup,
                            budget_ms=budget_ms, seeded=False)
            say("measuring the pages")
            await _measure(backend, report)
        return report
    options = {"synchronous": "NORMAL"} if url.startswith("sqlite:") else None
    async with connected(url, options) as backend:
        await _refuse_unless_empty(backend, url)
        seeder = Seeder(backend, Client(backend), jobs=jobs, batch=batch, seed=seed, end=end,
                        progress=say)
        report = Report(backend=url.split("@")[-1], seed=await seeder.run(), runs=runs,
                        warmup=warmup, budget_ms=budget_ms)
        if not backend.capabilities.shared_across_processes:  # memory://: this one or none
            say("measuring the pages")
            await _measure(backend, report)
            return report
    # measured over a backend opened afresh with the default options, as the api role does
    async with connected(url) as backend:
        say("measuring the pages")
        await _measure(backend, report)
    return report


async def _measure(backend: Backend, report: Report) -> None:
    log = CallLog()
    await measure_pages(Client(cast(Backend, TimedBackend(backend, log))), log, report)


# -- output -----------------------------------------------------------------------------------


def _calls_text(row: Row, top: int | None = 2) -> str:
    calls = row.median_calls()
    if not calls:
        return "none"
    total = sum(c[1] for c in calls)
    shown = calls if top is None else calls[:top]
    parts = [f"{name} x{count} {ms:.1f}" for name, count, ms in shown]
    more = "" if top is None or len(calls) <= top else ", …"
    return f"{total}: " + ", ".join(parts) + more


def render(report: Report) -> str:
    """The report as markdown."""
    seed = report.seed
    counts = ", ".join(f"{state} {seed.counts.get(str(state), 0):,}" for state in JobState)
    made = (
        f"{seed.runs:,} of them schedule runs. Seeded in {seed.seconds:.1f} s "
        f"({seed.jobs / max(seed.seconds, 1e-9):,.0f} jobs/s, {seed.batches} batches over 24 h)."
        if report.seeded else "Measured as it was (--reuse)."
    )
    lines = [
        f"Dashboard pages over {report.backend}: {seed.jobs:,} jobs stored ({counts}).",
        (f"{made} Server time in-process, {report.runs} runs "
         f"after {report.warmup} warm-ups, {os.cpu_count()} CPUs (load average "
         f"{report.load:.1f} at the end), Python {sys.version.split()[0]}."),
        (f"Floor (bare litestar endpoint, {len(FLOOR_HTML)}-byte HTML, same client): p50 "
         f"{report.floor_p50:.2f} ms, p95 {percentile(report.floor, 0.95):.2f} ms."),
        "",
        ("| page | what | status | KiB | p50 ms | p95 ms | max ms | p50/floor | backend calls "
         "(median run: count: slowest, ms) |"),
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in report.rows:
        flag = " **OVER**" if row.p95 > report.budget_ms else ""
        status = f"{row.status}" if row.ok else f"**{row.status}** (expected {row.target.expect})"
        lines.append(
            f"| {row.target.label} | {row.target.note} | {status} | {row.size / 1024:.1f} "
            f"| {row.p50:.1f} | {row.p95:.1f}{flag} | {max(row.samples):.1f} "
            f"| {row.p50 / report.floor_p50:.0f}x | {_calls_text(row)} |"
        )
    lines.append("")
    worst = max(report.rows, key=lambda r: r.p95) if report.rows else None
    over = report.over_budget()
    if over:
        lines.append(f"OVER BUDGET: {len(over)} of {len(report.rows)} pages took more than "
                     f"{report.budget_ms:g} ms at p95:")
        lines.extend(f"- {row.target.label} ({row.target.note or row.target.route}): p95 "
                     f"{row.p95:.1f} ms; backend calls of the median run: "
                     f"{_calls_text(row, top=None)}" for row in over)
    elif worst is not None:
        lines.append(f"Every page within {report.budget_ms:g} ms at p95 (slowest: "
                     f"{worst.target.label}, p95 {worst.p95:.1f} ms).")
    lines.extend(f"ERROR: {row.target.label} answered {row.status}, expected "
                 f"{row.target.expect}" for row in report.errors())
    lines.extend(f"NOT MEASURED: {UI_PATH}{path} (a path parameter of unknown kind)"
                 for path in report.skipped)
    return "\n".join(lines)


def to_json(report: Report) -> dict[str, Any]:
    """The report as JSON-able data, every sample included."""
    return {
        "backend": report.backend,
        "jobs": report.seed.jobs,
        "counts": report.seed.counts,
        "schedule_runs": report.seed.runs,
        "seeded": report.seeded,
        "seed_seconds": round(report.seed.seconds, 3),
        "runs": report.runs,
        "warmup": report.warmup,
        "budget_ms": report.budget_ms,
        "load_average": round(report.load, 2),
        "floor": {"p50_ms": round(report.floor_p50, 4),
                  "p95_ms": round(percentile(report.floor, 0.95), 4),
                  "samples_ms": [round(s, 4) for s in report.floor]},
        "pages": [
            {
                "url": row.target.url, "route": row.target.route, "note": row.target.note,
                "htmx": row.target.htmx, "status": row.status, "expected": row.target.expect,
                "bytes": row.size, "p50_ms": round(row.p50, 3), "p95_ms": round(row.p95, 3),
                "max_ms": round(max(row.samples), 3),
                "ratio_to_floor": round(row.p50 / report.floor_p50, 1),
                "over_budget": row.p95 > report.budget_ms,
                "samples_ms": [round(s, 3) for s in row.samples],
                "backend_calls": [{"method": n, "count": c, "ms": round(ms, 3)}
                                  for n, c, ms in row.median_calls()],
            }
            for row in report.rows
        ],
        "not_measured": [UI_PATH + p for p in report.skipped],
    }


def main(argv: list[str] | None = None) -> int:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m monoq.ui.pagebench",
        description="Seed a fresh store and time every dashboard page (see the module doc).",
    )
    parser.add_argument("--backend", default="sqlite",
                        help="sqlite (temp file, default), redis (private redis-server), "
                             "memory, or the URL of an empty store")
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs to seed (1000000)")
    parser.add_argument("--batch", type=int, default=5000, help="jobs per enqueue (5000)")
    parser.add_argument("--runs", type=int, default=20, help="measured runs per page (20)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured runs first (3)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the data (1)")
    parser.add_argument("--budget-ms", type=float, default=BUDGET_MS,
                        help="p95 budget per page (150)")
    parser.add_argument("--reuse", action="store_true",
                        help="measure the store at --backend URL as it is, without seeding "
                             "it (e.g. one an earlier run seeded)")
    parser.add_argument("--json", metavar="PATH", help="also write JSON there (- = stdout, "
                                                       "instead of the table)")
    args = parser.parse_args(argv)
    for name in ("jobs", "batch", "runs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be at least 0")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)  # noqa: T201

    if args.reuse and "://" not in args.backend:
        parser.error("--reuse needs --backend URL of an existing store")
    with contextlib.nullcontext(args.backend) if args.reuse else store_url(args.backend) as url:
        report = anyio.run(functools.partial(
            run, url, jobs=args.jobs, batch=args.batch, runs=args.runs, warmup=args.warmup,
            seed=args.seed, budget_ms=args.budget_ms, reuse=args.reuse, progress=progress))
    if args.json == "-":
        print(json.dumps(to_json(report), indent=1))  # noqa: T201
    else:
        print(render(report))  # noqa: T201
        if args.json:
            Path(args.json).write_text(json.dumps(to_json(report), indent=1) + "\n")
    return 1 if report.errors() else 0


if __name__ == "__main__":
    raise SystemExit(main())
