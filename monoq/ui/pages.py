"""Overview, Queues and Workers pages, and the queue actions (pause, resume).

Every number comes from the Client: counts by state from ``queues()`` (kept per queue by the
backend, never counted by scanning jobs), attempts per minute from ``throughput()`` (counters
written when attempts finish), waits from ``recent_waits()`` (a bounded ring per queue), live
workers from their heartbeats and scheduler passes from ``beats()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import attrs
from litestar import Request, Response, get, post
from litestar.params import FromPath

from monoq.api.scoping import ScopedClient
from monoq.core.models import JobState, QueueStats, Schedule, WorkerInfo
from monoq.errors import ValidationError
from monoq.ui.charts import sparkline, throughput_chart
from monoq.ui.core import back, client_of, page, ui_state
from monoq.ui.fmt import num, percentile, span

MINUTE: Final = timedelta(minutes=1)
# 60 one-minute buckets: the 59 minutes before the current one, and the current one so far.
CHART_WINDOW: Final = timedelta(minutes=59)
STATES: Final = tuple(JobState)
# What still waits for, or sits in, a queue (the Queues page's depth columns).
DEPTH_STATES: Final = (JobState.SCHEDULED, JobState.QUEUED, JobState.RUNNING, JobState.RETRYING,
                       JobState.DEAD)
WAIT_SAMPLES: Final = 500


@attrs.frozen
class Problem:
    """Something worth an operator's look, with where to look."""

    level: str  # "warn" or "info"
    text: str
    link: str = ""
    link_text: str = ""


def _totals(stats: Sequence[QueueStats]) -> dict[JobState, int]:
    return {state: sum(s.counts.get(state, 0) for s in stats) for state in STATES}


def _scheduler_beats(beats: dict[str, datetime]) -> dict[str, datetime]:
    return {name.partition(":")[2] or name: when for name, when in beats.items()
            if name.startswith("scheduler")}


def find_problems(
    *,
    prefix: str,
    now: datetime,
    stats: Sequence[QueueStats],
    workers: Sequence[WorkerInfo],
    schedulers: dict[str, datetime],
    schedules: Sequence[Schedule],
    dead_recent: int,
    dead_hour: int,
    overdue: float,
    silent: float,
) -> list[Problem]:
    """The overview's "worth a look" list: overdue queues, a growing dead-letter queue and a
    silent scheduler, most urgent first."""
    problems: list[Problem] = []
    consumed = {queue for worker in workers for queue in worker.queues}
    for queue in stats:
        waiting = queue.counts.get(JobState.QUEUED, 0)
        oldest = queue.oldest_queued_at
        if not waiting or oldest is None:
            continue
        waited = (now - oldest).total_seconds()
        if waited <= overdue:
            continue
        if queue.paused:
            why = "the queue is paused"
        elif queue.queue not in consumed:
            why = "no live worker consumes it"
        else:
            busy = sum(w.busy for w in workers if queue.queue in w.queues)
            slots = sum(w.concurrency for w in workers if queue.queue in w.queues)
            why = f"its workers are busy ({busy} of {slots} slots)"
        problems.append(Problem(
            "warn",
            f"Queue {queue.queue}: the oldest of {num(waiting)} queued jobs has waited "
            f"{span(waited)} to start; {why}.",
            f"{prefix}/jobs?queue={queue.queue}&state=queued", "See the queued jobs",
        ))
    if dead_recent:
        problems.append(Problem(
            "warn",
            f"The dead-letter queue is growing: {num(dead_recent)} jobs died in the last 15 "
            f"minutes ({num(dead_hour)} in the last hour).",
            f"{prefix}/dead", "Open the dead-letter queue",
        ))
    waiting_for_scheduler = sum(
        s.counts.get(JobState.SCHEDULED, 0) + s.counts.get(JobState.RETRYING, 0) for s in stats)
    enabled = sum(1 for s in schedules if s.enabled)
    needed = enabled or waiting_for_scheduler
    last = max(schedulers.values(), default=None)
    if last is None and needed:
        problems.append(Problem(
            "warn",
            f"No scheduler has run in the last 24 hours: {num(enabled)} enabled schedules and "
            f"{num(waiting_for_scheduler)} delayed or retrying jobs wait for one "
            "(monoq run --roles scheduler).",
        ))
    elif last is not None and (now - last).total_seconds() > silent and needed:
        problems.append(Problem(
            "warn",
            f"The scheduler has been silent for {span((now - last).total_seconds())}: "
            "schedules do not fire and delayed or retrying jobs stay waiting.",
        ))
    for queue in stats:
        waiting = queue.counts.get(JobState.QUEUED, 0)
        if queue.paused and waiting and not any(queue.queue in p.text for p in problems):
            problems.append(Problem(
                "info", f"Queue {queue.queue} is paused with {num(waiting)} jobs waiting.",
                f"{prefix}/queues", "Queues",
            ))
    return problems


@get("/", opt={"ui": "read"}, name="ui-overview")
async def overview(request: Request[Any, Any, Any]) -> Response[Any]:
    """Counts by state per queue, attempts per minute over the last hour, live workers, the
    scheduler's last pass and the problems worth a look."""
    ui = ui_state(request)
    client = client_of(request)
    now = client.clock()
    stats = await client.queues()
    buckets = await client.throughput(since=now - CHART_WINDOW, until=now, bucket=MINUTE)
    workers = await client.workers()
    schedulers = _scheduler_beats(await client.beats())
    schedules = await client.list_schedules()
    recent_from = now - timedelta(minutes=15)
    dead_recent = sum(b.dead for b in buckets if b.start + MINUTE > recent_from)
    dead_hour = sum(b.dead for b in buckets)
    problems = find_problems(
        prefix=ui.prefix, now=now, stats=stats, workers=workers, schedulers=schedulers,
        schedules=schedules, dead_recent=dead_recent, dead_hour=dead_hour,
        overdue=ui.config.overdue_seconds, silent=ui.config.scheduler_silent_seconds,
    )
    return page(
        request, "overview.html", nav="overview", title="Overview",
        stats=stats, totals=_totals(stats), states=STATES, chart=throughput_chart(buckets),
        workers=workers, busy=sum(w.busy for w in workers),
        slots=sum(w.concurrency for w in workers), schedulers=schedulers,
        last_scheduler=max(schedulers.values(), default=None),
        schedules_enabled=sum(1 for s in schedules if s.enabled),
        schedules_total=len(schedules), problems=problems,
    )


@attrs.frozen
class QueueRow:
    """One line of the Queues page."""

    stats: QueueStats
    completed_5m: int
    failed_5m: int
    completed_1h: int
    failed_1h: int
    spark: str
    wait_p50: float | None
    wait_p95: float | None
    wait_samples: int
    oldest: datetime | None


async def _queue_row(request: Request[Any, Any, Any], stats: QueueStats, now: datetime
                     ) -> QueueRow:
    client = client_of(request)
    buckets = await client.throughput(since=now - CHART_WINDOW, until=now, bucket=MINUTE,
                                      queue=stats.queue)
    recent = [b for b in buckets if b.start + MINUTE > now - timedelta(minutes=5)]
    waits = await client.recent_waits(stats.queue, limit=WAIT_SAMPLES)
    return QueueRow(
        stats=stats,
        completed_5m=sum(b.completed for b in recent),
        failed_5m=sum(b.failed for b in recent),
        completed_1h=sum(b.completed for b in buckets),
        failed_1h=sum(b.failed for b in buckets),
        spark=sparkline([b.completed for b in buckets]),
        wait_p50=percentile(waits, 0.5),
        wait_p95=percentile(waits, 0.95),
        wait_samples=len(waits),
        oldest=stats.oldest_queued_at,
    )


@get("/queues", opt={"ui": "read"}, name="ui-queues")
async def queues(request: Request[Any, Any, Any]) -> Response[Any]:
    """Depth by state, paused or not, throughput and the wait from due to start per queue."""
    now = client_of(request).clock()
    rows = [await _queue_row(request, stats, now) for stats in await client_of(request).queues()]
    return page(request, "queues.html", nav="queues", title="Queues", rows=rows,
                depth_states=DEPTH_STATES, wait_samples=WAIT_SAMPLES)


async def _set_paused(request: Request[Any, Any, Any], name: str, paused: bool) -> Response[Any]:
    ui = ui_state(request)
    client = client_of(request)
    if isinstance(client, ScopedClient):
        client.check(name)  # a 403 page rather than "no queue" for another team's queue
    known = {s.queue for s in await client.queues()}
    if name not in known:
        raise ValidationError("queue", f"no queue named {name!r}")
    if paused:
        await client.pause(name)
    else:
        await client.resume(name)
    return back(ui, "/queues", "paused" if paused else "resumed")


@post("/queues/{name:str}/pause", opt={"ui": "admin"}, status_code=303, name="ui-queue-pause")
async def pause_queue(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Any]:
    """Stop workers claiming from the queue."""
    return await _set_paused(request, name, True)


@post("/queues/{name:str}/resume", opt={"ui": "admin"}, status_code=303, name="ui-queue-resume")
async def resume_queue(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Any]:
    """Let workers claim from the queue again."""
    return await _set_paused(request, name, False)


@get("/workers", opt={"ui": "read"}, name="ui-workers")
async def workers(request: Request[Any, Any, Any]) -> Response[Any]:
    """Live workers from their heartbeats."""
    found = sorted(await client_of(request).workers(), key=lambda w: (w.host, w.id))
    return page(request, "workers.html", nav="workers", title="Workers", workers=found)


@get("/audit", opt={"ui": "admin"}, name="ui-audit")
async def audit(request: Request[Any, Any, Any]) -> Response[Any]:
    """The audit log, newest first (admin viewers; a queue-limited one sees its queues'
    entries), filtered by queue, actor and action, 100 entries a page."""
    params = request.query_params
    values = {k: (params.get(k) or "").strip() for k in ("queue", "actor", "action")}
    cursor = (params.get("cursor") or "").strip() or None
    found = await client_of(request).list_audit(
        queue=values["queue"] or None, actor=values["actor"] or None,
        action=values["action"] or None, limit=100, cursor=cursor)
    return page(request, "audit.html", nav="audit", title="Audit log", entries=found.entries,
                next_cursor=found.next_cursor, values=values)


HANDLERS: Final = [overview, queues, pause_queue, resume_queue, workers, audit]
