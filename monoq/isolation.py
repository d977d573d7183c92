"""Handlers that run in a pool of child processes: a timeout that really stops them.

A handler declared with ``@monoq.handler(..., isolation="process")`` does not run in the
worker's process. The worker keeps a pool of child processes (spawned, not forked: a child holds
nothing of the worker but the handler modules it imports) and sends each job to an idle child.
When the job passes its timeout, is cancelled or loses its lease, or the worker shuts down, the
child running it is killed (SIGKILL) and a fresh one takes its place on demand. That is a hard
timeout even for sync code that never looks at ``ctx.cancelled``; thread mode stays soft (a
thread cannot be killed, only abandoned).

Everything that crosses the process boundary is JSON: the job and its payload on the way in,
the result or the error on the way out (``multiprocessing``'s pipes carry the bytes; nothing is
pickled but the child's start-up arguments, which come from the worker's own registry, never from
a payload). A child finds a handler by name in a registry of the modules the worker registered
it from. Handlers in a child get a ``Context`` without plugins (``ctx.plugin`` raises) and with
``ctx.cancelled`` never set: the process is killed instead.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import os
import signal
import traceback
from collections.abc import Iterable
from datetime import datetime, timedelta
from multiprocessing.connection import Connection
from typing import Any

import anyio
import anyio.to_thread
import attrs
import msgspec

from monoq.context import Context
from monoq.core.codec import json_encode
from monoq.core.models import TRACEBACK_LIMIT, Job, JobState
from monoq.errors import Retry, SerializationError, SkipRetry

logger = logging.getLogger(__name__)

ISOLATIONS = ("thread", "process")


class HandlerProcessError(Exception):
    """A process-isolated handler raised; carries the child's exception type and traceback."""

    def __init__(self, type_name: str, message: str, remote_traceback: str | None) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.remote_traceback = remote_traceback


class HandlerProcessDied(Exception):
    """The child running a job exited without answering (a crash, the OOM killer, os._exit)."""


class ResultNotJson(Exception):
    """The handler's result could not be encoded as JSON in the child."""


# -- the job as JSON --------------------------------------------------------------------------

_BYTES = ("payload_json", "result_json")


def job_to_json(job: Job) -> dict[str, Any]:
    """Every field of ``job`` as JSON values (times as RFC 3339, JSON bytes as text)."""
    out: dict[str, Any] = {}
    for field in attrs.fields(Job):
        value = getattr(job, field.name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif field.name in _BYTES and value is not None:
            value = value.decode()
        out[field.name] = value
    return out


def job_from_json(data: dict[str, Any]) -> Job:
    """The inverse of ``job_to_json``."""
    values: dict[str, Any] = {}
    for field in attrs.fields(Job):
        value = data.get(field.name)
        if value is not None and field.name in _BYTES:
            value = value.encode()
        elif isinstance(value, str) and field.name.endswith("_at"):
            value = datetime.fromisoformat(value)
        elif field.name == "state":
            value = JobState(str(value))
        values[field.name] = value
    return Job(**values)


# -- the child --------------------------------------------------------------------------------

def _child_main(conn: Connection, modules: list[str]) -> None:
    """A child's life: import the handler modules, then run one job per request until the
    pipe closes. Runs in a spawned interpreter."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when a child stops
    from monoq.registry import Registry

    registry = Registry()
    for name in modules:
        registry.add_module(importlib.import_module(name))
    while True:
        try:
            request = msgspec.json.decode(conn.recv_bytes())
        except (EOFError, OSError):
            return
        conn.send_bytes(msgspec.json.encode(_run_one(registry, request)))


def _run_one(registry: Any, request: dict[str, Any]) -> dict[str, Any]:
    job = job_from_json(request["job"])
    spec = registry.find(job.handler)
    if spec is None:
        return {"kind": "error", "type": "HandlerNotFound",
                "message": f"no handler named {job.handler!r} in the handler process",
                "traceback": None}
    ctx = Context(job=job, lease_token=request["token"], worker_id=request["worker_id"])
    try:
        result = spec.func(ctx, job.payload)
        if hasattr(result, "__await__"):
            import asyncio

            async def wait() -> Any:
                return await result

            result = asyncio.run(wait())
    except Retry as exc:
        after = exc.after.total_seconds() if exc.after is not None else None
        return {"kind": "retry", "after": after, "message": str(exc)}
    except SkipRetry as exc:
        return {"kind": "skip", "message": str(exc)}
    except Exception as exc:  # noqa: BLE001 - the handler boundary: every error is an answer
        return {"kind": "error", "type": type(exc).__name__, "message": str(exc)[:2000],
                "traceback": "".join(traceback.format_exception(exc))[-TRACEBACK_LIMIT:]}
    try:
        return {"kind": "ok", "result": json_encode(result).decode()}
    except SerializationError as exc:
        return {"kind": "not_json", "message": str(exc)}


# -- the pool ---------------------------------------------------------------------------------

@attrs.define(eq=False)
class _Child:
    process: Any  # multiprocessing.context.SpawnProcess
    conn: Connection


class ProcessPool:
    """Up to ``size`` child processes, started on demand, each running one job at a time."""

    def __init__(self, modules: Iterable[str], size: int) -> None:
        self.modules = sorted(set(modules))
        self.size = size
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()
        self._slots = anyio.Semaphore(size)
        self._context = multiprocessing.get_context("spawn")
        self._closed = False
        self.killed = 0  # children killed because their job had to stop

    def _spawn(self) -> _Child:
        parent, child = self._context.Pipe(duplex=True)
        process = self._context.Process(target=_child_main, args=(child, self.modules),
                                        name="monoq-handler", daemon=True)
        process.start()
        child.close()
        return _Child(process, parent)

    async def run(self, job: Job, token: str, worker_id: str) -> bytes:
        """Run ``job`` in a child; answers the result's JSON. Raises what the handler raised
        (``Retry``, ``SkipRetry``, ``HandlerProcessError``), ``HandlerProcessDied`` or
        ``ResultNotJson``. Cancelled (timeout, cancel, lease lost, shutdown), it kills the
        child at once."""
        request = msgspec.json.encode({"job": job_to_json(job), "token": token,
                                       "worker_id": worker_id})
        async with self._slots:
            child = self._idle.pop() if self._idle else await anyio.to_thread.run_sync(
                self._spawn)
            self._busy.add(child)
            done = False
            try:
                answer = await anyio.to_thread.run_sync(self._exchange, child, request,
                                                        abandon_on_cancel=True)
                done = True
            finally:
                self._busy.discard(child)
                if done and not self._closed:
                    self._idle.append(child)
                else:  # interrupted or broken: this child may still be running the job
                    self.killed += not done
                    self._kill(child)
        return self._decode(answer, job)

    @staticmethod
    def _exchange(child: _Child, request: bytes) -> bytes | None:
        try:
            child.conn.send_bytes(request)
            return child.conn.recv_bytes()
        except (EOFError, OSError, BrokenPipeError):
            return None

    def _decode(self, answer: bytes | None, job: Job) -> bytes:
        if answer is None:
            raise HandlerProcessDied(f"the process running {job.handler!r} exited without an "
                                     "answer (a crash, or killed by the system)")
        reply: dict[str, Any] = msgspec.json.decode(answer)
        kind = reply["kind"]
        if kind == "ok":
            return str(reply["result"]).encode()
        if kind == "retry":
            after = reply["after"]
            raise Retry(None if after is None else timedelta(seconds=after), reply["message"])
        if kind == "skip":
            raise SkipRetry(reply["message"])
        if kind == "not_json":
            raise ResultNotJson(reply["message"])
        raise HandlerProcessError(reply["type"], reply["message"], reply["traceback"])

    @staticmethod
    def _kill(child: _Child) -> None:
        with contextlib.suppress(OSError, ValueError):
            child.conn.close()
        process = child.process
        if process.pid is not None and process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
        process.join(timeout=5)

    def close(self) -> None:
        """Stop every child (idle ones get EOF; busy ones are killed)."""
        self._closed = True
        for child in [*self._idle, *self._busy]:
            self._kill(child)
        self._idle.clear()
        self._busy.clear()
