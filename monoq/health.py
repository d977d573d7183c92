"""The health and metrics listener of a process without the api role.

Only the api role serves HTTP, so a worker-only or scheduler-only process (``monoq run --roles
worker``) would have no ``/healthz`` or ``/readyz`` for its orchestrator's probes and would
export its Prometheus families (``monoq.metrics``: jobs started, completed, failed, their
durations, lease reclaims, stale acks) nowhere. With ``[monoq] health_port`` set (0, the
default, means no listener) such a process serves, on ``health_host:health_port``:

- ``GET /healthz`` (liveness): 200 while the process is alive, which means both
  1. the event loop that runs the roles answers: this listener runs on that same loop, so a
     loop blocked by a handler cannot answer and the probe's own timeout fails it; and
  2. no role is in a crash loop: no role of this process was restarted by the supervisor
     ``CRASH_LOOP_RESTARTS`` (3) or more times in the last ``CRASH_LOOP_WINDOW`` (300) seconds.
     A crash is an exception escaping the role (the roles retry backend errors themselves, so
     an unreachable backend is not a crash) or the role returning without being stopped.
  It does not depend on the backend: a Redis outage makes the process unready, never
  "dead" (restarting workers because Redis is down would only hand their jobs back). It stays
  200 while the process starts (waiting for the backend) and while it drains after SIGTERM.
  Otherwise 503 ``application/problem+json`` naming the roles.
- ``GET /readyz`` (readiness): 200 when every role of the process has started, the process is
  not stopping (a worker that received SIGTERM drains: it claims nothing more) and the backend
  answers ``ping`` within ``PROBE_TIMEOUT`` (5) seconds; else 503 with ``Retry-After``.
- ``GET /metrics``: this process's Prometheus registry, in the text format: the worker and
  scheduler families of ``monoq.metrics`` (what this process counted), ``monoq_role_restarts_
  total{role}`` (crash restarts, the crash-loop signal above), and prometheus-client's
  ``process_*``, ``python_info`` and ``python_gc_*`` families. A scrape never touches the
  backend (queue depths are the api's ``/metrics``).

Security: the listener binds to ``127.0.0.1`` unless ``health_host`` names another address
(``0.0.0.0`` for a kubelet or a Prometheus on another host). None of the three paths needs a
token, ``/metrics`` included: what it shows is counters labelled with queue and handler names,
no payload, job id or secret, and Prometheus' pod scraping has no way to send monoq's tokens.
Who may reach the port is the bind address's and the network policy's business.

In a process that runs the api role, the api's server already serves these three paths on
``api.port`` (its ``/metrics`` behind a read token when tokens are configured), so
``health_port`` is ignored there, with a log line that says so: one config file can then be
shared by every role's processes.

The supervisor runs it around everything else (``async with serve_health(...)``): it listens
before the backend is connected, so a probe never finds the port closed while the process
waits for Redis, and it is the last thing to close.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.abc
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

import monoq.metrics as role_metrics
from monoq.config import Config
from monoq.core.backend import Backend
from monoq.errors import BackendError

if TYPE_CHECKING:
    from litestar import Litestar

__all__ = [
    "CRASH_LOOP_RESTARTS",
    "CRASH_LOOP_WINDOW",
    "PROBE_TIMEOUT",
    "HealthListener",
    "HealthState",
    "RoleRestartsCollector",
    "create_health_app",
    "health_registry",
    "serve_health",
]

logger = logging.getLogger(__name__)

CRASH_LOOP_RESTARTS: Final = 3  # restarts of one role within the window that make it unhealthy
CRASH_LOOP_WINDOW: Final = 300.0  # seconds
PROBE_TIMEOUT: Final = 5.0  # seconds /readyz waits for the backend's ping
RETRY_AFTER: Final = "5"
SAMPLE_INTERVAL: Final = 1.0  # seconds between two readings of the supervisor's restart counts
SHUTDOWN_TIMEOUT: Final = 2  # seconds uvicorn gives open probe requests when the process ends
# litestar appends the charset itself to text/* types
METRICS_TYPE: Final = CONTENT_TYPE_LATEST.replace("; charset=utf-8", "")
PROBLEM_TYPE: Final = "application/problem+json"


class HealthState:
    """What the probes read: the supervisor's roles, their restarts, and the backend.

    ``restarts`` and ``active`` are the supervisor's own live mappings (role -> restarts so
    far; role -> the role object while it runs or waits to be restarted), ``stopping`` says
    whether a graceful stop began. ``sample`` turns increments of ``restarts`` into
    timestamps; the listener calls it every second.
    """

    def __init__(
        self,
        backend: Backend,
        roles: tuple[str, ...],
        *,
        restarts: Mapping[str, int],
        active: Mapping[str, object],
        stopping: Callable[[], bool],
        crash_loop_restarts: int = CRASH_LOOP_RESTARTS,
        crash_loop_window: float = CRASH_LOOP_WINDOW,
        probe_timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self.backend = backend
        self.roles = roles
        self.restarts = restarts
        self.active = active
        self.stopping = stopping
        self.crash_loop_restarts = crash_loop_restarts
        self.crash_loop_window = crash_loop_window
        self.probe_timeout = probe_timeout
        self._seen = {role: restarts.get(role, 0) for role in roles}
        self._recent: dict[str, deque[float]] = {role: deque() for role in roles}

    def sample(self, now: float) -> None:
        """Record the restarts that happened since the last sample as happening at ``now``,
        and forget those older than the window."""
        for role in self.roles:
            count = self.restarts.get(role, 0)
            recent = self._recent[role]
            recent.extend([now] * max(0, count - self._seen[role]))
            self._seen[role] = count
            while recent and recent[0] <= now - self.crash_loop_window:
                recent.popleft()

    def crash_looping(self) -> list[str]:
        """The roles restarted ``crash_loop_restarts`` times or more within the window."""
        return [role for role in self.roles
                if len(self._recent[role]) >= self.crash_loop_restarts]

    def role_status(self) -> dict[str, dict[str, Any]]:
        """Per role: whether it runs, its restarts in total and within the window."""
        return {role: {"running": role in self.active,
                       "restarts": self.restarts.get(role, 0),
                       "recent_restarts": len(self._recent[role])}
                for role in self.roles}

    def liveness(self, now: float) -> tuple[int, dict[str, Any]]:
        """(status, body) of ``/healthz``."""
        self.sample(now)
        looping = self.crash_looping()
        roles = self.role_status()
        if not looping:
            return 200, {"status": "ok", "roles": roles}
        detail = "; ".join(
            f"role {role} was restarted {roles[role]['recent_restarts']} times in the last "
            f"{self.crash_loop_window:g} s" for role in looping)
        return 503, _problem(f"crash loop: {detail}", roles=roles)

    async def readiness(self) -> tuple[int, dict[str, Any]]:
        """(status, body) of ``/readyz``."""
        if self.stopping():
            return 503, _problem("the process is stopping: it drains and takes no new work")
        starting = [role for role in self.roles if role not in self.active]
        if starting:
            return 503, _problem(f"starting: role(s) {', '.join(starting)} not running yet")
        problem = "the job store did not answer in time"
        with anyio.move_on_after(self.probe_timeout):
            try:
                await self.backend.ping()
            except BackendError:
                problem = "the job store is unavailable"
            else:
                return 200, {"status": "ready"}
        return 503, _problem(problem)


def _problem(detail: str, **extra: Any) -> dict[str, Any]:
    return {"type": "about:blank", "title": "Service Unavailable", "status": 503,
            "detail": detail, **extra}


class RoleRestartsCollector(Collector):
    """``monoq_role_restarts_total{role}``: the supervisor's crash restarts of each role."""

    def __init__(self, roles: tuple[str, ...], restarts: Mapping[str, int]) -> None:
        self.roles = roles
        self.restarts = restarts

    def collect(self) -> Iterator[Metric]:
        """One counter sample per role of this process."""
        family = CounterMetricFamily(
            "monoq_role_restarts",
            "Times the supervisor restarted a role of this process after it crashed or "
            "returned unasked.",
            labels=["role"],
        )
        for role in self.roles:
            family.add_metric([role], float(self.restarts.get(role, 0)))
        yield family


def health_registry(roles: tuple[str, ...], restarts: Mapping[str, int]) -> CollectorRegistry:
    """The registry ``/metrics`` serves: ``monoq.metrics``' families, the role restarts and
    prometheus-client's process, platform and garbage-collector collectors."""
    registry = CollectorRegistry()
    role_metrics.register(registry)
    registry.register(RoleRestartsCollector(roles, restarts))
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


def create_health_app(state: HealthState, registry: CollectorRegistry) -> Litestar:
    """The listener's litestar app: ``/healthz``, ``/readyz`` and ``/metrics``, nothing else."""
    from litestar import Litestar, Response, get

    def reply(status: int, body: dict[str, Any]) -> Response[dict[str, Any]]:
        headers = {"Cache-Control": "no-store"}
        if status == 503:
            headers["Retry-After"] = RETRY_AFTER
        return Response(body, status_code=status, headers=headers,
                        media_type="application/json" if status == 200 else PROBLEM_TYPE)

    @get("/healthz", sync_to_thread=False)
    def healthz() -> Response[dict[str, Any]]:
        return reply(*state.liveness(anyio.current_time()))

    @get("/readyz")
    async def readyz() -> Response[dict[str, Any]]:
        return reply(*await state.readiness())

    @get("/metrics", media_type=METRICS_TYPE, sync_to_thread=False)
    def metrics() -> Response[bytes]:
        return Response(generate_latest(registry), media_type=METRICS_TYPE,
                        headers={"Cache-Control": "no-store"})

    return Litestar(route_handlers=[healthz, readyz, metrics], openapi_config=None,
                    logging_config=None, debug=False,
                    signature_namespace={"Response": Response})


class HealthListener:
    """The listener: ``await tg.start(listener.run)``, later ``listener.stop()``.

    ``run`` binds the socket itself, so a busy port or a bad host is an ``OSError`` naming
    ``monoq.health_host``/``health_port`` before any role starts.
    """

    def __init__(self, state: HealthState, host: str, port: int,
                 registry: CollectorRegistry | None = None) -> None:
        self.state = state
        self.host = host
        self.port = port
        self.registry = registry if registry is not None else health_registry(
            state.roles, state.restarts)
        self.address: tuple[str, int] | None = None  # (host, port) once listening
        self._stopping = False
        self._server: Any = None

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until ``stop()``; ``task_status.started()`` once accepting connections."""
        import uvicorn

        from monoq.api.role import EmbeddedServer, bind_socket

        try:
            sock = bind_socket(self.host, self.port)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"monoq.health_port: cannot listen on {_url_host(self.host)}:{self.port}: "
                f"{exc.strerror or exc}",
            ) from exc
        try:
            host, port = sock.getsockname()[:2]
            self.address = (host, port)
            app = create_health_app(self.state, self.registry)
            server = EmbeddedServer(uvicorn.Config(
                app, log_config=None, lifespan="off", access_log=False,
                timeout_graceful_shutdown=math.ceil(SHUTDOWN_TIMEOUT)))
            self._server = server
            server.should_exit = self._stopping
            done = anyio.Event()

            async def serve() -> None:
                try:
                    await server.serve(sockets=[sock])
                except Exception:
                    # Never take the roles down with it: a dead listener fails the liveness
                    # probe, which restarts the process the orchestrator's way.
                    logger.exception("the health listener failed; /healthz no longer answers")
                finally:
                    done.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(serve)
                while not server.started:
                    if done.is_set():
                        raise RuntimeError("the health listener stopped before it listened")
                    await anyio.sleep(0.005)
                tg.start_soon(self._sample, done)
                logger.info("health listener on http://%s:%d (/healthz, /readyz, /metrics; "
                            "no token)", _url_host(host), port)
                task_status.started()
        finally:
            sock.close()
            self._server = None

    async def _sample(self, done: anyio.Event) -> None:
        while not done.is_set():
            self.state.sample(anyio.current_time())
            with anyio.move_on_after(SAMPLE_INTERVAL):
                await done.wait()

    def stop(self) -> None:
        """Stop listening and return from ``run``. Idempotent; may be called before ``run``."""
        self._stopping = True
        if self._server is not None:
            self._server.should_exit = True


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@contextlib.asynccontextmanager
async def serve_health(
    config: Config,
    backend: Backend,
    *,
    roles: tuple[str, ...],
    restarts: Mapping[str, int],
    active: Mapping[str, object],
    stopping: Callable[[], bool],
) -> AsyncIterator[HealthListener | None]:
    """Serve the health listener around the body (the supervisor's run) when
    ``monoq.health_port`` is set and the process has no api role; yields the listener, or
    None when there is none. An address that cannot be bound raises OSError on entry."""
    port, host = config.monoq.health_port, config.monoq.health_host
    if not port:
        yield None
        return
    if "api" in roles:
        logger.info("monoq.health_port (%d) is ignored: this process runs the api role, which "
                    "serves /healthz, /readyz and /metrics on api.port (%d)", port,
                    config.api.port)
        yield None
        return
    state = HealthState(backend, roles, restarts=restarts, active=active, stopping=stopping)
    listener = HealthListener(state, host, port)
    async with anyio.create_task_group() as tg:
        await tg.start(listener.run)
        try:
            yield listener
        finally:
            listener.stop()
