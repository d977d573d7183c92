"""Helpers shared by the SQLite tests."""

from __future__ import annotations

import sqlite3


def undo_version_9(conn: sqlite3.Connection) -> None:
    """Make a fresh file's indexes those of schema version 8: the claim index over every job,
    one due-time index for all states, and the attempts' token index."""
    for index in ("jobs_claim", "jobs_scheduled", "jobs_retrying"):
        conn.execute(f"DROP INDEX {index}")
    conn.execute("CREATE INDEX jobs_claim ON jobs (queue, state, priority, run_at, id)")
    conn.execute("CREATE INDEX jobs_due ON jobs (state, run_at)")
    conn.execute("CREATE INDEX attempts_token ON attempts (token)")
