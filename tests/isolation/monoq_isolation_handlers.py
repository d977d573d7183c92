"""Handlers for the process-isolation and recycling tests (imported by child processes and by
`monoq run` workers by module name, so they live in a module of their own)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import anyio

import monoq
from monoq.worker import resident_mib

_HOARD: list[bytearray] = []


def _note(name: str, line: str) -> None:
    """Append one line to the file ``$ISOLATION_DIR/name`` (one write: never interleaved)."""
    fd = os.open(Path(os.environ["ISOLATION_DIR"]) / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                 0o600)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


@monoq.handler("iso.spin", isolation="process")
def spin(ctx: monoq.Context, payload: Any) -> None:
    """Sync code that never looks at ctx.cancelled: only killing its process stops it."""
    _note("pids", f"{ctx.job.id} {os.getpid()}")
    while True:
        time.sleep(0.01)


@monoq.handler("iso.echo", isolation="process")
def echo(ctx: monoq.Context, payload: Any) -> Any:
    _note("pids", f"{ctx.job.id} {os.getpid()}")
    return {"payload": payload, "attempt": ctx.attempt, "pid": os.getpid()}


@monoq.handler("iso.async_echo", isolation="process")
async def async_echo(ctx: monoq.Context, payload: Any) -> Any:
    await anyio.sleep(0.001)  # a real await: it runs on an event loop in the child
    return {"payload": payload, "pid": os.getpid()}


@monoq.handler("iso.fail", isolation="process")
def fail(ctx: monoq.Context, payload: Any) -> None:
    kind = payload["kind"]
    if kind == "error":
        raise ValueError(f"bad input {payload['n']}")
    if kind == "retry":
        raise monoq.Retry(after=30, reason="the upstream asked for later")
    if kind == "skip":
        raise monoq.SkipRetry("this one can never work")
    if kind == "crash":
        os._exit(3)  # as a segfault or the OOM killer would leave it: no answer at all


@monoq.handler("iso.not_json", isolation="process")
def not_json(ctx: monoq.Context, payload: Any) -> Any:
    return object()  # msgspec encodes sets and tuples as arrays, but not an arbitrary object


@monoq.handler("iso.record")
async def record(ctx: monoq.Context, payload: Any) -> Any:
    """For the recycling tests: one line per run, and this process's memory."""
    _note("runs", f"{ctx.job.id} {os.getpid()}")
    if isinstance(payload, dict) and payload.get("hoard_mb"):
        _HOARD.append(bytearray(int(payload["hoard_mb"]) * 2**20))  # a leak, on purpose
        for chunk in _HOARD:
            chunk[::4096] = b"x" * len(chunk[::4096])  # touch every page: resident for real
    return {"rss_mb": resident_mib(), "pid": os.getpid()}
