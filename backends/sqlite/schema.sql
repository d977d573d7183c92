-- monoq SQLite schema. The version is PRAGMA user_version (SCHEMA_VERSION in _backend.py).
-- This file is the whole latest schema, applied to new files; older files are brought up to
-- date by the migrations in _backend.py. Times are integer epoch milliseconds, except a
-- schedule's (epoch microseconds: a Schedule is stored exactly as given).

CREATE TABLE IF NOT EXISTS jobs (
    id               TEXT PRIMARY KEY,      -- client-made, sortable, time-ordered
    queue            TEXT NOT NULL,
    handler          TEXT NOT NULL,
    payload          BLOB NOT NULL,         -- JSON bytes, stored as given
    priority         INTEGER NOT NULL,      -- 0 runs first .. 9
    state            TEXT NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_retries      INTEGER NOT NULL,
    timeout          REAL NOT NULL,
    run_at           INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    idempotency_key  TEXT,
    schedule_id      TEXT,
    result           BLOB,
    error            TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    worker_id        TEXT,
    lease_token      TEXT,
    lease_expires_at INTEGER,
    trace_context    TEXT,                  -- W3C trace context of the enqueue, as given
    progress         REAL,                  -- 0..1 from the running handler; NULL = none
    progress_message TEXT,
    stack_requested  INTEGER NOT NULL DEFAULT 0,  -- `monoq job stack` asked; the worker answers
    stack            TEXT,                  -- the running handler's stack, as last answered
    stack_at         INTEGER
);

-- claim: one range scan per queue in (priority, run_at, id) order; also the oldest queued job
-- of a queue. Partial, like the two below: a job is in each only while it is in that state,
-- so a claim deletes one entry here and a finish touches none of the three (schema version 9).
CREATE INDEX IF NOT EXISTS jobs_claim ON jobs (queue, state, priority, run_at, id)
    WHERE state = 'queued';
-- promote and next_wakeup: due SCHEDULED and RETRYING jobs by run_at.
CREATE INDEX IF NOT EXISTS jobs_scheduled ON jobs (state, run_at) WHERE state = 'scheduled';
CREATE INDEX IF NOT EXISTS jobs_retrying ON jobs (state, run_at) WHERE state = 'retrying';
-- expired_leases (oldest expiry first) and next_wakeup: running jobs by lease expiry. Only
-- running jobs hold a lease, so the index stays as small as the set of running jobs.
CREATE INDEX IF NOT EXISTS jobs_lease ON jobs (state, lease_expires_at, id)
    WHERE lease_expires_at IS NOT NULL;
-- purge: finished jobs by finish time.
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (state, finished_at) WHERE finished_at IS NOT NULL;
-- idempotent enqueue: the uniqueness check is the index itself, so it is atomic across
-- processes. Partial, so jobs without a key cost no index entry.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs (queue, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- a schedule's runs, newest first (list_jobs by schedule, purge_schedule_runs). Partial: jobs
-- enqueued by hand cost no index entry, and `schedule_id = ?` implies the index's condition.
CREATE INDEX IF NOT EXISTS jobs_schedule ON jobs (schedule_id, id)
    WHERE schedule_id IS NOT NULL;
-- count_jobs and list_jobs of one queue by finish time (schema version 3): jobs_finished
-- serves every queue at once, this one a single queue without visiting the others' jobs.
CREATE INDEX IF NOT EXISTS jobs_queue_finished ON jobs (queue, state, finished_at)
    WHERE finished_at IS NOT NULL;
-- list_jobs pages newest first of one queue, one state, or both (schema version 4): one
-- range per (queue, state) pair in id order, merged, so a page reads about as many entries
-- per pair as it shows. One index for all three keeps enqueue cheap.
CREATE INDEX IF NOT EXISTS jobs_queue_state_id ON jobs (queue, state, id);

-- One row per attempt. A released attempt keeps its row although its number is reused by the
-- next run, so the key is a sequence, not (job_id, attempt).
CREATE TABLE IF NOT EXISTS attempts (
    seq           INTEGER PRIMARY KEY,
    job_id        TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    worker_id     TEXT NOT NULL,
    token         TEXT NOT NULL,          -- the lease token of the run, to close the right row
    started_at    INTEGER NOT NULL,
    finished_at   INTEGER,
    outcome       TEXT NOT NULL,
    error_type    TEXT,
    error_message TEXT,
    traceback     TEXT
);
-- A job's attempts in order; a finish finds its run's row among the job's few by token.
CREATE INDEX IF NOT EXISTS attempts_job ON attempts (job_id, seq);

-- How many jobs each (queue, state) holds (schema version 5), so stats() and count_jobs read
-- a few rows instead of counting index entries. Every write that creates, moves or deletes
-- jobs adds its net changes here once per transaction (GroupWriter's before_commit), in the
-- same transaction, so the counts are exactly those of the jobs table at every commit.
CREATE TABLE IF NOT EXISTS job_counts (
    queue TEXT NOT NULL,
    state TEXT NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (queue, state)
) WITHOUT ROWID;

-- Known queues (a queue is known once a job was enqueued into it or it was paused) and their
-- pause flag.
CREATE TABLE IF NOT EXISTS queues (
    name   TEXT PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS workers (
    id          TEXT PRIMARY KEY,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    roles       TEXT NOT NULL,            -- JSON array
    queues      TEXT NOT NULL,            -- JSON array
    concurrency INTEGER NOT NULL,
    busy        INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    processed   INTEGER NOT NULL DEFAULT 0  -- jobs the worker has run (schema version 4)
);

-- Recurring jobs (schema version 2). Enums as their text values; exactly one of cron / every.
CREATE TABLE IF NOT EXISTS schedules (
    id           TEXT PRIMARY KEY,
    handler      TEXT NOT NULL,
    cron         TEXT,
    every        REAL,                  -- seconds
    timezone     TEXT NOT NULL,         -- IANA name
    payload      BLOB NOT NULL,         -- JSON bytes of each run's payload
    queue        TEXT NOT NULL,
    priority     INTEGER NOT NULL,
    max_retries  INTEGER,               -- NULL: the handler's or config's default
    timeout      REAL,
    enabled      INTEGER NOT NULL,
    overlap      TEXT NOT NULL,         -- OverlapPolicy value
    misfire      TEXT NOT NULL,         -- MisfirePolicy value
    origin       TEXT NOT NULL,
    created_at   INTEGER,               -- a schedule's times are epoch MICROseconds (schema
    updated_at   INTEGER,               -- version 6), so they round-trip exactly
    last_fire_at INTEGER                -- newest fire time handled; only ever moves forward
);

-- Dashboard data (schema version 3).
-- Throughput counters per epoch minute (epoch ms // 60000) and queue, upserted by finish in
-- its own transaction. Rows older than 25 h are deleted when a new row is made, so the table
-- holds about 1500 minutes per active queue. Keyed by minute first: reads are minute ranges.
CREATE TABLE IF NOT EXISTS throughput (
    minute    INTEGER NOT NULL,
    queue     TEXT NOT NULL,
    completed INTEGER NOT NULL DEFAULT 0,
    failed    INTEGER NOT NULL DEFAULT 0,
    dead      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, queue)
) WITHOUT ROWID;

-- The ring of first-attempt waits of each queue: seq counts up per queue, claim inserts the
-- next ones and deletes those 1000 or more behind the newest.
CREATE TABLE IF NOT EXISTS waits (
    queue   TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    wait_ms INTEGER NOT NULL,
    PRIMARY KEY (queue, seq)
) WITHOUT ROWID;

-- The last beat of each component (a scheduler, ...); beats older than 24 h are deleted.
CREATE TABLE IF NOT EXISTS beats (
    name TEXT PRIMARY KEY,
    at   INTEGER NOT NULL
) WITHOUT ROWID;

-- The audit log of operator actions (schema version 8): who (actor, source, address) did what
-- (action, target, queue, outcome, detail: a small JSON object) when (at, epoch ms). Keyed by
-- (at, id): list_audit walks it newest first, purge_audit deletes from the oldest end.
CREATE TABLE IF NOT EXISTS audit (
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
