"""Backpressure: ``enqueue(..., limits=...)`` refuses, whole and with nothing written, a call
that would put more waiting jobs in a queue (or in all queues) than its limit."""

from __future__ import annotations

import pytest

from monoq.core.backend import Backend
from monoq.core.models import DepthLimits, Finish, JobState, Outcome
from monoq.errors import QueueFull
from monoq.testing.support import T0, at, claim, enqueue, new_job

pytestmark = pytest.mark.anyio


async def _waiting(backend: Backend, queue: str) -> int:
    [stats] = await backend.stats([queue])
    return sum(stats.counts.get(s, 0) for s in (JobState.QUEUED, JobState.SCHEDULED,
                                                  JobState.RETRYING))


async def test_a_queue_takes_jobs_up_to_its_limit_and_refuses_the_call_past_it(
        backend: Backend) -> None:
    limits = DepthLimits(default=3)
    await backend.enqueue([new_job("mail"), new_job("mail")], now=T0, limits=limits)
    await backend.enqueue([new_job("mail", run_at=at(60))], now=T0, limits=limits)  # 3: full
    with pytest.raises(QueueFull) as refused:
        await backend.enqueue([new_job("mail")], now=T0, limits=limits)
    assert (refused.value.queue, refused.value.depth, refused.value.limit) == ("mail", 3, 3)
    assert await _waiting(backend, "mail") == 3  # nothing written
    # Another queue is not limited by mail's jobs.
    await backend.enqueue([new_job("other")], now=T0, limits=limits)


async def test_a_batch_that_would_pass_the_limit_is_refused_whole(backend: Backend) -> None:
    limits = DepthLimits(queues={"mail": 5})
    await enqueue(backend, *(new_job("mail") for _ in range(3)))
    with pytest.raises(QueueFull):
        await backend.enqueue([new_job("free"), new_job("mail"), new_job("mail"),
                               new_job("mail")], now=T0, limits=limits)
    assert await _waiting(backend, "mail") == 3
    [free] = await backend.stats(["free"])
    assert sum(free.counts.values()) == 0  # not even the jobs of the unlimited queue
    await backend.enqueue([new_job("mail"), new_job("mail")], now=T0, limits=limits)
    assert await _waiting(backend, "mail") == 5


async def test_running_and_finished_jobs_do_not_count(backend: Backend) -> None:
    limits = DepthLimits(default=2)
    await enqueue(backend, new_job(), new_job())
    done, running = await claim(backend, limit=2, now=at(1))
    await backend.finish([Finish(done, Outcome.COMPLETED, result_json=b"1")], now=at(2))
    await backend.enqueue([new_job(), new_job()], now=at(3), limits=limits)
    with pytest.raises(QueueFull):
        await backend.enqueue([new_job()], now=at(3), limits=limits)
    assert running.job.state is JobState.RUNNING


async def test_all_queues_together_have_a_limit_too(backend: Backend) -> None:
    limits = DepthLimits(total=4)
    await backend.enqueue([new_job("a"), new_job("b"), new_job("c")], now=T0, limits=limits)
    with pytest.raises(QueueFull) as refused:
        await backend.enqueue([new_job("d"), new_job("e")], now=T0, limits=limits)
    assert (refused.value.queue, refused.value.depth, refused.value.limit) == (None, 3, 4)
    await backend.enqueue([new_job("d")], now=T0, limits=limits)
