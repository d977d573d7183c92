"""The /api/v1 job, queue and dead-letter routes and the compatibility routes, over memory://."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from monoq.api import create_app
from monoq.backends.memory import MemoryBackend
from monoq.client import Client
from monoq.config import ApiConfig
from monoq.core.models import JobState, Outcome
from monoq.registry import HandlerSpec, Registry
from tests.api._support import count_jobs, finish_job

Http = AsyncTestClient[Litestar]
JOB_FIELDS = {
    "id",
    "queue",
    "handler",
    "payload",
    "priority",
    "state",
    "attempt",
    "max_retries",
    "timeout",
    "run_at",
    "created_at",
    "started_at",
    "finished_at",
    "idempotency_key",
    "schedule_id",
    "result",
    "error",
    "progress",
}


async def test_submit_and_get(http: Http) -> None:
    response = await http.post(
        "/api/v1/jobs",
        json={
            "handler": "echo",
            "payload": {"to": "a@b.c"},
            "priority": "high",
            "queue": "mail",
            "max_retries": 5,
            "timeout": 30,
        },
    )
    assert response.status_code == 201
    job = response.json()
    assert set(job) == JOB_FIELDS
    assert (job["handler"], job["queue"], job["priority"], job["state"]) == (
        "echo",
        "mail",
        0,
        "queued",
    )
    assert response.headers["location"] == f"/api/v1/jobs/{job['id']}"
    got = await http.get(f"/api/v1/jobs/{job['id']}")
    assert got.status_code == 200
    assert got.json() == job


async def test_delay_schedules_and_name_alias(http: Http) -> None:
    response = await http.post("/api/v1/jobs", json={"name": "echo", "delay": 60})
    assert response.status_code == 201
    assert response.json()["state"] == "scheduled"


async def test_idempotency_header_replay(http: Http, client: Client) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = await http.post("/api/v1/jobs", json={"handler": "echo", "payload": 1}, headers=headers)
    again = await http.post("/api/v1/jobs", json={"handler": "echo", "payload": 2}, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert first.json()["idempotency_key"] == "order-42"
    assert await count_jobs(client) == 1


async def test_idempotency_body_key_and_conflict_with_header(http: Http, client: Client) -> None:
    body = {"handler": "echo", "idempotency_key": "k1"}
    first = await http.post("/api/v1/jobs", json=body)
    again = await http.post("/api/v1/jobs", json=body, headers={"Idempotency-Key": "k1"})
    assert (first.status_code, again.status_code) == (201, 200)
    clash = await http.post("/api/v1/jobs", json=body, headers={"Idempotency-Key": "k2"})
    assert clash.status_code == 422
    assert clash.json()["field"] == "idempotency_key"
    assert await count_jobs(client) == 1


async def test_batch_is_all_or_nothing(http: Http, client: Client) -> None:
    ok = await http.post(
        "/api/v1/jobs/batch", json={"jobs": [{"handler": "echo", "payload": i} for i in range(3)]}
    )
    assert ok.status_code == 201
    assert [j["payload"] for j in ok.json()["jobs"]] == [0, 1, 2]
    bad = await http.post(
        "/api/v1/jobs/batch",
        json={"jobs": [{"handler": "echo"}, {"handler": "echo", "priority": 99}]},
    )
    assert bad.status_code == 422
    assert bad.json()["field"] == "jobs[1].priority"
    assert await count_jobs(client) == 3


async def test_batch_replay_answers_200(http: Http, client: Client) -> None:
    body = {
        "jobs": [
            {"handler": "echo", "idempotency_key": "a"},
            {"handler": "echo", "idempotency_key": "a"},
        ]
    }
    first = await http.post("/api/v1/jobs/batch", json=body)
    assert first.status_code == 201
    ids = {j["id"] for j in first.json()["jobs"]}
    assert len(ids) == 1
    again = await http.post("/api/v1/jobs/batch", json=body)
    assert again.status_code == 200
    assert {j["id"] for j in again.json()["jobs"]} == ids
    assert await count_jobs(client) == 1


async def test_batch_limits(http: Http, client: Client) -> None:
    full = {"jobs": [{"handler": "echo"}] * 1000}
    assert (await http.post("/api/v1/jobs/batch", json=full)).status_code == 201
    over = {"jobs": [{"handler": "echo"}] * 1001}
    assert (await http.post("/api/v1/jobs/batch", json=over)).status_code == 422
    body: dict[str, Any]
    for body in ({"jobs": []}, {"jobs": {}}, {"job": []}, {"jobs": [1]}):
        response = await http.post("/api/v1/jobs/batch", json=body)
        assert response.status_code == 422, body
    assert await count_jobs(client) == 1000


async def test_list_filters_and_cursor(http: Http, client: Client) -> None:
    ids = [(await client.enqueue("echo", i, queue="q1")).id for i in range(5)]
    await client.enqueue("other", queue="q2")
    await client.cancel(ids[0])
    page = (await http.get("/api/v1/jobs", params={"queue": "q1", "limit": "2"})).json()
    assert [j["id"] for j in page["jobs"]] == [ids[4], ids[3]]
    rest = await http.get("/api/v1/jobs", params={"queue": "q1", "cursor": page["next_cursor"]})
    assert [j["id"] for j in rest.json()["jobs"]] == [ids[2], ids[1], ids[0]]
    assert rest.json()["next_cursor"] is None
    by_state = await http.get("/api/v1/jobs?state=cancelled&state=scheduled")
    assert [j["id"] for j in by_state.json()["jobs"]] == [ids[0]]
    comma = await http.get("/api/v1/jobs", params={"state": "queued,cancelled", "handler": "echo"})
    assert len(comma.json()["jobs"]) == 5


async def test_cancel_and_conflicts(http: Http, client: Client) -> None:
    job = await client.enqueue("echo")
    cancelled = await http.post(f"/api/v1/jobs/{job.id}/cancel")
    assert (cancelled.status_code, cancelled.json()["state"]) == (200, "cancelled")
    done = await finish_job(client, (await client.enqueue("echo")).id, Outcome.COMPLETED)
    conflict = await http.post(f"/api/v1/jobs/{done.id}/cancel")
    assert conflict.status_code == 409
    assert conflict.headers["content-type"] == "application/problem+json"
    assert (await client.get(done.id)).state is JobState.COMPLETED


async def test_retry(http: Http, client: Client) -> None:
    queued = await client.enqueue("echo")
    assert (await http.post(f"/api/v1/jobs/{queued.id}/retry")).status_code == 409
    dead = await finish_job(client, queued.id, Outcome.DEAD)
    assert dead.state is JobState.DEAD
    retried = await http.post(f"/api/v1/jobs/{dead.id}/retry")
    assert (retried.status_code, retried.json()["state"]) == (200, "queued")


async def test_attempts_and_unknown_job(http: Http, client: Client) -> None:
    job = await finish_job(client, (await client.enqueue("echo")).id, Outcome.COMPLETED)
    response = await http.get(f"/api/v1/jobs/{job.id}/attempts")
    attempts = response.json()["attempts"]
    assert [(a["attempt"], a["outcome"], a["worker_id"]) for a in attempts] == [
        (1, "completed", "w1")
    ]
    for path in ("", "/attempts", "/wait", "/cancel", "/retry"):
        method = "POST" if path in ("/cancel", "/retry") else "GET"
        missing = await http.request(method, f"/api/v1/jobs/01ABSENT00000000000000000{path}")
        assert missing.status_code == 404, path
        assert missing.json()["status"] == 404


async def test_wait_done_and_timeout(http: Http, client: Client) -> None:
    job = await client.enqueue("echo")
    waited = await http.get(f"/api/v1/jobs/{job.id}/wait", params={"timeout": "0.05"})
    assert waited.status_code == 200
    assert waited.headers["monoq-wait"] == "timeout"
    assert waited.json()["state"] == "queued"
    await finish_job(client, job.id, Outcome.COMPLETED)
    done = await http.get(f"/api/v1/jobs/{job.id}/wait")
    assert done.headers["monoq-wait"] == "done"
    assert (done.json()["state"], done.json()["result"]) == ("completed", "ok")


async def test_queues_pause_resume(http: Http, client: Client) -> None:
    await client.enqueue("echo", queue="mail")
    listed = (await http.get("/api/v1/queues")).json()["queues"]
    assert [(q["queue"], q["counts"]["queued"]) for q in listed] == [("mail", 1)]
    paused = await http.post("/api/v1/queues/mail/pause")
    assert paused.json()["paused"] is True
    assert (await http.get("/api/v1/queues/mail")).json()["paused"] is True
    assert (await http.post("/api/v1/queues/mail/resume")).json()["paused"] is False
    assert (await http.get("/api/v1/queues/nothing-here")).status_code == 404
    assert (await http.get("/api/v1/queues/bad%20name")).status_code == 422


async def test_dead_letter_list_requeue_purge(http: Http, client: Client) -> None:
    dead = [
        await finish_job(client, (await client.enqueue("echo", queue=q)).id, Outcome.DEAD)
        for q in ("a", "a", "b")
    ]
    listed = (await http.get("/api/v1/dead-letter", params={"queue": "a"})).json()
    assert {j["id"] for j in listed["jobs"]} == {dead[0].id, dead[1].id}
    by_id = await http.post("/api/v1/dead-letter/requeue", json={"ids": [dead[0].id]})
    assert by_id.json() == {"requeued": 1, "ids": [dead[0].id]}
    by_filter = await http.post("/api/v1/dead-letter/requeue", json={"queue": "a"})
    assert by_filter.json()["ids"] == [dead[1].id]
    refused = await http.post("/api/v1/dead-letter/requeue", json={})
    assert refused.status_code == 422
    young = await http.delete("/api/v1/dead-letter", params={"older_than": "3600"})
    assert young.json() == {"purged": 0}
    purged = await http.delete("/api/v1/dead-letter", params={"queue": "b"})
    assert purged.json() == {"purged": 1}
    assert await count_jobs(client) == 2


async def test_workers_and_stats(http: Http, client: Client) -> None:
    assert (await http.get("/api/v1/workers")).json() == {"workers": []}
    await http.post("/api/v1/jobs", json={"handler": "echo"})
    await client.enqueue("echo", queue="other")
    stats = (await http.get("/api/v1/stats")).json()
    assert stats["counts"]["queued"] == 2
    assert stats["queues"] == 2
    enqueued: dict[str, Any] = stats["process"]["enqueued"]
    assert enqueued == {"total": 1, "1m": 1, "5m": 1, "15m": 1}
    nothing = {"completed": 0, "dead": 0, "cancelled": 0, "completed_per_second": 0.0}
    assert stats["throughput"] == {
        "1m": {"window_seconds": 60, **nothing},
        "5m": {"window_seconds": 300, **nothing},
        "15m": {"window_seconds": 900, **nothing},
    }


async def test_stats_throughput_counts_finished_jobs_per_window(backend: MemoryBackend) -> None:
    """Jobs finished by any process count (here: by the backend directly, not through the
    API), per window of 1, 5 and 15 minutes ending now."""
    now = datetime(2030, 1, 1, 12, tzinfo=UTC)
    clock = [now]
    client = Client(backend, clock=lambda: clock[0])

    async def finished(seconds_ago: float, outcome: Outcome, queue: str = "default") -> None:
        clock[0] = now - timedelta(seconds=seconds_ago)
        job = await client.enqueue("echo", queue=queue)
        await finish_job(client, job.id, outcome)

    await finished(10, Outcome.COMPLETED)
    await finished(20, Outcome.COMPLETED, queue="other")
    await finished(30, Outcome.DEAD)
    await finished(60, Outcome.COMPLETED)  # exactly at the 1-minute window's start: counts
    await finished(61, Outcome.CANCELLED)
    await finished(120, Outcome.COMPLETED)
    await finished(400, Outcome.DEAD)
    await finished(600, Outcome.COMPLETED)
    await finished(901, Outcome.COMPLETED)  # older than every window
    await client.enqueue("echo")  # queued, never finished
    clock[0] = now
    running = await client.enqueue("echo", queue="busy")
    await client.backend.claim(
        ["busy"], limit=1, lease_for=timedelta(seconds=30), worker_id="w1", now=now
    )
    assert (await client.get(running.id)).state is JobState.RUNNING

    async with AsyncTestClient(app=create_app(client, ApiConfig())) as http:
        stats = (await http.get("/api/v1/stats")).json()
    assert stats["counts"]["completed"] == 6
    assert stats["throughput"] == {
        "1m": {"window_seconds": 60, "completed": 3, "dead": 1, "cancelled": 0,
               "completed_per_second": 3 / 60},
        "5m": {"window_seconds": 300, "completed": 4, "dead": 1, "cancelled": 1,
               "completed_per_second": 4 / 300},
        "15m": {"window_seconds": 900, "completed": 5, "dead": 2, "cancelled": 1,
                "completed_per_second": 5 / 900},
    }

    # purged jobs leave the count
    assert await backend.purge(states=[JobState.COMPLETED], finished_before=now - timedelta(
        seconds=15)) == 5
    async with AsyncTestClient(app=create_app(client, ApiConfig())) as http:
        throughput = (await http.get("/api/v1/stats")).json()["throughput"]
    assert [throughput[w]["completed"] for w in ("1m", "5m", "15m")] == [1, 1, 1]
    assert throughput["1m"]["completed_per_second"] == 1 / 60


async def test_compat_enqueue_text_and_json(http: Http, client: Client) -> None:
    text = await http.post(
        "/enqueue", content=b"hello world", headers={"Content-Type": "text/plain; charset=utf-8"}
    )
    assert text.status_code == 201
    assert text.json()["enqueued"] is True
    job = await client.get(text.json()["id"])
    assert (job.handler, job.queue, job.payload) == ("log", "default", "hello world")
    as_json = await http.post("/enqueue", json={"line": 1})
    assert (await client.get(as_json.json()["id"])).payload == {"line": 1}
    bare = await http.post("/enqueue", content=b"no content type")
    assert bare.status_code == 201
    assert (await client.get(bare.json()["id"])).payload == "no content type"


async def test_compat_enqueue_takes_curl_d_form_bodies_as_raw_text(
    http: Http, client: Client
) -> None:
    # curl -d 'hello from curl' sends this content type; the body is the message, not a form
    form = await http.post("/enqueue", content=b"a=1&b=hello from curl",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 201
    assert (await client.get(form.json()["id"])).payload == "a=1&b=hello from curl"


async def test_compat_enqueue_refuses_other_types_listing_the_accepted_ones(
    http: Http, client: Client
) -> None:
    response = await http.post("/enqueue", content=b"<x/>",
                               headers={"Content-Type": "application/xml"})
    assert response.status_code == 415
    accepted = response.headers["Accept-Post"]
    for kind in ("text/plain", "application/x-www-form-urlencoded", "application/json"):
        assert kind in accepted
        assert kind in response.json()["detail"]
    assert await count_jobs(client) == 0


async def test_compat_enqueue_uses_configured_handler_and_queue(
    make_app: Any, client: Client
) -> None:
    app = make_app(default_handler="log", queue_name="lines")
    async with AsyncTestClient(app=app) as tc:
        response = await tc.post("/enqueue", content=b"x")
        length = await tc.get("/api/v1/queue/length")
    job = await client.get(response.json()["id"])
    assert (job.handler, job.queue) == ("log", "lines")
    assert length.json() == {"queue": "lines", "length": 1}


async def test_compat_jobs_and_stats(http: Http, client: Client) -> None:
    response = await http.post(
        "/jobs", json={"name": "echo", "payload": {"a": 1}, "priority": "low"}
    )
    assert response.status_code == 201
    assert (response.json()["handler"], response.json()["priority"]) == ("echo", 9)
    await client.enqueue("echo", delay=60)
    running = await client.enqueue("echo")
    await client.backend.claim(
        ["default"], limit=10, lease_for=timedelta(seconds=30), worker_id="w", now=client.clock()
    )
    length = await http.get("/api/v1/queue/length")
    assert length.json() == {"queue": "default", "length": 1}  # the scheduled one; not running
    assert (await client.get(running.id)).state is JobState.RUNNING
    stats = (await http.get("/queue/stats")).json()
    assert stats["totals"]["running"] == 2
    assert stats["queues"]["default"]["scheduled"] == 1


@pytest.mark.parametrize("known", [True, False])
async def test_unknown_handler_with_registry(make_app: Any, client: Client, known: bool) -> None:
    registry = Registry([HandlerSpec(name="echo", func=lambda ctx, p: p)])
    async with AsyncTestClient(app=make_app(registry=registry)) as tc:
        response = await tc.post("/api/v1/jobs", json={"handler": "echo" if known else "nope"})
    assert response.status_code == (201 if known else 422)
    assert await count_jobs(client) == (1 if known else 0)
