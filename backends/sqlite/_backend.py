"""The SQLite backend: one file, many processes on one host, group-committed writes."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import unquote

import anyio
import attrs
import msgspec

from monoq.backends.sqlite._conn import (
    Effects,
    GroupWriter,
    ReaderPool,
    SqliteThread,
    translate,
)
from monoq.backends.sqlite._fs import create_private_file, refuse_network_fs
from monoq.backends.sqlite._rows import (
    _JOB_COLUMNS,
    _SCHEDULE_COLUMNS,
    _STATES,
    _TOKEN,
    _dt,
    _job,
    _ms,
    _odt,
    _schedule,
    _schedule_row,
    _us,
)
from monoq.backends.sqlite._schema import migrate
from monoq.core.audit import AuditEntry, AuditFilter, AuditPage, scan_page
from monoq.core.backend import Capabilities
from monoq.core.counters import (
    BEAT_HORIZON,
    COUNTER_RETENTION_MINUTES,
    MINUTE_MS,
    WAITS_KEPT,
    Counts,
    bucket_plan,
    finish_counts,
    first_wait_ms,
    fold_minutes,
)
from monoq.core.models import (
    EPOCH,
    ONE_MS,
    OUTCOME_TO_ATTEMPT,
    TERMINAL_STATES,
    Attempt,
    AttemptOutcome,
    DepthLimits,
    Enqueued,
    Finish,
    Job,
    JobQuery,
    JobState,
    Lease,
    LeaseStatus,
    NewJob,
    Outcome,
    Page,
    Progress,
    QueueStats,
    Schedule,
    ThroughputBucket,
    WorkerInfo,
    to_ms_ceil,
    utcnow,
)
from monoq.core.options import bool_option, choice_option, int_option, known_options
from monoq.core.rules import admitted, finish_outcome
from monoq.errors import BackendError, BackendUnavailable, ConfigError, QueueFull

logger = logging.getLogger(__name__)

T = TypeVar("T")

_ONE_MS: Final = ONE_MS
_json = msgspec.json.Encoder()

_INSERT_JOB: Final = (
    "INSERT INTO jobs (id, queue, handler, payload, priority, state, max_retries, timeout, "
    "run_at, created_at, idempotency_key, schedule_id, trace_context) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# One statement claims the whole batch of a queue. randomblob() is evaluated per row, so every
# lease gets its own unguessable token. RETURNING does not keep the subquery's order.
_CLAIM: Final = (
    "UPDATE jobs SET state = 'running', attempt = attempt + 1, started_at = ?, worker_id = ?, "  # noqa: S608
    "lease_token = lower(hex(randomblob(12))), lease_expires_at = ? "
    "WHERE id IN (SELECT id FROM jobs INDEXED BY jobs_claim WHERE queue = ? "
    "AND state = 'queued' ORDER BY priority, run_at, id LIMIT ?) "
    f"RETURNING {_JOB_COLUMNS}"
)
_IDS_PARAM: Final = "(SELECT value FROM json_each(?))"
# Due jobs of one waiting state back to the queue. The state is written in the statement, not
# bound, so that the planner may use that state's partial index (jobs_scheduled, jobs_retrying).
_PROMOTE: Final = tuple(
    (state, ("UPDATE jobs SET state = 'queued' WHERE id IN (SELECT id FROM jobs "  # noqa: S608
             f"WHERE state = '{state}' AND run_at <= ? LIMIT ?) RETURNING queue"))
    for state in ("scheduled", "retrying")
)

_TERMINAL: Final = tuple(sorted(s.value for s in TERMINAL_STATES))
# Plain completions of several runs in two statements (a worker's ack batch, the common case):
# the jobs, then the attempts of the runs that applied. The argument is a JSON array of
# [id, token, result] with the result's JSON text as a string, stored back as the same bytes.
_COMPLETE_MANY: Final = (
    "UPDATE jobs SET state = 'completed', result = CAST(f.res AS BLOB), finished_at = ?, "
    "lease_token = NULL, lease_expires_at = NULL, worker_id = NULL, stack_requested = 0 "
    "FROM (SELECT value ->> 0 AS jid, value ->> 1 AS tok, value ->> 2 AS res "
    "FROM json_each(?)) AS f "
    "WHERE jobs.id = f.jid AND jobs.lease_token = f.tok AND jobs.state = 'running' "
    "RETURNING jobs.id, jobs.queue"
)
_COMPLETE_ATTEMPTS: Final = (
    "UPDATE attempts SET finished_at = ?, outcome = 'completed', error_type = NULL, "
    "error_message = NULL, traceback = NULL "
    "FROM (SELECT value ->> 0 AS jid, value ->> 1 AS tok FROM json_each(?)) AS f "
    "WHERE attempts.job_id = f.jid AND attempts.token = f.tok"
)
_COMPLETED_COUNTS: Final = finish_counts(Outcome.COMPLETED, Outcome.COMPLETED)

# The state a finished run leaves its job in, by the outcome finish applies.
_FINISH_STATE: Final = {
    Outcome.COMPLETED: "completed",
    Outcome.RETRY: "retrying",
    Outcome.DEAD: "dead",
    Outcome.CANCELLED: "cancelled",
    Outcome.RELEASED: "queued",
}


def count_finished_sql(*, by_queue: bool) -> str:
    """count_finished's query; parameters: the terminal states (``_TERMINAL``), the since ms,
    then the queue when ``by_queue``. ``+queue`` is explained in ``count_finished``."""
    marks = ", ".join("?" for _ in _TERMINAL)
    queue = " AND +queue = ?" if by_queue else ""
    return (
        f"SELECT state, count(*) FROM jobs WHERE state IN ({marks}) "  # noqa: S608
        f"AND finished_at >= ?{queue} GROUP BY state"
    )


# list_jobs with filters no index range serves (handler, error type, finish window): how many
# jobs of the states asked for may be read through their state index at most, how many
# entries one page walks at most otherwise (shared by its (queue, state) ranges), and the
# least a range walks however many ranges share the budget.
_LIST_CANDIDATES: Final = 2000
_LIST_BUDGET: Final = 8000
_LIST_MIN_RANGE: Final = 256
# The type of a stored error ("Type: message" or "Type"): the text before the first ": ", as
# core.models.error_type_of has it.
_ERROR_TYPE_SQL: Final = (
    "(CASE WHEN instr(error, ': ') > 0 THEN substr(error, 1, instr(error, ': ') - 1) "
    "ELSE error END)"
)


@attrs.frozen
class _ListPlan:
    """One list_jobs call's ``JobQuery`` as SQL, and the reads that answer it (run on a
    reader thread).

    ``states`` are state values (already narrowed to the terminal ones when a finish window
    is given); the window bounds are whole milliseconds, ``after_ms`` inclusive and
    ``before_ms`` exclusive.
    """

    queue: str | None
    states: list[str] | None
    handler: str | None
    schedule_id: str | None
    error_type: str | None
    after_ms: int | None
    before_ms: int | None
    cursor: str | None
    limit: int
    floor: str | None = None  # the lowest id a walk may reach (inclusive)

    def _where(self, *, indexed: bool, residual: bool = True) -> tuple[list[str], list[Any]]:
        """The filters as SQL terms and their parameters. ``indexed=False`` writes ``+col``,
        which keeps the planner off the indexes of those columns (it walks the id index
        instead); ``residual=False`` leaves out the filters no index serves."""
        plus = "" if indexed else "+"
        clauses: list[str] = []
        params: list[Any] = []
        if self.queue is not None:
            clauses.append(f"{plus}queue = ?")
            params.append(self.queue)
        if self.states is not None:
            clauses.append(f"{plus}state IN ({', '.join('?' for _ in self.states)})")
            params.extend(self.states)
        if self.after_ms is not None:
            clauses.append(f"{plus}finished_at >= ?")
            params.append(self.after_ms)
        if self.before_ms is not None:
            clauses.append(f"{plus}finished_at < ?")
            params.append(self.before_ms)
        if residual:
            if self.handler is not None:
                clauses.append("handler = ?")
                params.append(self.handler)
            if self.schedule_id is not None:
                # served by jobs_schedule, already in id order
                clauses.append(f"{plus}schedule_id = ?")
                params.append(self.schedule_id)
            if self.error_type is not None:
                clauses.append(f"{_ERROR_TYPE_SQL} = ?")
                params.append(self.error_type)
        return clauses, params

    def _page(self, jobs: list[Job], short_at: str | None) -> tuple[list[Job], str | None]:
        """At most ``limit`` of ``jobs`` (newest first, ``limit + 1`` asked for) and the
        cursor: the last job's id when there are more, else ``short_at``."""
        if len(jobs) > self.limit:
            jobs = jobs[: self.limit]
            return jobs, jobs[-1].id
        return jobs, short_at

    @property
    def residual(self) -> bool:
        """Whether a filter no (queue, state, id) range serves is given."""
        return (self.handler is not None or self.error_type is not None
                or self.after_ms is not None or self.before_ms is not None)

    def page(self, conn: sqlite3.Connection) -> tuple[list[Job], str | None]:
        """The page, by the cheapest read that answers it (see ``SqliteBackend.list_jobs``)."""
        if self.schedule_id is not None:
            return self.runs_page(conn)
        if self.queue is None and self.states is None:
            if not self.residual:
                return self._page(self.whole_page_rows(conn), None)
            return self.walked_page(conn)
        if self.states is not None and (self.error_type is not None
                                        or self.after_ms is not None
                                        or self.before_ms is not None):
            few = self.few_candidates(conn)
            if few is not None:
                return few
        return self.pairs_page(conn)

    def runs_page(self, conn: sqlite3.Connection) -> tuple[list[Job], str | None]:
        """One schedule's runs: jobs_schedule in id order. Filtered (by state, say the last
        failed run), the walk stops after ``_LIST_BUDGET`` runs, and the page may end early
        with the last run walked as the cursor."""
        if self.queue is None and self.states is None and not self.residual:
            return self._page(self.whole_page_rows(conn), None)
        bound = "" if self.cursor is None else " AND id < ?"
        start = [] if self.cursor is None else [self.cursor]
        row = conn.execute(
            f"SELECT id FROM jobs WHERE schedule_id = ?{bound} "  # noqa: S608
            "ORDER BY id DESC LIMIT 1 OFFSET ?",
            [self.schedule_id, *start, _LIST_BUDGET - 1],
        ).fetchone()
        if row is None:
            return self._page(self.whole_page_rows(conn), None)
        floor: str = row[0]
        jobs = attrs.evolve(self, floor=floor).whole_page_rows(conn)
        return self._page(jobs, floor)

    def pairs_page(self, conn: sqlite3.Connection) -> tuple[list[Job], str | None]:
        """A page by queue, by state or by both: one range of jobs_queue_state_id per
        (queue, state) pair that holds jobs (job_counts says which), each already in id
        order, merged here. Without residual filters each range reads ``limit + 1`` entries,
        so the page is whole. With them, each range walks at most its share of
        ``_LIST_BUDGET`` entries; a range that ran out stops the page at the point where it
        stopped (the matches below it are not all known yet), which is then the cursor.
        """
        marks = "" if self.queue is None else " AND queue = ?"
        params: list[Any] = [] if self.queue is None else [self.queue]
        if self.states is not None:
            marks += f" AND state IN ({', '.join('?' for _ in self.states)})"
            params += self.states
        pairs = [(q, st) for q, st in conn.execute(
            f"SELECT queue, state FROM job_counts WHERE n > 0{marks}", params)]  # noqa: S608
        budget = max(_LIST_MIN_RANGE, _LIST_BUDGET // max(1, len(pairs)))
        merged: list[Job] = []
        short_at: str | None = None
        for q, st in pairs:
            jobs, stopped = self._range(conn, q, st, budget)
            merged += jobs
            if stopped is not None and (short_at is None or stopped > short_at):
                short_at = stopped
        if short_at is not None:
            merged = [job for job in merged if job.id >= short_at]
        merged.sort(key=lambda j: j.id, reverse=True)
        return self._page(merged[: self.limit + 1], short_at)

    def _range(self, conn: sqlite3.Connection, queue: str, state: str, budget: int
               ) -> tuple[list[Job], str | None]:
        """Up to ``limit + 1`` matches of one (queue, state) range below the cursor, newest
        first, and the lowest id walked when the walk stopped at ``budget`` entries with
        fewer matches (else None)."""
        terms = ["queue = ?", "state = ?"]
        params: list[Any] = [queue, state]
        if self.cursor is not None:
            terms.append("id < ?")
            params.append(self.cursor)
        floor: str | None = None
        if self.residual:
            # An index-only walk finds where ``budget`` entries end.
            row = conn.execute(
                f"SELECT id FROM jobs WHERE {' AND '.join(terms)} "  # noqa: S608
                "ORDER BY id DESC LIMIT 1 OFFSET ?",
                [*params, budget - 1],
            ).fetchone()
            if row is not None:
                floor = row[0]
                terms.append("id >= ?")
                params.append(floor)
            # ``+``: finished_at bounds are checked on the rows, never an index to walk.
            if self.after_ms is not None:
                terms.append("+finished_at >= ?")
                params.append(self.after_ms)
            if self.before_ms is not None:
                terms.append("+finished_at < ?")
                params.append(self.before_ms)
            if self.handler is not None:
                terms.append("handler = ?")
                params.append(self.handler)
            if self.error_type is not None:
                terms.append(f"{_ERROR_TYPE_SQL} = ?")
                params.append(self.error_type)
        rows = conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs INDEXED BY jobs_queue_state_id "  # noqa: S608
            f"WHERE {' AND '.join(terms)} ORDER BY id DESC LIMIT ?",
            [*params, self.limit + 1],
        ).fetchall()
        jobs = [_job(r) for r in rows]
        if floor is not None and len(jobs) <= self.limit:
            return jobs, floor
        return jobs, None

    def whole_page_rows(self, conn: sqlite3.Connection) -> list[Job]:
        """The first ``limit + 1`` matching jobs, newest first, in one query."""
        clauses, params = self._where(indexed=True)
        if self.cursor is not None:
            clauses.append("id < ?")
            params.append(self.cursor)
        if self.floor is not None:
            clauses.append("id >= ?")
            params.append(self.floor)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        # A schedule's runs are few beside the other jobs: walk them, whatever else is asked.
        table = "jobs" if self.schedule_id is None else "jobs INDEXED BY jobs_schedule"
        sql = f"SELECT {_JOB_COLUMNS} FROM {table} {where} ORDER BY id DESC LIMIT ?"  # noqa: S608
        rows = conn.execute(sql, [*params, self.limit + 1]).fetchall()
        return [_job(r) for r in rows]

    def few_candidates(self, conn: sqlite3.Connection) -> tuple[list[Job], str | None] | None:
        """With error type or finish window filters: when at most ``_LIST_CANDIDATES`` jobs
        are in the states asked for (those finished in the window, when one is given), read
        them all through a state index and filter them: a whole page. None when there are
        more."""
        assert self.states is not None  # noqa: S101 - the caller checks
        terms, params = self._where(indexed=True, residual=False)
        (found,) = conn.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM jobs WHERE {' AND '.join(terms)} "  # noqa: S608
            "LIMIT ?)",
            [*params, _LIST_CANDIDATES + 1],
        ).fetchone()
        if found > _LIST_CANDIDATES:
            return None
        terms, params = self._where(indexed=True)
        if self.cursor is not None:
            terms.append("+id < ?")  # ``+``: the state index, not the id index
            params.append(self.cursor)
        ids = sorted(
            (r[0] for r in conn.execute(
                f"SELECT id FROM jobs WHERE {' AND '.join(terms)}", params  # noqa: S608
            )),
            reverse=True,
        )[: self.limit + 1]
        rows = conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id IN {_IDS_PARAM}",  # noqa: S608
            (_json.encode(ids),),
        ).fetchall()
        jobs = sorted((_job(r) for r in rows), key=lambda j: j.id, reverse=True)
        return self._page(jobs, None)

    def walked_page(self, conn: sqlite3.Connection) -> tuple[list[Job], str | None]:
        """No queue or state filter, but a residual one: the id index walked newest first,
        at most ``_LIST_BUDGET`` ids; the cursor is the last id walked when more remain."""
        # Too many (or no state filter): walk the id index newest first, at most the budget.
        bound = "" if self.cursor is None else "WHERE id < ?"
        start = [] if self.cursor is None else [self.cursor]
        floor_row = conn.execute(
            f"SELECT id FROM jobs {bound} ORDER BY id DESC LIMIT 1 OFFSET ?",  # noqa: S608
            [*start, _LIST_BUDGET - 1],
        ).fetchone()
        floor: str | None = None if floor_row is None else floor_row[0]
        terms, params = self._where(indexed=False)
        if self.cursor is not None:
            terms.append("id < ?")
            params.append(self.cursor)
        if floor is not None:
            terms.append("id >= ?")
            params.append(floor)
        where = f"WHERE {' AND '.join(terms)}" if terms else ""
        rows = conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs {where} ORDER BY id DESC LIMIT ?",  # noqa: S608
            [*params, self.limit + 1],
        ).fetchall()
        # More ids below the walked range: the next page starts below the last one walked.
        return self._page([_job(r) for r in rows], floor)


# The smallest run_at of a queue's QUEUED jobs: per priority band, the first jobs_claim entry
# of (queue, 'queued', priority) is its smallest run_at, so ten seeks answer it.
_OLDEST_QUEUED: Final = (
    "SELECT min((SELECT run_at FROM jobs WHERE queue = ?1 AND state = 'queued' "
    "AND priority = p.value ORDER BY run_at LIMIT 1)) FROM json_each('[0,1,2,3,4,5,6,7,8,9]') p"
)


# throughput: the minute rows of a range (a primary-key range), summed over the queues.
_THROUGHPUT_ALL: Final = (
    "SELECT minute, sum(completed), sum(failed), sum(dead) FROM throughput "
    "WHERE minute >= ? AND minute < ? GROUP BY minute"
)
_THROUGHPUT_ONE: Final = (
    "SELECT minute, completed, failed, dead FROM throughput "
    "WHERE minute >= ? AND minute < ? AND queue = ?"
)


def count_jobs_sql(
    *, states: Sequence[str], queue: str | None, before_ms: int
) -> tuple[str | None, list[Any]]:
    """count_jobs' query and parameters for jobs finished before ``before_ms`` (None when
    ``states`` is empty); without that bound count_jobs sums job_counts rows instead."""
    if not states:
        return None, []
    clauses = [f"state IN ({', '.join('?' for _ in states)})"]
    params: list[Any] = list(states)
    if queue is not None:
        clauses.append("queue = ?")
        params.append(queue)
    clauses.append("finished_at < ?")
    params.append(before_ms)
    return f"SELECT count(*) FROM jobs WHERE {' AND '.join(clauses)}", params  # noqa: S608


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _get_job(conn: sqlite3.Connection, job_id: str) -> Job | None:
    row = conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()  # noqa: S608
    return None if row is None else _job(row)


def _schedules_stamp(conn: sqlite3.Connection) -> tuple[int, int | None]:
    """How many schedules there are and their latest ``updated_at``: it changes whenever a
    schedule is added, edited, enabled, disabled or deleted (the table is small)."""
    count, latest = conn.execute("SELECT count(*), max(updated_at) FROM schedules").fetchone()
    return int(count), latest


def _due_and_schedules(conn: sqlite3.Connection) -> tuple[int | None, tuple[int, int | None]]:
    return _earliest_due(conn), _schedules_stamp(conn)


def _earliest_due(conn: sqlite3.Connection) -> int | None:
    """The earliest run_at of a waiting job or lease expiry of a running one (index seeks)."""
    found = [
        conn.execute(sql).fetchone()[0]
        for sql in (
            "SELECT min(run_at) FROM jobs WHERE state = 'scheduled'",
            "SELECT min(run_at) FROM jobs WHERE state = 'retrying'",
            (
                "SELECT min(lease_expires_at) FROM jobs WHERE state = 'running' "
                "AND lease_expires_at IS NOT NULL"
            ),
        )
    ]
    present = [ms for ms in found if ms is not None]
    return min(present) if present else None


def _record_waits(conn: sqlite3.Connection, queue: str, waits: list[int]) -> None:
    """Append first-attempt waits to the queue's ring (oldest of them first) and drop what
    falls 1000 or more behind the newest: one index seek, the inserts, one range delete."""
    if not waits:
        return
    (top,) = conn.execute(
        "SELECT coalesce(max(seq), 0) FROM waits WHERE queue = ?", (queue,)
    ).fetchone()
    conn.executemany(
        "INSERT INTO waits (queue, seq, wait_ms) VALUES (?, ?, ?)",
        [(queue, top + i, wait) for i, wait in enumerate(waits, start=1)],
    )
    conn.execute(
        "DELETE FROM waits WHERE queue = ? AND seq <= ?", (queue, top + len(waits) - WAITS_KEPT)
    )


def _write_ended(conn: sqlite3.Connection, done: Effects) -> None:
    """Add a transaction's ended runs to their minutes' throughput rows, one upsert per
    (minute, queue). A row that this makes new also deletes every row past retention (a range
    delete on the primary key), so the table stays bounded without a separate sweep."""
    oldest_new: int | None = None
    for (queue, minute), (completed, failed, dead) in done.ended.items():
        (total,) = conn.execute(
            "INSERT INTO throughput (minute, queue, completed, failed, dead) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (minute, queue) DO UPDATE SET "
            "completed = completed + excluded.completed, failed = failed + excluded.failed, "
            "dead = dead + excluded.dead RETURNING completed + failed + dead",
            (minute, queue, completed, failed, dead),
        ).fetchone()
        if total == completed + failed + dead:  # the row is new
            oldest_new = minute if oldest_new is None else min(oldest_new, minute)
    if oldest_new is not None:
        conn.execute(
            "DELETE FROM throughput WHERE minute < ?", (oldest_new - COUNTER_RETENTION_MINUTES,)
        )


@attrs.frozen
class _Claim:
    """One claim's arguments, and the statements that apply it (on the writer thread)."""

    names: list[str]
    limit: int
    worker_id: str
    now_ms: int
    expires_ms: int

    def run(self, conn: sqlite3.Connection, fx: Effects) -> list[Lease]:
        """Lease up to ``limit`` QUEUED jobs of the queues, in order, skipping paused ones."""
        now_ms, expires_ms, worker_id = self.now_ms, self.expires_ms, self.worker_id
        paused = {
            name
            for (name,) in conn.execute(
                f"SELECT name FROM queues WHERE paused AND name IN {_IDS_PARAM}",  # noqa: S608
                (_json.encode(self.names),),
            )
        }
        leases: list[Lease] = []
        for name in self.names:
            remaining = self.limit - len(leases)
            if remaining <= 0:
                break
            if name in paused:
                continue
            claimed = conn.execute(
                _CLAIM, (now_ms, worker_id, expires_ms, name, remaining)
            ).fetchall()
            claimed.sort(key=lambda r: (r[4], r[9], r[0]))
            fx.move(name, "queued", "running", len(claimed))
            leases.extend(Lease(_job(r), r[_TOKEN], _dt(expires_ms)) for r in claimed)
            _record_waits(conn, name, [first_wait_ms(r[9], now_ms)
                                       for r in claimed if r[6] == 1])
        if leases:
            conn.executemany(
                "INSERT INTO attempts (job_id, attempt, worker_id, token, started_at, "
                "outcome) VALUES (?, ?, ?, ?, ?, 'running')",
                [(ls.job.id, ls.job.attempt, worker_id, ls.token, now_ms) for ls in leases],
            )
            fx.changes = True  # a new lease expiry may be the next scheduler wake-up
        return leases


def _job_row(nj: NewJob, job: Job, now_ms: int) -> tuple[Any, ...]:
    """The ``_INSERT_JOB`` parameters of ``nj``, stored as ``job`` (``admitted``) at ``now_ms``."""
    return (nj.id, nj.queue, nj.handler, nj.payload_json, nj.priority, job.state.value,
            nj.max_retries, nj.timeout, _ms(job.run_at), now_ms, nj.idempotency_key,
            nj.schedule_id, nj.trace_context)


def _know_queues(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Record the queues of stored job ``rows``: a queue is known once a job is stored in it
    (not when a job named it but an already stored one was answered)."""
    conn.executemany("INSERT OR IGNORE INTO queues (name) VALUES (?)",
                     [(queue,) for queue in dict.fromkeys(r[1] for r in rows)])


def _deleted(conn: sqlite3.Connection, fx: Effects, rows: list[tuple[str, str, str]]) -> int:
    """After a DELETE of jobs ``RETURNING id, queue, state``: delete their attempts and count
    them out of their states; answers how many were deleted."""
    conn.executemany("DELETE FROM attempts WHERE job_id = ?", [(r[0],) for r in rows])
    for (queue, state), n in collections.Counter((r[1], r[2]) for r in rows).items():
        fx.move(queue, state, None, n)
    return len(rows)


# All waiting jobs, up to ?1 of each state: one bounded walk of each state's partial index.
_WAITING_TOTAL: Final = " + ".join(
    f"(SELECT count(*) FROM (SELECT 1 FROM jobs INDEXED BY {index} "  # noqa: S608
    f"WHERE state = '{state}' LIMIT ?1))"
    for state, index in (("queued", "jobs_claim"), ("scheduled", "jobs_scheduled"),
                         ("retrying", "jobs_retrying"))
).join(("SELECT ", ""))


def _check_depth(conn: sqlite3.Connection, batch: Sequence[NewJob], limits: DepthLimits) -> None:
    """Backpressure (see Backend.enqueue): count the waiting jobs of each limited queue, up to
    its limit (a bounded range count on jobs_queue_state_id, which sees the rows this
    transaction already wrote), and of all queues (the counts table plus this transaction's
    rows are not both visible here, so the total is counted on the jobs themselves, on the
    waiting states' partial indexes, bounded the same way)."""
    waiting_sql = (
        "SELECT count(*) FROM (SELECT 1 FROM jobs WHERE queue = ? AND state IN "
        "('queued', 'scheduled', 'retrying') LIMIT ?)")
    for queue, (limit, n) in limits.per_queue(batch).items():
        [depth] = conn.execute(waiting_sql, (queue, limit + 1)).fetchone()
        if depth + n > limit:
            raise QueueFull(queue, depth, limit)
    if limits.total:
        [total] = conn.execute(_WAITING_TOTAL, (limits.total + 1,)).fetchone()
        if total + len(batch) > limits.total:
            raise QueueFull(None, total, limits.total)


def _write_tallies(conn: sqlite3.Connection, done: Effects) -> None:
    """Before a write transaction commits: add its net (queue, state) changes to job_counts
    (one upsert per pair that changed, however many jobs its requests wrote) and its ended
    runs to the throughput rows."""
    rows = [(queue, state, n) for (queue, state), n in done.moved.items() if n]
    if rows:
        conn.executemany(
            "INSERT INTO job_counts (queue, state, n) VALUES (?, ?, ?) "
            "ON CONFLICT (queue, state) DO UPDATE SET n = n + excluded.n",
            rows,
        )
    if done.ended:
        _write_ended(conn, done)


@attrs.frozen
class SqliteOptions:
    """The ``[backend.options]`` of a sqlite backend, validated.

    ``synchronous``: ``FULL`` (default) fsyncs the WAL at every commit, so an acknowledged
    enqueue survives a power loss. ``NORMAL`` fsyncs only at checkpoints: in WAL mode the
    database can still never be corrupted, but a power loss (not a process crash) may lose the
    last transactions committed before it, i.e. acknowledged jobs. It is faster for bulk work.
    ``sync_runs``: with ``FULL``, whether a commit that only records runs (claims, outcomes,
    heartbeats, progress, promotions) is fsynced too. Off (the default), such a commit reaches
    the disk with the next fsynced one or the next checkpoint: a process crash loses nothing,
    and a power loss may forget the last outcomes, whose jobs then run again (delivery is at
    least once) while every acknowledged enqueue and operator action is kept.
    ``busy_timeout_ms``: how long a write waits for another process's write lock before the
    call fails with ``BackendUnavailable``.
    ``poll_interval_ms``: how often an idle ``wait_for_jobs`` / ``wait_for_changes`` checks for
    changes made by *other processes* (same-process changes wake at once, without polling).
    ``poll_max_ms``: the ceiling of that poll once the backend has been idle for a while; the
    poll interval is a tenth of the idle time, never below ``poll_interval_ms`` (so polling is
    fast right after activity) and never above ``poll_max_ms``.
    ``readers``: reader connections (reads run beside the single writer).
    """

    synchronous: str = "FULL"
    sync_runs: bool = False
    busy_timeout_ms: int = 5000
    poll_interval_ms: int = 5
    poll_max_ms: int = 250
    readers: int = 2

    @classmethod
    def parse(cls, options: Mapping[str, Any] | None) -> SqliteOptions:
        """Validate ``options``; a bad or unknown key is a ``ConfigError`` naming it."""
        options = known_options("sqlite", options, sorted(f.name for f in attrs.fields(cls)))
        values: dict[str, Any] = {}
        if "synchronous" in options:
            values["synchronous"] = choice_option("synchronous", options["synchronous"],
                                                  ("FULL", "NORMAL"), any_case=True)
        if "sync_runs" in options:
            values["sync_runs"] = bool_option("sync_runs", options["sync_runs"])
        minimums = {"busy_timeout_ms": 0, "poll_interval_ms": 1, "poll_max_ms": 1, "readers": 1}
        for key, minimum in minimums.items():
            if key in options:
                values[key] = int_option(key, options[key], minimum)
        parsed = cls(**values)
        if parsed.poll_max_ms < parsed.poll_interval_ms:
            raise ConfigError(
                f"backend.options.poll_max_ms: {parsed.poll_max_ms} is below "
                f"poll_interval_ms ({parsed.poll_interval_ms})"
            )
        return parsed


def parse_url(url: str) -> Path:
    """The absolute database path of ``sqlite:///relative.db`` or ``sqlite:////abs/path.db``."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ConfigError(
            f"backend.url: {url!r} is not sqlite:///relative/path.db or sqlite:////abs/path.db"
        )
    rest = url[len(prefix) :]
    if "?" in rest or "#" in rest:
        raise ConfigError(f"backend.url: {url!r}: put settings in [backend.options], not the URL")
    rest = unquote(rest)
    if not rest or rest.endswith("/") or rest == ":memory:":
        raise ConfigError(f"backend.url: {url!r} does not name a database file (use memory://)")
    # absolute() without resolve(): keep symlinks as the user wrote them.
    return Path.cwd() / rest if not rest.startswith("/") else Path(rest)


class SqliteBackend:
    """Jobs in one SQLite file in WAL mode, shared by every process on the host.

    One writer connection per instance feeds every write through a queue and commits all the
    writes waiting at that moment in one ``BEGIN IMMEDIATE`` transaction (group commit), each
    in its own SAVEPOINT so one failing request fails alone. Reads run on separate reader
    connections. Same-process enqueues wake ``wait_for_jobs`` at once; changes made by other
    processes are seen by polling a counter row (see ``SqliteOptions`` for the intervals).

    A locked database (another process holding the write lock past ``busy_timeout_ms``) or a
    full disk makes the call raise ``BackendUnavailable`` with nothing written; the backend
    keeps working once the lock or space returns. Network filesystems are refused: WAL needs
    shared memory that they cannot provide. New files are created with mode 0600.
    """

    capabilities = Capabilities(shared_across_processes=True, cross_process_wakeup=False)

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        self.url = url
        self.path = parse_url(url)
        self.options = SqliteOptions.parse(options)
        self._writer_thread: SqliteThread | None = None
        self._writer: GroupWriter | None = None
        self._readers = ReaderPool([], busy_timeout_ms=self.options.busy_timeout_ms)
        self._connected = False
        self._connect_lock = asyncio.Lock()
        self._ready_waiters: dict[str, set[asyncio.Event]] = {}
        self._change_waiters: set[asyncio.Event] = set()
        # The earliest due time (epoch ms) as the last next_wakeup or poll saw it; None before.
        self._seen_wakeup: tuple[int | None] | None = None
        self._seen_schedules: tuple[int, int | None] | None = None
        self._last_activity = time.monotonic()

    def __repr__(self) -> str:
        return f"SqliteBackend({self.url!r})"

    # -- lifecycle ------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the file (creating it 0600), set WAL and pragmas, create or migrate the schema.

        Raises ``BackendError`` for a network filesystem, a file of a newer schema version, or
        a file that is not a monoq database. Idempotent.
        """
        async with self._connect_lock:
            if not self._connected:
                await self._open()

    async def _open(self) -> None:
        opts = self.options
        busy = opts.busy_timeout_ms
        writer_thread = SqliteThread("monoq-sqlite-writer")
        readers: list[SqliteThread] = []
        try:
            await writer_thread.run(self._prepare_file)
            await writer_thread.open(str(self.path), self._setup_writer)
            await writer_thread.run(self._migrate, writer_thread)
            for i in range(opts.readers):
                reader = SqliteThread(f"monoq-sqlite-reader-{i}")
                readers.append(reader)
                await reader.open(str(self.path), self._setup_reader)
        except BaseException as exc:
            for thread in [writer_thread, *readers]:
                with anyio.CancelScope(shield=True):
                    await thread.close()
            if isinstance(exc, sqlite3.Error):
                raise translate(exc, f"open {self.path}", busy) from exc
            raise
        self._writer_thread = writer_thread
        self._readers = ReaderPool(readers, busy_timeout_ms=busy)
        self._writer = GroupWriter(
            writer_thread, busy_timeout_ms=busy, on_commit=self._on_commit,
            before_commit=_write_tallies, synchronous=opts.synchronous,
            runs_synchronous=opts.synchronous if opts.sync_runs else "NORMAL")
        self._writer.start()
        self._connected = True
        logger.info(
            "sqlite backend open: %s (synchronous=%s, readers=%d)",
            self.path,
            opts.synchronous,
            opts.readers,
        )

    async def aclose(self) -> None:
        """Finish queued writes, close every connection and wake every waiter. Idempotent."""
        writer, self._writer = self._writer, None
        writer_thread, self._writer_thread = self._writer_thread, None
        readers, self._readers = self._readers, ReaderPool([], busy_timeout_ms=0)
        self._connected = False
        with anyio.CancelScope(shield=True):
            if writer is not None:
                await writer.stop()
            for thread in readers.threads:
                await thread.close()
            if writer_thread is not None:
                await writer_thread.close()
        for events in self._ready_waiters.values():
            for event in events:
                event.set()
        for event in self._change_waiters:
            event.set()

    async def ping(self) -> None:
        """Return if the file answers a query; raise ``BackendUnavailable`` otherwise."""
        await self._read(lambda conn: conn.execute("SELECT 1").fetchone(), "ping")

    # -- setup, on the writer thread -------------------------------------------------------------

    def _prepare_file(self) -> None:
        refuse_network_fs(self.path)
        create_private_file(self.path)
        mode = self.path.stat().st_mode
        if mode & 0o077:
            # SQLite gives -wal and -shm the database's permissions, so they are readable too.
            logger.warning(
                "sqlite: %s is accessible to other users (mode %o); payloads are readable",
                self.path,
                mode & 0o777,
            )

    def _setup_writer(self, conn: sqlite3.Connection) -> None:
        opts = self.options
        conn.execute(f"PRAGMA busy_timeout = {int(opts.busy_timeout_ms)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise BackendError(f"sqlite: {self.path}: could not switch to WAL (got {mode!r})")
        conn.execute(f"PRAGMA synchronous = {opts.synchronous}")
        # Only this code writes; foreign keys would cost a lookup per insert for nothing.
        conn.execute("PRAGMA foreign_keys = OFF")

    def _setup_reader(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {int(self.options.busy_timeout_ms)}")
        conn.execute("PRAGMA query_only = ON")

    def _migrate(self, thread: SqliteThread) -> None:
        migrate(thread.conn, self.path)

    # -- plumbing -------------------------------------------------------------------------------

    async def _write(
        self, fn: Callable[[sqlite3.Connection, Effects], T], what: str, weight: int = 1, *,
        durable: bool = True,
    ) -> T:
        """Run ``fn`` in the writer's next transaction. ``durable=False`` for a write that
        only records runs (see ``SqliteOptions.sync_runs``)."""
        writer = self._writer
        if writer is None:
            raise BackendUnavailable(f"sqlite: {what}: the backend is not connected")
        return await writer.submit(fn, what, weight, durable=durable)

    async def _read(self, fn: Callable[[sqlite3.Connection], T], what: str) -> T:
        return await self._readers.read(fn, what)

    def _on_commit(self, effects: Effects) -> None:
        if not effects.ready and not effects.changes:
            return
        self._last_activity = time.monotonic()
        for queue in effects.ready:
            for event in self._ready_waiters.get(queue, ()):
                event.set()
        if effects.changes:
            for event in self._change_waiters:
                event.set()

    def _poll_delay(self) -> float:
        """Seconds between polls for other processes' changes: a tenth of the idle time,
        clamped to [poll_interval_ms, poll_max_ms]."""
        idle = time.monotonic() - self._last_activity
        low = self.options.poll_interval_ms / 1000
        high = self.options.poll_max_ms / 1000
        return min(high, max(low, idle / 10))

    # -- producer -------------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob], *, now: datetime,
                      limits: DepthLimits | None = None) -> list[Enqueued]:
        """Store ``jobs`` in one transaction (all or nothing); see ``Backend.enqueue``.

        The idempotency check is the UNIQUE (queue, idempotency_key) index, so two processes
        racing with one key create one job. A job id that already exists answers the stored
        job with ``created=False`` (a client retrying the same submission).
        """
        if not jobs:
            return []
        now_ms = _ms(now)
        batch = list(jobs)

        def fn(conn: sqlite3.Connection, fx: Effects) -> list[Enqueued]:
            if limits is not None:  # in the transaction: what it counts cannot change before
                _check_depth(conn, batch, limits)
            fresh = self._insert_fresh(conn, fx, batch, now_ms)
            if fresh is not None:
                return fresh
            # The writer holds the write lock (BEGIN IMMEDIATE), so what these two reads find
            # cannot change before the insert: ids and keys already taken answer the stored
            # job, everything else goes in with one executemany.
            taken_ids = {row[0] for row in conn.execute(
                f"SELECT id FROM jobs WHERE id IN {_IDS_PARAM}",  # noqa: S608
                (json.dumps([nj.id for nj in batch]),))}
            keyed = [[nj.queue, nj.idempotency_key] for nj in batch
                     if nj.idempotency_key is not None]
            taken_keys: set[tuple[str, str]] = set()
            if keyed:
                taken_keys = {(row[0], row[1]) for row in conn.execute(
                    "SELECT queue, idempotency_key FROM jobs WHERE idempotency_key IS NOT NULL "
                    "AND (queue, idempotency_key) IN (SELECT json_extract(value, '$[0]'), "
                    "json_extract(value, '$[1]') FROM json_each(?))",
                    (json.dumps(keyed),))}
            created_at = _dt(now_ms)
            # A (NewJob, by_key) pair stands for "answer the stored job": the one with the
            # job's id, else the one holding its key. The id decides first, as in the
            # protocol: the same job again is answered as itself whatever its key.
            out: list[Enqueued | tuple[NewJob, bool]] = []
            rows: list[tuple[Any, ...]] = []
            new_ids: dict[str, Job] = {}
            new_keys: dict[tuple[str, str], Job] = {}
            for nj in batch:
                key = None if nj.idempotency_key is None else (nj.queue, nj.idempotency_key)
                if nj.id in taken_ids:
                    out.append((nj, False))
                    continue
                if nj.id in new_ids:  # the same job twice in this batch
                    out.append(Enqueued(new_ids[nj.id], created=False))
                    continue
                if key is not None and key in taken_keys:
                    out.append((nj, True))
                    continue
                if key is not None and key in new_keys:  # the same key twice in this batch
                    out.append(Enqueued(new_keys[key], created=False))
                    continue
                job = admitted(nj, created_at)
                if job.state is JobState.SCHEDULED:
                    fx.changes = True
                else:
                    fx.ready.add(nj.queue)
                fx.move(nj.queue, None, job.state.value)
                rows.append(_job_row(nj, job, now_ms))
                new_ids[nj.id] = job
                if key is not None:
                    new_keys[key] = job
                out.append(Enqueued(job, created=True))
            if rows:
                conn.executemany(_INSERT_JOB, rows)
                _know_queues(conn, rows)
            return [item if isinstance(item, Enqueued)
                    else Enqueued(self._existing(conn, *item), created=False) for item in out]

        return await self._write(fn, "enqueue", len(batch))

    @staticmethod
    def _insert_fresh(conn: sqlite3.Connection, fx: Effects, batch: list[NewJob],
                      now_ms: int) -> list[Enqueued] | None:
        """The common case, every job of the batch new: one insert, with no look first.

        None when the insert breaks a uniqueness (an id or a key stored already, or twice in
        the batch) or another constraint: nothing of it stays (a failed row undoes itself, and
        a savepoint undoes the rows before it), and the caller looks first.
        """
        created_at = _dt(now_ms)
        jobs = [admitted(nj, created_at) for nj in batch]
        rows = [_job_row(nj, job, now_ms) for nj, job in zip(batch, jobs, strict=True)]
        several = len(rows) > 1
        if several:
            conn.execute("SAVEPOINT fresh")
        try:
            conn.executemany(_INSERT_JOB, rows)
        except sqlite3.IntegrityError:
            if several:
                conn.execute("ROLLBACK TO fresh")
                conn.execute("RELEASE fresh")
            return None
        if several:
            conn.execute("RELEASE fresh")
        _know_queues(conn, rows)
        for job in jobs:
            if job.state is JobState.SCHEDULED:
                fx.changes = True
            else:
                fx.ready.add(job.queue)
            fx.move(job.queue, None, job.state.value)
        return [Enqueued(job, created=True) for job in jobs]

    @staticmethod
    def _existing(conn: sqlite3.Connection, nj: NewJob, by_key: bool) -> Job:
        """The stored job that ``nj`` is answered with: the job with its id, or (``by_key``)
        the job holding its idempotency key in its queue."""
        if by_key:
            row = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE queue = ? AND idempotency_key = ?",  # noqa: S608
                (nj.queue, nj.idempotency_key),
            ).fetchone()
            job = None if row is None else _job(row)
        else:
            job = _get_job(conn, nj.id)
        if job is None:  # pragma: no cover - a conflict must name one of the two
            raise BackendError(f"sqlite: enqueue: job {nj.id} conflicted with no stored job")
        return job

    # -- consumer -------------------------------------------------------------------------------

    async def claim(
        self,
        queues: Sequence[str],
        *,
        limit: int,
        lease_for: timedelta,
        worker_id: str,
        now: datetime,
    ) -> list[Lease]:
        """Lease up to ``limit`` QUEUED jobs in one transaction; see ``Backend.claim``.

        Each queue is claimed by one ``UPDATE … RETURNING`` (rows re-sorted here, as RETURNING
        does not keep order); attempt records are opened in the same transaction.
        """
        names = _unique(queues)
        if limit <= 0 or not names:
            return []
        claim = _Claim(names, limit, worker_id, _ms(now), _ms(now) + lease_for // _ONE_MS)
        return await self._write(claim.run, "claim", limit, durable=False)

    async def finish_and_claim(
        self,
        items: Sequence[Finish],
        queues: Sequence[str],
        *,
        limit: int,
        lease_for: timedelta,
        worker_id: str,
        now: datetime,
    ) -> tuple[list[bool], list[Lease]]:
        """``finish`` then ``claim`` in one write transaction (one hop to the writer thread);
        see ``Backend.finish_and_claim``."""
        names = _unique(queues)
        now_ms = _ms(now)
        batch = list(items)
        claim = None if limit <= 0 or not names else _Claim(
            names, limit, worker_id, now_ms, now_ms + lease_for // _ONE_MS)

        def fn(conn: sqlite3.Connection, fx: Effects) -> tuple[list[bool], list[Lease]]:
            applied = self._finish_all(conn, fx, batch, now_ms)
            return applied, [] if claim is None else claim.run(conn, fx)

        if not batch and claim is None:
            return [], []
        return await self._write(fn, "finish_and_claim", len(batch) + max(0, limit),
                                 durable=False)

    async def wait_for_jobs(self, queues: Sequence[str], *, timeout: float) -> None:
        """Return when a job may have become ready in ``queues``, or after ``timeout`` s.

        It returns at once while a claimable job (QUEUED, queue not paused) exists. Same-process
        enqueues, promotions, requeues, releases and resumes wake it at once; other processes'
        are noticed by polling for a claimable job every ``poll_interval_ms``, backing off
        towards ``poll_max_ms`` while the backend is idle (see ``SqliteOptions``).
        """
        names = _unique(queues)
        if not names or timeout <= 0:
            return
        names_json = _json.encode(names)

        def read(conn: sqlite3.Connection) -> bool:
            # One index seek per queue on jobs_claim.
            row = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'queued' "  # noqa: S608
                f"AND queue IN {_IDS_PARAM} AND queue NOT IN "
                "(SELECT name FROM queues WHERE paused))",
                (names_json,),
            ).fetchone()
            return bool(row[0])

        event = asyncio.Event()
        for name in names:
            self._ready_waiters.setdefault(name, set()).add(event)
        try:
            await self._wait(event, lambda: self._read(read, "wait_for_jobs"), bool, timeout)
        finally:
            for name in names:
                waiters = self._ready_waiters.get(name)
                if waiters is not None:
                    waiters.discard(event)
                    if not waiters:
                        del self._ready_waiters[name]

    async def _wait(
        self,
        event: asyncio.Event,
        poll: Callable[[], Any],
        changed: Callable[[Any], bool],
        timeout: float,
    ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            # The event is registered before this read, so a same-process commit is either
            # visible to the read or sets the event: no wake-up is lost in between.
            if changed(await poll()):
                self._last_activity = time.monotonic()
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._connected:
                return
            with anyio.move_on_after(min(remaining, self._poll_delay())):
                await event.wait()
            if event.is_set():
                return

    async def extend(
        self, leases: Sequence[Lease], *, lease_for: timedelta, now: datetime
    ) -> list[LeaseStatus]:
        """Heartbeat every lease in one transaction; see ``Backend.extend``."""
        if not leases:
            return []
        expires_ms = _ms(now) + lease_for // _ONE_MS
        items = [(ls.job_id, ls.token) for ls in leases]

        def fn(conn: sqlite3.Connection, fx: Effects) -> list[LeaseStatus]:
            out = []
            for job_id, token in items:
                row = conn.execute(
                    "UPDATE jobs SET lease_expires_at = ? WHERE id = ? AND lease_token = ? "
                    "AND state = 'running' RETURNING cancel_requested, stack_requested",
                    (expires_ms, job_id, token),
                ).fetchone()
                if row is None:
                    out.append(LeaseStatus.LOST)
                elif row[0]:
                    out.append(LeaseStatus.CANCEL_REQUESTED)
                elif row[1]:
                    out.append(LeaseStatus.STACK_REQUESTED)
                else:
                    out.append(LeaseStatus.HELD)
            return out

        return await self._write(fn, "extend", len(items), durable=False)

    async def request_stack(self, job_id: str, *, now: datetime) -> Job | None:
        """Ask the running handler's stack; see ``Backend.request_stack``."""

        def fn(conn: sqlite3.Connection, fx: Effects) -> Job | None:
            conn.execute("UPDATE jobs SET stack_requested = 1 WHERE id = ? AND state = 'running'",
                         (job_id,))
            return _get_job(conn, job_id)

        return await self._write(fn, "request_stack", 1)

    async def note_attempt(self, job_id: str, attempt: int, worker_id: str, traceback: str
                           ) -> bool:
        """Add a traceback to a closed attempt record; see ``Backend.note_attempt``."""

        def fn(conn: sqlite3.Connection, fx: Effects) -> bool:
            return conn.execute(
                "UPDATE attempts SET traceback = ? WHERE seq = (SELECT seq FROM attempts "
                "WHERE job_id = ? AND attempt = ? AND worker_id = ? ORDER BY seq DESC LIMIT 1) "
                "AND traceback IS NULL", (traceback, job_id, attempt, worker_id)).rowcount == 1

        return await self._write(fn, "note_attempt", 1)

    async def put_stack(self, lease: Lease, stack: str, *, now: datetime) -> bool:
        """Store the worker's answer; see ``Backend.put_stack``."""
        now_ms = _ms(now)

        def fn(conn: sqlite3.Connection, fx: Effects) -> bool:
            return conn.execute(
                "UPDATE jobs SET stack = ?, stack_at = ?, stack_requested = 0 "
                "WHERE id = ? AND lease_token = ? AND state = 'running'",
                (stack, now_ms, lease.job_id, lease.token)).rowcount == 1

        return await self._write(fn, "put_stack", 1, durable=False)

    async def report_progress(self, items: Sequence[Progress], *, now: datetime) -> list[bool]:
        """Store how far running jobs are, fenced by token; see ``Backend.report_progress``."""
        rows = [(item.fraction, item.message, item.lease.job_id, item.lease.token)
                for item in items]
        if not rows:
            return []

        def fn(conn: sqlite3.Connection, fx: Effects) -> list[bool]:
            return [conn.execute(
                "UPDATE jobs SET progress = ?, progress_message = ? "
                "WHERE id = ? AND lease_token = ? AND state = 'running'", row).rowcount == 1
                for row in rows]

        return await self._write(fn, "report_progress", len(rows), durable=False)

    async def finish(self, items: Sequence[Finish], *, now: datetime) -> list[bool]:
        """End runs, fenced by their tokens, in one transaction; see ``Backend.finish``."""
        if not items:
            return []
        now_ms = _ms(now)
        batch = list(items)

        def fn(conn: sqlite3.Connection, fx: Effects) -> list[bool]:
            return self._finish_all(conn, fx, batch, now_ms)

        return await self._write(fn, "finish", len(batch), durable=False)

    @classmethod
    def _finish_all(cls, conn: sqlite3.Connection, fx: Effects, items: Sequence[Finish],
                    now_ms: int) -> list[bool]:
        """End the runs of ``items``; answers which applied, in order.

        When the items name distinct jobs, their plain completions (no error attached) are
        applied together, two statements for all of them instead of two each; the other
        outcomes one by one. Items of distinct jobs do not interact, so the answers are those
        of applying the items in order.
        """
        plain = {item.lease.job_id: n for n, item in enumerate(items)
                 if item.outcome is Outcome.COMPLETED and item.error is None}
        if len(plain) < 2 or len({item.lease.job_id for item in items}) < len(items):
            return [cls._finish_one(conn, fx, item, now_ms) for item in items]
        try:  # results travel as JSON strings: bytes that are not UTF-8 go the long way
            done = _json.encode([
                (job_id, items[n].lease.token,
                 None if (result := items[n].result_json) is None else result.decode())
                for job_id, n in plain.items()])
        except UnicodeDecodeError:
            return [cls._finish_one(conn, fx, item, now_ms) for item in items]
        applied = [False] * len(items)
        rows = conn.execute(_COMPLETE_MANY, (now_ms, done)).fetchall()
        minute = now_ms // MINUTE_MS
        for job_id, queue in rows:
            applied[plain[job_id]] = True
            fx.move(queue, "running", "completed")
            fx.end(queue, minute, _COMPLETED_COUNTS)
        if rows:
            conn.execute(_COMPLETE_ATTEMPTS, (now_ms, _json.encode(
                [(job_id, items[plain[job_id]].lease.token) for job_id, _ in rows])))
        for n, item in enumerate(items):
            if item.lease.job_id not in plain:
                applied[n] = cls._finish_one(conn, fx, item, now_ms)
        return applied

    @staticmethod
    def _finish_one(conn: sqlite3.Connection, fx: Effects, item: Finish, now_ms: int) -> bool:
        job_id, token = item.lease.job_id, item.lease.token
        clear = ("lease_token = NULL, lease_expires_at = NULL, worker_id = NULL, "
                 "stack_requested = 0")
        outcome = item.outcome
        error = None if item.error is None else str(item.error)
        if outcome is Outcome.COMPLETED:
            # The common case needs no look first: a pending cancel does not change it.
            row = conn.execute(
                f"UPDATE jobs SET state = 'completed', result = ?, finished_at = ?, {clear} "  # noqa: S608
                "WHERE id = ? AND lease_token = ? AND state = 'running' RETURNING queue",
                (item.result_json, now_ms, job_id, token),
            ).fetchone()
            if row is None:
                return False
            queue = row[0]
        else:
            row = conn.execute(
                "SELECT queue, cancel_requested FROM jobs "
                "WHERE id = ? AND lease_token = ? AND state = 'running'",
                (job_id, token),
            ).fetchone()
            if row is None:
                return False
            queue, cancel_requested = row
            outcome = finish_outcome(outcome, bool(cancel_requested))
        if outcome is Outcome.RETRY:
            assert item.retry_at is not None  # Finish validates this  # noqa: S101
            conn.execute(
                "UPDATE jobs SET state = 'retrying', run_at = ?, error = coalesce(?, error), "  # noqa: S608
                f"progress = NULL, progress_message = NULL, {clear} "
                "WHERE id = ?",
                (_ms(item.retry_at), error, job_id),
            )
            fx.changes = True
        elif outcome is Outcome.DEAD:
            conn.execute(
                "UPDATE jobs SET state = 'dead', error = coalesce(?, error), finished_at = ?, "  # noqa: S608
                f"{clear} "
                "WHERE id = ?",
                (error, now_ms, job_id),
            )
        elif outcome is Outcome.CANCELLED:
            conn.execute(
                "UPDATE jobs SET state = 'cancelled', error = coalesce(?, error), "  # noqa: S608
                f"finished_at = ?, {clear} WHERE id = ?",
                (error, now_ms, job_id),
            )
        elif outcome is Outcome.RELEASED:  # back to the queue, and the run does not count
            conn.execute(
                "UPDATE jobs SET state = 'queued', attempt = attempt - 1, progress = NULL, "  # noqa: S608
                f"progress_message = NULL, {clear} "
                "WHERE id = ?",
                (job_id,),
            )
            fx.ready.add(queue)
        fx.move(queue, "running", _FINISH_STATE[outcome])
        fx.end(queue, now_ms // MINUTE_MS, finish_counts(item.outcome, outcome))
        info = item.error
        conn.execute(
            "UPDATE attempts SET finished_at = ?, outcome = ?, error_type = ?, "
            "error_message = ?, traceback = ? WHERE job_id = ? AND token = ?",
            (
                now_ms,
                # The attempt records how the run itself ended (as the worker reported it),
                # even when a pending cancel turns the job's RETRY or DEAD into CANCELLED.
                OUTCOME_TO_ATTEMPT[item.outcome].value,
                None if info is None else info.type,
                None if info is None else info.message,
                None if info is None else info.traceback,
                job_id,
                token,
            ),
        )
        return True

    # -- scheduler ------------------------------------------------------------------------------

    async def promote(self, *, now: datetime, limit: int) -> int:
        """Move due SCHEDULED and RETRYING jobs to QUEUED; see ``Backend.promote``."""
        if limit <= 0:
            return 0
        now_ms = _ms(now)

        def fn(conn: sqlite3.Connection, fx: Effects) -> int:
            # No ORDER BY: each state's partial index yields its due jobs by run_at and the
            # LIMIT stops the walk, where a global order would sort the whole due backlog
            # every call. The caller repeats until fewer than ``limit`` move, so every due job
            # moves. One UPDATE per state, so the counts know what each job left.
            moved = 0
            for state, sql in _PROMOTE:
                if moved >= limit:
                    break
                rows = conn.execute(sql, (now_ms, limit - moved)).fetchall()
                for queue, n in collections.Counter(r[0] for r in rows).items():
                    fx.move(queue, state, "queued", n)
                    fx.ready.add(queue)
                moved += len(rows)
            return moved

        return await self._write(fn, "promote", limit, durable=False)

    async def next_wakeup(self, *, now: datetime) -> datetime | None:
        """The earliest due ``run_at`` or lease expiry; see ``Backend.next_wakeup``."""
        earliest = await self._read(_earliest_due, "next_wakeup")
        self._seen_wakeup = (earliest,)
        return _odt(earliest)

    async def wait_for_changes(self, *, timeout: float) -> None:
        """Return when ``next_wakeup`` may have moved earlier, or after ``timeout`` s.

        Same-process delayed enqueues, retries, claims and schedule changes wake it at once.
        Other processes' are noticed by polling: every ``poll_interval_ms`` (backing off like
        ``wait_for_jobs``) it recomputes the earliest due time and returns if it is earlier than
        what the last ``next_wakeup`` (or poll) saw, or if the schedules changed.
        """
        if timeout <= 0:
            return

        def changed(polled: tuple[int | None, tuple[int, int | None]]) -> bool:
            current, stamp = polled
            seen, self._seen_wakeup = self._seen_wakeup, (current,)
            seen_stamp, self._seen_schedules = self._seen_schedules, stamp
            if seen_stamp is not None and stamp != seen_stamp:
                return True  # a schedule was added, changed or removed elsewhere
            if seen is None or current is None:
                return False
            return seen[0] is None or current < seen[0]

        event = asyncio.Event()
        self._change_waiters.add(event)
        try:
            await self._wait(
                event, lambda: self._read(_due_and_schedules, "wait_for_changes"), changed,
                timeout,
            )
        finally:
            self._change_waiters.discard(event)

    async def expired_leases(self, *, now: datetime, limit: int) -> list[Lease]:
        """RUNNING jobs whose lease expired before ``now``, oldest expiry first."""
        if limit <= 0:
            return []
        now_ms = _ms(now)

        def fn(conn: sqlite3.Connection) -> list[Lease]:
            rows = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state = 'running' "  # noqa: S608
                "AND lease_expires_at < ? ORDER BY lease_expires_at, id LIMIT ?",
                (now_ms, limit),
            ).fetchall()
            return [Lease(_job(r), r[_TOKEN], _dt(r[19])) for r in rows]

        return await self._read(fn, "expired_leases")

    async def purge(
        self,
        *,
        states: Collection[JobState],
        finished_before: datetime,
        queue: str | None = None,
        limit: int = 1000,
    ) -> int:
        """Delete up to ``limit`` finished jobs and their attempts; see ``Backend.purge``."""
        terminal = sorted({JobState(s).value for s in states} & {s.value for s in TERMINAL_STATES})
        if not terminal or limit <= 0:
            return 0
        before_ms = _ms(finished_before)
        marks = ", ".join("?" for _ in terminal)
        where = f"state IN ({marks}) AND finished_at < ?"
        params: list[Any] = [*terminal, before_ms]
        if queue is not None:
            where += " AND queue = ?"
            params.append(queue)
        # No ORDER BY, for the reason given in promote: every row found is past the horizon.
        sql = (
            f"DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE {where} "  # noqa: S608
            "LIMIT ?) RETURNING id, queue, state"
        )
        params.append(limit)

        def fn(conn: sqlite3.Connection, fx: Effects) -> int:
            return _deleted(conn, fx, conn.execute(sql, params).fetchall())

        return await self._write(fn, "purge", limit)

    # -- inspection and admin -------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        """The job, or None."""
        return await self._read(lambda conn: _get_job(conn, job_id), "get")

    async def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        """Several jobs in one read, in the order given (None for unknown ids)."""
        if not job_ids:
            return []
        ids_json = _json.encode(list(job_ids))

        def fn(conn: sqlite3.Connection) -> dict[str, Job]:
            rows = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id IN {_IDS_PARAM}",  # noqa: S608
                (ids_json,),
            ).fetchall()
            return {r[0]: _job(r) for r in rows}

        found = await self._read(fn, "get_many")
        return [found.get(job_id) for job_id in job_ids]

    async def attempts(self, job_id: str) -> list[Attempt]:
        """The job's attempt records, oldest first."""

        def fn(conn: sqlite3.Connection) -> list[Attempt]:
            rows = conn.execute(
                "SELECT job_id, attempt, worker_id, started_at, finished_at, outcome, "
                "error_type, error_message, traceback FROM attempts WHERE job_id = ? "
                "ORDER BY seq",
                (job_id,),
            ).fetchall()
            return [
                Attempt(
                    job_id=r[0],
                    attempt=r[1],
                    worker_id=r[2],
                    started_at=_dt(r[3]),
                    finished_at=_odt(r[4]),
                    outcome=AttemptOutcome(r[5]),
                    error_type=r[6],
                    error_message=r[7],
                    traceback=r[8],
                )
                for r in rows
            ]

        return await self._read(fn, "attempts")

    async def list_jobs(self, query: JobQuery) -> Page:
        """Matching jobs, newest first, keyset-paginated by id; see ``Backend.list_jobs``.

        One read snapshot, by the cheapest of these (``_ListPlan.page``):

        - one schedule's runs: jobs_schedule, already in id order;
        - no filter, or only filters no index serves (handler, error type, finish window):
          the id index itself, walked newest first, at most ``_LIST_BUDGET`` ids when
          filtered (the page may then end early, with ``next_cursor`` the last id walked);
        - an error type or finish window with states, when at most ``_LIST_CANDIDATES`` jobs
          are in those states (finished in the window, when one is given): they are read
          whole through a state index and filtered, a full page;
        - otherwise by queue, state or both: one range of jobs_queue_state_id per (queue,
          state) pair that holds jobs, merged; with the other filters each range walks at most
          its share of ``_LIST_BUDGET`` entries, so a page that ran out ends early.
        """
        if query.empty:
            return Page(jobs=[], next_cursor=None)
        listed = query.listed_states()
        plan = _ListPlan(
            queue=query.queue,
            states=None if listed is None else sorted(s.value for s in listed),
            handler=query.handler,
            schedule_id=query.schedule_id,
            error_type=query.error_type,
            after_ms=None if query.finished_after is None else to_ms_ceil(query.finished_after),
            before_ms=(None if query.finished_before is None
                       else to_ms_ceil(query.finished_before)),
            cursor=query.cursor,
            limit=query.limit,
        )
        jobs, next_cursor = await self._read(plan.page, "list_jobs")
        return Page(jobs=jobs, next_cursor=next_cursor)

    async def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """Counts by state per queue; see ``Backend.stats``.

        Every known queue sorted by name when ``queues`` is None, else the queues asked for, in
        that order; one that is not known answers zero counts. The counts are rows of
        job_counts (kept by every write), never a count of the jobs. ``oldest_queued_at``
        takes one seek on jobs_claim per priority of each queue that has queued jobs (the
        first entry of each (queue, 'queued', priority) range is its smallest run_at).
        """
        names = None if queues is None else _unique(queues)
        names_json = None if names is None else _json.encode(names)

        def fn(
            conn: sqlite3.Connection,
        ) -> tuple[dict[str, bool], list[tuple[str, str, int]], dict[str, int]]:
            counts: list[tuple[str, str, int]]
            if names_json is None:
                flags = conn.execute("SELECT name, paused FROM queues").fetchall()
                counts = conn.execute(
                    "SELECT queue, state, n FROM job_counts WHERE n != 0"
                ).fetchall()
            else:
                flags = conn.execute(
                    f"SELECT name, paused FROM queues WHERE name IN {_IDS_PARAM}",  # noqa: S608
                    (names_json,),
                ).fetchall()
                counts = conn.execute(
                    f"SELECT queue, state, n FROM job_counts WHERE queue IN {_IDS_PARAM} "  # noqa: S608
                    "AND n != 0",
                    (names_json,),
                ).fetchall()
            oldest: dict[str, int] = {}
            for name, state, _count in counts:
                if state == JobState.QUEUED.value:
                    (first,) = conn.execute(_OLDEST_QUEUED, (name,)).fetchone()
                    if first is not None:
                        oldest[name] = first
            return {n: bool(p) for n, p in flags}, counts, oldest

        paused, counts, oldest = await self._read(fn, "stats")
        by_queue: dict[str, dict[JobState, int]] = {}
        for name in names if names is not None else paused:
            by_queue[name] = dict.fromkeys(JobState, 0)
        for name, state, count in counts:
            by_queue.setdefault(name, dict.fromkeys(JobState, 0))[_STATES[state]] = count
        order = sorted(by_queue) if names is None else names
        return [
            QueueStats(
                queue=name,
                counts=by_queue[name],
                paused=paused.get(name, False),
                oldest_queued_at=_odt(oldest.get(name)),
            )
            for name in order
        ]

    async def count_jobs(
        self,
        *,
        states: Collection[JobState],
        queue: str | None = None,
        finished_before: datetime | None = None,
    ) -> int:
        """Jobs in ``states``; see ``Backend.count_jobs``.

        Without ``finished_before``, a sum of job_counts rows. With it, one indexed COUNT over
        jobs_queue_finished (one queue) or jobs_finished (every queue): index entries of the
        matching jobs only, never the table.
        """
        wanted = sorted({JobState(s).value for s in states})
        if not wanted:
            return 0
        if finished_before is None:
            marks = ", ".join("?" for _ in wanted)
            sql = f"SELECT coalesce(sum(n), 0) FROM job_counts WHERE state IN ({marks})"  # noqa: S608
            params: list[Any] = list(wanted)
            if queue is not None:
                sql += " AND queue = ?"
                params.append(queue)
        else:
            found, params = count_jobs_sql(
                states=wanted, queue=queue, before_ms=to_ms_ceil(finished_before)
            )
            assert found is not None  # noqa: S101 - states is not empty
            sql = found

        def fn(conn: sqlite3.Connection) -> int:
            (count,) = conn.execute(sql, params).fetchone()
            return int(count)

        return await self._read(fn, "count_jobs")

    async def throughput(
        self,
        *,
        since: datetime,
        until: datetime,
        bucket: timedelta,
        queue: str | None = None,
    ) -> list[ThroughputBucket]:
        """Sums of the per-minute counter rows in the range (a primary-key range read); see
        ``Backend.throughput``."""
        first, count, per = bucket_plan(since, until, bucket)
        if count == 0:
            return []
        sql = _THROUGHPUT_ALL if queue is None else _THROUGHPUT_ONE
        params: list[Any] = [first, first + count * per]
        if queue is not None:
            params.append(queue)

        def fn(conn: sqlite3.Connection) -> dict[int, Counts]:
            return {r[0]: (r[1], r[2], r[3]) for r in conn.execute(sql, params)}

        return fold_minutes(first, count, per, await self._read(fn, "throughput"))

    async def recent_waits(self, queue: str, *, limit: int = 500) -> list[float]:
        """The newest waits of the queue's ring, newest first; see ``Backend.recent_waits``."""
        if limit <= 0:
            return []

        def fn(conn: sqlite3.Connection) -> list[float]:
            rows = conn.execute(
                "SELECT wait_ms FROM waits WHERE queue = ? ORDER BY seq DESC LIMIT ?",
                (queue, min(limit, WAITS_KEPT)),
            )
            return [r[0] / 1000 for r in rows]

        return await self._read(fn, "recent_waits")

    async def beat(self, name: str, *, now: datetime) -> None:
        """Upsert a component's beat (the later time wins) and forget beats older than 24 h;
        see ``Backend.beat``."""
        now_ms = _ms(now)
        horizon_ms = _ms(now - BEAT_HORIZON)

        def fn(conn: sqlite3.Connection, fx: Effects) -> None:
            conn.execute(
                "INSERT INTO beats (name, at) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET at = max(at, excluded.at)",
                (name, now_ms),
            )
            conn.execute("DELETE FROM beats WHERE at < ?", (horizon_ms,))

        await self._write(fn, "beat", durable=False)

    async def beats(self, *, now: datetime | None = None) -> dict[str, datetime]:
        """Components that beat within 24 h of ``now``, by name; see ``Backend.beats``."""
        horizon_ms = to_ms_ceil((utcnow() if now is None else now) - BEAT_HORIZON)

        def fn(conn: sqlite3.Connection) -> list[tuple[str, int]]:
            return conn.execute(
                "SELECT name, at FROM beats WHERE at >= ? ORDER BY name", (horizon_ms,)
            ).fetchall()

        return {name: _dt(at) for name, at in await self._read(fn, "beats")}

    async def count_finished(
        self, *, since: datetime, queue: str | None = None
    ) -> dict[JobState, int]:
        """Jobs per terminal state finished at or after ``since``, in one read; see
        ``Backend.count_finished``.

        Served by jobs_finished (state, finished_at): one range seek per terminal state, so the
        cost follows the jobs finished since ``since``, not the jobs retained. For all queues
        the index covers the query. With a queue, ``+queue`` keeps the planner off
        jobs_queue_state_id, which it would otherwise pick for ``queue = ? AND state IN (...)``
        and then read every
        retained terminal job of the queue; each job in the window is looked up instead.
        """
        # finished_at is whole milliseconds: ``>= since`` is ``>= since rounded up``.
        since_ms = -((EPOCH - since) // _ONE_MS)
        sql = count_finished_sql(by_queue=queue is not None)
        params: list[Any] = [*_TERMINAL, since_ms]
        if queue is not None:
            params.append(queue)

        def fn(conn: sqlite3.Connection) -> list[tuple[str, int]]:
            return conn.execute(sql, params).fetchall()

        counts = dict.fromkeys((s for s in JobState if s in TERMINAL_STATES), 0)
        for state, count in await self._read(fn, "count_finished"):
            counts[_STATES[state]] = count
        return counts

    async def cancel(self, job_id: str, *, now: datetime) -> Job | None:
        """Cancel a job and answer it as it is afterwards; see ``Backend.cancel``."""
        now_ms = _ms(now)

        def fn(conn: sqlite3.Connection, fx: Effects) -> Job | None:
            row = conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            state = row[0]
            if state in ("scheduled", "queued", "retrying"):
                (queue,) = conn.execute(
                    "UPDATE jobs SET state = 'cancelled', finished_at = ? WHERE id = ? "
                    "RETURNING queue",
                    (now_ms, job_id),
                ).fetchone()
                fx.move(queue, state, "cancelled")
            elif state == "running":
                conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            return _get_job(conn, job_id)

        return await self._write(fn, "cancel")

    async def requeue(self, job_ids: Sequence[str], *, now: datetime) -> list[str]:
        """Move DEAD or CANCELLED jobs back to QUEUED; see ``Backend.requeue``."""
        ids = _unique(job_ids)
        if not ids:
            return []
        now_ms = _ms(now)
        ids_json = _json.encode(ids)

        def fn(conn: sqlite3.Connection, fx: Effects) -> set[str]:
            moved: set[str] = set()
            for state in ("dead", "cancelled"):  # one UPDATE per state, for the counts
                rows = conn.execute(
                    "UPDATE jobs SET state = 'queued', attempt = 0, run_at = ?, error = NULL, "  # noqa: S608
                    "result = NULL, finished_at = NULL, cancel_requested = 0, progress = NULL, "
                    "progress_message = NULL, worker_id = NULL, lease_token = NULL, "
                    f"lease_expires_at = NULL WHERE id IN {_IDS_PARAM} AND state = ? "
                    "RETURNING id, queue",
                    (now_ms, ids_json, state),
                ).fetchall()
                for queue, n in collections.Counter(q for _, q in rows).items():
                    fx.move(queue, state, "queued", n)
                    fx.ready.add(queue)
                moved.update(job_id for job_id, _ in rows)
            return moved

        moved = await self._write(fn, "requeue", len(ids))
        return [job_id for job_id in ids if job_id in moved]

    async def set_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume a queue (resuming wakes its waiting workers)."""

        def fn(conn: sqlite3.Connection, fx: Effects) -> None:
            conn.execute(
                "INSERT INTO queues (name, paused) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET paused = excluded.paused",
                (queue, int(paused)),
            )
            if not paused:
                fx.ready.add(queue)

        await self._write(fn, "set_paused")

    # -- schedules ------------------------------------------------------------------------------

    async def put_schedule(self, schedule: Schedule) -> None:
        """Insert or replace a schedule, every field as given; see ``Backend.put_schedule``."""
        row = _schedule_row(schedule)

        def fn(conn: sqlite3.Connection, fx: Effects) -> None:
            conn.execute(
                f"INSERT OR REPLACE INTO schedules ({_SCHEDULE_COLUMNS}) "  # noqa: S608
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            fx.changes = True  # a new or edited schedule may fire before the next wake-up

        await self._write(fn, "put_schedule")

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        """The schedule, or None."""

        def fn(conn: sqlite3.Connection) -> Schedule | None:
            row = conn.execute(
                f"SELECT {_SCHEDULE_COLUMNS} FROM schedules WHERE id = ?",  # noqa: S608
                (schedule_id,),
            ).fetchone()
            return None if row is None else _schedule(row)

        return await self._read(fn, "get_schedule")

    async def list_schedules(self) -> list[Schedule]:
        """Every schedule, enabled or not, by id."""

        def fn(conn: sqlite3.Connection) -> tuple[list[Schedule], tuple[int, int | None]]:
            rows = conn.execute(
                f"SELECT {_SCHEDULE_COLUMNS} FROM schedules ORDER BY id"  # noqa: S608
            ).fetchall()
            return [_schedule(r) for r in rows], _schedules_stamp(conn)

        schedules, stamp = await self._read(fn, "list_schedules")
        if self._seen_schedules is None:
            # The baseline wait_for_changes compares against. Without it the first wait had
            # none, so a schedule put (by another process, or by this one before the wait
            # registered) after a scheduler read the list went unnoticed until the wait timed
            # out. Any stamp read no later than the scheduler's own list is a safe baseline.
            self._seen_schedules = stamp
        return schedules

    async def delete_schedule(self, schedule_id: str) -> bool:
        """Delete a schedule (its runs stay); False if there is none."""

        def fn(conn: sqlite3.Connection, fx: Effects) -> bool:
            row = conn.execute(
                "DELETE FROM schedules WHERE id = ? RETURNING id", (schedule_id,)
            ).fetchone()
            return row is not None

        return await self._write(fn, "delete_schedule")

    async def advance_schedule(self, schedule_id: str, fire_at: datetime) -> bool:
        """Move ``last_fire_at`` forward to ``fire_at`` in one conditional UPDATE.

        Two schedulers racing both run it; the write lock orders them and the condition lets
        only a later fire time through, so the latest one wins.
        """
        fire_us = _us(fire_at)

        def fn(conn: sqlite3.Connection, fx: Effects) -> bool:
            row = conn.execute(
                "UPDATE schedules SET last_fire_at = ? WHERE id = ? "
                "AND (last_fire_at IS NULL OR last_fire_at < ?) RETURNING id",
                (fire_us, schedule_id, fire_us),
            ).fetchone()
            return row is not None

        return await self._write(fn, "advance_schedule")

    async def purge_schedule_runs(self, schedule_id: str, *, keep: int, limit: int = 1000
                                  ) -> int:
        """Delete terminal runs older than the newest ``keep``, with their attempts.

        One DELETE walks jobs_schedule newest first, skips ``keep`` runs (any state) and deletes
        up to ``limit`` terminal ones of the rest; their idempotency keys go with the rows.
        """
        if limit <= 0:
            return 0
        marks = ", ".join("?" for _ in _TERMINAL)
        sql = (
            "DELETE FROM jobs WHERE id IN (SELECT id FROM "  # noqa: S608
            "(SELECT id, state FROM jobs WHERE schedule_id = ? ORDER BY id DESC "
            f"LIMIT -1 OFFSET ?) WHERE state IN ({marks}) LIMIT ?) RETURNING id, queue, state"
        )
        params = (schedule_id, max(0, keep), *_TERMINAL, limit)

        def fn(conn: sqlite3.Connection, fx: Effects) -> int:
            return _deleted(conn, fx, conn.execute(sql, params).fetchall())

        return await self._write(fn, "purge_schedule_runs", limit)

    # -- workers --------------------------------------------------------------------------------

    async def report_worker(self, info: WorkerInfo, *, ttl: timedelta) -> None:
        """Record a worker heartbeat, listed until ``info.last_seen + ttl``."""
        seen_ms = _ms(info.last_seen)
        row = (
            info.id,
            info.host,
            info.pid,
            _json.encode(list(info.roles)).decode(),
            _json.encode(list(info.queues)).decode(),
            info.concurrency,
            info.busy,
            _ms(info.started_at),
            seen_ms,
            seen_ms + ttl // _ONE_MS,
            info.processed,
        )

        def fn(conn: sqlite3.Connection, fx: Effects) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO workers (id, host, pid, roles, queues, concurrency, "
                "busy, started_at, last_seen, expires_at, processed) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            # Workers that died without remove_worker would otherwise stay forever.
            conn.execute("DELETE FROM workers WHERE expires_at < ?", (seen_ms,))

        await self._write(fn, "report_worker", durable=False)

    async def remove_worker(self, worker_id: str) -> None:
        """Forget a worker."""

        def fn(conn: sqlite3.Connection, fx: Effects) -> None:
            conn.execute("DELETE FROM workers WHERE id = ?", (worker_id,))

        await self._write(fn, "remove_worker")

    # -- audit log ------------------------------------------------------------------------------

    async def append_audit(self, entry: AuditEntry) -> None:
        """Insert one row of the ``audit`` table; see ``Backend.append_audit``."""
        row = (_ms(entry.at), entry.id, entry.actor, entry.source, entry.action, entry.target,
               entry.queue, entry.outcome, entry.detail_json, entry.address)

        def fn(conn: sqlite3.Connection, fx: Effects) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO audit (at, id, actor, source, action, target, queue, "
                "outcome, detail, address) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)

        await self._write(fn, "append_audit")

    async def list_audit(self, *, filters: AuditFilter | None = None, limit: int = 50,
                         cursor: str | None = None) -> AuditPage:
        """Entries newest first, read from the primary key in bounded steps and filtered
        (``core.audit.scan_page``); see ``Backend.list_audit``."""

        async def fetch(below: tuple[int, str] | None, n: int) -> list[AuditEntry]:
            def fn(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
                columns = ("SELECT at, id, actor, source, action, target, queue, outcome, "
                           "detail, address FROM audit ")
                if below is None:
                    return conn.execute(columns + "ORDER BY at DESC, id DESC LIMIT ?",
                                        (n,)).fetchall()
                return conn.execute(columns + "WHERE (at, id) < (?, ?) "
                                    "ORDER BY at DESC, id DESC LIMIT ?",
                                    (below[0], below[1], n)).fetchall()

            return [AuditEntry(id=r[1], at=_dt(r[0]), actor=r[2], source=r[3], action=r[4],
                               target=r[5], queue=r[6], outcome=r[7], detail_json=r[8],
                               address=r[9])
                    for r in await self._read(fn, "list_audit")]

        return await scan_page(fetch, filters, limit, cursor)

    async def purge_audit(self, *, before: datetime, limit: int = 1000) -> int:
        """Delete the oldest entries before ``before``, one transaction; see
        ``Backend.purge_audit``."""
        if limit <= 0:
            return 0
        horizon = to_ms_ceil(before)

        def fn(conn: sqlite3.Connection, fx: Effects) -> int:
            return conn.execute(
                "DELETE FROM audit WHERE (at, id) IN (SELECT at, id FROM audit WHERE at < ? "
                "ORDER BY at, id LIMIT ?)", (horizon, limit)).rowcount

        return await self._write(fn, "purge_audit")

    async def list_workers(self, *, now: datetime) -> list[WorkerInfo]:
        """Workers whose heartbeat is within its ttl at ``now``, by id."""
        now_ms = _ms(now)
        decode = msgspec.json.decode

        def fn(conn: sqlite3.Connection) -> list[WorkerInfo]:
            rows = conn.execute(
                "SELECT id, host, pid, roles, queues, concurrency, busy, started_at, last_seen, "
                "processed FROM workers WHERE expires_at >= ? ORDER BY id",
                (now_ms,),
            ).fetchall()
            return [
                WorkerInfo(
                    id=r[0],
                    host=r[1],
                    pid=r[2],
                    roles=tuple(decode(r[3])),
                    queues=tuple(decode(r[4])),
                    concurrency=r[5],
                    busy=r[6],
                    started_at=_dt(r[7]),
                    last_seen=_dt(r[8]),
                    processed=r[9],
                )
                for r in rows
            ]

        return await self._read(fn, "list_workers")
