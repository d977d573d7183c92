"""The dashboard in a real headless Chromium (Debian's chromium, driven by Playwright) against a
real `monoq run` on a loopback port, over SQLite seeded with an hour of traffic.

Every page is screenshotted (full page) into $MONOQ_SCREENSHOTS (default: pytest's tmp folder)
so CI can keep them. With MONOQ_DOCS_SCREENSHOTS=1 the overview and a job's page are also saved,
at 1280x800, to docs/screenshots/ for the README.

Without /usr/bin/chromium these tests skip, except under CI (the CI variable set), where they
fail: .ci/run installs the browser. No browser is ever downloaded.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from monoq.core.models import utcnow
from monoq.registry import open_backend
from tests.seeds._support import Monoq, wait_until
from tests.ui._support import (
    MAIL_TOKEN,
    SECRET,
    TOKEN_LINES,
    TOKENS,
    seed_history,
    seed_workers,
)

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PAGES = {"overview": "/ui/", "queues": "/ui/queues", "jobs": "/ui/jobs", "dead": "/ui/dead",
         "schedules": "/ui/schedules", "workers": "/ui/workers"}
TIMEOUT_MS = 20_000

# Handlers of the seeded traffic, and ``gate``: it dead-letters at once while ./gate-closed
# exists, and succeeds (after a second, so a page can watch it run) once the file is gone.
HANDLERS = '''"""Handlers of the dashboard's browser tests."""

import time
from pathlib import Path

import monoq


@monoq.handler("gate")
def gate(ctx: monoq.Context, payload: object) -> dict:
    """Dead-letter while ./gate-closed exists; else take a second and succeed."""
    if Path("gate-closed").exists():
        raise monoq.SkipRetry("the gate is closed")
    time.sleep(1.0)
    return {"passed": True}


@monoq.handler("send_email")
def send_email(ctx: monoq.Context, payload: dict) -> dict:
    """Pretend to send a mail."""
    return {"sent_to": payload.get("to")}


@monoq.handler("build_report")
def build_report(ctx: monoq.Context, payload: dict) -> dict:
    """Pretend to build a report."""
    return {"rows": 1234, "region": payload.get("region")}
'''

CONFIG = f'''
[monoq]
imports = ["uihandlers"]

[backend]
url = "sqlite:///./monoq.db"

[worker]
queues = ["default", "mail", "reports"]
concurrency = 4

[api]
tokens_file = "tokens.txt"

[[schedules]]
id = "nightly-report"
handler = "build_report"
cron = "0 3 * * *"
timezone = "Europe/Paris"
payload = {{report = "daily-sales", region = "eu-west", api_token = "{SECRET}"}}
overlap = "skip"

[[schedules]]
id = "ping-crm"
handler = "echo"
every = "5m"
payload = {{url = "https://crm.example.com/health"}}
'''


def _chromium() -> str:
    """The browser binary; skip without it (or without Playwright), but fail under CI."""
    message = ""
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing (apt-get install chromium chromium-driver)"
    elif importlib.util.find_spec("playwright") is None:
        message = "playwright is not installed (pip install -e '.[test]')"
    if message:
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run the browser tests", pytrace=False)
        pytest.skip(message)
    return CHROMIUM


class Stack:
    """The running monoq, its API client (admin token) and the seeded ids."""

    def __init__(self, monoq: Monoq, shots: Path) -> None:
        self.monoq = monoq
        self.base = monoq.base
        self.api = httpx.Client(base_url=monoq.base, timeout=15,
                                headers={"Authorization": f"Bearer {TOKENS['admin']}"})
        self.shots = shots

    def job(self, job_id: str) -> dict[str, Any]:
        answer = self.api.get(f"/api/v1/jobs/{job_id}")
        assert answer.status_code == 200, answer.text
        data: dict[str, Any] = answer.json()
        return data

    def enqueue(self, handler: str, payload: Any, **fields: Any) -> str:
        answer = self.api.post("/api/v1/jobs", json={"handler": handler, "payload": payload,
                                                     **fields})
        assert answer.status_code == 201, answer.text
        job_id: str = answer.json()["id"]
        return job_id

    def wait_state(self, job_id: str, state: str) -> dict[str, Any]:
        wait_until(lambda: self.job(job_id)["state"] == state, timeout=20,
                   what=f"job {job_id} to be {state}", detail=self.monoq.logs)
        return self.job(job_id)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`monoq run` (api, worker, scheduler) over SQLite seeded with an hour of traffic."""
    _chromium()
    directory = tmp_path_factory.mktemp("ui-browser")
    (directory / "uihandlers.py").write_text(HANDLERS)
    (directory / "tokens.txt").write_text("\n".join(TOKEN_LINES) + "\n")

    async def seed() -> None:
        backend = open_backend(f"sqlite:///{directory / 'monoq.db'}", {})
        await backend.connect()
        try:
            now = utcnow()
            await seed_history(backend, now)
            await seed_workers(backend, now)
        finally:
            await backend.aclose()

    anyio.run(seed)
    monoq = Monoq(directory, CONFIG)
    try:
        monoq.start()
        named = os.environ.get("MONOQ_SCREENSHOTS")
        shots = Path(named) if named else tmp_path_factory.mktemp("screenshots")
        shots.mkdir(parents=True, exist_ok=True)
        stack = Stack(monoq, shots)
        # A backlog in a queue no worker consumes, for the overview's "worth a look".
        for n in range(3):
            stack.enqueue("echo", {"n": n}, queue="bulk")
        yield stack
        stack.api.close()
    finally:
        monoq.stop_all()


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Any]:
    """Debian's Chromium, headless, through Playwright (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Session:
    """A browser context for one scope, collecting console errors (CSP violations show
    there)."""

    def __init__(self, browser: Any, stack: Stack, scope: str, *, width: int = 1280,
                 height: int = 800, storage: Any = None) -> None:
        self.stack = stack
        self.scope = scope
        self.context = browser.new_context(base_url=stack.base, storage_state=storage,
                                           viewport={"width": width, "height": height})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _console(self, message: Any) -> None:
        # A refused form (403, 422) is logged as a failed load; the page answering it is the
        # point. Anything else, a CSP violation or a script error above all, fails the test.
        if message.type == "error" and not message.text.startswith(
                "Failed to load resource: the server responded with a status of 4"):
            self.errors.append(message.text)

    def login(self) -> None:
        page = self.page
        page.goto("/ui/")
        assert "/ui/login" in page.url  # sent to the login form first
        page.fill("#token", TOKENS[self.scope])
        page.click("#login-submit")
        page.wait_for_url(re.compile(r".*/ui/$"))

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.stack.shots / f"{self.scope}-{name}.png"),
                             full_page=True)

    def html(self) -> str:
        content: str = self.page.content()
        return content

    def close(self) -> None:
        self.context.close()
        assert not self.errors, self.errors


@pytest.fixture(scope="module")
def logins(browser: Any, stack: Stack) -> dict[str, Any]:
    """One login per scope (through the form), kept as storage state for later contexts."""
    states = {}
    for scope in ("read", "admin"):
        session = Session(browser, stack, scope)
        session.login()
        states[scope] = session.context.storage_state()
        session.close()
    return states


@pytest.fixture
def admin(browser: Any, stack: Stack, logins: dict[str, Any]) -> Iterator[Session]:
    """A browser session logged in with the admin token."""
    session = Session(browser, stack, "admin", storage=logins["admin"])
    yield session
    session.close()


@pytest.fixture
def reader(browser: Any, stack: Stack, logins: dict[str, Any]) -> Iterator[Session]:
    """A browser session logged in with the read token."""
    session = Session(browser, stack, "read", storage=logins["read"])
    yield session
    session.close()


def _seeded_mail_job(stack: Stack) -> str:
    answer = stack.api.get("/api/v1/jobs", params={"queue": "mail", "state": "completed",
                                                   "limit": 1})
    job_id: str = answer.json()["jobs"][0]["id"]
    return job_id


def _retried_job(stack: Stack) -> str:
    """A seeded job that failed once and then completed (two attempts to show)."""
    jobs = stack.api.get("/api/v1/jobs", params={"queue": "reports", "state": "completed",
                                                 "limit": 200}).json()["jobs"]
    job_id: str = next(job["id"] for job in jobs if job["attempt"] == 2)
    return job_id


def _no_action_controls(session: Session) -> None:
    """No form that changes anything (logout aside), and no link to an admin-only page."""
    page = session.page
    posts = page.locator("form[method=post]:not([action$='/logout'])")
    assert posts.count() == 0, page.url
    admin_links = page.locator("a[href$='/edit'], a[href$='/_new'], a[href*='/delete'], "
                               "a[href*='/purge']")
    assert admin_links.count() == 0, page.url
    labels = {text.strip() for text in page.locator("button").all_inner_texts()}
    assert labels <= {"Log out", "Filter", "Open", "Live updates: on", "Live updates: off"}, labels


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["read", "admin"])
def test_each_scope_logs_in_and_sees_every_page(browser: Any, stack: Stack, scope: str) -> None:
    session = Session(browser, stack, scope)
    try:
        session.login()
        page = session.page
        job_id = _seeded_mail_job(stack)
        visits = {**PAGES, "job": f"/ui/jobs/{job_id}", "schedule": "/ui/schedules/nightly-report"}
        if scope == "admin":
            visits.update({"schedule-form": "/ui/schedules/nightly-report/edit",
                           "purge": "/ui/dead/purge?older_than=0s"})
        for name, path in visits.items():
            answer = page.goto(path)
            assert answer is not None and answer.status == 200, path
            assert page.locator("main h1").count() == 1
            assert SECRET not in session.html(), path  # masked on every page
            if scope == "read":
                _no_action_controls(session)
            session.shot(name)
        page.goto("/ui/")
        assert page.locator("svg.chart-svg rect.bar-completed").count() == 60
        assert f"ui-{scope} · {scope}" in page.inner_text("header")
        if os.environ.get("MONOQ_DOCS_SCREENSHOTS") and scope == "admin":
            DOCS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(DOCS / "overview.png"))
            page.goto(f"/ui/jobs/{_retried_job(stack)}")
            page.screenshot(path=str(DOCS / "job.png"))
        page.click("#logout")
        page.wait_for_url(re.compile(r".*/ui/login.*"))
        page.goto("/ui/queues")
        assert "/ui/login" in page.url  # logged out for good
    finally:
        session.close()


def test_an_enqueue_token_gets_no_dashboard(browser: Any, stack: Stack) -> None:
    session = Session(browser, stack, "enqueue")
    try:
        page = session.page
        page.goto("/ui/login")
        page.fill("#token", TOKENS["enqueue"])
        page.click("#login-submit")
        page.wait_for_load_state()
        assert "No dashboard for this token" in page.inner_text("main")
        page.goto("/ui/")
        assert "/ui/login" in page.url
        session.shot("enqueue-refused")
    finally:
        session.close()


def test_a_queue_limited_token_sees_and_acts_on_its_queue_only(browser: Any,
                                                               stack: Stack) -> None:
    session = Session(browser, stack, "mail")
    try:
        page = session.page
        page.goto("/ui/login")
        page.fill("#token", MAIL_TOKEN)
        page.click("#login-submit")
        page.wait_for_url(re.compile(r".*/ui/$"))
        assert "ui-mail · admin · mail" in page.inner_text("header")
        page.goto("/ui/queues")
        queues = page.locator("main table tbody th[scope=row]").all_inner_texts()
        assert queues == ["mail"], queues
        session.shot("queue-limited-queues")
        page.goto("/ui/jobs")
        listed = page.locator("main table tbody tr").count()
        assert listed > 0
        assert "reports" not in page.inner_text("main") and "bulk" not in page.inner_text("main")
        foreign = page.goto("/ui/jobs?queue=reports")
        assert foreign is not None and foreign.status == 403
        assert "limited to the queues mail" in page.inner_text("main")
        session.shot("queue-limited-refused")
    finally:
        session.close()


def test_usable_at_375_px_and_from_the_keyboard(browser: Any, stack: Stack,
                                                logins: dict[str, Any]) -> None:
    session = Session(browser, stack, "admin", width=375, height=740, storage=logins["admin"])
    try:
        page = session.page
        for name, path in PAGES.items():
            page.goto(path)
            overflow = page.evaluate("document.documentElement.scrollWidth")
            assert overflow <= 375, f"{path} is {overflow} px wide at 375 px"
            session.shot(f"375-{name}")
        page.goto("/ui/queues")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        page.keyboard.press("Enter")
        assert page.evaluate("location.hash") == "#main"
    finally:
        session.close()


def test_requeue_a_dead_job_and_watch_it_complete(admin: Session, stack: Stack) -> None:
    gate = stack.monoq.dir / "gate-closed"
    gate.touch()
    job_id = stack.enqueue("gate", {"order": 42}, queue="default")
    stack.wait_state(job_id, "dead")
    gate.unlink()
    page = admin.page
    page.goto("/ui/dead?queue=default")
    page.check(f"#pick-{job_id}")
    page.click("#requeue-selected")
    page.wait_for_url(re.compile(r".*notice=requeued.*"))
    assert "1 dead job(s) requeued." in page.inner_text(".notice")
    page.goto(f"/ui/jobs/{job_id}")
    # The page refreshes itself (htmx polling) until the job is done: no reload here.
    page.locator("#job-live .job-head .badge").filter(has_text="completed").wait_for()
    admin.shot("job-completed")
    assert stack.job(job_id)["state"] == "completed"
    assert page.locator(".attempt").count() == 2  # the dead attempt and the one that passed


def test_pages_refresh_themselves_and_stop_while_hidden(admin: Session, stack: Stack) -> None:
    page = admin.page
    page.goto("/ui/jobs?queue=live-check")
    assert "No job matches." in page.inner_text("#jobs-live")
    job_id = stack.enqueue("echo", {"n": 1}, queue="live-check")
    page.locator(f"#jobs-live a[href='/ui/jobs/{job_id}']").wait_for()  # without a reload
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if r.headers.get("hx-request") else None)
    page.evaluate("""() => {
        Object.defineProperty(document, 'visibilityState', {value: 'hidden', configurable: true});
        document.dispatchEvent(new Event('visibilitychange'));
    }""")
    page.wait_for_timeout(2500)  # over a poll period: no refresh may happen while hidden
    assert polls == []
    with page.expect_request(lambda r: bool(r.headers.get("hx-request")), timeout=3000):
        page.evaluate("""() => {
            Object.defineProperty(document, 'visibilityState', {value: 'visible',
                                                                configurable: true});
            document.dispatchEvent(new Event('visibilitychange'));
        }""")


def test_pause_and_resume_a_queue_from_the_keyboard(admin: Session, stack: Stack) -> None:
    page = admin.page
    page.goto("/ui/queues")
    page.focus("#pause-mail")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*notice=paused.*"))
    assert stack.api.get("/api/v1/queues/mail").json()["paused"] is True
    assert page.locator("#resume-mail").is_visible()
    admin.shot("queues-paused")
    page.focus("#resume-mail")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*notice=resumed.*"))
    assert stack.api.get("/api/v1/queues/mail").json()["paused"] is False
    assert page.locator("#pause-mail").is_visible()


def test_trigger_a_schedule(admin: Session, stack: Stack) -> None:
    page = admin.page
    page.goto("/ui/schedules")
    page.click("#trigger-ping-crm")
    page.wait_for_url(re.compile(r".*/ui/jobs/[^/?]+\?notice=triggered$"))
    job_id = page.url.split("/ui/jobs/")[1].split("?")[0]
    assert "Schedule triggered" in page.inner_text(".notice")
    assert page.locator("a[href='/ui/schedules/ping-crm']").count() == 1
    assert stack.wait_state(job_id, "completed")["schedule_id"] == "ping-crm"


def test_a_bad_cron_expression_is_shown_next_to_its_field(admin: Session, stack: Stack) -> None:
    page = admin.page
    page.goto("/ui/schedules")
    page.click("#schedule-new")
    page.fill("#s-id", "broken")
    page.fill("#s-handler", "echo")
    page.fill("#s-cron", "every day at 3")
    page.click("#schedule-save")
    error = page.locator("#cron-error")
    error.wait_for()
    assert "cron" in page.locator("label[for=s-cron]").inner_text().lower()
    assert "every day at 3" in error.inner_text()
    assert page.get_attribute("#s-cron", "aria-invalid") == "true"
    assert page.input_value("#s-cron") == "every day at 3"  # what was typed is kept
    admin.shot("schedule-form-error")
    assert stack.api.get("/api/v1/schedules/broken").status_code == 404
    page.fill("#s-cron", "30 2 * * 1-5")
    page.click("#schedule-save")
    page.wait_for_url(re.compile(r".*/ui/schedules/broken\?notice=created$"))
    assert stack.api.get("/api/v1/schedules/broken").json()["cron"] == "30 2 * * 1-5"


def test_read_has_no_buttons_and_its_forged_post_is_403(reader: Session, stack: Stack) -> None:
    page = reader.page
    for path in PAGES.values():
        page.goto(path)
        _no_action_controls(reader)
    token = page.get_attribute("form[action$='/logout'] input[name=_csrf_token]", "value")
    assert token
    forged = reader.context.request.post(f"{stack.base}/ui/queues/default/pause",
                                         form={"_csrf_token": token}, max_redirects=0)
    assert forged.status == 403
    assert stack.api.get("/api/v1/queues/default").json()["paused"] is False


def test_a_post_without_the_csrf_token_is_refused(admin: Session, stack: Stack) -> None:
    admin.page.goto("/ui/queues")
    refused = admin.context.request.post(f"{stack.base}/ui/queues/default/pause", form={},
                                         max_redirects=0)
    assert refused.status == 403
    assert "CSRF" in refused.text()
    assert stack.api.get("/api/v1/queues/default").json()["paused"] is False


@pytest.mark.parametrize("scope", ["read", "admin"])
def test_secret_named_keys_never_appear(browser: Any, stack: Stack, logins: dict[str, Any],
                                        scope: str) -> None:
    session = Session(browser, stack, scope, storage=logins[scope])
    try:
        job_id = stack.enqueue("echo", {"to": "ops@example.com",
                                        "headers": {"Authorization": f"Bearer {SECRET}"},
                                        "api_key": SECRET})
        stack.wait_state(job_id, "completed")
        for path in (f"/ui/jobs/{job_id}", f"/ui/jobs/{_seeded_mail_job(stack)}",
                     "/ui/schedules/nightly-report", "/ui/jobs", "/ui/dead"):
            session.page.goto(path)
            assert SECRET not in session.html(), path
        if scope == "admin":
            session.page.goto(f"/ui/jobs/{job_id}")
            assert "ops@example.com" in session.html()  # the rest of the payload shows
    finally:
        session.close()
