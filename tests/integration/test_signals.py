"""`monoq run` as a real process: SIGTERM drains and exits 0; a second signal exits at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

import monoq
from monoq.core.models import AttemptOutcome, JobState

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def _config(tmp_path: Path, grace: float) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[monoq]\nlog_level = "INFO"\n'
        f'[backend]\nurl = "sqlite:///{tmp_path / "q.db"}"\n'
        f"[worker]\nconcurrency = 4\ngrace_seconds = {grace}\nheartbeat_seconds = 1\n"
    )
    return path


def _start(config: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONOQ_")}
    with (config.parent / "monoq.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "monoq", "run", "--roles", "worker,scheduler", "--config",
             str(config)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )


async def _wait_running(client: monoq.Client, ids: list[str]) -> None:
    with anyio.fail_after(30):
        while True:
            jobs = [await client.get(i) for i in ids]
            if all(j.state is JobState.RUNNING for j in jobs):
                return
            await anyio.sleep(0.05)


async def test_sigterm_drains_running_jobs_and_releases_the_rest(tmp_path: Path) -> None:
    config = _config(tmp_path, grace=3)
    proc = _start(config)
    try:
        async with monoq.connect(config=config) as client:
            short = [await client.enqueue("sleep", {"seconds": 1}) for _ in range(2)]
            long = [await client.enqueue("sleep", {"seconds": 60}) for _ in range(2)]
            await _wait_running(client, [j.id for j in short + long])
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = await anyio.to_thread.run_sync(lambda: proc.wait(timeout=30))
            took = time.monotonic() - started
            output = (config.parent / "monoq.log").read_text()
            assert code == 0, output
            assert took < 20, output  # grace is 3 s; the process must not hang
            for job in short:
                done = await client.get(job.id)
                assert done.state is JobState.COMPLETED, output
            for job in long:
                released = await client.get(job.id)
                assert released.state is JobState.QUEUED, output
                assert released.attempt == 0  # the interrupted run was refunded
                history = await client.attempts(job.id)
                assert history[-1].outcome is AttemptOutcome.RELEASED
            assert "draining" in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_second_signal_exits_at_once(tmp_path: Path) -> None:
    config = _config(tmp_path, grace=60)
    proc = _start(config)
    try:
        async with monoq.connect(config=config) as client:
            job = await client.enqueue("sleep", {"seconds": 60})
            await _wait_running(client, [job.id])
            proc.send_signal(signal.SIGTERM)
            await anyio.sleep(0.5)
            assert proc.poll() is None  # still draining within its 60 s grace
            proc.send_signal(signal.SIGINT)
            code = await anyio.to_thread.run_sync(lambda: proc.wait(timeout=15))
            assert code == 1
            # Not released: the lease will expire and the scheduler will count the attempt.
            assert (await client.get(job.id)).state is JobState.RUNNING
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
