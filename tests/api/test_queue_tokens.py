"""Tokens limited to queues, and tokens that expire.

A token with ``queues`` gets 403 for anything about another queue, on every route family
(jobs, batch, queues, dead letters, schedules, compatibility routes), and lists, stats and
metrics show only its queues. An expired token gets 401, like an unknown one, but its answer
says it expired.
"""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from monoq.api import create_app
from monoq.api.tokens import create_token, load_tokens, parse_tokens_file, token_toml
from monoq.backends.memory import MemoryBackend
from monoq.client import Client
from monoq.config import ApiConfig, ApiToken, load_config
from monoq.core.audit import Actor, acting_as
from monoq.core.models import JobQuery, Outcome, WorkerInfo
from monoq.errors import ConfigError
from tests.api._support import finish_job
from tests.api.test_auth import PROTECTED, RECIPES

Http = AsyncTestClient[Litestar]


def _token(scope: str, name: str, queues: list[str] | None = None,
           expires: datetime | None = None) -> tuple[str, ApiToken]:
    token, line = create_token(scope, name=name, queues=queues, expires=expires)
    entry = parse_tokens_file(line, "test")[0]
    table: dict[str, Any] = {"name": entry.name, "scope": entry.scope, "sha256": line.split()[2]}
    if queues:
        table["queues"] = queues
    if expires:
        table["expires"] = expires.isoformat()
    return token, ApiToken(**table)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


MAIL_ADMIN, MAIL_ADMIN_ENTRY = _token("admin", "mail-admin", ["mail", "reports"])
MAIL_READ, MAIL_READ_ENTRY = _token("read", "mail-read", ["mail"])
MAIL_ENQUEUE, MAIL_ENQUEUE_ENTRY = _token("enqueue", "mail-enqueue", ["mail"])
DEFAULT_ADMIN, DEFAULT_ADMIN_ENTRY = _token("admin", "default-admin", ["default"])
ROOT, ROOT_ENTRY = _token("admin", "root")
EXPIRED, EXPIRED_ENTRY = _token("admin", "expired", expires=datetime.now(UTC) - timedelta(1))
LATER, LATER_ENTRY = _token("admin", "later", expires=datetime.now(UTC) + timedelta(days=1))
ALL_ENTRIES = (MAIL_ADMIN_ENTRY, MAIL_READ_ENTRY, MAIL_ENQUEUE_ENTRY, DEFAULT_ADMIN_ENTRY,
               ROOT_ENTRY, EXPIRED_ENTRY, LATER_ENTRY)


@pytest.fixture
def app(client: Client) -> Litestar:
    return create_app(client, ApiConfig(tokens=ALL_ENTRIES))


@pytest.fixture
async def tc(app: Litestar) -> Any:
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


async def _snapshot(client: Client) -> Any:
    jobs = (await client.list_jobs(JobQuery(limit=1000))).jobs
    return (jobs, [(s.queue, s.paused) for s in await client.queues()],
            [s.to_dict() for s in await client.list_schedules()])


# What a token limited to "mail" and "reports" gets on each route when everything named is in
# the queue "default": 403, or a list or count that leaves "default" out.
FILTERED = {
    ("GET", "/api/v1/jobs"), ("GET", "/api/v1/queues"), ("GET", "/api/v1/dead-letter"),
    ("POST", "/api/v1/dead-letter/requeue"), ("DELETE", "/api/v1/dead-letter"),
    ("GET", "/api/v1/workers"), ("GET", "/api/v1/stats"), ("GET", "/metrics"),
    ("GET", "/queue/stats"), ("GET", "/api/v1/schedules"), ("GET", "/api/v1/audit"),
}


@pytest.mark.parametrize("where", ["outside", "inside"])
@pytest.mark.parametrize(("method", "path", "scope"), PROTECTED)
async def test_every_route_respects_the_queue_limit(
    client: Client, backend: MemoryBackend, method: str, path: str, scope: str, where: str
) -> None:
    queued = await client.enqueue("echo", {"n": 1})
    await client.put_schedule(client.build_schedule({"id": "nightly", "handler": "echo",
                                                     "cron": "0 3 * * *"}))
    with acting_as(Actor("setup", "python")):  # an audit entry about "default"
        cancelled = await client.cancel((await client.enqueue("echo", {"n": 2})).id)
    dead = await client.enqueue("echo", {"n": 3}, max_retries=0)
    await finish_job(client, dead.id, Outcome.DEAD)
    now = client.clock()
    await backend.report_worker(
        WorkerInfo(id="w1", host="h", pid=1, roles=("worker",), queues=("default",),
                   concurrency=1, busy=0, started_at=now, last_seen=now),
        ttl=timedelta(minutes=1))
    recipe = dict(RECIPES[(method, path)])
    job_id = cancelled.id if recipe.pop("job", None) == "cancelled" else queued.id
    url = (path.replace("{job_id:str}", job_id).replace("{name:str}", "default")
           .replace("{schedule_id:str}", "nightly"))
    headers = dict(recipe.pop("headers", {}))
    headers.update(bearer(MAIL_ADMIN if where == "outside" else DEFAULT_ADMIN))
    before = await _snapshot(client)
    async with AsyncTestClient(app=create_app(client, ApiConfig(tokens=ALL_ENTRIES))) as tc:
        response = await tc.request(method, url, headers=headers, **recipe)
    if where == "inside":  # a token limited to the queue everything is in: as if unlimited
        assert 200 <= response.status_code < 300, response.text
        return
    if (method, path) not in FILTERED:
        assert response.status_code == 403, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert "mail-admin" in response.json()["detail"]
        assert "default" in response.json()["detail"]
        assert await _snapshot(client) == before  # nothing changed
        return
    assert response.status_code == 200, response.text
    body = response.text
    if path == "/metrics":
        assert 'queue="default"' not in body
        return
    data = response.json()
    if method == "GET" and path in ("/api/v1/jobs", "/api/v1/dead-letter"):
        assert data["jobs"] == []
    elif path == "/api/v1/queues":
        assert data["queues"] == []
    elif path == "/api/v1/workers":
        assert data["workers"] == []
    elif path == "/api/v1/stats":
        assert sum(data["counts"].values()) == 0 and data["queues"] == 0
    elif path == "/queue/stats":
        assert data["queues"] == {} and sum(data["totals"].values()) == 0
    elif path == "/api/v1/schedules":
        assert data["schedules"] == []
    elif path == "/api/v1/audit":
        assert data["entries"] == []
        assert [e.action for e in (await client.list_audit()).entries] == ["cancel"]
    elif method == "POST":
        assert data == {"requeued": 0, "ids": []}
    else:
        assert data == {"purged": 0}
    assert await _snapshot(client) == before  # the dead job of "default" is still there


async def _fill(client: Client) -> dict[str, list[str]]:
    """Jobs in mail, reports and billing (some dead); answers the ids per queue."""
    ids: dict[str, list[str]] = {"mail": [], "reports": [], "billing": []}
    for n in range(5):
        for queue, listed in ids.items():
            listed.append((await client.enqueue("echo", {"n": n}, queue=queue,
                                                max_retries=0)).id)
    for queue in ids:
        await finish_job(client, ids[queue][0], Outcome.DEAD)
    return ids


async def test_lists_merge_the_token_queues_newest_first(client: Client, tc: Http) -> None:
    ids = await _fill(client)
    mine = sorted(ids["mail"] + ids["reports"], reverse=True)
    whole = (await tc.get("/api/v1/jobs", headers=bearer(MAIL_ADMIN))).json()
    assert [j["id"] for j in whole["jobs"]] == mine and whole["next_cursor"] is None
    seen: list[str] = []
    cursor = ""
    while True:
        page = (await tc.get("/api/v1/jobs", params={"limit": "3", "cursor": cursor},
                             headers=bearer(MAIL_ADMIN))).json()
        seen += [j["id"] for j in page["jobs"]]
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    assert seen == mine
    one = (await tc.get("/api/v1/jobs", params={"queue": "reports"},
                        headers=bearer(MAIL_ADMIN))).json()
    assert {j["queue"] for j in one["jobs"]} == {"reports"}
    refused = await tc.get("/api/v1/jobs", params={"queue": "billing"},
                           headers=bearer(MAIL_ADMIN))
    assert refused.status_code == 403
    dead = (await tc.get("/api/v1/dead-letter", headers=bearer(MAIL_ADMIN))).json()
    assert {j["id"] for j in dead["jobs"]} == {ids["mail"][0], ids["reports"][0]}
    queues = (await tc.get("/api/v1/queues", headers=bearer(MAIL_ADMIN))).json()
    assert [q["queue"] for q in queues["queues"]] == ["mail", "reports"]
    stats = (await tc.get("/api/v1/stats", headers=bearer(MAIL_READ))).json()
    assert stats["queues"] == 1 and sum(stats["counts"].values()) == 5
    assert stats["throughput"]["1m"]["dead"] == 1
    legacy = (await tc.get("/queue/stats", headers=bearer(MAIL_READ))).json()
    assert list(legacy["queues"]) == ["mail"]
    metrics = (await tc.get("/metrics", headers=bearer(MAIL_READ))).text
    assert 'queue="mail"' in metrics and 'queue="billing"' not in metrics
    assert 'queue="reports"' not in metrics
    everything = (await tc.get("/metrics", headers=bearer(ROOT))).text
    assert 'queue="billing"' in everything
    length = await tc.get("/api/v1/queue/length", params={"queue": "billing"},
                          headers=bearer(MAIL_READ))
    assert length.status_code == 403


async def test_submits_outside_the_token_queues_are_refused_whole(
    client: Client, tc: Http
) -> None:
    ok = await tc.post("/api/v1/jobs", json={"handler": "echo", "queue": "mail"},
                       headers=bearer(MAIL_ENQUEUE))
    assert ok.status_code == 201
    refused = await tc.post("/api/v1/jobs", json={"handler": "echo"},  # default queue
                            headers=bearer(MAIL_ENQUEUE))
    assert refused.status_code == 403
    batch = {"jobs": [{"handler": "echo", "queue": "mail"}, {"handler": "echo", "queue": "mail"},
                      {"handler": "echo", "queue": "billing"}]}
    refused = await tc.post("/api/v1/jobs/batch", json=batch, headers=bearer(MAIL_ENQUEUE))
    assert refused.status_code == 403
    assert "jobs[2]" in refused.json()["detail"]
    assert len((await client.list_jobs(JobQuery())).jobs) == 1  # nothing of the batch was written
    batch["jobs"].pop()
    assert (await tc.post("/api/v1/jobs/batch", json=batch,
                          headers=bearer(MAIL_ENQUEUE))).status_code == 201
    legacy = await tc.post("/jobs", json={"name": "echo", "queue": "billing"},
                           headers=bearer(MAIL_ENQUEUE))
    assert legacy.status_code == 403
    enqueue = await tc.post("/enqueue", content=b"x", headers=bearer(MAIL_ENQUEUE))
    assert enqueue.status_code == 403  # api.queue_name is "default"


async def test_job_actions_and_dead_letter_by_id(client: Client, tc: Http) -> None:
    ids = await _fill(client)
    foreign, mine = ids["billing"][0], ids["mail"][0]
    for method, url in [("GET", f"/api/v1/jobs/{foreign}"),
                        ("GET", f"/api/v1/jobs/{foreign}/attempts"),
                        ("GET", f"/api/v1/jobs/{foreign}/wait?timeout=0"),
                        ("POST", f"/api/v1/jobs/{foreign}/retry"),
                        ("POST", f"/api/v1/jobs/{ids['billing'][1]}/cancel")]:
        response = await tc.request(method, url, headers=bearer(MAIL_ADMIN))
        assert response.status_code == 403, url
    assert (await tc.get(f"/api/v1/jobs/{mine}", headers=bearer(MAIL_ADMIN))).status_code == 200
    assert (await tc.get("/api/v1/jobs/nope", headers=bearer(MAIL_ADMIN))).status_code == 404
    both = await tc.post("/api/v1/dead-letter/requeue", json={"ids": [mine, foreign]},
                         headers=bearer(MAIL_ADMIN))
    assert both.status_code == 403
    assert (await client.get(mine)).state == "dead"  # refused whole
    by_queue = await tc.post("/api/v1/dead-letter/requeue", json={"queue": "billing"},
                             headers=bearer(MAIL_ADMIN))
    assert by_queue.status_code == 403
    everything = await tc.post("/api/v1/dead-letter/requeue", json={"all": True},
                               headers=bearer(MAIL_ADMIN))
    assert everything.json()["ids"] == sorted([mine, ids["reports"][0]], reverse=True) or \
        set(everything.json()["ids"]) == {mine, ids["reports"][0]}
    assert (await client.get(foreign)).state == "dead"
    await finish_job(client, mine, Outcome.DEAD)
    purged = await tc.delete("/api/v1/dead-letter", headers=bearer(MAIL_ADMIN))
    assert purged.json() == {"purged": 1}
    assert (await client.get(foreign)).state == "dead"
    assert (await tc.delete("/api/v1/dead-letter", params={"queue": "billing"},
                            headers=bearer(MAIL_ADMIN))).status_code == 403


async def test_schedules_are_limited_by_their_target_queue(client: Client, tc: Http) -> None:
    await client.put_schedule(client.build_schedule(
        {"id": "bills", "handler": "echo", "every": "1m", "queue": "billing"}))
    mine = {"id": "mails", "handler": "echo", "every": "1m", "queue": "mail"}
    assert (await tc.post("/api/v1/schedules", json=mine,
                          headers=bearer(MAIL_ADMIN))).status_code == 201
    listed = (await tc.get("/api/v1/schedules", headers=bearer(MAIL_ADMIN))).json()
    assert [s["id"] for s in listed["schedules"]] == ["mails"]
    moved = await tc.patch("/api/v1/schedules/mails", json={"queue": "billing"},
                           headers=bearer(MAIL_ADMIN))
    assert moved.status_code == 403
    assert (await client.get_schedule("mails")).queue == "mail"
    taken = {"id": "bills", "handler": "echo", "every": "1m", "queue": "mail"}
    assert (await tc.post("/api/v1/schedules", json=taken,
                          headers=bearer(MAIL_ADMIN))).status_code in (403, 409)
    assert (await client.get_schedule("bills")).queue == "billing"
    for method in ("GET", "DELETE"):
        assert (await tc.request(method, "/api/v1/schedules/bills",
                                 headers=bearer(MAIL_ADMIN))).status_code == 403
    assert (await tc.post("/api/v1/schedules/bills/trigger",
                          headers=bearer(MAIL_ADMIN))).status_code == 403
    assert (await tc.post("/api/v1/schedules/mails/trigger",
                          headers=bearer(MAIL_ADMIN))).status_code == 201


async def test_pause_and_resume_only_the_token_queues(client: Client, tc: Http) -> None:
    await _fill(client)
    assert (await tc.post("/api/v1/queues/mail/pause",
                          headers=bearer(MAIL_ADMIN))).status_code == 200
    assert (await tc.post("/api/v1/queues/billing/pause",
                          headers=bearer(MAIL_ADMIN))).status_code == 403
    assert (await tc.get("/api/v1/queues/billing", headers=bearer(MAIL_ADMIN))).status_code == 403
    assert [s.queue for s in await client.queues() if s.paused] == ["mail"]


async def test_workers_show_only_the_token_queues(
    client: Client, backend: MemoryBackend, tc: Http
) -> None:
    now = client.clock()
    for worker_id, queues in (("both", ("mail", "billing")), ("other", ("billing",))):
        await backend.report_worker(
            WorkerInfo(id=worker_id, host="h", pid=1, roles=("worker",), queues=queues,
                       concurrency=1, busy=0, started_at=now, last_seen=now),
            ttl=timedelta(minutes=1))
    workers = (await tc.get("/api/v1/workers", headers=bearer(MAIL_READ))).json()["workers"]
    assert [(w["id"], w["queues"]) for w in workers] == [("both", ["mail"])]


async def test_an_expired_token_is_401_and_says_so(tc: Http) -> None:
    expired = await tc.get("/api/v1/jobs", headers=bearer(EXPIRED))
    assert expired.status_code == 401
    assert expired.json()["detail"] == "the bearer token has expired"
    assert 'error="invalid_token"' in expired.headers["www-authenticate"]
    unknown = await tc.get("/api/v1/jobs", headers=bearer("mq_unknown"))
    assert unknown.status_code == 401 and "expired" not in unknown.text
    assert (await tc.get("/api/v1/jobs", headers=bearer(LATER))).status_code == 200


def test_token_lines_and_tables_carry_queues_and_expiry(tmp_path: Path) -> None:
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    token, line = create_token("read", name="mail", queues=["mail", "reports"], expires=when)
    assert line.endswith(" queues=mail,reports expires=2030-01-02T03:04:05Z")
    [entry] = parse_tokens_file(line, "tokens")
    assert entry.queues == frozenset({"mail", "reports"}) and entry.expires == when
    toml = token_toml(line)
    assert 'queues = ["mail", "reports"]' in toml and 'expires = "2030-01-02T03:04:05Z"' in toml
    config_file = tmp_path / "config.toml"
    config_file.write_text(toml)
    config = load_config(config_file, env={})
    [loaded] = load_tokens(config.api.tokens, None)
    assert loaded == entry
    tokens_file = tmp_path / "tokens.toml"
    tokens_file.write_text(toml.replace("[[api.tokens]]", "[[tokens]]")
                           .replace('"2030-01-02T03:04:05Z"', "2030-01-02T04:04:05+01:00"))
    [from_file] = load_tokens((), tokens_file)
    assert from_file == entry
    assert token not in line


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x read " + "a" * 64 + " queues=", r"tokens:1\.queues"),
        ("x read " + "a" * 64 + " queues=bad/name", r"tokens:1\.queues"),
        ("x read " + "a" * 64 + " expires=tomorrow", r"tokens:1\.expires"),
        ("x read " + "a" * 64 + " expires=2030-01-01T00:00:00", r"tokens:1\.expires"),
        ("x read " + "a" * 64 + " color=red", "expected 'name scope sha256"),
        ("[[tokens]]\nname='x'\nscope='read'\nsha256='" + "a" * 64 + "'\nqueues=[]\n",
         r"tokens\[0\]\.queues"),
        ("[[tokens]]\nname='x'\nscope='read'\nsha256='" + "a" * 64 + "'\nexpires=1\n",
         r"tokens\[0\]\.expires"),
    ],
)
def test_bad_queues_and_expiry_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_tokens_file(text, "tokens")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('queues = []', r"api\.tokens\[0\]\.queues"),
        ('queues = ["a b"]', r"api\.tokens\[0\]\.queues"),
        ('queues = "mail"', r"api\.tokens\[0\]\.queues"),
        ('expires = "next week"', r"api\.tokens\[0\]\.expires"),
        ("expires = 2030-01-01T00:00:00", r"api\.tokens\[0\]\.expires"),  # no offset
    ],
)
def test_bad_token_config_names_the_key(tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[[api.tokens]]\nname = "x"\nscope = "read"\nsha256 = "{"a" * 64}"\n'
                    f"{table}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path, env={})


def test_tokens_from_the_environment_carry_queues() -> None:
    env = {"MONOQ_API_TOKENS": '[{"name": "x", "scope": "read", "sha256": "' + "a" * 64
           + '", "queues": ["mail"], "expires": "2030-01-01T00:00:00+00:00"}]'}
    [token] = load_config(None, env=env).api.tokens
    assert token.queues == ("mail",) and token.expires == "2030-01-01T00:00:00Z"


def test_the_token_command_makes_limited_expiring_tokens() -> None:
    from io import StringIO

    from monoq.cli import main

    out = StringIO()
    assert main(["token", "create", "--scope", "read", "--name", "mail-ro", "--queue", "mail",
                 "--queue", "reports", "--expires", "1h", "--json"], out=out) == 0
    data = json.loads(out.getvalue())
    assert data["queues"] == ["mail", "reports"]
    expires = datetime.fromisoformat(data["expires"])
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)
    out = StringIO()
    assert main(["token", "create", "--scope", "admin", "--queue", "mail",
                 "--expires", "2030-01-01T00:00:00+01:00"], out=out) == 0
    text = out.getvalue()
    assert 'queues = ["mail"]\nexpires = "2029-12-31T23:00:00Z"' in text
    line = text.rsplit("api.tokens_file:\n", 1)[1].strip()
    [entry] = parse_tokens_file(line, "t")
    assert entry.queues == frozenset({"mail"})
    assert entry.expires == datetime(2029, 12, 31, 23, tzinfo=UTC)
    for bad in (["--expires", "someday"], ["--queue", "bad name"]):
        assert main(["token", "create", "--scope", "read", *bad], out=StringIO()) != 0


# Client methods a ScopedClient does not override, and why that is safe.
THROUGH_CHECKED = {  # they call a checked method of the ScopedClient first
    "enqueue": "submit -> submit_job", "submit": "submit_job", "enqueue_many": "submit_many",
    "wait": "get", "attempts": "get", "set_schedule_enabled": "get_schedule",
    "trigger_schedule": "get_schedule, then submit_job", "schedule_runs": "get_schedule",
}
QUEUE_NEUTRAL = {  # they read or build nothing of a queue the caller did not name or get
    "beats", "build", "build_from_dict", "build_many", "build_schedule", "schedule_status",
    "auditing",  # records what the caller does; the action itself is checked
}


def test_every_client_method_is_decided_for_queue_limited_tokens() -> None:
    from monoq.api.scoping import ScopedClient

    public = {name for name, value in vars(Client).items()
              if callable(value) and not name.startswith("_")}
    overridden = {name for name in vars(ScopedClient) if not name.startswith("_")}
    undecided = public - overridden - THROUGH_CHECKED.keys() - QUEUE_NEUTRAL
    assert not undecided, (
        f"Client methods {sorted(undecided)} are not limited for queue-limited tokens: "
        "override them in monoq.api.scoping.ScopedClient, or list them above with the reason")
