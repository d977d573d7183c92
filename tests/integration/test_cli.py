"""The CLI, in-process through ``main`` (the same code path as the console script)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from monoq.cli import main


class Cli:
    def __init__(self, tmp_path: Path) -> None:
        self.url = f"sqlite:///{tmp_path / 'cli.db'}"

    def __call__(self, *argv: str, stdin: str = "", code: int = 0) -> str:
        out = io.StringIO()
        got = main([*argv, "--backend", self.url], stdin=io.StringIO(stdin), out=out)
        assert got == code, out.getvalue()
        return out.getvalue()

    def json(self, *argv: str) -> Any:
        return json.loads(self(*argv, "--json"))


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.chdir(tmp_path)  # no ./config.toml: built-in defaults plus flags
    for name in ("MONOQ_CONFIG", "REDIS_URL", "MONOQ_BACKEND_URL"):
        monkeypatch.delenv(name, raising=False)
    return Cli(tmp_path)


def test_enqueue_show_and_list(cli: Cli) -> None:
    job = cli.json("enqueue", "echo", "--payload", '{"x": 1}', "--priority", "high",
                   "--queue", "mail")
    assert job["state"] == "queued"
    assert job["priority"] == 0
    assert job["queue"] == "mail"
    assert job["payload"] == {"x": 1}
    shown = cli.json("job", "show", job["id"])
    assert shown["id"] == job["id"]
    assert shown["attempts"] == []
    listed = cli.json("jobs", "--queue", "mail")
    assert [j["id"] for j in listed["jobs"]] == [job["id"]]
    table = cli("jobs")
    assert job["id"] in table and "HANDLER" in table


def test_idempotency_key_returns_the_original(cli: Cli) -> None:
    first = cli.json("enqueue", "echo", "--idempotency-key", "order-7")
    again = cli("enqueue", "echo", "--idempotency-key", "order-7")
    assert again.startswith(first["id"])
    assert "existing job" in again
    assert len(cli.json("jobs")["jobs"]) == 1


def test_delay_makes_a_scheduled_job(cli: Cli) -> None:
    job = cli.json("enqueue", "echo", "--delay", "3600")
    assert job["state"] == "scheduled"


def test_bad_input_is_refused_and_changes_nothing(cli: Cli, capsys: pytest.CaptureFixture[str]
                                                  ) -> None:
    cli("enqueue", "echo", "--payload", "{not json", code=1)
    cli("enqueue", "echo", "--priority", "urgent", code=1)
    cli("enqueue", "bad name!", code=1)
    cli("enqueue", "nobody-has-this", code=1)
    assert "nobody-has-this" in capsys.readouterr().err
    cli("enqueue", "echo", "--queue", "../etc", code=1)
    assert cli.json("jobs")["jobs"] == []


def test_unknown_handler_allowed_on_request(cli: Cli) -> None:
    job = cli.json("enqueue", "elsewhere.handler", "--allow-unknown")
    assert job["handler"] == "elsewhere.handler"


def test_batch_mode_reads_json_lines(cli: Cli) -> None:
    lines = "\n".join(json.dumps({"payload": i}) for i in range(5)) + "\n"
    out = cli("enqueue", "echo", "--batch", stdin=lines)
    assert len(out.splitlines()) == 5
    jobs = cli.json("jobs")["jobs"]
    assert sorted(j["payload"] for j in jobs) == [0, 1, 2, 3, 4]


def test_batch_mode_with_a_bad_line_enqueues_nothing(cli: Cli,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    lines = '{"handler": "echo"}\n{"handler": "echo", "priority": 42}\n'
    cli("enqueue", "--batch", stdin=lines, code=1)
    assert "line 2" in capsys.readouterr().err
    assert cli.json("jobs")["jobs"] == []


def test_cancel_retry_and_dead_letter_queue(cli: Cli, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    job = cli.json("enqueue", "echo")
    cancelled = cli.json("job", "cancel", job["id"])
    assert cancelled["state"] == "cancelled"
    retried = cli.json("job", "retry", job["id"])
    assert retried["state"] == "queued"
    cli("job", "retry", job["id"], code=1)  # queued jobs cannot be retried
    assert "only dead or cancelled" in capsys.readouterr().err
    cli("job", "show", "01NOSUCHJOB0000000000000000", code=1)
    assert cli.json("dlq", "list")["jobs"] == []
    assert cli.json("dlq", "purge") == {"purged": 0}
    cli("dlq", "requeue", code=1)  # needs ids, a filter or --all


def test_queues_pause_and_resume(cli: Cli) -> None:
    cli("enqueue", "echo", "--queue", "reports")
    cli("queue", "pause", "reports")
    [stats] = [q for q in cli.json("queues") if q["queue"] == "reports"]
    assert stats["paused"] is True
    assert stats["counts"]["queued"] == 1
    cli("queue", "resume", "reports")
    [stats] = [q for q in cli.json("queues") if q["queue"] == "reports"]
    assert stats["paused"] is False


def test_handlers_lists_the_builtin_plugin(cli: Cli) -> None:
    names = {h["name"] for h in cli.json("handlers")}
    assert {"echo", "sleep", "fail"} <= names


def test_memory_backend_is_explained_not_used(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["enqueue", "echo", "--backend", "memory://"], out=io.StringIO())
    assert code == 2
    assert "lives inside one process" in capsys.readouterr().err


def test_config_errors_name_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[worker]\nconcurrency = 0\n")
    assert main(["jobs", "--config", str(bad)], out=io.StringIO()) == 2
    assert "worker.concurrency" in capsys.readouterr().err


def test_run_refuses_split_roles_on_memory(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "monoq", "run", "--roles", "worker", "--backend", "memory://"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False,
    )
    assert done.returncode == 2
    assert "cannot be shared" in done.stderr


def test_token_create_prints_a_token_whose_hash_admits_it() -> None:
    import hashlib

    out = io.StringIO()
    assert main(["token", "create", "--scope", "enqueue", "--json"], out=out) == 0
    data = json.loads(out.getvalue())
    assert data["scope"] == "enqueue"
    assert hashlib.sha256(data["token"].encode()).hexdigest() == data["sha256"]


def test_doctor_reports_a_reachable_backend(cli: Cli) -> None:
    checks = {c["check"]: c for c in cli.json("doctor")}
    assert checks["reachable"]["level"] == "ok"
    assert "echo" in checks["handlers"]["message"]


def test_doctor_fails_on_an_unreachable_backend(tmp_path: Path) -> None:
    out = io.StringIO()
    code = main(["doctor", "--json", "--backend", f"sqlite:///{tmp_path}/missing-dir/x/q.db"],
                out=out)
    assert code == 1
    assert any(c["level"] == "error" for c in json.loads(out.getvalue()))


def test_schedules_add_list_trigger_runs_disable_remove(cli: Cli,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    added = cli.json("schedules", "add", "nightly", "--handler", "echo", "--cron", "0 3 * * *",
                     "--timezone", "Europe/Paris", "--payload", '{"r": 1}', "--misfire", "once")
    assert added["origin"] == "api"
    assert added["next_fire_at"] is not None
    cli("schedules", "add", "tick", "--handler", "echo", "--every", "30s")
    table = cli("schedules", "list")
    assert "nightly" in table
    assert "every 30s" in table
    job = cli.json("schedules", "trigger", "nightly")
    assert job["schedule_id"] == "nightly"
    assert job["payload"] == {"r": 1}
    runs = cli.json("schedules", "runs", "nightly")["runs"]
    assert [r["job_id"] for r in runs] == [job["id"]]
    assert cli.json("schedules", "disable", "tick")["enabled"] is False
    assert cli.json("schedules", "enable", "tick")["enabled"] is True
    cli("schedules", "remove", "tick")
    assert [s["id"] for s in cli.json("schedules", "list")] == ["nightly"]
    cli("schedules", "remove", "tick", code=1)
    assert "no schedule with id 'tick'" in capsys.readouterr().err


def test_schedules_add_refuses_bad_cron_and_timezone(cli: Cli,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    cli("schedules", "add", "x", "--handler", "echo", "--cron", "61 * * * *", code=1)
    assert "cron" in capsys.readouterr().err
    cli("schedules", "add", "x", "--handler", "echo", "--cron", "0 * * * *", "--timezone",
        "Nowhere/City", code=1)
    assert "timezone" in capsys.readouterr().err
    assert cli.json("schedules", "list") == []


def test_bench_runs_and_reports_every_figure_it_names() -> None:
    out = io.StringIO()
    code = main(["bench", "--backend", "memory://", "--jobs", "1000", "--only",
                 "enqueue,drain,latency", "--json"], out=out)
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out.getvalue())}
    # memory:// lives in one process: its worker rows are in-process, with no targets
    assert "drain 1000 no-op jobs, in process, concurrency 10" in rows
    assert "enqueue-to-start p50, same process" in rows
    assert all(row["value"] > 0 for row in rows.values())
    assert all(row["target"] is None and row["met"] is None for row in rows.values())
