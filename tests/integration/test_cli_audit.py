"""The CLI's operator actions in the audit log (source ``cli``, the OS user as actor), and
``monoq audit`` reading it; the scheduler's retention of the log."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monoq.backends.sqlite import SqliteBackend
from monoq.client import Client
from monoq.core.audit import Actor, acting_as
from monoq.scheduler import Scheduler, SchedulerSettings
from tests.integration.test_cli import Cli


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.chdir(tmp_path)
    for name in ("MONOQ_CONFIG", "REDIS_URL", "MONOQ_BACKEND_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOGNAME", "alice")  # what getpass.getuser() reads first
    return Cli(tmp_path)


def test_cli_actions_are_recorded_with_the_os_user(cli: Cli) -> None:
    job = cli.json("enqueue", "echo", "--queue", "mail", "--payload", '{"token": "s3cret"}')
    cli("queue", "pause", "mail")
    cli.json("job", "cancel", job["id"])
    cli.json("dlq", "requeue", "--all")
    cli.json("dlq", "purge", "--queue", "mail", "--older-than", "7d")
    cli.json("schedules", "add", "nightly", "--handler", "echo", "--cron", "0 3 * * *")
    cli.json("schedules", "disable", "nightly")
    cli.json("schedules", "remove", "nightly")
    cli("job", "cancel", "01NOSUCHJOB", code=1)
    cli("queue", "resume", "mail")

    got = cli.json("audit")["entries"]
    assert [(e["action"], e["target"], e["queue"], e["outcome"]) for e in reversed(got)] == [
        ("pause", "mail", "mail", "ok"),
        ("cancel", job["id"], "mail", "ok"),
        ("requeue", None, None, "ok"),
        ("purge", "mail", "mail", "ok"),
        ("schedule.put", "nightly", "default", "ok"),
        ("schedule.disable", "nightly", "default", "ok"),
        ("schedule.delete", "nightly", None, "ok"),
        ("cancel", "01NOSUCHJOB", None, "not_found"),
        ("resume", "mail", "mail", "ok"),
    ]
    assert {(e["actor"], e["source"], e["address"]) for e in got} == {("alice", "cli", None)}
    purge = next(e for e in got if e["action"] == "purge")
    assert purge["detail"] == {"purged": 0, "older_than_seconds": 7 * 86400.0}
    assert "s3cret" not in json.dumps(got)

    # filters, the table form, and durations for --since
    paused = cli.json("audit", "--action", "pause", "--queue", "mail")["entries"]
    assert [e["action"] for e in paused] == ["pause"]
    assert cli.json("audit", "--since", "1h")["entries"] == got
    assert cli.json("audit", "--until", "1h")["entries"] == []
    assert cli.json("audit", "--source", "api")["entries"] == []
    two = cli.json("audit", "--limit", "2")
    assert [e["id"] for e in two["entries"]] == [e["id"] for e in got[:2]]
    rest = cli.json("audit", "--cursor", two["next_cursor"], "--limit", "1000")["entries"]
    assert [e["id"] for e in rest] == [e["id"] for e in got[2:]]
    table = cli("audit", "--actor", "alice", "--limit", "3")
    assert table.splitlines()[0].split()[:4] == ["AT", "ACTOR", "SOURCE", "ACTION"]
    assert "resume" in table and "more: --cursor" in table
    # reading the log is not an action
    assert len(cli.json("audit")["entries"]) == len(got)


def test_bad_audit_filters_are_refused_with_the_field(cli: Cli,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    for argv, field in ((["--since", "whenever"], "since"), (["--limit", "0"], "limit"),
                        (["--cursor", "nope"], "cursor"), (["--queue", "a b"], "queue")):
        cli("audit", *argv, code=1)
        assert f"error: {field}:" in capsys.readouterr().err


async def test_the_scheduler_prunes_audit_entries_past_their_retention(tmp_path: Path) -> None:
    backend = SqliteBackend(f"sqlite:///{tmp_path / 'q.db'}")
    await backend.connect()
    try:
        now = datetime(2030, 1, 1, tzinfo=UTC)
        clock = [now - timedelta(days=40)]
        client = Client(backend, clock=lambda: clock[0])
        with acting_as(Actor("ops", "python")):
            await client.pause("mail")  # 40 days ago
            clock[0] = now - timedelta(days=20)
            await client.resume("mail")  # 20 days ago
        settings = SchedulerSettings(audit_retention=timedelta(days=30), batch_size=1)
        await Scheduler(client, settings).tick(now)
        assert [e.action for e in (await client.list_audit()).entries] == ["resume"]
        forever = SchedulerSettings(audit_retention=None)
        await Scheduler(client, forever).tick(now + timedelta(days=365))
        assert [e.action for e in (await client.list_audit()).entries] == ["resume"]
    finally:
        await backend.aclose()
