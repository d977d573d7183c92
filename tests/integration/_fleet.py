"""A fleet of real `monoq` processes on one config, for the multi-process tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


class Fleet:
    """Starts `monoq` child processes on one config and always cleans them up."""

    def __init__(self, tmp_path: Path, url: str, concurrency: int = 5, extra: str = "") -> None:
        self.dir = tmp_path
        self.url = url
        self.config = tmp_path / "config.toml"
        self.config.write_text(
            f'[backend]\nurl = "{url}"\n'
            f"[worker]\nconcurrency = {concurrency}\nlease_seconds = 2\n"
            "heartbeat_seconds = 0.5\n"
            "[scheduler]\nreap_margin_seconds = 0\n"
            "[retry]\nbase_seconds = 0.2\n" + extra
        )
        self.procs: list[subprocess.Popen[bytes]] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("MONOQ_") and k != "REDIS_URL"}
        return {**env, **extra}

    def start(self, roles: str, worker_id: str = "") -> subprocess.Popen[bytes]:
        extra = {"MONOQ_WORKER_ID": worker_id} if worker_id else {}
        log = (self.dir / f"proc{len(self.procs)}-{roles}.log").open("wb")
        with log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "monoq", "run", "--roles", roles, "--config",
                 str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, env=self.env(**extra),
            )
        self.procs.append(proc)
        return proc

    def cli(self, *args: str, stdin: str = "") -> str:
        done = subprocess.run(
            [sys.executable, "-m", "monoq", *args, "--config", str(self.config)],
            input=stdin, capture_output=True, text=True, env=self.env(), timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text()[-4000:]}"
                         for p in sorted(self.dir.glob("proc*.log")))

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
