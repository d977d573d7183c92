"""Clocks. Roles take ``now`` from a clock so that every host agrees on lease deadlines.

With a backend that has its own clock (Redis ``TIME``), the supervisor measures the offset of
this host's clock to the backend's and roles read ``ServerClock``: local time plus that offset.
Lease expiry, retry times and cron fires then follow one clock however far the hosts drift.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from monoq.core.models import truncate_ms, utcnow


class ServerClock:
    """``utcnow()`` shifted by the measured offset to a server's clock (ms precision)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)
        self.synced = False

    def __call__(self) -> datetime:
        return truncate_ms(datetime.now(UTC) + self.offset)

    async def sync(self, server_now: Callable[[], Awaitable[datetime]]) -> timedelta:
        """Measure the offset: the server's time minus the local time at the call's midpoint."""
        before = time.perf_counter()
        local = datetime.now(UTC)
        remote = await server_now()
        half = timedelta(seconds=(time.perf_counter() - before) / 2)
        self.offset = remote - (local + half)
        self.synced = True
        return self.offset


__all__ = ["ServerClock", "utcnow"]
