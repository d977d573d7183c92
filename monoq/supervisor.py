"""The supervisor: runs the configured roles in one task group over one backend.

It opens the backend, starts the roles in order (scheduler, worker, api), restarts a role that
crashes with capped backoff, and owns the signals: the first SIGTERM/SIGINT stops intake (the
API stops accepting, the worker stops claiming), lets running jobs finish within the grace
period, releases the rest back to their queues and returns exit code 0; a second signal
exits at once.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol

import anyio
import anyio.abc

from monoq.client import Client, client_from_config
from monoq.config import Config, ScheduleConfig
from monoq.core.backend import Backend, Doctor, ServerTime
from monoq.core.clock import ServerClock
from monoq.core.codec import json_encode
from monoq.core.loop import loop_name
from monoq.core.models import JobState, MisfirePolicy, OverlapPolicy, Schedule
from monoq.errors import BackendError, BackendNotShared
from monoq.health import serve_health
from monoq.registry import Registry
from monoq.scheduler import Scheduler, SchedulerSettings
from monoq.worker import Worker, WorkerSettings, default_worker_id

logger = logging.getLogger(__name__)

ROLE_ORDER = ("scheduler", "worker", "api")
EXIT_FORCED = 1
EXIT_RECYCLE = 75  # EX_TEMPFAIL: a worker drained to be recycled; start it again


class Role(Protocol):
    """What the supervisor runs: ``run`` until ``stop``, then drain and return."""

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = ...) -> None: ...

    def stop(self) -> None: ...


def worker_settings(
    config: Config, roles: tuple[str, ...] = ("worker",), *, worker_id: str | None = None
) -> WorkerSettings:
    """``[worker]`` and ``[retry]`` as WorkerSettings."""
    w = config.worker
    return WorkerSettings(
        queues=tuple(w.queues),
        concurrency=w.concurrency,
        lease=timedelta(seconds=w.lease_seconds),
        heartbeat=timedelta(seconds=w.heartbeat_seconds),
        grace=timedelta(seconds=w.grace_seconds),
        worker_id=worker_id or w.id or default_worker_id(),
        retry_policy=config.retry_policy(),
        roles=roles,
        plugin_options=config.plugins,
        max_jobs=w.max_jobs,
        max_memory_mb=w.max_memory_mb,
    )


def scheduler_settings(config: Config) -> SchedulerSettings:
    """``[scheduler]``, ``[retention]``, ``[audit]`` and ``[retry]`` as SchedulerSettings."""
    s, r = config.scheduler, config.retention
    return SchedulerSettings(
        retry_policy=config.retry_policy(),
        reap_margin=timedelta(seconds=s.reap_margin_seconds),
        max_sleep=timedelta(seconds=s.max_sleep_seconds),
        batch_size=s.batch_size,
        retention={
            JobState.COMPLETED: timedelta(seconds=r.completed_seconds),
            JobState.DEAD: timedelta(seconds=r.dead_seconds),
            JobState.CANCELLED: timedelta(seconds=r.cancelled_seconds),
        },
        retention_interval=timedelta(seconds=r.interval_seconds),
        misfire_grace=timedelta(seconds=s.misfire_grace_seconds),
        runs_per_schedule=r.runs_per_schedule,
        audit_retention=(timedelta(seconds=config.audit.retention_seconds)
                         if config.audit.retention_seconds else None),
        config_schedules=tuple(schedule_from_config(item) for item in config.schedules),
    )


def schedule_from_config(item: ScheduleConfig) -> Schedule:
    """A ``[[schedules]]`` entry as the Schedule the backend stores (origin ``config``)."""
    return Schedule(
        id=item.id,
        handler=item.handler,
        cron=item.cron,
        every=item.every,
        timezone=item.timezone,
        payload_json=json_encode(item.payload),
        queue=item.queue,
        priority=item.priority,
        max_retries=item.max_retries,
        timeout=item.timeout_seconds,
        enabled=item.enabled,
        overlap=OverlapPolicy(item.overlap),
        misfire=MisfirePolicy(item.misfire),
        origin="config",
    )


class Supervisor:
    """Runs ``roles`` over ``client``'s backend until stopped.

    Given no client, it builds one from ``config`` and refuses a backend that cannot be shared
    (memory://) unless every role runs here, since nothing else could reach it.
    """

    def __init__(
        self,
        config: Config,
        *,
        roles: tuple[str, ...] | None = None,
        client: Client | None = None,
        registry: Registry | None = None,
        handle_signals: bool = True,
        restart_backoff: float = 1.0,
    ) -> None:
        self.config = config
        self.roles = tuple(r for r in ROLE_ORDER if r in (roles or config.monoq.roles))
        self.registry = registry or (client.registry if client else None) or Registry.discover(
            config.monoq.imports)
        if "worker" in self.roles:  # bad [plugins.*] options stop the start, with the key named
            self.registry.build_plugins(config.plugins)
        self._owns_backend = client is None
        self.client = client or client_from_config(config, registry=self.registry)
        self.handle_signals = handle_signals
        self.restart_backoff = restart_backoff
        self.active: dict[str, Role] = {}
        self.restarts: dict[str, int] = dict.fromkeys(self.roles, 0)
        self._stopping = False
        self._forced = False
        self._stop_event = anyio.Event()
        self.worker_id = config.worker.id or default_worker_id()
        self.recycling: str | None = None  # why the process stops to start afresh

    def check_backend(self) -> None:
        """Refuse a process-local backend when roles are split over processes."""
        backend = self.client.backend
        if self._owns_backend and not backend.capabilities.shared_across_processes:
            missing = [r for r in ROLE_ORDER if r not in self.roles]
            if missing:
                raise BackendNotShared(
                    f"{backend.url} keeps its jobs inside one process and cannot be shared, so "
                    f"the {', '.join(missing)} role(s) in another process could never see them. "
                    "Run every role in one process (monoq run --roles api,worker,scheduler) or "
                    "use a shared backend (sqlite:///./monoq.db on one host, redis:// across hosts)."
                )

    def _factory(self, name: str) -> Callable[[], Role]:
        config = self.config
        if name == "scheduler":
            return lambda: Scheduler(self.client, scheduler_settings(config))
        if name == "worker":
            settings = worker_settings(config, self.roles, worker_id=self.worker_id)
            return lambda: Worker(self.client, self.registry, settings)
        if name == "api":
            from monoq.api.role import ApiRole  # litestar loads only when serving

            def make_api() -> Role:
                return ApiRole(self.client, config.api, registry=self.registry,
                               ui_config=config.ui)

            return make_api
        raise ValueError(f"unknown role {name!r}")

    def stop(self) -> None:
        """Begin a graceful stop: intake first, then workers drain, then the scheduler."""
        if self._stopping:
            return
        self._stopping = True
        self._stop_event.set()
        for name in reversed(ROLE_ORDER):
            role = self.active.get(name)
            if role is not None:
                role.stop()

    async def run(self) -> int:
        """Run until stopped; answers the process exit code (0 after a graceful stop)."""
        self.check_backend()
        # [monoq] health_port: /healthz, /readyz, /metrics of a process without the api role,
        # listening before the backend is connected and closed last.
        async with serve_health(self.config, self.client.backend, roles=self.roles,
                                restarts=self.restarts, active=self.active,
                                stopping=lambda: self._stopping):
            return await self._run()

    async def _run(self) -> int:
        backend = self.client.backend
        await self._connect()
        logger.info("monoq running roles %s on %s (event loop: %s)", ",".join(self.roles),
                    backend.url, loop_name())
        await self._check_server(backend)
        try:
            async with anyio.create_task_group() as tg:
                if self.handle_signals:
                    tg.start_soon(self._watch_signals, tg.cancel_scope)
                if isinstance(backend, ServerTime):
                    await tg.start(self._sync_clock, backend)
                # The api role is built before any role starts: importing litestar and building
                # the app holds the loop for most of a second, which would stall running jobs.
                first = {name: self._factory(name)() for name in self.roles if name == "api"}
                async with anyio.create_task_group() as roles:
                    for name in self.roles:
                        await roles.start(self._supervise, name, first.get(name))
                tg.cancel_scope.cancel()
        finally:
            if self._owns_backend:
                with anyio.move_on_after(5, shield=True):
                    await backend.aclose()
        if self._forced:
            logger.warning("stopped at once by a second signal; running jobs were not released")
            return EXIT_FORCED
        if self.recycling is not None:
            logger.info("monoq stopped to be recycled: %s", self.recycling)
            return EXIT_RECYCLE
        logger.info("monoq stopped")
        return 0

    async def _sync_clock(self, backend: ServerTime, *,
                          task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                          ) -> None:
        """Keep the roles on the backend's clock: measure the offset now and every minute."""
        clock = ServerClock()
        started = False
        while True:
            try:
                offset = await clock.sync(backend.server_now)
                if abs(offset) > timedelta(seconds=1):
                    logger.warning("this host's clock is %.3fs off the backend's; monoq uses "
                                   "the backend's clock", offset.total_seconds())
            except BackendError as exc:
                logger.warning("could not read the backend's clock: %s", exc)
            if not started:
                self.client.clock = clock  # offset 0 until a sync succeeds
                started = True
                task_status.started()
            await anyio.sleep(60)

    @staticmethod
    async def _check_server(backend: Backend) -> None:
        """Say loudly at start what ``monoq doctor`` would flag (eviction, no persistence)."""
        if not isinstance(backend, Doctor):
            return
        try:
            checks = await backend.doctor()
        except BackendError as exc:
            logger.warning("could not check the backend's settings: %s", exc)
            return
        for check, level, message in checks:
            if level == "error":
                logger.error("backend check %s FAILED: %s (see `monoq doctor`)", check, message)
            elif level == "warn":
                logger.warning("backend check %s: %s", check, message)

    async def _connect(self) -> None:
        backoff = 0.5
        while True:
            try:
                await self.client.backend.connect()
                return
            except BackendError as exc:
                if self._stopping:
                    raise
                logger.warning("backend %s unavailable (%s); retrying in %.1fs",
                               self.client.backend.url, exc, backoff)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _supervise(self, name: str, first: Role | None = None, *,
                         task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                         ) -> None:
        make = self._factory(name)
        started = False
        backoff = self.restart_backoff
        while not self._stopping:
            role, first = first or make(), None
            self.active[name] = role
            began = anyio.current_time()
            try:
                async with anyio.create_task_group() as inner:
                    await inner.start(role.run)
                    if not started:
                        started = True
                        task_status.started()
                    if self._stopping:
                        role.stop()
            except Exception:
                if self._stopping:
                    logger.exception("role %s failed while stopping", name)
                    break
                if anyio.current_time() - began > 60:
                    backoff = self.restart_backoff  # it ran fine for a while: start over
                self.restarts[name] += 1
                logger.exception("role %s crashed; restarting in %.1fs", name, backoff)
                with anyio.move_on_after(backoff):
                    await self._stop_event.wait()
                backoff = min(backoff * 2, 30.0)
                continue
            reason = getattr(role, "recycle_reason", None)
            if reason is not None and not self._stopping:  # a worker drained to be recycled
                self.recycling = reason
                self.stop()
            elif not self._stopping:
                logger.error("role %s returned without being stopped; restarting", name)
                self.restarts[name] += 1
            backoff = self.restart_backoff
        self.active.pop(name, None)
        if not started:
            task_status.started()

    async def _watch_signals(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if not self._stopping:
                    logger.info("%s received: stopping intake, draining running jobs "
                                "(a second signal exits at once)", signal.Signals(signum).name)
                    self.stop()
                else:
                    logger.warning("%s received again: exiting now", signal.Signals(signum).name)
                    self._forced = True
                    scope.cancel()
                    return

