"""The handler the fault test's workers run: it writes one line per run to a shared file.

Workers run in separate network namespaces but share the file system, so the file is the
test's ground truth of what ran where: ``job_id attempt worker_id run_at_ms kind wall_ms key`` (``key``: the idempotency
key, which for a cron run names its fire time; ``-`` when there is none).
"""

from __future__ import annotations

import os
import time
from typing import Any

import anyio

import monoq


@monoq.handler("netns.record")
async def record(ctx: monoq.Context, payload: Any) -> str:
    options = payload if isinstance(payload, dict) else {}
    kind = str(options.get("kind", "submit"))
    run_at_ms = int(ctx.job.run_at.timestamp() * 1000)
    line = (f"{ctx.job.id} {ctx.job.attempt} {ctx.worker_id} {run_at_ms} {kind} "
            f"{int(time.time() * 1000)} {ctx.job.idempotency_key or '-'}\n")
    fd = os.open(os.environ["NETNS_RUNS_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())  # one write of one short line: appends never interleave
    finally:
        os.close(fd)
    await anyio.sleep(float(options.get("sleep", 0.05)))
    return "ok"
