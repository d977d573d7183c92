"""The Client's dashboard reads: what they pass to the backend and what they refuse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from monoq.backends.memory import MemoryBackend
from monoq.client import Client
from monoq.core.models import JobQuery, JobState, ThroughputBucket
from monoq.errors import ValidationError

pytestmark = pytest.mark.anyio

T0 = datetime(2030, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


async def test_dashboard_reads_through_the_client() -> None:
    clock = Clock()
    client = Client(MemoryBackend(), clock=clock)
    job = await client.enqueue("echo", {"n": 1}, queue="mail")
    clock.now = T0 + timedelta(seconds=3)
    [lease] = await client.backend.claim(["mail"], limit=1, lease_for=MINUTE, worker_id="w",
                                         now=clock.now)
    assert lease.job.id == job.id
    assert await client.recent_waits("mail", limit=10) == [3.0]
    assert await client.count_jobs(states=["running"]) == 1
    assert await client.count_jobs(states=[JobState.RUNNING], queue="other") == 0
    assert await client.throughput(since=T0, until=T0 + MINUTE, bucket=MINUTE) == [
        ThroughputBucket(T0)
    ]
    page = await client.list_jobs(JobQuery(error_type="Boom", finished_after=T0,
                                  finished_before=T0 + MINUTE))
    assert page.jobs == []
    await client.backend.beat("scheduler:x", now=T0)
    assert await client.beats() == {"scheduler:x": T0}
    clock.now = T0 + timedelta(days=2)
    assert await client.beats() == {}  # older than a day by the client's clock


async def test_bad_dashboard_arguments_are_refused() -> None:
    client = Client(MemoryBackend(), clock=Clock())
    with pytest.raises(ValidationError, match="bucket"):
        await client.throughput(since=T0, until=T0 + MINUTE, bucket=timedelta(seconds=45))
    with pytest.raises(ValidationError, match="since"):
        await client.throughput(since=T0.replace(tzinfo=None), until=T0, bucket=MINUTE)
    with pytest.raises(ValidationError, match="queue"):
        await client.throughput(since=T0, until=T0, bucket=MINUTE, queue="no spaces")
    with pytest.raises(ValidationError, match="limit"):
        await client.recent_waits("mail", limit=0)
    with pytest.raises(ValidationError, match="limit"):
        await client.recent_waits("mail", limit=1001)
    with pytest.raises(ValidationError, match="queue"):
        await client.recent_waits("", limit=1)
    with pytest.raises(ValidationError, match="error_type"):
        await client.list_jobs(JobQuery(error_type=""))
    with pytest.raises(ValidationError, match="finished_after"):
        await client.list_jobs(JobQuery(finished_after=T0.replace(tzinfo=None)))
    with pytest.raises(ValidationError, match="finished_before"):
        await client.count_jobs(states=["dead"], finished_before=T0.replace(tzinfo=None))
    with pytest.raises(ValidationError, match="state"):
        await client.count_jobs(states=["finished"])
