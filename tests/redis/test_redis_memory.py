"""Redis memory per queue (``MemoryUse``), against a redis-server of the test: the estimate
tracks what the queue's keys really take, the server's totals are Redis' own, and the API's
/metrics exports them."""

from __future__ import annotations

import re
from typing import Any, cast

import httpx
import pytest
import redis.asyncio as aioredis

from monoq.api import create_app
from monoq.api.tokens import create_token
from monoq.backends.redis import RedisBackend
from monoq.client import Client
from monoq.config import ApiConfig, ApiToken
from monoq.core.backend import MemoryUse
from monoq.core.ids import new_id
from monoq.core.models import NewJob, utcnow
from tests.conftest import RedisServer

pytestmark = pytest.mark.redis


async def _fill(backend: RedisBackend, queue: str, count: int, size: int) -> None:
    now = utcnow()
    body = b'"' + b"x" * size + b'"'
    for start in range(0, count, 500):
        jobs = [NewJob(id=new_id(), queue=queue, handler="echo", payload_json=body)
                for _ in range(min(500, count - start))]
        await backend.enqueue(jobs, now=now)


async def _true_size(raw: aioredis.Redis, queue: str) -> int:
    """Every key of the queue measured exactly (SAMPLES 0: all of a key's elements)."""
    total = 0
    async for key in raw.scan_iter(match=f"monoq:{{{queue}}}:*", count=1000):
        total += int(await raw.memory_usage(key, samples=0) or 0)
    return total


async def test_the_estimate_follows_what_each_queue_really_takes(
        private_redis: RedisServer) -> None:
    backend = RedisBackend(private_redis.url)
    await backend.connect()
    raw = aioredis.Redis.from_url(private_redis.url)
    try:
        assert isinstance(backend, MemoryUse)
        await raw.config_set("maxmemory", str(512 * 1024 * 1024))
        await _fill(backend, "big", 3000, 1000)
        await _fill(backend, "small", 50, 10)
        report = await backend.memory_use()
        info = await raw.info("memory")
        assert report.max_bytes == 512 * 1024 * 1024
        assert 0 < report.used_bytes <= int(info["used_memory"]) * 2
        assert set(report.queues) == {"big", "small"}
        for queue in ("big", "small"):
            true = await _true_size(raw, queue)
            assert 0.7 * true <= report.queues[queue] <= 1.3 * true, (queue, true, report)
        assert report.queues["big"] > 50 * report.queues["small"]
        # a report is reused for a few seconds: a scrape right after costs nothing
        assert await backend.memory_use() is report
    finally:
        await raw.aclose()
        await backend.aclose()


async def test_metrics_export_memory_per_queue_and_the_server_totals(
        private_redis: RedisServer) -> None:
    backend = RedisBackend(private_redis.url)
    await backend.connect()
    raw = aioredis.Redis.from_url(private_redis.url)
    try:
        await raw.config_set("maxmemory", str(256 * 1024 * 1024))
        await _fill(backend, "mail", 200, 200)
        await _fill(backend, "billing", 20, 200)
        token, line = create_token("read", name="mail-reader", queues=["mail"])
        root, root_line = create_token("read", name="reader")
        tokens = (ApiToken(name="mail-reader", scope="read", sha256=line.split()[2],
                           queues=("mail",)),
                  ApiToken(name="reader", scope="read", sha256=root_line.split()[2]))
        app = create_app(Client(backend), ApiConfig(tokens=tokens))
        # httpx over ASGI on this loop (the test client would run the app on a loop of its
        # own, away from the backend's connections)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=cast(Any, app)),
                                     base_url="http://monoq.test") as tc:
            text = (await tc.get("/metrics", headers={"Authorization": f"Bearer {root}"})).text
            mine = (await tc.get("/metrics", headers={"Authorization": f"Bearer {token}"})).text
        samples = dict(re.findall(r'^monoq_queue_memory_bytes\{queue="(\w+)"\} (\S+)$', text,
                                  re.MULTILINE))
        assert set(samples) == {"mail", "billing"}
        assert float(samples["mail"]) > float(samples["billing"]) > 0
        assert re.search(r"^monoq_backend_memory_max_bytes 2\.68435456e\+08$", text,
                         re.MULTILINE), text
        used = re.search(r"^monoq_backend_memory_used_bytes (\S+)$", text, re.MULTILINE)
        assert used is not None and float(used[1]) > 0
        # a token limited to "mail" sees its queue's estimate only
        assert 'monoq_queue_memory_bytes{queue="mail"}' in mine
        assert 'queue="billing"' not in mine
    finally:
        await raw.aclose()
        await backend.aclose()
