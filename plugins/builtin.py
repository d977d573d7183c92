"""Demo and test handlers: ``echo``, ``sleep`` and ``fail``.

Registered through the ``monoq.handlers`` entry point exactly as a third-party plugin would be.
"""

from __future__ import annotations

from typing import Any

import anyio

import monoq


@monoq.handler("echo")
async def echo(ctx: monoq.Context, payload: Any) -> Any:
    """Return the payload unchanged."""
    return payload


@monoq.handler("sleep")
async def sleep(ctx: monoq.Context, payload: Any) -> dict[str, float]:
    """Wait ``payload["seconds"]`` (default 1) and report how long."""
    seconds = float(payload.get("seconds", 1)) if isinstance(payload, dict) else float(payload or 1)
    if not 0 <= seconds <= 86400:
        raise monoq.SkipRetry(f"seconds must be between 0 and 86400, got {seconds}")
    await anyio.sleep(seconds)
    return {"slept": seconds}


class InjectedFailure(Exception):
    """What ``fail`` raises."""


@monoq.handler("fail")
async def fail(ctx: monoq.Context, payload: Any) -> dict[str, int]:
    """Raise; with ``payload["times"] = N`` fail only the first N attempts, then succeed."""
    data = payload if isinstance(payload, dict) else {}
    times = data.get("times")
    message = str(data.get("message", "failed on purpose"))
    if times is None or ctx.attempt <= int(times):
        raise InjectedFailure(f"{message} (attempt {ctx.attempt})")
    return {"succeeded_on_attempt": ctx.attempt}
