"""The dashboard with queue-limited and expiring tokens: the session carries the token's queues
and never outlives the token; pages show only its queues; acting on another queue is a 403
page and changes nothing."""

import time
from datetime import UTC, datetime, timedelta

from litestar import Litestar
from litestar.testing import AsyncTestClient

from monoq.api import create_app
from monoq.api.tokens import TokenTable, create_token, parse_tokens_file
from monoq.client import Client
from monoq.config import ApiConfig, ApiToken, UiConfig
from monoq.core.models import JobQuery, Outcome
from monoq.ui.session import Sessions
from tests.api._support import finish_job
from tests.ui._support import form_token, post_form

Http = AsyncTestClient[Litestar]


def _token(name: str, queues: list[str] | None, expires: datetime | None = None
           ) -> tuple[str, ApiToken]:
    token, line = create_token("admin", name=name, queues=queues, expires=expires)
    fields: dict[str, object] = {"name": name, "scope": "admin", "sha256": line.split()[2]}
    if queues:
        fields["queues"] = queues
    if expires:
        fields["expires"] = expires.isoformat()
    return token, ApiToken(**fields)  # type: ignore[arg-type]


MAIL, MAIL_ENTRY = _token("mail-team", ["mail"])
OLD, OLD_ENTRY = _token("old", None, datetime.now(UTC) - timedelta(minutes=1))


def _app(client: Client) -> Litestar:
    return create_app(client, ApiConfig(tokens=(MAIL_ENTRY, OLD_ENTRY)), ui_config=UiConfig())


async def _login(tc: Http, token: str) -> int:
    csrf = await form_token(tc)
    answer = await tc.post("/ui/login", data={"token": token, "_csrf_token": csrf,
                                              "next": "/ui/"}, follow_redirects=False)
    return answer.status_code


async def test_a_queue_limited_login_sees_and_acts_on_its_queues_only(client: Client) -> None:
    mail = [await client.enqueue("echo", {"n": n}, queue="mail", max_retries=0)
            for n in range(2)]
    billing = [await client.enqueue("echo", {"n": n}, queue="billing", max_retries=0)
               for n in range(2)]
    await finish_job(client, mail[0].id, Outcome.DEAD)
    await finish_job(client, billing[0].id, Outcome.DEAD)
    for sid, queue in (("mail-digest", "mail"), ("billing-run", "billing")):
        await client.put_schedule(client.build_schedule(
            {"id": sid, "handler": "echo", "every": "1h", "queue": queue}))
    async with AsyncTestClient(app=_app(client), base_url="http://127.0.0.1:8080") as tc:
        assert await _login(tc, MAIL) == 303
        overview = await tc.get("/ui/")
        assert overview.status_code == 200
        assert "mail-team · admin · mail" in overview.text
        for path in ("/ui/", "/ui/jobs", "/ui/queues", "/ui/dead", "/ui/schedules"):
            text = (await tc.get(path)).text
            assert "billing" not in text, path
        jobs = (await tc.get("/ui/jobs")).text
        assert mail[1].id in jobs and billing[1].id not in jobs
        assert mail[0].id in (await tc.get("/ui/dead")).text
        assert "mail-digest" in (await tc.get("/ui/schedules")).text
        assert (await tc.get(f"/ui/jobs/{mail[1].id}")).status_code == 200
        foreign = await tc.get(f"/ui/jobs/{billing[1].id}")
        assert foreign.status_code == 403 and "limited to the queues mail" in foreign.text
        assert (await tc.get("/ui/schedules/billing-run")).status_code == 403
        assert (await tc.get("/ui/jobs", params={"queue": "billing"})).status_code == 403
        for action, page in [(f"/ui/jobs/{billing[1].id}/cancel", "/ui/jobs"),
                             (f"/ui/jobs/{billing[0].id}/retry", "/ui/jobs"),
                             ("/ui/queues/billing/pause", "/ui/queues"),
                             ("/ui/schedules/billing-run/trigger", "/ui/schedules")]:
            refused = await post_form(tc, page, action)
            assert refused.status_code == 403, action
        refused = await post_form(tc, "/ui/dead", "/ui/dead/requeue",
                                  ids=[mail[0].id, billing[0].id])
        assert refused.status_code == 403
        everything = await post_form(tc, "/ui/dead", "/ui/dead/requeue", all="1")
        assert everything.status_code == 303
        purged = await post_form(tc, "/ui/dead", "/ui/dead/purge", queue="", older_than="")
        assert purged.status_code == 303
        mine = await post_form(tc, "/ui/jobs", f"/ui/jobs/{mail[1].id}/cancel")
        assert mine.status_code == 303
    assert (await client.get(billing[1].id)).state == "queued"
    assert (await client.get(billing[0].id)).state == "dead"  # neither requeued nor purged
    assert (await client.get(mail[0].id)).state == "queued"  # requeued by "all"
    assert (await client.get(mail[1].id)).state == "cancelled"
    assert not any(s.paused for s in await client.queues())
    assert len((await client.list_jobs(JobQuery(limit=100))).jobs) == 4  # the trigger made no run


async def test_an_expired_token_cannot_log_in(client: Client) -> None:
    async with AsyncTestClient(app=_app(client), base_url="http://127.0.0.1:8080") as tc:
        csrf = await form_token(tc)
        answer = await tc.post("/ui/login", data={"token": OLD, "_csrf_token": csrf,
                                                  "next": "/ui/"}, follow_redirects=False)
        assert answer.status_code == 401
        assert "This token has expired." in answer.text
        assert "monoq_session" not in answer.headers.get("set-cookie", "")


def test_sessions_carry_the_queues_and_end_with_the_token() -> None:
    now = time.time()
    _, line = create_token("read", name="r", queues=["mail"],
                           expires=datetime.fromtimestamp(now + 600, UTC))
    [entry] = parse_tokens_file(line, "t")
    sessions = Sessions([], 3600, TokenTable([entry]), clock=lambda: now)
    value, viewer = sessions.issue("r", "read", queues=entry.queues,
                                   token_expires=now + 600)
    assert viewer.expires == int(now + 600)  # the token's expiry, not the hour of a session
    checked = sessions.check(value)
    assert checked is not None and checked.queues == frozenset({"mail"})
    # a session issued without the limit (or with other queues) is refused
    loose, _ = sessions.issue("r", "read")
    assert sessions.check(loose) is None
    other, _ = sessions.issue("r", "read", queues=frozenset({"billing"}))
    assert sessions.check(other) is None
    # past the token's expiry the session is refused
    later = Sessions([], 3600, TokenTable([entry]), clock=lambda: now + 601)
    later._keys = sessions._keys  # the same signing key
    assert later.check(value) is None
