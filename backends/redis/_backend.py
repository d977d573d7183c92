"""RedisBackend: the Backend protocol over Redis (>= 6.2), one Lua script per state change."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
import secrets
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar, cast
from urllib.parse import urlsplit

import msgspec
import redis.asyncio as aioredis
import redis.exceptions as rex
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry as ConnectionRetry  # a driver's retries, not a job's
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.crc import key_slot

try:  # a dependency through redis[hiredis]; redis-py works without it, only slower
    import hiredis
except ImportError:  # pragma: no cover
    hiredis = None  # type: ignore[assignment]

from monoq.backends.redis._codec import (
    _LEASE_STATUS,
    _bytes,
    _decode_attempt,
    _decode_job,
    _decode_lease,
    _decode_schedule,
    _dt,
    _encode_schedule,
    _from_hash,
    _ms,
    _text,
    _unpack,
    _us,
)
from monoq.backends.redis._connect import (
    ClusterTarget,
    SentinelTarget,
    _Cluster,
    _driver_errors,
    _packing_in_c,
    _SentinelBlockingPool,
    parse_cluster_url,
    parse_sentinel_url,
)
from monoq.backends.redis._doctor import server_checks
from monoq.backends.redis._keys import STATE_INDEX, Keys
from monoq.backends.redis._wire import Wire, opener
from monoq.core.audit import AuditEntry, AuditFilter, AuditPage, scan_page
from monoq.core.backend import Capabilities, MemoryReport
from monoq.core.counters import (
    BEAT_HORIZON,
    COUNTER_RETENTION_MINUTES,
    WAITS_KEPT,
    Counts,
    bucket_plan,
    fold_minutes,
    minute_of,
)
from monoq.core.models import (
    EPOCH,
    ONE_MS,
    OUTCOME_TO_ATTEMPT,
    TERMINAL_STATES,
    Attempt,
    DepthLimits,
    Enqueued,
    Finish,
    Job,
    JobQuery,
    JobState,
    Lease,
    LeaseStatus,
    NewJob,
    Page,
    Progress,
    QueueStats,
    Schedule,
    ThroughputBucket,
    WorkerInfo,
    to_ms_ceil,
    utcnow,
)
from monoq.core.options import (
    choice_option,
    float_option,
    int_option,
    known_options,
    str_option,
)
from monoq.core.rules import admitted
from monoq.errors import BackendUnavailable, ConfigError, QueueFull

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

_EPOCH: Final = EPOCH
_MS: Final = ONE_MS
# Each token in a queue's wake list can wake one blocked worker; more than this many tokens
# only makes idle waiters return early more often.
_WAKE_CAP: Final = 64
# purge_schedule_runs scans at most this many ids per script call, so many unfinished old runs
# never block the server for long; Python carries on from where the script stopped.
_LIST_SCAN: Final = 2000
# One list_jobs call walks at most this many ids in all (over every queue and state it merges,
# or over a schedule's runs): a filter that matches rarely ends the page early with a cursor
# (the protocol allows short pages), so no call blocks the server for long.
_PAGE_SCAN: Final = 3000
# A finish window reads at most this many ids by score (from the terminal states' sorted sets)
# per list_jobs call, instead of walking the id indexes.
_WINDOW_READ: Final = 1000
# The id index moves from the old layout (one index of every id per queue) this many ids per
# script call.
_MIGRATE_STEP: Final = 1000
# Every job state, as stored in the ``st`` field (the per-state id indexes are named after them).
_STATES: Final = tuple(str(s) for s in JobState)
# The throughput hash of a queue may hold this many minutes before the finish script prunes
# those past retention (an hour of slack, so pruning runs about once an hour).
_TPUT_PRUNE_AT: Final = COUNTER_RETENTION_MINUTES + 60
# Ready-queue scores are priority * 10**13 + run_at_ms (see _keys.py).
_BAND: Final = 10**13

_SCRIPTS: Final = (
    "enqueue",
    "note",
    "enqueue_server",
    "progress",
    "stack",
    "index",
    "unindex",
    "register",
    "claim",
    "extend",
    "finish",
    "promote",
    "cancel",
    "requeue",
    "purge",
    "drop",
    "expired",
    "list",
    "pause",
    "workers",
    "schedule",
    "advance",
    "beat",
    "migrate",
)
# A script call: the script's name, its KEYS (all in one hash slot) and its ARGV.
_Call = tuple[str, Sequence[Any], Sequence[Any]]
# The enqueue of a batch re-reads the id index at most this many times when an entry names a
# queue where the job no longer is (see ``_enqueue_chunk``).
_INDEX_ROUNDS: Final = 3
# memory_use: a queue's keys besides its jobs (measured each), the jobs sampled per state,
# MEMORY USAGE's own SAMPLES for a big key, and how long a report is reused.
_QUEUE_PARTS: Final = (*STATE_INDEX.values(), "idem", "paused", "wake", "changes", "tput",
                       "waits")
_JOB_SAMPLES: Final = 5
_USAGE_SAMPLES: Final = 5
MEMORY_REPORT_SECONDS: Final = 5.0


def _load_script(name: str) -> str:
    files = importlib.resources.files(__package__)
    common = files.joinpath("_common.lua").read_text(encoding="utf-8")
    return common + files.joinpath(f"{name}.lua").read_text(encoding="utf-8")


_TLS_OPTIONS: Final = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
_SENTINEL_OPTIONS: Final = ("sentinel_username", "sentinel_password")
_KNOWN_OPTIONS: Final = (
    "key_prefix",
    "pool_size",
    "pool_timeout",
    "socket_timeout",
    "connect_timeout",
    "batch_size",
    "replicas_ack",
    "replicas_ack_timeout",
    *_SENTINEL_OPTIONS,
    *_TLS_OPTIONS,
)
_SCHEMES: Final = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel",
                   "redis+cluster", "rediss+cluster")
# Scripts whose writes, with ``replicas_ack``, are acknowledged only once replicated.
_REPLICATED: Final = frozenset({"enqueue", "enqueue_server", "finish"})


_pack = msgspec.msgpack.Encoder().encode
# Commands whose replies callers read as Redis sends them, so they may go on the wire (which
# does not apply redis-py's reply callbacks: HGETALL's dict, a status reply's True).
_RAW_REPLIES: Final = frozenset({"DEL", "HDEL", "HMGET", "HSET", "HSETNX", "LPUSH", "LTRIM",
                                 "SADD", "SREM", "ZADD", "ZREM"})
# The states of the finish script's first six keys (their id indexes follow the queue keys).
_FINISH_STATES: Final = ("queued", "running", "retrying", "completed", "dead", "cancelled")


class RedisBackend:
    """The Backend protocol on Redis: shared by every process and machine that reaches it.

    ``url`` is ``redis://[user:password@]host:port/db``, ``rediss://`` for TLS, or
    ``unix:///path/redis.sock?db=0``. Options (the ``[backend.options]`` table):

    - ``key_prefix`` (``"monoq"``): every key starts with it, so several deployments can share
      one database.
    - ``pool_size`` (50): connections for commands, and separately up to as many for blocking
      waits (``wait_for_jobs``/``wait_for_changes``), so waiters never starve commands.
    - ``pool_timeout`` (5 s): how long a command waits for a free pooled connection.
    - ``socket_timeout`` (5 s) and ``connect_timeout`` (2 s): kept short so that during an
      outage calls fail fast with ``BackendUnavailable`` instead of hanging.
    - ``batch_size`` (1000): jobs per enqueue script call (see ``enqueue``).
    - ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs``
      (``required``/``optional``/``none``): TLS, for ``rediss://`` and ``rediss+sentinel://``.
    - ``replicas_ack`` (0) and ``replicas_ack_timeout`` (1 s): when above 0, an enqueue and a
      finish are acknowledged only once that many replicas confirmed the write (``WAIT`` on the
      same connection); otherwise the call raises ``BackendUnavailable`` and the caller retries
      it (safe: a stored job id is answered, not written again). Without it Redis replicates
      asynchronously, and a failover can lose the last writes the master acknowledged.
    - ``sentinel_username``, ``sentinel_password``: the sentinels' own credentials, when they
      differ from the master's (which come from the URL).

    High availability: ``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]``
    asks the sentinels for the master of ``service``, again on every new connection, so that
    after a failover every role follows the new master without a restart (calls during the
    failover fail with ``BackendUnavailable`` and are retried by the roles).

    Redis Cluster: ``redis+cluster://[user:password@]host:port[,host:port...][/0]``
    (``rediss+cluster://`` for TLS) names some nodes of the cluster; redis-py's cluster client
    learns the others, sends every script call to the master of its keys' slot (every script
    touches one slot, see _keys.py), and after a failover re-reads the layout on the next call.
    ``pool_size`` applies per node; ``replicas_ack`` is refused. What a cluster changes:
    an enqueue batch and a claim are atomic per hash slot (per queue) instead of across
    queues, and a wait across queues is one BLPOP per slot.

    Connections: on one server (a ``redis://``, ``rediss://`` or ``unix://`` URL) every script
    call of the process, and the plain writes sent beside them, travel on one pipelined
    connection (``_wire.py``): one awaited enqueue then costs about half the CPU it costs
    through redis-py's pooled client, and calls made at the same moment share round trips.
    Reads, blocking waits, Sentinel and Cluster use redis-py's pools and clients.

    The driver never retries a command: a script whose reply was lost may have run, and
    replaying a claim or a finish is not harmless. Pooled connections broken by a server restart
    are replaced by the pool before use, and scripts evicted by ``SCRIPT FLUSH`` or a restart are
    re-loaded on ``NOSCRIPT`` (redis-py's ``AsyncScript`` does EVALSHA, then SCRIPT LOAD and
    EVALSHA again).

    Clock: job logic uses the ``now`` callers pass in, as the protocol requires (tests drive it
    with a fixed fake time). Roles on several machines that want one clock can read Redis's with
    ``server_now()``.
    """

    capabilities = Capabilities(shared_across_processes=True, cross_process_wakeup=True,
                                served_out_of_process=True)

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        scheme = url.partition("://")[0].lower()
        if scheme not in _SCHEMES:
            raise ConfigError(
                f"backend.url: {url!r} is not a redis://, rediss://, unix://, "
                "redis+sentinel:// or rediss+sentinel:// URL")
        self.url = url
        self._sentinel = parse_sentinel_url(url) if scheme.endswith("+sentinel") else None
        self._target = parse_cluster_url(url) if scheme.endswith("+cluster") else None
        opts = known_options("redis", options, _KNOWN_OPTIONS)
        prefix = str_option("key_prefix", opts.get("key_prefix", "monoq"))
        if any(ch in prefix for ch in "{}"):
            raise ConfigError("backend.options.key_prefix: must not contain { or }")
        self._keys = Keys(prefix)
        self._pool_size = int_option("pool_size", opts.get("pool_size", 50), 1, 10_000)
        self._pool_timeout = float_option("pool_timeout", opts.get("pool_timeout", 5.0))
        self._socket_timeout = float_option("socket_timeout", opts.get("socket_timeout", 5.0))
        self._connect_timeout = float_option("connect_timeout", opts.get("connect_timeout", 2.0))
        self.batch_size = int_option("batch_size", opts.get("batch_size", 1000), 1, 10_000)
        self.replicas_ack = int_option("replicas_ack", opts.get("replicas_ack", 0), 0, 100)
        self._replicas_ack_timeout = float_option(
            "replicas_ack_timeout", opts.get("replicas_ack_timeout", 1.0))
        self._sentinel_auth: dict[str, str] = {}
        for key in _SENTINEL_OPTIONS:
            if key in opts:
                if self._sentinel is None:
                    raise ConfigError(f"backend.options.{key}: only applies to "
                                      "redis+sentinel:// URLs")
                self._sentinel_auth[key.removeprefix("sentinel_")] = str_option(key, opts[key])
        self._tls: dict[str, Any] = {}
        for key in _TLS_OPTIONS:
            if key in opts:
                if not scheme.startswith("rediss"):
                    raise ConfigError(f"backend.options.{key}: only applies to rediss://, "
                                      "rediss+sentinel:// and rediss+cluster:// URLs")
                value = (choice_option(key, opts[key], ("required", "optional", "none"))
                         if key == "ssl_cert_reqs" else str_option(key, opts[key]))
                self._tls[key] = value
        self._client: aioredis.Redis | None = None
        self._wire: Wire | None = None  # the script calls' connection (one server only)
        self._blocking: aioredis.Redis | None = None
        self._memory_report: tuple[float, MemoryReport] | None = None  # (monotonic, report)
        self._scripts: dict[str, AsyncScript] = {}
        self._cluster = self._target is not None  # a redis+cluster:// URL
        if self._cluster and self.replicas_ack:
            raise ConfigError(
                "backend.options.replicas_ack: not supported with redis+cluster:// URLs (WAIT "
                "would have to follow each write to the master of its slot)")
        self._sentinel_managers: list[Sentinel] = []  # closed with the pools

    def __repr__(self) -> str:
        return f"RedisBackend(prefix={self._keys.prefix!r})"

    @property
    def description(self) -> str:
        """Where this backend stores jobs, without credentials (for logs and doctor)."""
        if self._sentinel is not None:
            hosts = ",".join(f"{h}:{p}" for h, p in self._sentinel.sentinels)
            return f"sentinel {hosts} service {self._sentinel.service} db {self._sentinel.db}"
        if self._target is not None:
            return "cluster " + ",".join(f"{h}:{p}" for h, p in self._target.nodes)
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname or ''}{parts.path}"

    # -- lifecycle ----------------------------------------------------------------------------

    def _pool(self, *, socket_timeout: float | None) -> aioredis.BlockingConnectionPool:
        if self._sentinel is not None:
            return self._sentinel_pool(self._sentinel, socket_timeout=socket_timeout)
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url,
            max_connections=self._pool_size,
            timeout=self._pool_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=self._connect_timeout,
            retry=ConnectionRetry(NoBackoff(), 0),
            **self._tls,
        )
        pool.connection_class = _packing_in_c(pool.connection_class)
        return pool

    def _sentinel_pool(self, target: SentinelTarget, *, socket_timeout: float | None
                       ) -> aioredis.BlockingConnectionPool:
        tls: dict[str, Any] = dict(self._tls)
        if target.tls:
            tls["ssl"] = True
        # Asking the sentinels is bounded like any call, so that a dead sentinel is skipped
        # quickly; the sentinels share TLS settings with the master.
        manager = Sentinel(  # type: ignore[no-untyped-call]
            list(target.sentinels),
            sentinel_kwargs={"socket_timeout": self._socket_timeout,
                             "socket_connect_timeout": self._connect_timeout,
                             **self._sentinel_auth, **tls},
        )
        self._sentinel_managers.append(manager)
        pool = _SentinelBlockingPool(  # type: ignore[no-untyped-call]
            target.service, manager,
            max_connections=self._pool_size,
            timeout=self._pool_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=self._connect_timeout,
            retry=ConnectionRetry(NoBackoff(), 0),
            db=target.db,
            username=target.username,
            password=target.password,
            **tls,
        )
        pool.connection_class = _packing_in_c(pool.connection_class)
        return pool

    def _cluster_client(self, target: ClusterTarget, *, socket_timeout: float | None
                        ) -> aioredis.Redis:
        """redis-py's cluster client: it routes each command (each script call by the slot of
        its keys) to the master of that slot, follows MOVED/ASK redirections, and re-reads the
        cluster's layout after a connection error, so the next call reaches a promoted replica.
        Like the plain client it never retries a failed command (``retry`` of 0)."""
        tls: dict[str, Any] = dict(self._tls)
        if target.tls:
            tls["ssl"] = True
        client = _Cluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            max_connections=self._pool_size,
            socket_timeout=socket_timeout,
            socket_connect_timeout=self._connect_timeout,
            retry=ConnectionRetry(NoBackoff(), 0),
            username=target.username,
            password=target.password,
            **tls,
        )
        # The cluster client has the plain client's command methods (and pipelines without
        # transactions, which is all this backend uses).
        return cast(aioredis.Redis, client)

    def _r(self) -> aioredis.Redis:
        """The command client, created on first use (connections open lazily)."""
        if self._client is None:
            if self._target is not None:
                client = self._cluster_client(self._target, socket_timeout=self._socket_timeout)
            else:
                pool = self._pool(socket_timeout=self._socket_timeout)
                client = aioredis.Redis(connection_pool=pool)
                if self._sentinel is None:  # a Sentinel pool asks for the master per connection
                    self._wire = Wire(opener(pool), self._socket_timeout)
            self._scripts = {name: client.register_script(_load_script(name)) for name in _SCRIPTS}
            self._client = client
        return self._client

    def _b(self) -> aioredis.Redis:
        """The client for blocking pops: its own pool, no socket timeout (the wait bounds it)."""
        if self._blocking is None:
            if self._target is not None:
                self._blocking = self._cluster_client(self._target, socket_timeout=None)
            else:
                self._blocking = aioredis.Redis(connection_pool=self._pool(socket_timeout=None))
        return self._blocking

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        client = self._r()
        if self.replicas_ack and name in _REPLICATED:
            return await self._run_replicated(client, name, keys, args)
        wire = self._wire
        script = self._scripts[name]
        if wire is None:
            with _driver_errors(name):
                return await script(keys=list(keys), args=list(args))
        with _driver_errors(name):
            reply = await wire.call("EVALSHA", script.sha, len(keys), *keys, *args)
            if isinstance(reply, rex.NoScriptError):  # after a restart or SCRIPT FLUSH
                script.sha = await client.script_load(script.script)
                reply = await wire.call("EVALSHA", script.sha, len(keys), *keys, *args)
            if isinstance(reply, Exception):
                raise reply
        return reply

    async def _run_replicated(self, client: aioredis.Redis, name: str, keys: Sequence[str],
                              args: Sequence[Any]) -> Any:
        """Run a script, then ``WAIT`` on the same connection for ``replicas_ack`` replicas."""
        script = self._scripts[name]
        with _driver_errors(name):
            async with client.pipeline(transaction=False) as pipe:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
                self._wait_replicas(pipe)
                reply, acked = await pipe.execute(raise_on_error=False)
            if isinstance(reply, rex.NoScriptError):  # after a restart or SCRIPT FLUSH
                script.sha = await client.script_load(script.script)
                return await self._run_replicated(client, name, keys, args)
            if isinstance(reply, Exception):
                raise reply
        self._check_replicated(name, acked)
        return reply

    def _wait_replicas(self, pipe: Any) -> None:
        pipe.execute_command("WAIT", self.replicas_ack,
                             max(1, int(self._replicas_ack_timeout * 1000)))

    def _check_replicated(self, op: str, acked: Any) -> None:
        """Refuse to acknowledge a write fewer replicas than ``replicas_ack`` confirmed."""
        if isinstance(acked, Exception):
            with _driver_errors(op):
                raise acked
        if int(acked) < self.replicas_ack:
            raise BackendUnavailable(
                f"redis {op}: written on the master but confirmed by {int(acked)} of "
                f"{self.replicas_ack} replicas within {self._replicas_ack_timeout:g}s "
                "(backend.options.replicas_ack); not acknowledged, retry it")

    async def _pipeline(self, op: str, calls: Sequence[_Call],
                        commands: Sequence[tuple[Any, ...]] = (), *, replicated: bool = False
                        ) -> tuple[list[Any], list[Any]]:
        """Script calls, then plain commands, in one pipeline (one round trip): answers the
        scripts' replies and the commands' replies, in order. Each script call is one atomic
        step on its keys' slot; the pipeline as a whole is not atomic. A script Redis no longer
        knows (after a restart or ``SCRIPT FLUSH``) is loaded and run again on its own.
        ``replicated``: followed by ``WAIT`` for ``replicas_ack`` replicas on the same
        connection (not on a cluster, where ``replicas_ack`` is refused)."""
        if not calls and not commands:
            return [], []
        wait = replicated and bool(self.replicas_ack)
        client = self._r()
        wire = self._wire
        if wire is not None and not wait and all(c[0] in _RAW_REPLIES for c in commands):
            with _driver_errors(op):
                replies = await wire.calls(
                    [("EVALSHA", self._scripts[name].sha, len(keys), *keys, *args)
                     for name, keys, args in calls] + list(commands))
            return await self._script_replies(op, calls, replies)
        with _driver_errors(op):
            async with client.pipeline(transaction=False) as pipe:
                for name, keys, args in calls:
                    # EVALSHA by name: the cluster pipeline refuses its evalsha() method
                    pipe.execute_command("EVALSHA", self._scripts[name].sha, len(keys), *keys,
                                         *args)
                for command in commands:
                    pipe.execute_command(*command)
                if wait:
                    self._wait_replicas(pipe)
                replies = await pipe.execute(raise_on_error=False)
        if wait:
            acked = replies.pop()
            if not any(isinstance(reply, rex.NoScriptError) for reply in replies):
                self._check_replicated(op, acked)
        return await self._script_replies(op, calls, replies)

    async def _script_replies(self, op: str, calls: Sequence[_Call], replies: list[Any]
                              ) -> tuple[list[Any], list[Any]]:
        """Split a pipeline's replies into the scripts' and the commands'; a script Redis no
        longer knew is run again on its own, and any other error reply is raised."""
        for n, reply in enumerate(replies):
            if n < len(calls) and isinstance(reply, rex.NoScriptError):
                replies[n] = await self._run(*calls[n])
            elif isinstance(reply, Exception):
                with _driver_errors(op):
                    raise reply
        return replies[: len(calls)], replies[len(calls) :]

    async def _poke_schedulers(self) -> None:
        """Wake every scheduler's ``wait_for_changes`` through the global changes list (a new
        queue appeared, or a schedule changed)."""
        k = self._keys
        await self._pipeline("changes", [], [("LPUSH", k.changes, "1"),
                                             ("LTRIM", k.changes, 0, 0)])

    async def _register(self, queues: Collection[str]) -> None:
        """Make ``queues`` known; when one was not, wake the schedulers (two steps: the set of
        queues and the changes list are keys of different slots)."""
        if not queues:
            return
        added = await self._run("register", [self._keys.queues], sorted(queues))
        if added:
            await self._poke_schedulers()

    async def connect(self) -> None:
        """Check that Redis answers and load the scripts. Idempotent."""
        client = self._r()
        with _driver_errors("connect"):
            await client.ping()
            for script in self._scripts.values():
                script.sha = await client.script_load(script.script)
        await self._migrate_id_indexes()
        logger.info("redis backend connected (prefix %s)", self._keys.prefix)

    async def _migrate_id_indexes(self) -> None:
        """Move the ids of queues still in the old layout (one id index ``P:{q}:ids`` of every
        job) into the per-state id indexes, ``_MIGRATE_STEP`` ids per script call, until the old
        key is gone. When nothing is left to move this is one SMEMBERS and one pipeline of
        EXISTS."""
        k = self._keys
        queues = await self._known_queues()
        if not queues:
            return
        with _driver_errors("connect"):
            async with self._r().pipeline(transaction=False) as pipe:
                for q in queues:
                    pipe.exists(k.old_ids(q))
                found = await pipe.execute()
        for q, exists in zip(queues, found, strict=True):
            if not exists:
                continue
            keys = [k.old_ids(q), k.job_prefix(q), k.ids_prefix(q)]
            moved = dropped = 0
            while True:
                step_moved, step_dropped, left = await self._run("migrate", keys, [_MIGRATE_STEP])
                moved += int(step_moved)
                dropped += int(step_dropped)
                if not int(left):
                    break
            logger.info(
                "redis: queue %s: moved %d ids to the per-state id indexes (%d of jobs that no "
                "longer exist dropped)", q, moved, dropped,
            )

    async def aclose(self) -> None:
        """Close both connection pools. Safe to call twice or without ``connect``."""
        client, blocking = self._client, self._blocking
        self._client = self._blocking = None
        wire, self._wire = self._wire, None
        if wire is not None:
            await wire.aclose()
        self._scripts = {}
        for c in (client, blocking):
            if isinstance(c, RedisCluster):
                with contextlib.suppress(rex.RedisError, OSError):
                    await c.aclose()
                    # redis-py's aclose does nothing while the client is due to re-read the
                    # layout (after a connection error): close every node's connections.
                    await c.nodes_manager.aclose()
                    await c.nodes_manager.aclose("startup_nodes")
            elif c is not None:
                with contextlib.suppress(rex.RedisError, OSError):
                    await c.aclose(close_connection_pool=True)
        managers, self._sentinel_managers = self._sentinel_managers, []
        for manager in managers:
            with contextlib.suppress(rex.RedisError, OSError):
                await manager.aclose()

    async def ping(self) -> None:
        """Return if Redis answers; raise ``BackendUnavailable`` otherwise."""
        with _driver_errors("ping"):
            await self._r().ping()

    async def server_now(self) -> datetime:
        """Redis's clock (``TIME``), aware UTC, truncated to milliseconds.

        Job logic uses the ``now`` its callers pass; roles spread over machines with skewed
        clocks may take it from here so that lease expiries agree.
        """
        with _driver_errors("time"):
            seconds, micros = await self._r().time()
        return _dt(int(seconds) * 1000 + int(micros) // 1000)

    # -- producer -----------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob], *, now: datetime,
                      limits: DepthLimits | None = None) -> list[Enqueued]:
        """Store ``jobs`` and answer one ``Enqueued`` each (see the Backend protocol).

        Backpressure (``limits``) is checked just before the first write, from the sizes of
        the queues' ready, scheduled and retrying sets (one pipeline): not in the same atomic
        step, so producers racing on a nearly full queue may pass its limit by what they send
        at that moment.

        On one server a batch of up to ``batch_size`` (default 1000) jobs is stored by one
        script call, so it is atomic (all or nothing); it takes two round trips (the ids'
        entries in the global id index go first, see ``_enqueue_chunk``). On a cluster it is
        one script call per hash slot among the batch's queues, each atomic, in one pipeline:
        a failure may leave the jobs of some queues stored and not those of others. A larger
        batch is split into parts of ``batch_size`` jobs, sent one after the other, in order
        (so that no script holds the server for long): each part sees what the parts before
        it stored, so the answers are those of one atomic step (a repeated id or idempotency
        key is answered from the first job of the batch that has it, in whichever part). If a
        part fails (say the connection drops), the parts before it stay stored, the parts
        after it are not sent, and the call raises; retrying the whole call is safe because a
        job id that is already stored is answered, not written again (``created=False``). An
        index entry written for a job that was then not stored answers None to ``get``.

        Redis does not roll back a script that fails half-way; the enqueue script's only
        failure after its first write would be a key of the wrong type (a corrupted or foreign
        key under the prefix). Over ``maxmemory`` the script is refused before its first write.
        """
        if limits is not None:
            await self._check_depth(jobs, limits)
        answers: list[Enqueued] = []
        for start in range(0, len(jobs), self.batch_size):
            answers += await self._enqueue_chunk(jobs[start : start + self.batch_size], now)
        return answers

    async def _check_depth(self, jobs: Sequence[NewJob], limits: DepthLimits) -> None:
        """Raise QueueFull when a limited queue (or all queues) would pass its limit."""
        per_queue = limits.per_queue(jobs)
        queues = list(per_queue) if not limits.total else await self._known_queues()
        if not queues:
            return
        k = self._keys
        depth: dict[str, int] = {}
        for q in queues:  # one call per queue: each queue's sets share its slot
            with _driver_errors("enqueue"):
                async with self._r().pipeline(transaction=False) as pipe:
                    for part in ("ready", "scheduled", "retrying"):
                        pipe.zcard(k.q(q, part))
                    depth[q] = sum(await pipe.execute())
        for queue, (limit, n) in per_queue.items():
            if depth.get(queue, 0) + n > limit:
                raise QueueFull(queue, depth.get(queue, 0), limit)
        total = sum(depth.values())
        if limits.total and total + len(jobs) > limits.total:
            raise QueueFull(None, total, limits.total)

    async def _enqueue_chunk(self, jobs: Sequence[NewJob], now: datetime) -> list[Enqueued]:
        """One part of a batch, in steps that each touch one hash slot (see _keys.py):

        1. the ``index`` script writes each new id's entry in the global id index (``jobq``),
           so that ``get(id)`` finds a job from the moment it is stored (an entry whose job was
           never stored answers None), and answers the entries already there;
        2. one pipeline: the ``enqueue`` script, with the jobs whose entry names their own
           queue or none (one atomic call for them all on one server; on a cluster one per hash
           slot among their queues, each atomic), and the registration of the queues that get
           new jobs (SADD);
        3. only when needed, after the jobs exist, in one pipeline: a wake of the schedulers
           if a queue was new, the schedules' run indexes, the index entry again for a job
           stored under an entry that was already there (a purge of an earlier job of that id
           may remove it meanwhile), and a read of each job whose id is stored in another
           queue (answered, not stored again).

        An entry that names a queue where the job is not (its enqueue failed after step 1, or
        it was purged) is moved to the new job's queue, compare-and-set, and step 2 repeated
        for that job.
        """
        if not jobs:
            return []
        if not self._cluster:
            return await self._enqueue_one_server(jobs, now)
        k = self._keys
        now_ms = _ms(now)
        stored_at = _dt(now_ms)  # the created_at (and run_at when due) of the jobs stored
        todo = list(range(len(jobs)))
        answers: dict[int, Enqueued] = {}
        stale: dict[int, str] = {}
        for _ in range(_INDEX_ROUNDS):
            entries = await self._index([(jobs[i].id, jobs[i].queue, stale.get(i, ""))
                                         for i in todo])
            mine: list[int] = []
            fresh: set[int] = set()  # stored under an entry written by this step
            foreign: list[tuple[int, str]] = []
            for i, entry in zip(todo, entries, strict=True):
                if entry in ("", jobs[i].queue) or stale.get(i) == entry:
                    mine.append(i)
                    if entry != jobs[i].queue:
                        fresh.add(i)
                else:
                    foreign.append((i, entry))
            groups = self._slot_groups([jobs[i].queue for i in mine])
            calls: list[_Call] = [
                self._enqueue_call([jobs[mine[n]] for n in idx], now_ms)
                for idx in groups.values()
            ]
            new_queues = sorted({jobs[i].queue for i in fresh})
            register = [("SADD", k.queues, *new_queues)] if new_queues else []
            replies, added_ = await self._pipeline("enqueue", calls, register,
                                                   replicated=bool(groups))
            added = added_[0] if added_ else 0
            after: list[tuple[Any, ...]] = []
            for idx, reply in zip(groups.values(), replies, strict=False):
                for n, answer in zip(idx, reply, strict=True):
                    i = mine[n]
                    job = jobs[i]
                    if isinstance(answer, list):
                        answers[i] = Enqueued(job=_decode_job(_unpack(answer)), created=False)
                        continue
                    # as the script stored it (new_job_fields in _common.lua applies this rule)
                    answers[i] = Enqueued(job=admitted(job, stored_at), created=True)
                    if job.schedule_id:
                        after.append(("ZADD", k.runs(job.schedule_id), 0, job.id))
                    if i not in fresh:
                        after.append(("HSET", k.jobq, job.id, job.queue))
            if added:
                after += [("LPUSH", k.changes, "1"), ("LTRIM", k.changes, 0, 0)]
            # Jobs whose id is stored in another queue are read after the scripts ran: the job
            # may be one this batch just stored there.
            reads = [("HGETALL", k.job(q, jobs[i].id)) for i, q in foreign]
            _, hashes = await self._pipeline("enqueue", [], [*after, *reads])
            hashes = hashes[len(after):]
            todo = []
            for (i, q), h in zip(foreign, hashes, strict=True):
                if h:
                    answers[i] = Enqueued(job=_decode_job(_from_hash(h)), created=False)
                else:
                    stale[i] = q
                    todo.append(i)
            if not todo:
                break
        else:
            raise BackendUnavailable("redis enqueue: the id index kept changing; retry it")
        return [answers[i] for i in range(len(jobs))]

    async def _enqueue_one_server(self, jobs: Sequence[NewJob], now: datetime
                                  ) -> list[Enqueued]:
        """On one server (not a cluster) a part is one script call, one round trip: the jobs,
        their id index entries, the set of queues and the schedules' run indexes together
        (``enqueue_server.lua``); the steps a cluster needs (above) cost a single awaited
        enqueue more than twice the time."""
        k = self._keys
        now_ms = _ms(now)
        _, queue_keys, args = self._enqueue_call(jobs, now_ms)
        keys = [k.queues, k.jobq, k.changes, k.runs_prefix, *queue_keys]
        answers = await self._run("enqueue_server", keys, [*args, k.prefix])
        out: list[Enqueued] = []
        stored_at = _dt(now_ms)
        for job, answer in zip(jobs, answers, strict=True):
            if isinstance(answer, list):
                out.append(Enqueued(job=_decode_job(_unpack(answer)), created=False))
            else:
                # as the script stored it (new_job_fields in _common.lua applies this rule)
                out.append(Enqueued(job=admitted(job, stored_at), created=True))
        return out

    async def _index(self, entries: Sequence[tuple[str, str, str]]) -> list[str]:
        """Write ``(id, queue, stale)`` entries in the global id index where there is none, or
        where the entry names ``stale`` (compare-and-set); answer each entry as it was ('' for
        none). Without a stale entry to move this is HSETNX per id and one HMGET, in one
        pipeline (no script call: enqueue stays one script per queue); else the ``index``
        script, atomic on the index."""
        k = self._keys
        if any(stale for _, _, stale in entries):
            flat = [x for entry in entries for x in entry]
            return [_text(e) for e in await self._run("index", [k.jobq], flat)]
        commands: list[tuple[Any, ...]] = [("HSETNX", k.jobq, job_id, q)
                                           for job_id, q, _ in entries]
        commands.append(("HMGET", k.jobq, *(job_id for job_id, _, _ in entries)))
        _, replies = await self._pipeline("enqueue", [], commands)
        current = replies.pop()
        return ["" if set_now else _text(entry)
                for set_now, entry in zip(replies, current, strict=True)]

    def _enqueue_call(self, jobs: Sequence[NewJob], now_ms: int) -> _Call:
        """The enqueue script's call for ``jobs`` (of one queue or several)."""
        k = self._keys
        queues: dict[str, int] = {}
        for job in jobs:
            queues.setdefault(job.queue, len(queues) + 1)
        keys: list[str] = []
        for q in queues:
            keys += [
                k.q(q, "ready"),
                k.q(q, "scheduled"),
                k.ids(q, "queued"),
                k.q(q, "idem"),
                k.q(q, "wake"),
                k.q(q, "changes"),
                k.job_prefix(q),
                k.ids(q, "scheduled"),
            ]
        keys += [k.job(job.queue, job.id) for job in jobs]
        fields: list[str] = []
        for job in jobs:
            fields += [
                job.id,
                str(queues[job.queue]),
                job.handler,
                job.payload_json.decode(),  # Redis' cmsgpack reads str, not the bin type
                str(job.priority),
                "" if job.run_at is None else str(_ms(job.run_at)),
                str(job.max_retries),
                repr(float(job.timeout)),
                job.idempotency_key or "",
                job.schedule_id or "",
                job.trace_context or "",
            ]
        return "enqueue", keys, [now_ms, len(queues), len(jobs), _WAKE_CAP, *queues,
                                 _pack(fields)]

    def _slot_groups(self, queues: Sequence[str]) -> dict[Any, list[int]]:
        """Indexes into ``queues`` grouped as one script call may take them: all in one
        group on one server, by hash slot on a cluster (in order of first appearance)."""
        groups: dict[Any, list[int]] = {}
        for n, q in enumerate(queues):
            groups.setdefault(key_slot(self._keys.q(q, "").encode()) if self._cluster else 0,
                              []).append(n)
        return groups

    # -- consumer -----------------------------------------------------------------------------

    async def claim(
        self,
        queues: Sequence[str],
        *,
        limit: int,
        lease_for: timedelta,
        worker_id: str,
        now: datetime,
    ) -> list[Lease]:
        """Lease up to ``limit`` QUEUED jobs, trying ``queues`` in order.

        On one server this is one script over every queue given (one atomic step, one round
        trip, however many queues), the one script call whose keys span hash slots. On a
        cluster it is one script per run of consecutive queues in one slot (each an atomic
        step on that slot), tried in order until ``limit`` are leased: a job that becomes
        ready in an earlier queue while a later one is claimed from waits for the next claim,
        as it would had it come a moment later.
        """
        names = list(dict.fromkeys(queues))
        leases: list[Lease] = []
        for group in self._claim_groups(names):
            if len(leases) >= limit:
                break
            keys, args = self._claim_call(group, limit - len(leases), lease_for, worker_id, now)
            claimed = await self._run("claim", keys, args)
            leases += [_decode_lease(_unpack(raw)) for raw in claimed]
        return leases

    def _claim_groups(self, queues: list[str]) -> list[list[str]]:
        """The queues one claim script takes at a time (see ``claim``)."""
        if not self._cluster:
            return [queues] if queues else []
        groups: list[list[str]] = []
        for q in queues:
            if groups and key_slot(self._keys.q(groups[-1][0], "").encode()) == key_slot(
                    self._keys.q(q, "").encode()):
                groups[-1].append(q)
            else:
                groups.append([q])
        return groups

    def _claim_call(self, queues: Sequence[str], want: int, lease_for: timedelta,
                    worker_id: str, now: datetime) -> tuple[list[Any], list[Any]]:
        """The keys and arguments of the claim script for ``want`` jobs of ``queues``."""
        k = self._keys
        keys: list[Any] = []
        for q in queues:
            keys += [
                k.q(q, "ready"),
                k.q(q, "running"),
                k.q(q, "paused"),
                k.q(q, "changes"),
                k.q(q, "wake"),
                k.job_prefix(q),
                k.att_prefix(q),
                k.q(q, "waits"),
                k.ids(q, "queued"),
                k.ids(q, "running"),
            ]
        raw = secrets.token_hex(12 * want)  # one read of the OS's random source for them all
        tokens = [raw[i : i + 24] for i in range(0, 24 * want, 24)]
        return keys, [_ms(now), lease_for // _MS, worker_id, WAITS_KEPT, len(queues), *tokens]

    async def wait_for_jobs(self, queues: Sequence[str], *, timeout: float) -> None:
        """Block on the queues' wake lists (BLPOP on a dedicated connection pool).

        Enqueue, promote, release, requeue and resume push one token per job made ready (at
        most 64 pending per queue), so each ready job can wake one waiting worker within a
        round trip. A leftover token makes a later wait return early, which the protocol allows.
        """
        if timeout <= 0:
            await asyncio.sleep(0)
            return
        if not queues:
            await asyncio.sleep(timeout)
            return
        await self._blpop([self._keys.q(q, "wake") for q in queues], timeout)

    async def _blpop(self, keys: list[str], timeout: float) -> None:
        """Return when one of ``keys`` (lists) had an element to pop, or after ``timeout``.

        On one server this is one BLPOP over every key. A cluster refuses a BLPOP over keys of
        several slots, so there it is one BLPOP per slot, concurrently (each on a connection
        of its own to that slot's master); the first to return ends the wait and the others
        are cancelled (which drops their connections). A token one of those had popped just
        before is lost, which costs at most one other waiter a wait until its timeout.
        """
        if not self._cluster:
            await self._blpop_slot(keys, timeout)
            return
        by_slot: dict[int, list[str]] = {}
        for key in keys:
            by_slot.setdefault(key_slot(key.encode()), []).append(key)
        if len(by_slot) == 1:
            await self._blpop_slot(keys, timeout)
            return
        waits = [asyncio.ensure_future(self._blpop_slot(group, timeout))
                 for group in by_slot.values()]
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        for wait in done:
            wait.result()  # a failed wait raises its BackendUnavailable

    async def _blpop_slot(self, keys: list[str], timeout: float) -> None:
        block = max(timeout, 0.01)
        # The blocking pool has no socket timeout (a read may legitimately wait ``block``
        # seconds), so a silent network failure would hang the read: this deadline bounds it.
        # Missing it means Redis did not answer, i.e. BackendUnavailable (asyncio's
        # TimeoutError is an OSError); cancelling makes redis-py drop the connection, so no
        # stale reply is ever read by the next waiter.
        grace = self._socket_timeout
        with _driver_errors("blpop"):
            async with asyncio.timeout(block + grace):
                await self._b().blpop(keys, timeout=block)

    async def request_stack(self, job_id: str, *, now: datetime) -> Job | None:
        """Ask the running handler's stack; one script on the job's hash (its queue's slot)."""
        [q] = await self._queues_of([job_id])
        if q is None:
            return None
        raw = await self._run("stack", [self._keys.job(q, job_id)], ["ask"])
        return _decode_job(_unpack(raw)) if raw else None

    async def note_attempt(self, job_id: str, attempt: int, worker_id: str, traceback: str
                           ) -> bool:
        """Add a traceback to a closed attempt record; one script on the job's attempt list."""
        [q] = await self._queues_of([job_id])
        if q is None:
            return False
        return bool(await self._run("note", [self._keys.att(q, job_id)],
                                    [str(attempt), worker_id, traceback]))

    async def put_stack(self, lease: Lease, stack: str, *, now: datetime) -> bool:
        """Store the worker's answer, fenced by the lease token."""
        key = self._keys.job(lease.job.queue, lease.job_id)
        return bool(await self._run("stack", [key], ["put", lease.token, stack, _ms(now)]))

    async def report_progress(self, items: Sequence[Progress], *, now: datetime) -> list[bool]:
        """Store how far running jobs are, fenced by token: one script per queue among them
        (each in its queue's slot); see ``Backend.report_progress``."""
        k = self._keys
        out = [False] * len(items)
        for q, idx in _group(items, lambda item: item.lease.job.queue).items():
            keys = [k.job(q, items[i].lease.job.id) for i in idx]
            args: list[Any] = []
            for i in idx:
                item = items[i]
                args += [item.lease.token, repr(item.fraction),
                         "" if item.message is None else "=" + item.message]
            answers = await self._run("progress", keys, args)
            for i, answer in zip(idx, answers, strict=True):
                out[i] = bool(answer)
        return out

    async def extend(
        self, leases: Sequence[Lease], *, lease_for: timedelta, now: datetime
    ) -> list[LeaseStatus]:
        """Heartbeat leases: one script per queue among them (see the Backend protocol)."""
        k = self._keys
        out: list[LeaseStatus] = [LeaseStatus.LOST] * len(leases)
        for q, idx in _group(leases, lambda lease: lease.job.queue).items():
            keys = [k.q(q, "running"), *(k.job(q, leases[i].job.id) for i in idx)]
            args = [_ms(now), lease_for // _MS, *(leases[i].token for i in idx)]
            answers = await self._run("extend", keys, args)
            for i, answer in zip(idx, answers, strict=True):
                out[i] = _LEASE_STATUS[answer]
        return out

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
        """``finish`` then ``claim`` in one round trip: the finish scripts (one per queue of
        the items) and the claim script go out in one pipeline, and Redis runs them in that
        order; see ``Backend.finish_and_claim``. On a cluster the pipeline claims from the first
        queue's slot, and when that leaves the claim short the next queues are claimed from as
        ``claim`` does. A script Redis no
        longer knows (after a restart) is loaded and run again on its own."""
        calls = self._finish_calls(items, now)
        claimed = list(dict.fromkeys(queues))
        claim_first = bool(claimed) and limit > 0
        if not calls and not claim_first:
            return [], []
        sent: list[_Call] = [("finish", keys, args) for _, keys, args in calls]
        if claim_first:
            first = self._claim_groups(claimed)[0]
            sent.append(("claim", *self._claim_call(first, limit, lease_for, worker_id, now)))
        replies, _ = await self._pipeline("finish_and_claim", sent, replicated=bool(calls))
        applied = [False] * len(items)
        for (idx, _, _), answers in zip(calls, replies, strict=False):
            for i, answer in zip(idx, answers, strict=True):
                applied[i] = bool(answer)
        leases: list[Lease] = []
        if claim_first:
            leases = [_decode_lease(_unpack(raw)) for raw in replies[-1]]
            if len(leases) < limit and len(claimed) > len(first):
                leases += await self.claim(claimed[len(first):], limit=limit - len(leases),
                                           lease_for=lease_for, worker_id=worker_id, now=now)
        return applied, leases

    async def finish(self, items: Sequence[Finish], *, now: datetime) -> list[bool]:
        """End runs, fenced by token; one script for all the items of one queue, which also
        adds them to the queue's throughput counters for the minute of ``now``."""
        out = [False] * len(items)
        for idx, keys, args in self._finish_calls(items, now):
            answers = await self._run("finish", keys, args)
            for i, answer in zip(idx, answers, strict=True):
                out[i] = bool(answer)
        return out

    def _finish_calls(self, items: Sequence[Finish], now: datetime
                      ) -> list[tuple[list[int], list[Any], list[Any]]]:
        """Per queue of ``items``: the indexes of its items, and the finish script's keys and
        arguments for them."""
        k = self._keys
        minute = minute_of(now)
        calls: list[tuple[list[int], list[Any], list[Any]]] = []
        for q, idx in _group(items, lambda item: item.lease.job.queue).items():
            keys: list[Any] = [
                k.q(q, "ready"),
                k.q(q, "running"),
                k.q(q, "retrying"),
                k.q(q, "completed"),
                k.q(q, "dead"),
                k.q(q, "cancelled"),
                k.q(q, "wake"),
                k.q(q, "changes"),
                k.q(q, "tput"),
                *(k.ids(q, state) for state in _FINISH_STATES),
            ]
            fields: list[str] = []
            for i in idx:
                item = items[i]
                job_id = item.lease.job.id
                keys += [k.job(q, job_id), k.att(q, job_id)]
                err = item.error
                fields += [
                    item.lease.token,
                    str(item.outcome),
                    "" if item.result_json is None else item.result_json.decode(),
                    "" if err is None else "=" + str(err),
                    "" if err is None else "=" + err.type,
                    "" if err is None else "=" + err.message,
                    "" if err is None or err.traceback is None else "=" + err.traceback,
                    "" if item.retry_at is None else str(_ms(item.retry_at)),
                    str(OUTCOME_TO_ATTEMPT[item.outcome]),
                    "",
                ]
            args = [_ms(now), _WAKE_CAP, _pack(fields), minute, minute - COUNTER_RETENTION_MINUTES,
                    _TPUT_PRUNE_AT]
            calls.append((list(idx), keys, args))
        return calls

    # -- scheduler ----------------------------------------------------------------------------

    async def _known_queues(self) -> list[str]:
        with _driver_errors("smembers"):
            members = await self._r().smembers(self._keys.queues)
        return sorted(_text(m) for m in members)

    async def promote(self, *, now: datetime, limit: int) -> int:
        """Move due SCHEDULED/RETRYING jobs to QUEUED, one script per known queue."""
        k = self._keys
        moved = 0
        for q in await self._known_queues():
            if moved >= limit:
                break
            keys = [
                k.q(q, "scheduled"),
                k.q(q, "retrying"),
                k.q(q, "ready"),
                k.q(q, "wake"),
                k.job_prefix(q),
                k.ids(q, "scheduled"),
                k.ids(q, "retrying"),
                k.ids(q, "queued"),
            ]
            moved += int(await self._run("promote", keys, [_ms(now), limit - moved, _WAKE_CAP]))
        return moved

    async def next_wakeup(self, *, now: datetime) -> datetime | None:
        """Earliest run_at of a SCHEDULED/RETRYING job or lease expiry, over every queue."""
        queues = await self._known_queues()
        if not queues:
            return None
        k = self._keys
        with _driver_errors("next_wakeup"):
            async with self._r().pipeline(transaction=False) as pipe:
                for q in queues:
                    for part in ("scheduled", "retrying", "running"):
                        pipe.zrange(k.q(q, part), 0, 0, withscores=True)
                results = await pipe.execute()
        scores = [score for result in results for _member, score in result]
        return _dt(min(scores)) if scores else None

    async def wait_for_changes(self, *, timeout: float) -> None:
        """Block on the queues' scheduler wake lists (and the global one for new queues)."""
        if timeout <= 0:
            await asyncio.sleep(0)
            return
        queues = await self._known_queues()
        keys = [self._keys.changes, *(self._keys.q(q, "changes") for q in queues)]
        await self._blpop(keys, timeout)

    async def expired_leases(self, *, now: datetime, limit: int) -> list[Lease]:
        """RUNNING jobs whose lease expired before ``now``, oldest expiry first."""
        if limit <= 0:
            return []
        k = self._keys
        found: list[Lease] = []
        for q in await self._known_queues():
            raw = await self._run(
                "expired", [k.q(q, "running"), k.job_prefix(q)], [_ms(now), limit]
            )
            found.extend(_decode_lease(_unpack(job)) for job in raw)
        found.sort(key=lambda lease: (lease.expires_at, lease.job.id))
        return found[:limit]

    async def purge(
        self,
        *,
        states: Collection[JobState],
        finished_before: datetime,
        queue: str | None = None,
        limit: int = 1000,
    ) -> int:
        """Delete terminal jobs finished before the horizon, one script per queue."""
        wanted = [s for s in JobState if s in states and s in TERMINAL_STATES]
        if not wanted or limit <= 0:
            return 0
        k = self._keys
        queues = [queue] if queue is not None else await self._known_queues()
        deleted: list[str] = []
        for q in queues:
            left = limit - len(deleted)
            if left <= 0:
                break
            keys = [k.q(q, "idem"), k.job_prefix(q), k.att_prefix(q)]
            for state in wanted:
                keys += [k.q(q, STATE_INDEX[str(state)]), k.ids(q, str(state))]
            flat = await self._run("purge", keys, [_ms(finished_before), left])
            gone = [(_text(flat[n]), _text(flat[n + 1])) for n in range(0, len(flat), 2)]
            await self._unindex(q, gone)
            deleted += [job_id for job_id, _ in gone]
        return len(deleted)

    async def _unindex(self, q: str, gone: Sequence[tuple[str, str]]) -> None:
        """After jobs of queue ``q`` were deleted (``(id, schedule id or '')`` each): drop their
        entries from the global id index (each only while it still names ``q``) and from their
        schedules' run indexes, in one pipeline (those keys are in other slots than the
        queue's). Until then an entry names a job that is gone, which readers skip."""
        if not gone:
            return
        k = self._keys
        flat = [x for job_id, _ in gone for x in (job_id, q)]
        runs = [("ZREM", k.runs(sid), job_id) for job_id, sid in gone if sid]
        await self._pipeline("purge index", [("unindex", [k.jobq], flat)], runs)

    # -- inspection and admin -----------------------------------------------------------------

    async def _queues_of(self, job_ids: Sequence[str]) -> list[str | None]:
        if not job_ids:
            return []
        with _driver_errors("hmget"):
            raw = await self._r().hmget(self._keys.jobq, list(job_ids))
        return [None if q is None else _text(q) for q in raw]

    async def get(self, job_id: str) -> Job | None:
        """The job, or None if there is no such job."""
        [job] = await self.get_many([job_id])
        return job

    async def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        """``get`` for several ids (two round trips: the id index, then the hashes)."""
        return await self._jobs_of(job_ids)

    async def _jobs_of(self, job_ids: Sequence[str]) -> list[Job | None]:
        queues = await self._queues_of(job_ids)
        present = [(i, q) for i, q in enumerate(queues) if q is not None]
        out: list[Job | None] = [None] * len(job_ids)
        if not present:
            return out
        with _driver_errors("get"):
            async with self._r().pipeline(transaction=False) as pipe:
                for i, q in present:
                    pipe.hgetall(self._keys.job(q, job_ids[i]))
                hashes = await pipe.execute(raise_on_error=False)
        for (i, _q), h in zip(present, hashes, strict=True):
            if isinstance(h, rex.ResponseError) and str(h).startswith("WRONGTYPE"):
                # An index entry is written before its job (see enqueue): when the job's
                # enqueue failed on a foreign key of the job's name, that key is no job.
                continue
            if isinstance(h, Exception):
                with _driver_errors("get"):
                    raise h
            if h:
                out[i] = _decode_job(_from_hash(h))
        return out

    async def attempts(self, job_id: str) -> list[Attempt]:
        """The job's attempt records, oldest first (empty for an unknown job)."""
        [q] = await self._queues_of([job_id])
        if q is None:
            return []
        with _driver_errors("attempts"):
            raw = await self._r().lrange(self._keys.att(q, job_id), 0, -1)
        return [_decode_attempt(job_id, _bytes(rec)) for rec in raw]

    async def list_jobs(self, query: JobQuery) -> Page:
        """Jobs matching every filter, newest first; pages end at a cursor (the last id).

        One read-only script per queue listed (the queue named, or every known queue), all in
        one pipeline. Each merges, newest first, the queue's per-state id indexes of the
        states asked for (all seven without a state filter), and applies the other filters
        (handler, error type, finish window) to each job's hash as it goes. With a finish
        window, the terminal states' sorted sets (scored by finished_at) are read by score
        instead where the window holds few of their jobs. The queues' pages are merged by id
        here (``_merge_pages``); each script is a snapshot of its queue, the page is not one
        snapshot of every queue. The scripts walk at most ``_PAGE_SCAN`` ids per call in all
        (shared by the queues): when the filters match rarely the page ends early with a
        cursor (the protocol allows short pages). With ``schedule_id``, the schedule's run
        index is walked instead (whatever queues the runs are in), under the same bound.
        """
        if query.empty:
            return Page(jobs=[], next_cursor=None)
        asked = query.listed_states()
        wanted = None if asked is None else [str(s) for s in JobState if s in asked]
        limit, queue = query.limit, query.queue
        lo = None if query.finished_after is None else to_ms_ceil(query.finished_after)
        hi = None if query.finished_before is None else to_ms_ceil(query.finished_before)
        start = "+" if query.cursor is None else "(" + query.cursor
        filters: list[Any] = [
            query.handler or "",
            "" if query.error_type is None else "=" + query.error_type,
            "" if lo is None else lo,
            "" if hi is None else hi,
        ]
        k = self._keys
        if query.schedule_id is not None:
            return await self._list_runs(query.schedule_id, query, start)
        queues = [queue] if queue is not None else await self._known_queues()
        if not queues:
            return Page(jobs=[], next_cursor=None)
        listed = wanted or list(_STATES)
        budget = max(_PAGE_SCAN // len(queues), 1)  # the call's bound, shared by the queues
        calls: list[_Call] = []
        for q in queues:
            keys = [k.job_prefix(q)]
            for state in listed:
                keys += [k.ids(q, state), k.q(q, STATE_INDEX[state])]
            calls.append(("list", keys, [start, limit, budget, *filters, _WINDOW_READ,
                                         len(listed)]))
        replies, _ = await self._pipeline("list", calls)
        return _merge_pages(
            [([_decode_job(_unpack(h)) for h in raw], _text(cut) if cut else None)
             for raw, cut in replies],
            limit,
        )

    async def _list_runs(self, schedule_id: str, query: JobQuery, start: str) -> Page:
        """list_jobs with ``schedule_id``: the schedule's run index newest first, in chunks
        (a chunk of ids, their queues from the id index, then their hashes: three round
        trips, each over one slot or a pipeline), walking at most ``_PAGE_SCAN`` ids. Runs
        whose job is gone are skipped."""
        limit = query.limit
        k = self._keys
        out: list[Job] = []
        last_match: str | None = None
        walked = 0
        frm = start
        chunk = min(32, limit + 1)
        while True:
            with _driver_errors("list"):
                raw = await self._r().zrevrangebylex(k.runs(schedule_id), frm, "-", 0, chunk)
            ids = [_text(i) for i in raw]
            found = await self._jobs_of(ids)
            for job_id, job in zip(ids, found, strict=True):
                if walked >= _PAGE_SCAN:
                    return Page(jobs=out, next_cursor=frm[1:])
                walked += 1
                frm = "(" + job_id
                if job is None or not query.matches(job):
                    continue
                if len(out) >= limit:
                    return Page(jobs=out, next_cursor=last_match)
                out.append(job)
                last_match = job_id
            if len(ids) < chunk:
                return Page(jobs=out, next_cursor=None)
            chunk = min(chunk * 2, 256)

    async def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """Counts by state (ZCARD of each state's index), the paused flag and the oldest
        queued run_at, by queue name, in one pipeline.

        ``oldest_queued_at``: the ready set is scored ``priority * 10**13 + run_at_ms``, so the
        first member of each priority band (ZRANGEBYSCORE ... LIMIT 0 1, ten per queue) holds
        that band's smallest run_at, and the smallest of those is the queue's.
        """
        # Each queue once, in the order first asked (every known queue by name when None).
        names = list(dict.fromkeys(queues)) if queues is not None else await self._known_queues()
        if not names:
            return []
        k = self._keys
        with _driver_errors("stats"):
            async with self._r().pipeline(transaction=False) as pipe:
                for q in names:
                    for state in JobState:
                        pipe.zcard(k.q(q, STATE_INDEX[str(state)]))
                    pipe.exists(k.q(q, "paused"))
                    for band in range(10):
                        pipe.zrangebyscore(
                            k.q(q, "ready"), band * _BAND, f"({(band + 1) * _BAND}",
                            start=0, num=1, withscores=True,
                        )
                results = await pipe.execute()
        states = len(JobState)
        width = states + 1 + 10
        out: list[QueueStats] = []
        for n, q in enumerate(names):
            row = results[n * width : (n + 1) * width]
            counts = {state: int(c) for state, c in zip(JobState, row, strict=False)}
            firsts = [
                int(score) - band * _BAND
                for band, first in enumerate(row[states + 1 :])
                for _member, score in first
            ]
            out.append(
                QueueStats(
                    queue=q,
                    counts=counts,
                    paused=bool(row[states]),
                    oldest_queued_at=_dt(min(firsts)) if firsts else None,
                )
            )
        return out

    async def count_jobs(
        self,
        *,
        states: Collection[JobState],
        queue: str | None = None,
        finished_before: datetime | None = None,
    ) -> int:
        """ZCARD of each state index (ZCOUNT of the terminal ones, scored by finished_at,
        with ``finished_before``), summed over the queues, in one pipeline."""
        wanted = [s for s in JobState if s in set(states)]
        if finished_before is not None:
            wanted = [s for s in wanted if s in TERMINAL_STATES]  # the others have no finish
        if not wanted:
            return 0
        queues = [queue] if queue is not None else await self._known_queues()
        if not queues:
            return 0
        k = self._keys
        before = None if finished_before is None else f"({to_ms_ceil(finished_before)}"
        with _driver_errors("count_jobs"):
            async with self._r().pipeline(transaction=False) as pipe:
                for q in queues:
                    for state in wanted:
                        index = k.q(q, STATE_INDEX[str(state)])
                        if before is None:
                            pipe.zcard(index)
                        else:
                            pipe.zcount(index, "-inf", before)
                results = await pipe.execute()
        return sum(int(r) for r in results)

    async def throughput(
        self,
        *,
        since: datetime,
        until: datetime,
        bucket: timedelta,
        queue: str | None = None,
    ) -> list[ThroughputBucket]:
        """Sums of the queues' per-minute counter hashes; see ``Backend.throughput``.

        One command per queue in one pipeline: HMGET of the minutes asked for, or HGETALL when
        they are more than a hash holds (it is pruned to about 26 h of minutes).
        """
        first, count, per = bucket_plan(since, until, bucket)
        if count == 0:
            return []
        queues = [queue] if queue is not None else await self._known_queues()
        fields = [str(m) for m in range(first, first + count * per)]
        whole = len(fields) > _TPUT_PRUNE_AT
        k = self._keys
        with _driver_errors("throughput"):
            async with self._r().pipeline(transaction=False) as pipe:
                for q in queues:
                    if whole:
                        pipe.hgetall(k.q(q, "tput"))
                    else:
                        pipe.hmget(k.q(q, "tput"), fields)
                results = await pipe.execute()
        minutes: dict[int, Counts] = {}
        for result in results:
            pairs = (
                result.items()
                if whole
                else ((f, v) for f, v in zip(fields, result, strict=True) if v is not None)
            )
            for field, value in pairs:
                completed, failed, dead = (int(x) for x in _text(value).split(":"))
                minute = int(_text(field))
                c0, f0, d0 = minutes.get(minute, (0, 0, 0))
                minutes[minute] = (c0 + completed, f0 + failed, d0 + dead)
        return fold_minutes(first, count, per, minutes)

    async def recent_waits(self, queue: str, *, limit: int = 500) -> list[float]:
        """The head of the queue's waits list (newest first); see ``Backend.recent_waits``."""
        if limit <= 0:
            return []
        with _driver_errors("recent_waits"):
            raw = await self._r().lrange(
                self._keys.q(queue, "waits"), 0, min(limit, WAITS_KEPT) - 1
            )
        return [int(ms) / 1000 for ms in raw]

    # -- audit log ------------------------------------------------------------------------------

    async def append_audit(self, entry: AuditEntry) -> None:
        """ZADD the entry's JSON to ``P:audit`` by its time; see ``Backend.append_audit``."""
        with _driver_errors("append_audit"):
            await self._r().zadd(self._keys.audit, {entry.encode(): _ms(entry.at)})

    async def list_audit(self, *, filters: AuditFilter | None = None, limit: int = 50,
                         cursor: str | None = None) -> AuditPage:
        """Entries newest first: ``P:audit`` read in bounded steps (ZREVRANGEBYSCORE) and
        filtered (``core.audit.scan_page``); see ``Backend.list_audit``."""
        key = self._keys.audit

        async def fetch(below: tuple[int, str] | None, n: int) -> list[AuditEntry]:
            with _driver_errors("list_audit"):
                if below is None:
                    raw = await self._r().zrevrangebyscore(key, "+inf", "-inf", start=0, num=n)
                    return [AuditEntry.decode(cast(bytes, item)) for item in raw]
                ms, entry_id = below
                async with self._r().pipeline(transaction=False) as pipe:
                    pipe.zrevrangebyscore(key, ms, ms)  # the entries of the cursor's millisecond
                    pipe.zrevrangebyscore(key, f"({ms}", "-inf", start=0, num=n)
                    same, older = await pipe.execute()
            found = [e for e in map(AuditEntry.decode, same) if e.id < entry_id]
            found += map(AuditEntry.decode, older)
            return found[:n]

        return await scan_page(fetch, filters, limit, cursor)

    async def purge_audit(self, *, before: datetime, limit: int = 1000) -> int:
        """ZREM the oldest entries before ``before`` (read first, so exactly those go); see
        ``Backend.purge_audit``."""
        if limit <= 0:
            return 0
        key = self._keys.audit
        with _driver_errors("purge_audit"):
            old = await self._r().zrangebyscore(key, "-inf", f"({to_ms_ceil(before)}",
                                                start=0, num=limit)
            if not old:
                return 0
            return int(await self._r().zrem(key, *old))

    async def beat(self, name: str, *, now: datetime) -> None:
        """Record a component's beat in one script; see ``Backend.beat``."""
        await self._run("beat", [self._keys.beats], [name, _ms(now), _ms(now - BEAT_HORIZON)])

    async def beats(self, *, now: datetime | None = None) -> dict[str, datetime]:
        """Components that beat within 24 h of ``now``, by name; see ``Backend.beats``."""
        horizon = to_ms_ceil((utcnow() if now is None else now) - BEAT_HORIZON)
        with _driver_errors("beats"):
            raw = await self._r().hgetall(self._keys.beats)
        found = {_text(name): int(at) for name, at in raw.items()}
        return {name: _dt(at) for name, at in sorted(found.items()) if at >= horizon}

    async def count_finished(
        self, *, since: datetime, queue: str | None = None
    ) -> dict[JobState, int]:
        """Jobs per terminal state finished at or after ``since``: ZCOUNT of each queue's
        terminal-state index (scored by finished_at ms), all in one pipeline.

        Each ZCOUNT is O(log n); the pipeline is not a transaction (like ``stats``), so the
        counts of different queues may be a few milliseconds apart.
        """
        states = [s for s in JobState if s in TERMINAL_STATES]
        counts = dict.fromkeys(states, 0)
        queues = [queue] if queue is not None else await self._known_queues()
        if not queues:
            return counts
        # Scores are whole milliseconds: ``>= since`` is ``>= since rounded up``.
        since_ms = -((_EPOCH - since) // _MS)
        k = self._keys
        with _driver_errors("count_finished"):
            async with self._r().pipeline(transaction=False) as pipe:
                for q in queues:
                    for state in states:
                        pipe.zcount(k.q(q, STATE_INDEX[str(state)]), since_ms, "+inf")
                results = await pipe.execute()
        for n, result in enumerate(results):
            counts[states[n % len(states)]] += int(result)
        return counts

    async def cancel(self, job_id: str, *, now: datetime) -> Job | None:
        """Cancel a job (see the Backend protocol); one script on the job's queue."""
        [q] = await self._queues_of([job_id])
        if q is None:
            return None
        k = self._keys
        keys = [
            k.job(q, job_id),
            k.q(q, "ready"),
            k.q(q, "scheduled"),
            k.q(q, "retrying"),
            k.q(q, "cancelled"),
            k.ids(q, "queued"),
            k.ids(q, "scheduled"),
            k.ids(q, "retrying"),
            k.ids(q, "cancelled"),
        ]
        raw = await self._run("cancel", keys, [_ms(now)])
        return _decode_job(_unpack(raw)) if raw else None

    async def requeue(self, job_ids: Sequence[str], *, now: datetime) -> list[str]:
        """Move DEAD/CANCELLED jobs back to QUEUED; one script per queue among them."""
        queues = await self._queues_of(job_ids)
        k = self._keys
        by_queue: dict[str, list[str]] = {}
        for job_id, q in zip(job_ids, queues, strict=True):
            if q is not None:
                by_queue.setdefault(q, []).append(job_id)
        moved: set[str] = set()
        for q, ids in by_queue.items():
            keys = [
                k.q(q, "ready"),
                k.q(q, "dead"),
                k.q(q, "cancelled"),
                k.q(q, "wake"),
                k.ids(q, "queued"),
                k.ids(q, "dead"),
                k.ids(q, "cancelled"),
                *(k.job(q, i) for i in dict.fromkeys(ids)),
            ]
            answer = await self._run("requeue", keys, [_ms(now), _WAKE_CAP])
            moved.update(i.decode() for i in answer)
        return [i for i in dict.fromkeys(job_ids) if i in moved]

    async def set_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume a queue; resuming wakes waiting workers. The queue becomes known
        first (a step of its own: the set of queues is in another slot than the queue)."""
        k = self._keys
        await self._register([queue])
        keys = [k.q(queue, "paused"), k.q(queue, "wake")]
        await self._run("pause", keys, ["1" if paused else "0", _WAKE_CAP])

    # -- schedules ----------------------------------------------------------------------------

    async def put_schedule(self, schedule: Schedule) -> None:
        """Insert or replace a schedule: its hash is rewritten whole by one script, then the
        schedule is added to the index and every scheduler's ``wait_for_changes`` is woken
        (one pipeline, in that order; the index and the changes list are other slots)."""
        k = self._keys
        fields = [x for pair in _encode_schedule(schedule).items() for x in pair]
        await self._pipeline(
            "put_schedule",
            [("schedule", [k.schedule(schedule.id)], fields)],
            [("SADD", k.schedules, schedule.id), ("LPUSH", k.changes, "1"),
             ("LTRIM", k.changes, 0, 0)],
        )

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        """The schedule, or None."""
        with _driver_errors("get_schedule"):
            h = await self._r().hgetall(self._keys.schedule(schedule_id))
        return _decode_schedule(h) if h else None

    async def list_schedules(self) -> list[Schedule]:
        """Every schedule, by id (the id set, then the hashes in one pipeline)."""
        k = self._keys
        with _driver_errors("list_schedules"):
            ids = sorted(_text(i) for i in await self._r().smembers(k.schedules))
            if not ids:
                return []
            async with self._r().pipeline(transaction=False) as pipe:
                for schedule_id in ids:
                    pipe.hgetall(k.schedule(schedule_id))
                hashes = await pipe.execute()
        return [_decode_schedule(h) for h in hashes if h]

    async def delete_schedule(self, schedule_id: str) -> bool:
        """Delete a schedule: its hash, then its index entry (one pipeline; list_schedules
        skips an id without a hash). Its runs and their index stay."""
        k = self._keys
        _, (deleted, _) = await self._pipeline(
            "delete_schedule", [], [("DEL", k.schedule(schedule_id)),
                                    ("SREM", k.schedules, schedule_id)])
        return bool(deleted)

    async def advance_schedule(self, schedule_id: str, fire_at: datetime) -> bool:
        """Compare-and-set max of ``last_fire_at`` in one script."""
        answer = await self._run("advance", [self._keys.schedule(schedule_id)], [_us(fire_at)])
        return bool(answer)

    async def purge_schedule_runs(self, schedule_id: str, *, keep: int, limit: int = 1000
                                  ) -> int:
        """Delete the schedule's terminal runs beyond its ``keep`` newest.

        The run index is walked newest first, ``_LIST_SCAN`` ids at most per chunk: the runs'
        queues (id index) and states are read, then per queue one ``drop`` script deletes the
        chosen runs that are still terminal (atomic per queue), then their id index and run
        index entries go (``_unindex``). A run whose job is gone is dropped from the index and
        does not count as kept.
        """
        if limit <= 0:
            return 0
        k = self._keys
        runs = k.runs(schedule_id)
        start, to_keep, deleted = "+", max(keep, 0), 0
        while deleted < limit:
            with _driver_errors("purge_schedule_runs"):
                raw = await self._r().zrevrangebylex(runs, start, "-", 0, _LIST_SCAN)
            ids = [_text(i) for i in raw]
            if not ids:
                break
            found = await self._jobs_of(ids)
            doomed: dict[str, list[str]] = {}
            ghosts: list[str] = []
            room = limit - deleted
            for job_id, job in zip(ids, found, strict=True):
                if job is None:
                    ghosts.append(job_id)
                elif to_keep > 0:
                    to_keep -= 1
                elif job.state in TERMINAL_STATES and room > 0:
                    doomed.setdefault(job.queue, []).append(job_id)
                    room -= 1
            queues = list(doomed)
            replies, _ = await self._pipeline(
                "purge_schedule_runs",
                [("drop", [k.q(q, "")], doomed[q]) for q in queues],
                [("ZREM", runs, *ghosts)] if ghosts else [],
            )
            for q, gone in zip(queues, replies, strict=True):
                await self._unindex(q, [(_text(i), schedule_id) for i in gone])
                deleted += len(gone)
            if len(ids) < _LIST_SCAN:
                break
            start = "(" + ids[-1]
        return deleted

    # -- workers ------------------------------------------------------------------------------

    async def report_worker(self, info: WorkerInfo, *, ttl: timedelta) -> None:
        """Record a worker heartbeat, listed until ``last_seen + ttl``."""
        doc = {
            "id": info.id,
            "host": info.host,
            "pid": info.pid,
            "roles": list(info.roles),
            "queues": list(info.queues),
            "concurrency": info.concurrency,
            "busy": info.busy,
            "started_at": _ms(info.started_at),
            "last_seen": _ms(info.last_seen),
            "processed": info.processed,
        }
        expires = _ms(info.last_seen + ttl)
        k = self._keys
        # The info first, then the expiry (list_workers skips an id without info), then the
        # info of the workers the expiry step forgot: workers and workerinfo are two slots.
        replies, _ = await self._pipeline(
            "report_worker",
            [("workers", [k.workers], [info.id, expires, _ms(info.last_seen)])],
            [("HSET", k.workerinfo, info.id, msgspec.json.encode(doc))],
        )
        if replies[0]:
            await self._pipeline("report_worker", [], [("HDEL", k.workerinfo, *replies[0])])

    async def remove_worker(self, worker_id: str) -> None:
        """Forget a worker (clean shutdown)."""
        k = self._keys
        await self._pipeline("remove_worker", [], [("ZREM", k.workers, worker_id),
                                                   ("HDEL", k.workerinfo, worker_id)])

    async def list_workers(self, *, now: datetime) -> list[WorkerInfo]:
        """Workers whose heartbeat is within its ttl at ``now``, by id."""
        k = self._keys
        with _driver_errors("list_workers"):
            # Listed while now <= last_seen + ttl: a worker exactly at its expiry still is.
            ids = await self._r().zrangebyscore(k.workers, _ms(now), "+inf")
            if not ids:
                return []
            docs = await self._r().hmget(k.workerinfo, [_text(i) for i in ids])
        out: list[WorkerInfo] = []
        for raw in docs:
            if raw is None:
                continue
            d = msgspec.json.decode(raw)
            out.append(
                WorkerInfo(
                    id=d["id"],
                    host=d["host"],
                    pid=d["pid"],
                    roles=tuple(d["roles"]),
                    queues=tuple(d["queues"]),
                    concurrency=d["concurrency"],
                    busy=d["busy"],
                    started_at=_dt(d["started_at"]),
                    last_seen=_dt(d["last_seen"]),
                    # absent from heartbeats written before workers reported it
                    processed=d.get("processed", 0),
                )
            )
        out.sort(key=lambda w: w.id)
        return out

    # -- operations ---------------------------------------------------------------------------

    async def memory_use(self) -> MemoryReport:
        """Redis' ``used_memory`` and ``maxmemory`` (summed over the masters of a cluster),
        and an estimate of each known queue's bytes; see ``MemoryUse``.

        Per queue, two pipelined round trips in its slot, whatever its size: MEMORY USAGE
        (``SAMPLES 5``) of each of its index keys, the size of each per-state id index and
        ``_JOB_SAMPLES`` random ids of each (ZRANDMEMBER), then MEMORY USAGE (every field) of
        those jobs' hashes and attempt lists: a state's jobs count as their number times the
        mean of its samples. The global id index (``jobq``, ~30 bytes a job) is in ``used_memory`` only. A
        report is reused for ``MEMORY_REPORT_SECONDS``.
        """
        cached = self._memory_report
        if cached is not None and time.monotonic() - cached[0] < MEMORY_REPORT_SECONDS:
            return cached[1]
        used, limit = await self._server_memory()
        queues = {q: await self._queue_memory(q) for q in await self._known_queues()}
        report = MemoryReport(used_bytes=used, max_bytes=limit, queues=queues,
                              taken_at=utcnow())
        self._memory_report = (time.monotonic(), report)
        return report

    async def _server_memory(self) -> tuple[int, int]:
        """``(used_memory, maxmemory)``: of the server, or summed over a cluster's masters."""
        if self._target is None:
            with _driver_errors("memory_use"):
                info = await self._r().info("memory")
            return int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
        cluster = cast(RedisCluster, self._r())
        with _driver_errors("memory_use"):
            await cluster.initialize()
            masters = cluster.get_primaries()
        used = limit = 0
        for node in masters:
            plain = self._node_client(node.host, int(node.port))
            try:
                with _driver_errors("memory_use"):
                    info = await plain.info("memory")
            finally:
                await plain.aclose()
            used += int(info.get("used_memory", 0))
            limit += int(info.get("maxmemory", 0))
        return used, limit

    async def _queue_memory(self, queue: str) -> int:
        """The estimated bytes of one queue: its index keys, and its jobs by sampling."""
        k = self._keys
        states = list(STATE_INDEX)
        keys = [k.q(queue, part) for part in _QUEUE_PARTS] + [k.ids(queue, st) for st in states]
        with _driver_errors("memory_use"):
            async with self._r().pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.memory_usage(key, samples=_USAGE_SAMPLES)
                for st in states:
                    pipe.zcard(k.ids(queue, st))
                    pipe.zrandmember(k.ids(queue, st), _JOB_SAMPLES)
                first = await pipe.execute()
        total = sum(int(n or 0) for n in first[:len(keys)])
        picks = first[len(keys):]
        counts = [int(n) for n in picks[0::2]]
        samples = [[_text(i) for i in (ids or ())] for ids in picks[1::2]]
        if not any(samples):
            return total
        with _driver_errors("memory_use"):
            async with self._r().pipeline(transaction=False) as pipe:
                for ids in samples:
                    for job_id in ids:
                        # SAMPLES 0: every field of a job (a few dozen); sampling a job's
                        # fields misjudges it by whether its payload was among them
                        pipe.memory_usage(k.job(queue, job_id), samples=0)
                        pipe.memory_usage(k.att(queue, job_id), samples=0)
                sizes = iter(await pipe.execute())
        for count, ids in zip(counts, samples, strict=True):
            if ids:
                each = [int(next(sizes) or 0) + int(next(sizes) or 0) for _ in ids]
                total += round(count * sum(each) / len(each))
        return total

    async def doctor(self) -> list[tuple[str, str, str]]:
        """Check the server for monoq: ``(check, level, message)`` with level ok, warn or error.

        - version: Redis >= 6.2 (error otherwise).
        - maxmemory-policy: must be ``noeviction``; any eviction policy can silently drop jobs
          (error). Managed services that refuse CONFIG GET give a warning instead.
        - persistence: AOF on is ok; RDB snapshots only is a warning that jobs acknowledged
          since the last snapshot are lost on a crash; no persistence at all is a warning too.

        On a cluster every master is checked (each check answers its worst level, naming the
        masters that are not ok), and ``redis.cluster`` reports ``cluster_state``.
        """
        if self._target is None:
            return await server_checks(self._r())
        cluster = cast(RedisCluster, self._r())
        with _driver_errors("doctor"):
            await cluster.initialize()
            info = await cluster.cluster_info()
            masters = cluster.get_primaries()
        found: dict[str, list[tuple[str, str, str]]] = {}
        for node in masters:
            plain = self._node_client(node.host, int(node.port))
            try:
                for name, level, message in await server_checks(plain):
                    found.setdefault(name, []).append((node.name, level, message))
            finally:
                await plain.aclose()
        state = _text(info.get("cluster_state", "unknown"))
        checks = [("redis.cluster", "ok" if state == "ok" else "error",
                   (f"cluster_state {state}, {len(masters)} masters, "
                   f"{_text(info.get('cluster_slots_ok', '?'))} of 16384 slots ok"))]
        rank = {"ok": 0, "warn": 1, "error": 2}
        for name, per_node in found.items():
            worst = max((level for _, level, _ in per_node), key=rank.__getitem__)
            messages = sorted({message for _, level, message in per_node if level == worst})
            where = [n for n, level, _ in per_node if level == worst]
            text = "; ".join(messages)
            checks.append((name, worst, text if worst == "ok" else f"{', '.join(where)}: {text}"))
        return checks

    def _node_client(self, host: str, port: int) -> aioredis.Redis:
        """A plain client of one node of the cluster, with the URL's credentials and TLS."""
        assert self._target is not None  # noqa: S101 - only for redis+cluster:// URLs
        tls: dict[str, Any] = dict(self._tls)
        if self._target.tls:
            tls["ssl"] = True
        return aioredis.Redis(host=host, port=port, username=self._target.username,
                              password=self._target.password,
                              socket_timeout=self._socket_timeout,
                              socket_connect_timeout=self._connect_timeout,
                              retry=ConnectionRetry(NoBackoff(), 0), **tls)


def _group(items: Sequence[_T], queue_of: Callable[[_T], str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(queue_of(item), []).append(i)
    return groups


def _merge_pages(pages: Sequence[tuple[list[Job], str | None]], limit: int) -> Page:
    """One list_jobs page from the pages of several queues, each newest first (ids in byte
    order) with the id its walk stopped at (None when it walked to the end).

    A queue that stopped at ``c`` said nothing of its ids below ``c``; so the merged page holds
    only the matches at or above the highest such stop, ``m``, and ends at ``m`` unless it is
    full before.
    """
    stops = [cut for _, cut in pages if cut is not None]
    floor = max(stops, key=_id_order) if stops else None
    jobs = [job for found, _ in pages for job in found
            if floor is None or _id_order(job.id) >= _id_order(floor)]
    jobs.sort(key=lambda job: _id_order(job.id), reverse=True)
    if len(jobs) > limit:
        return Page(jobs=jobs[:limit], next_cursor=jobs[limit - 1].id)
    return Page(jobs=jobs, next_cursor=floor)


def _id_order(job_id: str) -> bytes:
    """Ids in the order of the id indexes (byte order, as ZRANGEBYLEX compares)."""
    return job_id.encode()
