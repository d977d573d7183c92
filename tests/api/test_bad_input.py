"""Bad input gets a clear 4xx problem+json, never a 500, and changes nothing."""

from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from monoq.client import Client
from monoq.core.models import JobQuery
from tests.api._support import AppFactory, auth

JSON = {"Content-Type": "application/json"}
LIMIT = 4096  # max_body_bytes of the app under test


def _j(text: str) -> dict[str, Any]:
    return {"content": text.encode(), "headers": JSON}


INJECTION_NAMES = [
    "echo; rm -rf /",
    "../../etc/passwd",
    "a' OR '1'='1",
    "<script>alert(1)</script>",
    "echo\n",
    "",
    " echo",
    "x" * 129,
    "ech\u00f6",
    "$(id)",
    "echo\u0000",
    "-echo",
]

# (id, method, path, request kwargs, expected status)
CASES: list[tuple[str, str, str, dict[str, Any], int]] = (
    [
        ("malformed", "POST", "/api/v1/jobs", _j("{bad"), 400),
        ("truncated", "POST", "/api/v1/jobs", _j('{"handler": "echo"'), 400),
        ("trailing-garbage", "POST", "/api/v1/jobs", _j('{"handler": "echo"} x'), 400),
        ("empty-body", "POST", "/api/v1/jobs", _j(""), 400),
        ("nan", "POST", "/api/v1/jobs", _j('{"handler": "echo", "payload": NaN}'), 400),
        (
            "lone-surrogate",
            "POST",
            "/api/v1/jobs",
            _j('{"handler": "echo", "payload": "\\ud800"}'),
            400,
        ),
        (
            "invalid-utf8",
            "POST",
            "/api/v1/jobs",
            {"content": b'{"handler": "echo", "payload": "\xff\xfe"}', "headers": JSON},
            400,
        ),
        (
            "deep-nesting",
            "POST",
            "/api/v1/jobs",
            _j('{"handler": "echo", "payload": ' + "[" * 2000 + "]" * 2000 + "}"),
            400,
        ),
        ("huge-float", "POST", "/api/v1/jobs", _j('{"handler": "echo", "timeout": 1e999}'), 400),
        ("array-body", "POST", "/api/v1/jobs", _j("[]"), 422),
        ("string-body", "POST", "/api/v1/jobs", _j('"echo"'), 422),
        ("null-body", "POST", "/api/v1/jobs", _j("null"), 422),
        ("no-handler", "POST", "/api/v1/jobs", {"json": {"payload": 1}}, 422),
        ("handler-int", "POST", "/api/v1/jobs", {"json": {"handler": 5}}, 422),
        ("handler-list", "POST", "/api/v1/jobs", {"json": {"handler": ["echo"]}}, 422),
        ("unknown-field", "POST", "/api/v1/jobs", {"json": {"handler": "echo", "evil": 1}}, 422),
        (
            "priority-word",
            "POST",
            "/api/v1/jobs",
            {"json": {"handler": "echo", "priority": "urgent"}},
            422,
        ),
        ("priority-10", "POST", "/api/v1/jobs", {"json": {"handler": "echo", "priority": 10}}, 422),
        (
            "priority-bool",
            "POST",
            "/api/v1/jobs",
            {"json": {"handler": "echo", "priority": True}},
            422,
        ),
        (
            "priority-huge",
            "POST",
            "/api/v1/jobs",
            {"json": {"handler": "echo", "priority": 10**30}},
            422,
        ),
        (
            "retries-huge",
            "POST",
            "/api/v1/jobs",
            {"json": {"handler": "echo", "max_retries": 10**30}},
            422,
        ),
        (
            "retries-negative",
            "POST",
            "/api/v1/jobs",
            {"json": {"handler": "echo", "max_retries": -1}},
            422,
        ),
        ("timeout-zero", "POST", "/api/v1/jobs", {"json": {"handler": "echo", "timeout": 0}}, 422),
        (
            "timeout-string",
            "POST",
            "/api/v1/jobs",
            {"json": {"handler": "echo", "timeout": "5"}},
            422,
        ),
        ("delay-negative", "POST", "/api/v1/jobs", {"json": {"handler": "echo", "delay": -1}}, 422),
        ("delay-huge", "POST", "/api/v1/jobs", {"json": {"handler": "echo", "delay": 1e308}}, 422),
        (
            "delay-and-run-at",
            "POST",
            "/api/v1/jobs",
            {"json": {"handler": "echo", "delay": 1, "run_at": "2030-01-01T00:00:00Z"}},
            422,
        ),
        (
            "run-at-words",
            "POST",
            "/api/v1/jobs",
            {"json": {"handler": "echo", "run_at": "tomorrow"}},
            422,
        ),
        (
            "run-at-naive",
            "POST",
            "/api/v1/jobs",
            {"json": {"handler": "echo", "run_at": "2030-01-01T00:00:00"}},
            422,
        ),
        (
            "key-bad",
            "POST",
            "/api/v1/jobs",
            {"json": {"handler": "echo", "idempotency_key": "../x"}},
            422,
        ),
        (
            "key-header-bad",
            "POST",
            "/api/v1/jobs",
            {"json": {"handler": "echo"}, "headers": {"Idempotency-Key": "a b"}},
            422,
        ),
        (
            "text-plain",
            "POST",
            "/api/v1/jobs",
            {"content": b'{"handler": "echo"}', "headers": {"Content-Type": "text/plain"}},
            415,
        ),
        ("no-content-type", "POST", "/api/v1/jobs", {"content": b'{"handler": "echo"}'}, 415),
        ("form", "POST", "/api/v1/jobs", {"data": {"handler": "echo"}}, 415),
        (
            "oversize",
            "POST",
            "/api/v1/jobs",
            {"json": {"handler": "echo", "payload": "x" * LIMIT}},
            413,
        ),
        ("batch-malformed", "POST", "/api/v1/jobs/batch", _j('{"jobs": [}'), 400),
        (
            "batch-over-limit",
            "POST",
            "/api/v1/jobs/batch",
            {"json": {"jobs": [{"handler": "echo"}] * 1001}},
            413,
        ),  # 1001 jobs are over 4 KiB too
        (
            "batch-one-bad",
            "POST",
            "/api/v1/jobs/batch",
            {"json": {"jobs": [{"handler": "echo"}, {"handler": "../x"}]}},
            422,
        ),
        ("batch-not-list", "POST", "/api/v1/jobs/batch", {"json": {"jobs": "echo"}}, 422),
        ("compat-jobs-bad", "POST", "/jobs", {"json": {"name": "a b"}}, 422),
        (
            "compat-jobs-type",
            "POST",
            "/jobs",
            {"content": b"{}", "headers": {"Content-Type": "text/xml"}},
            415,
        ),
        (
            "enqueue-bad-utf8",
            "POST",
            "/enqueue",
            {"content": b"\xff\xfe", "headers": {"Content-Type": "text/plain"}},
            400,
        ),
        ("enqueue-bad-json", "POST", "/enqueue", _j("{nope"), 400),
        (
            "enqueue-xml",
            "POST",
            "/enqueue",
            {"content": b"<a/>", "headers": {"Content-Type": "application/xml"}},
            415,
        ),
        ("enqueue-oversize", "POST", "/enqueue", {"content": b"x" * (LIMIT + 1)}, 413),
        ("requeue-ids-type", "POST", "/api/v1/dead-letter/requeue", {"json": {"ids": "abc"}}, 422),
        (
            "requeue-ids-bad",
            "POST",
            "/api/v1/dead-letter/requeue",
            {"json": {"ids": ["../x"]}},
            422,
        ),
        (
            "requeue-mixed",
            "POST",
            "/api/v1/dead-letter/requeue",
            {"json": {"ids": ["A"], "queue": "q"}},
            422,
        ),
        ("requeue-all-type", "POST", "/api/v1/dead-letter/requeue", {"json": {"all": "yes"}}, 422),
        ("requeue-queue-bad", "POST", "/api/v1/dead-letter/requeue", {"json": {"queue": 5}}, 422),
        ("list-limit-0", "GET", "/api/v1/jobs?limit=0", {}, 422),
        ("list-limit-word", "GET", "/api/v1/jobs?limit=ten", {}, 422),
        ("list-limit-huge", "GET", "/api/v1/jobs?limit=99999999999999999999999", {}, 422),
        ("list-limit-unicode-digits", "GET", "/api/v1/jobs?limit=%D9%A3", {}, 422),
        ("list-state-bad", "GET", "/api/v1/jobs?state=finished", {}, 422),
        ("list-queue-bad", "GET", "/api/v1/jobs?queue=..%2Fx", {}, 422),
        ("list-cursor-sql", "GET", "/api/v1/jobs?cursor=%27%3B%20DROP%20TABLE%20jobs", {}, 422),
        ("dlq-limit-bad", "GET", "/api/v1/dead-letter?limit=-5", {}, 422),
        ("wait-timeout-high", "GET", "/api/v1/jobs/{id}/wait?timeout=61", {}, 422),
        ("wait-timeout-nan", "GET", "/api/v1/jobs/{id}/wait?timeout=nan", {}, 422),
        ("wait-timeout-neg", "GET", "/api/v1/jobs/{id}/wait?timeout=-1", {}, 422),
        ("purge-older-bad", "DELETE", "/api/v1/dead-letter?older_than=-1", {}, 422),
        ("purge-older-inf", "DELETE", "/api/v1/dead-letter?older_than=inf", {}, 422),
        ("purge-queue-bad", "DELETE", "/api/v1/dead-letter?queue=%3Cx%3E", {}, 422),
        ("job-id-traversal", "GET", "/api/v1/jobs/..%2F..%2Fetc%2Fpasswd", {}, 404),
        ("job-id-long", "GET", "/api/v1/jobs/" + "A" * 300, {}, 404),
        ("job-id-quote", "POST", "/api/v1/jobs/x'%20OR%201=1/cancel", {}, 404),
        ("queue-name-bad", "POST", "/api/v1/queues/%3Cscript%3E/pause", {}, 422),
        ("queue-name-newline", "POST", "/api/v1/queues/mail%0A/pause", {}, 422),
        (
            "batch-newline-name",
            "POST",
            "/api/v1/jobs/batch",
            {"json": {"jobs": [{"handler": "echo"}, {"handler": "echo\n"}]}},
            422,
        ),
        (
            "key-newline",
            "POST",
            "/api/v1/jobs",
            {"json": {"handler": "echo", "idempotency_key": "k\n"}},
            422,
        ),
        ("length-queue-bad", "GET", "/api/v1/queue/length?queue=a%20b", {}, 422),
        ("no-route", "GET", "/api/v2/jobs", {}, 404),
        ("wrong-method", "PUT", "/api/v1/jobs", {}, 405),
    ]
    + [
        (f"handler-{i}", "POST", "/api/v1/jobs", {"json": {"handler": name}}, 422)
        for i, name in enumerate(INJECTION_NAMES)
    ]
    + [
        (f"queue-{i}", "POST", "/api/v1/jobs", {"json": {"handler": "echo", "queue": name}}, 422)
        for i, name in enumerate(INJECTION_NAMES)
    ]
)


@pytest.fixture
async def bad_http(
    make_app: AppFactory, client: Client
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """An app with tokens and a small body limit; one existing queued job."""
    await client.enqueue("echo", {"existing": True})
    async with AsyncTestClient(app=make_app(tokens=True, max_body_bytes=LIMIT)) as tc:
        yield tc


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [pytest.param(m, p, k, s, id=i) for i, m, p, k, s in CASES],
)
async def test_bad_input_is_refused_and_changes_nothing(
    bad_http: AsyncTestClient[Litestar],
    client: Client,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
) -> None:
    before = await client.list_jobs(JobQuery(limit=1000))
    queues_before = await client.queues()
    kwargs = dict(kwargs)
    headers = {**auth("admin"), **kwargs.pop("headers", {})}
    path = path.replace("{id}", before.jobs[0].id)
    response = await bad_http.request(method, path, headers=headers, **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert {"type", "title", "detail"} <= set(problem)
    assert "Traceback" not in response.text
    after = await client.list_jobs(JobQuery(limit=1000))
    assert after.jobs == before.jobs
    assert await client.queues() == queues_before


async def test_lying_content_length_is_refused(
    bad_http: AsyncTestClient[Litestar], client: Client
) -> None:
    headers = {**auth("admin"), **JSON, "Content-Length": str(LIMIT * 10)}
    response = await bad_http.post("/api/v1/jobs", content=b'{"handler": "echo"}', headers=headers)
    assert response.status_code in (400, 413)
    assert len((await client.list_jobs(JobQuery())).jobs) == 1


async def test_auth_is_checked_before_the_body(bad_http: AsyncTestClient[Litestar]) -> None:
    response = await bad_http.post("/api/v1/jobs", content=b"x" * (LIMIT * 2), headers=JSON)
    assert response.status_code == 401
