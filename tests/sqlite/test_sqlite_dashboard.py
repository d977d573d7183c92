"""SQLite-specific promises of the dashboard data: the reads seek indexes instead of visiting
every job, pages with rare filters stay bounded, and the counter tables stay small.

The shared contract is in tests/conformance/test_dashboard.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from monoq.backends.sqlite import SqliteBackend
from monoq.backends.sqlite import _backend as sqlite_backend_module
from monoq.core.ids import new_id
from monoq.core.models import ErrorInfo, Finish, Job, JobState, NewJob, Outcome

T0 = datetime(2030, 1, 1, tzinfo=UTC)
LEASE = timedelta(seconds=30)


@pytest.fixture
def anyio_backend() -> str:
    """The sqlite backend runs its writer as an asyncio task."""
    return "asyncio"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "monoq.db"


@pytest.fixture
async def backend(db_path: Path) -> AsyncIterator[SqliteBackend]:
    b = SqliteBackend(f"sqlite:///{db_path}")
    await b.connect()
    try:
        yield b
    finally:
        await b.aclose()


def plan_of(path: Path, sql: str, params: list[Any]) -> str:
    with sqlite3.connect(path) as conn:
        return " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))


def new_job(queue: str = "default") -> NewJob:
    return NewJob(id=new_id(), queue=queue, handler="echo", payload_json=b"1")


async def finished_jobs(backend: SqliteBackend, outcomes: list[Outcome], *,
                        queue: str = "default") -> list[Job]:
    """One job per outcome (DEAD ones failing with ``Boom``), ended at T0, in id order."""
    jobs = [new_job(queue) for _ in outcomes]
    await backend.enqueue(jobs, now=T0)
    leases = await backend.claim([queue], limit=len(jobs), lease_for=LEASE, worker_id="w",
                                 now=T0)
    await backend.finish(
        [Finish(lease, outcome, error=ErrorInfo("Boom", "x") if outcome is Outcome.DEAD
                else None) for lease, outcome in zip(leases, outcomes, strict=True)],
        now=T0,
    )
    stored = await backend.get_many([job.id for job in jobs])
    return [job for job in stored if job is not None]


@pytest.mark.parametrize(
    ("queue", "before", "index"),
    [
        (None, None, "jobs_due"),
        ("q", None, "jobs_queue_state_id"),
        (None, 1000, "jobs_finished"),
        ("q", 1000, "jobs_queue_finished"),
    ],
    ids=["states", "queue", "finished-before", "queue-finished-before"],
)
async def test_count_jobs_counts_index_entries_only(
    backend: SqliteBackend, db_path: Path, queue: str | None, before: int | None, index: str
) -> None:
    sql, params = sqlite_backend_module.count_jobs_sql(
        states=["completed", "dead"], queue=queue, before_ms=before
    )
    assert sql is not None
    plan = plan_of(db_path, sql, params)
    assert f"USING COVERING INDEX {index} " in plan, plan


async def test_the_oldest_queued_job_is_one_seek_per_priority(
    backend: SqliteBackend, db_path: Path
) -> None:
    plan = plan_of(db_path, sqlite_backend_module._OLDEST_QUEUED, ["q"])
    assert "COVERING INDEX jobs_claim (queue=? AND state=? AND priority=?)" in plan, plan


@pytest.mark.parametrize("sql", ["_THROUGHPUT_ALL", "_THROUGHPUT_ONE"])
async def test_throughput_reads_a_primary_key_range(
    backend: SqliteBackend, db_path: Path, sql: str
) -> None:
    query = getattr(sqlite_backend_module, sql)
    params = [0, 60] if sql == "_THROUGHPUT_ALL" else [0, 60, "q"]
    plan = plan_of(db_path, query, params)
    assert "SEARCH throughput USING PRIMARY KEY (minute>? AND minute<?)" in plan, plan


async def test_rare_matches_come_in_short_pages_of_bounded_work(
    backend: SqliteBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no state filter (or too many jobs in the states asked for), a page walks at most
    ``_LIST_BUDGET`` ids; paging on still finds every match once."""
    outcomes = [Outcome.DEAD if i % 5 == 0 else Outcome.COMPLETED for i in range(23)]
    jobs = await finished_jobs(backend, outcomes)
    expected = [job.id for job in reversed(jobs) if job.state is JobState.DEAD]
    monkeypatch.setattr(sqlite_backend_module, "_LIST_BUDGET", 4)
    monkeypatch.setattr(sqlite_backend_module, "_LIST_CANDIDATES", 2)
    for filters in ({}, {"states": {JobState.DEAD}}):
        seen: list[str] = []
        sizes: list[int] = []
        cursor: str | None = None
        for _ in range(20):
            page = await backend.list_jobs(error_type="Boom", limit=3, cursor=cursor,
                                           **filters)  # type: ignore[arg-type]
            seen += [job.id for job in page.jobs]
            sizes.append(len(page.jobs))
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == expected
        assert max(sizes) <= 1  # four ids walked per page hold one match at most
        assert len(sizes) == 6  # 23 ids, four a page


async def test_few_jobs_in_the_states_asked_for_fill_whole_pages(
    backend: SqliteBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcomes = [Outcome.DEAD if i % 5 == 0 else Outcome.COMPLETED for i in range(23)]
    jobs = await finished_jobs(backend, outcomes)
    dead = [job.id for job in reversed(jobs) if job.state is JobState.DEAD]
    monkeypatch.setattr(sqlite_backend_module, "_LIST_BUDGET", 4)  # the walk is not used
    page = await backend.list_jobs(states={JobState.DEAD}, error_type="Boom", limit=3)
    assert [job.id for job in page.jobs] == dead[:3]
    assert page.next_cursor == dead[2]
    rest = await backend.list_jobs(states={JobState.DEAD}, error_type="Boom",
                                   cursor=page.next_cursor)
    assert [job.id for job in rest.jobs] == dead[3:]
    assert rest.next_cursor is None
    # a finish window narrows the candidates to those finished in it
    window = await backend.list_jobs(finished_after=T0, finished_before=T0 + LEASE, limit=100)
    assert [job.id for job in window.jobs] == [job.id for job in reversed(jobs)]
    assert window.next_cursor is None


async def test_counter_tables_stay_bounded(backend: SqliteBackend, db_path: Path) -> None:
    def rows(table: str, where: str = "1") -> int:
        with sqlite3.connect(db_path) as conn:
            (n,) = conn.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()  # noqa: S608
            return int(n)

    await finished_jobs(backend, [Outcome.COMPLETED])
    later = NewJob(id=new_id(), queue="default", handler="echo", payload_json=b"1")
    await backend.enqueue([later], now=T0 + timedelta(hours=26))
    [lease] = await backend.claim(["default"], limit=1, lease_for=LEASE, worker_id="w",
                                  now=T0 + timedelta(hours=26))
    await backend.finish([Finish(lease, Outcome.COMPLETED)], now=T0 + timedelta(hours=26))
    # the first run of a new minute dropped the minute older than 25 h
    assert rows("throughput") == 1
    assert rows("throughput", f"minute = {(T0 + timedelta(hours=26)).timestamp() // 60:.0f}") == 1

    await backend.enqueue([new_job() for _ in range(1003)], now=T0)
    await backend.claim(["default"], limit=1003, lease_for=LEASE, worker_id="w", now=T0)
    assert rows("waits") == 1000

    await backend.beat("scheduler:a", now=T0)
    await backend.beat("scheduler:b", now=T0 + timedelta(days=2))
    assert rows("beats") == 1


# -- stats and schema version 4 ---------------------------------------------------------------


def counted(path: Path) -> dict[tuple[str, str], int]:
    """The counts of the jobs themselves, by (queue, state)."""
    with sqlite3.connect(path) as conn:
        return {(q, s): n for q, s, n in conn.execute(
            "SELECT queue, state, count(*) FROM jobs GROUP BY queue, state")}


async def test_stats_counts_stay_right_through_every_change_of_state(
    backend: SqliteBackend, db_path: Path
) -> None:
    async def check(expected: dict[tuple[str, str], int]) -> None:
        assert counted(db_path) == expected
        by_queue = {s.queue: s.counts for s in await backend.stats()}
        for (queue, state), n in expected.items():
            assert by_queue[queue][JobState(state)] == n

    later = T0 + timedelta(hours=1)
    jobs = [new_job("a") for _ in range(4)] + [new_job("b") for _ in range(2)]
    jobs.append(NewJob(id=new_id(), queue="b", handler="echo", payload_json=b"1", run_at=later))
    await backend.enqueue(jobs, now=T0)
    await check({("a", "queued"): 4, ("b", "queued"): 2, ("b", "scheduled"): 1})

    leases = await backend.claim(["a"], limit=3, lease_for=LEASE, worker_id="w", now=T0)
    await check({("a", "queued"): 1, ("a", "running"): 3, ("b", "queued"): 2,
                 ("b", "scheduled"): 1})

    done, dead, retried = leases
    await backend.finish(
        [Finish(done, Outcome.COMPLETED),
         Finish(dead, Outcome.DEAD, error=ErrorInfo("Boom", "x")),
         Finish(retried, Outcome.RETRY, error=ErrorInfo("Boom", "x"), retry_at=later)],
        now=T0,
    )
    await check({("a", "queued"): 1, ("a", "completed"): 1, ("a", "dead"): 1,
                 ("a", "retrying"): 1, ("b", "queued"): 2, ("b", "scheduled"): 1})

    assert await backend.requeue([dead.job.id], now=T0) == [dead.job.id]
    await check({("a", "queued"): 2, ("a", "completed"): 1, ("a", "retrying"): 1,
                 ("b", "queued"): 2, ("b", "scheduled"): 1})

    cancelled = await backend.cancel(jobs[4].id, now=T0)
    assert cancelled is not None and cancelled.state is JobState.CANCELLED
    await check({("a", "queued"): 2, ("a", "completed"): 1, ("a", "retrying"): 1,
                 ("b", "queued"): 1, ("b", "cancelled"): 1, ("b", "scheduled"): 1})

    purged = await backend.purge(states=[JobState.COMPLETED, JobState.CANCELLED],
                                 finished_before=T0 + timedelta(seconds=1))
    assert purged == 2
    await check({("a", "queued"): 2, ("a", "retrying"): 1, ("b", "queued"): 1,
                 ("b", "scheduled"): 1})
    assert {s.queue: s.counts[JobState.COMPLETED] for s in await backend.stats()} == {
        "a": 0, "b": 0}


async def test_a_version_3_file_gains_the_list_index_and_processed_counts(
    db_path: Path,
) -> None:
    backend = SqliteBackend(f"sqlite:///{db_path}")
    await backend.connect()
    try:
        await backend.enqueue([new_job("a"), new_job("a"), new_job("b")], now=T0)
        await backend.claim(["a"], limit=1, lease_for=LEASE, worker_id="w", now=T0)
    finally:
        await backend.aclose()
    # Make it look like a version 3 file: no list index, no processed column.
    with sqlite3.connect(db_path) as conn:
        conn.execute("DROP INDEX jobs_queue_state_id")
        conn.execute("ALTER TABLE workers DROP COLUMN processed")
        conn.execute("PRAGMA user_version = 3")
    backend = SqliteBackend(f"sqlite:///{db_path}")
    await backend.connect()
    try:
        with sqlite3.connect(db_path) as conn:
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            columns = {r[1] for r in conn.execute("PRAGMA table_info(workers)")}
        assert "jobs_queue_state_id" in names and "processed" in columns
        page = await backend.list_jobs(queue="a", states=[JobState.QUEUED])
        assert len(page.jobs) == 1
        assert {s.queue: s.counts[JobState.QUEUED] for s in await backend.stats()} == {
            "a": 1, "b": 1}
    finally:
        await backend.aclose()


@pytest.mark.parametrize(
    ("queue", "states", "ranges"),
    [
        ("q", None, len(JobState)),  # every state of the queue: empty ones are one seek
        (None, ["dead"], 2),
        (None, ["completed", "dead"], 4),
        ("q", ["dead"], 1),
        ("q", ["completed", "dead"], 2),
    ],
    ids=["queue", "state", "states", "queue-state", "queue-states"],
)
async def test_list_pages_by_queue_and_state_are_index_ranges_in_id_order(
    backend: SqliteBackend, db_path: Path, queue: str | None, states: list[str] | None,
    ranges: int,
) -> None:
    q_jobs = await finished_jobs(backend, [Outcome.COMPLETED, Outcome.DEAD], queue="q")
    r_jobs = await finished_jobs(backend, [Outcome.DEAD, Outcome.COMPLETED], queue="r")
    query = sqlite_backend_module._JobQuery(
        queue=queue, states=states, handler=None, schedule_id=None, error_type=None,
        after_ms=None, before_ms=None, cursor="zzz", limit=50,
    )
    statements: list[str] = []
    with sqlite3.connect(db_path) as conn:
        conn.set_trace_callback(statements.append)
        jobs, _ = query.whole_page(conn)
        conn.set_trace_callback(None)
        expected = sorted(
            (j.id for j in [*q_jobs, *r_jobs]
             if (queue is None or j.queue == queue)
             and (states is None or j.state.value in states)),
            reverse=True,
        )
        assert [j.id for j in jobs] == expected
        plans = [" | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
                 for sql in statements if sql.startswith("SELECT") and "FROM jobs" in sql]
    assert len(plans) == ranges
    for plan in plans:
        assert plan.startswith("SEARCH jobs USING INDEX jobs_queue_state_id (queue=? AND state=?"), (
            plan)
        assert "TEMP B-TREE" not in plan, plan
