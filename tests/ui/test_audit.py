"""The dashboard's actions in the audit log: source ``ui``, the viewer's token name, the
client's address; a read viewer's refused action too."""

import html
import re

from litestar import Litestar
from litestar.testing import AsyncTestClient

from monoq.client import Client
from monoq.core.audit import Actor, acting_as
from monoq.core.models import Outcome
from tests.api._support import finish_job
from tests.ui._support import SECRET, TOKENS, csrf_of, login, post_form

Http = AsyncTestClient[Litestar]


async def test_dashboard_actions_are_recorded_with_the_viewer(secured: Http,
                                                              client: Client) -> None:
    job = await client.enqueue("echo", {"password": SECRET}, queue="mail")
    dead = await client.enqueue("echo", queue="mail", max_retries=0)
    await finish_job(client, dead.id, Outcome.DEAD)
    another = await client.enqueue("echo", queue="mail", max_retries=0)
    await finish_job(client, another.id, Outcome.DEAD)
    await login(secured, "admin")
    for action, fields in (
        ("/ui/queues/mail/pause", {}),
        (f"/ui/jobs/{job.id}/cancel", {}),
        ("/ui/dead/requeue", {"all": "1", "queue": "mail"}),
        ("/ui/queues/mail/resume", {}),
    ):
        answer = await post_form(secured, "/ui/", action, **fields)
        assert answer.status_code == 303, (action, answer.text)
    got = list(reversed((await client.list_audit()).entries))
    assert [(e.action, e.target, e.queue, e.outcome) for e in got] == [
        ("pause", "mail", "mail", "ok"),
        ("cancel", job.id, "mail", "ok"),
        ("requeue", "mail", "mail", "ok"),  # one entry for the whole filtered requeue
        ("resume", "mail", "mail", "ok"),
    ]
    assert {(e.actor, e.source, e.address) for e in got} == {("ui-admin", "ui", "testclient")}
    assert got[2].detail["requeued"] == 2
    for entry in got:
        assert SECRET not in entry.encode() and TOKENS["admin"] not in entry.encode()


async def test_a_read_viewers_action_is_recorded_as_denied(secured: Http,
                                                           client: Client) -> None:
    await client.enqueue("echo", queue="mail")
    await login(secured, "read")
    answer = await post_form(secured, "/ui/", "/ui/queues/mail/pause")
    assert answer.status_code == 403
    [entry] = (await client.list_audit()).entries
    assert (entry.actor, entry.source, entry.action, entry.outcome, entry.target) == (
        "ui-read", "ui", "denied", "refused", "/ui/queues/mail/pause")
    assert not (await client.queues())[0].paused


async def test_an_open_dashboard_records_an_anonymous_actor(open_ui: Http,
                                                            client: Client) -> None:
    await client.enqueue("echo", queue="mail")
    answer = await post_form(open_ui, "/ui/queues", "/ui/queues/mail/pause")
    assert answer.status_code == 303, answer.text
    [entry] = (await client.list_audit()).entries
    assert (entry.actor, entry.source, entry.action) == ("anonymous", "ui", "pause")


async def test_the_audit_page_shows_entries_to_admins_only(secured: Http,
                                                          client: Client) -> None:
    await client.enqueue("echo", queue="mail")
    await client.enqueue("echo", queue="reports")
    await login(secured, "admin")
    for queue in ("mail", "reports"):
        answer = await post_form(secured, "/ui/queues", f"/ui/queues/{queue}/pause")
        assert answer.status_code == 303
    page = await secured.get("/ui/audit")
    assert page.status_code == 200
    assert page.text.count("<code>pause</code>") == 2 and "ui-admin" in page.text
    assert 'href="/ui/audit"' in page.text  # in the navigation of an admin viewer
    mail = await secured.get("/ui/audit", params={"queue": "reports"})
    assert mail.text.count("<code>pause</code>") == 1
    assert "<code>reports</code>" in mail.text and "<code>mail</code>" not in mail.text
    bad = await secured.get("/ui/audit", params={"queue": "no such queue"})
    assert bad.status_code == 422
    await secured.post("/ui/logout", data={"_csrf_token": csrf_of(
        (await secured.get("/ui/")).text)})
    await login(secured, "read")
    assert (await secured.get("/ui/audit")).status_code == 403
    assert 'href="/ui/audit"' not in (await secured.get("/ui/")).text
    # a refused read is not recorded; only the two pauses are there
    assert [e.action for e in (await client.list_audit()).entries] == ["pause", "pause"]


async def test_the_audit_page_pages_to_older_entries(secured: Http, client: Client) -> None:
    with acting_as(Actor("ops", "cli")):
        for n in range(105):
            await client.pause(f"q{n}")
    await login(secured, "admin")
    first = await secured.get("/ui/audit", params={"actor": "ops"})
    assert first.text.count("<code>pause</code>") == 100
    older = re.search(r'href="(/ui/audit\?[^"]+)">Older entries', first.text)
    assert older is not None and "actor=ops" in older[1]
    second = await secured.get(html.unescape(older[1]))
    assert second.status_code == 200
    assert second.text.count("<code>pause</code>") == 5 and "Older entries" not in second.text
    assert "<code>q0</code>" in second.text
