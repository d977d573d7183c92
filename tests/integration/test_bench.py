"""``monoq bench`` end to end on SQLite and on a private redis-server.

The rows the project's targets are stated in must be there, measured in the target setup (a
``monoq run --roles worker`` child), each with its floor, the ratio to it, the target and a
verdict; the worker children must be gone when the bench exits. Small job counts, and no speed
is ever asserted: the figures are for the README, measured by hand on a quiet machine.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Protocol

import pytest
import redis

from monoq.cli import main

pytestmark = [pytest.mark.slow]

JOBS = 200
SECTIONS = "single,enqueue,drain,sleep,latency,floor"


class Server(Protocol):
    """What these tests use of tests/conftest.py's RedisServer."""

    url: str


def run_bench(cwd: Path, *args: str) -> tuple[list[dict[str, Any]], str]:
    """``monoq bench ... --json`` in ``cwd`` (no config.toml, no MONOQ_* variables)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MONOQ_")}
    done = subprocess.run(
        [sys.executable, "-m", "monoq", "bench", "--jobs", str(JOBS), "--json", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows, done.stderr


def one(rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [row for row in rows if row["name"] == name]
    assert len(found) == 1, f"{name!r} in {[row['name'] for row in rows]}"
    return found[0]


def assert_measured_against(row: dict[str, Any], target: str | None) -> None:
    """A figure with its floor, the ratio to it, and (when given) its target and a verdict."""
    assert row["value"] > 0
    assert row["floor"] is not None and row["floor"] > 0, row
    assert row["floor_name"], row
    assert math.isclose(row["ratio"], row["value"] / row["floor"], rel_tol=1e-9), row
    assert row["target"] == target, row
    if target is not None:
        assert isinstance(row["met"], bool), row


def bench_url(stderr: str) -> str:
    match = re.search(r"^monoq bench on (\S+) ", stderr, re.MULTILINE)
    assert match, stderr
    return match.group(1)


def assert_children_gone(stderr: str, expected: int) -> None:
    """Every worker child the bench started has exited, and no process still runs on the
    bench's backend URL."""
    started = re.findall(r"worker child pid (\d+) started", stderr)
    exited = re.findall(r"worker child pid (\d+) exited", stderr)
    assert len(started) == expected, stderr
    assert sorted(started) == sorted(exited), stderr
    for pid in started:
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.exists():  # the pid may have been reused, but not by a monoq worker
            assert b"monoq" not in cmdline.read_bytes(), f"worker child {pid} still runs"
    marker = f"MONOQ_BACKEND_URL={bench_url(stderr)}".encode()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            variables = environ.read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        assert marker not in variables, f"{environ.parent.name} still runs on the bench URL"


def assert_target_rows(rows: list[dict[str, Any]], *, drain_target: str) -> None:
    """The rows of the performance targets, measured in the target setup."""
    assert_measured_against(one(rows, "single awaited enqueue"), "≥ 0.8\u00d7 floor")
    assert_measured_against(one(rows, "bulk enqueue_many, 1000 per call"), "≥ 100,000 jobs/s")
    assert_measured_against(one(rows, f"drain {JOBS} no-op jobs, worker process, concurrency 10"),
                            drain_target)
    assert_measured_against(one(rows, f"{JOBS} jobs sleeping 10 ms, worker process, "
                                      "concurrency 10"), "≥ 0.95\u00d7 floor")
    for name in ("worker process RSS after the drain (VmRSS)", "worker process peak RSS (VmHWM)"):
        assert_measured_against(one(rows, name), "≤ 60 MiB")
    # no target, but still reported
    assert one(rows, "single enqueue, 100 in flight")["value"] > 0
    assert_measured_against(one(rows, f"drain {JOBS} no-op jobs, in process, concurrency 100"),
                            None)
    assert one(rows, "enqueue-to-start p50, same process")["value"] > 0
    assert one(rows, "enqueue-to-start p99, across processes")["value"] > 0
    for row in rows:
        assert set(row) >= {"name", "value", "unit", "floor", "ratio", "target", "met"}
        assert row["value"] > 0, row
        assert (row["met"] is None) == (row["target"] is None), row
    # each floor is also listed on its own, once
    floors = [row["name"] for row in rows if row["name"].startswith("floor: ")]
    assert len(floors) == len(set(floors))
    assert {f"floor: {row['floor_name']}" for row in rows if row["floor_name"]} <= set(floors)


def test_bench_on_sqlite_measures_the_targets_with_a_worker_process(tmp_path: Path) -> None:
    rows, stderr = run_bench(tmp_path, "--only", SECTIONS)
    assert_target_rows(rows, drain_target="≥ 10,000 jobs/s")
    assert "synchronous=FULL" in one(rows, "single awaited enqueue")["floor_name"]
    assert "sqlite3" in one(rows, "bulk enqueue_many, 1000 per call")["floor_name"]
    latency = one(rows, "enqueue-to-start p50, across processes")
    assert latency["value"] > 0 and latency["target"] is None  # the target is Redis's
    assert_children_gone(stderr, expected=3)  # drain, sleep, latency


def test_bench_floor_follows_the_synchronous_option(tmp_path: Path) -> None:
    rows, _ = run_bench(tmp_path, "--only", "single,floor", "--option", "synchronous=NORMAL")
    assert "synchronous=NORMAL" in one(rows, "single awaited enqueue")["floor_name"]


@pytest.mark.redis
def test_bench_on_redis_measures_the_targets_with_a_worker_process(
    tmp_path: Path, tcp_redis: Server
) -> None:
    rows, stderr = run_bench(tmp_path, "--backend", tcp_redis.url, "--only", SECTIONS)
    assert_target_rows(rows, drain_target="≥ 13,000 jobs/s")
    assert "LPUSH" in one(rows, "single awaited enqueue")["floor_name"]
    assert_measured_against(one(rows, "enqueue-to-start p50, across processes"), "≤ 0.7 ms")
    assert_children_gone(stderr, expected=3)
    r = redis.Redis.from_url(tcp_redis.url)
    try:
        assert list(r.scan_iter("monoqbench*")) == []  # the bench cleans up after itself
    finally:
        r.close()


def assert_scale_rows(rows: list[dict[str, Any]], *, redis_cpu: bool) -> None:
    """The scale section: a drain with 1, 2 and 4 worker processes, each of 2 and 4 as a ratio
    to one; the children's CPU per job (on Linux), and on Redis the server's."""
    drains = {k: one(rows, f"scale: drain {JOBS} no-op jobs, {k} worker process"
                           f"{'es' if k > 1 else ''}, concurrency 10 each") for k in (1, 2, 4)}
    base = drains[1]
    assert base["value"] > 0 and base["unit"] == "jobs/s"
    assert base["floor"] is None and base["ratio"] is None and base["target"] is None
    for k in (2, 4):
        row = drains[k]
        assert row["value"] > 0 and row["unit"] == "jobs/s"
        assert row["floor"] == base["value"], row
        assert row["floor_name"] == "1 worker process, same drain"
        assert math.isclose(row["ratio"], row["value"] / base["value"], rel_tol=1e-9)
    for k in (1, 2, 4):
        plural = "es" if k > 1 else ""
        machine = one(rows, f"scale: machine CPU busy, {k} worker process{plural}")
        assert machine["unit"] == "cores" and machine["value"] >= 0, machine
        cpu = one(rows, f"scale: worker CPU per job, {k} process{plural}")
        # /proc counts in clock ticks (10 ms): a tiny drain may not reach one
        assert cpu["unit"] == "µs" and cpu["value"] >= 0 and "cores busy" in cpu["note"]
        found = [row for row in rows
                 if row["name"] == f"scale: Redis CPU per job, {k} worker process{plural}"]
        assert len(found) == (1 if redis_cpu else 0), rows
        for row in found:
            assert row["unit"] == "µs" and row["value"] > 0, row
            assert "of its one core" in row["note"], row


def test_bench_scale_drains_with_1_2_and_4_worker_processes(tmp_path: Path) -> None:
    rows, stderr = run_bench(tmp_path, "--only", "scale")
    assert_scale_rows(rows, redis_cpu=False)
    assert_children_gone(stderr, expected=7)  # 1 + 2 + 4


@pytest.mark.redis
def test_bench_scale_on_redis_reports_redis_cpu_per_job(tmp_path: Path, tcp_redis: Server
                                                        ) -> None:
    rows, stderr = run_bench(tmp_path, "--backend", tcp_redis.url, "--only", "scale")
    assert_scale_rows(rows, redis_cpu=True)
    assert_children_gone(stderr, expected=7)
    r = redis.Redis.from_url(tcp_redis.url)
    try:
        assert list(r.scan_iter("monoqbench*")) == []
    finally:
        r.close()


def test_bench_scale_is_skipped_on_a_process_local_backend(
        capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    assert main(["bench", "--backend", "memory://", "--jobs", "100", "--only", "scale",
                 "--json"], out=out) == 0
    assert [row["name"] for row in json.loads(out.getvalue())] == [
        "peak RSS of the benchmark process"]
    assert "scale: skipped" in capsys.readouterr().err


def test_bench_refuses_an_unknown_section(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--backend", "memory://", "--only", "drain,nope"],
                out=io.StringIO()) == 2
    assert "nope" in capsys.readouterr().err
