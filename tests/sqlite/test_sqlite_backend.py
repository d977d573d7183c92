"""SQLite-specific behaviour: files, pragmas, schema versions, group commit, errors, wake-ups.

The shared contract is covered by tests/conformance; these tests reach into a few private
attributes (the writer thread, the poll clock) where that is the only way to observe the
SQLite-specific promise.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import stat
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from monoq.backends.sqlite import SCHEMA_VERSION, SqliteBackend, _fs
from monoq.backends.sqlite import _backend as sqlite_backend_module
from monoq.backends.sqlite import _schema as sqlite_schema_module
from monoq.core.audit import AuditEntry
from monoq.core.backend import Backend
from monoq.core.ids import new_id
from monoq.core.models import Finish, JobQuery, JobState, NewJob, Outcome, Schedule
from monoq.errors import BackendError, BackendUnavailable, ConfigError
from tests.sqlite._support import undo_version_9

T0 = datetime(2030, 1, 1, tzinfo=UTC)
LEASE = timedelta(seconds=30)
WAIT = 5.0  # the generous bound for anything that waits


@pytest.fixture
def anyio_backend() -> str:
    """The sqlite backend runs its writer as an asyncio task."""
    return "asyncio"


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def new_job(
    queue: str = "default",
    *,
    run_at: datetime | None = None,
    key: str | None = None,
    payload_json: bytes = b'{"n":1}',
    handler: Any = "echo",
) -> NewJob:
    return NewJob(
        id=new_id(),
        queue=queue,
        handler=handler,
        payload_json=payload_json,
        run_at=run_at,
        idempotency_key=key,
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "monoq.db"


@pytest.fixture
async def backend(db_path: Path) -> AsyncIterator[SqliteBackend]:
    b = SqliteBackend(url_of(db_path))
    await b.connect()
    try:
        yield b
    finally:
        await b.aclose()


async def on_writer(backend: SqliteBackend, fn: Callable[[sqlite3.Connection], Any]) -> Any:
    """Run ``fn`` on the backend's writer connection, on its thread (tests only)."""
    thread = backend._writer_thread
    assert thread is not None
    return await thread.run(lambda: fn(thread.conn))


def plain_connection(path: Path) -> sqlite3.Connection:
    """A second, ordinary connection to the file, as another process would open it."""
    return sqlite3.connect(path, isolation_level=None, timeout=0.1)


# -- URL and options --------------------------------------------------------------------------


def test_relative_and_absolute_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert SqliteBackend("sqlite:///./monoq.db").path == tmp_path / "monoq.db"
    assert SqliteBackend("sqlite:///sub/q.db").path == tmp_path / "sub" / "q.db"
    assert SqliteBackend("sqlite:////abs/path.db").path == Path("/abs/path.db")


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:///:memory:", "redis://x"])
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^backend\.url"):
        SqliteBackend(url)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"journal": "x"}, "journal"),
        ({"synchronous": "OFF"}, "synchronous"),
        ({"busy_timeout_ms": -1}, "busy_timeout_ms"),
        ({"busy_timeout_ms": "5"}, "busy_timeout_ms"),
        ({"readers": 0}, "readers"),
        ({"readers": True}, "readers"),
        ({"sync_runs": "yes"}, "sync_runs"),
        ({"poll_interval_ms": 100, "poll_max_ms": 50}, "poll_max_ms"),
    ],
)
def test_bad_options_name_their_key(options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^backend\.options\.{key}:"):
        SqliteBackend("sqlite:///x.db", options)


def test_options_defaults_and_case() -> None:
    opts = SqliteBackend("sqlite:///x.db", {"synchronous": "normal"}).options
    assert opts.synchronous == "NORMAL"
    assert not opts.sync_runs
    assert (opts.busy_timeout_ms, opts.poll_interval_ms, opts.poll_max_ms, opts.readers) == (
        5000,
        5,
        250,
        2,
    )


def test_is_a_backend_shared_across_processes() -> None:
    backend: Backend = SqliteBackend("sqlite:///x.db")  # mypy checks the protocol here
    assert isinstance(backend, Backend)
    assert backend.capabilities.shared_across_processes
    assert not backend.capabilities.cross_process_wakeup


# -- files and pragmas ------------------------------------------------------------------------


async def test_files_are_private(backend: SqliteBackend, db_path: Path) -> None:
    await backend.enqueue([new_job()], now=T0)
    for suffix in ("", "-wal", "-shm"):
        path = db_path.with_name(db_path.name + suffix)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


async def test_wal_and_default_synchronous_full(backend: SqliteBackend, db_path: Path) -> None:
    with plain_connection(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # synchronous is per connection: ask the writer itself. 2 = FULL.
    assert await on_writer(backend, lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) == 2
    assert (
        await on_writer(backend, lambda c: c.execute("PRAGMA busy_timeout").fetchone()[0]) == 5000
    )


async def test_synchronous_normal_is_applied(db_path: Path) -> None:
    backend = SqliteBackend(url_of(db_path), {"synchronous": "NORMAL", "busy_timeout_ms": 250})
    await backend.connect()
    try:
        assert (
            await on_writer(backend, lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) == 1
        )
        busy = await on_writer(backend, lambda c: c.execute("PRAGMA busy_timeout").fetchone()[0])
        assert busy == 250
    finally:
        await backend.aclose()


async def _commit_level(backend: SqliteBackend, write: Callable[[], Any]) -> int:
    """The PRAGMA synchronous (1 NORMAL, 2 FULL) of the transaction that carries ``write()``
    (a backend call), seen by a probe that only records runs and shares that transaction: the
    writer is held busy until both wait in its queue, so it takes them as one batch."""
    writer = backend._writer
    assert writer is not None
    started, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection, fx: Any) -> None:
        started.set()
        release.wait(10)

    def probe(conn: sqlite3.Connection, fx: Any) -> int:
        return int(conn.execute("PRAGMA synchronous").fetchone()[0])

    held = asyncio.ensure_future(backend._write(hold, "hold", durable=False))
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
    call = asyncio.ensure_future(write())
    level = asyncio.ensure_future(backend._write(probe, "probe", durable=False))
    while len(writer._queue) < 2:  # both requests are queued behind the held batch
        await asyncio.sleep(0)
    release.set()
    await held
    await call
    return await level


async def test_commits_that_only_record_runs_are_not_fsynced(backend: SqliteBackend) -> None:
    """With synchronous=FULL (the default), an enqueue or an operator's change commits with an
    fsync; a claim, an outcome, a beat or a promotion alone commits at NORMAL and reaches the
    disk with the next fsynced commit. A transaction that carries both is fsynced."""
    job = new_job()
    assert await _commit_level(backend, lambda: backend.enqueue([job], now=T0)) == 2
    leases: list[Any] = []

    async def claim() -> None:
        leases.extend(await backend.claim(["default"], limit=1, lease_for=LEASE,
                                          worker_id="w", now=T0))

    assert await _commit_level(backend, claim) == 1
    assert await _commit_level(backend, lambda: backend.extend(
        leases, lease_for=LEASE, now=T0)) == 1
    assert await _commit_level(backend, lambda: backend.finish(
        [Finish(leases[0], Outcome.COMPLETED)], now=T0)) == 1
    assert await _commit_level(backend, lambda: backend.set_paused("default", True)) == 2
    later = new_job(run_at=T0 + timedelta(seconds=1))
    assert await _commit_level(backend, lambda: backend.enqueue([later], now=T0)) == 2
    assert await _commit_level(backend, lambda: backend.promote(
        now=T0 + timedelta(seconds=1), limit=10)) == 1
    # the finished job is there for every reader
    stored = await backend.get(job.id)
    assert stored is not None and stored.state is JobState.COMPLETED


async def test_sync_runs_fsyncs_every_commit(db_path: Path) -> None:
    backend = SqliteBackend(url_of(db_path), {"sync_runs": True})
    await backend.connect()
    try:
        await backend.enqueue([new_job()], now=T0)
        assert await _commit_level(backend, lambda: backend.claim(
            ["default"], limit=1, lease_for=LEASE, worker_id="w", now=T0)) == 2
    finally:
        await backend.aclose()


async def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    backend = SqliteBackend(url_of(tmp_path / "nope" / "monoq.db"))
    with pytest.raises(BackendError, match="does not exist"):
        await backend.connect()
    await backend.aclose()


# -- network filesystems ----------------------------------------------------------------------


async def test_network_filesystem_is_refused(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mounts = [("/", "ext4"), (str(db_path.parent), "nfs4"), (str(db_path.parent) + "x", "ext4")]
    monkeypatch.setattr(_fs, "read_mounts", lambda: mounts)
    backend = SqliteBackend(url_of(db_path))
    with pytest.raises(BackendError, match=r"network filesystem \(nfs4\).*WAL") as info:
        await backend.connect()
    assert not isinstance(info.value, BackendUnavailable)
    assert not await anyio.Path(db_path).exists()
    await backend.aclose()


def test_longest_mount_prefix_decides() -> None:
    mounts = [("/", "ext4"), ("/srv", "fuse.sshfs"), ("/srv/local", "ext4"), ("/data", "cifs")]
    assert _fs.filesystem_type(Path("/srv/local/q.db"), mounts) == "ext4"
    assert _fs.filesystem_type(Path("/srv/q.db"), mounts) == "fuse.sshfs"
    assert _fs.filesystem_type(Path("/database/q.db"), mounts) == "ext4"  # not under /data
    assert _fs.filesystem_type(Path("/data/q.db"), mounts) == "cifs"


def test_mount_points_with_blanks_are_unescaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("server:/x /mnt/my\\040share nfs rw 0 0\n/dev/vda / ext4 rw 0 0\n")
    monkeypatch.setattr(_fs, "MOUNTS_FILE", str(mounts))
    assert _fs.read_mounts() == [("/mnt/my share", "nfs"), ("/", "ext4")]


# -- schema versions --------------------------------------------------------------------------


async def test_new_file_gets_the_current_schema_version(
    backend: SqliteBackend, db_path: Path
) -> None:
    with plain_connection(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


async def test_newer_schema_is_refused_naming_both_versions(db_path: Path) -> None:
    first = SqliteBackend(url_of(db_path))
    await first.connect()
    await first.aclose()
    with plain_connection(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 7}")
    backend = SqliteBackend(url_of(db_path))
    with pytest.raises(BackendError, match="schema version") as info:
        await backend.connect()
    message = str(info.value)
    assert str(SCHEMA_VERSION + 7) in message
    assert f"schema version {SCHEMA_VERSION} at most" in message
    await backend.aclose()


async def test_older_schema_is_migrated(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = SqliteBackend(url_of(db_path))
    await old.connect()
    [stored] = await old.enqueue([new_job()], now=T0)
    await old.aclose()

    # Pretend this monoq is one schema version ahead, with the migration that gets there.
    monkeypatch.setattr(sqlite_schema_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setattr(
        sqlite_schema_module,
        "MIGRATIONS",
        {SCHEMA_VERSION: "ALTER TABLE jobs ADD COLUMN note TEXT;\nCREATE TABLE extra (x);"},
    )
    new = SqliteBackend(url_of(db_path))
    await new.connect()
    try:
        assert await new.get(stored.job.id) == stored.job
    finally:
        await new.aclose()
    with plain_connection(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
        columns = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
        assert "note" in columns


# schema.sql as monoq shipped it at schema version 1 (before schedules), frozen.
V1_SCHEMA = Path(__file__).with_name("schema_v1.sql")


def schema_shape(conn: sqlite3.Connection) -> dict[str, Any]:
    """Every table's columns and every index's columns and partial flag, by name."""
    shape: dict[str, Any] = {}
    for (table,) in conn.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name"
    ).fetchall():
        shape[table] = [tuple(r) for r in conn.execute(f"PRAGMA table_info({table})")]
        for index in conn.execute(f"PRAGMA index_list({table})").fetchall():
            name, unique, partial = index[1], index[2], index[4]
            columns = [tuple(r) for r in conn.execute(f"PRAGMA index_xinfo({name})")]
            shape[name] = (unique, partial, columns)
    return shape


async def test_version_1_file_is_migrated_and_keeps_its_jobs(tmp_path: Path) -> None:
    assert SCHEMA_VERSION >= 2
    old_path = tmp_path / "old.db"
    t0 = int(T0.timestamp() * 1000)
    with plain_connection(old_path) as conn:
        conn.executescript(V1_SCHEMA.read_text(encoding="utf-8"))
        conn.execute("PRAGMA user_version = 1")
        conn.executemany(
            "INSERT INTO jobs (id, queue, handler, payload, priority, state, attempt, "
            "max_retries, timeout, run_at, created_at, finished_at, idempotency_key, "
            "schedule_id, result) VALUES (?, ?, 'echo', ?, 5, ?, ?, 3, 300.0, ?, ?, ?, ?, ?, ?)",
            [
                ("01A", "reports", b'{"n":1}', "completed", 1, t0, t0, t0 + 5,
                 "cron:nightly:1", "nightly", b"1"),
                ("01B", "default", b'{"n":2}', "queued", 0, t0, t0, None, None, None, None),
            ],
        )
        conn.execute(
            "INSERT INTO attempts (job_id, attempt, worker_id, token, started_at, finished_at, "
            "outcome) VALUES ('01A', 1, 'w1', 'tok', ?, ?, 'completed')",
            (t0 + 1, t0 + 5),
        )
        conn.execute("INSERT INTO queues (name, paused) VALUES ('reports', 1), ('default', 0)")

    backend = SqliteBackend(url_of(old_path))
    await backend.connect()
    try:
        done, queued = await backend.get_many(["01A", "01B"])
        assert done is not None and queued is not None
        assert (done.state, done.schedule_id, done.result_json) == (
            JobState.COMPLETED, "nightly", b"1"
        )
        assert done.finished_at == T0 + timedelta(milliseconds=5)
        assert queued.state is JobState.QUEUED
        assert [a.worker_id for a in await backend.attempts("01A")] == ["w1"]
        # the idempotency key survived: the same fire does not enqueue twice
        dup = NewJob(id=new_id(), queue="reports", handler="echo", payload_json=b"1",
                     idempotency_key="cron:nightly:1", schedule_id="nightly")
        [again] = await backend.enqueue([dup], now=T0)
        assert not again.created and again.job.id == "01A"
        paused = {s.queue: s.paused for s in await backend.stats()}
        assert paused == {"default": False, "reports": True}
        # the new parts work on the migrated file
        assert [j.id for j in (await backend.list_jobs(JobQuery(schedule_id="nightly"))).jobs] == ["01A"]
        await backend.put_schedule(Schedule(id="nightly", handler="echo", cron="0 3 * * *"))
        assert await backend.advance_schedule("nightly", T0)
        stored = await backend.get_schedule("nightly")
        assert stored is not None and stored.last_fire_at == T0
        # the claim index, rebuilt partial by version 9, holds the job queued before it
        [lease] = await backend.claim(["default"], limit=5, lease_for=LEASE, worker_id="w2",
                                      now=T0)
        assert lease.job.id == "01B"
    finally:
        await backend.aclose()

    await _assert_schema_of_a_new_file(old_path, tmp_path)


async def _reopened_as_version(path: Path, version: int,
                              undo: Callable[[sqlite3.Connection], None]) -> SqliteBackend:
    """The closed file at ``path`` turned back into a version ``version`` file by ``undo``,
    then opened (and so migrated) again."""
    with plain_connection(path) as conn:
        undo(conn)
        conn.execute(f"PRAGMA user_version = {version}")
    backend = SqliteBackend(url_of(path))
    await backend.connect()
    return backend


async def _assert_schema_of_a_new_file(path: Path, tmp_path: Path) -> None:
    """The migrated file at ``path`` is at SCHEMA_VERSION with the schema a new file gets: the
    migrations and schema.sql describe the same schema."""
    fresh = SqliteBackend(url_of(tmp_path / "fresh.db"))
    await fresh.connect()
    await fresh.aclose()
    with plain_connection(path) as conn, plain_connection(tmp_path / "fresh.db") as new:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert schema_shape(conn) == schema_shape(new)


def _back_to_version_7(conn: sqlite3.Connection) -> None:
    """Undo what versions 8 and 9 added to a fresh file: the audit log, the partial indexes."""
    undo_version_9(conn)
    conn.execute("DROP TABLE audit")


def _back_to_version_6(conn: sqlite3.Connection) -> None:
    """Undo what versions 7 and 8 added to a fresh file: the jobs' trace context and progress,
    the audit log."""
    _back_to_version_7(conn)
    for column in ("trace_context", "progress", "progress_message", "stack_requested", "stack",
                   "stack_at"):
        conn.execute(f"ALTER TABLE jobs DROP COLUMN {column}")


async def test_version_6_jobs_gain_trace_context_and_progress(tmp_path: Path) -> None:
    assert SCHEMA_VERSION >= 7
    path = tmp_path / "v6.db"
    old = SqliteBackend(url_of(path))
    await old.connect()
    [stored] = await old.enqueue([new_job()], now=T0)
    await old.aclose()
    backend = await _reopened_as_version(path, 6, _back_to_version_6)
    try:
        job = await backend.get(stored.job.id)
        assert job == stored.job
        assert (job.trace_context, job.progress, job.progress_message) == (None, None, None)
    finally:
        await backend.aclose()
    with plain_connection(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        columns = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
        assert {"trace_context", "progress", "progress_message"} <= columns


async def test_version_7_file_gains_the_audit_log_and_keeps_its_jobs(tmp_path: Path) -> None:
    assert SCHEMA_VERSION >= 8
    path = tmp_path / "v7.db"
    old = SqliteBackend(url_of(path))
    await old.connect()
    [stored] = await old.enqueue([new_job()], now=T0)
    await old.aclose()
    with plain_connection(path) as conn:
        _back_to_version_7(conn)
        conn.execute("PRAGMA user_version = 7")
    backend = SqliteBackend(url_of(path))
    await backend.connect()
    try:
        assert await backend.get(stored.job.id) == stored.job
        entry = AuditEntry(id=new_id(), at=T0, actor="ops", source="cli", action="pause",
                           target="mail", queue="mail")
        await backend.append_audit(entry)
        assert (await backend.list_audit()).entries == [entry]
    finally:
        await backend.aclose()
    await _assert_schema_of_a_new_file(path, tmp_path)


async def test_version_8_file_gets_partial_indexes_and_keeps_its_jobs(tmp_path: Path) -> None:
    """Version 9 rebuilds the claim index and splits the due-time index by state: a version-8
    file's queued, scheduled and running jobs are claimed, promoted and finished as before."""
    assert SCHEMA_VERSION >= 9
    path = tmp_path / "v8.db"
    old = SqliteBackend(url_of(path))
    await old.connect()
    ready, running = new_job(), new_job("other")
    later = new_job(run_at=T0 + timedelta(seconds=5))
    await old.enqueue([ready, running, later], now=T0)
    [lease] = await old.claim(["other"], limit=1, lease_for=LEASE, worker_id="w", now=T0)
    await old.aclose()
    backend = await _reopened_as_version(path, 8, undo_version_9)
    try:
        [claimed] = await backend.claim(["default"], limit=5, lease_for=LEASE, worker_id="w",
                                        now=T0)
        assert claimed.job.id == ready.id
        assert await backend.next_wakeup(now=T0) == T0 + timedelta(seconds=5)
        assert await backend.promote(now=T0 + timedelta(seconds=5), limit=10) == 1
        assert await backend.finish([Finish(lease, Outcome.COMPLETED)], now=T0) == [True]
        [attempt] = await backend.attempts(running.id)
        assert attempt.finished_at == T0
    finally:
        await backend.aclose()
    await _assert_schema_of_a_new_file(path, tmp_path)


async def test_version_5_schedule_times_become_microseconds(tmp_path: Path) -> None:
    """Schema version 6 stores a schedule's times in epoch microseconds (they were whole
    milliseconds, so a put_schedule lost the microseconds): the migration scales the stored
    ones, which then read back as the same instants."""
    assert SCHEMA_VERSION >= 6
    path = tmp_path / "v5.db"
    fresh = SqliteBackend(url_of(path))
    await fresh.connect()
    await fresh.aclose()
    t0 = int(T0.timestamp() * 1000)
    with plain_connection(path) as conn:  # what a version 5 file holds: milliseconds
        conn.execute(
            "INSERT INTO schedules (id, handler, cron, every, timezone, payload, queue, "
            "priority, max_retries, timeout, enabled, overlap, misfire, origin, created_at, "
            "updated_at, last_fire_at) VALUES ('nightly', 'echo', '0 3 * * *', NULL, 'UTC', "
            "X'6e756c6c', 'default', 5, NULL, NULL, 1, 'allow', 'skip', 'api', ?, ?, NULL)",
            (t0, t0 + 1),
        )
        conn.execute("INSERT INTO schedules (id, handler, cron, every, timezone, payload, "
                     "queue, priority, max_retries, timeout, enabled, overlap, misfire, origin, "
                     "created_at, updated_at, last_fire_at) SELECT 'hourly', handler, NULL, "
                     "3600.0, timezone, payload, queue, priority, max_retries, timeout, enabled, "
                     "overlap, misfire, origin, NULL, NULL, ? FROM schedules", (t0 + 2,))
        _back_to_version_6(conn)
        conn.execute("PRAGMA user_version = 5")

    backend = SqliteBackend(url_of(path))
    await backend.connect()
    try:
        hourly, nightly = await backend.list_schedules()
        assert (hourly.id, nightly.id) == ("hourly", "nightly")
        assert nightly.created_at == T0
        assert nightly.updated_at == T0 + timedelta(milliseconds=1)
        assert nightly.last_fire_at is None
        assert (hourly.created_at, hourly.updated_at) == (None, None)
        assert hourly.last_fire_at == T0 + timedelta(milliseconds=2)
        # later than the stored time by one microsecond: it moves, and keeps the microsecond
        later = T0 + timedelta(milliseconds=2, microseconds=1)
        assert not await backend.advance_schedule("hourly", T0 + timedelta(milliseconds=2))
        assert await backend.advance_schedule("hourly", later)
        stored = await backend.get_schedule("hourly")
        assert stored is not None and stored.last_fire_at == later
    finally:
        await backend.aclose()
    with plain_connection(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


async def test_foreign_database_is_refused(db_path: Path) -> None:
    with plain_connection(db_path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER)")
    backend = SqliteBackend(url_of(db_path))
    with pytest.raises(BackendError, match="not a monoq database"):
        await backend.connect()
    await backend.aclose()


# -- group commit -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def writer_held(backend: SqliteBackend) -> AsyncIterator[Callable[[int], Any]]:
    """Keep the writer thread busy until the block has queued its requests, so that they go
    into one transaction whatever the threads' timing: the block awaits ``queued(n)`` once it
    has started ``n`` writes."""
    writer, thread = backend._writer, backend._writer_thread
    assert writer is not None and thread is not None
    gate = threading.Event()
    thread.submit(gate.wait)

    async def queued(n: int) -> None:
        with anyio.fail_after(WAIT):
            while len(writer._queue) < n:
                await anyio.lowlevel.checkpoint()

    try:
        yield queued
    finally:
        gate.set()


def count_batches(backend: SqliteBackend, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the size of every transaction the writer runs."""
    writer = backend._writer
    assert writer is not None
    sizes: list[int] = []
    run_batch = writer._run_batch

    def spy(batch: list[Any]) -> None:
        sizes.append(len(batch))
        run_batch(batch)

    monkeypatch.setattr(writer, "_run_batch", spy)
    return sizes


async def test_concurrent_single_enqueues_are_group_committed(
    backend: SqliteBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = count_batches(backend, monkeypatch)
    jobs = [new_job() for _ in range(500)]
    answers: dict[str, bool] = {}

    async def one(job: NewJob) -> None:
        [answer] = await backend.enqueue([job], now=T0)
        answers[answer.job.id] = answer.created

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for job in jobs:
                tg.start_soon(one, job)

    assert answers == {job.id: True for job in jobs}
    stored = await backend.get_many([job.id for job in jobs])
    assert [j.id if j else None for j in stored] == [job.id for job in jobs]
    [stats] = await backend.stats(["default"])
    assert sum(stats.counts.values()) == 500  # each job stored once
    assert sum(sizes) == 500
    assert len(sizes) < 100  # grouped, not one transaction each


async def test_a_failing_request_does_not_poison_its_group(
    backend: SqliteBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = count_batches(backend, monkeypatch)
    good = [new_job() for _ in range(20)]
    bad = new_job(handler=None)  # NOT NULL constraint: fails inside the transaction
    errors: list[BaseException] = []

    async def one(job: NewJob) -> None:
        try:
            await backend.enqueue([job], now=T0)
        except BackendError as exc:
            errors.append(exc)

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg, writer_held(backend) as queued:
            for job in [*good[:10], bad, *good[10:]]:
                tg.start_soon(one, job)
            await queued(21)

    assert sizes == [21]  # all in one transaction
    [error] = errors
    assert not isinstance(error, BackendUnavailable)
    assert isinstance(error.__cause__, sqlite3.IntegrityError)
    assert await backend.get(bad.id) is None
    assert None not in await backend.get_many([job.id for job in good])


async def test_a_batch_enqueue_is_all_or_nothing(backend: SqliteBackend) -> None:
    jobs = [new_job(), new_job(handler=None), new_job()]
    with pytest.raises(BackendError):
        await backend.enqueue(jobs, now=T0)
    assert await backend.get_many([job.id for job in jobs]) == [None, None, None]


async def test_completions_with_results_that_are_not_utf8_are_stored_as_given(
        backend: SqliteBackend) -> None:
    """Completions of one batch are applied together with their results sent as text; a
    result that is not UTF-8 (no JSON, but bytes all the same) takes the one-by-one path."""
    jobs = await backend.enqueue([new_job(), new_job(), new_job()], now=T0)
    leases = await backend.claim(["default"], limit=3, lease_for=timedelta(seconds=30),
                                 worker_id="w", now=T0)
    results = {leases[0].job_id: b"\xff\xfe", leases[1].job_id: b'"ok"', leases[2].job_id: None}
    answers = await backend.finish(
        [Finish(lease, Outcome.COMPLETED, result_json=results[lease.job_id]) for lease in leases],
        now=T0)
    assert answers == [True, True, True]
    stored = await backend.get_many([answer.job.id for answer in jobs])
    assert {job.id: job.result_json for job in stored if job} == results
    assert {job.state for job in stored if job} == {JobState.COMPLETED}


async def test_idempotency_is_atomic_across_instances(db_path: Path) -> None:
    first = SqliteBackend(url_of(db_path))
    second = SqliteBackend(url_of(db_path))
    await first.connect()
    await second.connect()
    results: list[bool] = []

    async def one(backend: SqliteBackend) -> None:
        for _ in range(20):
            [answer] = await backend.enqueue([new_job(key="once")], now=T0)
            results.append(answer.created)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(one, first)
            tg.start_soon(one, second)
        assert results.count(True) == 1
        page = await first.list_jobs(JobQuery())
        assert len(page.jobs) == 1
    finally:
        await first.aclose()
        await second.aclose()


async def test_same_id_twice_answers_the_stored_job(backend: SqliteBackend) -> None:
    job = new_job()
    [first] = await backend.enqueue([job], now=T0)
    [again] = await backend.enqueue([job], now=T0 + timedelta(seconds=1))
    assert first.created
    assert not again.created
    assert again.job == first.job


async def test_claim_orders_by_priority_run_at_id(backend: SqliteBackend) -> None:
    jobs = []
    for i, priority in enumerate([5, 0, 9, 0, 5, 5]):
        job = NewJob(id=new_id(), queue="q", handler="h", payload_json=b"1", priority=priority)
        jobs.append(job)
        await backend.enqueue([job], now=T0 + timedelta(milliseconds=i))
    leases = await backend.claim(["q"], limit=10, lease_for=LEASE, worker_id="w", now=T0)
    expected = sorted(jobs, key=lambda j: (j.priority, jobs.index(j)))
    assert [lease.job.id for lease in leases] == [job.id for job in expected]
    assert len({lease.token for lease in leases}) == len(leases)


@pytest.mark.parametrize("by_queue", [False, True], ids=["all-queues", "one-queue"])
async def test_count_finished_seeks_the_finish_time_index(
    backend: SqliteBackend, db_path: Path, by_queue: bool
) -> None:
    """No index was added for count_finished: jobs_finished (state, finished_at) bounds it by
    the window. Without ``+queue`` the one-queue form would walk jobs_queue_state_id instead,
    reading every retained terminal job of the queue."""
    sql = sqlite_backend_module.count_finished_sql(by_queue=by_queue)
    params: list[Any] = [*sqlite_backend_module._TERMINAL, 0, *(["q"] if by_queue else [])]
    with plain_connection(db_path) as conn:
        plan = " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert "jobs_finished (state=? AND finished_at>?)" in plan, plan
    assert "jobs_queue_state_id" not in plan, plan
    if not by_queue:
        assert "COVERING INDEX jobs_finished" in plan, plan


async def test_the_hot_writes_walk_partial_indexes(backend: SqliteBackend, db_path: Path
                                                   ) -> None:
    """A job is in jobs_claim only while queued and in jobs_scheduled / jobs_retrying only while
    waiting there, so a finish touches none of them; the statements that find jobs in those
    states must walk those indexes, never the table or an index of every job."""
    with plain_connection(db_path) as conn:

        def plan(sql: str, params: tuple[Any, ...]) -> str:
            return " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))

        claim = plan(sqlite_backend_module._CLAIM, (0, "w", 0, "q", 5))
        assert "COVERING INDEX jobs_claim (queue=? AND state=?)" in claim, claim
        assert "TEMP B-TREE" not in claim, claim
        promote = dict(sqlite_backend_module._PROMOTE)
        for state in ("scheduled", "retrying"):
            found = plan(promote[state], (0, 5))
            assert f"INDEX jobs_{state} (state=? AND run_at<?)" in found, found
        total = plan(sqlite_backend_module._WAITING_TOTAL, (5,))
        for index in ("jobs_claim", "jobs_scheduled", "jobs_retrying"):
            assert f"COVERING INDEX {index}" in total, total
        assert "jobs_queue_state_id" not in total, total
        for sql in ("SELECT min(run_at) FROM jobs WHERE state = 'scheduled'",
                    "SELECT min(run_at) FROM jobs WHERE state = 'retrying'"):
            assert "COVERING INDEX jobs_" in plan(sql, ()), plan(sql, ())


# -- locked database and full disk ------------------------------------------------------------


async def test_locked_database_is_unavailable_then_recovers(db_path: Path) -> None:
    backend = SqliteBackend(url_of(db_path), {"busy_timeout_ms": 100})
    await backend.connect()
    other = plain_connection(db_path)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        job = new_job()
        with pytest.raises(BackendUnavailable, match="locked") as info:
            await backend.enqueue([job], now=T0)
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        assert await backend.get(job.id) is None  # reads still work in WAL mode
        other.execute("ROLLBACK")

        [answer] = await backend.enqueue([job], now=T0)
        assert answer.created
        assert await backend.get(job.id) == answer.job
    finally:
        other.close()
        await backend.aclose()


async def test_full_disk_is_unavailable_then_recovers(
    backend: SqliteBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # max_page_count makes SQLite answer SQLITE_FULL exactly as a full disk does.
    pages = await on_writer(backend, lambda c: c.execute("PRAGMA page_count").fetchone()[0])
    await on_writer(backend, lambda c: c.execute(f"PRAGMA max_page_count = {pages}"))
    big = new_job(payload_json=b'"' + b"x" * 200_000 + b'"')
    small = [new_job() for _ in range(3)]
    outcomes: dict[str, BaseException | None] = {}
    sizes = count_batches(backend, monkeypatch)

    async def one(job: NewJob) -> None:
        try:
            await backend.enqueue([job], now=T0)
        except BackendError as exc:
            outcomes[job.id] = exc
        else:
            outcomes[job.id] = None

    async with anyio.create_task_group() as tg, writer_held(backend) as queued:
        for job in [small[0], big, *small[1:]]:
            tg.start_soon(one, job)
        await queued(4)

    assert sizes == [4]  # one group: the big job hit SQLITE_FULL after small[0] had run

    error = outcomes[big.id]
    assert isinstance(error, BackendUnavailable)
    assert "full" in str(error)
    assert await backend.get(big.id) is None  # never half-written
    # The requests that fit were retried without the one that filled the disk.
    assert [outcomes[job.id] for job in small] == [None, None, None]
    assert None not in await backend.get_many([job.id for job in small])

    await on_writer(backend, lambda c: c.execute("PRAGMA max_page_count = 1073741823"))
    [answer] = await backend.enqueue([big], now=T0)
    assert answer.created


async def test_closed_backend_is_unavailable(db_path: Path) -> None:
    backend = SqliteBackend(url_of(db_path))
    await backend.connect()
    await backend.connect()  # idempotent
    await backend.aclose()
    await backend.aclose()  # idempotent
    with pytest.raises(BackendUnavailable):
        await backend.enqueue([new_job()], now=T0)
    with pytest.raises(BackendUnavailable):
        await backend.ping()


# -- wake-ups ---------------------------------------------------------------------------------
# A wake-up by another instance (polling) is a conformance test (monoq.testing.suite.wakeups).

NO_POLL = {"poll_interval_ms": 600_000, "poll_max_ms": 600_000}


def _after_first_look(backend: SqliteBackend, monkeypatch: pytest.MonkeyPatch) -> anyio.Event:
    """An event set once a waiter's first read has answered: from then on it waits on its
    wake-up event (no await lies between the two), so only a wake-up can end its wait."""
    looked = anyio.Event()
    read = backend._read

    async def read_then_tell(*args: Any, **kwargs: Any) -> Any:
        try:
            return await read(*args, **kwargs)
        finally:
            looked.set()

    monkeypatch.setattr(backend, "_read", read_then_tell)
    return looked


async def test_same_process_enqueue_wakes_a_waiter_without_polling(
        db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = SqliteBackend(url_of(db_path), NO_POLL)
    await backend.connect()
    try:
        assert await backend.claim(["q"], limit=1, lease_for=LEASE, worker_id="w", now=T0) == []
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                looked = _after_first_look(backend, monkeypatch)
                tg.start_soon(lambda: backend.wait_for_jobs(["q", "other"], timeout=600))
                await looked.wait()  # it found nothing: only the enqueue can wake it now
                await backend.enqueue([new_job("q")], now=T0)
    finally:
        await backend.aclose()


async def test_same_process_delayed_enqueue_wakes_wait_for_changes(
        db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = SqliteBackend(url_of(db_path), NO_POLL)
    await backend.connect()
    try:
        assert await backend.next_wakeup(now=T0) is None
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                looked = _after_first_look(backend, monkeypatch)
                tg.start_soon(lambda: backend.wait_for_changes(timeout=600))
                await looked.wait()
                later = T0 + timedelta(seconds=10)
                await backend.enqueue([new_job(run_at=later)], now=T0)
        assert await backend.next_wakeup(now=T0) == later
    finally:
        await backend.aclose()


async def test_wait_for_jobs_ignores_paused_queues(db_path: Path) -> None:
    backend = SqliteBackend(url_of(db_path), {"poll_interval_ms": 10, "poll_max_ms": 10})
    await backend.connect()
    try:
        await backend.set_paused("default", True)
        await backend.enqueue([new_job()], now=T0)
        with anyio.move_on_after(0.2) as scope:
            await backend.wait_for_jobs(["default"], timeout=600)
        assert scope.cancelled_caught  # a paused queue's job is not work for this worker
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: backend.wait_for_jobs(["default"], timeout=600))
                await anyio.wait_all_tasks_blocked()
                await backend.set_paused("default", False)
    finally:
        await backend.aclose()


def test_idle_poll_backs_off_within_bounds() -> None:
    backend = SqliteBackend("sqlite:///x.db", {"poll_interval_ms": 50, "poll_max_ms": 500})
    backend._last_activity = time.monotonic()
    assert backend._poll_delay() == pytest.approx(0.05)
    backend._last_activity = time.monotonic() - 2.0
    assert backend._poll_delay() == pytest.approx(0.2, abs=0.01)
    backend._last_activity = time.monotonic() - 3600
    assert backend._poll_delay() == pytest.approx(0.5)


async def test_a_schedule_put_by_another_process_wakes_its_schedulers(db_path: Path) -> None:
    from monoq.core.models import Schedule

    editor = SqliteBackend(url_of(db_path))
    scheduler = SqliteBackend(url_of(db_path), {"poll_interval_ms": 10, "poll_max_ms": 50})
    await editor.connect()
    await scheduler.connect()
    try:
        await scheduler.next_wakeup(now=T0)
        await scheduler.wait_for_changes(timeout=0.05)  # has seen the (empty) schedules
        with anyio.fail_after(WAIT):  # far below the 600 s it would otherwise sleep
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: scheduler.wait_for_changes(timeout=600))
                await anyio.sleep(0.1)
                await editor.put_schedule(Schedule(id="s", handler="echo", every=60,
                                                   created_at=T0, updated_at=T0))
    finally:
        await editor.aclose()
        await scheduler.aclose()


async def test_a_schedule_put_right_after_the_first_read_wakes_the_first_wait(
    db_path: Path,
) -> None:
    """At start-up a scheduler reads the schedules, then waits: a schedule put in between
    (here by another process, before the wait even began) must wake that very first wait."""
    editor = SqliteBackend(url_of(db_path))
    scheduler = SqliteBackend(url_of(db_path), {"poll_interval_ms": 10, "poll_max_ms": 50})
    await editor.connect()
    await scheduler.connect()
    try:
        assert await scheduler.list_schedules() == []
        await editor.put_schedule(Schedule(id="s", handler="echo", every=60,
                                           created_at=T0, updated_at=T0))
        with anyio.fail_after(WAIT):  # far below the 600 s it would otherwise sleep
            await scheduler.wait_for_changes(timeout=600)
    finally:
        await editor.aclose()
        await scheduler.aclose()
