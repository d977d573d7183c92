"""worker.max_jobs and worker.max_memory_mb: a worker drains and starts afresh (exec in place,
or exit 75 for its orchestrator), losing no job and running none twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import anyio
import pytest

from monoq.client import Client, connect
from monoq.core.models import JobState

HERE = Path(__file__).parent
pytestmark = pytest.mark.slow


def _setup(tmp_path: Path, worker: str) -> tuple[Path, dict[str, str], str]:
    url = f"sqlite:///{tmp_path}/q.db"
    config = tmp_path / "config.toml"
    config.write_text(
        f'[monoq]\nimports = ["monoq_isolation_handlers"]\n[backend]\nurl = "{url}"\n'
        f"[worker]\nconcurrency = 4\ngrace_seconds = 10\n{worker}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONOQ_")}
    env.update(PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
               ISOLATION_DIR=str(tmp_path))
    return config, env, url


def _start(config: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "monoq", "run", "--roles", "worker", "--config", str(config)],
            env=env, stdout=out, stderr=subprocess.STDOUT)


async def _completed(client: Client, n: int) -> bool:
    [stats] = await client.queues(["default"])
    return stats.counts.get(JobState.COMPLETED, 0) >= n


def _runs(tmp_path: Path) -> Counter[str]:
    path = tmp_path / "runs"
    lines = path.read_text().splitlines() if path.exists() else []
    return Counter(line.split()[0] for line in lines)


async def test_max_jobs_with_exec_recycles_in_place_and_runs_every_job_once(
        tmp_path: Path) -> None:
    config, env, url = _setup(tmp_path, "max_jobs = 25\nrecycle = \"exec\"")
    log = tmp_path / "worker.log"
    async with connect(url) as client:
        jobs = await client.enqueue_many([{"handler": "iso.record", "payload": n}
                                          for n in range(100)])
        process = _start(config, env, log)
        try:
            with anyio.fail_after(120):
                while not await _completed(client, 100):
                    assert process.poll() is None, log.read_text()
                    await anyio.sleep(0.1)
            assert process.poll() is None  # the same process (pid) throughout: exec in place
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=30)
    text = log.read_text()
    assert code == 0, text
    runs = _runs(tmp_path)
    assert set(runs) == {job.id for job in jobs}  # none lost
    assert max(runs.values()) == 1  # none ran twice
    assert text.count("recycling: it finished 25 jobs (worker.max_jobs)") >= 3, text
    assert text.count("starting a fresh process") >= 3
    pids = {line.split()[1] for line in (tmp_path / "runs").read_text().splitlines()}
    assert pids == {str(process.pid)}


async def test_max_jobs_with_exit_leaves_the_restart_to_the_orchestrator(
        tmp_path: Path) -> None:
    config, env, url = _setup(tmp_path, "max_jobs = 30\nrecycle = \"exit\"")
    log = tmp_path / "worker.log"
    codes: list[int] = []
    async with connect(url) as client:
        jobs = await client.enqueue_many([{"handler": "iso.record", "payload": n}
                                          for n in range(100)])
        with anyio.fail_after(180):
            while not await _completed(client, 100):  # what systemd or Kubernetes would do
                process = _start(config, env, log)
                while process.poll() is None and not await _completed(client, 100):
                    await anyio.sleep(0.05)
                if process.poll() is None:  # all done: the last one is idle, not recycling
                    process.send_signal(signal.SIGTERM)
                codes.append(await anyio.to_thread.run_sync(process.wait))
    runs = _runs(tmp_path)
    assert set(runs) == {job.id for job in jobs}
    assert max(runs.values()) == 1
    # 30 jobs each, and the jobs already running when the 30th finished: 30 to 33 per process
    assert codes[:3] == [75, 75, 75], log.read_text()  # EX_TEMPFAIL: restart me
    assert codes[-1] == 0  # the last one was stopped with SIGTERM, a plain graceful stop
    assert len(codes) == 4


async def test_a_worker_whose_memory_grows_past_max_memory_mb_recycles(
        tmp_path: Path) -> None:
    config, env, url = _setup(tmp_path, "max_memory_mb = 160\nrecycle = \"exec\"")
    log = tmp_path / "worker.log"
    async with connect(url) as client:
        process = _start(config, env, log)
        try:
            first = await client.enqueue("iso.record", None)
            with anyio.fail_after(60):
                baseline = await client.wait(first.id)
            assert baseline.result["rss_mb"] < 160
            leak = await client.enqueue("iso.record", {"hoard_mb": 200})
            with anyio.fail_after(60):
                leaked = await client.wait(leak.id)
                assert leaked.state is JobState.COMPLETED
                assert leaked.result["rss_mb"] > 160  # the handler drove RSS up on purpose
                while "starting a fresh process" not in log.read_text():
                    await anyio.sleep(0.05)
            after = await client.enqueue("iso.record", None)
            with anyio.fail_after(60):
                fresh = await client.wait(after.id)
            assert fresh.state is JobState.COMPLETED
            assert fresh.result["rss_mb"] < 160  # the hoard went with the old process image
            assert fresh.result["pid"] == process.pid
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    assert "passed worker.max_memory_mb (160 MiB)" in log.read_text()
