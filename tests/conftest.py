"""Shared redis-server fixtures (tests/redis, tests/integration, the conformance suite, ...).

Only the Redis fixtures live here, all built on one fixture factory, ``redis_factory``: each
call starts a private ``redis-server`` in a temporary directory (on a Unix socket, ``--port 0``:
no TCP, never the machine's service on 6379), by default without persistence, and the factory
stops them all at the end of the test. Its options: ``tcp`` (a free 127.0.0.1 port instead, for
``monoq`` processes) and ``aof`` (an append-only file fsynced on every write, for crash tests).
``redis_server`` (one server for the session), ``private_redis``, ``tcp_redis`` and
``aof_redis`` are named uses of it. Without the binary the Redis tests skip locally but FAIL
when ``CI`` is set, so CI can never pass by silently skipping them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Protocol

import pytest
import redis.asyncio as aioredis

from monoq.backends.redis import RedisBackend
from tests.ports import free_port

# The conformance kit's fixtures (``backend`` from ``monoq_backend_factory``); tests/conformance
# runs the kit on every built-in backend.
pytest_plugins = ["monoq.testing.plugin"]


class RedisServer:
    """A ``redis-server`` child process listening on a Unix socket only, or with ``port`` on
    that TCP port of 127.0.0.1 only (for ``monoq`` processes, whose URL schemes are ``redis://``
    and ``rediss://``: a Unix socket is not reachable through them).

    Without persistence by default; with ``aof``, an append-only file fsynced on every write
    (and ``noeviction``), so that after ``kill()`` (SIGKILL: no shutdown save) ``start()`` on the
    same directory reloads every acknowledged write. ``stop()``, ``kill()`` and ``start()`` may
    be called again on the same socket path (outage tests).
    """

    def __init__(self, binary: str, directory: Path, port: int | None = None, *,
                 aof: bool = False) -> None:
        self.binary = binary
        self.directory = directory
        self.socket = directory / "redis.sock"
        self.port = port
        self.aof = aof
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL backends connect with (database 0)."""
        if self.port is not None:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket}?db=0"

    def _listen_args(self) -> list[str]:
        if self.port is not None:
            return ["--port", str(self.port), "--bind", "127.0.0.1"]
        return ["--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700"]

    def _persistence_args(self) -> list[str]:
        if self.aof:
            return ["--save", "", "--appendonly", "yes", "--appendfsync", "always",
                    "--maxmemory-policy", "noeviction"]
        return ["--save", "", "--appendonly", "no"]

    def start(self, timeout: float | None = None) -> None:
        """Start the server and return once it answers PING (with AOF: once the file is
        loaded, it answers -LOADING before). ``timeout``: 10 s, 20 s with AOF."""
        if timeout is None:
            timeout = 20.0 if self.aof else 10.0
        self.socket.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [
                self.binary,
                *self._listen_args(),
                *self._persistence_args(),
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                _, err = self.process.communicate()
                raise RuntimeError(f"redis-server exited: {err.decode(errors='replace')}")
            if self._answers():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on {self.url} within {timeout}s")

    def _answers(self) -> bool:
        family = socket.AF_UNIX if self.port is None else socket.AF_INET
        address = str(self.socket) if self.port is None else ("127.0.0.1", self.port)
        with contextlib.suppress(OSError), socket.socket(family) as sock:
            sock.settimeout(1.0)
            sock.connect(address)
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
        return False

    def stop(self) -> None:
        """Terminate the server (kill it if it lingers) and wait for it."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stderr is not None:
            process.stderr.close()

    def kill(self) -> None:
        """SIGKILL the server (a crash: no shutdown save) and reap it."""
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


def redis_server_binary() -> str:
    """The redis-server binary; skip the test when there is none, but fail under CI."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run the Redis tests", pytrace=False)
        pytest.skip(message)
    return binary


def start_redis_server(*, tcp: bool = False, aof: bool = False) -> RedisServer:
    """Start a private redis-server; skip the test (fail under CI) when there is none.

    ``tcp``: listen on a free loopback TCP port instead of a Unix socket. ``aof``: persist to an
    append-only file fsynced on every write (see ``RedisServer``). The caller stops it and
    removes its ``directory`` (``redis_server_running`` does both).
    """
    binary = redis_server_binary()
    # A short directory: Unix socket paths are limited to ~104 bytes.
    directory = Path(tempfile.mkdtemp(prefix="monoq-redis-"))
    if not tcp:
        server = RedisServer(binary, directory, aof=aof)
        server.start()
        return server
    for attempt in range(3):  # the free port may be taken between the probe and the bind
        server = RedisServer(binary, directory, port=free_port(), aof=aof)
        try:
            server.start()
        except RuntimeError:
            if attempt == 2:
                raise
            continue
        return server
    raise AssertionError("unreachable")


@contextlib.contextmanager
def redis_server_running(*, tcp: bool = False, aof: bool = False) -> Iterator[RedisServer]:
    """``start_redis_server`` for a ``with`` block: stopped and its directory removed after."""
    server = start_redis_server(tcp=tcp, aof=aof)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


class RedisFactory(Protocol):
    """What the ``redis_factory`` fixture answers."""

    def __call__(self, *, tcp: bool = False, aof: bool = False) -> RedisServer: ...


@pytest.fixture
def redis_factory() -> Iterator[RedisFactory]:
    """Starts redis-servers of this test alone (``redis_factory(tcp=..., aof=...)``, see
    ``start_redis_server``), which the test may stop, kill, restart or reconfigure; all are
    stopped and removed when the test ends."""
    with contextlib.ExitStack() as servers:

        def start(*, tcp: bool = False, aof: bool = False) -> RedisServer:
            return servers.enter_context(redis_server_running(tcp=tcp, aof=aof))

        yield start


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the whole session (tests flush the database instead)."""
    with redis_server_running() as server:
        yield server


@pytest.fixture
def private_redis(redis_factory: RedisFactory) -> RedisServer:
    """A redis-server of this test alone, which the test may stop, restart or reconfigure."""
    return redis_factory()


@pytest.fixture
def tcp_redis(redis_factory: RedisFactory) -> RedisServer:
    """A redis-server of this test alone on a free 127.0.0.1 TCP port (``redis://`` URL), for
    tests that start ``monoq`` processes."""
    return redis_factory(tcp=True)


@pytest.fixture
def aof_redis(redis_factory: RedisFactory) -> RedisServer:
    """A redis-server of this test alone with an append-only file fsynced on every write, for
    tests that SIGKILL it (``kill()``) and ``start()`` it again on the same directory."""
    return redis_factory(aof=True)


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A raw client on the session server, database flushed before the test."""
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def redis_backend(
    redis_client: aioredis.Redis, redis_server: RedisServer
) -> AsyncIterator[RedisBackend]:
    """A connected RedisBackend on a flushed database of the session server."""
    backend = RedisBackend(redis_server.url)
    await backend.connect()
    try:
        yield backend
    finally:
        await backend.aclose()


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """monoq is an asyncio program (SQLite threads, redis.asyncio, uvicorn): no trio run."""
    return "asyncio"
