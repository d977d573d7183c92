"""Queue-limited tokens: a ``Client`` that sees and touches only some queues.

A token with ``queues = ["mail", "reports"]`` reaches the backend through a ``ScopedClient``
(the API's ``client`` dependency and the dashboard's ``client_of`` hand one out for it). It
refuses, with ``QueueForbidden`` (403 in the API, a 403 page in the dashboard), anything about a
queue outside the list: submitting into one (a batch with any such job is refused whole),
reading, waiting for, cancelling or retrying a job of one, pausing or resuming one, requeueing
its dead jobs by id, purging it, and reading or changing a schedule that targets one. Lists and
counts without a queue filter cover its queues only: jobs (merged newest first), queues, dead
jobs, counts, throughput, workers (those consuming one of its queues, with only its queues
shown) and schedules.

Nothing here changes what an unlimited token sees: it gets the plain ``Client``.
"""

from __future__ import annotations

import heapq
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import attrs
from litestar import Request

from monoq.api.state import ApiState
from monoq.client import (
    Client,
    _job_detail,
    _purge_detail,
    _requeue_detail,
    _schedule_detail,
)
from monoq.core.audit import AuditPage, audit_cursor, audited, parse_audit_cursor
from monoq.core.backend import MemoryReport
from monoq.core.models import (
    Enqueued,
    Job,
    JobQuery,
    JobState,
    NewJob,
    Page,
    QueueStats,
    Schedule,
    ThroughputBucket,
    WorkerInfo,
)
from monoq.errors import MonoqError

# Request state key of a queue-limited token: (its queues, its name), set by ``monoq.api.auth``.
QUEUES_KEY: Final = "monoq_queues"


class QueueForbidden(MonoqError):
    """The token may not touch this queue (403). The message names the token and the queue,
    never the token itself."""


class ScopedClient(Client):
    """``inner``'s backend, defaults and registry, limited to ``allowed`` queues.

    Submits go through ``inner`` (so they still share its coalesced backend calls).
    """

    def __init__(self, inner: Client, allowed: frozenset[str], *, name: str = "") -> None:
        super().__init__(
            inner.backend,
            registry=inner.registry,
            defaults=inner.defaults,
            clock=inner.clock,
            known_handlers_only=inner.known_handlers_only,
        )
        self.inner = inner
        self.allowed = allowed
        self.token_name = name
        self.ordered = sorted(allowed)

    # -- checks ---------------------------------------------------------------------------------

    def allows(self, queue: str) -> bool:
        """Whether the token may touch ``queue``."""
        return queue in self.allowed

    def check(self, queue: str, what: str = "queue") -> None:
        """QueueForbidden unless ``queue`` is one of the token's."""
        if queue not in self.allowed:
            who = f"token {self.token_name!r}" if self.token_name else "this token"
            raise QueueForbidden(
                f"{who} is limited to the queues {', '.join(self.ordered)}; this {what} is "
                f"in queue {queue!r}"
            )

    def _targets(self, queue: str | None) -> list[str]:
        if queue is None:
            return self.ordered
        self.check(queue)
        return [queue]

    # -- producing ------------------------------------------------------------------------------

    async def submit_job(self, new: NewJob) -> Enqueued:
        """Submit into one of the token's queues only."""
        self.check(new.queue, "job")
        return await self.inner.submit_job(new)

    async def submit_many(self, jobs: Iterable[Mapping[str, Any] | NewJob]) -> list[Enqueued]:
        """Every job is built and checked first: one job in another queue refuses the batch."""
        built = self.build_many(jobs, now=self.clock())
        for index, new in enumerate(built):
            self.check(new.queue, f"batch's job jobs[{index}]")
        return await self.inner.submit_many(built)

    # -- inspecting -----------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job:
        """The job, or QueueForbidden when it is in another queue (``wait``, ``attempts``,
        ``cancel`` and ``retry`` go through here first)."""
        job = await super().get(job_id)
        self.check(job.queue, "job")
        return job

    async def list_jobs(self, query: JobQuery) -> Page:
        """One queue's page, or the token's queues merged newest first.

        Cursors are job ids (the next page holds the ids below it), so one cursor serves every
        queue. A queue whose page ended early (the backend may stop before ``limit``) bounds
        the merged page: only jobs at or above its cursor are answered, and the page may then
        end early too, which the protocol allows.
        """
        targets = self._targets(query.queue)
        if len(targets) == 1:
            return await super().list_jobs(attrs.evolve(query, queue=targets[0]))
        pages = [await Client.list_jobs(self, attrs.evolve(query, queue=q)) for q in targets]
        bounds = [p.next_cursor for p in pages if p.next_cursor is not None]
        bound = max(bounds) if bounds else None
        merged = heapq.merge(*(p.jobs for p in pages), key=lambda j: j.id, reverse=True)
        jobs = [j for j in merged if bound is None or j.id >= bound]
        limit = query.limit
        if len(jobs) > limit:
            return Page(jobs=jobs[:limit], next_cursor=jobs[limit - 1].id)
        return Page(jobs=jobs, next_cursor=bound)

    async def count_jobs(
        self,
        *,
        states: Iterable[JobState | str],
        queue: str | None = None,
        finished_before: datetime | None = None,
    ) -> int:
        """Counted over the token's queues."""
        states = list(states)
        total = 0
        for q in self._targets(queue):
            total += await super().count_jobs(states=states, queue=q,
                                              finished_before=finished_before)
        return total

    async def throughput(
        self,
        *,
        since: datetime,
        until: datetime,
        bucket: timedelta,
        queue: str | None = None,
    ) -> list[ThroughputBucket]:
        """Summed over the token's queues, bucket by bucket."""
        total: list[ThroughputBucket] | None = None
        for q in self._targets(queue):
            got = await super().throughput(since=since, until=until, bucket=bucket, queue=q)
            total = got if total is None else [
                attrs.evolve(a, completed=a.completed + b.completed, failed=a.failed + b.failed,
                             dead=a.dead + b.dead)
                for a, b in zip(total, got, strict=True)
            ]
        return total or []

    async def count_finished(self, *, since: datetime) -> dict[JobState, int]:
        """``Backend.count_finished`` summed over the token's queues."""
        total: dict[JobState, int] = {}
        for q in self.ordered:
            for state, n in (await self.backend.count_finished(since=since, queue=q)).items():
                total[state] = total.get(state, 0) + n
        return total

    async def recent_waits(self, queue: str, *, limit: int = 500) -> list[float]:
        """Only for the token's queues."""
        self.check(queue)
        return await super().recent_waits(queue, limit=limit)

    async def queues(self, names: Sequence[str] | None = None) -> list[QueueStats]:
        """The token's known queues (or the named ones, each of which must be the token's)."""
        if names is not None:
            for name in names:
                self.check(name)
            return await super().queues(names)
        return [s for s in await super().queues() if s.queue in self.allowed]

    async def workers(self) -> list[WorkerInfo]:
        """Workers consuming one of the token's queues, showing only those queues."""
        found = []
        for worker in await super().workers():
            mine = tuple(q for q in worker.queues if q in self.allowed)
            if mine:
                found.append(attrs.evolve(worker, queues=mine))
        return found

    async def memory_use(self) -> MemoryReport | None:
        """The storage's totals, and the estimates of the token's queues only."""
        report = await super().memory_use()
        if report is None:
            return None
        return attrs.evolve(report, queues={q: n for q, n in report.queues.items()
                                            if q in self.allowed})

    # -- administering --------------------------------------------------------------------------

    @audited("cancel", target="job_id", describe=_job_detail)
    async def cancel(self, job_id: str) -> Job:
        """Only a job of the token's queues."""
        await self.get(job_id)
        return await super().cancel(job_id)

    @audited("retry", target="job_id", describe=_job_detail)
    async def retry(self, job_id: str) -> Job:
        """Only a job of the token's queues."""
        await self.get(job_id)
        return await super().retry(job_id)

    @audited("pause", target="queue", queue="queue")
    async def pause(self, queue: str) -> None:
        """Only one of the token's queues."""
        self.check(queue)
        await super().pause(queue)

    @audited("resume", target="queue", queue="queue")
    async def resume(self, queue: str) -> None:
        """Only one of the token's queues."""
        self.check(queue)
        await super().resume(queue)

    async def dead_jobs(
        self, *, queue: str | None = None, handler: str | None = None
    ) -> AsyncIterator[Job]:
        """Dead jobs of the token's queues, queue by queue."""
        for q in self._targets(queue):
            async for job in super().dead_jobs(queue=q, handler=handler):
                yield job

    @audited("requeue", target="queue", queue="queue", describe=_requeue_detail)
    async def requeue_dead(
        self,
        ids: Sequence[str] | None = None,
        *,
        queue: str | None = None,
        handler: str | None = None,
    ) -> list[str]:
        """By id: refused whole if any job is in another queue (unknown ids are skipped, as
        without a limit). By filters: the token's queues only."""
        if ids is not None:
            for start in range(0, len(ids), 500):
                for job in await self.backend.get_many(ids[start:start + 500]):
                    if job is not None:
                        self.check(job.queue, f"job {job.id}")
            return await super().requeue_dead(ids)
        if queue is not None:
            self.check(queue)
        return await super().requeue_dead(queue=queue, handler=handler)

    @audited("purge", target="queue", queue="queue", describe=_purge_detail)
    async def purge_dead(
        self, *, queue: str | None = None, older_than: timedelta = timedelta(0)
    ) -> int:
        """Only the token's queues."""
        total = 0
        for q in self._targets(queue):
            total += await super().purge_dead(queue=q, older_than=older_than)
        return total

    # -- audit log ------------------------------------------------------------------------------

    async def list_audit(self, *, queue: str | None = None, limit: int = 50,
                         cursor: str | None = None, **filters: Any) -> AuditPage:
        """The entries about one of the token's queues (``queue``), or about any of them
        merged newest first; entries about other queues, or about every queue at once (a
        purge without a queue), are not the token's to read.

        Cursors are ``(at, id)`` positions, so one cursor serves every queue; a queue whose
        page ended early bounds the merged page, as in ``list_jobs``.
        """
        targets = self._targets(queue)
        if len(targets) == 1:
            return await super().list_audit(queue=targets[0], limit=limit, cursor=cursor,
                                            **filters)
        pages = [await Client.list_audit(self, queue=q, limit=limit, cursor=cursor, **filters)
                 for q in targets]
        bounds = [parse_audit_cursor(p.next_cursor) for p in pages if p.next_cursor is not None]
        bound = max(bounds) if bounds else None
        merged = heapq.merge(*(p.entries for p in pages), key=lambda e: e.sort_key,
                             reverse=True)
        entries = [e for e in merged if bound is None or e.sort_key >= bound]
        if len(entries) > limit:
            return AuditPage(entries=entries[:limit], next_cursor=audit_cursor(entries[limit - 1]))
        return AuditPage(entries=entries,
                         next_cursor=None if bound is None else f"{bound[0]}-{bound[1]}")

    # -- schedules ------------------------------------------------------------------------------

    @audited("schedule.put", target="schedule.id", queue="schedule.queue",
             describe=_schedule_detail)
    async def put_schedule(self, schedule: Schedule) -> Schedule:
        """Only a schedule targeting one of the token's queues, and never over a schedule of
        another queue with the same id."""
        self.check(schedule.queue, "schedule")
        current = await self.backend.get_schedule(schedule.id)
        if current is not None:
            self.check(current.queue, "schedule")
        return await super().put_schedule(schedule)

    async def get_schedule(self, schedule_id: str) -> Schedule:
        """Only a schedule targeting one of the token's queues (``set_schedule_enabled``,
        ``trigger_schedule`` and ``schedule_runs`` go through here first)."""
        schedule = await super().get_schedule(schedule_id)
        self.check(schedule.queue, "schedule")
        return schedule

    async def list_schedules(self) -> list[Schedule]:
        """The schedules targeting the token's queues."""
        return [s for s in await super().list_schedules() if s.queue in self.allowed]

    @audited("schedule.delete", target="schedule_id")
    async def delete_schedule(self, schedule_id: str) -> None:
        """Only a schedule targeting one of the token's queues."""
        await self.get_schedule(schedule_id)
        await super().delete_schedule(schedule_id)


def scoped(client: Client, queues: frozenset[str] | None, name: str = "") -> Client:
    """``client`` itself for an unlimited token, else a ``ScopedClient`` over it."""
    return client if queues is None else ScopedClient(client, queues, name=name)


def request_client(request: Request[Any, Any, Any], api: ApiState) -> Client:
    """The client of an API request: the app's, or a ``ScopedClient`` over it when the request's
    token is limited to some queues (``monoq.api.auth`` put them in the request's state). The
    ``client`` dependency of the routes is this; the submit routes call it directly."""
    limited = request.scope.get("state", {}).get(QUEUES_KEY)
    if limited is None:
        return api.client
    return ScopedClient(api.client, limited[0], name=limited[1])


async def count_finished(client: Client, since: datetime) -> dict[JobState, int]:
    """Jobs finished since ``since`` per terminal state, over the queues ``client`` sees."""
    if isinstance(client, ScopedClient):
        return await client.count_finished(since=since)
    return await client.backend.count_finished(since=since)
