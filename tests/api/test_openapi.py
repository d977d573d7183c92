"""The served OpenAPI document is a contract: a valid OpenAPI 3.1 document whose every ``$ref``
resolves, with every route, and every status a route can answer with the schema and headers of
that answer. The statuses no fuzzing reaches (no token, a token of the wrong scope, the rate
limit, a store that is down or failing, bodies too large or of the wrong type) are provoked
here and checked against the document by schemathesis' conformance checks."""

from collections.abc import Iterator, Sequence
from functools import cache
from typing import Any, Final

import pytest
import schemathesis
from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.testing import TestClient
from openapi_spec_validator import validate
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from monoq.api import create_app
from monoq.backends.memory import MemoryBackend
from monoq.client import Client
from monoq.config import ApiConfig
from monoq.core.models import QueueStats
from monoq.errors import BackendError, BackendUnavailable
from monoq.registry import Registry
from tests.api._support import API_TOKENS, AppFactory, auth

CONFORMANCE: Final = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
PROBLEM_KEYS: Final = {"type", "title", "status", "detail", "instance", "field", "errors",
                        "queue", "depth", "limit"}


def document(app: Litestar) -> dict[str, Any]:
    with TestClient(app) as http:
        response = http.get("/schema/openapi.json")
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()
    return doc


def refs(node: Any) -> Iterator[str]:
    """Every ``$ref`` in a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", operation


@pytest.mark.parametrize("registry", [None, "discover"])
@pytest.mark.parametrize("tokens", [False, True])
def test_the_document_is_valid_and_every_ref_resolves(
    make_app: AppFactory, tokens: bool, registry: str | None
) -> None:
    doc = document(make_app(tokens=tokens, registry=registry and Registry.discover()))
    validate(doc)  # openapi-spec-validator: OpenAPI 3.1 and its JSON Schema dialect
    used = set(refs(doc))
    for ref in used:
        resolve(doc, ref)
    # and nothing is defined that nothing uses
    for kind in ("schemas", "requestBodies"):
        defined = {f"#/components/{kind}/{name}" for name in doc["components"][kind]}
        assert defined <= used, defined - used


def test_the_document_covers_every_route(http_app: Litestar) -> None:
    doc = document(http_app)
    served = {
        f"{method} {route.path.replace(':str}', '}')}"
        for route in http_app.routes
        if isinstance(route, HTTPRoute) and not route.path.startswith("/schema")
        for method in route.methods - {"HEAD", "OPTIONS"}
    }
    assert {label for label, _ in operations(doc)} == served
    bodies = {label for label, operation in operations(doc) if "requestBody" in operation}
    assert bodies == {
        "POST /api/v1/jobs",
        "POST /api/v1/jobs/batch",
        "POST /api/v1/dead-letter/requeue",
        "POST /enqueue",
        "POST /jobs",
        "POST /api/v1/schedules",
        "PATCH /api/v1/schedules/{schedule_id}",
    }


@pytest.fixture
def http_app(make_app: AppFactory) -> Litestar:
    return make_app()


def test_every_parameter_is_documented_by_its_rule(http_app: Litestar) -> None:
    """No parameter is left as litestar infers it (``str | None``: any string, or null)."""
    for label, operation in operations(document(http_app)):
        for param in operation.get("parameters", ()):
            schema = param["schema"]
            assert "oneOf" not in schema and "null" not in schema.get("type", ""), (label, param)
            assert param["description"], (label, param["name"])
            if schema["type"] == "string":
                assert "pattern" in schema, (label, param["name"])


def test_every_error_is_the_one_problem_schema(make_app: AppFactory) -> None:
    doc = document(make_app(tokens=True))
    problem = doc["components"]["schemas"]["Problem"]
    assert set(problem["properties"]) == PROBLEM_KEYS
    assert problem["additionalProperties"] is False
    for label, operation in operations(doc):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                assert response["content"] == {
                    "application/problem+json": {
                        "schema": {"$ref": "#/components/schemas/Problem"}
                    }
                }, (label, status)


# --- statuses, checked against the document ------------------------------------------------------


@cache
def _schema(app: Litestar) -> Any:
    return schemathesis.openapi.from_asgi("/schema/openapi.json", app)


def conforms(
    app: Litestar,
    label: str,
    *,
    path_parameters: dict[str, Any] | None = None,
    query: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    body: Any = None,
    media_type: str | None = None,
) -> Any:
    """Call the operation ``label`` and check the answer against the document: a documented
    status, its content type, its headers and its body schema."""
    method, path = label.split(" ", 1)
    operation = _schema(app)[path][method]
    kwargs: dict[str, Any] = {}
    if body is not None:
        kwargs.update(body=body, media_type=media_type or "application/json")
    case = operation.Case(path_parameters=path_parameters or {}, query=query or {},
                          headers=headers or {}, **kwargs)
    response = case.call()
    case.validate_response(response, checks=CONFORMANCE)
    return response


def _path_parameters(path: str) -> dict[str, str]:
    return {name: "x" for name in ("job_id", "name", "schedule_id") if f"{{{name}}}" in path}


GUARDED: Final = [
    label for label, operation in operations(
        document(create_app(Client(MemoryBackend()), ApiConfig(tokens=tuple(API_TOKENS)))))
    if operation.get("security") != []
]


def test_public_operations_need_no_token(make_app: AppFactory) -> None:
    doc = document(make_app(tokens=True))
    public = {label for label, operation in operations(doc) if operation.get("security") == []}
    assert public == {"GET /healthz", "GET /readyz"}
    assert doc["security"] == [{"bearer": []}, {"apiKey": []}]
    assert "security" not in document(make_app())  # no tokens: auth is off


@pytest.mark.parametrize("label", GUARDED)
def test_unauthenticated_requests_get_the_documented_401(make_app: AppFactory, label: str) -> None:
    app = make_app(tokens=True)
    path = label.split(" ", 1)[1]
    response = conforms(app, label, path_parameters=_path_parameters(path))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == ['Bearer realm="monoq"']
    bogus = conforms(app, label, path_parameters=_path_parameters(path),
                     headers={"Authorization": "Bearer nope"})
    assert bogus.status_code == 401


def test_a_token_of_another_scope_gets_the_documented_403(make_app: AppFactory) -> None:
    app = make_app(tokens=True)
    response = conforms(app, "POST /api/v1/jobs/{job_id}/cancel",
                        path_parameters={"job_id": "x"}, headers=auth("read"))
    assert response.status_code == 403


def test_the_rate_limit_gets_the_documented_429(make_app: AppFactory) -> None:
    app = make_app(tokens=True, rate_limit_per_minute=1)
    assert conforms(app, "GET /api/v1/queues", headers=auth("read")).status_code == 200
    response = conforms(app, "GET /api/v1/queues", headers=auth("read"))
    assert response.status_code == 429
    assert int(response.headers["retry-after"][0]) >= 1


class DownBackend(MemoryBackend):
    """A store that cannot be reached."""

    async def ping(self) -> None:
        raise BackendUnavailable("connection refused")

    async def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        raise BackendUnavailable("connection refused")


class FailingBackend(MemoryBackend):
    """A store that answers with an error."""

    async def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        raise BackendError("disk I/O error")


def test_a_store_that_is_down_gets_the_documented_503() -> None:
    app = create_app(Client(DownBackend()), ApiConfig())
    for label in ("GET /api/v1/queues", "GET /readyz", "GET /api/v1/stats"):
        response = conforms(app, label)
        assert response.status_code == 503
        assert response.headers["retry-after"] == ["5"]


def test_a_failing_store_gets_the_documented_500(caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(Client(FailingBackend()), ApiConfig())
    response = conforms(app, "GET /api/v1/queues")
    assert response.status_code == 500
    assert "disk I/O error" in caplog.text


def test_bodies_too_large_or_of_another_type_get_the_documented_413_and_415(
    make_app: AppFactory,
) -> None:
    app = make_app(max_body_bytes=64)
    large = conforms(app, "POST /api/v1/jobs", body={"handler": "echo", "payload": "x" * 100})
    assert large.status_code == 413
    text = conforms(app, "POST /api/v1/jobs", body="echo", media_type="text/plain")
    assert text.status_code == 415
    assert text.headers["accept-post"] == ["application/json"]
    enqueue = conforms(app, "POST /enqueue", body=b"\x00", media_type="application/octet-stream")
    assert enqueue.status_code == 415


def test_malformed_json_gets_the_documented_400(make_app: AppFactory) -> None:
    app = make_app()
    for label in ("POST /api/v1/jobs", "POST /api/v1/jobs/batch", "POST /jobs",
                  "POST /api/v1/schedules", "POST /api/v1/dead-letter/requeue"):
        response = conforms(app, label, body=b"{", media_type="application/json")
        assert response.status_code == 400, label
