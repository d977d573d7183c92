"""The worker role: claim jobs, run handlers, heartbeat leases, record outcomes.

One task claims up to the free slots (never a hidden prefetch) and starts one asyncio task per
job, which the worker cancels when the job passes its timeout. A heartbeat task extends every
held lease in one backend call and learns about cancellations and lost leases. Outcomes that
come close together travel in one backend call, which also claims for the slots they freed. On a
backend served by another process (Redis) two such calls may be in flight at once, each claiming
for at most half the slots, so that the handlers of one half run while the server works on the
other half's call. On stop the worker claims nothing more, lets running jobs finish within the
grace period, and releases the rest back to their queue with the attempt refunded.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import attrs

from monoq import metrics
from monoq.client import Client
from monoq.context import Context
from monoq.core.codec import json_encode
from monoq.core.models import (
    TRACEBACK_LIMIT,
    ErrorInfo,
    Finish,
    Lease,
    LeaseStatus,
    Outcome,
    Progress,
    WorkerInfo,
)
from monoq.core.retry import RetryPolicy
from monoq.errors import BackendError, Retry, SerializationError, SkipRetry
from monoq.isolation import HandlerProcessDied, HandlerProcessError, ProcessPool, ResultNotJson
from monoq.plugin import Plugin
from monoq.registry import Registry
from monoq.stacks import render, task_stack, thread_stack, where

logger = logging.getLogger(__name__)

# Ack calls a worker keeps in flight at once (see Worker._ack_loop), on a backend served out of
# process (Capabilities.served_out_of_process); one on the others.
ACK_LANES = 2


def resident_mib() -> float | None:
    """This process's resident memory in MiB (Linux ``/proc``; None where unreadable)."""
    try:
        pages = int(Path("/proc/self/statm").read_text(encoding="ascii").split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _in_thread(run: _Run, func: Any) -> Any:
    """A sync handler's call in its thread, which it marks as the run's while it runs."""
    run.thread = threading.get_ident()
    try:
        return func(run.ctx, run.lease.job.payload)
    finally:
        run.thread = None


def default_worker_id() -> str:
    """``host-pid-xxxx``: unique per process start."""
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(2).hex()}"


@attrs.frozen
class WorkerSettings:
    """How a worker runs; built from ``[worker]`` and ``[retry]``."""

    queues: tuple[str, ...] = ("default",)
    concurrency: int = 5
    lease: timedelta = timedelta(seconds=30)
    heartbeat: timedelta = timedelta(seconds=10)
    grace: timedelta = timedelta(seconds=25)
    worker_id: str = attrs.field(factory=default_worker_id)
    # The retry policy: the backoff after a failed attempt ([retry]).
    retry_policy: RetryPolicy = attrs.Factory(RetryPolicy)
    idle_wait: float = 5.0  # longest idle wait before claiming again (backends wake us earlier)
    roles: tuple[str, ...] = ("worker",)
    loop_lag_warning: float = 0.5  # seconds the loop may stall before a warning
    max_jobs: int = 0  # recycle after this many finished jobs (0 = never)
    max_memory_mb: float = 0.0  # recycle when RSS passes this (0 = never)
    stop_grace: float = 5.0  # seconds an abandoned sync handler may run on before a warning
    progress_interval: float = 1.0  # seconds between two progress calls to the backend
    # [plugins.<name>] tables: plugin name -> its options
    plugin_options: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)


@attrs.define(eq=False)
class _Run:
    """One attempt this worker runs, in an asyncio task of its own.

    The worker stops a handler (timeout, cancel request, lost lease, shutdown) with ``cancel``:
    the task is cancelled while it is in the handler, and a run asked to stop before its
    handler began never calls it. A plain task and these flags cost a fraction of what an anyio
    task and cancel scope per job did on the hot path.
    """

    lease: Lease
    ctx: Context
    cancel_called: bool = False  # the worker asked the handler to stop
    cancelled_caught: bool = False  # and the handler ended by that cancellation
    in_handler: bool = False  # the task is inside the handler call now
    interrupted: bool = False  # the worker cancelled the task (to be taken back, uncancel)
    stop_reason: Outcome | None = None  # CANCELLED or RELEASED, when we stopped it
    lost: bool = False
    timed_out: bool = False
    task: asyncio.Task[Any] | None = None  # the task running it (async handlers)
    thread: int | None = None  # the thread running it, while it runs (sync handlers)
    stack: str | None = None  # where it was when it had to stop
    where: str = ""  # the innermost frame of its own code then

    def cancel(self) -> None:
        """Stop the handler: cancel its task if it is in the handler now; a run that has not
        reached its handler yet will not call it."""
        if self.cancel_called:
            return
        self.cancel_called = True
        if self.in_handler and self.task is not None:
            self.interrupted = True
            self.task.cancel()


def _error(exc: BaseException, *, with_traceback: bool = True) -> ErrorInfo:
    tb = None
    if with_traceback:
        tb = "".join(traceback.format_exception(exc))[-TRACEBACK_LIMIT:]
    return ErrorInfo(type=type(exc).__name__, message=str(exc)[:2000], traceback=tb)


class Worker:
    """Runs jobs from ``settings.queues`` with at most ``settings.concurrency`` at once."""

    def __init__(self, client: Client, registry: Registry, settings: WorkerSettings) -> None:
        self.client = client
        self.backend = client.backend
        self.registry = registry
        self.settings = settings
        self.clock = client.clock
        self._running: dict[str, _Run] = {}
        self._stopping = anyio.Event()
        self._idle_scope: anyio.CancelScope | None = None
        self._slot_freed = asyncio.Event()
        self._acks: list[Finish] = []
        self._ack_ready = asyncio.Event()
        # Ack calls in flight, at most ``_lanes`` at once, each claiming for at most
        # ``_per_call`` freed slots: the slots fall into cohorts that take turns, so that the
        # handlers of one run while the backend serves the call of another.
        lanes = ACK_LANES if client.backend.capabilities.served_out_of_process else 1
        self._lanes = max(1, min(settings.concurrency, lanes))
        self._per_call = -(-settings.concurrency // self._lanes)
        self._flights = 0
        self._flight_ended = asyncio.Event()
        self._sending = 0  # outcomes in the calls in flight
        self._claiming = 0  # slots reserved by a claim in flight (claim loop or ack call)
        self._jobs: anyio.abc.TaskGroup | None = None  # helper tasks, while runs may start
        self._accepting = False  # leases start runs (else they are released)
        self._tasks: set[asyncio.Task[None]] = set()  # the runs' tasks
        self._failure: BaseException | None = None  # a run task's unexpected error
        self._limiter = anyio.CapacityLimiter(settings.concurrency)
        self._rotation = 0
        self._started_at = self.clock()
        self.processed = 0  # runs finished by this worker, any outcome
        self.recycle_reason: str | None = None  # why it stopped to be recycled, if it did
        # Built here so that bad [plugins.*] options fail the start, not the first job.
        self.plugins = registry.build_plugins(settings.plugin_options)
        isolated = [spec for spec in registry if spec.isolation == "process"]
        self._pool = ProcessPool((spec.func.__module__ for spec in isolated),
                                 settings.concurrency) if isolated else None

    @property
    def busy(self) -> int:
        """Jobs running now."""
        return len(self._running)

    def stop(self) -> None:
        """Stop claiming and begin the drain. Safe to call more than once, from the loop."""
        self._stopping.set()
        if self._idle_scope is not None:
            self._idle_scope.cancel()
        self._slot_freed.set()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        """Start the plugins, work until ``stop``; then drain, release what is left, flush acks,
        stop the plugins and return."""
        started: list[Plugin] = []
        try:
            for plugin in self.plugins.values():
                await plugin.start()
                started.append(plugin)
            await self._work(task_status)
        finally:
            if self._pool is not None:
                self._pool.close()
            with anyio.CancelScope(shield=True):
                for plugin in reversed(started):
                    try:
                        await plugin.stop()
                    except Exception:  # one plugin's failure must not keep the others open
                        logger.exception("plugin %s failed to stop", plugin.name)

    async def _work(self, task_status: anyio.abc.TaskStatus[None]) -> None:
        settings = self.settings
        logger.info("worker %s started: queues=%s concurrency=%d", settings.worker_id,
                    ",".join(settings.queues), settings.concurrency)
        async with anyio.create_task_group() as service:
            service.start_soon(self._heartbeat_loop)
            service.start_soon(self._ack_loop)
            service.start_soon(self._lag_watchdog)
            service.start_soon(self._progress_loop)
            if settings.max_memory_mb:
                service.start_soon(self._memory_watch)
            task_status.started()
            async with anyio.create_task_group() as jobs:
                self._jobs = jobs
                self._accepting = True
                try:
                    await self._claim_loop()
                    await self._drain()
                    await self._join_runs()
                finally:
                    self._accepting = False
                    self._jobs = None
                    await self._abandon_runs()
            if self._failure is not None:
                raise self._failure
            # Every outcome must reach the backend before the process goes: wait for an ack
            # call in flight (even one retrying through an outage), for a bounded time.
            with anyio.move_on_after(settings.grace.total_seconds() + 10):
                await self._flush_acks()
            if self._acks or self._sending:
                logger.error("worker %s: %d outcomes could not be recorded; those jobs will "
                             "run again when their leases expire", settings.worker_id,
                             len(self._acks) + self._sending)
            service.cancel_scope.cancel()
        with anyio.move_on_after(2, shield=True):
            try:
                await self.backend.remove_worker(settings.worker_id)
            except BackendError:
                logger.debug("could not deregister worker %s", settings.worker_id)
        logger.info("worker %s stopped after %d jobs", settings.worker_id, self.processed)

    # -- claiming -------------------------------------------------------------------------------

    def _queues(self) -> Sequence[str]:
        queues = self.settings.queues
        if len(queues) < 2:
            return queues
        self._rotation = (self._rotation + 1) % len(queues)
        return queues[self._rotation :] + queues[: self._rotation]

    def _free(self) -> int:
        """Slots neither running a job nor reserved by a claim in flight."""
        return self.settings.concurrency - len(self._running) - self._claiming

    def _acks_claim(self) -> bool:
        """Whether buffered outcomes are about to be sent: their call claims for the freed
        slots too (``finish_and_claim``), so the claim loop leaves those to it. Slots that an
        ack call in flight claims for are already reserved (``_claiming``)."""
        return bool(self._acks)

    async def _claim_loop(self) -> None:
        settings = self.settings
        backoff = 0.05
        while not self._stopping.is_set():
            if self._free() <= 0 or self._acks_claim():
                self._slot_freed = asyncio.Event()
                if (self._free() <= 0 or self._acks_claim()) and not self._stopping.is_set():
                    await self._slot_freed.wait()
                continue
            free = min(self._free(), self._per_call)
            self._claiming += free
            try:
                leases = await self.backend.claim(
                    self._queues(), limit=free, lease_for=settings.lease,
                    worker_id=settings.worker_id, now=self.clock(),
                )
            except BackendError as exc:
                logger.warning("worker %s: claim failed (%s); retrying in %.2fs",
                               settings.worker_id, exc, backoff)
                await self._idle(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            finally:
                self._claiming -= free
            backoff = 0.05
            self._start(leases)
            if not leases:
                await self._idle(None)

    def _start(self, leases: Sequence[Lease]) -> None:
        """Run the jobs of ``leases``, each in its own task; when the worker is stopping (or
        no longer starts runs), hand them back instead, refunded, for another worker."""
        loop = asyncio.get_running_loop() if leases else None
        for lease in leases:
            if not self._accepting or self._stopping.is_set():
                logger.info("job %s released back to %s", lease.job_id, lease.job.queue)
                self._acks.append(Finish(lease, Outcome.RELEASED))
                self._ack_ready.set()
                continue
            run = _Run(lease=lease, ctx=Context(
                job=lease.job, lease_token=lease.token, worker_id=self.settings.worker_id,
                plugins=self.plugins))
            self._running[lease.job.id] = run
            assert loop is not None  # noqa: S101 - set when there are leases
            task = loop.create_task(self._execute(run))
            self._tasks.add(task)
            task.add_done_callback(self._run_done)

    def _run_done(self, task: asyncio.Task[None]) -> None:
        """A run's task ended: an error there is a bug of the worker's own (handler errors are
        outcomes): stop, and let ``run`` raise it once the others are done."""
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            logger.error("worker %s: a run ended with an unexpected error; stopping",
                         self.settings.worker_id, exc_info=error)
            if self._failure is None:
                self._failure = error
            self.stop()

    async def _join_runs(self) -> None:
        """Wait until every run's task has ended."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def _abandon_runs(self) -> None:
        """When the worker itself is torn down (cancelled or failed) with runs still going:
        cancel their tasks and wait a moment for them. Their outcomes are not recorded; the
        leases expire and the reaper hands the jobs out again."""
        if not self._tasks:
            return
        for task in self._tasks:
            task.cancel()
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await self._join_runs()

    async def _idle(self, sleep: float | None) -> None:
        """Wait for new work (or ``sleep`` seconds); ``stop`` cuts it short."""
        with anyio.CancelScope() as scope:
            self._idle_scope = scope
            if self._stopping.is_set():
                return
            if sleep is not None:
                await anyio.sleep(sleep)
            else:
                try:
                    await self.backend.wait_for_jobs(self.settings.queues,
                                                     timeout=self.settings.idle_wait)
                except BackendError as exc:
                    logger.warning("worker %s: waiting for jobs failed (%s)",
                                   self.settings.worker_id, exc)
                    await anyio.sleep(0.5)
        self._idle_scope = None

    # -- running --------------------------------------------------------------------------------

    async def _execute(self, run: _Run) -> None:
        job = run.lease.job
        metrics.job_started(job.queue, job.handler)
        started = time.perf_counter()
        finish: Finish | None = None
        try:
            finish = await self._call(run)
            if run.ctx._progress is not None and not run.lost:  # its last word, before the end
                await self._send_progress([run])
        finally:
            self._running.pop(job.id, None)
            if finish is not None and not run.lost:
                self._acks.append(finish)
                self._ack_ready.set()
            # After the ack is buffered: the claim loop leaves the freed slot to the ack call.
            self._slot_freed.set()
        self.processed += 1
        if self.settings.max_jobs and self.processed >= self.settings.max_jobs:
            self.recycle(f"it finished {self.processed} jobs (worker.max_jobs)")
        took = time.perf_counter() - started
        if finish.outcome is Outcome.COMPLETED:
            metrics.job_completed(job.queue, job.handler, took)
        elif finish.outcome in (Outcome.RETRY, Outcome.DEAD):
            metrics.job_failed(job.queue, job.handler, took)
            if finish.outcome is Outcome.DEAD:
                metrics.job_dead(job.queue, job.handler)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("job %s %s (%s attempt %d) in %.3fs", job.id, finish.outcome,
                         job.handler, job.attempt, took)
        if run.lost:
            logger.warning("job %s: lease lost while running; its outcome is discarded", job.id)

    async def _call(self, run: _Run) -> Finish:
        """Run the handler and turn whatever happens into a Finish; with tracing, inside the
        attempt's span (``monoq.tracing``), which records the outcome."""
        tracing = self.client.tracing
        if tracing is None:
            return await self._call_handler(run)
        with tracing.consume(run.lease.job, self.settings.worker_id) as span:
            finish = await self._call_handler(run)
            span.record(finish, lost=run.lost)
            return finish

    async def _call_handler(self, run: _Run) -> Finish:
        """Run the handler and turn whatever happens into a Finish."""
        lease = run.lease
        job = lease.job
        spec = self.registry.find(job.handler)
        if spec is None:
            return self._failed(lease, ErrorInfo("HandlerNotFound",
                                                 f"no handler named {job.handler!r} on worker "
                                                 f"{self.settings.worker_id}"))
        result: Any = None
        # The timeout is a timer that notes where the handler is, then cancels it (run.cancel);
        # a heartbeat or a graceful stop cancels it the same way, after recording why in
        # run.stop_reason / run.lost.
        run.task = asyncio.current_task()
        timer = asyncio.get_running_loop().call_later(job.timeout, self._timed_out, run)
        result_json: bytes | None = None  # already JSON when a child process answered
        try:
            run.in_handler = True
            try:
                if run.cancel_called:  # asked to stop before it began
                    raise asyncio.CancelledError
                if self._pool is not None and spec.isolation == "process":
                    result_json = await self._pool.run(job, lease.token,
                                                       self.settings.worker_id)
                elif spec.is_async:
                    result = await spec.func(run.ctx, job.payload)
                else:
                    result = await anyio.to_thread.run_sync(
                        functools.partial(_in_thread, run, spec.func),
                        abandon_on_cancel=True, limiter=self._limiter,
                    )
            except asyncio.CancelledError:
                if not run.cancel_called:
                    raise  # not the worker's doing: the worker itself is being torn down
                run.cancelled_caught = True
            finally:
                run.in_handler = False
                if run.interrupted and run.task is not None and run.task.cancelling():
                    run.task.uncancel()  # the cancellation was ours, and it is handled
        except HandlerProcessError as exc:
            logger.warning("job %s (%s attempt %d) failed in its process: %s: %s", job.id,
                           job.handler, job.attempt, exc.type_name, exc)
            return self._failed(lease, ErrorInfo(exc.type_name, str(exc),
                                                 exc.remote_traceback))
        except HandlerProcessDied as exc:
            logger.warning("job %s (%s attempt %d): %s", job.id, job.handler, job.attempt, exc)
            return self._failed(lease, ErrorInfo("HandlerProcessDied", str(exc)))
        except ResultNotJson as exc:
            return Finish(lease, Outcome.DEAD, error=ErrorInfo(
                "SerializationError", f"the handler's result is not JSON: {exc}"))
        except Retry as exc:
            return self._failed(lease, _error(exc, with_traceback=False), after=exc.after)
        except SkipRetry as exc:
            return Finish(lease, Outcome.DEAD, error=_error(exc, with_traceback=False))
        except Exception as exc:  # noqa: BLE001 - the handler boundary: every error is an outcome
            logger.warning("job %s (%s attempt %d) failed: %s: %s", job.id, job.handler,
                           job.attempt, type(exc).__name__, exc)
            return self._failed(lease, _error(exc))
        finally:
            timer.cancel()
        at = f"; it was at {run.where}" if run.where else ""
        if run.timed_out and run.cancelled_caught and run.stop_reason is None \
                and not run.lost:
            run.ctx._signal_stop()
            killed = "; its process was killed" if spec.isolation == "process" else ""
            self._watch_thread(run, "its timeout passed")
            return self._failed(lease, ErrorInfo(
                "TimeoutError", f"the job ran longer than its timeout of {job.timeout:g}s"
                                f"{killed}{at}", run.stack))
        if run.cancelled_caught or run.stop_reason is not None:
            run.ctx._signal_stop()
            if run.stop_reason is Outcome.RELEASED:
                self._watch_thread(run, "the worker shut down")
                return Finish(lease, Outcome.RELEASED,
                              error=ErrorInfo("Shutdown", "released by a graceful shutdown"
                                              f"{at}", run.stack))
            self._watch_thread(run, "it was cancelled")
            return Finish(lease, Outcome.CANCELLED,
                          error=ErrorInfo("Cancelled", f"cancelled while running{at}",
                                          run.stack))
        if result_json is not None:
            return Finish(lease, Outcome.COMPLETED, result_json=result_json)
        try:
            result_json = json_encode(result)
        except SerializationError as exc:
            return Finish(lease, Outcome.DEAD, error=ErrorInfo(
                "SerializationError", f"the handler's result is not JSON: {exc}"))
        return Finish(lease, Outcome.COMPLETED, result_json=result_json)

    def _failed(self, lease: Lease, error: ErrorInfo, *, after: timedelta | None = None
                ) -> Finish:
        retry_at = self.settings.retry_policy.next_retry_at(lease.job, self.clock(), after=after)
        if retry_at is None:
            logger.warning("job %s dead after %d attempts: %s", lease.job.id, lease.job.attempt,
                           error)
            return Finish(lease, Outcome.DEAD, error=error)
        return Finish(lease, Outcome.RETRY, error=error, retry_at=retry_at)

    # -- heartbeats and acks ----------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        settings = self.settings
        while True:
            await self._beat()
            await anyio.sleep(settings.heartbeat.total_seconds())

    async def _beat(self) -> None:
        settings = self.settings
        now = self.clock()
        runs = list(self._running.values())
        try:
            if runs:
                statuses = await self.backend.extend([r.lease for r in runs],
                                                     lease_for=settings.lease, now=now)
                for run, status in zip(runs, statuses, strict=True):
                    if status is LeaseStatus.LOST:
                        run.lost = True
                        self._note_stack(run, "it lost its lease")
                        logger.warning("job %s lost its lease while running (another worker "
                                       "may run it); stopping it. %s", run.lease.job_id,
                                       run.stack or "")
                        run.ctx._signal_stop()
                        run.cancel()
                        self._watch_thread(run, "it lost its lease")
                        if run.stack is not None:  # into the record the reaper closed
                            job = run.lease.job
                            await self.backend.note_attempt(job.id, job.attempt,
                                                            settings.worker_id, run.stack)
                    elif status is LeaseStatus.STACK_REQUESTED:
                        await self._answer_stack(run, now)
                    elif status is LeaseStatus.CANCEL_REQUESTED and run.stop_reason is None:
                        logger.info("job %s cancelled while running; stopping it", run.lease.job_id)
                        run.stop_reason = Outcome.CANCELLED
                        self._note_stack(run, "it was cancelled")
                        run.ctx._signal_stop()
                        run.cancel()
            await self.backend.report_worker(self._info(now), ttl=settings.heartbeat * 3)
        except BackendError as exc:
            logger.warning("worker %s: heartbeat failed: %s", settings.worker_id, exc)

    def _info(self, now: datetime) -> WorkerInfo:
        settings = self.settings
        return WorkerInfo(
            id=settings.worker_id, host=socket.gethostname(), pid=os.getpid(),
            roles=settings.roles, queues=settings.queues, concurrency=settings.concurrency,
            busy=len(self._running), started_at=self._started_at, last_seen=now,
            processed=self.processed,
        )

    async def _ack_loop(self) -> None:
        """Send buffered outcomes as soon as they are there, in up to ``_lanes`` calls at once
        (each also claims for the slots its outcomes freed)."""
        async with anyio.create_task_group() as flights:
            while True:
                await self._ack_ready.wait()
                self._ack_ready = asyncio.Event()
                while self._acks and self._flights < self._lanes:
                    flights.start_soon(self._send_acks, *self._take_acks())

    def _take_acks(self) -> tuple[list[Finish], int]:
        """Take the next batch out of the buffer for a call about to start, and reserve the
        free slots it will claim for (at most ``_per_call``; none while stopping) now, so that
        the claim loop does not claim them in the meantime."""
        batch = self._acks[:500]
        del self._acks[: len(batch)]
        self._flights += 1
        self._sending += len(batch)
        limit = 0 if self._stopping.is_set() else max(0, min(self._free(), self._per_call))
        self._claiming += limit
        return batch, limit

    async def _flush_acks(self) -> None:
        """Send every outcome: wait for the calls in flight, then send what is left."""
        while self._flights or self._acks:
            if self._flights:
                self._flight_ended = asyncio.Event()
                await self._flight_ended.wait()
            else:
                await self._send_acks(*self._take_acks())

    async def _send_acks(self, batch: list[Finish], limit: int) -> None:
        """Send ``batch``, claiming for up to ``limit`` reserved slots, until the backend
        answers; on a backend error keep it and try again.

        The batch is back at the head of the buffer if the call is cancelled or interrupted
        before the backend answered, so nothing is lost.
        """
        settings = self.settings
        backoff = 0.05
        sent = False
        try:
            while True:
                # The same call claims for the free slots (none while stopping), BullMQ's
                # moveToFinished way: a freed slot costs one round trip, not two.
                try:
                    applied, leases = await self.backend.finish_and_claim(
                        batch, self._queues(), limit=0 if self._stopping.is_set() else limit,
                        lease_for=settings.lease, worker_id=settings.worker_id,
                        now=self.clock(),
                    )
                except BackendError as exc:
                    logger.warning("worker %s: ack of %d jobs failed (%s); retrying",
                                   settings.worker_id, len(batch), exc)
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                sent = True
                break
        finally:
            self._claiming -= limit
            self._flights -= 1
            self._sending -= len(batch)
            if not sent:
                self._acks[0:0] = batch
            self._flight_ended.set()
            self._slot_freed.set()  # the claim loop takes over the slots left free
            if self._acks:
                self._ack_ready.set()  # outcomes that waited for a free lane
        self._start(leases)
        for item, ok in zip(batch, applied, strict=True):
            if not ok:
                metrics.stale_ack()
                logger.warning("job %s: %s refused, the lease was lost (stale token)",
                               item.lease.job_id, item.outcome)

    async def _drain(self) -> None:
        """Wait up to the grace period for running jobs, then release the rest."""
        if not self._running:
            return
        logger.info("worker %s draining %d running jobs (grace %.0fs)", self.settings.worker_id,
                    len(self._running), self.settings.grace.total_seconds())
        with anyio.move_on_after(self.settings.grace.total_seconds()):
            while self._running:
                self._slot_freed = asyncio.Event()
                await self._slot_freed.wait()
        for run in list(self._running.values()):
            logger.info("job %s released back to %s", run.lease.job_id, run.lease.job.queue)
            run.stop_reason = Outcome.RELEASED
            run.ctx._signal_stop()
            run.cancel()

    async def _progress_loop(self) -> None:
        """Send the progress the running handlers reported, at most once per interval in one
        backend call: a tight loop of ``ctx.progress`` only overwrites what is pending."""
        while True:
            await anyio.sleep(self.settings.progress_interval)
            runs = [run for run in self._running.values() if run.ctx._progress is not None]
            if runs:
                await self._send_progress(runs)

    async def _send_progress(self, runs: Sequence[_Run]) -> None:
        items = []
        for run in runs:
            report = run.ctx._take_progress()
            if report is not None:
                items.append(Progress(run.lease, report[0], report[1]))
        if not items:
            return
        try:
            await self.backend.report_progress(items, now=self.clock())
        except BackendError as exc:  # progress is informative: a lost report is not retried
            logger.warning("worker %s: progress of %d jobs not stored: %s",
                           self.settings.worker_id, len(items), exc)

    def _timed_out(self, run: _Run) -> None:
        """The job's timer: note where the handler is, then cancel it."""
        if run.lease.job.id not in self._running or run.cancel_called:
            return
        run.timed_out = True
        self._note_stack(run, f"its timeout ({run.lease.job.timeout:g}s) passed")
        run.ctx._signal_stop()
        run.cancel()

    async def _answer_stack(self, run: _Run, now: datetime) -> None:
        """``monoq job stack``: send where the handler is now (the run goes on untouched)."""
        stack, kind = None, "thread"
        if run.thread is not None:
            stack = thread_stack(run.thread)
        elif run.task is not None:
            stack, kind = task_stack(run.task), "asyncio task"
        text = (render(stack, f"Where the handler is at {now.isoformat()} ({kind} stack, "
                              "outermost call first):") if stack else
                "No stack to show: the handler runs in a child process "
                "(isolation=\"process\") or has just ended.")
        await self.backend.put_stack(run.lease, text, now=now)

    def _note_stack(self, run: _Run, why: str) -> None:
        """Record where the handler is now (its thread's or its task's stack) on ``run``."""
        if run.stack is not None:
            return
        stack = None
        kind = "thread"
        if run.thread is not None:
            stack = thread_stack(run.thread)
        elif run.task is not None:
            stack, kind = task_stack(run.task), "asyncio task"
        if stack:
            run.where = where(stack)
            run.stack = render(stack, f"Where the handler was when {why} ({kind} stack, "
                                      "outermost call first):")

    def _watch_thread(self, run: _Run, why: str) -> None:
        """A sync handler's thread cannot be stopped, only abandoned: if it still runs after
        the stop grace, say so, with where it is then."""
        if run.thread is None or self._jobs is None:
            return
        self._jobs.start_soon(self._report_lingering, run, why)

    async def _report_lingering(self, run: _Run, why: str) -> None:
        await anyio.sleep(self.settings.stop_grace)
        ident = run.thread
        if ident is None:
            return
        stack = thread_stack(ident)
        logger.warning(
            "job %s: its sync handler %s still runs %.0fs after %s; a thread cannot be killed "
            "(declare the handler with isolation=\"process\" for a hard stop). %s",
            run.lease.job_id, run.lease.job.handler, self.settings.stop_grace, why,
            render(stack, "It is at:") if stack else "")

    def recycle(self, reason: str) -> None:
        """Stop claiming and drain, so that the process can start afresh (the supervisor
        sees ``recycle_reason``). Once only."""
        if self.recycle_reason is not None or self._stopping.is_set():
            return
        self.recycle_reason = reason
        logger.info("worker %s recycling: %s; draining %d running jobs", self.settings.worker_id,
                    reason, len(self._running))
        self.stop()

    async def _memory_watch(self) -> None:
        """Recycle when the process's resident memory passes ``max_memory_mb``."""
        limit = self.settings.max_memory_mb
        while True:
            await anyio.sleep(1.0)
            rss = resident_mib()
            if rss is not None and rss > limit:
                self.recycle(f"its memory ({rss:.0f} MiB) passed worker.max_memory_mb "
                             f"({limit:g} MiB)")
                return

    async def _lag_watchdog(self) -> None:
        """Warn when something blocks the event loop (a sync call in an async handler)."""
        interval = 0.25
        while True:
            before = time.perf_counter()
            await anyio.sleep(interval)
            lag = time.perf_counter() - before - interval
            if lag > self.settings.loop_lag_warning:
                names = sorted({r.lease.job.handler for r in self._running.values()})
                logger.warning("event loop blocked for %.2fs; running handlers: %s. Blocking "
                               "code belongs in a plain def handler (run in a thread).", lag,
                               ", ".join(names) or "none")
