"""Connections on their own threads, error translation, and the group-committing writer.

Each sqlite3 connection lives on one dedicated thread, and a whole unit of work (a read
snapshot, or a group-commit batch of many write requests) runs there in a single hop. That is
what aiosqlite does per *statement*; doing it per *batch* is what makes group commit pay off.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, Generic, TypeVar

import attrs

from monoq.errors import BackendError, BackendUnavailable, MonoqError

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Primary result codes that say something about the environment (lock, disk, memory), not about
# the request: the same request may succeed later. SQLite may also roll back the whole
# transaction on these, so the writer restarts its batch without the request that hit one.
_ENVIRONMENTAL: Final = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)
# Requests taken into one transaction at most, and their total weight (jobs or items they
# touch), to bound how long one transaction holds the write lock. A single request heavier
# than the limit still runs, alone.
MAX_BATCH: Final = 512
MAX_BATCH_WEIGHT: Final = 5000
# After this many environmental failures in one batch, the rest of the batch fails too: the
# disk is full or the file is locked for everybody, so retrying each request is pointless.
MAX_ENV_FAILURES: Final = 3


def _primary_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def is_environmental(exc: sqlite3.Error) -> bool:
    """True when ``exc`` comes from the lock, the disk or memory rather than the statement."""
    return _primary_code(exc) in _ENVIRONMENTAL


def translate(exc: sqlite3.Error, what: str, busy_timeout_ms: int) -> BackendError:
    """A monoq error for a driver error, with ``exc`` as its cause (never raised here)."""
    code = _primary_code(exc)
    err: BackendError
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        err = BackendUnavailable(
            f"sqlite: {what}: the database is locked by another connection and stayed busy "
            f"past busy_timeout_ms={busy_timeout_ms}; the call changed nothing, retry later"
        )
    elif code == sqlite3.SQLITE_FULL:
        err = BackendUnavailable(
            f"sqlite: {what}: the disk (or the database size limit) is full; the call changed "
            "nothing, retry once space is freed"
        )
    elif code in _ENVIRONMENTAL:
        err = BackendUnavailable(f"sqlite: {what}: {exc}; the call changed nothing, retry later")
    else:
        err = BackendError(f"sqlite: {what}: {exc}")
    err.__cause__ = exc
    return err


class SqliteThread:
    """One sqlite3 connection, used only from its own thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: sqlite3.Connection | None = None
        self.inflight = 0

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection (only to be touched from this thread)."""
        if self._conn is None:
            raise BackendError(f"sqlite: connection {self.name} is not open")
        return self._conn

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on this connection's thread and answer its result."""
        self.inflight += 1
        try:
            return await asyncio.wrap_future(self._executor.submit(fn, *args))
        finally:
            self.inflight -= 1

    def submit(self, fn: Callable[[], object]) -> None:
        """Queue ``fn()`` on this thread without waiting for it (it reports by itself)."""
        self._executor.submit(fn)

    async def open(self, path: str, setup: Callable[[sqlite3.Connection], None]) -> None:
        """Open the connection on its thread and run ``setup`` (pragmas) on it."""

        def _open() -> None:
            # isolation_level=None: the module never opens transactions behind our back; every
            # transaction here is an explicit BEGIN / BEGIN IMMEDIATE.
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            try:
                setup(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn

        await self.run(_open)

    async def close(self) -> None:
        """Close the connection and stop the thread. Safe to call twice."""

        def _close() -> None:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                conn.close()

        with contextlib.suppress(RuntimeError):  # the executor was already shut down
            await self.run(_close)
        self._executor.shutdown(wait=False)


@attrs.define
class Effects:
    """What a write did beyond its own rows: queues with claimable work and scheduler changes
    (for waiters, after the commit); how many jobs entered or left each (queue, state)
    (``moved``) and the runs that ended (``ended``), both written to their tables once per
    transaction, before the commit."""

    ready: set[str] = attrs.field(factory=set)
    changes: bool = False
    moved: collections.Counter[tuple[str, str]] = attrs.field(factory=collections.Counter)
    # ended runs by (queue, epoch minute): [completed, failed, dead], for the throughput rows
    ended: dict[tuple[str, int], list[int]] = attrs.field(factory=dict)

    def move(self, queue: str, old: str | None, new: str | None, n: int = 1) -> None:
        """Note that ``n`` jobs of ``queue`` left state ``old`` for ``new`` (None: the job was
        created, or deleted)."""
        if n <= 0 or old == new:
            return
        if old is not None:
            self.moved[(queue, old)] -= n
        if new is not None:
            self.moved[(queue, new)] += n

    def end(self, queue: str, minute: int, counts: tuple[int, int, int]) -> None:
        """Note one ended run of ``queue`` in epoch minute ``minute``."""
        if any(counts):
            row = self.ended.setdefault((queue, minute), [0, 0, 0])
            for i, n in enumerate(counts):
                row[i] += n

    def merge(self, other: Effects) -> None:
        """Add ``other`` to this one."""
        self.ready |= other.ready
        self.changes = self.changes or other.changes
        self.moved.update(other.moved)
        for (queue, minute), counts in other.ended.items():
            self.end(queue, minute, (counts[0], counts[1], counts[2]))


WriteFn = Callable[[sqlite3.Connection, Effects], T]


@attrs.define(eq=False)
class _Request(Generic[T]):
    fn: WriteFn[T]
    what: str
    future: asyncio.Future[T]
    weight: int
    durable: bool
    value: Any = None
    error: BaseException | None = None
    effects: Effects | None = None  # set when the request ran and stayed in the transaction


class GroupWriter:
    """The one writer of a backend: runs queued write requests in shared transactions.

    Every request that is waiting when the writer becomes free goes into the same
    ``BEGIN IMMEDIATE … COMMIT`` (up to ``MAX_BATCH``), each inside its own SAVEPOINT, so a
    request that fails is rolled back alone and fails alone while the others commit. Callers
    are answered only after the COMMIT, so an answered write is durable (per ``synchronous``).

    The writer thread takes batches itself: a request is appended to a queue, and when the
    thread is idle the submit hands it one run of ``_drain`` (a plain executor job, no asyncio
    task in between); the run takes batch after batch until the queue is empty, and answers
    each batch's callers with one ``call_soon_threadsafe``. One awaited write thus costs one
    hop to the thread and one back.
    """

    def __init__(
        self,
        thread: SqliteThread,
        *,
        busy_timeout_ms: int,
        on_commit: Callable[[Effects], None],
        before_commit: Callable[[sqlite3.Connection, Effects], None] | None = None,
        synchronous: str = "FULL",
        runs_synchronous: str | None = None,
    ) -> None:
        self._thread = thread
        # The connection's PRAGMA synchronous for a transaction with a durable request, and
        # for one whose requests all only record runs (None: the same); the level it has now.
        self._synchronous = synchronous
        self._runs_synchronous = runs_synchronous or synchronous
        self._level = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._on_commit = on_commit
        self._before_commit = before_commit
        self._queue: collections.deque[_Request[Any]] = collections.deque()
        self._lock = threading.Lock()  # guards _queue and _draining across the two threads
        self._draining = False  # a run of _drain is scheduled or running on the thread
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False

    def start(self) -> None:
        """Bind the writer to the running loop; from now on it accepts requests."""
        self._closing = False
        self._loop = asyncio.get_running_loop()

    async def submit(self, fn: WriteFn[T], what: str, weight: int = 1, *,
                     durable: bool = True) -> T:
        """Run ``fn(conn, effects)`` inside the next write transaction and answer its result.

        ``fn`` runs on the writer thread; it raises to fail (and roll back) only itself.
        ``weight`` is roughly how many rows it writes, to size transactions. A request that
        is not ``durable`` only records runs (claims, outcomes, beats): a transaction made of
        such requests alone commits at ``runs_synchronous``.
        """
        loop = self._loop
        if loop is None or self._closing:
            raise BackendUnavailable(f"sqlite: {what}: the backend is not connected")
        future: asyncio.Future[T] = loop.create_future()
        request = _Request(fn, what, future, max(1, weight), durable)
        with self._lock:
            self._queue.append(request)
            start = not self._draining
            self._draining = True
        if start:
            try:
                self._thread.submit(self._drain)
            except RuntimeError:  # the thread was shut down under us
                with self._lock:
                    self._draining = False
                    self._queue.clear()
                raise BackendUnavailable(
                    f"sqlite: {what}: the backend is not connected") from None
        return await future

    async def stop(self, timeout: float = 5.0) -> None:
        """Let queued requests finish (up to ``timeout`` s), then stop taking requests."""
        if self._loop is None:
            return
        self._closing = True
        try:
            # The thread runs jobs in order: this one ends after the last batch was taken.
            await asyncio.wait_for(self._thread.run(lambda: None), timeout)
        except TimeoutError:
            logger.warning("sqlite: the writer did not finish its queue within %.1f s", timeout)
        except RuntimeError:  # the thread is already shut down
            pass
        finally:
            with self._lock:
                left = list(self._queue)
                self._queue.clear()
            for req in left:
                if not req.future.done():
                    req.future.set_exception(
                        BackendUnavailable(f"sqlite: {req.what}: the backend was closed")
                    )
            self._loop = None

    def _take(self) -> list[_Request[Any]]:
        """The next batch from the queue (on the writer thread); empty ends the run."""
        with self._lock:
            batch: list[_Request[Any]] = []
            weight = 0
            while self._queue and len(batch) < MAX_BATCH:
                if batch and weight + self._queue[0].weight > MAX_BATCH_WEIGHT:
                    break
                req = self._queue.popleft()
                if not req.future.cancelled():  # the caller gave up before we started
                    batch.append(req)
                    weight += req.weight
            if not batch and not self._queue:
                self._draining = False
            return batch

    def _drain(self) -> None:
        """On the writer thread: run batches until the queue is empty."""
        while True:
            batch = self._take()
            if not batch:
                with self._lock:
                    if not self._draining:
                        return
                continue
            try:
                self._run_batch(batch)
            except Exception as exc:  # a bug in the batch runner fails its batch, not the thread
                logger.exception("sqlite writer batch failed")
                for req in batch:
                    if req.error is None:
                        req.error = BackendError(f"sqlite: {req.what}: {exc}")
                        req.effects = None
            loop = self._loop
            if loop is None:
                continue
            try:
                loop.call_soon_threadsafe(self._answer, batch)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                continue

    def _answer(self, batch: list[_Request[Any]]) -> None:
        """On the loop: answer a committed batch's callers, then wake waiters."""
        merged = Effects()
        for req in batch:
            if req.error is None and req.effects is not None:
                merged.merge(req.effects)
            if req.future.done():
                continue
            if req.error is not None:
                req.future.set_exception(req.error)
            else:
                req.future.set_result(req.value)
        self._on_commit(merged)

    # -- on the writer thread ------------------------------------------------------------------

    def _fail(self, req: _Request[Any], exc: sqlite3.Error) -> None:
        req.error = translate(exc, req.what, self._busy_timeout_ms)
        req.effects = None

    def _run_batch(self, batch: list[_Request[Any]]) -> None:
        conn = self._thread.conn
        pending = batch
        env_failures = 0
        while pending:
            restart = self._run_round(conn, pending)
            if restart is None:
                return
            env_failures += 1
            pending = [r for r in pending if r.error is None]
            for req in pending:  # their work was rolled back with the transaction
                req.value = None
                req.effects = None
            if env_failures >= MAX_ENV_FAILURES:
                for req in pending:
                    self._fail(req, restart)
                return

    def _run_round(
        self, conn: sqlite3.Connection, pending: list[_Request[Any]]
    ) -> sqlite3.Error | None:
        """Run ``pending`` in one transaction; answer the error that forces a restart, if any."""
        level = (self._synchronous if any(req.durable for req in pending)
                 else self._runs_synchronous)
        try:
            if level != self._level:  # outside a transaction, for the COMMIT below
                conn.execute(f"PRAGMA synchronous = {level}")
                self._level = level
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            for req in pending:
                self._fail(req, exc)
            return None
        # A request alone in its transaction needs no savepoint: when it fails, the transaction
        # is rolled back instead (two statements fewer for each single enqueue, claim or ack).
        alone = len(pending) == 1
        try:
            for req in pending:
                if not alone:
                    conn.execute("SAVEPOINT req")
                effects = Effects()
                try:
                    req.value = req.fn(conn, effects)
                except sqlite3.Error as exc:
                    if is_environmental(exc) or not conn.in_transaction:
                        self._fail(req, exc)
                        _rollback(conn)
                        return exc
                    self._fail(req, exc)
                except MonoqError as exc:
                    req.error = exc
                except Exception as exc:  # noqa: BLE001 - a bug fails its own request only
                    err = BackendError(f"sqlite: {req.what}: {exc!r}")
                    err.__cause__ = exc
                    req.error = err
                else:
                    req.effects = effects
                if alone:
                    if req.error is not None:
                        _rollback(conn)
                        return None
                    continue
                if req.error is not None:
                    conn.execute("ROLLBACK TO req")
                conn.execute("RELEASE req")
            if self._before_commit is not None:
                # What the requests that stayed in the transaction did, written once for all
                # of them: a failure here fails the whole transaction, like a failed COMMIT.
                done = Effects()
                for req in pending:
                    if req.effects is not None:
                        done.merge(req.effects)
                self._before_commit(conn, done)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            for req in pending:
                if req.error is None:
                    self._fail(req, exc)
            return None
        except Exception as exc:  # noqa: BLE001 - a bug in before_commit: nothing stays
            _rollback(conn)
            for req in pending:
                if req.error is None:
                    req.error = BackendError(f"sqlite: {req.what}: {exc!r}")
                    req.effects = None
            return None
        return None


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            logger.warning("sqlite: rollback failed", exc_info=True)


class ReaderPool:
    """Reader connections; each read runs as one snapshot on the least busy of them."""

    def __init__(self, threads: list[SqliteThread], *, busy_timeout_ms: int) -> None:
        self.threads = threads
        self._busy_timeout_ms = busy_timeout_ms

    async def read(self, fn: Callable[[sqlite3.Connection], T], what: str) -> T:
        """Run ``fn(conn)`` inside one read transaction (a consistent snapshot)."""
        if not self.threads:
            raise BackendUnavailable(f"sqlite: {what}: the backend is not connected")
        thread = min(self.threads, key=lambda t: t.inflight)
        return await thread.run(self._run, thread, fn, what)

    def _run(self, thread: SqliteThread, fn: Callable[[sqlite3.Connection], T], what: str) -> T:
        conn = thread.conn
        try:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                _rollback(conn)
        except sqlite3.Error as exc:
            raise translate(exc, what, self._busy_timeout_ms) from exc
