"""The audit log: ``append_audit``, ``list_audit`` (filters, newest first, cursor paging) and
``purge_audit`` (retention)."""

from __future__ import annotations

import json

import anyio
import pytest

from monoq.core.audit import MAX_SCANNED, AuditEntry, AuditFilter, AuditPage
from monoq.core.backend import Backend
from monoq.core.ids import new_id
from monoq.errors import ValidationError
from monoq.testing.support import at

pytestmark = pytest.mark.anyio  # the suite's tests are async, in any host project


def entry(seconds: float = 0.0, *, action: str = "cancel", actor: str = "ops",
          source: str = "api", target: str | None = "01JOB", queue: str | None = "mail",
          outcome: str = "ok", detail: dict[str, object] | None = None,
          address: str | None = "10.0.0.7", entry_id: str | None = None) -> AuditEntry:
    return AuditEntry(id=entry_id or new_id(), at=at(seconds), actor=actor, source=source,
                      action=action, target=target, queue=queue, outcome=outcome,
                      detail_json=json.dumps(detail or {}), address=address)


async def every(backend: Backend, filters: AuditFilter | None = None, limit: int = 50
                ) -> list[AuditEntry]:
    """Every matching entry, paging until the last page."""
    found: list[AuditEntry] = []
    cursor: str | None = None
    for _ in range(10_000):
        page = await backend.list_audit(filters=filters, limit=limit, cursor=cursor)
        assert len(page.entries) <= limit
        found += page.entries
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor
    raise AssertionError("list_audit never reached its last page")


async def test_an_appended_entry_reads_back_exactly(backend: Backend) -> None:
    stored = entry(1.5, action="purge", target=None, detail={"purged": 12, "older_than": 0.0},
                   address=None, source="cli", actor="alice")
    await backend.append_audit(stored)
    page = await backend.list_audit()
    assert page == AuditPage(entries=[stored], next_cursor=None)
    assert page.entries[0].detail == {"purged": 12, "older_than": 0.0}


async def test_entries_are_answered_newest_first_by_time_then_id(backend: Backend) -> None:
    late = entry(5)
    early = entry(1)
    same_a, same_b = entry(3, entry_id="01AAA"), entry(3, entry_id="01BBB")
    for item in (late, same_b, early, same_a):  # the order of appends does not matter
        await backend.append_audit(item)
    page = await backend.list_audit()
    assert [e.id for e in page.entries] == [late.id, same_b.id, same_a.id, early.id]


async def test_paging_visits_every_entry_once_in_order(backend: Backend) -> None:
    stored = [entry(i * 0.25) for i in range(23)]
    for item in stored:
        await backend.append_audit(item)
    first = await backend.list_audit(limit=10)
    assert [e.id for e in first.entries] == [e.id for e in reversed(stored)][:10]
    assert first.next_cursor is not None
    got = await every(backend, limit=10)
    assert [e.id for e in got] == [e.id for e in reversed(stored)]


async def test_a_page_that_ends_exactly_at_the_last_entry_says_so_or_answers_none_next(
        backend: Backend) -> None:
    for i in range(4):
        await backend.append_audit(entry(i))
    first = await backend.list_audit(limit=4)
    assert len(first.entries) == 4
    if first.next_cursor is not None:  # allowed: the next page is then empty and the last
        assert await backend.list_audit(limit=4, cursor=first.next_cursor) == AuditPage([], None)


async def test_filters_keep_only_matching_entries(backend: Backend) -> None:
    wanted = [
        entry(1, action="pause", actor="alice", queue="mail", target="mail", source="ui"),
        entry(2, action="pause", actor="alice", queue="mail", target="mail", source="ui"),
    ]
    others = [
        entry(3, action="resume", actor="alice", queue="mail", target="mail", source="ui"),
        entry(4, action="pause", actor="bob", queue="mail", target="mail", source="ui"),
        entry(5, action="pause", actor="alice", queue="reports", target="reports",
              source="ui"),
        entry(6, action="pause", actor="alice", queue="mail", target="mail", source="cli"),
    ]
    for item in [*wanted, *others]:
        await backend.append_audit(item)
    filters = AuditFilter(action="pause", actor="alice", queue="mail", target="mail",
                          source="ui")
    assert [e.id for e in await every(backend, filters)] == [wanted[1].id, wanted[0].id]
    assert [e.id for e in await every(backend, AuditFilter(queue="reports"))] == [others[2].id]
    assert await every(backend, AuditFilter(actor="nobody")) == []


async def test_since_is_inclusive_and_until_exclusive(backend: Backend) -> None:
    stored = [entry(i) for i in range(6)]
    for item in stored:
        await backend.append_audit(item)
    got = await every(backend, AuditFilter(since=at(2), until=at(4)))
    assert [e.id for e in got] == [stored[3].id, stored[2].id]


async def test_a_rare_filter_over_many_entries_still_finds_every_match(backend: Backend
                                                                       ) -> None:
    """Pages may end early (bounded work), but paging on reaches every match."""
    count = MAX_SCANNED + 700
    rare = {0, 1, count // 2, count - 1}
    items = [entry(i / 1000, action="retry" if i in rare else "cancel") for i in range(count)]
    for start in range(0, count, 20):  # a few concurrent appends: a backend may batch them
        async with anyio.create_task_group() as group:
            for item in items[start:start + 20]:
                group.start_soon(backend.append_audit, item)
    got = await every(backend, AuditFilter(action="retry"), limit=3)
    assert [e.at for e in got] == [at(i / 1000) for i in sorted(rare, reverse=True)]


async def test_a_malformed_cursor_is_refused(backend: Backend) -> None:
    await backend.append_audit(entry())
    with pytest.raises(ValidationError):
        await backend.list_audit(cursor="not a cursor")


async def test_purge_deletes_the_oldest_entries_before_the_horizon(backend: Backend) -> None:
    stored = [entry(i) for i in range(10)]
    for item in stored:
        await backend.append_audit(item)
    assert await backend.purge_audit(before=at(6), limit=4) == 4
    assert await backend.purge_audit(before=at(6), limit=4) == 2
    assert await backend.purge_audit(before=at(6), limit=4) == 0
    got = await every(backend)
    assert [e.id for e in got] == [e.id for e in reversed(stored[6:])]  # at(6) itself stays
    assert await backend.purge_audit(before=at(100), limit=0) == 0
    assert len(await every(backend)) == 4


async def test_a_limit_of_zero_answers_nothing(backend: Backend) -> None:
    await backend.append_audit(entry())
    assert await backend.list_audit(limit=0) == AuditPage(entries=[], next_cursor=None)
