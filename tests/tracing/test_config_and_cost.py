"""``[tracing]``: its keys, the error when OpenTelemetry is missing, and what it costs off."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from monoq.config import Config, TracingConfig, config_keys, load_config
from monoq.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str, *, env: dict[str, str] | None = None, cwd: Path = ROOT,
               prelude: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=120,
                          check=False)


def test_tracing_is_off_by_default_and_consumers_are_children() -> None:
    assert Config().tracing == TracingConfig(enabled=False, consumer="child")
    keys = {k.key: k for k in config_keys()}
    assert keys["tracing.enabled"].env == "MONOQ_TRACING_ENABLED"
    assert keys["tracing.enabled"].default is False
    assert keys["tracing.consumer"].env == "MONOQ_TRACING_CONSUMER"
    assert keys["tracing.consumer"].default == "child"


def test_the_keys_come_from_the_file_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[tracing]\nenabled = true\nconsumer = 'link'\n")
    assert load_config(path, env={}).tracing == TracingConfig(enabled=True, consumer="link")
    env = {"MONOQ_TRACING_ENABLED": "yes", "MONOQ_TRACING_CONSUMER": "child"}
    assert load_config(path, env=env).tracing == TracingConfig(enabled=True, consumer="child")


@pytest.mark.parametrize(("env", "message"), [
    ({"MONOQ_TRACING_CONSUMER": "parent"},
     ("tracing.consumer: must be one of child, link, got 'parent' (from environment variable "
      "MONOQ_TRACING_CONSUMER)")),
    ({"MONOQ_TRACING_ENABLED": "maybe"}, "tracing.enabled: must be true or false"),
    ({"MONOQ_TRACING_SAMPLER": "always"}, "tracing.sampler: unknown key"),
])
def test_bad_values_name_the_key(env: dict[str, str], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, env=env)
    assert str(caught.value).startswith(message)


# Hides opentelemetry from this interpreter, as if the extra were not installed.
NO_OTEL = "import sys; sys.modules['opentelemetry'] = None\n"


def test_enabled_without_opentelemetry_is_a_config_error_naming_key_and_extra() -> None:
    done = run_python(prelude=NO_OTEL, code="""
        from monoq.client import client_from_config
        from monoq.config import load_config
        from monoq.errors import ConfigError
        config = load_config(None, env={}, overrides={"backend.url": "memory://",
                                                      "tracing.enabled": True})
        try:
            client_from_config(config)
        except ConfigError as exc:
            print(exc)
        """)
    assert done.returncode == 0, done.stderr
    message = done.stdout.strip()
    assert message.startswith("tracing.enabled: ")
    assert "opentelemetry-api is not installed" in message
    assert "pip install 'monoq[otel]'" in message


def test_monoq_run_stops_at_start_when_opentelemetry_is_missing(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "MONOQ_TRACING_ENABLED": "true",
           "MONOQ_BACKEND_URL": f"sqlite:///{tmp_path}/monoq.db", "HOME": str(tmp_path)}
    done = run_python(prelude=NO_OTEL, env=env, cwd=tmp_path, code="""
        from monoq.cli import main
        raise SystemExit(main(["run", "--roles", "worker"]))
        """)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "config error: tracing.enabled:" in done.stderr
    assert "monoq[otel]" in done.stderr


def test_off_nothing_imports_opentelemetry() -> None:
    """Enqueue with the client, fire a schedule, run the jobs with a worker: with tracing off,
    no OpenTelemetry module is ever imported. Then the API (a request with a traceparent):
    litestar itself imports ``opentelemetry.semconv`` to build any app when OpenTelemetry is
    installed (its OpenTelemetry plugin probe); monoq adds nothing to that."""
    done = run_python("""
        import sys
        import anyio
        from datetime import UTC, datetime, timedelta
        from monoq.client import client_from_config
        from monoq.config import ApiConfig, load_config
        from monoq.core.codec import json_encode
        from monoq.core.models import Schedule
        from monoq.scheduler import Scheduler, SchedulerSettings
        from monoq.worker import Worker, WorkerSettings

        def loaded():
            return sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")

        async def main():
            config = load_config(None, env={}, overrides={"backend.url": "memory://"})
            client = client_from_config(config)
            assert client.tracing is None
            first = await client.enqueue("echo", {"n": 1})
            t0 = datetime(2030, 1, 1, tzinfo=UTC)
            await client.backend.put_schedule(Schedule(
                id="s", handler="echo", every=60.0, payload_json=json_encode(None),
                created_at=t0, updated_at=t0))
            await Scheduler(client, SchedulerSettings()).tick(t0 + timedelta(seconds=60))
            worker = Worker(client, client.registry, WorkerSettings())
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                with anyio.fail_after(10):
                    done = await client.wait(first.id)
                worker.stop()
            assert done.trace_context is None
            print(loaded())

            from litestar.testing import AsyncTestClient
            from monoq.api import create_app
            async with AsyncTestClient(app=create_app(client, ApiConfig())) as http:
                r = await http.post("/api/v1/jobs", json={"handler": "echo"},
                                    headers={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736"
                                                            "-00f067aa0ba902b7-01"})
                assert r.status_code == 201, r.text
            assert r.json().get("trace_context") is None
            print([m for m in loaded() if m.split(".")[1:2] != ["semconv"]])

        anyio.run(main)
        """)
    assert done.returncode == 0, done.stderr
    monoq_paths, api = done.stdout.split("\n")[:2]
    assert monoq_paths == "[]"
    assert api in ("[]", "['opentelemetry']")  # the namespace package, from litestar's probe
