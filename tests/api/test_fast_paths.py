"""The api's performance paths answer exactly what the plain ones did.

- concurrent single submits share backend calls (``monoq.core.coalesce``) yet each request gets
  its own answer: one ``created`` per idempotency key, a bad request fails alone;
- job JSON is encoded straight to bytes (``monoq.api.jsonout``), byte-for-byte the encoding of
  ``Job.to_dict``.
"""

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone

import attrs
import msgspec
import pytest
from litestar import Litestar
from litestar.serialization import encode_json
from litestar.testing import AsyncTestClient

from monoq.api.jsonout import job_bytes, jobs_bytes
from monoq.backends.memory import MemoryBackend
from monoq.client import Client
from monoq.core.models import DepthLimits, Enqueued, Job, JobQuery, JobState, NewJob, rfc3339
from monoq.errors import BackendError, BackendUnavailable

Http = AsyncTestClient[Litestar]
pytestmark = pytest.mark.anyio


async def test_concurrent_submits_one_key_create_one_job(http: Http, client: Client) -> None:
    bodies = [{"handler": "echo", "payload": {"n": n}, "idempotency_key": "same"} for n in range(8)]
    answers = await asyncio.gather(*(http.post("/api/v1/jobs", json=b) for b in bodies))
    assert sorted(r.status_code for r in answers) == [200] * 7 + [201]
    ids = {r.json()["id"] for r in answers}
    assert len(ids) == 1
    created = next(r for r in answers if r.status_code == 201)
    assert all(r.json() == created.json() for r in answers)
    job_id = ids.pop()
    assert all(r.headers["location"] == f"/api/v1/jobs/{job_id}" for r in answers)
    page = await client.list_jobs(JobQuery())
    assert len(page.jobs) == 1


async def test_a_bad_request_does_not_fail_its_neighbours(http: Http, client: Client) -> None:
    bodies: list[dict[str, object]] = [{"handler": "echo", "payload": n} for n in range(6)]
    bodies[3] = {"handler": "bad name!"}
    answers = await asyncio.gather(*(http.post("/api/v1/jobs", json=b) for b in bodies))
    assert [r.status_code for r in answers] == [201, 201, 201, 422, 201, 201]
    assert answers[3].json()["field"] == "handler"
    assert len((await client.list_jobs(JobQuery())).jobs) == 5
    assert [r.json()["payload"] for i, r in enumerate(answers) if i != 3] == [0, 1, 2, 4, 5]


class _FlakyBackend(MemoryBackend):
    """Refuses any enqueue that holds a job for the handler ``poison``."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error
        self.calls: list[int] = []

    async def enqueue(self, jobs: Sequence[NewJob], *, now: datetime,
                      limits: DepthLimits | None = None) -> list[Enqueued]:
        self.calls.append(len(jobs))
        await asyncio.sleep(0)
        if any(job.handler == "poison" for job in jobs):
            raise self.error
        return await super().enqueue(jobs, now=now, limits=limits)


async def test_concurrent_submits_coalesce_and_a_failing_job_is_isolated() -> None:
    backend = _FlakyBackend(BackendError("refused"))
    client = Client(backend)
    news = [client.build("poison" if n == 2 else "echo", n) for n in range(5)]
    results = await asyncio.gather(*(client.submit_job(n) for n in news),
                                   return_exceptions=True)
    assert isinstance(results[2], BackendError)
    assert [r.job.id for r in results if isinstance(r, Enqueued)] == [
        n.id for i, n in enumerate(news) if i != 2
    ]
    # the first goes out alone (nothing was in flight), the four that came meanwhile in one
    # call, refused; then one call each
    assert backend.calls == [1, 4, 1, 1, 1, 1]


async def test_coalesced_submits_share_an_unavailable_backend_error() -> None:
    backend = _FlakyBackend(BackendUnavailable("down"))
    client = Client(backend)
    news = [client.build("poison", n) for n in range(4)]
    results = await asyncio.gather(*(client.submit_job(n) for n in news),
                                   return_exceptions=True)
    assert all(isinstance(r, BackendUnavailable) for r in results)
    assert backend.calls == [1, 3]  # no retry one by one while the backend is down


class _GatedBackend(MemoryBackend):
    """Holds every enqueue until ``gate`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.calls: list[int] = []

    async def enqueue(self, jobs: Sequence[NewJob], *, now: datetime,
                      limits: DepthLimits | None = None) -> list[Enqueued]:
        self.calls.append(len(jobs))
        self.entered.set()
        await self.gate.wait()
        return await super().enqueue(jobs, now=now, limits=limits)


async def test_jobs_waiting_behind_a_cancelled_caller_are_still_sent() -> None:
    """The first submit sends from its caller's task; when that caller is cancelled mid-call,
    the submits that queued behind it still go out and get their answers."""
    backend = _GatedBackend()
    client = Client(backend)
    first = asyncio.create_task(client.submit_job(client.build("echo", 0)))
    await backend.entered.wait()
    behind = [asyncio.create_task(client.submit_job(client.build("echo", n)))
              for n in range(1, 4)]
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    backend.gate.set()
    answers = await asyncio.gather(*behind)
    assert [a.job.payload for a in answers] == [1, 2, 3]
    assert backend.calls == [1, 3]
    # and the next lone submit goes out on its own again
    alone = await client.submit_job(client.build("echo", 9))
    assert alone.created and backend.calls == [1, 3, 1]


def _jobs() -> list[Job]:
    t0 = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    base = Job(
        id="01J0000000000000000000000A",
        queue="default",
        handler="echo",
        payload_json=msgspec.json.encode({"n": 1, "s": "é\u2028\"<>", "f": 0.1, "l": [1, None]}),
        priority=5,
        state=JobState.QUEUED,
        attempt=0,
        max_retries=3,
        timeout=300.0,
        run_at=t0,
        created_at=t0,
    )
    return [
        base,
        completed(base, t0),
        Job(
            id="01J0000000000000000000000B", queue="q", handler="h", payload_json=b"null",
            priority=0, state=JobState.DEAD, attempt=4, max_retries=3, timeout=1.5,
            run_at=t0.astimezone(timezone(timedelta(hours=5))), created_at=t0,
            started_at=t0, finished_at=t0 + timedelta(seconds=1), idempotency_key="k/1",
            schedule_id="s", error="Boom: bad", cancel_requested=True, worker_id="w",
        ),
    ]


def completed(job: Job, t0: datetime) -> Job:
    """``job`` completed with a result."""
    return attrs.evolve(
        job, state=JobState.COMPLETED, attempt=1, started_at=t0, finished_at=t0,
        result_json=msgspec.json.encode([1, {"ok": True}, "x"]),
    )


def test_job_bytes_equal_the_encoded_dict() -> None:
    jobs = _jobs()
    for job in jobs:
        assert job_bytes(job) == encode_json(job.to_dict())
    assert jobs_bytes(jobs) == encode_json({"jobs": [job.to_dict() for job in jobs]})
    assert jobs_bytes(jobs[:1], {"next_cursor": None}) == encode_json(
        {"jobs": [jobs[0].to_dict()], "next_cursor": None}
    )


def test_rfc3339_forms() -> None:
    t = datetime(2030, 1, 2, 3, 4, 5, 678999, tzinfo=UTC)
    assert rfc3339(t) == "2030-01-02T03:04:05.678Z"
    assert rfc3339(t) == "2030-01-02T03:04:05.678Z"  # memoised
    assert rfc3339(t.astimezone(timezone(timedelta(hours=-3)))) == "2030-01-02T03:04:05.678Z"
    assert rfc3339(datetime(5, 1, 1, tzinfo=UTC)) == "0005-01-01T00:00:00.000Z"
    assert rfc3339(None) is None
