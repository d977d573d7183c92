"""Workers, stats, health, readiness and Prometheus metrics.

``GET /api/v1/stats`` answers what the API can know honestly and cheaply:

- ``counts``: jobs per state over every queue, and ``queues``: how many queues, which paused,
  both from one backend ``stats`` call;
- ``throughput``: per window of the last 1, 5 and 15 minutes, how many jobs finished COMPLETED,
  DEAD and CANCELLED, and ``completed_per_second`` (completed / window seconds). Read from the
  backend (``count_finished``, one call per window), so it counts the runs of every worker
  whichever process ran them; jobs purged within the window are no longer counted;
- ``process``: this API process's own counters since it started: requests are on /metrics,
  and ``enqueued`` has the jobs it created in total and in the last 1, 5 and 15 minutes.

The windows end at this process's clock (the client's), which is the clock the roles stamp
``finished_at`` with when they share it (``ServerClock`` on Redis).
"""

import logging
import time
from datetime import timedelta
from typing import Final

import anyio
from litestar import Response, get
from prometheus_client import CONTENT_TYPE_LATEST

from monoq.api.openapi import GUARDED, Answer, Health, Ready, Stats, WorkerList, documented
from monoq.api.problems import RETRY_AFTER_BACKEND, problem_response
from monoq.api.routes._common import ClientDep, Json, StateDep, answer
from monoq.api.scoping import ScopedClient, count_finished
from monoq.api.state import WINDOWS, enqueued_in
from monoq.client import Client
from monoq.core.backend import MemoryReport
from monoq.core.models import JobState, QueueStats, rfc3339
from monoq.errors import BackendError

logger = logging.getLogger(__name__)

# litestar appends the charset itself to text/* types
METRICS_TYPE: Final = CONTENT_TYPE_LATEST.replace("; charset=utf-8", "")
PROBE_TIMEOUT: Final = 5.0  # seconds a readiness probe or a scrape waits for the backend


@get(
    "/workers",
    opt={"scope": "read"},
    summary="List live workers",
    **documented(GUARDED, answers=[Answer(200, WorkerList, "Workers with a recent heartbeat.")]),
)
async def list_workers(client: ClientDep) -> Response[Json]:
    """``{"workers": [...]}``: workers whose heartbeat is recent."""
    return answer({"workers": [w.to_dict() for w in await client.workers()]})


def totals(queues: list[QueueStats]) -> dict[str, int]:
    """Jobs per state summed over ``queues``."""
    counts = dict.fromkeys((str(s) for s in JobState), 0)
    for stats in queues:
        for state, n in stats.counts.items():
            counts[str(state)] += n
    return counts


async def throughput(client: Client) -> dict[str, dict[str, int | float]]:
    """Jobs finished per terminal state in the last 1, 5 and 15 minutes, over every queue (the
    token's queues for a queue-limited token):
    ``{"1m": {"window_seconds": 60, "completed": n, "dead": n, "cancelled": n,
    "completed_per_second": completed / 60}, "5m": ..., "15m": ...}``. Every window ends at
    the same ``now``; a job finished exactly at a window's start counts."""
    now = client.clock()
    out: dict[str, dict[str, int | float]] = {}
    for window in WINDOWS:
        counts = await count_finished(client, now - timedelta(seconds=window))
        completed = counts[JobState.COMPLETED]
        out[f"{window // 60}m"] = {
            "window_seconds": window,
            "completed": completed,
            "dead": counts[JobState.DEAD],
            "cancelled": counts[JobState.CANCELLED],
            "completed_per_second": completed / window,
        }
    return out


@get(
    "/stats",
    opt={"scope": "read"},
    summary="Counts, throughput and this process's enqueue rates",
    **documented(GUARDED, answers=[Answer(200, Stats, "The numbers.")]),
)
async def stats(client: ClientDep, api: StateDep) -> Response[Json]:
    """Counts per state, queue count, paused queues, ``throughput`` (jobs completed, dead and
    cancelled in the last 1, 5 and 15 minutes, read from the backend, so every worker's runs
    count, and ``completed_per_second``) and this process's enqueue counters."""
    queues = await client.queues()
    return answer(
        {
            "counts": totals(queues),
            "queues": len(queues),
            "paused": [s.queue for s in queues if s.paused],
            "throughput": await throughput(client),
            "process": {
                "started_at": rfc3339(api.started_at),
                "uptime_seconds": round(time.monotonic() - api.started_monotonic, 3),
                "enqueued": enqueued_in(
                    api, client.ordered if isinstance(client, ScopedClient) else None),
            },
        }
    )


@get("/healthz", opt={"scope": "public"}, summary="Liveness", tags=["health"],
     **documented(answers=[Answer(200, Health, "The process serves HTTP.")], public=True))
async def healthz() -> Response[Json]:
    """Always 200 ``{"status": "ok"}`` while the process serves HTTP."""
    return answer({"status": "ok"})


@get(
    "/readyz",
    opt={"scope": "public"},
    summary="Readiness",
    tags=["health"],
    **documented(500, 503, answers=[Answer(200, Ready, "The job store answered.")],
                 public=True),
)
async def readyz(client: ClientDep) -> Response[Json]:
    """200 ``{"status": "ready"}`` if the backend answers a ping within 5 s, else 503 with
    ``Retry-After``."""
    problem = "the job store did not answer in time"
    with anyio.move_on_after(PROBE_TIMEOUT):
        try:
            await client.backend.ping()
        except BackendError:
            problem = "the job store is unavailable"
        else:
            return answer({"status": "ready"})
    return problem_response(None, 503, problem, headers={"Retry-After": RETRY_AFTER_BACKEND})


@get(
    "/metrics",
    opt={"scope": "read"},
    summary="Prometheus metrics",
    tags=["health"],
    media_type=METRICS_TYPE,
    **documented(401, 403, 429, 500),
)
async def metrics(client: ClientDep, api: StateDep) -> Response[bytes]:
    """The Prometheus text format: requests, enqueues, queue depth and, on Redis, memory per
    queue (read at scrape time) and, when the process shares its registry with a worker, the
    worker's families. A queue-limited
    token gets only the samples of its queues among those labelled by queue."""
    snapshot: list[QueueStats] | None = None
    memory: MemoryReport | None = None
    with anyio.move_on_after(PROBE_TIMEOUT):
        try:
            snapshot = await client.queues()
            memory = await client.memory_use()
        except BackendError:
            logger.warning("metrics scrape: the job store is unavailable")
    allowed = client.allowed if isinstance(client, ScopedClient) else None
    body = api.metrics.render(snapshot, allowed, memory)
    return Response(content=body, media_type=METRICS_TYPE)


V1_HANDLERS: Final = [list_workers, stats]
ROOT_HANDLERS: Final = [healthz, readyz, metrics]
