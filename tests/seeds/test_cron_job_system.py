"""The cron job system (API, scheduler, workers calling HTTP endpoints), replayed on `monoq run`.

Its document: a job is a cron schedule plus an API endpoint that a worker calls; every execution
is stored; failures are retried with exponential backoff up to `maxRetryCount`, then land in a
failed queue; `curl http://localhost:8080/queue/stats` shows the queues; API keys guard the API.
monoq's equivalents: `POST /api/v1/schedules` with the `http` job kind, the schedule's runs and
each job's attempts, the dead-letter queue, `GET /queue/stats`, scoped tokens.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.seeds._support import Monoq, monoq_fixture, wait_until

pytestmark = pytest.mark.slow


class Endpoint:
    """The API endpoint the jobs call: records each request, answers ``status``."""

    def __init__(self) -> None:
        self.status = 200
        self.requests: list[dict[str, Any]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                endpoint.requests.append({
                    "path": self.path,
                    "content_type": self.headers.get("Content-Type"),
                    "body": self.rfile.read(length),
                })
                body = json.dumps({"ok": endpoint.status < 400}).encode()
                self.send_response(endpoint.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/crm"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    served = Endpoint()
    try:
        yield served
    finally:
        served.close()


CONFIG = """
[plugins.http]
allow = ["127.0.0.1"]   # the endpoint is served by this test on loopback
[retry]
base_seconds = 0.2      # its backoff doubles like the document's (1 s, 2 s, 4 s), only shorter
"""


@pytest.fixture
def system(tmp_path: Path) -> Iterator[Monoq]:
    yield from monoq_fixture(tmp_path / "cron", CONFIG)


def test_a_cron_schedule_calls_the_endpoint_keeps_history_retries_then_fails(
    system: Monoq, endpoint: Endpoint
) -> None:
    system.start()
    # "Client sends POST request to /api/v1/jobs" with a CRON schedule and an API endpoint:
    # in monoq a schedule of the http job kind.
    created = system.http.post("/api/v1/schedules", json={
        "id": "crm-sync",
        "cron": "* * * * * *",  # every second (seconds first), to keep the test short
        "handler": "http",
        "payload": {"url": endpoint.url, "method": "POST", "json": {"sync": "contacts"}},
        "max_retries": 2,
    })
    assert created.status_code == 201, created.text

    def completed_runs() -> list[dict[str, Any]]:
        runs = system.http.get("/api/v1/schedules/crm-sync/runs").json()["runs"]
        return [r for r in runs if r["state"] == "completed"]

    wait_until(lambda: len(completed_runs()) >= 2, what="two completed runs",
               detail=system.logs)
    run = completed_runs()[0]
    assert run["result"]["status"] == 200
    assert run["result"]["body"] == {"ok": True}
    assert endpoint.requests[0]["path"] == "/hooks/crm"
    assert endpoint.requests[0]["content_type"] == "application/json"
    assert json.loads(endpoint.requests[0]["body"]) == {"sync": "contacts"}
    schedule = system.http.get("/api/v1/schedules/crm-sync").json()
    assert schedule["last_success"] is not None
    cli_runs = system.cli("schedules", "runs", "crm-sync", "--json")
    assert any(r["state"] == "completed" for r in json.loads(cli_runs.stdout)["runs"])

    # The endpoint starts failing: each execution is retried with backoff, then "failed".
    assert system.http.patch("/api/v1/schedules/crm-sync",
                             json={"enabled": False}).status_code == 200
    endpoint.status = 500
    job = system.http.post("/api/v1/jobs", json={
        "handler": "http", "payload": {"url": endpoint.url, "json": {"once": True}},
        "max_retries": 2,
    }).json()
    dead = system.wait_job(job["id"])
    assert (dead["state"], dead["attempt"]) == ("dead", 3)
    attempts = system.http.get(f"/api/v1/jobs/{job['id']}/attempts").json()["attempts"]
    assert [a["outcome"] for a in attempts] == ["failed"] * 3
    assert all("500" in a["error_message"] for a in attempts), attempts
    failed = system.http.get("/api/v1/dead-letter").json()["jobs"]
    assert job["id"] in [j["id"] for j in failed]

    status, body = system.curl("curl http://localhost:8080/queue/stats")
    assert status == 200
    stats = json.loads(body)
    assert stats["totals"]["dead"] >= 1
    assert stats["totals"]["completed"] >= 2
    assert stats["queues"]["default"]["dead"] >= 1


def test_api_keys_are_required_once_tokens_are_set(system: Monoq) -> None:
    made = json.loads(subprocess.run(
        [sys.executable, "-m", "monoq", "token", "create", "--scope", "admin", "--name", "ops",
         "--json"], capture_output=True, text=True, check=True, timeout=60).stdout)
    system.config.write_text(CONFIG + f"""
[[api.tokens]]
name = "ops"
scope = "admin"
sha256 = "{made['sha256']}"
""")
    system.start()
    status, _ = system.curl("curl http://localhost:8080/queue/stats")
    assert status == 401
    status, body = system.curl(
        f"curl -H 'Authorization: Bearer {made['token']}' http://localhost:8080/queue/stats")
    assert status == 200, body
    status, _ = system.curl(f"curl -H 'X-API-Key: {made['token']}' "
                            "http://localhost:8080/queue/stats")
    assert status == 200
    refused = system.http.post("/api/v1/schedules", json={"id": "x", "handler": "http",
                                                          "every": 60, "payload": {}})
    assert refused.status_code == 401
    assert system.http.get("/api/v1/schedules",
                           headers={"X-API-Key": made["token"]}).json()["schedules"] == []
