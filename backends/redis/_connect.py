"""The connection targets of RedisBackend besides one server: ``redis+sentinel://`` and
``redis+cluster://`` URLs, the pools and the cluster client they use, and command packing in C."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Final
from urllib.parse import unquote

import attrs
import redis.asyncio as aioredis
import redis.exceptions as rex
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool

try:  # a dependency through redis[hiredis]; redis-py works without it, only slower
    import hiredis
except ImportError:  # pragma: no cover
    hiredis = None  # type: ignore[assignment]

from monoq.errors import BackendError, BackendUnavailable, ConfigError

_PACKING_IN_C: dict[type[Any], type[Any]] = {}


@attrs.frozen
class SentinelTarget:
    """Where a ``redis+sentinel://`` URL points: the sentinels, the service they watch, the
    database, and the credentials of the master (the sentinels' own are options)."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse_sentinel_url(url: str) -> SentinelTarget:
    """``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]``
    (``rediss+sentinel://`` for TLS to the master and the sentinels). Errors name the part."""
    scheme, _, rest = url.partition("://")
    netloc, _, path = rest.partition("/")
    path = path.split("?", 1)[0]
    expected = "redis+sentinel://host:port[,host:port...]/service[/db]"
    sentinels, username, password = _hosts(netloc, 26379, expected, what="sentinel host:port")
    segments = [unquote(x) for x in path.split("/") if x]
    if not segments or len(segments) > 2:
        raise ConfigError(
            "backend.url: a sentinel URL names the monitored service and optionally the "
            f"database: {expected}")
    db = 0
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise ConfigError(f"backend.url: the database must be a number, got "
                              f"{segments[1]!r}")
        db = int(segments[1])
    return SentinelTarget(sentinels=sentinels, service=segments[0], db=db,
                          username=username, password=password,
                          tls=scheme == "rediss+sentinel")


class _ClusterPipeline(ClusterPipeline):
    """redis-py's cluster pipeline, which also makes its client re-read the cluster's layout
    after a connection error, as the client's own commands do (redis-py 8's pipeline does
    not: after a master dies, every pipeline would keep going to the dead node)."""

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True
                      ) -> list[Any]:
        client = self.cluster_client
        try:
            replies = await super().execute(raise_on_error, allow_redirections)
        except (rex.ConnectionError, rex.TimeoutError, rex.ClusterDownError, OSError):
            client._initialize = True  # the flag its own commands set
            raise
        if any(isinstance(r, rex.ConnectionError | rex.TimeoutError | rex.ClusterDownError)
               for r in replies):
            client._initialize = True
        return replies


class _Cluster(RedisCluster):
    """redis-py's cluster client with ``_ClusterPipeline`` pipelines."""

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None
                 ) -> ClusterPipeline:
        if shard_hint:
            raise rex.RedisClusterException("shard_hint is deprecated in cluster mode")
        return _ClusterPipeline(self, transaction)  # type: ignore[abstract]


@attrs.frozen
class ClusterTarget:
    """Where a ``redis+cluster://`` URL points: some of the cluster's nodes (the client learns
    the others from them) and the credentials."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    tls: bool = False


def _hosts(netloc: str, default_port: int, expected: str, *, what: str = "host:port"
           ) -> tuple[tuple[tuple[str, int], ...], str | None, str | None]:
    """The ``host:port`` list and the credentials of a multi-host URL's network location
    (Sentinel's and Cluster's); a bad part is "not a ``what``"."""
    creds, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = creds.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    found: list[tuple[str, int]] = []
    for part in hosts.split(","):
        host, colon, port = part.strip().rpartition(":")
        if not colon:
            host, port = part.strip(), str(default_port)
        host = host.strip("[]")  # [::1]:6379
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"backend.url: {part.strip()!r} is not a {what} (expected "
                              f"{expected})")
        found.append((host, int(port)))
    return tuple(found), username, password


def parse_cluster_url(url: str) -> ClusterTarget:
    """``redis+cluster://[user:password@]host:port[,host:port...][/0]`` (``rediss+cluster://``
    for TLS): one or more nodes of the cluster to start from. A cluster has only database 0."""
    scheme, _, rest = url.partition("://")
    netloc, _, path = rest.partition("/")
    path = path.split("?", 1)[0].strip("/")
    expected = "redis+cluster://host:port[,host:port...]/"
    nodes, username, password = _hosts(netloc, 6379, expected)
    if path not in ("", "0"):
        raise ConfigError(f"backend.url: a Redis Cluster has only database 0, got /{path} "
                          f"(expected {expected})")
    return ClusterTarget(nodes=nodes, username=username, password=password,
                         tls=scheme == "rediss+cluster")


class _SentinelBlockingPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """A pool whose connections go to the master the sentinels name (asked again whenever a
    connection is made, so a failover is followed without a restart) and that waits, as the
    plain pool does, for a free connection instead of failing at once."""


def _packing_in_c(cls: type[Any]) -> type[Any]:
    """``cls`` with commands packed by hiredis' C packer instead of redis-py's Python one.

    redis-py's asyncio connection encodes every argument in Python (about 2 µs each): a finish
    of ten jobs with its claim is some 70 arguments. hiredis (a dependency, through
    ``redis[hiredis]``) packs the same bytes in C. Arguments it does not take fall back to
    redis-py, which raises its usual error for them.
    """
    if hiredis is None:
        return cls
    fast = _PACKING_IN_C.get(cls)
    if fast is None:
        base_pack = cls.pack_command

        def pack_command(self: Any, *args: Any) -> list[bytes]:
            first = args[0]
            if isinstance(first, str | bytes) and (" " in first if isinstance(first, str)
                                                   else b" " in first):
                args = (*first.split(), *args[1:])  # "CONFIG GET": one word per argument
            try:
                return [hiredis.pack_command(args)]
            except TypeError:
                return base_pack(self, *args)  # type: ignore[no-any-return]

        fast = type(cls.__name__, (cls,), {"pack_command": pack_command})
        _PACKING_IN_C[cls] = fast
    return fast


_UNAVAILABLE: Final = (
    rex.ConnectionError,  # includes BusyLoadingError, MaxConnectionsError, AuthenticationError
    rex.TimeoutError,
    rex.ReadOnlyError,  # a replica during failover
    rex.TryAgainError,
    rex.ClusterDownError,
    OSError,  # includes the builtin TimeoutError (asyncio timeouts) and SSL errors
)


@contextlib.contextmanager
def _driver_errors(op: str) -> Iterator[None]:
    """Turn redis-py exceptions into monoq's: transient -> BackendUnavailable, else BackendError."""
    try:
        yield
    except _UNAVAILABLE as exc:
        raise BackendUnavailable(f"redis {op}: {exc or type(exc).__name__}") from exc
    except rex.RedisError as exc:
        raise BackendError(f"redis {op}: {exc}") from exc
