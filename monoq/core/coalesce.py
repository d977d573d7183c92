"""Concurrent single enqueues share one backend call.

A producer (an API process, an async web app) often enqueues one job per request, many at a
time. Each job is validated and built by its caller first, so a bad one fails alone; then it is
handed to ``EnqueueCoalescer.submit``. If no backend call is in flight the job goes out at once,
from the caller's own task (one awaited enqueue costs one backend call and nothing else);
otherwise it joins the next call with every other job that arrived meanwhile (at most
``max_batch`` per call). An idle producer adds no latency; a busy one makes one round trip per
batch instead of one per job.

Each caller gets its own item of the combined answer. Backends deduplicate idempotency keys
within one call exactly as across calls, so two callers with one key still see one
``created=True`` and one replay. A call is stored all or nothing; if a combined call fails with
anything but the backend being unavailable, each of its jobs is sent again on its own so that
one job's failure cannot fail the others (the answers one call per job would have given).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from monoq.core.models import Enqueued, NewJob
from monoq.errors import BackendUnavailable

DEFAULT_MAX_BATCH: Final = 500

_Pending = tuple[NewJob, "asyncio.Future[Enqueued]"]
Send = Callable[[Sequence[NewJob]], Awaitable[list[Enqueued]]]


class EnqueueCoalescer:
    """Coalesces concurrent ``submit`` calls into calls of ``send`` (a backend enqueue)."""

    def __init__(self, send: Send, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self.send = send
        self.max_batch = max_batch
        self._pending: list[_Pending] = []
        self._busy = False  # a call of ``send`` is in flight (or about to be)
        self._task: asyncio.Task[None] | None = None

    async def submit(self, new: NewJob) -> Enqueued:
        """Enqueue ``new`` (possibly in a shared call) and answer its own result."""
        if not self._busy:
            # Nothing in flight: send from the caller's own task, with no future and no task
            # of our own. Jobs that arrive meanwhile wait in _pending for the drain task that
            # this call starts when it ends, however it ends.
            self._busy = True
            try:
                [result] = await self.send([new])
            finally:
                if self._pending:
                    self._task = asyncio.create_task(self._drain())
                else:
                    self._busy = False
            return result
        future: asyncio.Future[Enqueued] = asyncio.get_running_loop().create_future()
        self._pending.append((new, future))
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                await self._send(batch)
        finally:
            # kept in self._task until here, so it is never garbage-collected mid-flight
            self._task = None
            self._busy = False
            for _, future in self._pending:  # only if this task itself was cancelled
                if not future.done():
                    future.set_exception(BackendUnavailable("the producer is shutting down"))
            self._pending.clear()

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            results = await self.send([new for new, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the waiting callers
            if len(batch) == 1 or isinstance(exc, BackendUnavailable):
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
            for item in batch:  # isolate the job that failed: one call each, as uncoalesced
                await self._send([item])
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
