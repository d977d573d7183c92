"""Cronny (seed 003, its service architecture document) replayed against a real `monoq run`.

Cronny is an API server, a trigger creator, a trigger executor and a job cleaner sharing one
database, runnable all in one process (``cmd/all``) or as separate services; the cleaner keeps
the last 10 executions of each job, and the document lists health checks, Prometheus metrics,
graceful shutdown and dashboard statistics as what it lacks. Each test runs `monoq run` on one
SQLite file, all in one process or split by ``--roles``, with a ``[[schedules]]`` entry in
place of Cronny's schedule/action/job rows, and checks the outcome over the API and the CLI.
"""

from __future__ import annotations

import itertools
import json
import signal
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.seeds._support import Monoq, monoq_fixture, parse_time, wait_until

pytestmark = pytest.mark.slow

# Cronny's schedule -> action -> job rows become one monoq schedule running the echo handler.
# The job cleaner's "last 10 executions" is [retention] runs_per_schedule (10 by default); it
# prunes every second here instead of every minute so the test sees it happen.
ALL_IN_ONE = """
[retention]
interval_seconds = 1

[[schedules]]
id = "heartbeat"
handler = "echo"
every = "1s"
payload = {source = "cronny"}
"""

# A 6-field cron (seconds first), as Cronny's schedules are cron-like.
SPLIT = """
[[schedules]]
id = "every-second"
handler = "echo"
cron = "* * * * * *"
payload = {source = "cronny-split"}
"""

# Graceful shutdown: jobs get 2 s to finish after SIGTERM.
SHUTDOWN = """
[worker]
grace_seconds = 2
"""


def runs(mq: Monoq, schedule_id: str) -> list[dict[str, Any]]:
    """The schedule's runs over the API, newest first (all of them: at most 100 here)."""
    answer = mq.http.get(f"/api/v1/schedules/{schedule_id}/runs", params={"limit": 100})
    assert answer.status_code == 200, answer.text
    page: dict[str, Any] = answer.json()
    assert page["next_cursor"] is None
    found: list[dict[str, Any]] = page["runs"]
    return found


def completed_counter(mq: Monoq, handler: str = "echo") -> float:
    """``monoq_jobs_completed_total{queue="default",handler=...}`` from ``/metrics``."""
    answer = mq.http.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            if (sample.name == "monoq_jobs_completed_total"
                    and sample.labels == {"queue": "default", "handler": handler}):
                return float(sample.value)
    return 0.0


def jobs_by_id(mq: Monoq) -> dict[str, dict[str, Any]]:
    """Every job through `monoq jobs --json`, which reads the file with no API running."""
    listed = json.loads(mq.cli("jobs", "--json").stdout)
    return {job["id"]: job for job in listed["jobs"]}


@pytest.fixture
def all_in_one(tmp_path: Path) -> Iterator[Monoq]:
    """A folder whose config has a 1-second schedule and a 1-second retention pass."""
    yield from monoq_fixture(tmp_path, ALL_IN_ONE)


@pytest.fixture
def split(tmp_path: Path) -> Iterator[Monoq]:
    """A folder whose config has a 6-field cron schedule firing every second."""
    yield from monoq_fixture(tmp_path, SPLIT)


@pytest.fixture
def shutdown(tmp_path: Path) -> Iterator[Monoq]:
    """A folder whose config gives running jobs a 2 s grace period."""
    yield from monoq_fixture(tmp_path, SHUTDOWN)


def test_all_in_one_fires_the_schedule_and_keeps_its_newest_10_runs(all_in_one: Monoq) -> None:
    mq = all_in_one
    # cmd/all: API, trigger creator/executor and cleaner in one `monoq run`, on Cronny's PORT.
    mq.start(PORT=str(mq.port))

    # Health checks, which Cronny's services lack.
    assert mq.http.get("/healthz").json() == {"status": "ok"}
    assert mq.http.get("/readyz").json() == {"status": "ready"}

    seen: dict[datetime, str] = {}  # every fire time observed -> its job id

    def observe() -> list[dict[str, Any]]:
        found = runs(mq, "heartbeat")
        for run in found:
            seen.setdefault(parse_time(run["fire_time"]), run["job_id"])
        return found

    wait_until(lambda: any(r["state"] == "completed" for r in observe()),
               what="a first completed run", detail=mq.logs)
    first_fire = min(seen)
    first = mq.wait_job(seen[first_fire])
    assert first["result"] == {"source": "cronny"}
    assert first["schedule_id"] == "heartbeat"
    counter_before = completed_counter(mq)
    assert counter_before >= 1

    # More than 10 fires, one per second; then stop the schedule so that the set is final.
    wait_until(lambda: bool(observe()) and max(seen) - first_fire >= timedelta(seconds=11),
               what="12 fires", detail=mq.logs)
    answer = mq.http.patch("/api/v1/schedules/heartbeat", json={"enabled": False})
    assert answer.status_code == 200, answer.text
    assert answer.json()["enabled"] is False

    def pruned() -> bool:
        found = observe()
        return len(found) == 10 and all(r["state"] == "completed" for r in found)

    wait_until(pruned, what="exactly 10 completed runs left", detail=mq.logs)
    left = runs(mq, "heartbeat")
    assert len(seen) > 10
    # The newest 10 of every fire there was, newest first, 1 s apart; the oldest are gone.
    newest = sorted(seen, reverse=True)[:10]
    assert [parse_time(r["fire_time"]) for r in left] == newest
    assert all(a - b == timedelta(seconds=1) for a, b in itertools.pairwise(newest))
    assert first_fire not in newest
    assert mq.http.get(f"/api/v1/jobs/{seen[first_fire]}").status_code == 404
    schedule = mq.http.get("/api/v1/schedules/heartbeat").json()
    assert parse_time(schedule["last_fire_at"]) == newest[0]
    assert schedule["last_success"]["job_id"] == left[0]["job_id"]

    # The same history from the command line.
    listed = json.loads(mq.cli("schedules", "runs", "heartbeat", "--json", "--limit", "50").stdout)
    assert [r["job_id"] for r in listed["runs"]] == [r["job_id"] for r in left]

    # Metrics: the completed-jobs counter moved (it counts every run, pruned ones too).
    assert completed_counter(mq) >= len(seen) > counter_before
    # Dashboard statistics: what is stored now.
    stats = mq.http.get("/api/v1/stats").json()
    assert stats["counts"]["completed"] == 10
    assert stats["throughput"]["1m"]["completed"] == 10
    assert stats["queues"] == 1


def test_split_services_share_one_sqlite_file(split: Monoq) -> None:
    mq = split
    # cmd/api, two cmd/triggercreator-like schedulers and cmd/triggerexecutor as four processes
    # on the same ./monoq.db.
    procs = [mq.start("--roles", "api", wait=False, PORT=str(mq.port)),
             mq.start("--roles", "scheduler", wait=False),
             mq.start("--roles", "scheduler", wait=False),
             mq.start("--roles", "worker", wait=False)]
    for proc in procs:
        mq.wait_ready(proc)
    assert mq.http.get("/healthz").status_code == 200
    assert mq.http.get("/readyz").status_code == 200

    def three_completed() -> bool:
        completed = [r for r in runs(mq, "every-second") if r["state"] == "completed"]
        return len(completed) >= 3

    wait_until(three_completed, what="3 completed runs", detail=mq.logs)
    found = runs(mq, "every-second")
    fire_times = [r["fire_time"] for r in found]
    assert len(set(fire_times)) == len(fire_times), found  # two schedulers, each fire once
    done = mq.wait_job(found[-1]["job_id"])
    assert done["result"] == {"source": "cronny-split"}

    # Executed by the worker process, not by the api or scheduler processes.
    attempt = mq.http.get(f"/api/v1/jobs/{done['id']}/attempts").json()["attempts"][0]
    workers = mq.http.get("/api/v1/workers").json()["workers"]
    assert [w["roles"] for w in workers if w["id"] == attempt["worker_id"]] == [["worker"]]

    # The run history from the command line, which reads the same file.
    table = mq.cli("schedules", "runs", "every-second").stdout
    assert "FIRE TIME" in table
    assert done["id"] in table
    assert "completed" in table

    # Dashboard statistics on the API process count the worker process's runs.
    stats = mq.http.get("/api/v1/stats").json()
    assert stats["throughput"]["1m"]["completed"] >= 3
    assert stats["counts"]["completed"] >= 3


def test_sigterm_finishes_a_short_job_and_releases_a_long_one(shutdown: Monoq) -> None:
    mq = shutdown
    proc = mq.start()
    short = mq.http.post("/api/v1/jobs", json={"handler": "sleep", "payload": {"seconds": 1}})
    long = mq.http.post("/api/v1/jobs", json={"handler": "sleep", "payload": {"seconds": 3.5}})
    assert short.status_code == long.status_code == 201
    ids = [short.json()["id"], long.json()["id"]]
    wait_until(lambda: all(mq.http.get(f"/api/v1/jobs/{i}").json()["state"] == "running"
                           for i in ids), what="both jobs running", detail=mq.logs)

    assert mq.signal(proc, signal.SIGTERM) == 0, mq.logs()
    stored = jobs_by_id(mq)
    finished = stored[ids[0]]
    assert finished["state"] == "completed", finished  # within the 2 s grace
    assert finished["result"] == {"slept": 1.0}
    released = stored[ids[1]]
    assert released["state"] == "queued", released  # handed back, its attempt refunded
    assert released["attempt"] == 0

    mq.start()  # the next run picks it up again
    again = mq.wait_job(ids[1])
    assert again["state"] == "completed", again
    assert again["attempt"] == 1
    outcomes = [a["outcome"] for a in
                mq.http.get(f"/api/v1/jobs/{ids[1]}/attempts").json()["attempts"]]
    assert outcomes == ["released", "completed"]
