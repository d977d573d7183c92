"""The Python client as producers use it: async and sync, on a shared SQLite file."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import monoq
from monoq.core.models import JobState


def test_connect_sync_enqueues_and_reads_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    with monoq.connect_sync(url) as q:
        job = q.enqueue("echo", {"to": "a@b.c"}, priority="high", delay=60)
        many = q.enqueue_many([{"handler": "echo", "payload": i} for i in range(3)])
        assert q.get(job.id).state is JobState.SCHEDULED
        assert q.get(job.id).priority == 0
        assert [j.payload for j in many] == [0, 1, 2]
        assert q.cancel(job.id).state is JobState.CANCELLED
        with pytest.raises(monoq.WaitTimeout):
            q.wait(many[0].id, timeout=0.05)  # no worker runs here
    with monoq.connect_sync(url) as again:  # it was stored, not kept in memory
        assert again.get(many[2].id).payload == 2


@pytest.mark.anyio
async def test_connect_with_a_config_file_applies_its_job_defaults(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[backend]\nurl = "sqlite:///{tmp_path / "q.db"}"\n'
                      '[jobs]\nqueue = "bulk"\nmax_retries = 9\ntimeout_seconds = 42\n')
    async with monoq.connect(config=config) as q:
        job = await q.enqueue("echo", None)
        assert (job.queue, job.max_retries, job.timeout) == ("bulk", 9, 42.0)
        with pytest.raises(monoq.JobNotFound):
            await q.get("01NOSUCHJOB0000000000000000")
        with pytest.raises(monoq.ValidationError, match="priority"):
            await q.enqueue("echo", None, priority=11)
        with anyio.fail_after(5):
            assert (await q.queues(["bulk"]))[0].counts[JobState.QUEUED] == 1
