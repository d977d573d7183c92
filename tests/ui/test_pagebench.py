"""``python -m monoq.ui.pagebench`` runs end to end on a tiny store and reports every page.

The bench's figures are for the README (a million jobs, run by hand); here it only has to work:
seed a store holding every job state, find every dashboard page in the route table, and print
a row per page with the status it expected. No timing is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from litestar.routes import HTTPRoute

from monoq.api import create_app
from monoq.api.state import STATE_KEY
from monoq.backends.memory import MemoryBackend
from monoq.client import Client
from monoq.config import ApiConfig, UiConfig
from monoq.core.models import JobState
from monoq.ui import create_ui
from tests.conftest import redis_server_binary

JOBS = 2000


def dashboard_get_routes() -> set[str]:
    """The dashboard's GET routes (static files aside), read from its own route table."""
    app = create_app(Client(MemoryBackend()), ApiConfig())
    ui = create_ui(app.state[STATE_KEY], UiConfig(), prefix="/ui")
    return {route.path_format for route in ui.routes
            if isinstance(route, HTTPRoute) and "GET" in route.methods
            and not route.path.startswith("/static")}


def run_bench(tmp_path: Path, backend: str, *more: str) -> tuple[dict[str, Any], str]:
    out = tmp_path / "pages.json"
    done = subprocess.run(
        [sys.executable, "-m", "monoq.ui.pagebench", "--backend", backend, "--jobs", str(JOBS),
         "--runs", "2", "--warmup", "1", "--json", str(out), *more],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    data: dict[str, Any] = json.loads(out.read_text())
    return data, done.stdout


def check_report(data: dict[str, Any], table: str) -> None:
    # the store holds a realistic mix: every state, schedule runs
    assert {state: data["counts"].get(str(state), 0) > 0 for state in JobState} == \
        dict.fromkeys(JobState, True), data["counts"]
    assert data["schedule_runs"] > 0
    assert sum(data["counts"].values()) == data["jobs"]
    pages = data["pages"]
    # every GET page of the dashboard was measured, and nothing was left out
    assert dashboard_get_routes() <= {page["route"] for page in pages}
    assert data["not_measured"] == []
    # the polled partials, the filters and the parametrised pages are among them
    assert any(page["htmx"] for page in pages)
    urls = {page["url"] for page in pages}
    assert any(url.startswith("/ui/dead?") and "error_type=" in url for url in urls)
    assert any(url.startswith("/ui/jobs/") for url in urls)
    assert any(url.startswith("/ui/schedules/") for url in urls)
    for page in pages:
        assert page["status"] == page["expected"], page
        assert len(page["samples_ms"]) == 2
        # one table row per page
        label = ("poll " if page["htmx"] else "GET ") + page["url"]
        assert f"| {label} |" in table
    assert "Floor (bare litestar endpoint" in table
    assert len(data["floor"]["samples_ms"]) > 0
    # the verdict line is there, whichever it is on this machine
    assert "OVER BUDGET" in table or "Every page within" in table


def test_bench_runs_on_sqlite_and_measures_the_store_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    data, table = run_bench(tmp_path, url)
    assert data["backend"] == url
    assert data["seeded"] is True
    check_report(data, table)
    # --reuse measures the same store again without seeding it
    again, table = run_bench(tmp_path, url, "--reuse")
    assert again["seeded"] is False
    assert again["counts"] == data["counts"]
    assert {p["route"] for p in again["pages"]} == {p["route"] for p in data["pages"]}
    assert all(page["status"] == page["expected"] for page in again["pages"])
    assert "Measured as it was (--reuse)" in table


def test_bench_runs_on_a_temporary_sqlite_file(tmp_path: Path) -> None:
    data, table = run_bench(tmp_path, "sqlite")
    assert data["backend"].startswith("sqlite:///")
    assert not Path(data["backend"].removeprefix("sqlite:///")).exists()  # removed at the end
    check_report(data, table)


def test_bench_runs_on_its_own_redis(tmp_path: Path) -> None:
    redis_server_binary()  # skips without redis-server (fails under CI)
    data, table = run_bench(tmp_path, "redis")
    assert data["backend"].startswith("redis://127.0.0.1:")
    assert not data["backend"].endswith(":6379/0")
    check_report(data, table)


def test_bench_refuses_a_store_that_holds_data(tmp_path: Path) -> None:
    database = tmp_path / "used.db"
    database.write_bytes(b"")
    done = subprocess.run(
        [sys.executable, "-m", "monoq.ui.pagebench", "--backend", f"sqlite:///{database}",
         "--jobs", "10"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode != 0
    assert "fresh store" in done.stderr
    assert database.read_bytes() == b""


@pytest.mark.parametrize("args", [["--jobs", "0"], ["--runs", "0"], ["--warmup", "-1"]])
def test_bench_refuses_bad_arguments(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "monoq.ui.pagebench", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 2
    assert args[0] in done.stderr
