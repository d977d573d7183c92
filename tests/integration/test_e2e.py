"""`monoq run` in an empty folder: SQLite default, every role, a real uvicorn on loopback."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.ports import free_port

pytestmark = pytest.mark.slow


def test_monoq_run_in_an_empty_folder_serves_every_role(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONOQ_")
           and k not in ("REDIS_URL", "API_PORT")}
    env["MONOQ_API_PORT"] = str(port)
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "monoq", "run"], cwd=tmp_path, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        created = httpx.post(f"{base}/api/v1/jobs", json={"handler": "echo", "payload": {"x": 1}},
                             timeout=5)
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        waited = httpx.get(f"{base}/api/v1/jobs/{job_id}/wait", params={"timeout": 10},
                           timeout=15)
        assert waited.json()["state"] == "completed"
        got = httpx.get(f"{base}/api/v1/jobs/{job_id}", timeout=5).json()
        assert got["result"] == {"x": 1}
        assert got["attempt"] == 1
        db = tmp_path / "monoq.db"
        assert db.exists()
        assert stat.S_IMODE(db.stat().st_mode) == 0o600
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0, log.read_text()
    assert "monoq stopped" in log.read_text()
