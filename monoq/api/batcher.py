"""``SubmitBatcher``: concurrent single submits share one ``Backend.enqueue`` call.

Each request validates and builds its own ``NewJob`` first (a bad request fails alone, before
it joins anything), then hands it to ``submit``. If no backend call is in flight the job goes
out at once; otherwise it waits for the current call to finish and joins the next one with
every other job that arrived meanwhile (at most ``max_batch`` per call). So an idle API adds no
latency, and a busy one makes one backend round trip per batch instead of one per request.

Each request gets its own item of the combined answer. Backends deduplicate idempotency keys
within one call exactly as across calls (the first job with a key is created, later ones
answer the original with ``created=False``), so two requests with one key still see one
``created=True`` and one replay. Backends store a call all or nothing; if a combined call
fails with anything but the backend being unavailable, each of its jobs is sent again on its
own so that one job's failure cannot fail the others (the same answers one call per request
would have given).
"""

import asyncio
from typing import Final

from monoq.client import Client
from monoq.core.models import Enqueued, NewJob
from monoq.errors import BackendUnavailable

DEFAULT_MAX_BATCH: Final = 500

_Pending = tuple[NewJob, "asyncio.Future[Enqueued]"]


class SubmitBatcher:
    """Coalesces concurrent ``submit`` calls into ``client.submit_many`` calls."""

    def __init__(self, client: Client, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self.client = client
        self.max_batch = max_batch
        self._pending: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, new: NewJob) -> Enqueued:
        """Enqueue ``new`` (in a shared backend call) and answer its own result."""
        future: asyncio.Future[Enqueued] = asyncio.get_running_loop().create_future()
        self._pending.append((new, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                await self._send(batch)
        finally:
            self._task = None
            for _, future in self._pending:  # only if this task itself was cancelled
                if not future.done():
                    future.set_exception(BackendUnavailable("the api is shutting down"))
            self._pending.clear()

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            results = await self.client.submit_many([new for new, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the waiting requests
            if len(batch) == 1 or isinstance(exc, BackendUnavailable):
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
            for item in batch:  # isolate the job that failed: one call each, as unbatched
                await self._send([item])
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
