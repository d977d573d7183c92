"""Several `monoq` processes on one SQLite file: exactly-once delivery and crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import monoq
from monoq.core.models import AttemptOutcome, JobState

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


class Fleet:
    """Starts `monoq` child processes on one config and always cleans them up."""

    def __init__(self, tmp_path: Path, extra: str = "") -> None:
        self.dir = tmp_path
        self.config = tmp_path / "config.toml"
        self.config.write_text(
            f'[backend]\nurl = "sqlite:///{tmp_path / "q.db"}"\n'
            "[worker]\nconcurrency = 5\nlease_seconds = 2\nheartbeat_seconds = 0.5\n"
            "[scheduler]\nreap_margin_seconds = 0\n"
            "[retry]\nbase_seconds = 0.2\n" + extra
        )
        self.procs: list[subprocess.Popen[bytes]] = []

    def env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items()
                if not k.startswith("MONOQ_") and k != "REDIS_URL"}

    def start(self, roles: str) -> subprocess.Popen[bytes]:
        log = (self.dir / f"proc{len(self.procs)}.log").open("wb")
        with log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "monoq", "run", "--roles", roles, "--config",
                 str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, env=self.env(),
            )
        self.procs.append(proc)
        return proc

    def cli(self, *args: str, stdin: str = "") -> str:
        done = subprocess.run(
            [sys.executable, "-m", "monoq", *args, "--config", str(self.config)],
            input=stdin, capture_output=True, text=True, env=self.env(), timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.dir.glob("proc*.log")))

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    try:
        yield f
    finally:
        f.stop_all()


async def _wait_terminal(client: monoq.Client, ids: list[str], seconds: float = 60
                         ) -> list[monoq.Job]:
    with anyio.fail_after(seconds):
        while True:
            jobs = [await client.get(i) for i in ids]
            if all(j.terminal for j in jobs):
                return jobs
            await anyio.sleep(0.1)


async def test_three_workers_and_a_cli_producer_run_every_job_exactly_once(fleet: Fleet) -> None:
    for _ in range(3):
        fleet.start("worker")
    lines = "".join(json.dumps({"handler": "echo", "payload": i}) + "\n" for i in range(300))
    ids = [line.split()[0] for line in fleet.cli("enqueue", "--batch", stdin=lines).splitlines()]
    ids += [json.loads(fleet.cli("enqueue", "echo", "--payload", str(i), "--json"))["id"]
            for i in range(300, 320)]
    assert len(set(ids)) == 320
    async with monoq.connect(config=fleet.config) as client:
        jobs = await _wait_terminal(client, ids)
        assert sorted(j.result for j in jobs) == list(range(320)), fleet.logs()
        assert {j.state for j in jobs} == {JobState.COMPLETED}
        workers: set[str] = set()
        for job in jobs:
            history = await client.attempts(job.id)
            assert len(history) == 1, f"job {job.id} ran {len(history)} times"
            workers.add(history[0].worker_id)
    assert len(workers) >= 2, "the three workers should share the work"


async def test_sigkilled_worker_jobs_rerun_elsewhere_after_their_lease(fleet: Fleet) -> None:
    fleet.start("scheduler")
    victim = fleet.start("worker")
    async with monoq.connect(config=fleet.config) as client:
        jobs = [await client.enqueue("sleep", {"seconds": 2}) for _ in range(3)]
        with anyio.fail_after(30):
            while [(await client.get(j.id)).state for j in jobs] != [JobState.RUNNING] * 3:
                await anyio.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        fleet.start("worker")
        done = await _wait_terminal(client, [j.id for j in jobs])
        for job in done:
            assert job.state is JobState.COMPLETED, fleet.logs()
            assert job.attempt == 2
            first, second = await client.attempts(job.id)
            assert first.error_type == "LeaseExpired"
            assert first.outcome is AttemptOutcome.FAILED
            assert second.outcome is AttemptOutcome.COMPLETED
            assert second.worker_id != first.worker_id


async def test_a_killed_process_keeps_queued_scheduled_and_retrying_jobs(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, extra='[jobs]\nmax_retries = 5\n')
    fleet.config.write_text(fleet.config.read_text().replace("base_seconds = 0.2",
                                                             "base_seconds = 3600"))
    try:
        proc = fleet.start("worker,scheduler")
        async with monoq.connect(config=fleet.config) as client:
            parked = await client.enqueue("echo", 1, queue="parked")  # no worker consumes it
            later = await client.enqueue("echo", 2, delay=3600)
            failing = await client.enqueue("fail", {"times": 1})
            with anyio.fail_after(30):
                while (await client.get(failing.id)).state is not JobState.RETRYING:
                    await anyio.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        fleet.start("worker,scheduler")
        async with monoq.connect(config=fleet.config) as client:
            await anyio.sleep(1)  # the restarted process has had time to touch them
            assert (await client.get(parked.id)).state is JobState.QUEUED
            assert (await client.get(later.id)).state is JobState.SCHEDULED
            again = await client.get(failing.id)
            assert again.state is JobState.RETRYING
            assert again.attempt == 1
    finally:
        fleet.stop_all()
