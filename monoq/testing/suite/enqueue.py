"""Enqueue, lookup and idempotency keys."""

from __future__ import annotations

import pytest

from monoq.core.backend import Backend
from monoq.core.ids import new_id
from monoq.core.models import JobQuery, JobState, NewJob, Outcome
from monoq.testing.support import (
    T0,
    at,
    claim_one,
    enqueue,
    finish,
    make_job_in,
    new_job,
    payload,
)

pytestmark = pytest.mark.anyio  # the suite's tests are async, in any host project


async def test_enqueue_stores_a_queued_job(backend: Backend) -> None:
    new = NewJob(
        id=new_id(),
        queue="emails",
        handler="send",
        payload_json=payload({"to": "a@example.com"}),
        priority=2,
        max_retries=7,
        timeout=12.5,
        idempotency_key="order-1",
        schedule_id="nightly",
    )
    [answer] = await backend.enqueue([new], now=T0)
    assert answer.created
    job = answer.job
    assert job.id == new.id
    assert (job.queue, job.handler, job.priority) == ("emails", "send", 2)
    assert (job.max_retries, job.timeout) == (7, 12.5)
    assert (job.idempotency_key, job.schedule_id) == ("order-1", "nightly")
    assert job.state is JobState.QUEUED
    assert job.run_at == T0
    assert job.created_at == T0
    assert job.attempt == 0
    assert job.started_at is None
    assert job.finished_at is None
    assert job.result_json is None
    assert job.error is None
    assert not job.cancel_requested
    assert await backend.get(new.id) == job


async def test_payload_bytes_round_trip(backend: Backend) -> None:
    raw = '{"text": "h\u00e9llo \u2713", "nested": [1, 2.5, null, {"k": true}]}'.encode()
    [job] = await enqueue(backend, new_job(payload_json=raw))
    stored = await backend.get(job.id)
    assert stored is not None
    assert stored.payload_json == raw
    lease = await claim_one(backend, job.id)
    assert lease.job.payload_json == raw


async def test_run_at_not_after_now_queues_at_now(backend: Backend) -> None:
    past, present = new_job(run_at=at(-60)), new_job(run_at=T0)
    jobs = await enqueue(backend, past, present, now=T0)
    assert [job.state for job in jobs] == [JobState.QUEUED, JobState.QUEUED]
    assert [job.run_at for job in jobs] == [T0, T0]


async def test_run_at_after_now_is_scheduled(backend: Backend) -> None:
    [job] = await enqueue(backend, new_job(run_at=at(60)), now=T0)
    assert job.state is JobState.SCHEDULED
    assert job.run_at == at(60)
    assert job.created_at == T0


async def test_batch_enqueue_answers_in_order(backend: Backend) -> None:
    news = [new_job(handler=f"h{i}") for i in range(3)]
    answers = await backend.enqueue(news, now=T0)
    assert [a.job.id for a in answers] == [n.id for n in news]
    assert all(a.created for a in answers)
    assert [a.job.handler for a in answers] == ["h0", "h1", "h2"]
    assert all(a.job.state is JobState.QUEUED and a.job.attempt == 0 for a in answers)


async def test_get_unknown_is_none(backend: Backend) -> None:
    await enqueue(backend)
    assert await backend.get(new_id()) is None


async def test_get_many_keeps_order_and_answers_none_for_unknown(backend: Backend) -> None:
    a, b = await enqueue(backend, new_job(handler="a"), new_job(handler="b"))
    unknown = new_id()
    jobs = await backend.get_many([b.id, unknown, a.id])
    assert [None if job is None else job.id for job in jobs] == [b.id, None, a.id]
    assert await backend.get_many([]) == []


@pytest.mark.parametrize("state", list(JobState), ids=lambda state: state.value)
async def test_get_answers_what_get_many_answers_for_one_id(
    backend: Backend, state: JobState
) -> None:
    # get is get_many([id])[0], kept as a call of its own for the most frequent read
    job = await make_job_in(backend, state, now=at(1))
    assert await backend.get(job.id) == (await backend.get_many([job.id]))[0] == job
    unknown = new_id()
    assert await backend.get(unknown) is None
    assert await backend.get_many([unknown]) == [None]


# -- idempotency keys -------------------------------------------------------------------------


async def test_same_key_same_queue_returns_the_original(backend: Backend) -> None:
    [first] = await backend.enqueue([new_job(key="k1", handler="first")], now=T0)
    [second] = await backend.enqueue([new_job(key="k1", handler="second")], now=at(1))
    assert first.created
    assert not second.created
    assert second.job.id == first.job.id
    assert second.job.handler == "first"
    page = await backend.list_jobs(JobQuery(queue="default"))
    assert [job.id for job in page.jobs] == [first.job.id]


async def test_resubmitting_the_same_new_job_is_idempotent(backend: Backend) -> None:
    new = new_job(key="k1")
    [first] = await backend.enqueue([new], now=T0)
    [again] = await backend.enqueue([new], now=at(1))
    assert not again.created
    assert again.job.id == first.job.id == new.id


async def test_key_matches_a_finished_job_until_purged(backend: Backend) -> None:
    [job] = await enqueue(backend, new_job(key="k1"))
    lease = await claim_one(backend, job.id)
    assert await finish(backend, lease, Outcome.COMPLETED, now=at(1))
    [again] = await backend.enqueue([new_job(key="k1")], now=at(2))
    assert not again.created
    assert again.job.id == job.id
    assert again.job.state is JobState.COMPLETED


async def test_same_key_other_queue_creates_a_new_job(backend: Backend) -> None:
    [first] = await backend.enqueue([new_job("a", key="k1")], now=T0)
    [second] = await backend.enqueue([new_job("b", key="k1")], now=T0)
    assert first.created
    assert second.created
    assert second.job.id != first.job.id
    assert second.job.queue == "b"


async def test_duplicate_key_within_one_batch_makes_one_job(backend: Backend) -> None:
    news = [new_job(key="k1", handler="first"), new_job(key="k1", handler="second")]
    first, second = await backend.enqueue(news, now=T0)
    assert first.created
    assert not second.created
    assert second.job.id == first.job.id == news[0].id
    assert await backend.get(news[1].id) is None
    page = await backend.list_jobs(JobQuery())
    assert [job.id for job in page.jobs] == [news[0].id]


async def test_the_first_of_a_key_wins_however_large_the_batch(backend: Backend) -> None:
    """A batch bigger than any backend's call size (Redis sends 1 000 per script call, several
    at once): each repeated key and id is answered with the batch's first job that has it."""
    news = [new_job(key=f"k{i % 7}" if i % 100 == 0 else None) for i in range(3500)]
    news.append(news[1])  # the same job twice, far apart
    answers = await backend.enqueue(news, now=T0)
    first_of: dict[str, str] = {}
    for nj in news:
        if nj.idempotency_key is not None:
            first_of.setdefault(nj.idempotency_key, nj.id)
    for nj, answer in zip(news, answers, strict=True):
        expected = first_of.get(nj.idempotency_key or "", nj.id)
        assert answer.job.id == expected
        assert answer.created == (answer is answers[news.index(nj)] and expected == nj.id)
    [stats] = await backend.stats(["default"])
    assert stats.counts[JobState.QUEUED] == 3500 - (35 - 7)


async def test_key_is_free_again_after_purge(backend: Backend) -> None:
    [job] = await enqueue(backend, new_job(key="k1"))
    cancelled = await backend.cancel(job.id, now=T0)
    assert cancelled is not None
    assert await backend.purge(states={JobState.CANCELLED}, finished_before=at(1)) == 1
    [again] = await backend.enqueue([new_job(key="k1")], now=at(2))
    assert again.created
    assert again.job.id != job.id
    assert again.job.state is JobState.QUEUED


async def test_keyed_delayed_job_is_deduplicated_too(backend: Backend) -> None:
    [first] = await backend.enqueue([new_job(key="cron:x", run_at=at(60))], now=T0)
    [second] = await backend.enqueue([new_job(key="cron:x", run_at=at(60))], now=at(1))
    assert not second.created
    assert second.job.id == first.job.id
    assert second.job.state is JobState.SCHEDULED


async def test_retrying_an_enqueue_with_the_same_job_answers_the_stored_one(
    backend: Backend,
) -> None:
    new = new_job(payload_json=payload({"n": 7}))
    [first] = await backend.enqueue([new], now=T0)
    again, _ = await backend.enqueue([new, new_job()], now=at(1))
    assert first.created
    assert not again.created
    assert again.job == first.job
    page = await backend.list_jobs(JobQuery(limit=10))
    assert len(page.jobs) == 2
