"""Replays of the source systems' documents: a real `monoq run` and the documents' commands.

``Monoq`` starts `monoq run` processes in a folder of the test (its working directory, so
relative defaults such as ``./monoq.db`` and ``./processed.log`` land there) with a config file
and environment of the test's choosing, on a free loopback port. ``curl`` runs a document's
curl command as written, with only the address swapped, so the bytes sent (content types
included) are exactly what a user's curl sends.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.ports import free_port

# Variables of the machine running the tests that would change what monoq reads.
_SCRUBBED = ("REDIS_URL", "REDIS_ADDR", "REDIS_PASSWORD", "REDIS_DB", "API_PORT", "PORT",
             "HTTP_ADDR", "QUEUE_NAME", "REDIS_QUEUE_NAME", "WORKER_CONCURRENCY", "JOB_TIMEOUT",
             "MAX_RETRIES", "OUTPUT_PATH", "GIT_STORAGE_PATH")
# Variables that set the API port; a test that sets one chooses the port itself.
_PORT_NAMES = frozenset({"MONOQ_API_PORT", "API_PORT", "PORT", "HTTP_ADDR"})


def wait_until(check: Callable[[], bool], *, timeout: float = 30.0, what: str = "condition",
               detail: Callable[[], str] = lambda: "") -> None:
    """Poll ``check`` until it is true; fail with ``what`` and ``detail()`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{detail()}")
        time.sleep(0.05)


def parse_time(value: str) -> datetime:
    """An RFC 3339 time of the API (``2024-05-01T12:00:00.123Z``) as an aware datetime."""
    return datetime.fromisoformat(value)


class Monoq:
    """`monoq run` processes sharing one folder, config and port; stopped by ``stop_all``."""

    def __init__(self, directory: Path, config: str = "", **env: str) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = directory / "config.toml"
        self.config.write_text(config)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.extra_env = env
        self.procs: list[subprocess.Popen[bytes]] = []
        self._args: list[tuple[str, ...]] = []  # the `monoq run` arguments of each process
        self.http = httpx.Client(base_url=self.base, timeout=15)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a child: the test's variables, none of the host's monoq ones.

        The port is passed as ``MONOQ_API_PORT`` unless the test's variables name the port
        themselves (``API_PORT``, ``PORT``, ``HTTP_ADDR``, ``MONOQ_API_PORT``): a test of a
        source system's port variable then sets it to ``self.port``, and that is what is read.
        """
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("MONOQ_") and k not in _SCRUBBED}
        ours = {**self.extra_env, **extra}
        if not _PORT_NAMES.intersection(ours):
            env["MONOQ_API_PORT"] = str(self.port)
        return {**env, **ours}

    def start(self, *args: str, wait: bool = True, **env: str) -> subprocess.Popen[bytes]:
        """Start `monoq run <args>` in the folder; with ``wait``, return once it serves
        ``/readyz`` (when it runs the api role) or once it logged that it runs."""
        log = (self.dir / f"proc{len(self.procs)}.log").open("wb")
        with log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "monoq", "run", "--config", str(self.config), *args],
                cwd=self.dir, stdout=log, stderr=subprocess.STDOUT, env=self.env(**env),
            )
        self.procs.append(proc)
        self._args.append(args)
        if wait:
            self.wait_ready(proc)
        return proc

    def wait_ready(self, proc: subprocess.Popen[bytes], *, timeout: float = 30.0) -> None:
        """Return once ``proc`` (started here with ``wait=False``) serves ``/readyz`` (when it
        runs the api role) or logged that it runs; starting several processes first and then
        waiting for each lets them boot side by side."""
        index = self.procs.index(proc)
        args = self._args[index]
        api = "--roles" not in args or "api" in args[args.index("--roles") + 1]
        wait_until(lambda: self._up(proc, index, api), timeout=timeout,
                   what=f"monoq run {' '.join(args)}", detail=self.logs)

    def _up(self, proc: subprocess.Popen[bytes], index: int, api: bool) -> bool:
        assert proc.poll() is None, f"monoq exited with {proc.returncode}\n{self.logs()}"
        if not api:
            return "monoq running roles" in self.log(index)
        try:
            return self.http.get("/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def log(self, index: int) -> str:
        """What process ``index`` printed so far."""
        return (self.dir / f"proc{index}.log").read_text(errors="replace")

    def logs(self) -> str:
        """The tail of every process's output, for failure messages."""
        return "\n".join(f"== proc{i}\n{self.log(i)[-4000:]}" for i in range(len(self.procs)))

    def cli(self, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        """Run `monoq <args> --config ...` in the folder and return what it printed."""
        done = subprocess.run(
            [sys.executable, "-m", "monoq", *args, "--config", str(self.config)],
            cwd=self.dir, capture_output=True, text=True, env=self.env(**env), timeout=60,
            check=False,
        )
        if check:
            assert done.returncode == 0, done.stdout + done.stderr
        return done

    def curl(self, command: str) -> tuple[int, str]:
        """Run a document's curl ``command`` against this monoq: ``localhost:8080`` (with or
        without ``http://``) is replaced by this instance's address. Answers (status, body)."""
        argv = shlex.split(command.replace("\\\n", " "))
        assert argv[0] == "curl", command
        argv = [a.replace("http://localhost:8080", self.base).replace("localhost:8080", self.base)
                for a in argv]
        done = subprocess.run([*argv, "-sS", "-o", "-", "-w", "\n%{http_code}"],
                              capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0, done.stderr
        body, _, status = done.stdout.rpartition("\n")
        return int(status), body

    def wait_job(self, job_id: str, *, timeout: float = 30) -> dict[str, Any]:
        """The job once it is terminal (long-polls the API)."""
        deadline = time.monotonic() + timeout
        while True:
            answer = self.http.get(f"/api/v1/jobs/{job_id}/wait", params={"timeout": 5})
            job: dict[str, Any] = answer.json()
            if job.get("state") in ("completed", "dead", "cancelled"):
                return job
            assert time.monotonic() < deadline, json.dumps(job) + "\n" + self.logs()

    def signal(self, proc: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> int:
        """Send ``signum`` and answer the exit code."""
        proc.send_signal(signum)
        return proc.wait(timeout=40)

    def stop_all(self) -> None:
        """SIGTERM every process still running, wait (kill after 40 s), close the client."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.http.close()


def monoq_fixture(directory: Path, config: str = "", **env: str) -> Iterator[Monoq]:
    """Body of a fixture: a ``Monoq`` stopped at the end whatever happens."""
    instance = Monoq(directory, config, **env)
    try:
        yield instance
    finally:
        instance.stop_all()
