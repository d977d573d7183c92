"""The scheduler's beat: one per pass, named after the scheduler, never fatal."""

from __future__ import annotations

import logging
import os
import socket
from datetime import UTC, datetime, timedelta

import pytest

from monoq.backends.memory import MemoryBackend
from monoq.client import Client
from monoq.errors import BackendUnavailable
from monoq.scheduler import Scheduler

pytestmark = pytest.mark.anyio

T0 = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_each_pass_beats_under_the_scheduler_id() -> None:
    client = Client(MemoryBackend(), clock=lambda: T0)
    scheduler = Scheduler(client, scheduler_id="s1")
    await scheduler.tick(T0)
    assert await client.beats() == {"scheduler:s1": T0}
    await scheduler.tick(T0 + timedelta(seconds=5))
    assert await client.backend.beats(now=T0) == {"scheduler:s1": T0 + timedelta(seconds=5)}


async def test_the_default_id_is_host_and_pid() -> None:
    client = Client(MemoryBackend())
    scheduler = Scheduler(client)
    assert scheduler.id == f"{socket.gethostname()}-{os.getpid()}"
    await scheduler.tick(T0)
    assert set(await client.backend.beats(now=T0)) == {f"scheduler:{scheduler.id}"}


class NoBeats(MemoryBackend):
    async def beat(self, name: str, *, now: datetime) -> None:
        raise BackendUnavailable("redis beat: connection refused")


async def test_a_failed_beat_is_logged_and_the_pass_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = NoBeats()
    client = Client(backend, clock=lambda: T0)
    await client.enqueue("echo", {"n": 1}, delay=1)
    with caplog.at_level(logging.WARNING, logger="monoq.scheduler"):
        report = await Scheduler(client, scheduler_id="s1").tick(T0 + timedelta(seconds=2))
    assert report.promoted == 1
    assert "scheduler s1: recording its beat failed" in caplog.text
