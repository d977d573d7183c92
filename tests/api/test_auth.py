"""Tokens and scopes: a route x credential matrix generated from the app's routes, token files,
rate limiting, the public-bind refusal, and logs free of secrets."""

import logging
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.handlers.http_handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from monoq.api import ApiRole, create_app
from monoq.api.app import is_loopback
from monoq.api.auth import route_scope
from monoq.api.tokens import (
    ACCEPTED_SCOPES,
    TokenTable,
    create_token,
    hash_token,
    load_tokens,
    parse_tokens_file,
    token_toml,
)
from monoq.backends.memory import MemoryBackend
from monoq.client import Client
from monoq.config import ApiConfig
from monoq.core.models import JobQuery, Outcome
from monoq.errors import ConfigError
from tests.api._support import API_TOKENS, TOKENS, AppFactory, auth, finish_job


def _routes(app: Litestar) -> list[tuple[str, str, str]]:
    """(method, path, scope) of every route handler except HEAD/OPTIONS shadows."""
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            assert isinstance(handler, HTTPRouteHandler)
            for method in sorted(handler.http_methods):
                if method in ("HEAD", "OPTIONS"):
                    continue
                scope = route_scope(handler)
                if route.path.startswith("/schema"):
                    assert scope is None  # litestar's OpenAPI routes: public
                    continue
                assert scope is not None, f"{method} {route.path} declares no scope"
                found.append((method, route.path, scope))
    return sorted(found)


ROUTES = _routes(create_app(Client(MemoryBackend()), ApiConfig()))
PROTECTED = [r for r in ROUTES if r[2] != "public"]
CREDENTIALS = ["none", "bogus", "enqueue", "read", "admin"]

# A request that succeeds for every protected route; the matrix fails if a route is missing.
RECIPES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/v1/jobs"): {"json": {"handler": "echo", "payload": 1}},
    ("POST", "/api/v1/jobs/batch"): {"json": {"jobs": [{"handler": "echo"}]}},
    ("GET", "/api/v1/jobs"): {},
    ("GET", "/api/v1/jobs/{job_id:str}"): {},
    ("POST", "/api/v1/jobs/{job_id:str}/cancel"): {},
    ("POST", "/api/v1/jobs/{job_id:str}/retry"): {"job": "cancelled"},
    ("GET", "/api/v1/jobs/{job_id:str}/attempts"): {},
    ("GET", "/api/v1/jobs/{job_id:str}/wait"): {"params": {"timeout": "0.01"}},
    ("GET", "/api/v1/queues"): {},
    ("GET", "/api/v1/queues/{name:str}"): {},
    ("POST", "/api/v1/queues/{name:str}/pause"): {},
    ("POST", "/api/v1/queues/{name:str}/resume"): {},
    ("GET", "/api/v1/dead-letter"): {},
    ("POST", "/api/v1/dead-letter/requeue"): {"json": {"all": True}},
    ("DELETE", "/api/v1/dead-letter"): {},
    ("GET", "/api/v1/audit"): {},
    ("GET", "/api/v1/workers"): {},
    ("GET", "/api/v1/stats"): {},
    ("GET", "/metrics"): {},
    ("POST", "/enqueue"): {"content": b"hello", "headers": {"Content-Type": "text/plain"}},
    ("POST", "/jobs"): {"json": {"name": "echo", "payload": {}, "priority": "high"}},
    ("GET", "/api/v1/queue/length"): {},
    ("GET", "/queue/stats"): {},
    ("GET", "/api/v1/schedules"): {},
    ("POST", "/api/v1/schedules"): {"json": {"id": "new", "handler": "echo", "every": "1m"}},
    ("GET", "/api/v1/schedules/{schedule_id:str}"): {},
    ("PATCH", "/api/v1/schedules/{schedule_id:str}"): {"json": {"enabled": False}},
    ("DELETE", "/api/v1/schedules/{schedule_id:str}"): {},
    ("POST", "/api/v1/schedules/{schedule_id:str}/trigger"): {},
    ("GET", "/api/v1/schedules/{schedule_id:str}/runs"): {},
}


def test_every_route_declares_a_scope_and_has_a_recipe() -> None:
    assert {(m, p) for m, p, _ in PROTECTED} == set(RECIPES)
    public = {(m, p) for m, p, s in ROUTES if s == "public"}
    assert public == {("GET", "/healthz"), ("GET", "/readyz")}
    scopes = {(m, p): s for m, p, s in ROUTES}
    # submit routes only for enqueue; every other write is admin; GETs are read, but the
    # audit log (who did what, from which address) is for admins
    assert {k for k, s in scopes.items() if s == "enqueue"} == {
        ("POST", "/api/v1/jobs"),
        ("POST", "/api/v1/jobs/batch"),
        ("POST", "/enqueue"),
        ("POST", "/jobs"),
    }
    for (method, path), scope in scopes.items():
        if method == "GET" and scope != "public":
            assert scope == ("admin" if path == "/api/v1/audit" else "read"), path
        if method in ("DELETE",) or path.endswith(("/cancel", "/retry", "/pause", "/resume")):
            assert scope == "admin", path


@pytest.mark.parametrize("credential", CREDENTIALS)
@pytest.mark.parametrize(("method", "path", "scope"), PROTECTED)
async def test_route_credential_matrix(
    make_app: AppFactory, client: Client, method: str, path: str, scope: str, credential: str
) -> None:
    queued = await client.enqueue("echo", {"n": 1})
    await client.put_schedule(client.build_schedule({"id": "nightly", "handler": "echo",
                                                     "cron": "0 3 * * *"}))
    cancelled = await client.cancel((await client.enqueue("echo", {"n": 2})).id)
    recipe = dict(RECIPES[(method, path)])
    job_id = cancelled.id if recipe.pop("job", None) == "cancelled" else queued.id
    url = (path.replace("{job_id:str}", job_id).replace("{name:str}", "default")
           .replace("{schedule_id:str}", "nightly"))
    headers = dict(recipe.pop("headers", {}))
    if credential == "bogus":
        headers["Authorization"] = "Bearer mq_not-a-real-token"
    elif credential != "none":
        headers.update(auth(credential))
    before = await client.list_jobs(JobQuery(limit=1000))
    async with AsyncTestClient(app=make_app(tokens=True)) as tc:
        response = await tc.request(method, url, headers=headers, **recipe)
    if credential in ("none", "bogus"):
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
    elif credential in ACCEPTED_SCOPES[scope]:
        assert 200 <= response.status_code < 300, response.text
        return
    else:
        assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert (await client.list_jobs(JobQuery(limit=1000))).jobs == before.jobs  # nothing changed


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/schema/openapi.json"])
async def test_public_routes_need_no_token(secured: AsyncTestClient[Litestar], path: str) -> None:
    assert (await secured.get(path)).status_code == 200


async def test_auth_is_off_without_tokens(http: AsyncTestClient[Litestar]) -> None:
    response = await http.post("/api/v1/queues/default/pause")
    assert response.status_code == 200


@pytest.mark.parametrize(
    "header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "bearer  ", TOKENS["admin"], "Token x"]
)
async def test_malformed_authorization_is_401(
    secured: AsyncTestClient[Litestar], header: str
) -> None:
    response = await secured.get("/api/v1/jobs", headers={"Authorization": header})
    assert response.status_code == 401


async def test_bearer_scheme_is_case_insensitive(secured: AsyncTestClient[Litestar]) -> None:
    headers = {"Authorization": f"bearer {TOKENS['read']}"}
    assert (await secured.get("/api/v1/jobs", headers=headers)).status_code == 200


def test_create_token_round_trip(tmp_path: Path) -> None:
    token, line = create_token("read", name="ci-reader")
    name, scope, digest = line.split()
    assert (name, scope, digest) == ("ci-reader", "read", hash_token(token))
    assert token.startswith("mq_") and len(token) > 40
    assert token not in line
    assert create_token("read")[0] != token
    with pytest.raises(ValueError, match="scope"):
        create_token("root")
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(f"# comment\n\n{line}  # trailing\n")
    [entry] = load_tokens((), tokens_file)
    assert (entry.name, entry.scope) == ("ci-reader", "read")
    assert TokenTable([entry]).lookup(token) == entry
    assert TokenTable([entry]).lookup(token + "x") is None
    assert token not in repr(entry) and digest not in repr(entry)


def test_tokens_file_toml_form(tmp_path: Path) -> None:
    _, line = create_token("admin", name="ops")
    toml = token_toml(line).replace("[[api.tokens]]", "[[tokens]]")
    tokens_file = tmp_path / "tokens.toml"
    tokens_file.write_text(toml)
    [entry] = load_tokens((), str(tokens_file))
    assert (entry.name, entry.scope) == ("ops", "admin")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("only two", "expected 'name scope sha256 \\[queues"),
        ("x root " + "a" * 64, "scope"),
        ("x read nothex", "sha256"),
        ("x read " + "g" * 64, "sha256"),
        ("../x read " + "a" * 64, "name"),
        ("[[tokens]]\nname = 'x'\n", "name, scope and sha256"),
    ],
)
def test_bad_tokens_file_is_a_config_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_tokens_file(text, "tokens")


def test_missing_tokens_file_and_duplicates(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"api\.tokens_file"):
        load_tokens((), tmp_path / "absent")
    _, line = create_token("read", name="dup")
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(f"{line}\n{line}\n")
    with pytest.raises(ConfigError, match="duplicate"):
        load_tokens((), tokens_file)


async def test_tokens_file_tokens_authenticate(client: Client, tmp_path: Path) -> None:
    token, line = create_token("enqueue", name="from-file")
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(line + "\n")
    app = create_app(client, ApiConfig(tokens_file=str(tokens_file)))
    async with AsyncTestClient(app=app) as tc:
        ok = await tc.post("/enqueue", content=b"x", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 201
        assert (await tc.post("/enqueue", content=b"x")).status_code == 401


async def test_an_x_api_key_header_authenticates_like_a_bearer_token(
    client: Client, tmp_path: Path
) -> None:
    token, line = create_token("read", name="api-key")
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(line + "\n")
    app = create_app(client, ApiConfig(tokens_file=str(tokens_file)))
    async with AsyncTestClient(app=app) as tc:
        assert (await tc.get("/queue/stats", headers={"X-API-Key": token})).status_code == 200
        assert (await tc.get("/queue/stats", headers={"X-API-Key": "mq_wrong"})).status_code == 401
        assert (await tc.get("/queue/stats", headers={"X-API-Key": ""})).status_code == 401
        assert (await tc.get("/queue/stats")).status_code == 401


async def test_rate_limit_per_token(make_app: AppFactory) -> None:
    async with AsyncTestClient(app=make_app(tokens=True, rate_limit_per_minute=2)) as tc:
        for _ in range(2):
            assert (await tc.get("/api/v1/jobs", headers=auth("read"))).status_code == 200
        limited = await tc.get("/api/v1/jobs", headers=auth("read"))
        assert limited.status_code == 429
        assert limited.headers["content-type"] == "application/problem+json"
        assert int(limited.headers["retry-after"]) >= 1
        # another token has its own bucket; probes are never limited
        assert (await tc.get("/api/v1/jobs", headers=auth("admin"))).status_code == 200
        assert (await tc.get("/healthz")).status_code == 200


async def test_rate_limit_without_tokens_is_per_client(
    make_app: AppFactory, client: Client
) -> None:
    async with AsyncTestClient(app=make_app(rate_limit_per_minute=1)) as tc:
        assert (await tc.post("/enqueue", content=b"a")).status_code == 201
        assert (await tc.post("/enqueue", content=b"b")).status_code == 429
    assert len((await client.list_jobs(JobQuery())).jobs) == 1


def test_public_bind_is_refused_without_tokens(client: Client) -> None:
    with pytest.raises(ConfigError, match=r"api\.host: refusing to listen on '0\.0\.0\.0'"):
        ApiRole(client, ApiConfig(host="0.0.0.0"))  # noqa: S104 - the point of the test
    ApiRole(client, ApiConfig(host="0.0.0.0", allow_public_bind=True))  # noqa: S104
    ApiRole(client, ApiConfig(host="0.0.0.0", tokens=(API_TOKENS[0],)))  # noqa: S104
    ApiRole(client, ApiConfig(host="::1"))


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),  # noqa: S104
        ("::", False),
        ("10.0.0.1", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


async def test_logs_hold_no_tokens_or_payloads(
    make_app: AppFactory, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    secret_payload = "s3cr3t-payload-value"  # noqa: S105
    caplog.set_level(logging.DEBUG)
    async with AsyncTestClient(app=make_app(tokens=True)) as tc:
        await tc.post(
            "/api/v1/jobs",
            json={"handler": "echo", "payload": secret_payload},
            headers=auth("admin"),
        )
        await tc.get("/api/v1/jobs", headers={"Authorization": "Bearer mq_wrong-secret-token"})
        await tc.post(
            "/api/v1/jobs",
            json={"handler": "bad name", "payload": secret_payload},
            headers=auth("admin"),
        )
        job = (await client.list_jobs(JobQuery())).jobs[0]
        await finish_job(client, job.id, Outcome.DEAD)
        await tc.post(f"/api/v1/jobs/{job.id}/cancel", headers=auth("admin"))
    text = caplog.text
    for secret in (*TOKENS.values(), "mq_wrong-secret-token", secret_payload):
        assert secret not in text
