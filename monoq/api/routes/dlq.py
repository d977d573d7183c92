"""``/api/v1/dead-letter``: list, requeue and purge dead jobs.

``POST /dead-letter/requeue`` takes ``{"ids": [...]}`` (at most 10000), or filters
``{"queue": ..., "handler": ...}`` (at least one), or ``{"all": true}``; it answers
``{"requeued": n, "ids": [...]}`` (ids that were not dead or cancelled are skipped).
``DELETE /dead-letter?queue=&older_than=`` deletes dead jobs that died more than
``older_than`` seconds ago (default 0: all), answering ``{"purged": n}``.
"""

from datetime import timedelta
from typing import Any, Final

from litestar import Request, Response, delete, get, post
from litestar.params import FromQuery

from monoq.api.body import read_json_object
from monoq.api.openapi import (
    BODY,
    GUARDED,
    HANDLER_FILTER,
    PAGE,
    QUEUE_FILTER,
    Answer,
    JobPage,
    Purged,
    Requeued,
    documented,
    seconds_param,
)
from monoq.api.problems import Problem
from monoq.api.routes._common import (
    MAX_AGE,
    MAX_REQUEUE_IDS,
    ClientDep,
    Json,
    answer,
    check_name,
    job_id_or_404,
    optional_name,
    page_answer,
    parse_cursor,
    parse_limit,
    parse_seconds,
)
from monoq.core.models import JobQuery, JobState
from monoq.errors import ValidationError


@get(
    "/dead-letter",
    opt={"scope": "read"},
    summary="List dead jobs",
    **documented(
        GUARDED,
        422,
        answers=[Answer(200, JobPage, "A page of dead jobs, newest first.")],
        params={"queue": QUEUE_FILTER, "handler": HANDLER_FILTER, **PAGE},
    ),
)
async def list_dead(
    client: ClientDep,
    queue: FromQuery[str | None] = None,
    handler: FromQuery[str | None] = None,
    limit: FromQuery[str | None] = None,
    cursor: FromQuery[str | None] = None,
) -> Response[Json]:
    """Dead jobs newest first, like ``GET /jobs?state=dead``."""
    page = await client.list_jobs(JobQuery(
        queue=optional_name("queue", queue),
        states={JobState.DEAD},
        handler=optional_name("handler", handler),
        limit=parse_limit(limit),
        cursor=parse_cursor(cursor),
    ))
    return answer(page_answer(page))


def _ids(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(i, str) for i in value):
        raise ValidationError("ids", "must be a list of job id strings")
    if not 1 <= len(value) <= MAX_REQUEUE_IDS:
        raise ValidationError("ids", f"must hold 1 to {MAX_REQUEUE_IDS} ids")
    for item in value:
        try:
            job_id_or_404(item)
        except Problem:
            raise ValidationError("ids", f"{item[:40]!r} is not a job id") from None
    return list(dict.fromkeys(value))


@post(
    "/dead-letter/requeue",
    opt={"scope": "admin"},
    status_code=200,
    summary="Requeue dead jobs",
    **documented(
        GUARDED,
        BODY,
        answers=[Answer(200, Requeued, "How many jobs were requeued, and which.")],
        body="RequeueDead",
    ),
)
async def requeue_dead(request: Request[Any, Any, Any], client: ClientDep) -> Response[Json]:
    """Requeue by ``ids``, by ``queue``/``handler`` filters, or ``{"all": true}``."""
    data = await read_json_object(request)
    unknown = set(data) - {"ids", "queue", "handler", "all"}
    if unknown:
        raise ValidationError(min(unknown), "unknown field; allowed: all, handler, ids, queue")
    if "ids" in data:
        if set(data) != {"ids"}:
            raise ValidationError("ids", "give ids alone, without filters")
        moved = await client.requeue_dead(_ids(data["ids"]))
    else:
        queue, handler = data.get("queue"), data.get("handler")
        everything = data.get("all", False)
        if not isinstance(everything, bool):
            raise ValidationError("all", "must be true or false")
        if queue is None and handler is None and not everything:
            raise ValidationError("ids", 'give ids, queue and/or handler, or "all": true')
        moved = await client.requeue_dead(
            queue=None if queue is None else check_name("queue", queue),
            handler=None if handler is None else check_name("handler", handler),
        )
    return answer({"requeued": len(moved), "ids": moved})


@delete(
    "/dead-letter",
    opt={"scope": "admin"},
    status_code=200,
    summary="Purge dead jobs",
    **documented(
        GUARDED,
        422,
        answers=[Answer(200, Purged, "How many dead jobs were deleted.")],
        params={
            "queue": QUEUE_FILTER,
            "older_than": seconds_param(MAX_AGE, 0, "Only jobs that died more than this "
                                        "many seconds ago (0: all)."),
        },
    ),
)
async def purge_dead(
    client: ClientDep, queue: FromQuery[str | None] = None, older_than: FromQuery[str | None] = None
) -> Response[Json]:
    """Delete dead jobs (of ``queue``) that died more than ``older_than`` seconds ago."""
    seconds = parse_seconds("older_than", older_than, default=0.0, high=MAX_AGE)
    purged = await client.purge_dead(
        queue=optional_name("queue", queue), older_than=timedelta(seconds=seconds)
    )
    return answer({"purged": purged})


HANDLERS: Final = [list_dead, requeue_dead, purge_dead]
