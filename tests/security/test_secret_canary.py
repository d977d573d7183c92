"""The secret canary: one secret string, put where operators put secrets, must show up only where
it has to.

The canary is used at once as

- the value of secret-named payload keys (``db_password``, ``api_key`` nested in a list, a
  schedule's ``password``) of jobs that succeed and jobs that fail until they are dead;
- the value of the http plugin's secret ``CANARY``, referenced by http jobs as a header
  ``{"secret": "CANARY"}``, against a local server that echoes the headers it got (in its
  answers and in its error bodies), for a job that succeeds and one that dies;
- an API bearer token (an admin token whose secret is the canary), used for every API call,
  as ``X-API-Key`` too, and to log in to the dashboard.

Then every log record (everything, at DEBUG, with its exception text and extra fields), every
API answer (bodies and headers: jobs, lists, attempts, waits, dead letters, queues, stats,
workers, schedules and their runs, the compatibility routes, the audit log), the Prometheus
metrics and every dashboard page is searched for it.

What "only where it must" means, and so what this test asserts:

- A token never appears anywhere: no answer, page, header, cookie, metric or log line.
- A secret reference is never resolved into anything monoq stores or shows: the local server
  receives the value (or the test would prove nothing), but no result, error, attempt, answer,
  page, metric or log line holds it.
- A payload value under a secret-named key is the user's own data: the JSON API returns a job's
  or schedule's payload as it was submitted (a read token is trusted with payloads), so there,
  and only there (the value of a secret-named key inside a ``payload``), the canary may appear.
  The dashboard masks it on every page (also for an admin, also in the schedule edit form), and
  no log line, result, error, attempt, metric or other answer holds it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

import monoq
from monoq.api import create_app
from monoq.client import Client
from monoq.config import SECRET_KEY_NAMES, ApiConfig, ApiToken, Config, UiConfig, load_config
from monoq.logs import setup_logging
from monoq.registry import Registry
from monoq.ui.masking import Masker
from tests.integration._inprocess import supervised

pytestmark = pytest.mark.anyio

CANARY = "mq_canary-" + secrets.token_hex(16)
TOKEN_NAME = "canary-ops"  # noqa: S105 - the name, shown in logs
MASKER = Masker(SECRET_KEY_NAMES)


@monoq.handler("canary.ok")
def canary_ok(ctx: monoq.Context, payload: Any) -> Any:
    """Succeeds with a result that holds no secret."""
    return {"user": payload["user"], "ok": True}


@monoq.handler("canary.fail")
def canary_fail(ctx: monoq.Context, payload: Any) -> Any:
    """Always fails (the error names the user, not the secret)."""
    raise RuntimeError(f"the mail server refused user {payload['user']}")


# -- a local HTTP server that gives back what it got ------------------------------------------


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    received: list[dict[str, str]]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        headers = dict(self.headers.items())
        self.received.append(headers)
        status = 500 if self.path.startswith("/fail") else 200
        body = json.dumps({"you_sent": headers, "note": f"got {headers.get('X-Api-Key')}"})
        raw = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("X-Echo", headers.get("X-Api-Key", ""))
        self.end_headers()
        self.wfile.write(raw)


@contextmanager
def echo_server() -> Iterator[tuple[str, list[dict[str, str]]]]:
    received: list[dict[str, str]] = []
    handler = type("Echo", (_Echo,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def _config() -> Config:
    return load_config(os.devnull, env={}, overrides={
        "backend.url": "memory://",
        "worker.heartbeat_seconds": 0.05,
        "worker.lease_seconds": 5,
        "worker.grace_seconds": 2,
        "worker.queues": ["default", "mail"],
        "retry.base_seconds": 0.01,
        "retry.max_seconds": 0.05,
        "scheduler.reap_margin_seconds": 0,
        "monoq.log_level": "DEBUG",
        "plugins.http.allow": ["127.0.0.1"],
        "plugins.http.secrets": {"CANARY": CANARY},
    })


@asynccontextmanager
async def running() -> AsyncIterator[Client]:
    registry = Registry()
    registry.add_module("monoq.plugins.http")
    registry.add_function(canary_ok)
    registry.add_function(canary_fail)
    async with supervised(_config(), registry) as (client, _):
        yield client


# -- what may hold the canary -----------------------------------------------------------------


def _without_payload_secrets(value: Any) -> Any:
    """``value`` with the secret-named keys of every ``payload`` masked: what is left must not
    hold the canary."""
    if isinstance(value, dict):
        return {k: MASKER.mask(v) if k == "payload" else _without_payload_secrets(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_without_payload_secrets(item) for item in value]
    return value


class Seen:
    """Every answer the test got, checked for the canary as it arrives."""

    def __init__(self) -> None:
        self.count = 0
        self.payload_copies = 0  # answers that legitimately held it (a payload's secret key)

    def check(self, what: str, response: Any, *, json_api: bool) -> Any:
        self.count += 1
        for name, value in response.headers.items():
            assert CANARY not in value, f"{what}: header {name}"
        text = response.text
        if json_api and response.headers.get("content-type", "").startswith("application/"):
            data = response.json()
            if CANARY in text:
                self.payload_copies += 1
            assert CANARY not in json.dumps(_without_payload_secrets(data)), what
            return data
        assert CANARY not in text, what
        return text


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """Every log record of the test that ``monoq run`` with ``log_level = "DEBUG"`` would
    write: logging is set up as it sets it up, and a handler beside its own keeps them."""
    got: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            got.append(record)

    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved = {name: logging.getLogger(name).level
             for name in ("httpx", "httpcore", "uvicorn.access")}
    setup_logging("DEBUG")
    handler = Keep(level=logging.DEBUG)
    root.addHandler(handler)
    try:
        yield got
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _log_text(record: logging.LogRecord) -> str:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return formatter.format(record) + " " + repr(record.__dict__)


async def _scenario() -> Seen:
    """Run the jobs, read every answer and page (each checked as it arrives); answers what was
    seen. The log records are the caller's."""
    token = ApiToken(name=TOKEN_NAME, scope="admin",
                     sha256=hashlib.sha256(CANARY.encode()).hexdigest())
    bearer = {"Authorization": f"Bearer {CANARY}"}
    secret_payload = {"user": "alice", "db_password": CANARY, "servers": [{"api_key": CANARY}]}
    seen = Seen()
    with echo_server() as (base, received):
        async with running() as client:
            app: Litestar = create_app(client, ApiConfig(tokens=(token,)),
                                       registry=client.registry, ui_config=UiConfig())
            async with AsyncTestClient(app=app, base_url="http://127.0.0.1:8080") as tc:
                ids = await _run_jobs(tc, client, seen, bearer, base, secret_payload)
                await _read_everything(tc, seen, bearer, ids)
                await _browse_the_dashboard(tc, seen, ids)
    # the reference was resolved where it had to be: the server got the secret
    assert any(h.get("X-Api-Key") == f"Key {CANARY}" for h in received)
    assert seen.payload_copies > 0  # the job answers did hold the payload as submitted
    return seen


async def test_the_canary_shows_up_only_where_it_must(
    records: list[logging.LogRecord],
) -> None:
    await _scenario()
    assert records, "no log record was captured"
    assert any(r.levelno == logging.DEBUG and r.name.startswith("monoq") for r in records)
    # httpx still logs each request when debugging; httpcore's raw header traces never.
    assert any(r.name == "httpx" for r in records)
    leaks = [_log_text(r) for r in records if CANARY in _log_text(r)]
    assert not leaks, leaks[:3]


async def _run_jobs(tc: Any, client: Client, seen: Seen, bearer: dict[str, str], base: str,
                    secret_payload: dict[str, Any]) -> list[str]:
    header = {"X-Api-Key": {"secret": "CANARY", "prefix": "Key "}}
    submits = [
        {"handler": "canary.ok", "payload": secret_payload},
        {"handler": "canary.fail", "payload": secret_payload, "max_retries": 1},
        {"handler": "http", "payload": {"url": f"{base}/ok", "headers": header}},
        {"handler": "http", "payload": {"url": f"{base}/fail", "headers": header},
         "max_retries": 1},
    ]
    ids = []
    for body in submits:
        answer = await tc.post("/api/v1/jobs", json=body, headers=bearer)
        assert answer.status_code == 201, answer.text
        ids.append(seen.check("submit", answer, json_api=True)["id"])
    batch = await tc.post("/api/v1/jobs/batch", headers={"X-API-Key": CANARY}, json={
        "jobs": [{"handler": "canary.ok", "payload": secret_payload, "queue": "mail"}]})
    assert batch.status_code == 201
    ids.append(seen.check("batch", batch, json_api=True)["jobs"][0]["id"])
    legacy = await tc.post("/jobs", json={"name": "canary.ok", "payload": secret_payload},
                           headers=bearer)
    ids.append(seen.check("legacy submit", legacy, json_api=True)["id"])
    schedule = await tc.post("/api/v1/schedules", headers=bearer, json={
        "id": "canary-nightly", "handler": "canary.ok", "cron": "0 3 * * *",
        "payload": {"user": "bob", "password": CANARY}})
    assert schedule.status_code == 201, schedule.text
    seen.check("schedule create", schedule, json_api=True)
    trigger = await tc.post("/api/v1/schedules/canary-nightly/trigger", headers=bearer)
    ids.append(seen.check("trigger", trigger, json_api=True)["id"])
    # wrong tokens near the canary: refused without echoing them
    for wrong in (CANARY + "x", CANARY[:-1]):
        refused = await tc.get("/api/v1/jobs", headers={"Authorization": f"Bearer {wrong}"})
        assert refused.status_code == 401
        seen.check("refused", refused, json_api=False)
        assert wrong not in refused.text
    with anyio.fail_after(20):
        for job_id in ids:  # the test client blocks this loop, where the worker runs: wait here
            await client.wait(job_id)
            waited = await tc.get(f"/api/v1/jobs/{job_id}/wait", params={"timeout": "0"},
                                  headers=bearer)
            job = seen.check("wait", waited, json_api=True)
            assert job["state"] in ("completed", "dead"), job
    states = {job_id: (await tc.get(f"/api/v1/jobs/{job_id}", headers=bearer)).json()["state"]
              for job_id in ids}
    assert sorted(states.values()).count("dead") == 2  # canary.fail and http /fail
    return ids


async def _read_everything(tc: Any, seen: Seen, bearer: dict[str, str], ids: list[str]) -> None:
    for job_id in ids:
        for path in (f"/api/v1/jobs/{job_id}", f"/api/v1/jobs/{job_id}/attempts"):
            seen.check(path, await tc.get(path, headers=bearer), json_api=True)
        attempts = (await tc.get(f"/api/v1/jobs/{job_id}/attempts", headers=bearer)).json()
        assert CANARY not in json.dumps(attempts)  # attempts hold no payload at all
        job = (await tc.get(f"/api/v1/jobs/{job_id}", headers=bearer)).json()
        assert CANARY not in json.dumps([job["result"], job["error"]])
    for path in ("/api/v1/jobs", "/api/v1/jobs?state=dead", "/api/v1/dead-letter",
                 "/api/v1/queues", "/api/v1/queues/default", "/api/v1/stats", "/api/v1/workers",
                 "/api/v1/schedules", "/api/v1/schedules/canary-nightly",
                 "/api/v1/schedules/canary-nightly/runs", "/queue/stats",
                 "/api/v1/queue/length", "/healthz", "/readyz", "/schema/openapi.json"):
        answer = await tc.get(path, headers=bearer)
        assert answer.status_code == 200, (path, answer.text)
        seen.check(path, answer, json_api=True)
    metrics = await tc.get("/metrics", headers=bearer)
    assert metrics.status_code == 200 and "monoq_jobs_enqueued_total" in metrics.text
    seen.check("metrics", metrics, json_api=False)
    # the audit log names the token and what it did (the schedule holding the canary in its
    # payload, its trigger), never the token or the payload
    audit = await tc.get("/api/v1/audit", headers=bearer)
    assert audit.status_code == 200, audit.text
    seen.check("audit", audit, json_api=False)
    entries = audit.json()["entries"]
    assert {"schedule.put", "schedule.trigger"} <= {e["action"] for e in entries}


async def _browse_the_dashboard(tc: Any, seen: Seen, ids: list[str]) -> None:
    login_page = await tc.get("/ui/login")
    csrf = login_page.text.split('name="_csrf_token" value="', 1)[1].split('"', 1)[0]
    login = await tc.post("/ui/login", data={"token": CANARY, "_csrf_token": csrf,
                                             "next": "/ui/"}, follow_redirects=False)
    assert login.status_code == 303, login.text
    seen.check("ui login", login, json_api=False)
    pages = ["/ui/", "/ui/jobs", "/ui/jobs?state=dead", "/ui/dead", "/ui/queues", "/ui/workers",
             "/ui/schedules", "/ui/schedules/canary-nightly", "/ui/schedules/canary-nightly/edit",
             "/ui/schedules/_new"]
    pages += [f"/ui/jobs/{job_id}" for job_id in ids]
    for path in pages:
        page = await tc.get(path)
        assert page.status_code == 200, (path, page.text[:300])
        seen.check(path, page, json_api=False)
    detail = (await tc.get(f"/ui/jobs/{ids[0]}")).text
    assert "alice" in detail and "********" in detail  # payloads shown, secrets masked
