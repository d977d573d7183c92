"""Compatibility routes of the systems monoq replaces (docs/DESIGN.md §1).

- ``POST /enqueue`` ("phrase1"): a text/plain body, a body with no content type, or an
  ``application/x-www-form-urlencoded`` one (what ``curl -d`` sends; taken as the raw text, not
  decoded as a form) becomes a string payload; a JSON body becomes its value. The job goes to
  ``api.default_handler`` (``log``) on ``api.queue_name``.
  201 ``{"enqueued": true, "id": ...}`` (200 on an ``Idempotency-Key`` replay).
- ``POST /jobs`` ("Bananas"): ``{"name", "payload", "priority"}`` (any submit field is
  accepted); answers like ``POST /api/v1/jobs``.
- ``GET /api/v1/queue/length`` (git-analytics): ``{"queue": ..., "length": n}`` where ``n``
  counts the jobs still to start (queued + scheduled + retrying) of ``api.queue_name`` or of
  ``?queue=``; running jobs are not counted.
- ``GET /queue/stats`` (cron job system): ``{"totals": {state: n}, "queues": {name: {state: n}}}``.
"""

from typing import Any, Final

from litestar import Request, Response, get, post
from litestar.params import FromQuery

from monoq.api.body import decode_json, is_json_type, media_type, read_json_object
from monoq.api.openapi import (
    BODY,
    GUARDED,
    IDEMPOTENCY_HEADER,
    JOB_LINKS,
    Answer,
    Enqueued,
    Param,
    QueueLength,
    QueueStats,
    documented,
    name,
)
from monoq.api.problems import Problem
from monoq.api.routes._common import ClientDep, Json, StateDep, answer, check_name, count_created
from monoq.api.routes.jobs import SUBMITTED, submit_body, submitted, with_idempotency_header
from monoq.api.routes.system import totals
from monoq.core.models import JobState

_TEXT_TYPES: Final = frozenset({"", "text/plain", "application/x-www-form-urlencoded"})
_ACCEPTED: Final = "text/plain, application/x-www-form-urlencoded, application/json"
_PENDING: Final = (JobState.QUEUED, JobState.SCHEDULED, JobState.RETRYING)


@post(
    "/enqueue",
    opt={"scope": "enqueue"},
    status_code=201,
    summary="Enqueue text or JSON",
    tags=["compatibility"],
    **documented(
        GUARDED,
        BODY,
        answers=[
            Answer(201, Enqueued, "The job was created.", links=JOB_LINKS),
            Answer(200, Enqueued, "A replay of an idempotency key: the job it created first.",
                   links=JOB_LINKS),
        ],
        body="Enqueue",
        headers=[IDEMPOTENCY_HEADER],
    ),
)
async def enqueue(
    request: Request[Any, Any, Any], client: ClientDep, api: StateDep
) -> Response[Json]:
    """Enqueue the body for the default handler on the default queue."""
    kind = media_type(request)
    if kind not in _TEXT_TYPES and not is_json_type(kind):
        raise Problem(
            415,
            f"Content-Type must be one of {_ACCEPTED} (or none), got {kind!r}",
            headers={"Accept-Post": _ACCEPTED},
        )
    raw = await request.body()
    payload: Any
    if is_json_type(kind):
        payload = decode_json(raw)
    else:
        try:
            payload = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Problem(400, "the request body is not valid UTF-8 text") from None
    data = with_idempotency_header(
        request,
        {"handler": api.config.default_handler, "queue": api.config.queue_name, "payload": payload},
    )
    result = await submit_body(client, data)
    count_created(api, [result])
    return answer({"enqueued": True, "id": result.job.id}, 201 if result.created else 200)


@post(
    "/jobs",
    opt={"scope": "enqueue"},
    status_code=201,
    summary="Submit a job (compatibility)",
    tags=["compatibility"],
    **documented(GUARDED, BODY, answers=SUBMITTED, body="SubmitJob",
                 headers=[IDEMPOTENCY_HEADER]),
)
async def legacy_submit(
    request: Request[Any, Any, Any], client: ClientDep, api: StateDep
) -> Response[Json]:
    """Same as ``POST /api/v1/jobs``."""
    data = with_idempotency_header(request, await read_json_object(request))
    return submitted(api, await submit_body(client, data))


@get(
    "/api/v1/queue/length",
    opt={"scope": "read"},
    summary="Queue length (compatibility)",
    tags=["compatibility"],
    **documented(
        GUARDED,
        422,
        answers=[Answer(200, QueueLength, "The queue's jobs still to start.")],
        params={"queue": Param(name(), "The queue (default: api.queue_name).")},
    ),
)
async def queue_length(
    client: ClientDep, api: StateDep, queue: FromQuery[str | None] = None
) -> Response[Json]:
    """Jobs still to start in the queue: queued + scheduled + retrying."""
    name = check_name("queue", queue if queue is not None else api.config.queue_name)
    [stats] = await client.queues([name])
    return answer({"queue": name, "length": sum(stats.counts.get(s, 0) for s in _PENDING)})


@get(
    "/queue/stats",
    opt={"scope": "read"},
    summary="Queue stats (compatibility)",
    tags=["compatibility"],
    **documented(GUARDED, answers=[Answer(200, QueueStats, "Counts by state.")]),
)
async def queue_stats(client: ClientDep) -> Response[Json]:
    """Totals by state and counts by state per queue."""
    queues = await client.queues()
    return answer(
        {
            "totals": totals(queues),
            "queues": {s.queue: s.to_dict()["counts"] for s in queues},
        }
    )


HANDLERS: Final = [enqueue, legacy_submit, queue_length, queue_stats]
