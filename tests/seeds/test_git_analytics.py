"""git-analytics (an API and workers indexing git repositories), replayed on `monoq run`.

Its document: repositories are indexed, updated and deleted by jobs on the Redis queue
`REDIS_QUEUE_NAME` (default `git_index_jobs`), cloned under `GIT_STORAGE_PATH`, with statuses
pending, indexing, completed and failed; `GET /api/v1/queue/length`; several workers with
`WORKER_CONCURRENCY=5` sharing the queue. Its own `/api/v1/repositories` routes become monoq
jobs of the `git.index`, `git.update` and `git.delete` kinds, and a repository's status is its
job's state (pending = queued, indexing = running, completed, failed = retrying or dead).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.seeds._support import Monoq, monoq_fixture, wait_until

pytestmark = pytest.mark.slow

QUEUE = "git_index_jobs"


class Redis(Protocol):
    port: int | None


def _git(repo: Path, *args: str, when: str = "2024-01-15T10:00:00Z",
         author: str = "Alice <alice@example.com>") -> str:
    name, _, email = author.partition(" <")
    env = {**os.environ, "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email.rstrip(">"),
           "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email.rstrip(">"),
           "GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when,
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    done = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True,
                          check=True)
    return done.stdout


def make_repository(path: Path) -> str:
    """A repository with three commits by two authors on ``master``; answers its file URL."""
    path.mkdir(parents=True)
    _git(path, "init", "-q", "-b", "master")
    commits = [("main.go", "Alice <alice@example.com>", "2024-01-15T10:00:00Z"),
               ("README.md", "Bob <bob@example.com>", "2024-01-16T10:00:00Z"),
               ("util.go", "Alice <alice@example.com>", "2024-01-17T10:00:00Z")]
    for name, author, when in commits:
        (path / name).write_text(f"{name}\n")
        _git(path, "add", name, author=author, when=when)
        _git(path, "commit", "-q", "-m", f"add {name}", author=author, when=when)
    return path.as_uri()


def _submit(app: Monoq, handler: str, payload: dict[str, Any], **fields: Any) -> dict[str, Any]:
    answer = app.http.post("/api/v1/jobs", json={"handler": handler, "payload": payload,
                                                 **fields})
    assert answer.status_code == 201, answer.text
    job: dict[str, Any] = answer.json()
    return job


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Monoq]:
    env = {"REDIS_QUEUE_NAME": QUEUE, "GIT_STORAGE_PATH": str(tmp_path / "repos"),
           "MONOQ_PLUGINS_GIT_ALLOW_FILE_URLS": "true"}  # the test's repositories are local
    yield from monoq_fixture(tmp_path / "app", **env)


def test_index_update_delete_with_statuses_and_queue_length(app: Monoq, tmp_path: Path) -> None:
    url = make_repository(tmp_path / "source" / "repo")
    app.start("--roles", "api,scheduler")  # step 3: the API, no worker yet

    # steps 5-6: create the repository and trigger its indexing
    job = _submit(app, "git.index", {"url": url, "default_branch": "master"})
    assert (job["state"], job["queue"]) == ("queued", QUEUE)  # status "pending"
    # step 7: `curl http://localhost:8080/api/v1/queue/length`
    status, body = app.curl("curl http://localhost:8080/api/v1/queue/length")
    assert status == 200
    assert json.loads(body) == {"queue": QUEUE, "length": 1}

    # step 4: the worker (WORKER_CONCURRENCY=5)
    app.start("--roles", "worker", WORKER_CONCURRENCY="5")
    # step 8: the repository's status
    indexed = app.wait_job(job["id"])
    assert indexed["state"] == "completed", indexed
    result = indexed["result"]
    assert (result["branch"], result["commit_count"]) == ("master", 3)
    assert result["first_commit_at"] == "2024-01-15T10:00:00Z"
    assert result["last_commit_at"] == "2024-01-17T10:00:00Z"
    assert [(a["name"], a["commits"]) for a in result["authors"]] == [("Alice", 2), ("Bob", 1)]
    assert result["files_by_extension"] == {".go": 2, ".md": 1}
    stored = tmp_path / "repos" / result["storage_key"]
    assert stored.is_dir()

    # update: pull the latest changes and re-analyse
    source = tmp_path / "source" / "repo"
    (source / "api.go").write_text("package api\n")
    _git(source, "add", "api.go", author="Carol <carol@example.com>", when="2024-02-01T09:00:00Z")
    _git(source, "commit", "-q", "-m", "add api", author="Carol <carol@example.com>",
         when="2024-02-01T09:00:00Z")
    updated = app.wait_job(_submit(app, "git.update", {"url": url, "branch": "master"})["id"])
    assert updated["state"] == "completed", updated
    assert (updated["result"]["commit_count"], updated["result"]["new_commits"]) == (4, 1)
    assert updated["result"]["previous_head"] == result["head"]["sha"]

    # delete: clean up the repository's data
    deleted = app.wait_job(_submit(app, "git.delete", {"url": url, "branch": "master"})["id"])
    assert deleted["state"] == "completed" and deleted["result"]["existed"] is True
    assert not stored.exists()

    # status "failed": a repository that cannot be cloned ends in the dead-letter queue
    missing = (tmp_path / "source" / "missing").as_uri()
    failed = app.wait_job(_submit(app, "git.index", {"url": missing}, max_retries=0)["id"])
    assert failed["state"] == "dead"
    attempts = app.http.get(f"/api/v1/jobs/{failed['id']}/attempts").json()["attempts"]
    assert attempts[0]["error_message"], attempts
    length = app.http.get("/api/v1/queue/length").json()
    assert length == {"queue": QUEUE, "length": 0}


def test_three_workers_share_the_queue_on_redis(tmp_path: Path, tcp_redis: Redis) -> None:
    urls = [make_repository(tmp_path / "source" / f"repo{i}") for i in range(6)]
    env = {"REDIS_ADDR": f"127.0.0.1:{tcp_redis.port}", "REDIS_QUEUE_NAME": QUEUE,
           "GIT_STORAGE_PATH": str(tmp_path / "repos"),
           "MONOQ_PLUGINS_GIT_ALLOW_FILE_URLS": "true"}
    for app in monoq_fixture(tmp_path / "app", **env):
        app.start("--roles", "api,scheduler")
        for _ in range(3):  # "Terminal 1, 2, 3: WORKER_CONCURRENCY=5 go run cmd/worker/main.go"
            app.start("--roles", "worker", WORKER_CONCURRENCY="5")

        def workers(app: Monoq = app) -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = app.http.get("/api/v1/workers").json()["workers"]
            return found

        wait_until(lambda: len(workers()) == 3, what="three live workers", detail=app.logs)
        assert all(w["queues"] == [QUEUE] and w["concurrency"] == 5 for w in workers())
        jobs = [_submit(app, "git.index", {"url": url, "default_branch": "master"})
                for url in urls]
        done = [app.wait_job(job["id"]) for job in jobs]
        assert [(j["state"], j["attempt"]) for j in done] == [("completed", 1)] * 6
        assert {j["result"]["commit_count"] for j in done} == {3}
        assert len({j["result"]["storage_key"] for j in done}) == 6
        assert not (app.dir / "monoq.db").exists()  # on Redis, as the system was
