"""``monoq doctor``'s checks of a Redis server for monoq: its version, its eviction policy and
its persistence (``RedisBackend.doctor`` runs them on the server, or on every cluster master)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import redis.asyncio as aioredis
import redis.exceptions as rex

from monoq.backends.redis._codec import _text
from monoq.backends.redis._connect import _driver_errors

MIN_VERSION: Final = (6, 2)


async def server_checks(client: aioredis.Redis) -> list[tuple[str, str, str]]:
    """``RedisBackend.doctor``'s checks of one server (see its docstring)."""
    checks: list[tuple[str, str, str]] = []
    with _driver_errors("doctor"):
        server = await client.info("server")
        version = str(server.get("redis_version", "0"))
        parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
        if parts >= MIN_VERSION:
            checks.append(("redis.version", "ok", f"Redis {version}"))
        else:
            checks.append(
                (
                    "redis.version",
                    "error",
                    f"Redis {version} is older than 6.2, which monoq needs",
                )
            )
        try:
            policy_raw = await client.config_get("maxmemory-policy")
        except rex.ResponseError as exc:
            checks.append(
                (
                    "redis.maxmemory-policy",
                    "warn",
                    f"cannot read (CONFIG GET refused: {exc}); make sure it is noeviction",
                )
            )
        else:
            policy = _config_value(policy_raw, "maxmemory-policy")
            if policy == "noeviction":
                checks.append(("redis.maxmemory-policy", "ok", "noeviction"))
            else:
                checks.append(
                    (
                        "redis.maxmemory-policy",
                        "error",
                        (
                            f"{policy}: Redis may evict job keys under memory pressure and "
                            "lose jobs; set maxmemory-policy noeviction"
                        ),
                    )
                )
        persistence = await client.info("persistence")
        aof = str(persistence.get("aof_enabled", "0")) == "1"
        try:
            save_raw = await client.config_get("save")
            save = _config_value(save_raw, "save").strip()
        except rex.ResponseError:
            save = ""
        if aof:
            checks.append(("redis.persistence", "ok", "AOF enabled"))
        elif save:
            checks.append(
                (
                    "redis.persistence",
                    "warn",
                    (
                        f"RDB snapshots only (save {save}): jobs acknowledged since the last "
                        "snapshot are lost if Redis crashes; enable appendonly yes"
                    ),
                )
            )
        else:
            checks.append(
                (
                    "redis.persistence",
                    "warn",
                    (
                        "no persistence (AOF off, no RDB snapshots): a Redis restart loses "
                        "every job; enable appendonly yes"
                    ),
                )
            )
    return checks


def _config_value(reply: Mapping[Any, Any], name: str) -> str:
    """One value of a CONFIG GET reply (keys are bytes or str depending on decoding)."""
    value = reply.get(name, reply.get(name.encode(), ""))
    return _text(value)
