"""`monoq run` says loudly at start when Redis is set up to lose jobs."""

from __future__ import annotations

import anyio
import pytest
import redis.asyncio as aioredis

from monoq.backends.redis import RedisBackend
from monoq.client import Client
from monoq.config import load_config
from monoq.supervisor import Supervisor
from tests.conftest import RedisServer

pytestmark = pytest.mark.anyio


async def test_an_evicting_redis_is_reported_at_start(private_redis: RedisServer,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    raw = aioredis.Redis.from_url(private_redis.url)
    await raw.config_set("maxmemory-policy", "allkeys-lru")
    await raw.aclose()
    client = Client(RedisBackend(private_redis.url))
    supervisor = Supervisor(load_config(env={}, overrides={"backend.url": "memory://"}),
                            roles=("scheduler",), client=client, handle_signals=False)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(supervisor.run)
            while "maxmemory-policy" not in caplog.text:
                await anyio.sleep(0.02)
            supervisor.stop()
    await client.backend.aclose()
    [record] = [r for r in caplog.records if "maxmemory-policy" in r.getMessage()]
    assert record.levelname == "ERROR"
    assert "FAILED" in record.getMessage()
