"""Bananas (seed 000, its ``cmd/`` services document) replayed against a real `monoq run`.

Bananas is an API server, a worker service and a scheduler service over Redis: jobs submitted
with ``curl -X POST /jobs`` (name, payload, priority), served high before normal before low,
retried 2, 4 and 8 s after a failure and then dead-lettered, with ``WORKER_CONCURRENCY`` (5),
``JOB_TIMEOUT`` (5m), ``MAX_RETRIES`` (3), ``API_PORT`` (8080) and ``REDIS_URL``. Each test
sends the document's own curl command (through the real curl binary, only the address swapped)
to `monoq run` processes configured through those same variables, and checks what the document
promises with monoq's API: the job, its attempt history and the dead-letter queue.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.seeds._support import Monoq, monoq_fixture, parse_time, wait_until

pytestmark = pytest.mark.slow

# The document's test command, verbatim ("Submit a test job").
DOC_CURL = """curl -X POST http://localhost:8080/jobs \\
  -H "Content-Type: application/json" \\
  -d '{"name": "send_email", "payload": {...}, "priority": "high"}'"""

# The document registers handlers by job name (registry.Register("send_email", ...)); the monoq
# equivalent is a @monoq.handler module listed in [monoq] imports. This one also appends each
# address to sent.log in the working directory, so the order of the sends is visible.
TASKS = '''"""The Bananas document's example handler."""

import time
from pathlib import Path

import monoq


@monoq.handler("send_email")
def send_email(ctx: monoq.Context, payload: dict) -> dict:
    """Pretend to send (20 ms, a mail server's round trip); record the address in ./sent.log."""
    time.sleep(0.02)
    with Path("sent.log").open("a") as log:
        log.write(payload["to"] + "\\n")
    return {"sent_to": payload["to"], "subject": payload["subject"]}
'''

CONFIG = '[monoq]\nimports = ["bananas_tasks"]\n'

PRIORITIES = {"high": 0, "normal": 5, "low": 9}


class Server(Protocol):
    """What these tests use of tests/conftest.py's RedisServer."""

    url: str


def doc_command(payload: dict[str, Any], priority: str = "high", name: str = "send_email") -> str:
    """The document's curl command with a real payload in place of ``{...}``."""
    command = DOC_CURL.replace("{...}", json.dumps(payload))
    return command.replace('"priority": "high"', f'"priority": "{priority}"').replace(
        '"name": "send_email"', f'"name": "{name}"')


def submit(mq: Monoq, payload: dict[str, Any], priority: str = "high",
           name: str = "send_email") -> dict[str, Any]:
    """Run the document's command; it must answer 201 with the queued job."""
    status, body = mq.curl(doc_command(payload, priority, name))
    assert status == 201, body
    job: dict[str, Any] = json.loads(body)
    assert job["handler"] == name
    assert job["payload"] == payload
    assert job["priority"] == PRIORITIES[priority]
    return job


def attempts(mq: Monoq, job_id: str) -> list[dict[str, Any]]:
    """The job's attempt history, oldest first."""
    answer = mq.http.get(f"/api/v1/jobs/{job_id}/attempts")
    assert answer.status_code == 200, answer.text
    history: list[dict[str, Any]] = answer.json()["attempts"]
    return history


def worker_of(mq: Monoq, roles: list[str]) -> dict[str, Any]:
    """The live worker whose process runs exactly ``roles`` (waits for its heartbeat)."""
    found: list[dict[str, Any]] = []

    def listed() -> bool:
        workers = mq.http.get("/api/v1/workers").json()["workers"]
        found[:] = [w for w in workers if sorted(w["roles"]) == sorted(roles)]
        return len(found) == 1

    wait_until(listed, what=f"a worker with roles {roles}", detail=mq.logs)
    return found[0]


def dead_letter_ids(mq: Monoq) -> set[str]:
    """Ids in the dead-letter queue."""
    answer = mq.http.get("/api/v1/dead-letter")
    assert answer.status_code == 200, answer.text
    return {job["id"] for job in answer.json()["jobs"]}


# An attempt's finished_at is stamped when the worker writes its outcome (acks are batched), a
# moment after the slot was freed and possibly after the next job was claimed into it: the
# history may show two attempts of one slot overlapping by a millisecond or two.
ACK_SLACK = timedelta(milliseconds=50)


def max_overlap(history: list[dict[str, Any]]) -> int:
    """Most attempts running at the same instant (each taken to end ``ACK_SLACK`` before its
    recorded finished_at)."""
    events = []
    for attempt in history:
        events.append((parse_time(attempt["started_at"]), 1))
        events.append((parse_time(attempt["finished_at"]) - ACK_SLACK, -1))
    running = peak = 0
    for _, step in sorted(events):  # at equal times -1 sorts before +1
        running += step
        peak = max(peak, running)
    return peak


@pytest.fixture
def bananas(tmp_path: Path) -> Iterator[Monoq]:
    """A test folder holding the handler module and a config importing it."""
    (tmp_path / "bananas_tasks.py").write_text(TASKS)
    yield from monoq_fixture(tmp_path, CONFIG)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_doc_curl_jobs_run_high_before_normal_before_low(
    bananas: Monoq, backend: str, request: pytest.FixtureRequest
) -> None:
    # SQLite (monoq's default, ./monoq.db) or the document's Redis through REDIS_URL.
    env = {}
    if backend == "redis":
        env["REDIS_URL"] = request.getfixturevalue("tcp_redis").url
    # cmd/api and cmd/scheduler first: jobs pile up while no worker runs.
    bananas.start("--roles", "api,scheduler", API_PORT=str(bananas.port), **env)
    jobs = {}
    for priority in ("low", "normal", "high"):
        payload = {"to": f"{priority}@example.com", "subject": f"{priority} news"}
        job = submit(bananas, payload, priority)
        assert job["state"] == "queued"
        jobs[priority] = job["id"]

    # cmd/worker with one slot, so the jobs run one after another in priority order.
    bananas.start("--roles", "worker", WORKER_CONCURRENCY="1", **env)
    assert worker_of(bananas, ["worker"])["concurrency"] == 1
    done = {priority: bananas.wait_job(job_id) for priority, job_id in jobs.items()}
    for priority, job in done.items():
        assert job["state"] == "completed", job
        assert job["result"] == {"sent_to": f"{priority}@example.com",
                                 "subject": f"{priority} news"}

    sent = (bananas.dir / "sent.log").read_text().split()
    assert sent == ["high@example.com", "normal@example.com", "low@example.com"]
    # Each send takes 20 ms and there is one slot, so the start times are strictly ordered too.
    starts = [parse_time(done[p]["started_at"]) for p in ("high", "normal", "low")]
    assert starts[0] < starts[1] < starts[2], done


@pytest.mark.redis
def test_split_services_on_redis_retry_2_4_8_seconds_then_dead_letter(
    bananas: Monoq, tcp_redis: Server
) -> None:
    # The three cmd/ services as three processes on one Redis, configured by REDIS_URL.
    redis = {"REDIS_URL": tcp_redis.url}
    procs = [bananas.start("--roles", "api", wait=False, API_PORT=str(bananas.port), **redis),
             bananas.start("--roles", "worker", wait=False, **redis),
             bananas.start("--roles", "scheduler", wait=False, **redis)]
    for proc in procs:
        bananas.wait_ready(proc)
    worker = worker_of(bananas, ["worker"])
    assert worker["concurrency"] == 5  # WORKER_CONCURRENCY's default

    email = submit(bananas, {"to": "ops@example.com", "subject": "deploy done"})
    failing = submit(bananas, {"message": "smtp unreachable"}, name="fail")
    assert failing["max_retries"] == 3  # MAX_RETRIES's default
    assert failing["timeout"] == 300.0  # JOB_TIMEOUT's default, 5m

    done = bananas.wait_job(email["id"])
    assert done["state"] == "completed", done
    assert done["result"] == {"sent_to": "ops@example.com", "subject": "deploy done"}

    dead = bananas.wait_job(failing["id"], timeout=60)
    assert dead["state"] == "dead", dead
    history = attempts(bananas, failing["id"])
    assert [a["outcome"] for a in history] == ["failed"] * 4, history
    assert {a["error_type"] for a in history} == {"InjectedFailure"}
    assert history[0]["error_message"] == "smtp unreachable (attempt 1)"
    # The scheduler service's retry schedule: 2, 4, then 8 s after each failure.
    for expected, before, after in zip((2, 4, 8), history[:-1], history[1:], strict=True):
        gap = (parse_time(after["started_at"]) - parse_time(before["finished_at"])
               ).total_seconds()
        assert expected - 0.01 <= gap < expected + 1.5, (expected, gap, history)
    assert failing["id"] in dead_letter_ids(bananas)
    assert email["id"] not in dead_letter_ids(bananas)


def test_worker_variables_concurrency_timeout_and_max_retries(bananas: Monoq) -> None:
    # All services in one process, configured only through the document's variables.
    bananas.start(API_PORT=str(bananas.port), WORKER_CONCURRENCY="2", JOB_TIMEOUT="1s",
                  MAX_RETRIES="1")
    assert worker_of(bananas, ["api", "scheduler", "worker"])["concurrency"] == 2

    # A job longer than JOB_TIMEOUT is stopped, and after MAX_RETRIES retries it is dead.
    slow = submit(bananas, {"seconds": 5}, name="sleep")
    assert slow["timeout"] == 1.0
    assert slow["max_retries"] == 1
    # Six short jobs share the two slots with it.
    short = [submit(bananas, {"seconds": 0.4}, "normal", "sleep") for _ in range(6)]

    for job in short:
        assert bananas.wait_job(job["id"])["state"] == "completed"
    dead = bananas.wait_job(slow["id"])
    assert dead["state"] == "dead", dead
    history = attempts(bananas, slow["id"])
    assert [a["outcome"] for a in history] == ["failed", "failed"], history
    assert {a["error_type"] for a in history} == {"TimeoutError"}
    assert all(a["duration"] < 4 for a in history), history  # cut short, not the full 5 s
    assert slow["id"] in dead_letter_ids(bananas)

    # Never more than WORKER_CONCURRENCY jobs at once, and both slots were used.
    everything = history + [a for job in short for a in attempts(bananas, job["id"])]
    assert max_overlap(everything) == 2, everything
