"""Roles under a Supervisor in the test's own process, over a fresh memory backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.lowlevel

from monoq.backends.memory import MemoryBackend
from monoq.client import Client
from monoq.config import Config
from monoq.registry import Registry
from monoq.supervisor import Supervisor


@asynccontextmanager
async def supervised(config: Config, registry: Registry,
                     roles: tuple[str, ...] = ("worker", "scheduler")
                     ) -> AsyncIterator[tuple[Client, Supervisor]]:
    """Run ``roles`` in this process (no signal handling) until the block ends, then stop them
    gracefully. Yields the client (on a fresh memory backend) and the supervisor."""
    client = Client(MemoryBackend(), registry=registry)
    supervisor = Supervisor(config, roles=roles, client=client, registry=registry,
                            handle_signals=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(supervisor.run)
        await anyio.lowlevel.checkpoint()
        try:
            yield client, supervisor
        finally:
            supervisor.stop()
