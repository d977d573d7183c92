"""The SQLite schema's version and migrations, next to ``schema.sql``.

``schema.sql`` is the whole latest schema, applied to a new file; ``MIGRATIONS`` bring an older
file up to date one version at a time, inside the same transaction that checks the version.
"""

from __future__ import annotations

import importlib.resources
import logging
import sqlite3
from pathlib import Path
from typing import Final

from monoq.errors import BackendError

logger = logging.getLogger("monoq.backends.sqlite._backend")

# The schema version this code reads and writes, kept in PRAGMA user_version. When the schema
# changes: bump it, update schema.sql (the full latest schema, for new files) and add
# MIGRATIONS[old_version] with the statements that take a file from old_version to old + 1.
SCHEMA_VERSION: Final = 9
MIGRATIONS: dict[int, str] = {
    # 1 -> 2: schedules, and the index that finds a schedule's runs.
    1: """
CREATE TABLE schedules (
    id           TEXT PRIMARY KEY,
    handler      TEXT NOT NULL,
    cron         TEXT,
    every        REAL,
    timezone     TEXT NOT NULL,
    payload      BLOB NOT NULL,
    queue        TEXT NOT NULL,
    priority     INTEGER NOT NULL,
    max_retries  INTEGER,
    timeout      REAL,
    enabled      INTEGER NOT NULL,
    overlap      TEXT NOT NULL,
    misfire      TEXT NOT NULL,
    origin       TEXT NOT NULL,
    created_at   INTEGER,
    updated_at   INTEGER,
    last_fire_at INTEGER
);
CREATE INDEX jobs_schedule ON jobs (schedule_id, id) WHERE schedule_id IS NOT NULL;
""",
    # 2 -> 3: dashboard data (throughput counters, first-attempt waits, beats) and the index
    # that counts and lists one queue's jobs by finish time.
    2: """
CREATE INDEX jobs_queue_finished ON jobs (queue, state, finished_at)
    WHERE finished_at IS NOT NULL;
CREATE TABLE throughput (
    minute    INTEGER NOT NULL,
    queue     TEXT NOT NULL,
    completed INTEGER NOT NULL DEFAULT 0,
    failed    INTEGER NOT NULL DEFAULT 0,
    dead      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, queue)
) WITHOUT ROWID;
CREATE TABLE waits (
    queue   TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    wait_ms INTEGER NOT NULL,
    PRIMARY KEY (queue, seq)
) WITHOUT ROWID;
CREATE TABLE beats (
    name TEXT PRIMARY KEY,
    at   INTEGER NOT NULL
) WITHOUT ROWID;
""",
    # 3 -> 4: dashboard scale. The index whose (queue, state) ranges give list_jobs pages by
    # queue, by state and by both in id order; the jobs each worker has processed.
    3: """
CREATE INDEX jobs_queue_state_id ON jobs (queue, state, id);
ALTER TABLE workers ADD COLUMN processed INTEGER NOT NULL DEFAULT 0;
""",
    # 4 -> 5: the per-(queue, state) job counts, filled once from the jobs themselves (one
    # pass over the claim index) and kept by every write from then on.
    4: """
CREATE TABLE job_counts (
    queue TEXT NOT NULL,
    state TEXT NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (queue, state)
) WITHOUT ROWID;
INSERT INTO job_counts (queue, state, n) SELECT queue, state, count(*) FROM jobs
    GROUP BY queue, state;
""",
    # 5 -> 6: a schedule's times in epoch microseconds instead of milliseconds, so that
    # put_schedule stores them as given (Schedule times are not truncated to milliseconds).
    5: """
UPDATE schedules SET created_at = created_at * 1000, updated_at = updated_at * 1000,
    last_fire_at = last_fire_at * 1000;
""",
    # 6 -> 7: a job's trace context, its progress as the running handler reports it, and its
    # handler's stack on request.
    6: """
ALTER TABLE jobs ADD COLUMN trace_context TEXT;
ALTER TABLE jobs ADD COLUMN progress REAL;
ALTER TABLE jobs ADD COLUMN progress_message TEXT;
ALTER TABLE jobs ADD COLUMN stack_requested INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN stack TEXT;
ALTER TABLE jobs ADD COLUMN stack_at INTEGER;
""",
    # 7 -> 8: the audit log of operator actions.
    7: """
CREATE TABLE audit (
    at      INTEGER NOT NULL,
    id      TEXT NOT NULL,
    actor   TEXT NOT NULL,
    source  TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT,
    queue   TEXT,
    outcome TEXT NOT NULL,
    detail  TEXT NOT NULL,
    address TEXT,
    PRIMARY KEY (at, id)
) WITHOUT ROWID;
""",
    # 8 -> 9: the claim index and the due-time indexes hold only the jobs in their states, so a
    # job's claim and finish update fewer index entries; the attempts' token index goes (a
    # finish finds its attempt among the job's own).
    8: """
DROP INDEX jobs_claim;
DROP INDEX jobs_due;
DROP INDEX attempts_token;
CREATE INDEX jobs_claim ON jobs (queue, state, priority, run_at, id)
    WHERE state = 'queued';
CREATE INDEX jobs_scheduled ON jobs (state, run_at) WHERE state = 'scheduled';
CREATE INDEX jobs_retrying ON jobs (state, run_at) WHERE state = 'retrying';
""",
}


def schema_statements(script: str) -> list[str]:
    """Split a SQL script into statements (executescript would COMMIT our transaction)."""
    statements, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    return statements


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Create the schema in a new file, or migrate an older one, in one transaction; refuse a
    file of a newer monoq or one that is not monoq's."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise BackendError(
                f"sqlite: {path} has schema version {version}, but this monoq "
                f"understands schema version {SCHEMA_VERSION} at most; it was written by "
                "a newer monoq. Upgrade monoq, or point it at another file."
            )
        if version == 0:
            tables = conn.execute(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table'"
            ).fetchone()[0]
            if tables:
                raise BackendError(
                    f"sqlite: {path} holds tables but no monoq schema version; it is "
                    "not a monoq database"
                )
            script = (
                importlib.resources.files(__package__ or "monoq.backends.sqlite")
                .joinpath("schema.sql")
                .read_text(encoding="utf-8")
            )
            for statement in schema_statements(script):
                conn.execute(statement)
            logger.info("sqlite: created schema version %d in %s", SCHEMA_VERSION, path)
        else:
            for old in range(version, SCHEMA_VERSION):
                for statement in schema_statements(MIGRATIONS[old]):
                    conn.execute(statement)
                logger.info(
                    "sqlite: migrated %s from schema version %d to %d", path, old, old + 1
                )
        if version != SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {int(SCHEMA_VERSION)}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
