"""Backpressure over HTTP: a submit past a queue's limit is 429 with Retry-After, and nothing
is enqueued; a batch is refused whole."""

from __future__ import annotations

from litestar.testing import AsyncTestClient

from monoq.api import create_app
from monoq.backends.memory import MemoryBackend
from monoq.client import Client
from monoq.config import ApiConfig
from monoq.core.models import DepthLimits, JobState


async def test_a_full_queue_answers_429_with_retry_after_and_enqueues_nothing() -> None:
    client = Client(MemoryBackend(), limits=DepthLimits(queues={"mail": 2}))
    async with AsyncTestClient(app=create_app(client, ApiConfig())) as http:
        for _ in range(2):
            ok = await http.post("/api/v1/jobs", json={"handler": "echo", "queue": "mail"})
            assert ok.status_code == 201
        full = await http.post("/api/v1/jobs", json={"handler": "echo", "queue": "mail"})
        assert full.status_code == 429
        assert full.headers["retry-after"] == "5"
        assert full.headers["content-type"].startswith("application/problem+json")
        problem = full.json()
        assert (problem["queue"], problem["depth"], problem["limit"]) == ("mail", 2, 2)
        assert "backpressure.max_depth" in problem["detail"]
        batch = await http.post("/api/v1/jobs/batch", json={"jobs": [
            {"handler": "echo", "queue": "other"}, {"handler": "echo", "queue": "mail"}]})
        assert batch.status_code == 429
        [mail, other] = await client.queues(["mail", "other"])
        assert mail.counts[JobState.QUEUED] == 2
        assert other.counts[JobState.QUEUED] == 0  # the batch was refused whole
