"""``/api/v1/jobs``: submit, batch submit, inspect, list, cancel, retry, attempts, wait.

``GET /jobs/{id}/wait?timeout=`` long-polls until the job is terminal or ``timeout`` seconds
(default 30, at most 60) pass. Either way the answer is 200 with the job as it is; the header
``Monoq-Wait`` says ``done`` (terminal) or ``timeout`` (still waiting or running).
"""

from typing import Annotated, Any, Final

from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery, QueryParameter

from monoq.api.body import header as raw_header
from monoq.api.body import read_json_object
from monoq.api.jsonout import job_bytes, jobs_bytes
from monoq.api.openapi import (
    BODY,
    CURSOR,
    FIRST_JOB_LINKS,
    GUARDED,
    HANDLER_FILTER,
    IDEMPOTENCY_HEADER,
    JOB_ID,
    JOB_LINKS,
    LIMIT,
    LOCATION,
    QUEUE_FILTER,
    STATE_FILTER,
    WAIT_HEADER,
    Answer,
    Attempts,
    Job,
    JobList,
    JobPage,
    documented,
    seconds_param,
)
from monoq.api.routes._common import (
    MAX_BATCH,
    MAX_WAIT,
    ClientDep,
    Json,
    answer,
    answer_bytes,
    count_created,
    job_answer,
    job_id_or_404,
    optional_name,
    page_answer,
    parse_cursor,
    parse_limit,
    parse_seconds,
    parse_states,
    precheck_submit,
)
from monoq.api.scoping import request_client
from monoq.api.state import ApiState, api_state
from monoq.client import Client
from monoq.core.models import Enqueued, JobQuery
from monoq.errors import ValidationError, WaitTimeout

DEFAULT_WAIT: Final = 30.0
# A submit answers the job: 201 when created, 200 for the original on a replay of its key.
SUBMITTED: Final = (
    Answer(201, Job, "The job was created.", LOCATION, JOB_LINKS),
    Answer(200, Job, "A replay of an idempotency key: the job it created first.", LOCATION,
           JOB_LINKS),
)


def with_idempotency_header(
    request: Request[Any, Any, Any], data: dict[str, Any]
) -> dict[str, Any]:
    """Merge an ``Idempotency-Key`` header into a submit body (they must agree if both given)."""
    header = raw_header(request, b"idempotency-key")
    if header is None:
        return data
    body_key = data.get("idempotency_key")
    if body_key is not None and body_key != header:
        raise ValidationError("idempotency_key", "differs from the Idempotency-Key header")
    return {**data, "idempotency_key": header}


def submitted(api: ApiState, result: Enqueued, prefix: str = "/api/v1/jobs") -> Response[Json]:
    """201 with the new job, or 200 with the original on an idempotent replay."""
    count_created(api, [result])
    job = result.job
    status = 201 if result.created else 200
    return answer_bytes(job_bytes(job), status, {"Location": f"{prefix}/{job.id}"})


async def submit_body(client: Client, data: dict[str, Any]) -> Enqueued:
    """Validate a submit body and enqueue it (nothing is written if it is invalid).

    The job is built (and so validated) here, alone; only then does it join other requests'
    jobs in a shared backend call (``Client.submit_job``). A queue-limited token's client
    refuses a job for another queue (403).
    """
    precheck_submit(data)
    new = client.build_from_dict(data)
    return await client.submit_job(new)


@post(
    "/jobs",
    opt={"scope": "enqueue"},
    status_code=201,
    summary="Submit a job",
    **documented(GUARDED, BODY, answers=SUBMITTED, body="SubmitJob",
                 headers=[IDEMPOTENCY_HEADER]),
)
async def submit_job(request: Request[Any, Any, Any]) -> Response[Json]:
    """Enqueue one job. Body: ``handler`` (or ``name``), ``payload``, ``queue``, ``priority``,
    ``delay`` or ``run_at``, ``max_retries``, ``timeout``, ``idempotency_key`` (or the
    ``Idempotency-Key`` header). 201 with the job; 200 with the original job on a replay."""
    api = api_state(request)
    data = with_idempotency_header(request, await read_json_object(request))
    return submitted(api, await submit_body(request_client(request, api), data))


@post(
    "/jobs/batch",
    opt={"scope": "enqueue"},
    status_code=201,
    summary="Submit many jobs",
    **documented(
        GUARDED,
        BODY,
        answers=[
            Answer(201, JobList, "At least one job was created.", links=FIRST_JOB_LINKS),
            Answer(200, JobList, "Every job was a replay of an idempotency key.",
                   links=FIRST_JOB_LINKS),
        ],
        body="SubmitBatch",
    ),
)
async def submit_batch(request: Request[Any, Any, Any]) -> Response[Json]:
    """Enqueue ``{"jobs": [submit, ...]}`` (1 to 1000) all or nothing: every job is validated
    before any is written. 201 with ``{"jobs": [job, ...]}`` in order (200 if every one was an
    idempotent replay)."""
    api = api_state(request)
    data = await read_json_object(request)
    if len(data) != 1 or "jobs" not in data:
        extra = set(data) - {"jobs"}
        if extra:
            raise ValidationError(min(extra), 'unknown field; the body is {"jobs": [...]}')
    items = data.get("jobs")
    if not isinstance(items, list):
        raise ValidationError("jobs", "must be a list of job objects")
    if not 1 <= len(items) <= MAX_BATCH:
        raise ValidationError("jobs", f"must hold 1 to {MAX_BATCH} jobs, got {len(items)}")
    for index, item in enumerate(items):
        if isinstance(item, dict):
            precheck_submit(item, f"jobs[{index}].")
    results = await request_client(request, api).submit_many(items)
    created = count_created(api, results)
    return answer_bytes(jobs_bytes(r.job for r in results), 201 if created else 200)


@get(
    "/jobs/{job_id:str}",
    opt={"scope": "read"},
    summary="Get a job",
    **documented(GUARDED, 404, answers=[Answer(200, Job, "The job.")],
                 params={"job_id": JOB_ID}),
)
async def get_job(job_id: FromPath[str], client: ClientDep) -> Response[Json]:
    """The job's JSON form (docs/DESIGN.md §3); 404 if there is no such job."""
    return answer(job_answer(await client.get(job_id_or_404(job_id))))


@get(
    "/jobs",
    opt={"scope": "read"},
    summary="List jobs",
    **documented(
        GUARDED,
        422,
        answers=[Answer(200, JobPage, "A page of jobs, newest first.")],
        params={"queue": QUEUE_FILTER, "state": STATE_FILTER, "handler": HANDLER_FILTER,
                "limit": LIMIT, "cursor": CURSOR},
    ),
)
async def list_jobs(
    client: ClientDep,
    queue: FromQuery[str | None] = None,
    states: Annotated[list[str] | None, QueryParameter(name="state")] = None,
    handler: FromQuery[str | None] = None,
    limit: FromQuery[str | None] = None,
    cursor: FromQuery[str | None] = None,
) -> Response[Json]:
    """Jobs newest first. Filters: ``queue``, ``state`` (repeatable or comma-separated),
    ``handler``; ``limit`` 1-1000 (50); ``cursor`` = the previous page's ``next_cursor``."""
    page = await client.list_jobs(JobQuery(
        queue=optional_name("queue", queue),
        states=parse_states(states),
        handler=optional_name("handler", handler),
        limit=parse_limit(limit),
        cursor=parse_cursor(cursor),
    ))
    return answer(page_answer(page))


@post(
    "/jobs/{job_id:str}/cancel",
    opt={"scope": "admin"},
    status_code=200,
    summary="Cancel a job",
    **documented(GUARDED, 404, 409, params={"job_id": JOB_ID},
                 answers=[Answer(200, Job, "The job, cancelled (or to be cancelled at its next "
                                 "heartbeat).", links=JOB_LINKS)]),
)
async def cancel_job(job_id: FromPath[str], client: ClientDep) -> Response[Json]:
    """Cancel now if waiting, at the next heartbeat if running; 409 if completed or dead."""
    return answer(job_answer(await client.cancel(job_id_or_404(job_id))))


@post(
    "/jobs/{job_id:str}/retry",
    opt={"scope": "admin"},
    status_code=200,
    summary="Retry a job",
    **documented(GUARDED, 404, 409, params={"job_id": JOB_ID},
                 answers=[Answer(200, Job, "The job, queued again.", links=JOB_LINKS)]),
)
async def retry_job(job_id: FromPath[str], client: ClientDep) -> Response[Json]:
    """Requeue a dead or cancelled job with a fresh retry budget; 409 in any other state."""
    return answer(job_answer(await client.retry(job_id_or_404(job_id))))


@get(
    "/jobs/{job_id:str}/attempts",
    opt={"scope": "read"},
    summary="A job's attempts",
    **documented(GUARDED, 404, answers=[Answer(200, Attempts, "The job's attempts.")],
                 params={"job_id": JOB_ID}),
)
async def job_attempts(job_id: FromPath[str], client: ClientDep) -> Response[Json]:
    """``{"job_id": ..., "attempts": [...]}``, oldest first."""
    attempts = await client.attempts(job_id_or_404(job_id))
    return answer({"job_id": job_id, "attempts": [a.to_dict() for a in attempts]})


@get(
    "/jobs/{job_id:str}/wait",
    opt={"scope": "read"},
    summary="Wait for a job to finish",
    **documented(
        GUARDED,
        404,
        422,
        answers=[Answer(200, Job, "The job as it is when it finished or the wait ended.",
                        WAIT_HEADER)],
        params={"job_id": JOB_ID,
                "timeout": seconds_param(MAX_WAIT, DEFAULT_WAIT, "Seconds to wait at most.")},
    ),
)
async def wait_job(
    job_id: FromPath[str], client: ClientDep, timeout: FromQuery[str | None] = None
) -> Response[Json]:
    """Long-poll until the job is terminal or ``timeout`` s (default 30, max 60) pass.

    200 with the job either way; header ``Monoq-Wait: done`` or ``Monoq-Wait: timeout``.
    """
    seconds = parse_seconds("timeout", timeout, default=DEFAULT_WAIT, high=MAX_WAIT)
    job_id = job_id_or_404(job_id)
    try:
        job = await client.wait(job_id, timeout=seconds)
    except WaitTimeout:
        job = await client.get(job_id)
        if not job.terminal:
            return answer(job_answer(job), 200, {"Monoq-Wait": "timeout"})
    return answer(job_answer(job), 200, {"Monoq-Wait": "done"})


HANDLERS: Final = [
    submit_job,
    submit_batch,
    get_job,
    list_jobs,
    cancel_job,
    retry_job,
    job_attempts,
    wait_job,
]

__all__ = ["HANDLERS", "SUBMITTED", "submit_body", "submitted", "with_idempotency_header"]
