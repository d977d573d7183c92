"""Client.build_many: a batch is built as each of its jobs would be alone."""

from __future__ import annotations

from datetime import UTC, datetime

import attrs
import pytest

import monoq
from monoq.backends.memory import MemoryBackend
from monoq.client import Client
from monoq.core.models import NewJob
from monoq.errors import ValidationError
from monoq.registry import Registry

NOW = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def client() -> Client:
    registry = Registry()

    @monoq.handler("mail.send", queue="mail", priority=2, max_retries=7, timeout=12)
    async def send(ctx: monoq.Context, payload: object) -> None:
        """Send."""

    registry.add_function(send)
    return Client(MemoryBackend(), registry=registry, clock=lambda: NOW)


def _fields(job: NewJob) -> dict[str, object]:
    return {k: v for k, v in attrs.asdict(job, recurse=False).items() if k != "id"}


def test_a_batch_gets_what_each_job_gets_alone(client: Client) -> None:
    items: list[dict[str, object]] = [
        {"handler": "mail.send", "payload": 1},
        {"handler": "other", "payload": 2},
        {"handler": "mail.send", "priority": "high", "queue": "urgent"},
        {"handler": "mail.send", "payload": 3},
        {"name": "other", "timeout": 1, "delay": 60, "idempotency_key": "k"},
        {"handler": "other", "timeout": 1.0, "run_at": "2030-01-02T00:00:00Z"},
    ]
    built = client.build_many(items, now=NOW)
    alone = [client.build_from_dict(item, now=NOW) for item in items]
    assert [_fields(b) for b in built] == [_fields(a) for a in alone]
    assert [(b.queue, b.priority, b.max_retries, b.timeout) for b in built[:2]] == [
        ("mail", 2, 7, 12.0), ("default", 5, 3, 300.0)]
    ids = [b.id for b in built]
    assert ids == sorted(set(ids))


@pytest.mark.parametrize(("bad", "field"), [
    ({"priority": True}, "jobs[1].priority"),  # equal to 1, which the first job used
    ({"timeout": True}, "jobs[1].timeout"),
    ({"priority": [1]}, "jobs[1].priority"),  # not hashable: checked the long way
    ({"queue": {"a": 1}}, "jobs[1].queue"),
])
def test_an_option_equal_to_an_accepted_one_is_still_checked(
        client: Client, bad: dict[str, object], field: str) -> None:
    same = {"handler": "other", "priority": 1, "timeout": 1}
    items = [same, {**same, **bad}]
    with pytest.raises(ValidationError) as caught:
        client.build_many(items, now=NOW)
    assert caught.value.field == field


def test_a_built_job_in_the_batch_is_kept_as_it_is(client: Client) -> None:
    done = client.build("other", 5)
    built = client.build_many([{"handler": "other"}, done], now=NOW)
    assert built[1] is done
    assert built[0].id > done.id
