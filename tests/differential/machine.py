"""The differential state machine: random sequences of protocol calls, sent in lock-step to the
reference model (``model.py``) and to the memory, SQLite and Redis backends, on one fake clock.

Every answer must be the model's, order included. Only what the protocol leaves free is
normalised: lease tokens are random, so a lease is compared by the job it leases (and a token a
backend answers again, as ``expired_leases`` does, must name the lease that backend handed out
for the same job); where the protocol lets a backend choose among more than ``limit`` candidates
(``promote``, ``purge``), the counts are compared and the step is then completed on all of them.
Ids are made here (``NewJob.id`` is the client's), so runs are reproducible.

``Harness`` owns the event loop, the SQLite files and the Redis connection; one machine is one
example on fresh storage. The Redis backend enqueues in chunks of ``REDIS_BATCH`` jobs, so that
batches of a few jobs already take the path that splits large batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import shutil
import tempfile
from collections.abc import Callable, Coroutine, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs
import redis.asyncio as aioredis
from hypothesis import configuration, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from monoq.backends.memory import MemoryBackend
from monoq.backends.redis import RedisBackend
from monoq.backends.sqlite import SqliteBackend
from monoq.core.backend import Backend
from monoq.core.models import (
    ErrorInfo,
    Finish,
    JobQuery,
    JobState,
    Lease,
    MisfirePolicy,
    NewJob,
    Outcome,
    OverlapPolicy,
    Page,
    QueueStats,
    Schedule,
    WorkerInfo,
)
from tests.conftest import start_redis_server
from tests.differential.model import Model

T = TypeVar("T")

T0: Final = datetime(2030, 1, 1, tzinfo=UTC)
MS: Final = timedelta(milliseconds=1)
US: Final = timedelta(microseconds=1)
REDIS_BATCH: Final = 2
NAMES: Final = ("memory", "sqlite", "redis")

QUEUES: Final = ("a", "b", "c")
ASKED_QUEUES: Final = (*QUEUES, "zz")  # "zz" is never enqueued into or paused
STATES: Final = tuple(JobState)
HANDLERS: Final = ("h1", "h2")
KEYS: Final = (None, None, "k1", "k2")
SCHEDULE_IDS: Final = ("s1", "s2")
WORKERS: Final = ("w1", "w2", "w3")
ERRORS: Final = (
    None,
    ErrorInfo("Boom", "x"),
    ErrorInfo("Boom", ""),  # raise Boom(): an empty message
    ErrorInfo("Other", "y", "Traceback ..."),
    ErrorInfo("Other", "z", ""),
)
RESULTS: Final = (None, b"1", b'{"ok": true}')
# Times a schedule may carry: microseconds included (put_schedule stores every field as given).
SCHEDULE_TIMES: Final = (
    None,
    T0,
    T0 + 1500 * US,
    T0 + timedelta(seconds=90, microseconds=654_321),
    T0 - timedelta(days=3, microseconds=7),
)

queue_st = st.sampled_from(("a", "a", *QUEUES))  # "a" twice as often: claims find more work
asked_queue_st = st.sampled_from(("a", *ASKED_QUEUES))
claim_limit_st = st.sampled_from((1, 1, 2, 2, 3, 4, 0, -1))
pick_st = st.integers(0, 1000)  # an index into what exists, taken modulo its length
delay_st = st.sampled_from((-60_000, -1, 0, 1, 999, 1000, 30_000, 3_600_000))  # ms from now
states_st = st.one_of(st.none(), st.sets(st.sampled_from(STATES), max_size=3).map(sorted))


def job_spec() -> st.SearchStrategy[tuple[Any, ...]]:
    """(reuse: None for a new id else an index, id prefix, queue, handler, priority,
    delay ms or None, key, schedule id, max retries)."""
    return st.tuples(
        st.one_of(st.none(), st.none(), pick_st),
        st.sampled_from(("j", "J")),  # "J" sorts before "j" in byte order, not in every locale
        queue_st,
        st.sampled_from(HANDLERS),
        st.sampled_from((0, 5, 9)),
        st.sampled_from((None, None, -1000, 0, 1, 1000, 60_000)),
        st.sampled_from(KEYS),
        st.sampled_from((None, None, *SCHEDULE_IDS)),
        st.sampled_from((0, 3)),
    )


# Which lease a call presents: ("held", i) one still held (in the model), ("any", i) any
# handed out (most are stale by then), None a forged token.
lease_st = st.one_of(st.tuples(st.just("held"), pick_st), st.tuples(st.just("held"), pick_st),
                     st.tuples(st.just("any"), pick_st), st.none())


def finish_spec() -> st.SearchStrategy[tuple[Any, ...]]:
    """(lease (see ``lease_st``), outcome, error index, result index, retry delay ms)."""
    return st.tuples(
        lease_st,
        st.sampled_from(tuple(Outcome)),
        st.integers(0, len(ERRORS) - 1),
        st.integers(0, len(RESULTS) - 1),
        st.sampled_from((-1000, 0, 1000, 60_000)),
    )


def schedule_st() -> st.SearchStrategy[Schedule]:
    times = st.sampled_from(SCHEDULE_TIMES)
    return st.builds(
        Schedule,
        id=st.sampled_from(SCHEDULE_IDS),
        handler=st.sampled_from(HANDLERS),
        cron=st.sampled_from((None, "*/5 * * * *")),
        every=st.sampled_from((None, 60.0, 0.25)),
        timezone=st.sampled_from(("UTC", "Europe/Prague")),
        payload_json=st.sampled_from((b"null", b'{"n": 2}')),
        queue=queue_st,
        priority=st.sampled_from((0, 5)),
        max_retries=st.sampled_from((None, 0, 4)),
        timeout=st.sampled_from((None, 1.5)),
        enabled=st.booleans(),
        overlap=st.sampled_from(tuple(OverlapPolicy)),
        misfire=st.sampled_from(tuple(MisfirePolicy)),
        origin=st.sampled_from(("api", "config")),
        created_at=times,
        updated_at=times,
        last_fire_at=times,
    )


class Divergence(AssertionError):
    """A backend answered otherwise than the model."""


def normal(value: Any) -> Any:
    """An answer with what the protocol leaves free taken out (lease tokens), in plain values
    whose ``==`` compares everything else, order included."""
    if isinstance(value, Lease):
        return ("lease", value.job, value.expires_at)
    if isinstance(value, list):
        return [normal(v) for v in value]
    if isinstance(value, tuple):
        return tuple(normal(v) for v in value)
    if isinstance(value, Page):
        return ("page", normal(value.jobs), value.next_cursor)
    if isinstance(value, QueueStats):
        return ("stats", value.queue, dict(value.counts), value.paused, value.oldest_queued_at)
    if isinstance(value, dict):
        return ("dict", [(k, normal(v)) for k, v in value.items()])
    return value


def difference(expected: Any, got: Any, path: str = "answer") -> str:
    """Where two comparable answers first differ, and how (fields of a value, items of a
    list), for a readable failure."""
    if type(expected) is type(got):
        if isinstance(expected, list | tuple) and len(expected) == len(got):
            for n, (a, b) in enumerate(zip(expected, got, strict=True)):
                if a != b:
                    return difference(a, b, f"{path}[{n}]")
        if attrs.has(type(expected)):
            return "; ".join(
                difference(getattr(expected, f.name), getattr(got, f.name), f"{path}.{f.name}")
                for f in attrs.fields(type(expected))
                if getattr(expected, f.name) != getattr(got, f.name)
            )
    return f"{path}: model {expected!r}, got {got!r}"


class Harness:
    """The event loop, a directory for SQLite files and the Redis connection that every
    example's backends share. ``open`` gives fresh, empty backends."""

    def __init__(self, redis_url: str, workdir: Path) -> None:
        self.redis_url = redis_url
        self.workdir = workdir
        self.loop = asyncio.new_event_loop()
        self._files = itertools.count()
        self._flush = aioredis.Redis.from_url(redis_url)
        self._redis = RedisBackend(redis_url, {"batch_size": REDIS_BATCH})
        self.run(self._redis.connect())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def open(self) -> dict[str, Backend]:
        """Fresh backends: a new memory backend, a new SQLite file, an emptied database."""
        path = self.workdir / f"differential-{next(self._files)}.db"
        sqlite = SqliteBackend(f"sqlite:///{path}", {"synchronous": "NORMAL"})

        async def start() -> None:
            await self._flush.flushdb()
            await sqlite.connect()

        self.run(start())
        return {"memory": MemoryBackend(), "sqlite": sqlite, "redis": self._redis}

    def release(self, backends: dict[str, Backend]) -> None:
        """Close what ``open`` made for one example and delete its SQLite file."""
        sqlite = backends["sqlite"]
        self.run(sqlite.aclose())
        assert isinstance(sqlite, SqliteBackend)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{sqlite.path}{suffix}").unlink(missing_ok=True)

    def close(self) -> None:
        async def stop() -> None:
            await self._redis.aclose()
            await self._flush.aclose()

        try:
            self.run(stop())
        finally:
            self.loop.close()
            shutil.rmtree(self.workdir, ignore_errors=True)


class DifferentialMachine(RuleBasedStateMachine):
    """One example: the model and the three backends, driven alike."""

    def __init__(self, harness: Harness) -> None:
        super().__init__()
        self.harness = harness
        self.backends = harness.open()
        self.model = Model()
        self.now = T0
        self.ids: list[str] = []  # every id handed out, purged ones included
        self.serial = 0
        # Every lease handed out, by target ("model" and the backend names), and each target's
        # tokens back to their lease's index.
        self.leases: list[dict[str, Lease]] = []
        self.lease_of_token: dict[str, dict[str, int]] = {
            name: {} for name in ("model", *NAMES)
        }

    def teardown(self) -> None:
        """What no step compared whole: every job's attempts, every queue's waits, the
        counters of the whole run, every job listed page by page; then the storage goes."""
        def ask(method: str, *args: Any, **kwargs: Any) -> Any:
            return self.call(f"{method}{args or ''}", lambda _n, t: getattr(t, method)(
                *args, **kwargs))["model"]

        try:
            for job_id in dict.fromkeys(self.ids):
                ask("attempts", job_id)
            for queue in ASKED_QUEUES:
                ask("recent_waits", queue)
            ask("throughput", since=self.now - timedelta(hours=23), until=self.now,
                bucket=timedelta(hours=1))
            cursor: str | None = None
            for _ in range(len(self.ids) + 1):
                cursor = ask("list_jobs", JobQuery(limit=3, cursor=cursor)).next_cursor
                if cursor is None:
                    break
        finally:
            self.harness.release(self.backends)

    # -- lock-step calls --------------------------------------------------------------------

    def targets(self) -> Iterator[tuple[str, Any]]:
        yield "model", self.model
        yield from self.backends.items()

    def call(self, what: str, fn: Callable[[str, Any], Any]) -> dict[str, Any]:
        """``fn(name, target)`` on the model and on every backend (a coroutine for those);
        raises ``Divergence`` unless every answer is the model's. Answers them by name."""

        async def one(name: str, target: Any) -> tuple[str, Any]:
            try:
                answer = fn(name, target)
                if inspect.isawaitable(answer):
                    answer = await answer
            except Exception as exc:  # noqa: BLE001 - an exception is an answer too
                return "raised", f"{type(exc).__name__}: {exc}" if name == "model" else exc
            return "ok", answer

        async def every() -> list[tuple[str, Any]]:
            return list(await asyncio.gather(*(one(n, t) for n, t in self.targets())))

        results = dict(zip([n for n, _ in self.targets()], self.harness.run(every()),
                           strict=True))
        expected = self._comparable(results["model"])
        wrong = {n: r for n, r in results.items() if self._comparable(r) != expected}
        if wrong:
            lines = [(f"{what} at now={self.now.isoformat()}, where answers differ from the "
                      f"model's ({', '.join(wrong)}):")]
            lines += [f"  {n}: {difference(expected, self._comparable(r))}"
                      for n, r in wrong.items()]
            raise Divergence("\n".join(lines))
        return {n: r[1] for n, r in results.items()}

    @staticmethod
    def _comparable(result: tuple[str, Any]) -> Any:
        kind, value = result
        if kind == "raised":
            return ("raised", value.split(":")[0] if isinstance(value, str)
                    else type(value).__name__)
        return ("ok", normal(value))

    def hand_out(self, answers: dict[str, Any], leases_of: Callable[[Any], list[Lease]]
                 ) -> None:
        """Remember the leases of a claim (already compared), one index per leased job."""
        per = {name: leases_of(answer) for name, answer in answers.items()}
        for n in range(len(per["model"])):
            index = len(self.leases)
            self.leases.append({name: leases[n] for name, leases in per.items()})
            for name, leases in per.items():
                self.lease_of_token[name][leases[n].token] = index

    def each(self, make: Callable[[str], T]) -> dict[str, T]:
        """``make(name)`` for every target, made before any of them is called (what a lease
        pick means depends on the model's state before the call)."""
        return {name: make(name) for name, _ in self.targets()}

    def lease(self, which: tuple[str, int] | None, name: str) -> Lease:
        """Target ``name``'s lease ``which`` (see ``lease_st``); when there is none such, or
        for None, a forged one (a token never handed out) on a job that exists."""
        if which is not None:
            kind, pick = which
            indexes: Sequence[int] = range(len(self.leases))
            if kind == "held":
                indexes = [i for i in indexes if self.model.tokens.get(
                    self.leases[i]["model"].job.id) == self.leases[i]["model"].token]
            if indexes:
                return self.leases[indexes[pick % len(indexes)]][name]
        job = next(iter(self.model.jobs.values()))
        return Lease(job=job, token="forged", expires_at=self.now)  # noqa: S106

    def new_id(self, prefix: str) -> str:
        self.serial += 1
        job_id = f"{prefix}{self.serial:04d}"
        self.ids.append(job_id)
        return job_id

    def pick_id(self, pick: int) -> str:
        return self.ids[pick % len(self.ids)] if self.ids else "nothing"

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def every_job_and_queue_agree(self) -> None:
        ids = list(self.ids)
        self.call("get_many(every id)", lambda _n, t: t.get_many(ids))
        self.call("stats()", lambda _n, t: t.stats())

    # -- time -------------------------------------------------------------------------------

    @rule(ms=st.sampled_from((1, 999, 1000, 29_999, 30_000, 30_001, 3_600_000, 86_400_000)))
    def advance(self, ms: int) -> None:
        self.now += ms * MS

    # -- producer ---------------------------------------------------------------------------

    @initialize(specs=st.lists(job_spec(), min_size=1, max_size=8))
    def first_jobs(self, specs: list[tuple[Any, ...]]) -> None:
        """Every example starts with some jobs, so that claims find work."""
        self.enqueue(specs)

    @rule(specs=st.lists(job_spec(), max_size=5))
    def enqueue(self, specs: list[tuple[Any, ...]]) -> None:
        jobs = []
        for reuse, prefix, queue, handler, priority, delay, key, schedule, retries in specs:
            job_id = self.new_id(prefix) if reuse is None or not self.ids else self.pick_id(reuse)
            jobs.append(NewJob(
                id=job_id, queue=queue, handler=handler, payload_json=b'{"n": 1}',
                priority=priority, run_at=None if delay is None else self.now + delay * MS,
                max_retries=retries, timeout=30.0, idempotency_key=key, schedule_id=schedule,
            ))
        now = self.now
        self.call("enqueue", lambda _n, t: t.enqueue(jobs, now=now))

    # -- consumer ---------------------------------------------------------------------------

    @rule(queues=st.lists(asked_queue_st, min_size=1, max_size=4) | st.just([]),
          limit=claim_limit_st,
          lease_s=st.sampled_from((1, 30)), worker=st.sampled_from(WORKERS))
    def claim(self, queues: list[str], limit: int, lease_s: int, worker: str) -> None:
        now, lease_for = self.now, timedelta(seconds=lease_s)
        answers = self.call("claim", lambda _n, t: t.claim(
            queues, limit=limit, lease_for=lease_for, worker_id=worker, now=now))
        self.hand_out(answers, lambda leases: list(leases))

    @rule(picks=st.lists(lease_st, max_size=4), lease_s=st.sampled_from((1, 30)))
    @precondition(lambda self: self.model.jobs)
    def extend(self, picks: list[tuple[str, int] | None], lease_s: int) -> None:
        now, lease_for = self.now, timedelta(seconds=lease_s)
        leases = self.each(lambda n: [self.lease(p, n) for p in picks])
        self.call("extend", lambda n, t: t.extend(leases[n], lease_for=lease_for, now=now))

    def finishes(self, name: str, specs: list[tuple[Any, ...]]) -> list[Finish]:
        items = []
        for pick, outcome, error, result, retry_ms in specs:
            items.append(Finish(
                self.lease(pick, name), outcome, result_json=RESULTS[result],
                error=ERRORS[error],
                retry_at=self.now + retry_ms * MS if outcome is Outcome.RETRY else None,
            ))
        return items

    @rule(specs=st.lists(finish_spec(), max_size=4))
    @precondition(lambda self: self.model.jobs)
    def finish(self, specs: list[tuple[Any, ...]]) -> None:
        now = self.now
        items = self.each(lambda n: self.finishes(n, specs))
        self.call("finish", lambda n, t: t.finish(items[n], now=now))

    @rule(specs=st.lists(finish_spec(), max_size=3),
          queues=st.lists(asked_queue_st, min_size=1, max_size=3) | st.just([]),
          limit=claim_limit_st, worker=st.sampled_from(WORKERS))
    @precondition(lambda self: self.model.jobs)
    def finish_and_claim(self, specs: list[tuple[Any, ...]], queues: list[str], limit: int,
                         worker: str) -> None:
        now, lease_for = self.now, timedelta(seconds=30)
        items = self.each(lambda n: self.finishes(n, specs))
        answers = self.call("finish_and_claim", lambda n, t: t.finish_and_claim(
            items[n], queues, limit=limit, lease_for=lease_for,
            worker_id=worker, now=now))
        self.hand_out(answers, lambda answer: list(answer[1]))

    # -- scheduler --------------------------------------------------------------------------

    @rule(limit=st.sampled_from((-1, 0, 1, 2, 1000)))
    def promote(self, limit: int) -> None:
        now = self.now
        due = len(self.model.due(now))
        self.call("promote", lambda _n, t: t.promote(now=now, limit=limit))
        if 0 < limit < due:
            # Which ones moved is the backend's choice: move the rest, then all agree again.
            rest = due - limit
            self.call("promote (the rest)", lambda n, t: rest if n == "model"
                      else t.promote(now=now, limit=due))
        if limit > 0:
            self.model.promote_all(now)

    @rule()
    def next_wakeup(self) -> None:
        now = self.now
        self.call("next_wakeup", lambda _n, t: t.next_wakeup(now=now))

    @rule(limit=st.sampled_from((-1, 0, 1, 2, 100)),
          then=st.sampled_from((None, Outcome.RETRY, Outcome.DEAD)))
    def expired_leases(self, limit: int, then: Outcome | None) -> None:
        """The reaper: read the expired leases (the tokens must be those handed out for the
        same jobs), then maybe end them as failed attempts."""
        now = self.now
        answers = self.call("expired_leases", lambda _n, t: t.expired_leases(now=now,
                                                                             limit=limit))
        which = {name: [self.lease_of_token[name].get(lease.token) for lease in leases]
                 for name, leases in answers.items()}
        if any(indexes != which["model"] for indexes in which.values()):
            raise Divergence(f"expired_leases answered the tokens of other leases: {which}")
        if then is None or not which["model"]:
            return
        error = ErrorInfo("LeaseExpired", "the worker stopped renewing its lease")
        self.call("finish (reaped)", lambda n, t: t.finish(
            [Finish(lease, then, error=error, retry_at=now + 5 * MS if then is Outcome.RETRY
                    else None) for lease in answers[n]], now=now))

    @rule(states=st.sets(st.sampled_from(STATES), max_size=4).map(sorted),
          before_ms=st.sampled_from((0, 1, 1000, 3_600_000)), queue=st.none() | asked_queue_st,
          limit=st.sampled_from((-1, 0, 1, 2, 1000)))
    def purge(self, states: list[JobState], before_ms: int, queue: str | None, limit: int
              ) -> None:
        before = self.now - before_ms * MS
        found = self.model.purgeable(states=states, finished_before=before, queue=queue)
        self.call("purge", lambda n, t: min(max(0, limit), len(found)) if n == "model"
                  else t.purge(states=states, finished_before=before, queue=queue, limit=limit))
        if 0 < limit < len(found):
            # Which ones went is the backend's choice: delete the rest, then all agree again.
            rest = len(found) - limit
            self.call("purge (the rest)", lambda n, t: rest if n == "model" else t.purge(
                states=states, finished_before=before, queue=queue, limit=len(found)))
        if limit > 0:
            for job_id in found:
                self.model.delete(job_id)

    # -- admin ------------------------------------------------------------------------------

    @rule(pick=pick_st)
    def cancel(self, pick: int) -> None:
        job_id, now = self.pick_id(pick), self.now
        self.call("cancel", lambda _n, t: t.cancel(job_id, now=now))

    @rule(picks=st.lists(st.one_of(pick_st, st.none()), max_size=4))
    def requeue(self, picks: list[int | None]) -> None:
        ids = ["unknown" if p is None else self.pick_id(p) for p in picks]
        now = self.now
        self.call("requeue", lambda _n, t: t.requeue(ids, now=now))

    @rule(queue=queue_st, paused=st.booleans())
    def set_paused(self, queue: str, paused: bool) -> None:
        self.call("set_paused", lambda _n, t: t.set_paused(queue, paused))

    # -- inspection: one rule, so that the calls that change state come up often enough -----

    @rule(query=st.one_of(
        st.tuples(st.just("get"), st.one_of(pick_st, st.none())),
        st.tuples(st.just("get_many"), st.lists(st.one_of(pick_st, st.none()), max_size=4)),
        st.tuples(st.just("attempts"), pick_st),
        st.tuples(st.just("stats"), st.none() | st.lists(asked_queue_st, max_size=5)),
        st.tuples(st.just("count_jobs"), st.sets(st.sampled_from(STATES), max_size=3).map(sorted),
                  st.none() | asked_queue_st, st.sampled_from((None, -1, 0, 1000))),
        st.tuples(st.just("count_finished"), st.sampled_from((-1, 0, 1, 1000, 3_600_000)),
                  st.none() | asked_queue_st),
        st.tuples(st.just("throughput"), st.sampled_from((0, 1, 59, 61, 23 * 60)),
                  st.sampled_from((0, 1, 90)), st.sampled_from((0, 1, 5, 7, 60)),
                  st.none() | asked_queue_st),
        st.tuples(st.just("recent_waits"), asked_queue_st, st.sampled_from((-1, 0, 1, 2, 500))),
        st.tuples(st.just("next_wakeup")),
    ))
    def inspect(self, query: tuple[Any, ...]) -> None:
        """One read: ``query`` is the method's name and its arguments."""
        name, *args = query
        now = self.now
        if name == "get":
            job_id = "unknown" if args[0] is None else self.pick_id(args[0])
            self.call("get", lambda _n, t: t.get(job_id))
        elif name == "get_many":
            ids = ["unknown" if p is None else self.pick_id(p) for p in args[0]]
            self.call("get_many", lambda _n, t: t.get_many(ids))
        elif name == "attempts":
            job_id = self.pick_id(args[0])
            self.call("attempts", lambda _n, t: t.attempts(job_id))
        elif name == "stats":
            self.call("stats", lambda _n, t: t.stats(args[0]))
        elif name == "count_jobs":
            states, queue, before_ms = args
            before = None if before_ms is None else now - before_ms * MS
            self.call("count_jobs", lambda _n, t: t.count_jobs(states=states, queue=queue,
                                                                finished_before=before))
        elif name == "count_finished":
            since = now - args[0] * MS
            self.call("count_finished", lambda _n, t: t.count_finished(since=since,
                                                                        queue=args[1]))
        elif name == "throughput":
            # Within the last 23 h: counters are kept at least 24 h, older ones may read as 0.
            since_min, span_min, bucket_min, queue = args
            since = now - timedelta(minutes=since_min)
            until = since + timedelta(minutes=span_min, milliseconds=1)
            bucket = timedelta(minutes=bucket_min)
            self.call("throughput", lambda _n, t: t.throughput(since=since, until=until,
                                                               bucket=bucket, queue=queue))
        elif name == "recent_waits":
            self.call("recent_waits", lambda _n, t: t.recent_waits(args[0], limit=args[1]))
        else:
            self.call("next_wakeup", lambda _n, t: t.next_wakeup(now=now))

    @rule(queue=st.none() | asked_queue_st, states=states_st,
          handler=st.sampled_from((None, *HANDLERS)), limit=st.sampled_from((0, 1, 2, 3, 50)),
          cursor=st.one_of(st.none(), pick_st.map(lambda p: ("id", p)),
                           st.sampled_from(("J", "j0005", "k"))),
          schedule_id=st.sampled_from((None, *SCHEDULE_IDS)),
          error_type=st.sampled_from((None, "Boom", "Other", "LeaseExpired", "x")),
          after_ms=st.sampled_from((None, -1, 0, 1000, 3_600_000)),
          before_ms=st.sampled_from((None, -1, 0, 1000)),
          walk=st.booleans())
    def list_jobs(self, queue: str | None, states: list[JobState] | None, handler: str | None,
                  limit: int, cursor: Any, schedule_id: str | None, error_type: str | None,
                  after_ms: int | None, before_ms: int | None, walk: bool) -> None:
        """One page, or (``walk``) every page from there on by their cursors."""
        start: str | None = self.pick_id(cursor[1]) if isinstance(cursor, tuple) else cursor
        after = None if after_ms is None else self.now - after_ms * MS
        before = None if before_ms is None else self.now - before_ms * MS

        def page(start: str | None) -> Callable[[str, Any], Any]:
            return lambda _n, t: t.list_jobs(JobQuery(
                queue=queue, states=states, handler=handler, limit=limit, cursor=start,
                schedule_id=schedule_id, error_type=error_type, finished_after=after,
                finished_before=before))

        for _ in range(len(self.ids) + 2 if walk and limit > 0 else 1):
            start = self.call("list_jobs", page(start))["model"].next_cursor
            if start is None:
                break

    # -- schedules ----------------------------------------------------------------------------

    @rule(op=st.one_of(
        st.tuples(st.just("put"), schedule_st()),
        st.tuples(st.just("delete"), st.sampled_from(SCHEDULE_IDS)),
        st.tuples(st.just("advance"), st.sampled_from(SCHEDULE_IDS),
                  st.sampled_from(SCHEDULE_TIMES[1:]) | st.just("now")),
        st.tuples(st.just("purge_runs"), st.sampled_from(SCHEDULE_IDS), st.integers(-1, 3),
                  st.sampled_from((-1, 0, 1, 2, 1000))),
    ))
    def schedules(self, op: tuple[Any, ...]) -> None:
        """One schedule call, then what a scheduler reads back."""
        name, *args = op
        if name == "put":
            schedule: Schedule = args[0]
            self.call("put_schedule", lambda _n, t: t.put_schedule(schedule))
            self.call("get_schedule", lambda _n, t: t.get_schedule(schedule.id))
        elif name == "delete":
            self.call("delete_schedule", lambda _n, t: t.delete_schedule(args[0]))
        elif name == "advance":
            when: datetime = self.now if args[1] == "now" else args[1]
            self.call("advance_schedule", lambda _n, t: t.advance_schedule(args[0], when))
            self.call("get_schedule", lambda _n, t: t.get_schedule(args[0]))
        else:
            self.call("purge_schedule_runs", lambda _n, t: t.purge_schedule_runs(
                args[0], keep=args[1], limit=args[2]))
        self.call("list_schedules", lambda _n, t: t.list_schedules())

    # -- workers and beats --------------------------------------------------------------------

    @rule(op=st.one_of(
        st.tuples(st.just("report"), st.sampled_from(WORKERS),
                  st.sampled_from((-30_000, -1, 0, 1, 5000)),
                  st.sampled_from((0, 1, 1000, 30_000)), st.integers(0, 2)),
        st.tuples(st.just("remove"), st.sampled_from(WORKERS)),
        st.tuples(st.just("beat"), st.sampled_from(("scheduler:a", "scheduler:b")),
                  st.sampled_from((0, 1000, 86_400_000, 90_000_000))),
    ), at_ms=st.sampled_from((-1, 0, 1, 999, 1000, 1001, 30_000, 30_001)))
    def workers(self, op: tuple[Any, ...], at_ms: int) -> None:
        """A heartbeat (``last_seen`` around now), a removal or a component's beat, then the
        workers listed at ``now + at_ms`` and the beats."""
        name, *args = op
        now = self.now
        if name == "report":
            worker, seen_ms, ttl_ms, busy = args
            info = WorkerInfo(id=worker, host="host", pid=100 + busy, roles=("worker",),
                              queues=QUEUES[: busy + 1], concurrency=4, busy=busy,
                              started_at=T0, last_seen=now + seen_ms * MS, processed=busy * 7)
            ttl = ttl_ms * MS
            self.call("report_worker", lambda _n, t: t.report_worker(info, ttl=ttl))
        elif name == "remove":
            self.call("remove_worker", lambda _n, t: t.remove_worker(args[0]))
        else:
            when = now - args[1] * MS
            self.call("beat", lambda _n, t: t.beat(args[0], now=when))
        self.call("beats", lambda _n, t: t.beats(now=now))
        listed_at = now + at_ms * MS
        self.call("list_workers", lambda _n, t: t.list_workers(now=listed_at))


@contextlib.contextmanager
def harness() -> Iterator[Harness]:
    """A Harness on a private redis-server (a Unix socket in a temporary directory, never the
    machine's service), with a temporary directory for SQLite files and Hypothesis' own files
    (so nothing is written into the work tree)."""
    server = start_redis_server()
    workdir = Path(tempfile.mkdtemp(prefix="monoq-differential-"))
    home = getattr(configuration, "__hypothesis_home_directory", None)
    configuration.set_hypothesis_home_dir(workdir / "hypothesis")
    try:
        made = Harness(server.url, workdir)
        try:
            yield made
        finally:
            made.close()
    finally:
        configuration.set_hypothesis_home_dir(home)
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


def run(made: Harness, how: settings) -> None:
    """Run the machine on ``made`` as one Hypothesis test with ``how``; raises (after
    shrinking, with the minimal example printed) when a backend and the model disagree."""
    # Through Any: Hypothesis releases before 6.16x leave this function untyped, later ones
    # type its first argument as a machine class; a factory is what both accept at run time.
    runner: Any = run_state_machine_as_test
    runner(lambda: DifferentialMachine(made), settings=how)
