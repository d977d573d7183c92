"""phrase1 (API + Redis list + worker appending lines to a file), replayed on `monoq run`.

Its document: `curl -sS -X POST localhost:8080/enqueue -d 'hello from curl'`, the same with a
JSON body, `GET /healthz`, and the worker appending one line per message to
`/data/processed.log` (`OUTPUT_PATH`), on the queue `QUEUE_NAME` (default `messages`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from tests.seeds._support import Monoq, monoq_fixture, wait_until

pytestmark = pytest.mark.slow

PLAIN = "curl -sS -X POST localhost:8080/enqueue -d 'hello from curl'"
JSON = """curl -sS -X POST localhost:8080/enqueue \\
  -H 'Content-Type: application/json' \\
  -d '{"message":"hello json"}'"""
HEALTH = "curl -sS localhost:8080/healthz"


class Redis(Protocol):
    port: int | None


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _line_of(lines: list[str], job_id: str) -> str:
    """The line written for ``job_id`` (jobs run concurrently, so lines come in any order)."""
    [line] = [line for line in lines if job_id in line]
    return line


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Monoq]:
    yield from monoq_fixture(tmp_path / "app")


def test_the_documented_curl_commands_append_lines_with_no_configuration(app: Monoq) -> None:
    app.start()  # `monoq run` in an empty folder: SQLite, every role
    status, body = app.curl(PLAIN)
    assert status in (200, 201), body
    plain = json.loads(body)
    assert plain["enqueued"] is True
    status, body = app.curl(JSON)
    assert status in (200, 201), body
    as_json = json.loads(body)
    status, body = app.curl(HEALTH)
    assert status == 200, body

    for answer in (plain, as_json):
        assert app.wait_job(answer["id"])["state"] == "completed"
    out = app.dir / "processed.log"  # the log job kind's default path, in the working folder
    lines = _lines(out)
    assert len(lines) == 2, lines
    # one line per message: the text as sent, the JSON compactly, each tagged with its job id
    assert _line_of(lines, plain["id"]).endswith("hello from curl")
    assert _line_of(lines, as_json["id"]).endswith('{"message":"hello json"}')
    job = app.http.get(f"/api/v1/jobs/{plain['id']}").json()
    assert (job["handler"], job["queue"], job["payload"]) == ("log", "default", "hello from curl")


def test_its_compose_deployment_api_and_worker_on_redis_with_its_env_names(
    tmp_path: Path, tcp_redis: Redis
) -> None:
    out = tmp_path / "data" / "processed.log"
    env = {
        "REDIS_ADDR": f"127.0.0.1:{tcp_redis.port}",
        "QUEUE_NAME": "messages",
        "OUTPUT_PATH": str(out),
    }
    for instance in monoq_fixture(tmp_path / "compose", **env):
        instance.start("--roles", "api")
        instance.start("--roles", "worker")
        answers = []
        for command in (PLAIN, JSON):
            status, body = instance.curl(command)
            assert status in (200, 201), body
            answers.append(json.loads(body))
        for answer in answers:
            job = instance.wait_job(answer["id"])
            assert (job["state"], job["queue"]) == ("completed", "messages")
        wait_until(lambda: len(_lines(out)) == 2, what="two lines in OUTPUT_PATH",
                   detail=instance.logs)
        lines = _lines(out)
        assert _line_of(lines, answers[0]["id"]).endswith("hello from curl")
        assert _line_of(lines, answers[1]["id"]).endswith('{"message":"hello json"}')
        length = instance.http.get("/api/v1/queue/length").json()
        assert length == {"queue": "messages", "length": 0}
        assert not (instance.dir / "monoq.db").exists()  # Redis, not the SQLite default
