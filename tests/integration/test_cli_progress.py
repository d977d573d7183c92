"""Long CLI work (``enqueue --batch``, ``dlq requeue``, ``dlq purge``) in bounded steps, with
progress bars on a terminal's stderr and nothing extra when the output is piped.

The piped runs are the CLI tests' own way of running commands (``main`` with a StringIO, or a
subprocess with pipes): their output must stay what it was, byte for byte. The terminal run
gives the child a pseudo-terminal as stderr (stdout stays a pipe) and looks for the bars.
"""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from monoq.cli import _JsonArray, main
from monoq.client import Client
from monoq.core.models import ErrorInfo, Finish, Outcome
from monoq.registry import Registry, open_backend

pytestmark = [pytest.mark.slow]


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)  # no ./config.toml
    for name in ("MONOQ_CONFIG", "REDIS_URL", "MONOQ_BACKEND_URL"):
        monkeypatch.delenv(name, raising=False)
    return f"sqlite:///{tmp_path / 'cli.db'}"


def cli(url: str, *argv: str, stdin: str = "", code: int = 0) -> str:
    out = io.StringIO()
    assert main([*argv, "--backend", url], stdin=io.StringIO(stdin), out=out) == code
    return out.getvalue()


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MONOQ_", "TTY_", "FORCE_COLOR")) and k != "REDIS_URL"}
    env["TERM"] = "xterm-256color"
    env["COLUMNS"] = "120"
    return env


def jsonl(n: int, **extra: Any) -> str:
    return "".join(json.dumps({"handler": "echo", "payload": i, **extra}) + "\n"
                   for i in range(n))


async def _make_dead(url: str, n: int, queue: str = "default") -> None:
    client = Client(open_backend(url, {}), registry=Registry.discover())
    await client.backend.connect()
    try:
        for first in range(0, n, 1000):
            count = min(1000, n - first)
            await client.enqueue_many([{"handler": "echo", "queue": queue}] * count)
            leases = await client.backend.claim([queue], limit=count,
                                                lease_for=timedelta(seconds=60),
                                                worker_id="test", now=client.clock())
            assert len(leases) == count
            await client.backend.finish(
                [Finish(lease, Outcome.DEAD, error=ErrorInfo("Boom", "test"))
                 for lease in leases], now=client.clock())
    finally:
        await client.backend.aclose()


def make_dead(url: str, n: int, queue: str = "default") -> None:
    anyio.run(_make_dead, url, n, queue)


def dead_count(url: str) -> int:
    return sum(q["counts"]["dead"] for q in json.loads(cli(url, "queues", "--json")))


# -- output --------------------------------------------------------------------------------------


@pytest.mark.parametrize("items", [[], [{"a": 1}], [{"a": [1, {"b": None}], "c": "é\n"}, {}, []]])
def test_the_streamed_json_array_is_the_bytes_of_one_dump(items: list[Any]) -> None:
    out = io.StringIO()
    writer = _JsonArray(out)
    for item in items:
        writer.add(item)
    writer.close()
    assert out.getvalue() == json.dumps(items, indent=2, ensure_ascii=False) + "\n"


# -- enqueue --batch, piped ----------------------------------------------------------------------


def test_batch_from_a_file_streams_it_in_calls_and_prints_only_the_jobs(
        url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text(jsonl(2500) + "\n")  # a blank line is skipped, as on stdin
    out = cli(url, "enqueue", "--batch", "--file", str(path))
    lines = out.splitlines()
    assert len(lines) == 2500
    assert all(line.endswith(" queued") for line in lines)
    assert capsys.readouterr().err == "enqueued 2500 jobs\n"  # no bar, no escape codes
    assert json.loads(cli(url, "queues", "--json"))[0]["counts"]["queued"] == 2500


def test_batch_json_output_is_one_array_of_every_job(url: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text(jsonl(1500))
    out = cli(url, "enqueue", "--file", str(path), "--json")  # --file implies --batch
    jobs = json.loads(out)
    assert [job["payload"] for job in jobs] == list(range(1500))
    assert out == json.dumps(jobs, indent=2, ensure_ascii=False) + "\n"
    assert capsys.readouterr().err == ""


def test_a_bad_line_late_in_a_large_file_enqueues_nothing(
        url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text(jsonl(2400) + '{"handler": "echo", "priority": 42}\n' + jsonl(10))
    assert cli(url, "enqueue", "--batch", "--file", str(path), code=1) == ""
    err = capsys.readouterr().err
    assert "line 2401" in err and "nothing was enqueued" in err
    assert json.loads(cli(url, "queues", "--json")) == []


def test_batch_from_a_pipe_is_read_twice_through_a_spool(url: str, tmp_path: Path) -> None:
    """stdin as a real pipe (not seekable): checked, then enqueued from the spool copy."""
    done = subprocess.run(
        [sys.executable, "-m", "monoq", "enqueue", "--batch", "echo", "--backend", url],
        input=jsonl(1200).replace('"handler": "echo", ', ""), capture_output=True, text=True,
        cwd=tmp_path, env=child_env(), timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 1200
    assert done.stderr == "enqueued 1200 jobs\n"


def test_batch_file_that_is_missing_is_an_error(url: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    cli(url, "enqueue", "--batch", "--file", "nope.jsonl", code=1)
    assert "nope.jsonl" in capsys.readouterr().err


# -- dlq requeue / purge, piped ------------------------------------------------------------------


def test_requeue_all_covers_every_page_and_reports_the_same_total(
        url: str, capsys: pytest.CaptureFixture[str]) -> None:
    make_dead(url, 1300)
    make_dead(url, 200, queue="mail")
    assert dead_count(url) == 1500
    assert cli(url, "dlq", "requeue", "--all") == "requeued 1500 jobs\n"
    assert capsys.readouterr().err == ""
    assert dead_count(url) == 0


def test_requeue_by_queue_and_by_ids_in_steps(url: str) -> None:
    make_dead(url, 700)
    make_dead(url, 600, queue="mail")
    moved = json.loads(cli(url, "dlq", "requeue", "--queue", "mail", "--json"))["requeued"]
    assert len(moved) == len(set(moved)) == 600
    ids = [job["id"] for job in json.loads(cli(url, "dlq", "list", "--limit", "700",
                                               "--json"))["jobs"]]
    assert len(ids) == 700
    assert cli(url, "dlq", "requeue", *ids) == "requeued 700 jobs\n"
    assert dead_count(url) == 0


def test_purge_deletes_every_dead_job_in_bounded_steps(
        url: str, capsys: pytest.CaptureFixture[str]) -> None:
    make_dead(url, 2100)
    assert cli(url, "dlq", "purge", "--json") == '{\n  "purged": 2100\n}\n'
    assert capsys.readouterr().err == ""
    make_dead(url, 10)
    assert cli(url, "dlq", "purge", "--older-than", "1h") == "purged 0 dead jobs\n"
    assert cli(url, "dlq", "purge") == "purged 10 dead jobs\n"


# -- on a terminal -------------------------------------------------------------------------------


def run_with_tty_stderr(argv: list[str], cwd: Path, stdin: str | None = None
                        ) -> tuple[int, str, str]:
    """Run ``monoq`` with a pseudo-terminal as its stderr and pipes for stdin and stdout."""
    leader, follower = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the last follower end closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        done = subprocess.run([sys.executable, "-m", "monoq", *argv], input=stdin,
                              stdout=subprocess.PIPE, stderr=follower, text=True, cwd=cwd,
                              env=child_env(), timeout=120, check=False)
    finally:
        os.close(follower)
    reader.join(10)
    os.close(leader)
    return done.returncode, done.stdout, b"".join(chunks).decode(errors="replace")


def test_a_terminal_gets_progress_bars_and_stdout_stays_the_same(url: str,
                                                                 tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text(jsonl(3000))
    code, stdout, stderr = run_with_tty_stderr(
        ["enqueue", "--batch", "--file", str(path), "--backend", url], tmp_path)
    assert code == 0, stderr
    assert len(stdout.splitlines()) == 3000  # stdout is a pipe: the plain lines only
    assert "checking" in stderr and "enqueueing" in stderr
    assert "\x1b[" in stderr  # drawn with terminal control sequences
    assert "━" in stderr  # rich's bar
    assert "enqueued 3000 jobs" in stderr

    make_dead(url, 1200)
    code, stdout, stderr = run_with_tty_stderr(["dlq", "purge", "--backend", url], tmp_path)
    assert code == 0, stderr
    assert stdout == "purged 1200 dead jobs\n"
    assert "purging dead jobs" in stderr and "━" in stderr

    make_dead(url, 50)
    code, stdout, stderr = run_with_tty_stderr(["dlq", "requeue", "--all", "--backend", url],
                                               tmp_path)
    assert code == 0, stderr
    assert stdout == "requeued 50 jobs\n"
    assert "requeueing dead jobs" in stderr


def test_json_output_draws_no_bars_even_on_a_terminal(url: str, tmp_path: Path) -> None:
    make_dead(url, 30)
    code, stdout, stderr = run_with_tty_stderr(["dlq", "purge", "--json", "--backend", url],
                                               tmp_path)
    assert code == 0, stderr
    assert json.loads(stdout) == {"purged": 30}
    assert stderr == ""


def test_bench_shows_its_steps_on_a_terminal_and_prints_the_same_table(tmp_path: Path) -> None:
    argv = ["bench", "--backend", "memory://", "--jobs", "200", "--only", "enqueue"]
    code, stdout, stderr = run_with_tty_stderr(argv, tmp_path)
    assert code == 0, stderr
    assert "bench: enqueue" in stderr and "━" in stderr
    assert "bulk enqueue_many, 1000 per call: " in stderr  # its log lines, above the bars
    piped = subprocess.run([sys.executable, "-m", "monoq", *argv], capture_output=True,
                           text=True, cwd=tmp_path, env=child_env(), timeout=120, check=False)
    assert piped.returncode == 0, piped.stderr
    assert "\x1b[" not in piped.stderr and "bench:" not in piped.stderr
    shape = [line.split("|")[1] for line in stdout.splitlines()]  # the figures differ
    assert shape == [line.split("|")[1] for line in piped.stdout.splitlines()]
