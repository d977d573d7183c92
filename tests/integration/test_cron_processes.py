"""Three scheduler processes on one backend: a schedule every second fires once per second."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import anyio
import pytest

import monoq

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

RUN_FOR = 20.0  # seconds of three schedulers racing on the same fire times


def _write_config(tmp_path: Path, url: str) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[backend]\nurl = "{url}"\n'
        "[retention]\nruns_per_schedule = 1000\n"
        '[[schedules]]\nid = "every-second"\nhandler = "echo"\nevery = "1s"\n'
        'payload = {ping = true}\n'
    )
    return config


async def _three_schedulers(tmp_path: Path, url: str) -> None:
    config = _write_config(tmp_path, url)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MONOQ_") and k != "REDIS_URL"}
    procs = []
    try:
        for n in range(3):
            with (tmp_path / f"scheduler{n}.log").open("wb") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "monoq", "run", "--roles", "scheduler", "--config",
                     str(config)], stdout=log, stderr=subprocess.STDOUT, env=env))
        # Count from when all three are running: starting Python processes on a loaded
        # machine can take seconds, and those seconds fire nothing.
        log_files = [tmp_path / f"scheduler{n}.log" for n in range(3)]
        with anyio.fail_after(60):
            while not all("scheduler started" in f.read_text() for f in log_files):
                assert all(proc.poll() is None for proc in procs), "a scheduler died"
                await anyio.sleep(0.05)
        started = time.monotonic()
        await anyio.sleep(RUN_FOR)
        for proc in procs:
            assert proc.poll() is None, "a scheduler died"
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=30) for proc in procs]
    logs = "\n".join(p.read_text() for p in sorted(tmp_path.glob("scheduler*.log")))
    assert codes == [0, 0, 0], logs
    elapsed = time.monotonic() - started
    async with monoq.connect(config=config) as client:
        page = await client.schedule_runs("every-second", limit=1000)
    fire_times = sorted(
        datetime.fromisoformat((job.idempotency_key or "").split(":", 2)[2])
        for job in page.jobs
    )
    assert len(fire_times) == len(set(fire_times)), "a fire time ran twice"
    seconds = [int(t.timestamp()) for t in fire_times]
    assert seconds == list(range(seconds[0], seconds[0] + len(seconds))), (
        f"missing slots: {sorted(set(range(seconds[0], seconds[-1] + 1)) - set(seconds))}")
    assert len(seconds) >= int(elapsed) - 3, logs  # one per second while they ran
    assert all(job.payload == {"ping": True} for job in page.jobs)


async def test_three_schedulers_on_one_sqlite_file(tmp_path: Path) -> None:
    await _three_schedulers(tmp_path, f"sqlite:///{tmp_path / 'q.db'}")


@pytest.mark.redis
async def test_three_schedulers_on_one_redis(tmp_path: Path, tcp_redis: object) -> None:
    await _three_schedulers(tmp_path, tcp_redis.url)  # type: ignore[attr-defined]
