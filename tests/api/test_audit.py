"""The audit log over the API: every admin action of a token is recorded with who (the token's
name), what, the target and the client's address; refused attempts too; GET /api/v1/audit
reads it back with filters and paging."""

from datetime import timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from monoq.api import create_app
from monoq.api.tokens import create_token, parse_tokens_file
from monoq.client import Client
from monoq.config import ApiConfig, ApiToken
from monoq.core.audit import AuditEntry
from monoq.core.models import Outcome
from tests.api._support import API_TOKENS, TOKENS, AppFactory, auth, finish_job

Http = AsyncTestClient[Litestar]
ADMIN = API_TOKENS[2].name
READ = API_TOKENS[1].name


async def entries(client: Client, **filters: Any) -> list[AuditEntry]:
    return (await client.list_audit(limit=1000, **filters)).entries


async def test_every_admin_action_is_recorded_with_who_what_and_where(
        secured: Http, client: Client) -> None:
    admin = auth("admin")
    job = await client.enqueue("echo", {"n": 1}, queue="mail")
    dead = await client.enqueue("echo", {"n": 2}, queue="mail", max_retries=0)
    await finish_job(client, dead.id, Outcome.DEAD)
    other_dead = await client.enqueue("echo", {"n": 3}, queue="mail", max_retries=0)
    await finish_job(client, other_dead.id, Outcome.DEAD)
    assert await entries(client) == []  # nothing done by an operator yet

    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", f"/api/v1/jobs/{job.id}/cancel", {}),
        ("POST", f"/api/v1/jobs/{job.id}/retry", {}),
        ("POST", "/api/v1/queues/mail/pause", {}),
        ("POST", "/api/v1/queues/mail/resume", {}),
        ("POST", "/api/v1/dead-letter/requeue", {"json": {"ids": [dead.id]}}),
        ("DELETE", "/api/v1/dead-letter", {"params": {"queue": "mail"}}),
        ("POST", "/api/v1/schedules", {"json": {"id": "nightly", "handler": "echo",
                                                "cron": "0 3 * * *", "queue": "mail",
                                                "payload": {"password": "hunter2"}}}),
        ("PATCH", "/api/v1/schedules/nightly", {"json": {"enabled": False}}),
        ("POST", "/api/v1/schedules/nightly/trigger", {}),
        ("DELETE", "/api/v1/schedules/nightly", {}),
    ]
    for method, path, kwargs in calls:
        response = await secured.request(method, path, headers=admin, **kwargs)
        assert response.status_code < 300, (path, response.text)

    got = list(reversed(await entries(client)))
    assert [(e.action, e.target, e.queue, e.outcome) for e in got] == [
        ("cancel", job.id, "mail", "ok"),
        ("retry", job.id, "mail", "ok"),
        ("pause", "mail", "mail", "ok"),
        ("resume", "mail", "mail", "ok"),
        ("requeue", None, None, "ok"),
        ("purge", "mail", "mail", "ok"),
        ("schedule.put", "nightly", "mail", "ok"),
        ("schedule.put", "nightly", "mail", "ok"),
        ("schedule.trigger", "nightly", "mail", "ok"),
        ("schedule.delete", "nightly", None, "ok"),
    ]
    assert {(e.actor, e.source, e.address) for e in got} == {(ADMIN, "api", "testclient")}
    assert got[4].detail == {"requeued": 1, "ids": [dead.id], "asked": 1}
    assert got[5].detail == {"purged": 1, "older_than_seconds": 0.0}  # the other dead job
    assert got[7].detail["enabled"] is False
    for entry in got:
        assert "hunter2" not in entry.detail_json  # payloads are never recorded
        assert TOKENS["admin"] not in entry.encode()
    times = [e.at for e in got]
    assert times == sorted(times)


async def test_refused_and_failed_attempts_are_recorded(make_app: AppFactory,
                                                        client: Client) -> None:
    mail_token, line = create_token("admin", name="mail-ops", queues=["mail"])
    [mail_entry] = parse_tokens_file(line, "test")
    mail = ApiToken(name="mail-ops", scope="admin", sha256=line.split()[2], queues=("mail",))
    assert mail_entry.queues == frozenset({"mail"})
    app = create_app(client, ApiConfig(tokens=(*API_TOKENS, mail)))
    billing = await client.enqueue("echo", queue="billing")
    async with AsyncTestClient(app=app) as tc:
        denied = await tc.post(f"/api/v1/jobs/{billing.id}/cancel", headers=auth("read"))
        assert denied.status_code == 403
        missing = await tc.post("/api/v1/jobs/01NOSUCHJOB/cancel", headers=auth("admin"))
        assert missing.status_code == 404
        forbidden = await tc.post(f"/api/v1/jobs/{billing.id}/cancel",
                                  headers={"Authorization": f"Bearer {mail_token}"})
        assert forbidden.status_code == 403
        conflict = await tc.post(f"/api/v1/jobs/{billing.id}/retry", headers=auth("admin"))
        assert conflict.status_code == 409
        unknown = await tc.post(f"/api/v1/jobs/{billing.id}/cancel",
                                headers={"Authorization": "Bearer mq_not-a-token"})
        assert unknown.status_code == 401
        reads = await tc.get("/api/v1/jobs", headers=auth("read"))
        assert reads.status_code == 200
    got = list(reversed(await entries(client)))
    assert [(e.actor, e.action, e.target, e.outcome) for e in got] == [
        (READ, "denied", f"/api/v1/jobs/{billing.id}/cancel", "refused"),
        (ADMIN, "cancel", "01NOSUCHJOB", "not_found"),
        ("mail-ops", "cancel", billing.id, "refused"),
        (ADMIN, "retry", billing.id, "conflict"),
    ]
    assert got[0].detail["route"] == "cancel_job"
    assert "billing" in got[2].detail["error"]
    assert (await client.get(billing.id)).state.value == "queued"  # nothing was done


async def test_reading_the_audit_log_filters_and_pages(secured: Http, client: Client) -> None:
    for queue in ("mail", "reports", "mail", "mail"):
        await secured.post(f"/api/v1/queues/{queue}/pause", headers=auth("admin"))
    whole = (await secured.get("/api/v1/audit", headers=auth("admin"))).json()
    assert [e["target"] for e in whole["entries"]] == ["mail", "mail", "reports", "mail"]
    assert whole["next_cursor"] is None
    first = whole["entries"][0]
    assert set(first) == {"id", "at", "actor", "source", "action", "target", "queue",
                          "outcome", "detail", "address"}
    assert (first["actor"], first["source"], first["action"]) == (ADMIN, "api", "pause")

    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"queue": "mail", "limit": "2"} | ({} if cursor is None else {"cursor": cursor})
        page = (await secured.get("/api/v1/audit", headers=auth("admin"),
                                  params=params)).json()
        seen += [e["id"] for e in page["entries"]]
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    assert seen == [e["id"] for e in whole["entries"] if e["queue"] == "mail"]

    since = whole["entries"][1]["at"]
    recent = (await secured.get("/api/v1/audit", headers=auth("admin"),
                                params={"since": since})).json()
    assert [e["id"] for e in recent["entries"]] == [e["id"] for e in whole["entries"][:2]]
    for params in ({"action": "resume"}, {"actor": "someone-else"}, {"source": "cli"}):
        answer = await secured.get("/api/v1/audit", headers=auth("admin"), params=params)
        assert answer.json()["entries"] == [], params


@pytest.mark.parametrize(("params", "field"), [
    ({"since": "yesterday"}, "since"),
    ({"until": "2030-01-01"}, "until"),
    ({"source": "telnet"}, "source"),
    ({"action": "drop table"}, "action"),
    ({"queue": "no queue"}, "queue"),
    ({"limit": "0"}, "limit"),
    ({"cursor": "garbage!"}, "cursor"),
])
async def test_bad_filters_get_a_422_naming_the_parameter(secured: Http, params: dict[str, str],
                                                          field: str) -> None:
    answer = await secured.get("/api/v1/audit", headers=auth("admin"), params=params)
    assert answer.status_code == 422
    assert answer.json()["field"] == field


async def test_only_admin_tokens_read_the_audit_log(secured: Http) -> None:
    assert (await secured.get("/api/v1/audit", headers=auth("read"))).status_code == 403
    assert (await secured.get("/api/v1/audit")).status_code == 401


async def test_with_auth_off_the_actor_is_anonymous(http: Http, client: Client) -> None:
    assert (await http.post("/api/v1/queues/mail/pause")).status_code == 200
    [entry] = await entries(client)
    assert (entry.actor, entry.source, entry.address) == ("anonymous", "api", "testclient")


async def test_calls_without_an_actor_are_not_recorded(client: Client) -> None:
    """A program using the library directly names no actor: nothing is recorded for it."""
    await client.pause("mail")
    await client.purge_dead(older_than=timedelta(0))
    assert await entries(client) == []
