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
from monoq.core.models import ErrorInfo, Finish, Job, JobQuery, JobState, NewJob, Outcome
from tests.sqlite._support import undo_version_9

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
        (None, 1000, "jobs_finished"),
        ("q", 1000, "jobs_queue_finished"),
    ],
    ids=["finished-before", "queue-finished-before"],
)
async def test_count_jobs_counts_index_entries_only(
    backend: SqliteBackend, db_path: Path, queue: str | None, before: int, index: str
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


async def page_through(backend: SqliteBackend, **filters: Any) -> tuple[list[str], list[int]]:
    """Every id listed by following the cursors, and the size of each page."""
    seen: list[str] = []
    sizes: list[int] = []
    cursor: str | None = None
    for _ in range(20):
        page = await backend.list_jobs(JobQuery(limit=3, cursor=cursor, **filters))
        seen += [job.id for job in page.jobs]
        sizes.append(len(page.jobs))
        cursor = page.next_cursor
        if cursor is None:
            break
    return seen, sizes


async def test_rare_matches_come_in_short_pages_of_bounded_work(
    backend: SqliteBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no queue or state filter, a filtered page walks at most ``_LIST_BUDGET`` ids of
    the id index; paging on still finds every match once."""
    outcomes = [Outcome.DEAD if i % 5 == 0 else Outcome.COMPLETED for i in range(23)]
    jobs = await finished_jobs(backend, outcomes)
    expected = [job.id for job in reversed(jobs) if job.state is JobState.DEAD]
    monkeypatch.setattr(sqlite_backend_module, "_LIST_BUDGET", 4)
    seen, sizes = await page_through(backend, error_type="Boom")
    assert seen == expected
    assert max(sizes) <= 1  # four ids walked per page hold one match at most
    assert len(sizes) == 6  # 23 ids, four a page


async def test_a_state_filter_walks_only_the_ranges_of_its_states(
    backend: SqliteBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a state filter and too many jobs in it to read whole, each (queue, state) range
    walks its share of the budget: rare matches among dead jobs cost a walk of dead jobs
    only, however many completed jobs there are, and paging still finds each match once."""
    outcomes = [Outcome.DEAD if i % 3 == 0 else Outcome.COMPLETED for i in range(30)]
    jobs = await finished_jobs(backend, outcomes)
    await finished_jobs(backend, [Outcome.DEAD, Outcome.COMPLETED, Outcome.DEAD], queue="other")
    monkeypatch.setattr(sqlite_backend_module, "_LIST_CANDIDATES", 2)
    monkeypatch.setattr(sqlite_backend_module, "_LIST_MIN_RANGE", 1)
    monkeypatch.setattr(sqlite_backend_module, "_LIST_BUDGET", 4)
    dead = [job.id for job in reversed(jobs) if job.state is JobState.DEAD]
    seen, sizes = await page_through(backend, queue="default", states={JobState.DEAD},
                                     error_type="Boom")
    assert seen == dead
    assert max(sizes) <= 3
    seen, sizes = await page_through(backend, queue="default", states={JobState.DEAD},
                                     handler="nobody")
    assert seen == []
    # ten dead jobs, four walked a page (one range), never the twenty completed ones
    assert len(sizes) == 3
    # Two queues' dead ranges share the budget; the pages still list each dead job once,
    # newest first.
    every_dead = [job.id for job in (await backend.list_jobs(JobQuery(states={JobState.DEAD},
                                                             limit=100))).jobs]
    assert len(every_dead) == 12
    seen, sizes = await page_through(backend, states={JobState.DEAD}, error_type="Boom")
    assert seen == every_dead
    assert max(sizes) <= 3


async def test_few_jobs_in_the_states_asked_for_fill_whole_pages(
    backend: SqliteBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcomes = [Outcome.DEAD if i % 5 == 0 else Outcome.COMPLETED for i in range(23)]
    jobs = await finished_jobs(backend, outcomes)
    dead = [job.id for job in reversed(jobs) if job.state is JobState.DEAD]
    monkeypatch.setattr(sqlite_backend_module, "_LIST_BUDGET", 4)  # the walk is not used
    page = await backend.list_jobs(JobQuery(states={JobState.DEAD}, error_type="Boom", limit=3))
    assert [job.id for job in page.jobs] == dead[:3]
    assert page.next_cursor == dead[2]
    rest = await backend.list_jobs(JobQuery(states={JobState.DEAD}, error_type="Boom",
                                   cursor=page.next_cursor))
    assert [job.id for job in rest.jobs] == dead[3:]
    assert rest.next_cursor is None
    # a finish window narrows the candidates to those finished in it
    window = await backend.list_jobs(JobQuery(finished_after=T0, finished_before=T0 + LEASE, limit=100))
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


# -- stats: the job_counts table, schema versions 4 and 5 ------------------------------------


def counted(path: Path) -> dict[tuple[str, str], int]:
    """The counts of the jobs themselves, by (queue, state)."""
    with sqlite3.connect(path) as conn:
        return {(q, s): n for q, s, n in conn.execute(
            "SELECT queue, state, count(*) FROM jobs GROUP BY queue, state")}


def kept(path: Path) -> dict[tuple[str, str], int]:
    """The non-zero rows of job_counts, which stats() reads."""
    with sqlite3.connect(path) as conn:
        return {(q, s): n for q, s, n in conn.execute(
            "SELECT queue, state, n FROM job_counts WHERE n != 0")}


async def test_stats_counts_stay_right_through_every_change_of_state(
    backend: SqliteBackend, db_path: Path
) -> None:
    async def check(expected: dict[tuple[str, str], int]) -> None:
        assert counted(db_path) == expected
        assert kept(db_path) == expected
        by_queue = {s.queue: s.counts for s in await backend.stats()}
        for (queue, state), n in expected.items():
            assert by_queue[queue][JobState(state)] == n
        for state in JobState:
            total = sum(n for (_q, st), n in expected.items() if st == state.value)
            assert await backend.count_jobs(states=[state]) == total
            assert await backend.count_jobs(states=[state], queue="a") == expected.get(
                ("a", state.value), 0)

    later = T0 + timedelta(hours=1)
    jobs = [new_job("a") for _ in range(5)] + [new_job("b") for _ in range(2)]
    jobs.append(NewJob(id=new_id(), queue="b", handler="echo", payload_json=b"1", run_at=later))
    # A repeated id answers the stored job and must not count twice.
    await backend.enqueue([*jobs, jobs[0]], now=T0)
    await backend.enqueue([jobs[1]], now=T0)
    await check({("a", "queued"): 5, ("b", "queued"): 2, ("b", "scheduled"): 1})

    leases = await backend.claim(["a"], limit=4, lease_for=LEASE, worker_id="w", now=T0)
    await check({("a", "queued"): 1, ("a", "running"): 4, ("b", "queued"): 2,
                 ("b", "scheduled"): 1})

    done, dead, retried, released = leases
    results = await backend.finish(
        [Finish(done, Outcome.COMPLETED),
         Finish(dead, Outcome.DEAD, error=ErrorInfo("Boom", "x")),
         Finish(retried, Outcome.RETRY, error=ErrorInfo("Boom", "x"), retry_at=later),
         Finish(released, Outcome.RELEASED),
         Finish(done, Outcome.COMPLETED)],  # a stale token: refused, counts nothing
        now=T0,
    )
    assert results == [True, True, True, True, False]
    await check({("a", "queued"): 2, ("a", "completed"): 1, ("a", "dead"): 1,
                 ("a", "retrying"): 1, ("b", "queued"): 2, ("b", "scheduled"): 1})

    assert await backend.requeue([dead.job.id, done.job.id], now=T0) == [dead.job.id]
    await check({("a", "queued"): 3, ("a", "completed"): 1, ("a", "retrying"): 1,
                 ("b", "queued"): 2, ("b", "scheduled"): 1})

    cancelled = await backend.cancel(jobs[5].id, now=T0)
    assert cancelled is not None and cancelled.state is JobState.CANCELLED
    await check({("a", "queued"): 3, ("a", "completed"): 1, ("a", "retrying"): 1,
                 ("b", "queued"): 1, ("b", "cancelled"): 1, ("b", "scheduled"): 1})

    # Promotion moves the due scheduled and retrying jobs, a few per call.
    assert await backend.promote(now=later, limit=1) == 1
    assert await backend.promote(now=later, limit=10) == 1
    await check({("a", "queued"): 4, ("a", "completed"): 1, ("b", "queued"): 2,
                 ("b", "cancelled"): 1})

    # A lease that expires is reaped through finish: it counts like any other finish.
    [lost] = await backend.claim(["b"], limit=1, lease_for=LEASE, worker_id="w", now=later)
    [expired] = await backend.expired_leases(now=later + 2 * LEASE, limit=10)
    assert expired.job_id == lost.job_id
    await backend.finish([Finish(expired, Outcome.DEAD, error=ErrorInfo("LeaseLost", "x"))],
                         now=later + 2 * LEASE)
    await check({("a", "queued"): 4, ("a", "completed"): 1, ("b", "queued"): 1,
                 ("b", "cancelled"): 1, ("b", "dead"): 1})

    purged = await backend.purge(states=[JobState.COMPLETED, JobState.CANCELLED],
                                 finished_before=T0 + timedelta(seconds=1))
    assert purged == 2
    await check({("a", "queued"): 4, ("b", "queued"): 1, ("b", "dead"): 1})
    assert {s.queue: s.counts[JobState.COMPLETED] for s in await backend.stats()} == {
        "a": 0, "b": 0}


async def test_deleting_a_schedules_runs_counts_them_out(
    backend: SqliteBackend, db_path: Path
) -> None:
    runs = [NewJob(id=new_id(), queue="cron", handler="echo", payload_json=b"1",
                   schedule_id="nightly") for _ in range(5)]
    await backend.enqueue(runs, now=T0)
    leases = await backend.claim(["cron"], limit=5, lease_for=LEASE, worker_id="w", now=T0)
    await backend.finish([Finish(lease, Outcome.COMPLETED) for lease in leases], now=T0)
    assert await backend.purge_schedule_runs("nightly", keep=2) == 3
    assert kept(db_path) == counted(db_path) == {("cron", "completed"): 2}
    [stats] = await backend.stats(["cron"])
    assert stats.counts[JobState.COMPLETED] == 2


async def test_counts_stay_exact_when_several_backends_write_one_file(db_path: Path) -> None:
    """Two backends on one file (two processes, as far as SQLite can tell) each add their own
    changes inside their own write transactions."""
    first, second = SqliteBackend(f"sqlite:///{db_path}"), SqliteBackend(f"sqlite:///{db_path}")
    await first.connect()
    await second.connect()
    try:
        for round_ in range(20):
            await first.enqueue([new_job("a") for _ in range(3)], now=T0)
            await second.enqueue([new_job("a"), new_job("b")], now=T0)
            owner = first if round_ % 2 else second
            leases = await owner.claim(["a", "b"], limit=2, lease_for=LEASE, worker_id="w",
                                       now=T0)
            await (second if owner is first else first).finish(
                [Finish(lease, Outcome.COMPLETED) for lease in leases], now=T0)
        assert kept(db_path) == counted(db_path)
        assert sum(s.counts[JobState.COMPLETED] for s in await second.stats()) == 40
    finally:
        await first.aclose()
        await second.aclose()


def _drop_version_7_columns(conn: sqlite3.Connection) -> None:
    """What versions 7 to 9 added (the jobs' trace context and progress, the audit log, the
    partial indexes): an older file lacks it."""
    undo_version_9(conn)
    conn.execute("DROP TABLE audit")
    for column in ("trace_context", "progress", "progress_message", "stack_requested", "stack",
                   "stack_at"):
        conn.execute(f"ALTER TABLE jobs DROP COLUMN {column}")


async def test_a_version_4_file_gains_counts_made_from_its_jobs(db_path: Path) -> None:
    backend = SqliteBackend(f"sqlite:///{db_path}")
    await backend.connect()
    try:
        await backend.enqueue([new_job("a"), new_job("a"), new_job("b")], now=T0)
        await backend.claim(["a"], limit=1, lease_for=LEASE, worker_id="w", now=T0)
    finally:
        await backend.aclose()
    with sqlite3.connect(db_path) as conn:  # make it a version 4 file: no job_counts
        _drop_version_7_columns(conn)
        conn.execute("DROP TABLE job_counts")
        conn.execute("PRAGMA user_version = 4")
    backend = SqliteBackend(f"sqlite:///{db_path}")
    await backend.connect()
    try:
        assert kept(db_path) == counted(db_path) == {
            ("a", "queued"): 1, ("a", "running"): 1, ("b", "queued"): 1}
        await backend.enqueue([new_job("b")], now=T0)
        assert {s.queue: s.counts[JobState.QUEUED] for s in await backend.stats()} == {
            "a": 1, "b": 2}
    finally:
        await backend.aclose()


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
        conn.execute("DROP TABLE job_counts")
        _drop_version_7_columns(conn)
        conn.execute("PRAGMA user_version = 3")
    backend = SqliteBackend(f"sqlite:///{db_path}")
    await backend.connect()
    try:
        with sqlite3.connect(db_path) as conn:
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            columns = {r[1] for r in conn.execute("PRAGMA table_info(workers)")}
        assert "jobs_queue_state_id" in names and "processed" in columns
        page = await backend.list_jobs(JobQuery(queue="a", states=[JobState.QUEUED]))
        assert len(page.jobs) == 1
        assert {s.queue: s.counts[JobState.QUEUED] for s in await backend.stats()} == {
            "a": 1, "b": 1}
    finally:
        await backend.aclose()


@pytest.mark.parametrize(
    ("queue", "states", "ranges"),
    [
        ("q", None, 2),  # the states that hold jobs (job_counts says which)
        (None, ["dead"], 2),
        (None, ["completed", "dead", "queued"], 4),
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
    query = sqlite_backend_module._ListPlan(
        queue=queue, states=states, handler=None, schedule_id=None, error_type=None,
        after_ms=None, before_ms=None, cursor="zzz", limit=50,
    )
    statements: list[str] = []
    with sqlite3.connect(db_path) as conn:
        conn.set_trace_callback(statements.append)
        jobs, _ = query.page(conn)
        conn.set_trace_callback(None)
        expected = sorted(
            (j.id for j in [*q_jobs, *r_jobs]
             if (queue is None or j.queue == queue)
             and (states is None or j.state.value in states)),
            reverse=True,
        )
        assert [j.id for j in jobs] == expected
        plans = [" | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
                 for sql in statements if sql.startswith("SELECT") and "FROM jobs " in sql]
    assert len(plans) == ranges
    for plan in plans:
        assert plan.startswith("SEARCH jobs USING INDEX jobs_queue_state_id (queue=? AND state=?"), (
            plan)
        assert "TEMP B-TREE" not in plan, plan


async def test_a_schedules_runs_by_state_are_a_bounded_walk_of_its_runs(
    backend: SqliteBackend, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """"The last failed run" walks the schedule's runs newest first, at most ``_LIST_BUDGET``
    of them a page, through the schedule's own index; paging on finds each match once."""
    runs = [NewJob(id=new_id(), queue="cron", handler="echo", payload_json=b"1",
                   schedule_id="hourly") for _ in range(10)]
    await backend.enqueue(runs, now=T0)
    await backend.enqueue([new_job("cron") for _ in range(5)], now=T0)  # not runs
    leases = await backend.claim(["cron"], limit=15, lease_for=LEASE, worker_id="w", now=T0)
    await backend.finish(
        [Finish(lease, Outcome.DEAD, error=ErrorInfo("Boom", "x"))
         if lease.job_id in (runs[1].id, runs[6].id) else Finish(lease, Outcome.COMPLETED)
         for lease in leases],
        now=T0,
    )
    monkeypatch.setattr(sqlite_backend_module, "_LIST_BUDGET", 4)
    seen, sizes = await page_through(backend, schedule_id="hourly", states={JobState.DEAD})
    assert seen == [runs[6].id, runs[1].id]
    assert sizes == [1, 0, 1]  # runs 9..6, 5..2, then 1..0
    [page] = [await backend.list_jobs(JobQuery(schedule_id="hourly", limit=100))]
    assert [job.id for job in page.jobs] == [job.id for job in reversed(runs)]

    statements: list[str] = []
    query = sqlite_backend_module._ListPlan(
        queue=None, states=["dead"], handler=None, schedule_id="hourly", error_type=None,
        after_ms=None, before_ms=None, cursor=None, limit=1,
    )
    with sqlite3.connect(db_path) as conn:
        conn.set_trace_callback(statements.append)
        query.page(conn)
        conn.set_trace_callback(None)
        plans = [" | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
                 for sql in statements if sql.startswith("SELECT")]
    assert plans and all("USING INDEX jobs_schedule" in plan
                         or "USING COVERING INDEX jobs_schedule" in plan for plan in plans), plans
