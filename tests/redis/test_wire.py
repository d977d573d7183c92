"""The script calls' shared connection (backends/redis/_wire.py).

Every script call of a one-server backend travels on one pipelined connection. What a user
relies on: each caller gets its own answer however many call at once, a cancelled or timed-out
caller does not shift the answers of the others, a server that goes away fails the calls in
flight (it does not hang them) and the next call connects again, and the URL's password and
database are those the connection uses.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis
import redis.exceptions as rex

from monoq.backends.redis import RedisBackend
from monoq.backends.redis._wire import Wire, opener
from monoq.client import Client
from monoq.errors import BackendUnavailable
from tests.certs import self_signed
from tests.conftest import RedisServer, redis_server_binary
from tests.ports import free_port

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


@contextlib.asynccontextmanager
async def wire_to(url: str, timeout: float | None = 5.0) -> AsyncIterator[Wire]:
    pool = aioredis.ConnectionPool.from_url(url)
    wire = Wire(opener(pool), timeout)
    try:
        yield wire
    finally:
        await wire.aclose()
        await pool.aclose()


@contextlib.asynccontextmanager
async def paused(url: str, ms: int) -> AsyncIterator[aioredis.Redis]:
    """Every client's writes (scripts included) wait while the server is paused (CLIENT PAUSE
    WRITE); yields a client, which may end the pause early (CLIENT UNPAUSE)."""
    admin = aioredis.Redis.from_url(url)
    try:
        await admin.execute_command("CLIENT", "PAUSE", ms, "WRITE")  # type: ignore[no-untyped-call]
        yield admin
    finally:
        with contextlib.suppress(rex.RedisError, OSError):
            await admin.execute_command("CLIENT", "UNPAUSE")  # type: ignore[no-untyped-call]
        await admin.aclose()


async def connected_clients(url: str) -> int:
    raw = aioredis.Redis.from_url(url)
    try:
        return int((await raw.info("clients"))["connected_clients"]) - 1  # not this one
    finally:
        await raw.aclose()


async def test_three_hundred_enqueues_at_once_each_answer_their_own_job_on_one_connection(
    private_redis: RedisServer,
) -> None:
    backend = RedisBackend(private_redis.url)
    await backend.connect()
    try:
        client = Client(backend)
        jobs = [client.build("test.echo", n) for n in range(300)]
        answers: dict[int, str] = {}

        async def one(n: int) -> None:
            [enqueued] = await backend.enqueue([jobs[n]], now=client.clock())
            answers[n] = enqueued.job.id

        before = await connected_clients(private_redis.url)
        async with anyio.create_task_group() as tg:
            for n in range(300):
                tg.start_soon(one, n)
        assert answers == {n: jobs[n].id for n in range(300)}
        stored = await backend.get_many([job.id for job in jobs])
        assert [job.payload if job else None for job in stored] == list(range(300))
        # A pool would have opened a connection per caller in flight (up to pool_size).
        assert await connected_clients(private_redis.url) - before <= 1
    finally:
        await backend.aclose()


async def test_a_cancelled_caller_does_not_shift_the_answers_of_later_ones(
    private_redis: RedisServer,
) -> None:
    async with wire_to(private_redis.url) as wire:
        assert await wire.call("SET", "k", "before") == b"OK"
        later: list[object] = []

        async def set_then_get() -> None:
            later.extend(await wire.calls([("SET", "k", "after"), ("GET", "k")]))

        async with paused(private_redis.url, 10_000) as admin:
            with anyio.move_on_after(0.2) as scope:
                await wire.call("INCR", "n")  # its reply comes after the pause, to nobody
            assert scope.cancelled_caught
            async with anyio.create_task_group() as tg:
                tg.start_soon(set_then_get)
                await anyio.wait_all_tasks_blocked()  # both commands are written and waiting
                await admin.execute_command("CLIENT", "UNPAUSE")  # type: ignore[no-untyped-call]
        assert later == [b"OK", b"after"]
        assert await wire.call("GET", "k") == b"after"


async def test_a_call_that_is_not_answered_in_time_fails_and_the_next_one_reconnects(
    private_redis: RedisServer,
) -> None:
    async with wire_to(private_redis.url, timeout=0.5) as wire:
        assert await wire.call("PING") == b"PONG"
        async with paused(private_redis.url, 3000):
            with pytest.raises(rex.TimeoutError):
                await wire.call("INCR", "n")
        # The late reply of the INCR must not be read as the answer of a later call.
        assert await wire.call("SET", "m", "1") == b"OK"
        assert await wire.call("GET", "m") == b"1"


async def test_calls_in_flight_when_the_server_dies_fail_at_once_and_the_next_call_connects(
    private_redis: RedisServer,
) -> None:
    backend = RedisBackend(private_redis.url)
    await backend.connect()
    try:
        client = Client(backend)
        failed: list[BaseException] = []

        async def enqueue_while_paused() -> None:
            try:
                await backend.enqueue([client.build("test.echo", 1)], now=client.clock())
            except BackendUnavailable as exc:
                failed.append(exc)

        async with paused(private_redis.url, 30_000):
            with anyio.fail_after(10):  # well under the pause and the socket timeout
                async with anyio.create_task_group() as tg:
                    for _ in range(5):
                        tg.start_soon(enqueue_while_paused)
                    await anyio.wait_all_tasks_blocked()  # all five are waiting on Redis
                    private_redis.kill()
        assert len(failed) == 5
        private_redis.start()
        job = client.build("test.echo", 2)
        [enqueued] = await backend.enqueue([job], now=client.clock())
        assert enqueued.created and (await backend.get(job.id)) is not None
    finally:
        await backend.aclose()


async def test_the_urls_password_and_database_are_the_connections(
    private_redis: RedisServer,
) -> None:
    raw = aioredis.Redis.from_url(private_redis.url)
    await raw.config_set("requirepass", "s3cret")
    await raw.aclose()
    url = f"unix://{private_redis.socket}?db=3&password=s3cret"
    backend = RedisBackend(url)
    await backend.connect()
    try:
        client = Client(backend)
        job = client.build("test.echo", "x")
        await backend.enqueue([job], now=client.clock())
        in_db3 = aioredis.Redis.from_url(url)
        in_db0 = aioredis.Redis.from_url(f"unix://{private_redis.socket}?db=0&password=s3cret")
        try:
            assert await in_db3.exists(f"monoq:{{default}}:job:{job.id}") == 1
            assert await in_db0.dbsize() == 0
        finally:
            await in_db3.aclose()
            await in_db0.aclose()
    finally:
        await backend.aclose()


async def test_an_argument_it_cannot_send_is_refused_before_anything_is_written(
    private_redis: RedisServer,
) -> None:
    async with wire_to(private_redis.url) as wire:
        with pytest.raises(rex.DataError, match="cannot send"):
            await wire.calls([("SET", "a", "1"), ("SET", "b", None)])
        assert await wire.call("EXISTS", "a") == 0


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A redis-server that speaks TLS only, on a free loopback port, with a self-signed
    certificate for 127.0.0.1: yields its ``rediss://`` URL and the certificate to trust."""
    cert, key = self_signed(tmp_path, "127.0.0.1", "IP:127.0.0.1")
    port = free_port()
    process = subprocess.Popen(
        [redis_server_binary(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file",
         str(cert), "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    context = ssl.create_default_context(cafile=str(cert))
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                _, err = process.communicate()
                pytest.fail(f"redis-server with TLS exited: {err.decode(errors='replace')}",
                            pytrace=False)
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", port), timeout=1) as raw, context.wrap_socket(
                    raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"PING\r\n")
                if tls.recv(16).startswith(b"+PONG"):
                    break
            assert time.monotonic() < deadline, "redis-server with TLS did not answer"
            time.sleep(0.02)
        yield f"rediss://127.0.0.1:{port}/0", cert
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


async def test_script_calls_travel_over_tls(tls_redis: tuple[str, Path]) -> None:
    """``rediss://``: the shared connection is opened by redis-py with TLS and the certificate
    checked, and concurrent enqueues and a claim work over it (the server has no plain-text
    port at all); a certificate the client does not trust is refused."""
    url, cert = tls_redis
    backend = RedisBackend(url, {"ssl_ca_certs": str(cert)})
    await backend.connect()
    try:
        client = Client(backend)
        jobs = [client.build("test.echo", f"over tls {n}") for n in range(20)]

        async def one(n: int) -> None:
            await backend.enqueue([jobs[n]], now=client.clock())

        async with anyio.create_task_group() as tg:
            for n in range(20):
                tg.start_soon(one, n)
        leases = await backend.claim(["default"], limit=20, lease_for=timedelta(seconds=30),
                                     worker_id="w", now=client.clock())
        assert sorted(lease.job.payload for lease in leases) == sorted(
            f"over tls {n}" for n in range(20))
    finally:
        await backend.aclose()
    untrusted = RedisBackend(url)  # the system's CAs do not know this certificate
    with pytest.raises(BackendUnavailable):
        await untrusted.connect()
    await untrusted.aclose()
