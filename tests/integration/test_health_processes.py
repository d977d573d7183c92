"""The health listener of real `monoq run --roles worker` and `--roles scheduler` processes.

Each process gets ``MONOQ_MONOQ_HEALTH_PORT`` (a free 127.0.0.1 port; ``health_host`` keeps its
loopback default) and a private redis-server on TCP that the test stops and starts again:

- ``/healthz`` answers 200 once the process runs, and still 200 while Redis is down (an
  outage makes a process unready, never dead);
- ``/readyz`` answers 200, then 503 (``application/problem+json``) once Redis is stopped, then
  200 again once it is back;
- ``/metrics`` of the worker counts the job it ran (``monoq_jobs_completed_total``), without a
  token;
- after SIGTERM the process exits 0 and the port is closed;
- a process with the api role ignores the key, says so in its log, and leaves the port free.

These tests need the supervisor to run ``monoq.health.serve_health`` around its roles (the
``_needs_the_supervisor`` fixture fails them at once, with that message, when it does not).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RedisFactory, RedisServer
from tests.integration._fleet import Fleet
from tests.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.redis]


@pytest.fixture(autouse=True)
def _needs_the_supervisor() -> None:
    """Fail (never skip) when the supervisor does not start the listener yet."""
    import monoq.supervisor

    if not hasattr(monoq.supervisor, "serve_health"):
        pytest.fail("monoq.supervisor does not run monoq.health.serve_health around its roles: "
                    "Supervisor.run must wrap its body in `async with serve_health(...)`")


def wait_until(check: Callable[[], bool], what: str, fleet: Fleet, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{fleet.logs()}")
        time.sleep(0.1)


class Probe:
    """GETs on one process's health port; a refused connection is status 0. Closed by the
    ``probes`` fixture."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.base, timeout=10)
        self.last: httpx.Response | None = None
        OPEN.append(self)

    def status(self, path: str) -> int:
        try:
            self.last = self.http.get(path)
        except httpx.TransportError:
            return 0
        return self.last.status_code

    def metrics(self) -> dict[str, list[Any]]:
        """Sample name -> samples of ``/metrics``."""
        answer = self.http.get("/metrics")
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/plain")
        samples: dict[str, list[Any]] = {}
        for family in text_string_to_metric_families(answer.text):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append(sample)
        return samples


OPEN: list[Probe] = []


@pytest.fixture(autouse=True)
def _close_probes() -> Iterator[None]:
    yield
    while OPEN:
        OPEN.pop().http.close()


@pytest.fixture
def redis(redis_factory: RedisFactory) -> RedisServer:
    return redis_factory(tcp=True)


@pytest.fixture
def fleet(tmp_path: Path, redis: RedisServer) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path, redis.url)
    try:
        yield fleet
    finally:
        fleet.stop_all()


def start(fleet: Fleet, roles: str, port: int, **env: str) -> subprocess.Popen[bytes]:
    """`monoq run --roles ROLES` with its health listener on 127.0.0.1:PORT."""
    log = (fleet.dir / f"proc{len(fleet.procs)}-{roles}.log").open("wb")
    with log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "monoq", "run", "--roles", roles, "--config",
             str(fleet.config)],
            stdout=log, stderr=subprocess.STDOUT,
            env=fleet.env(MONOQ_MONOQ_HEALTH_PORT=str(port), **env),
        )
    fleet.procs.append(proc)
    return proc


def check_outage(fleet: Fleet, redis: RedisServer, probe: Probe) -> None:
    """/readyz 503 while Redis is stopped (with /healthz still 200), 200 once it is back."""
    redis.stop()
    wait_until(lambda: probe.status("/readyz") == 503, "/readyz 503 with Redis stopped", fleet)
    assert probe.last is not None
    assert probe.last.headers["content-type"] == "application/problem+json"
    assert probe.last.headers["retry-after"] == "5"
    assert "job store" in probe.last.json()["detail"]
    assert probe.status("/healthz") == 200, "an unreachable Redis is not a dead process"
    redis.start()
    wait_until(lambda: probe.status("/readyz") == 200, "/readyz 200 with Redis back", fleet)


def stop(fleet: Fleet, proc: subprocess.Popen[bytes], probe: Probe) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=40) == 0, fleet.logs()
    assert probe.status("/healthz") == 0, "the listener closes with the process"


def test_worker_process_health_readiness_and_metrics(fleet: Fleet, redis: RedisServer) -> None:
    port = free_port()
    proc = start(fleet, "worker", port)
    probe = Probe(port)
    wait_until(lambda: probe.status("/healthz") == 200, "/healthz 200", fleet)
    assert probe.last is not None
    body = probe.last.json()
    assert body["status"] == "ok"
    assert body["roles"].keys() == {"worker"}
    wait_until(lambda: probe.status("/readyz") == 200, "/readyz 200", fleet)
    assert probe.last is not None and probe.last.json() == {"status": "ready"}

    job_id = fleet.cli("enqueue", "echo", "--payload", '{"n": 1}').split()[0]
    assert job_id

    def completed() -> float:
        samples = probe.metrics().get("monoq_jobs_completed_total", [])
        return float(sum(s.value for s in samples
                         if s.labels == {"queue": "default", "handler": "echo"}))

    wait_until(lambda: completed() == 1, "monoq_jobs_completed_total of the echo job", fleet)
    samples = probe.metrics()
    assert [s.value for s in samples["monoq_jobs_started_total"]
            if s.labels["handler"] == "echo"] == [1]
    assert [s.value for s in samples["monoq_job_duration_seconds_count"]
            if s.labels["handler"] == "echo"] == [1]
    assert [(s.labels, s.value) for s in samples["monoq_role_restarts_total"]] == [
        ({"role": "worker"}, 0)]
    assert "process_resident_memory_bytes" in samples

    check_outage(fleet, redis, probe)
    stop(fleet, proc, probe)


def test_scheduler_process_health_readiness_and_metrics(
    fleet: Fleet, redis: RedisServer
) -> None:
    port = free_port()
    proc = start(fleet, "scheduler", port)
    probe = Probe(port)
    wait_until(lambda: probe.status("/healthz") == 200, "/healthz 200", fleet)
    assert probe.last is not None and probe.last.json()["roles"].keys() == {"scheduler"}
    wait_until(lambda: probe.status("/readyz") == 200, "/readyz 200", fleet)
    samples = probe.metrics()
    assert [(s.labels, s.value) for s in samples["monoq_role_restarts_total"]] == [
        ({"role": "scheduler"}, 0)]
    text = probe.http.get("/metrics").text
    assert "# TYPE monoq_lease_reclaims_total counter" in text
    check_outage(fleet, redis, probe)
    stop(fleet, proc, probe)


def test_a_process_with_the_api_role_ignores_the_health_port(fleet: Fleet) -> None:
    port, api_port = free_port(), free_port()
    proc = start(fleet, "api,worker", port, MONOQ_API_PORT=str(api_port))
    api = Probe(api_port)
    wait_until(lambda: api.status("/healthz") == 200, "the api's /healthz", fleet)
    assert Probe(port).status("/healthz") == 0
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=40) == 0, fleet.logs()
    assert f"monoq.health_port ({port}) is ignored: this process runs the api role" in (
        fleet.logs())


def test_a_busy_health_port_stops_the_start_with_the_key_named(fleet: Fleet) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = start(fleet, "worker", port)
        assert proc.wait(timeout=30) != 0
    assert f"monoq.health_port: cannot listen on 127.0.0.1:{port}" in fleet.logs()
