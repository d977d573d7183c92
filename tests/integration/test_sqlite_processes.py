"""Several `monoq` processes on one SQLite file: exactly-once delivery and crash safety."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import monoq
from monoq.core.models import AttemptOutcome, JobState
from tests.integration._fleet import Fleet

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path, f"sqlite:///{tmp_path / 'q.db'}")
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
    fleet = Fleet(tmp_path, f"sqlite:///{tmp_path / 'q.db'}", extra="[jobs]\nmax_retries = 5\n")
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
