"""Helpers shared by the dashboard tests: tokens of every scope, forms, seeded history."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from monoq.api.tokens import create_token
from monoq.config import ApiToken
from monoq.core.backend import Backend
from monoq.core.ids import new_id
from monoq.core.models import ErrorInfo, Finish, NewJob, Outcome, WorkerInfo

TOKENS: dict[str, str] = {}  # scope -> token
API_TOKENS: list[ApiToken] = []
TOKEN_LINES: list[str] = []  # api.tokens_file lines
for _scope in ("enqueue", "read", "admin"):
    _token, _line = create_token(_scope, name=f"ui-{_scope}")
    _name, _, _digest = _line.split()
    TOKENS[_scope] = _token
    API_TOKENS.append(ApiToken(name=_name, scope=_scope, sha256=_digest))
    TOKEN_LINES.append(_line)

# An admin token limited to the queue "mail" (in the tokens file of the browser tests).
MAIL_TOKEN, _line = create_token("admin", name="ui-mail", queues=["mail"])
TOKEN_LINES.append(_line)

SECRET = "hunter2-must-never-show"  # noqa: S105 - a value the dashboard must mask
_CSRF = re.compile(r'name="_csrf_token" value="([^"]+)"')

Client = AsyncTestClient[Litestar]


def csrf_of(html: str) -> str:
    """The CSRF token of the first form of a page."""
    found = _CSRF.search(html)
    assert found is not None, "the page has no CSRF field"
    return found.group(1)


async def form_token(tc: Client, path: str = "/ui/login") -> str:
    """GET a page (which sets the CSRF cookie) and answer its CSRF token."""
    page = await tc.get(path)
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


async def login(tc: Client, scope: str) -> None:
    """Log the test client in with the token of ``scope`` (read or admin)."""
    token = await form_token(tc)
    answer = await tc.post("/ui/login", data={"token": TOKENS[scope], "_csrf_token": token,
                                              "next": "/ui/"}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/ui/"


async def post_form(tc: Client, page: str, action: str, **fields: Any) -> Any:
    """POST ``fields`` to ``action`` with the CSRF token of ``page``, without following."""
    token = await form_token(tc, page)
    return await tc.post(action, data={"_csrf_token": token, **fields}, follow_redirects=False)


QUEUES = ("default", "mail", "reports")
HANDLERS = {"default": "echo", "mail": "send_email", "reports": "build_report"}
ERRORS = {"mail": ("SMTPTimeout", "smtp.example.com:587 did not answer in 30 s"),
          "reports": ("KeyError", "'region'"), "default": ("ValueError", "bad input")}


def _shape(minute: int) -> int:
    """Jobs finished in a minute of the seeded hour: a daily-traffic-like wave."""
    return 6 + (minute * 7) % 11 + (8 if 20 <= minute <= 35 else 0)


async def seed_history(backend: Backend, now: datetime, *, minutes: int = 60) -> None:
    """An hour of realistic traffic finished through the backend with past clocks: jobs in
    three queues, mostly completed, some failing once, a few dead-lettered, so the throughput
    counters, waits and the dead-letter queue hold what a live deployment would show."""
    lease = timedelta(seconds=30)
    for minute in range(minutes, 0, -1):
        t = now - timedelta(minutes=minute)
        count = _shape(minutes - minute)
        jobs = []
        for index in range(count):
            queue = QUEUES[index % 3]
            payload: dict[str, Any] = {"n": index, "minute": minute}
            if queue == "mail":
                payload = {"to": f"user{index}@example.com", "template": "welcome",
                           "smtp_password": SECRET}
            elif queue == "reports":
                payload = {"report": "daily-sales", "region": "eu-west"}
            jobs.append(NewJob(id=new_id(), queue=queue, handler=HANDLERS[queue],
                               payload_json=_json(payload), max_retries=2 if index % 9 else 0))
        await backend.enqueue(jobs, now=t)
        for queue in QUEUES:
            claimed = await backend.claim([queue], limit=100, lease_for=lease,
                                          worker_id="seed-worker", now=t + timedelta(seconds=2))
            finishes = []
            for position, item in enumerate(claimed):
                end = t + timedelta(seconds=3 + position % 5)
                if queue == "reports" and item.job.attempt == 1 and position % 7 == 3:
                    finishes.append(Finish(item, Outcome.RETRY, retry_at=end + timedelta(seconds=2),
                                           error=ErrorInfo("ConnectionResetError",
                                                           "warehouse closed the connection",
                                                           _traceback("ConnectionResetError"))))
                elif position % 9 == 0 and queue != "default":
                    error_type, message = ERRORS[queue]
                    finishes.append(Finish(item, Outcome.DEAD,
                                           error=ErrorInfo(error_type, message,
                                                           _traceback(error_type, message))))
                else:
                    finishes.append(Finish(item, Outcome.COMPLETED,
                                           result_json=_json({"ok": True, "ms": 40 + position})))
            if finishes:
                await backend.finish(finishes, now=t + timedelta(seconds=4))
        await backend.promote(now=t + timedelta(seconds=30), limit=1000)  # due retries


async def seed_workers(backend: Backend, now: datetime) -> None:
    """Two workers' heartbeats (a dashboard shows them under Workers)."""
    for number, queues in enumerate((("default", "mail"), ("reports",)), start=1):
        await backend.report_worker(
            WorkerInfo(id=f"web-{number}-4242", host=f"web-{number}", pid=4242 + number,
                       roles=("worker",), queues=queues, concurrency=10, busy=number * 3,
                       started_at=now - timedelta(hours=3), last_seen=now),
            ttl=timedelta(minutes=5))


def _traceback(error_type: str, message: str = "warehouse closed the connection") -> str:
    return ("Traceback (most recent call last):\n"
            '  File "/srv/app/tasks.py", line 42, in build_report\n'
            "    rows = warehouse.query(sql)\n"
            '  File "/srv/app/warehouse.py", line 88, in query\n'
            "    return self._conn.execute(sql).fetchall()\n"
            f"{error_type}: {message}")


def _json(value: Any) -> bytes:
    from monoq.core.codec import json_encode

    return json_encode(value)
