"""monoq.health: the health and metrics listener of a process without the api role, and its
``[monoq] health_port`` / ``health_host`` keys. In one process, on a port the OS picks; the
real ``monoq run --roles worker|scheduler`` processes are tests/integration/test_health_*.py."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import monoq.metrics as role_metrics
from monoq.backends.memory import MemoryBackend
from monoq.config import load_config
from monoq.errors import BackendUnavailable, ConfigError
from monoq.health import (
    CRASH_LOOP_RESTARTS,
    CRASH_LOOP_WINDOW,
    HealthListener,
    HealthState,
    health_registry,
    serve_health,
)

# -- config -----------------------------------------------------------------------------------


def test_defaults_are_off_and_loopback() -> None:
    config = load_config(env={})
    assert config.monoq.health_port == 0
    assert config.monoq.health_host == "127.0.0.1"


def test_variables_set_the_keys() -> None:
    config = load_config(env={"MONOQ_MONOQ_HEALTH_PORT": "9100",
                              "MONOQ_MONOQ_HEALTH_HOST": "0.0.0.0"})  # noqa: S104
    assert (config.monoq.health_port, config.monoq.health_host) == (9100, "0.0.0.0")  # noqa: S104


@pytest.mark.parametrize(
    ("env", "start"),
    [
        ({"MONOQ_MONOQ_HEALTH_PORT": "http"}, ("monoq.health_port: must be an integer between 0 "
         "and 65535, got 'http' (from environment variable MONOQ_MONOQ_HEALTH_PORT)")),
        ({"MONOQ_MONOQ_HEALTH_PORT": "65536"}, "monoq.health_port: must be an integer between"),
        ({"MONOQ_MONOQ_HEALTH_PORT": "-1"}, "monoq.health_port: must be an integer between"),
        ({"MONOQ_MONOQ_HEALTH_PORT": "80.5"}, "monoq.health_port: must be an integer between"),
        ({"MONOQ_MONOQ_HEALTH_HOST": ""}, "monoq.health_host: must not be empty"),
    ],
)
def test_bad_values_name_the_key_and_the_variable(env: dict[str, str], start: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env=env)
    message = str(info.value)
    assert message.startswith(start), message
    assert next(iter(env)) in message


@pytest.mark.parametrize(
    ("toml", "start"),
    [
        ('health_port = "9100"', ("monoq.health_port: must be an integer between 0 and 65535, "
         "got '9100'")),
        ("health_port = 70000", ("monoq.health_port: must be an integer between 0 and 65535, "
         "got 70000")),
        ("health_port = true", "monoq.health_port: must be an integer"),
        ("health_host = 9", "monoq.health_host: must be a string"),
        ("helth_port = 9100", "monoq.helth_port: unknown key (did you mean 'health_port'?)"),
    ],
)
def test_bad_file_values_name_the_key(tmp_path: Path, toml: str, start: str) -> None:
    path = tmp_path / "monoq.toml"
    path.write_text(f"[monoq]\n{toml}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value).startswith(start), str(info.value)
    assert str(path) in str(info.value)


# -- liveness: crash loops --------------------------------------------------------------------


def state(backend: object = None, *, roles: tuple[str, ...] = ("worker",),
          restarts: dict[str, int] | None = None, active: dict[str, object] | None = None,
          stopping: bool = False) -> HealthState:
    return HealthState(
        backend if backend is not None else MemoryBackend(),  # type: ignore[arg-type]
        roles,
        restarts=restarts if restarts is not None else dict.fromkeys(roles, 0),
        active=active if active is not None else dict.fromkeys(roles, object()),
        stopping=lambda: stopping,
    )


def test_liveness_fails_after_repeated_restarts_within_the_window_and_recovers() -> None:
    restarts = {"worker": 0, "scheduler": 0}
    health = state(roles=("scheduler", "worker"), restarts=restarts)
    assert health.liveness(0.0)[0] == 200
    for n in range(1, CRASH_LOOP_RESTARTS):
        restarts["worker"] = n
        status, body = health.liveness(float(n))
        assert status == 200, body
    restarts["worker"] = CRASH_LOOP_RESTARTS
    status, body = health.liveness(10.0)
    assert status == 503
    assert body["detail"].startswith(f"crash loop: role worker was restarted "
                                     f"{CRASH_LOOP_RESTARTS} times")
    assert body["roles"]["worker"]["restarts"] == CRASH_LOOP_RESTARTS
    assert body["roles"]["scheduler"] == {"running": True, "restarts": 0, "recent_restarts": 0}
    # No further crash: once the window has passed the first restart, it is healthy again.
    assert health.liveness(1.0 + CRASH_LOOP_WINDOW)[0] == 200


def test_restarts_before_the_listener_started_do_not_count() -> None:
    health = state(restarts={"worker": 10})
    assert health.liveness(0.0)[0] == 200
    assert health.role_status()["worker"]["restarts"] == 10


def test_liveness_ignores_a_stop_and_a_role_not_started_yet() -> None:
    assert state(active={}, stopping=True).liveness(0.0)[0] == 200


# -- readiness --------------------------------------------------------------------------------


class DownBackend(MemoryBackend):
    async def ping(self) -> None:
        raise BackendUnavailable("connection refused")


class HangingBackend(MemoryBackend):
    async def ping(self) -> None:
        await anyio.sleep_forever()


async def test_readiness() -> None:
    assert await state().readiness() == (200, {"status": "ready"})
    status, body = await state(stopping=True).readiness()
    assert status == 503 and "stopping" in body["detail"]
    status, body = await state(active={}).readiness()
    assert status == 503 and body["detail"] == "starting: role(s) worker not running yet"
    status, body = await state(DownBackend()).readiness()
    assert status == 503 and body["detail"] == "the job store is unavailable"
    slow = state(HangingBackend())
    slow.probe_timeout = 0.05
    status, body = await slow.readiness()
    assert status == 503 and body["detail"] == "the job store did not answer in time"


# -- the listener -----------------------------------------------------------------------------


@pytest.fixture
async def listener() -> AsyncIterator[tuple[HealthListener, dict[str, int], list[bool]]]:
    restarts = {"worker": 0}
    stopping = [False]
    health = HealthState(MemoryBackend(), ("worker",), restarts=restarts,
                         active={"worker": object()}, stopping=lambda: stopping[0])
    server = HealthListener(health, "127.0.0.1", 0)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            await tg.start(server.run)
            yield server, restarts, stopping
            server.stop()


async def test_listener_serves_the_three_paths(
    listener: tuple[HealthListener, dict[str, int], list[bool]],
) -> None:
    server, restarts, stopping = listener
    assert server.address is not None
    base = f"http://127.0.0.1:{server.address[1]}"
    role_metrics.job_completed("health-unit", "probe", 0.01)
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        answer = await http.get("/healthz")
        assert answer.status_code == 200
        assert answer.json()["status"] == "ok"
        assert answer.headers["cache-control"] == "no-store"
        answer = await http.get("/readyz")
        assert (answer.status_code, answer.json()) == (200, {"status": "ready"})
        answer = await http.get("/metrics")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/plain; version=")
        families = {f.name: f for f in text_string_to_metric_families(answer.text)}
        completed = [s for s in families["monoq_jobs_completed"].samples
                     if s.labels.get("queue") == "health-unit"]
        assert completed and completed[0].value >= 1
        assert {"monoq_job_duration_seconds", "monoq_lease_reclaims", "monoq_stale_acks",
                "monoq_role_restarts", "process_resident_memory_bytes",
                "python_info"} <= set(families) | {
            s.name for f in families.values() for s in f.samples}
        for path in ("/", "/api/v1/jobs", "/schema"):
            assert (await http.get(path)).status_code == 404
        assert (await http.post("/healthz")).status_code == 405
        stopping[0] = True
        answer = await http.get("/readyz")
        assert answer.status_code == 503
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["retry-after"] == "5"
        restarts["worker"] = CRASH_LOOP_RESTARTS
        await anyio.sleep(1.5)  # the listener samples the restarts every second
        answer = await http.get("/healthz")
        assert answer.status_code == 503
        assert "crash loop" in answer.json()["detail"]


def test_role_restarts_metric() -> None:
    restarts = {"worker": 2}
    text = __import__("prometheus_client").generate_latest(
        health_registry(("worker",), restarts)).decode()
    assert 'monoq_role_restarts_total{role="worker"} 2.0' in text


async def test_a_busy_port_names_the_key() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = HealthListener(state(), "127.0.0.1", port)
        with pytest.raises(OSError, match=rf"monoq.health_port: cannot listen on 127.0.0.1:{port}"):
            await server.run()


# -- serve_health: when there is a listener ---------------------------------------------------


async def test_serve_health_is_off_by_default() -> None:
    config = load_config(env={})
    async with serve_health(config, MemoryBackend(), roles=("worker",), restarts={},
                            active={}, stopping=lambda: False) as found:
        assert found is None


async def test_serve_health_is_ignored_with_the_api_role(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = load_config(env={"MONOQ_MONOQ_HEALTH_PORT": "1"})  # never bound: ignored
    with caplog.at_level(logging.INFO, logger="monoq.health"):
        async with serve_health(config, MemoryBackend(), roles=("worker", "api"),
                                restarts={}, active={}, stopping=lambda: False) as found:
            assert found is None
    assert "monoq.health_port (1) is ignored: this process runs the api role" in caplog.text


async def test_serve_health_listens_for_the_body_and_closes_after() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = load_config(env={"MONOQ_MONOQ_HEALTH_PORT": str(port)})
    with anyio.fail_after(20):
        async with serve_health(config, MemoryBackend(), roles=("scheduler",),
                                restarts={"scheduler": 0}, active={},
                                stopping=lambda: False) as found:
            assert found is not None and found.address == ("127.0.0.1", port)
            async with httpx.AsyncClient(timeout=10) as http:
                answer = await http.get(f"http://127.0.0.1:{port}/healthz")
                assert answer.status_code == 200
        async with httpx.AsyncClient(timeout=10) as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(f"http://127.0.0.1:{port}/healthz")
