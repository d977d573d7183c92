"""Health, readiness, metrics, the OpenAPI document and backend outages."""

from collections.abc import Sequence

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client import CollectorRegistry

import monoq.metrics
from monoq.api import create_app
from monoq.backends.memory import MemoryBackend
from monoq.client import Client
from monoq.config import ApiConfig
from monoq.core.models import QueueStats
from monoq.errors import BackendUnavailable

Http = AsyncTestClient[Litestar]


class DownBackend(MemoryBackend):
    """A memory backend whose store has gone away: every read raises BackendUnavailable."""

    async def ping(self) -> None:
        raise BackendUnavailable("connection refused")

    async def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        raise BackendUnavailable("connection refused")

    async def get(self, job_id: str) -> None:
        raise BackendUnavailable("connection refused")


async def test_healthz(http: Http) -> None:
    response = await http.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readyz_ok(http: Http) -> None:
    response = await http.get("/readyz")
    assert (response.status_code, response.json()) == (200, {"status": "ready"})


@pytest.fixture
async def down() -> Http:
    return AsyncTestClient(app=create_app(Client(DownBackend()), ApiConfig()))


async def test_readyz_503_when_the_backend_is_down(down: Http) -> None:
    async with down as tc:
        response = await tc.get("/readyz")
        health = await tc.get("/healthz")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 503
    assert health.status_code == 200


@pytest.mark.parametrize(
    "path",
    ["/api/v1/queues", "/api/v1/stats", "/queue/stats", "/api/v1/jobs/01ABSENT00000000000000000"],
)
async def test_backend_unavailable_is_503_with_retry_after(down: Http, path: str) -> None:
    async with down as tc:
        response = await tc.get(path)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    problem = response.json()
    assert problem == {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "the job store is unavailable; retry later",
        "instance": path,
    }


async def test_metrics_families(http: Http, client: Client) -> None:
    await http.post("/api/v1/jobs", json={"handler": "echo", "queue": "mail"})
    await http.get("/api/v1/jobs/01ABSENT00000000000000000")
    monoq.metrics.job_completed("mail", "echo", 0.5)
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    text = response.text
    for family in (
        "monoq_api_requests_total",
        "monoq_jobs_enqueued_total",
        "monoq_queue_jobs",
        "monoq_queue_paused",
        "monoq_backend_up",
        "monoq_jobs_started_total",
        "monoq_jobs_completed_total",
        "monoq_jobs_failed_total",
        "monoq_jobs_dead_total",
        "monoq_job_duration_seconds",
        "monoq_lease_reclaims_total",
        "monoq_stale_acks_total",
    ):
        assert f"# TYPE {family.removesuffix('_total')}" in text, family
    assert 'monoq_jobs_enqueued_total{handler="echo",queue="mail"} 1.0' in text
    assert 'monoq_queue_jobs{queue="mail",state="queued"} 1.0' in text
    assert "monoq_backend_up 1.0" in text
    assert 'monoq_api_requests_total{method="POST",route="/api/v1/jobs",status="201"} 1.0' in text
    assert (
        'monoq_api_requests_total{method="GET",route="/api/v1/jobs/{job_id}",status="404"} 1.0'
        in text
    )


async def test_metrics_while_the_backend_is_down(down: Http) -> None:
    async with down as tc:
        response = await tc.get("/metrics")
    assert response.status_code == 200
    assert "monoq_backend_up 0.0" in response.text
    assert "monoq_queue_jobs{" not in response.text


async def test_apps_have_separate_registries(client: Client) -> None:
    shared = CollectorRegistry()
    one = create_app(client, ApiConfig(), metrics_registry=shared)
    two = create_app(client, ApiConfig())
    async with AsyncTestClient(app=one) as a, AsyncTestClient(app=two) as b:
        await a.get("/healthz")
        text_one = (await a.get("/metrics")).text
        text_two = (await b.get("/metrics")).text
    assert 'route="/healthz"' in text_one
    assert 'route="/healthz"' not in text_two
    assert (
        shared.get_sample_value(
            "monoq_api_requests_total", {"method": "GET", "route": "/healthz", "status": "200"}
        )
        == 1.0
    )


async def test_openapi_document_and_ui(http: Http) -> None:
    document = (await http.get("/schema/openapi.json")).json()
    paths = document["paths"]
    for path in (
        "/api/v1/jobs",
        "/api/v1/jobs/{job_id}",
        "/api/v1/jobs/{job_id}/wait",
        "/api/v1/dead-letter/requeue",
        "/healthz",
        "/enqueue",
    ):
        assert path in paths, path
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    ui = await http.get("/schema")
    assert ui.status_code == 200
    assert ui.headers["content-type"].startswith("text/html")


async def test_unmatched_and_wrong_method_are_problems(http: Http) -> None:
    for method, path, status in (("GET", "/nowhere", 404), ("PATCH", "/api/v1/jobs", 405)):
        response = await http.request(method, path)
        assert response.status_code == status
        assert response.headers["content-type"] == "application/problem+json"
        assert set(response.json()) == {"type", "title", "status", "detail", "instance"}
