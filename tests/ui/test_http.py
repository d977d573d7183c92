"""The dashboard over HTTP: login and sessions, scopes, CSRF, security headers, masking,
payload visibility, and the actions, through litestar's test client."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from litestar.testing import AsyncTestClient

from monoq.backends.memory import MemoryBackend
from monoq.client import Client
from monoq.core.models import ErrorInfo, Finish, JobQuery, JobState, Outcome, Progress
from monoq.ui.session import CSRF_COOKIE, SESSION_COOKIE
from tests.api._support import finish_job
from tests.ui._support import SECRET, TOKENS, csrf_of, form_token, login, post_form
from tests.ui._support import Client as Http
from tests.ui.conftest import AppFactory

PAGES = ["/ui/", "/ui/queues", "/ui/jobs", "/ui/dead", "/ui/schedules", "/ui/workers"]
ACTION_BUTTON = re.compile(r'<form method="post" action="/ui/(?!logout)')


async def _job_and_schedule(client: Client) -> tuple[str, str]:
    """A queued job with a secret in its payload, a dead one, and a schedule."""
    job = await client.enqueue("echo", {"to": "a@b.c", "password": SECRET,
                                        "nested": [{"Api-Key": SECRET, "keep": "visible"}]})
    dead = await client.enqueue("echo", {"authorization": f"Bearer {SECRET}"}, queue="mail")
    await finish_job(client, dead.id, Outcome.DEAD)
    await client.put_schedule(client.build_schedule(
        {"id": "nightly", "handler": "echo", "cron": "0 3 * * *",
         "payload": {"db": {"password": SECRET}, "report": "daily"}}))
    return job.id, dead.id


def _all_pages(job_id: str, dead_id: str) -> list[str]:
    return [*PAGES, f"/ui/jobs/{job_id}", f"/ui/jobs/{dead_id}", "/ui/schedules/nightly"]


# ---------------------------------------------------------------------------------------------
# Mounting, headers


async def test_root_redirects_to_the_dashboard(secured: Http) -> None:
    answer = await secured.get("/", follow_redirects=False)
    assert answer.status_code == 302
    assert answer.headers["location"] == "/ui/"


async def test_paths_that_only_start_like_the_dashboard_stay_api_404s(secured: Http) -> None:
    answer = await secured.get("/uix")
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"


async def test_disabled_dashboard_is_not_served(make_app: AppFactory) -> None:
    async with AsyncTestClient(app=make_app(enabled=False), base_url="http://127.0.0.1") as tc:
        assert (await tc.get("/ui/", follow_redirects=False)).status_code == 404
        assert (await tc.get("/", follow_redirects=False)).status_code == 404
        assert (await tc.get("/healthz")).status_code == 200


@pytest.mark.parametrize("path", ["/ui/login", "/ui/static/app.css", "/ui/nowhere", "/ui/"])
async def test_every_response_carries_the_security_headers(
    secured: Http, path: str
) -> None:
    answer = await secured.get(path, follow_redirects=False)
    csp = answer.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "same-origin"


async def test_static_files_need_no_login(secured: Http) -> None:
    for name in ("app.css", "app.js", "vendor/htmx.min.js", "favicon.svg"):
        answer = await secured.get(f"/ui/static/{name}", follow_redirects=False)
        assert answer.status_code == 200, name
    assert (await secured.get("/ui/static/nope.js")).status_code == 404
    assert (await secured.get("/ui/static/../auth.py")).status_code == 404


async def test_pages_are_not_cached_but_static_files_are(
    open_ui: Http,
) -> None:
    assert (await open_ui.get("/ui/")).headers["cache-control"] == "no-store"
    static = await open_ui.get("/ui/static/vendor/htmx.min.js")
    assert static.status_code == 200
    assert "max-age" in static.headers["cache-control"]


async def test_json_api_keeps_working_with_bearer_tokens_and_no_csrf(
    secured: Http, client: Client
) -> None:
    """CSRF protection belongs to the dashboard: the API's POSTs take bearer tokens alone."""
    answer = await secured.post("/api/v1/jobs", json={"handler": "echo", "payload": 1},
                                headers={"Authorization": f"Bearer {TOKENS['admin']}"})
    assert answer.status_code == 201, answer.text
    assert answer.headers["content-type"] == "application/json"
    paused = await secured.post("/api/v1/queues/default/pause",
                                headers={"Authorization": f"Bearer {TOKENS['admin']}"})
    assert paused.status_code == 200
    assert (await client.queues())[0].paused


async def test_api_routes_do_not_accept_a_dashboard_session(
    secured: Http,
) -> None:
    await login(secured, "admin")
    answer = await secured.get("/api/v1/jobs")
    assert answer.status_code == 401  # the cookie is scoped to /ui and is not a bearer token


# ---------------------------------------------------------------------------------------------
# Login, sessions, scopes


async def test_pages_ask_for_a_login_first(secured: Http) -> None:
    answer = await secured.get("/ui/jobs?state=dead", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/login?next=%2Fui%2Fjobs%3Fstate%3Ddead"
    htmx = await secured.get("/ui/queues", headers={"HX-Request": "true"})
    assert htmx.status_code == 401
    assert htmx.headers["hx-redirect"].startswith("/ui/login?next=")


@pytest.mark.parametrize("scope", ["read", "admin"])
async def test_login_sets_a_strict_http_only_expiring_session(
    secured: Http, scope: str
) -> None:
    token = await form_token(secured)
    answer = await secured.post("/ui/login", data={
        "token": TOKENS[scope], "_csrf_token": token, "next": "/ui/dead?queue=mail"},
        follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/dead?queue=mail"
    cookie = next(c for c in answer.headers.get_list("set-cookie")
                  if c.startswith(SESSION_COOKIE + "="))
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "max-age", "path"} <= attributes
    assert "SameSite=Strict" in cookie or "samesite=strict" in cookie.lower()
    assert "Path=/ui" in cookie
    assert TOKENS[scope] not in cookie
    page = await secured.get("/ui/")
    assert page.status_code == 200
    assert f"ui-{scope} · {scope}" in page.text


async def test_enqueue_tokens_get_no_dashboard(secured: Http) -> None:
    token = await form_token(secured)
    answer = await secured.post("/ui/login", data={"token": TOKENS["enqueue"],
                                                   "_csrf_token": token})
    assert answer.status_code == 403
    assert "read or admin token" in answer.text
    assert SESSION_COOKIE not in answer.headers.get("set-cookie", "")
    assert (await secured.get("/ui/", follow_redirects=False)).status_code == 303


async def test_a_wrong_token_is_refused_on_the_form(secured: Http) -> None:
    token = await form_token(secured)
    answer = await secured.post("/ui/login", data={"token": "mq_wrong", "_csrf_token": token})
    assert answer.status_code == 401
    assert "This token is not valid." in answer.text
    assert "mq_wrong" not in answer.text


async def test_login_never_sends_anyone_to_another_site(secured: Http
                                                        ) -> None:
    for target in ["https://evil.example/", "//evil.example/ui", "/ui//evil.example",
                   "/uix", "/ui\\..\\x"]:
        token = await form_token(secured)
        secured.cookies.delete(SESSION_COOKIE)
        answer = await secured.post("/ui/login", data={
            "token": TOKENS["read"], "_csrf_token": token, "next": target},
            follow_redirects=False)
        assert answer.headers["location"] == "/ui/", target


async def test_logout_ends_the_session(secured: Http) -> None:
    await login(secured, "admin")
    stolen = secured.cookies.get(SESSION_COOKIE)
    assert stolen
    answer = await post_form(secured, "/ui/", "/ui/logout")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/ui/login")
    assert (await secured.get("/ui/", follow_redirects=False)).status_code == 303
    # The same cookie, replayed, is refused too: logout ended the session, not just the cookie.
    secured.cookies.set(SESSION_COOKIE, stolen, path="/ui")
    assert (await secured.get("/ui/", follow_redirects=False)).status_code == 303


async def test_forged_or_tampered_sessions_are_refused(secured: Http) -> None:
    await login(secured, "read")
    value = secured.cookies.get(SESSION_COOKIE)
    assert value
    body, _, mac = value.partition(".")
    import base64
    import json

    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    data["s"] = "admin"  # try to upgrade the scope
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    secured.cookies.set(SESSION_COOKIE, f"{forged}.{mac}", path="/ui")
    assert (await secured.get("/ui/", follow_redirects=False)).status_code == 303


def test_sessions_expire_and_follow_key_rotation() -> None:
    from monoq.api.tokens import TokenTable, load_tokens
    from monoq.ui.session import Sessions
    from tests.ui._support import API_TOKENS

    table = TokenTable(load_tokens(API_TOKENS, None))
    now = [1_000_000.0]
    old = Sessions(["k" * 32], 600, table, clock=lambda: now[0])
    value, viewer = old.issue("ui-read", "read")
    assert old.check(value) == viewer
    rotated = Sessions(["n" * 32, "k" * 32], 600, table, clock=lambda: now[0])
    assert rotated.check(value) == viewer  # an old key still verifies
    assert Sessions(["n" * 32], 600, table, clock=lambda: now[0]).check(value) is None
    now[0] += 601
    assert old.check(value) is None
    # A token removed from the configuration ends its sessions.
    fresh, _ = old.issue("ui-read", "read")
    assert Sessions(["k" * 32], 600, TokenTable([]), clock=lambda: now[0]).check(fresh) is None


async def test_read_sees_every_page_without_action_buttons(
    secured: Http, client: Client
) -> None:
    job_id, dead_id = await _job_and_schedule(client)
    await login(secured, "read")
    for path in [*_all_pages(job_id, dead_id), "/ui/jobs?queue=mail&state=dead"]:
        page = await secured.get(path)
        assert page.status_code == 200, path
        assert not ACTION_BUTTON.search(page.text), path
        assert "New schedule" not in page.text
    for path in ["/ui/schedules/_new", "/ui/schedules/nightly/edit", "/ui/dead/purge"]:
        assert (await secured.get(path)).status_code == 403, path


async def test_admin_sees_the_actions(secured: Http, client: Client) -> None:
    job_id, dead_id = await _job_and_schedule(client)
    await login(secured, "admin")
    assert 'action="/ui/queues/default/pause"' in (await secured.get("/ui/queues")).text
    assert f'action="/ui/jobs/{job_id}/cancel"' in (await secured.get(f"/ui/jobs/{job_id}")).text
    dead_page = (await secured.get(f"/ui/jobs/{dead_id}")).text
    assert f'action="/ui/jobs/{dead_id}/retry"' in dead_page
    assert f'action="/ui/jobs/{dead_id}/cancel"' not in dead_page  # the state does not allow it
    schedules = (await secured.get("/ui/schedules")).text
    assert 'action="/ui/schedules/nightly/trigger"' in schedules
    assert 'action="/ui/schedules/nightly/disable"' in schedules


async def test_a_read_post_is_403_and_changes_nothing(
    secured: Http, client: Client
) -> None:
    job_id, dead_id = await _job_and_schedule(client)
    await login(secured, "read")
    attempts = {
        "/ui/queues/default/pause": {},
        f"/ui/jobs/{job_id}/cancel": {},
        f"/ui/jobs/{dead_id}/retry": {},
        "/ui/dead/requeue": {"all": "1"},
        "/ui/dead/purge": {"older_than": "0s"},
        "/ui/schedules/nightly/trigger": {},
        "/ui/schedules/nightly/delete": {},
        "/ui/schedules/_new": {"id": "x", "handler": "echo", "kind": "every", "every": "1m"},
    }
    before = await client.list_jobs(JobQuery(limit=1000))
    for action, fields in attempts.items():
        answer = await post_form(secured, "/ui/", action, **fields)
        assert answer.status_code == 403, action
        assert "may look at the dashboard but not act" in answer.text
    assert (await client.list_jobs(JobQuery(limit=1000))).jobs == before.jobs
    assert not (await client.queues())[0].paused
    assert [s.id for s in await client.list_schedules()] == ["nightly"]


async def test_a_post_without_the_csrf_token_is_refused(
    secured: Http, client: Client
) -> None:
    await client.enqueue("echo", 1)
    await login(secured, "admin")
    for data in ({}, {"_csrf_token": "0" * 128}):
        answer = await secured.post("/ui/queues/default/pause", data=data)
        assert answer.status_code == 403
        assert "CSRF" in answer.text
    # A token issued with another CSRF cookie (another browser's) does not pass either.
    foreign = await form_token(secured, "/ui/queues")
    secured.cookies.delete(CSRF_COOKIE)
    await secured.get("/ui/queues")  # a fresh CSRF cookie
    answer = await secured.post("/ui/queues/default/pause", data={"_csrf_token": foreign})
    assert answer.status_code == 403
    assert not (await client.queues())[0].paused
    good = await post_form(secured, "/ui/queues", "/ui/queues/default/pause")
    assert good.status_code == 303
    assert (await client.queues())[0].paused


async def test_the_login_form_itself_needs_the_csrf_token(
    secured: Http,
) -> None:
    await secured.get("/ui/login")
    answer = await secured.post("/ui/login", data={"token": TOKENS["admin"]})
    assert answer.status_code == 403
    assert SESSION_COOKIE not in answer.headers.get("set-cookie", "")


async def test_open_dashboard_needs_no_login_but_answers_loopback_names_only(
    open_ui: Http, make_app: AppFactory
) -> None:
    page = await open_ui.get("/ui/")
    assert page.status_code == 200
    assert "open · admin" in page.text
    assert (await open_ui.get("/ui/", headers={"Host": "localhost:8080"})).status_code == 200
    rebound = await open_ui.get("/ui/", headers={"Host": "attacker.example"})
    assert rebound.status_code == 403
    # Still CSRF-protected: a page elsewhere cannot make the browser act.
    assert (await open_ui.post("/ui/queues/default/pause")).status_code == 403
    public = make_app(tokens=False, api={"host": "0.0.0.0", "allow_public_bind": True})  # noqa: S104
    async with AsyncTestClient(app=public, base_url="http://monoq.internal") as tc:
        assert (await tc.get("/ui/")).status_code == 200  # the operator chose a public bind


# ---------------------------------------------------------------------------------------------
# Secrets and payloads


@pytest.mark.parametrize("scope", ["read", "admin"])
async def test_secret_named_keys_never_reach_the_html(
    make_app: AppFactory, client: Client, scope: str
) -> None:
    job_id, dead_id = await _job_and_schedule(client)
    done = await client.enqueue("echo", {"x": 1}, queue="results")
    await finish_job(client, done.id, Outcome.COMPLETED)
    async with AsyncTestClient(app=make_app(show_payloads="read"),
                               base_url="http://127.0.0.1") as tc:
        await login(tc, scope)
        pages = [*_all_pages(job_id, dead_id), f"/ui/jobs/{done.id}"]
        if scope == "admin":
            pages.append("/ui/schedules/nightly/edit")
        for path in pages:
            page = await tc.get(path)
            assert page.status_code == 200
            assert SECRET not in page.text, path
        job_page = (await tc.get(f"/ui/jobs/{job_id}")).text
        assert "********" in job_page and "visible" in job_page  # masked, not hidden


def test_masking_rules() -> None:
    from monoq.ui.masking import MASK, Masker

    masker = Masker(["password", "secret", "token", "authorization", "api_key"])
    value = {"db_password": "p", "X-Auth-Token": "t", "apiKey": "k", "client_secret": {"a": 1},
             "items": [{"Authorization": "Bearer x", "id": 3}], "tokens_left": 4, "user": "u"}
    assert masker.mask(value) == {
        "db_password": MASK, "X-Auth-Token": MASK, "apiKey": MASK, "client_secret": MASK,
        "items": [{"Authorization": MASK, "id": 3}], "tokens_left": MASK, "user": "u"}
    assert masker.mask([1, "password"]) == [1, "password"]  # values are not keys
    submitted = {"db": {"password": MASK, "host": "new"}, "token": "typed-anew"}
    stored = {"db": {"password": "old-secret", "host": "old"}, "token": "old-token"}
    assert masker.unmask(submitted, stored) == {"db": {"password": "old-secret", "host": "new"},
                                                "token": "typed-anew"}
    assert Masker(["custom_field"]).mask({"CUSTOM-FIELD": 1, "password": 2}) == {
        "CUSTOM-FIELD": MASK, "password": 2}


@pytest.mark.parametrize(
    ("mode", "scope", "shown"),
    [("admin", "admin", True), ("admin", "read", False), ("read", "read", True),
     ("never", "admin", False)],
)
async def test_show_payloads(make_app: AppFactory, client: Client, mode: str, scope: str,
                             shown: bool) -> None:
    job = await client.enqueue("echo", {"marker": "payload-marker-123"})
    await finish_job(client, job.id, Outcome.COMPLETED)
    async with AsyncTestClient(app=make_app(show_payloads=mode),
                               base_url="http://127.0.0.1") as tc:
        await login(tc, scope)
        page = (await tc.get(f"/ui/jobs/{job.id}")).text
    assert ("payload-marker-123" in page) is shown
    assert ('show_payloads = "' in page) is not shown


# ---------------------------------------------------------------------------------------------
# Actions


async def test_job_actions(secured: Http, client: Client) -> None:
    await login(secured, "admin")
    job = await client.enqueue("echo", {"n": 1}, delay=3600)
    page = f"/ui/jobs/{job.id}"
    answer = await post_form(secured, page, f"{page}/cancel")
    assert answer.status_code == 303
    assert answer.headers["location"] == f"{page}?notice=cancelled"
    assert (await client.get(job.id)).state is JobState.CANCELLED
    assert "Job cancelled." in (await secured.get(answer.headers["location"])).text
    again = await post_form(secured, page, f"{page}/cancel")
    assert again.status_code == 303  # cancelling a cancelled job changes nothing
    retried = await post_form(secured, page, f"{page}/retry")
    assert retried.status_code == 303
    assert (await client.get(job.id)).state is JobState.QUEUED
    conflict = await post_form(secured, page, f"{page}/retry")
    assert conflict.status_code == 409
    assert "only dead or cancelled jobs can be retried" in conflict.text
    done = await finish_job(client, job.id, Outcome.COMPLETED)
    copied = await post_form(secured, page, f"{page}/copy")
    assert copied.status_code == 303
    new_id = copied.headers["location"].split("/jobs/")[1].split("?")[0]
    new = await client.get(new_id)
    assert (new.handler, new.payload, new.queue, new.state) == (
        done.handler, done.payload, done.queue, JobState.QUEUED)
    missing = await secured.get("/ui/jobs/01NOSUCHJOB")
    assert missing.status_code == 404


async def test_jobs_page_filters_pages_and_looks_up(
    secured: Http, client: Client
) -> None:
    await login(secured, "read")
    ids = [(await client.enqueue("echo", n, queue="bulk")).id for n in range(55)]
    other = await client.enqueue("sleep", {"seconds": 1})
    first = (await secured.get("/ui/jobs?queue=bulk")).text
    assert ids[-1] in first and ids[5] in first and ids[4] not in first  # newest first, 50
    assert other.id not in first
    older = re.search(r'href="(/ui/jobs\?[^"]*cursor=[^"]+)"', first)
    assert older is not None
    second = (await secured.get(older.group(1).replace("&amp;", "&"))).text
    assert ids[0] in second and ids[-1] not in second
    lookup = await secured.get(f"/ui/jobs?id={other.id}", follow_redirects=False)
    assert lookup.headers["location"] == f"/ui/jobs/{other.id}"
    unknown = await secured.get("/ui/jobs?id=01NOPE")
    assert unknown.status_code == 404 and "No job has the id" in unknown.text
    bad = await secured.get("/ui/jobs?state=lost")
    assert bad.status_code == 422 and "is not a job state" in bad.text


async def test_dead_letter_requeue_selected_and_every_match(
    secured: Http, client: Client
) -> None:
    await login(secured, "admin")
    dead = []
    for n in range(4):
        job = await client.enqueue("echo", n, queue="mail" if n < 3 else "default")
        dead.append((await finish_job(client, job.id, Outcome.DEAD)).id)
    listing = await secured.get("/ui/dead?queue=mail")
    assert all(job_id in listing.text for job_id in dead[:3]) and dead[3] not in listing.text
    picked = await secured.post("/ui/dead/requeue", data={
        "_csrf_token": csrf_of(listing.text), "ids": [dead[0]], "queue": "mail"},
        follow_redirects=False)
    assert picked.headers["location"] == "/ui/dead?notice=requeued&n=1&queue=mail"
    assert (await client.get(dead[0])).state is JobState.QUEUED
    every = await post_form(secured, "/ui/dead", "/ui/dead/requeue", all="1", queue="mail",
                            error_type="RuntimeError")
    assert every.headers["location"].startswith("/ui/dead?notice=requeued&n=2")
    states = [(await client.get(job_id)).state for job_id in dead]
    assert states == [JobState.QUEUED] * 3 + [JobState.DEAD]
    nothing = await post_form(secured, "/ui/dead", "/ui/dead/requeue")
    assert "notice=nothing_selected" in nothing.headers["location"]


async def test_dead_letter_filters_check_their_input(
    secured: Http, client: Client
) -> None:
    await login(secured, "read")
    job = await client.enqueue("echo", 1)
    await finish_job(client, job.id, Outcome.DEAD)
    assert job.id in (await secured.get("/ui/dead?error_type=RuntimeError&within=1h")).text
    assert job.id not in (await secured.get("/ui/dead?error_type=KeyError")).text
    assert job.id not in (await secured.get("/ui/dead?before=2000-01-01T00:00")).text
    bad = await secured.get("/ui/dead?after=yesterday")
    assert bad.status_code == 422
    assert "is not a date and time" in bad.text


async def test_purge_asks_with_the_count_then_purges(
    secured: Http, client: Client, backend: MemoryBackend
) -> None:
    await login(secured, "admin")
    for n in range(3):
        job = await client.enqueue("echo", n)
        await finish_job(client, job.id, Outcome.DEAD)
    confirm = await secured.get("/ui/dead/purge?older_than=0s")
    assert confirm.status_code == 200
    assert "<strong>3</strong> dead jobs" in confirm.text
    assert "Purge 3 jobs" in confirm.text
    none_old = await secured.get("/ui/dead/purge?older_than=7d")
    assert "nothing to purge" in none_old.text
    answer = await secured.post("/ui/dead/purge", data={
        "_csrf_token": csrf_of(confirm.text), "older_than": "0s", "queue": ""},
        follow_redirects=False)
    assert answer.headers["location"] == "/ui/dead?notice=purged&n=3"
    assert await client.count_jobs(states={JobState.DEAD}) == 0
    assert (await secured.get("/ui/dead/purge?older_than=soon")).status_code == 422


async def test_schedule_form_shows_errors_inline_and_stores_nothing(
    secured: Http, client: Client
) -> None:
    await login(secured, "admin")
    fields = {"id": "tick", "handler": "echo", "kind": "cron", "cron": "61 * * * *",
              "timezone": "UTC", "payload": "{}", "queue": "default", "priority": "5",
              "max_retries": "", "timeout": "", "enabled": "on", "overlap": "allow",
              "misfire": "skip"}
    answer = await post_form(secured, "/ui/schedules/_new", "/ui/schedules/_new", **fields)
    assert answer.status_code == 422
    assert 'id="s-cron" name="cron" value="61 * * * *"' in answer.text  # the input is kept
    assert 'aria-invalid="true" aria-describedby="cron-error"' in answer.text
    assert re.search(r'<p class="field-error" id="cron-error">[^<]*not a valid cron', answer.text)
    for field, value, message in [("timezone", "Mars/Olympus", "timezone-error"),
                                  ("payload", "{nope", "payload-error"),
                                  ("max_retries", "many", "max_retries-error")]:
        bad = await post_form(secured, "/ui/schedules/_new", "/ui/schedules/_new",
                              **{**fields, "cron": "0 3 * * *", field: value})
        assert bad.status_code == 422
        assert f'id="{message}"' in bad.text, field
    assert await client.list_schedules() == []
    good = await post_form(secured, "/ui/schedules/_new", "/ui/schedules/_new",
                           **{**fields, "cron": "*/5 * * * *"})
    assert good.status_code == 303
    assert good.headers["location"] == "/ui/schedules/tick?notice=created"
    assert (await client.get_schedule("tick")).cron == "*/5 * * * *"
    taken = await post_form(secured, "/ui/schedules/_new", "/ui/schedules/_new",
                            **{**fields, "cron": "0 * * * *"})
    assert taken.status_code == 422 and "exists already" in taken.text


async def test_editing_a_schedule_keeps_its_masked_secrets(
    secured: Http, client: Client
) -> None:
    await _job_and_schedule(client)
    await login(secured, "admin")
    form = (await secured.get("/ui/schedules/nightly/edit")).text
    assert SECRET not in form
    payload = re.search(r'<textarea id="s-payload" name="payload"[^>]*>([^<]*)</textarea>',
                        form)
    assert payload is not None
    import html

    text = html.unescape(payload.group(1)).replace('"daily"', '"weekly"')
    answer = await secured.post("/ui/schedules/nightly/edit", data={
        "_csrf_token": csrf_of(form), "handler": "echo", "kind": "every", "every": "10m",
        "timezone": "UTC", "payload": text, "queue": "default", "priority": "5",
        "max_retries": "", "timeout": "", "enabled": "on", "overlap": "skip",
        "misfire": "skip"}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    stored = await client.get_schedule("nightly")
    assert stored.payload == {"db": {"password": SECRET}, "report": "weekly"}
    assert (stored.every, stored.cron, str(stored.overlap)) == (600.0, None, "skip")


async def test_schedule_actions(secured: Http, client: Client) -> None:
    await _job_and_schedule(client)
    await login(secured, "admin")
    off = await post_form(secured, "/ui/schedules", "/ui/schedules/nightly/disable")
    assert off.headers["location"] == "/ui/schedules?notice=disabled"
    assert not (await client.get_schedule("nightly")).enabled
    on = await post_form(secured, "/ui/schedules/nightly", "/ui/schedules/nightly/enable",
                         back="detail")
    assert on.headers["location"] == "/ui/schedules/nightly?notice=enabled"
    fired = await post_form(secured, "/ui/schedules", "/ui/schedules/nightly/trigger")
    job_id = fired.headers["location"].split("/jobs/")[1].split("?")[0]
    assert (await client.get(job_id)).schedule_id == "nightly"
    job_page = (await secured.get(f"/ui/jobs/{job_id}")).text
    assert 'href="/ui/schedules/nightly"' in job_page  # the run links to its schedule
    assert "Delete schedule nightly?" in (await secured.get("/ui/schedules/nightly/delete")).text
    gone = await post_form(secured, "/ui/schedules", "/ui/schedules/nightly/delete")
    assert gone.headers["location"] == "/ui/schedules?notice=deleted"
    assert await client.list_schedules() == []
    assert (await secured.get("/ui/schedules/nightly")).status_code == 404


async def test_queue_pause_and_resume(secured: Http, client: Client) -> None:
    await client.enqueue("echo", 1, queue="mail")
    await login(secured, "admin")
    paused = await post_form(secured, "/ui/queues", "/ui/queues/mail/pause")
    assert paused.headers["location"] == "/ui/queues?notice=paused"
    page = (await secured.get("/ui/queues")).text
    assert 'action="/ui/queues/mail/resume"' in page and "paused" in page
    await post_form(secured, "/ui/queues", "/ui/queues/mail/resume")
    assert not (await client.queues())[0].paused
    unknown = await post_form(secured, "/ui/queues", "/ui/queues/nope/pause")
    assert unknown.status_code == 422


async def test_overview_lists_problems(secured: Http, client: Client,
                                       backend: MemoryBackend) -> None:
    await login(secured, "read")
    old = client.clock() - timedelta(minutes=10)
    await backend.enqueue([client.build("echo", 1, queue="stuck")], now=old)
    dead = await client.enqueue("echo", 2)
    await finish_job(client, dead.id, Outcome.DEAD)
    await client.put_schedule(client.build_schedule(
        {"id": "hourly", "handler": "echo", "cron": "0 * * * *"}))
    page = (await secured.get("/ui/")).text
    assert "Queue stuck: the oldest of 1 queued jobs has waited 10 min" in page
    assert "no live worker consumes it" in page
    assert "The dead-letter queue is growing: 1 jobs died in the last 15 minutes" in page
    assert "No scheduler has run in the last 24 hours" in page
    await backend.beat("scheduler:s1", now=client.clock())
    assert "No scheduler has run" not in (await secured.get("/ui/")).text


async def test_stored_text_is_escaped_everywhere(secured: Http, client: Client) -> None:
    """Payloads, errors and tracebacks come from users and handlers: never markup."""
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    job = await client.enqueue("echo", {"note": evil}, queue="mail")
    now = client.clock()
    [lease] = await client.backend.claim(["mail"], limit=1, lease_for=timedelta(seconds=30),
                                         worker_id="w1", now=now)
    await client.backend.finish([Finish(lease, Outcome.DEAD,
                                        error=ErrorInfo("RuntimeError", evil, evil))], now=now)
    await login(secured, "admin")
    for path in (f"/ui/jobs/{job.id}", "/ui/dead", "/ui/jobs?queue=mail"):
        page = (await secured.get(path)).text
        assert "<script>alert" not in page and "<img src=x" not in page, path
        assert "&lt;script&gt;alert" in page, path


async def test_a_job_page_shows_its_progress(secured: Http, client: Client) -> None:
    job = await client.enqueue("echo", None)
    [lease] = await client.backend.claim(["default"], limit=1, lease_for=timedelta(seconds=30),
                                         worker_id="w", now=client.clock())
    await client.backend.report_progress([Progress(lease, 0.42, "row 420 of 1000")],
                                         now=client.clock())
    await login(secured, "read")
    page = (await secured.get(f"/ui/jobs/{job.id}")).text
    assert '<progress max="1" value="0.42">42%</progress> 42%' in page
    assert "row 420 of 1000" in page
    other = await client.enqueue("echo", None)
    assert "<progress" not in (await secured.get(f"/ui/jobs/{other.id}")).text
