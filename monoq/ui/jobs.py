"""The Jobs page (filters, lookup by id, cursor paging) and a job's page with its actions."""

from __future__ import annotations

import re
from typing import Any, Final

import attrs
from litestar import Request, Response, get, post
from litestar.params import FromPath
from litestar.response import Redirect

from monoq.client import Client
from monoq.core.models import TERMINAL_STATES, Job, JobQuery, JobState
from monoq.errors import JobNotFound, ValidationError
from monoq.ui.core import back, client_of, page, ui_state

PAGE_SIZE: Final = 50
MAX_CALLS: Final = 4  # backend pages joined into one page of the dashboard at most
_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_CURSOR_RE: Final = re.compile(r"^[A-Za-z0-9_.:=+/-]{1,256}$")
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
CANCELLABLE: Final = frozenset(set(JobState) - TERMINAL_STATES)
# States an operator may retry by hand (a requeue), not the retry policy's RETRYING.
REQUEUEABLE: Final = frozenset({JobState.DEAD, JobState.CANCELLED})


async def gather_page(client: Client, query: JobQuery, limit: int = PAGE_SIZE
                      ) -> tuple[list[Job], str | None]:
    """Up to ``limit`` jobs of ``query`` (its filters, from its cursor) newest first, and the
    cursor after them.

    A backend may end a page early when the filters match rarely (each page costs bounded
    work); a few such pages are joined here so a page of the dashboard is rarely empty while
    older matches exist. It still stops after ``MAX_CALLS`` backend pages, so a page never
    costs more than that bounded work: the "Older" link carries on from there.
    """
    found: list[Job] = []
    cursor = query.cursor
    for _ in range(MAX_CALLS):
        page = await client.list_jobs(
            attrs.evolve(query, limit=limit - len(found), cursor=cursor))
        found += page.jobs
        cursor = page.next_cursor
        if cursor is None or len(found) >= limit:
            break
    return found, cursor


def filter_name(field: str, value: str | None) -> str | None:
    """A queue or handler filter from a form: None when empty, else a valid name."""
    value = (value or "").strip()
    if not value:
        return None
    if not _NAME_RE.fullmatch(value):
        raise ValidationError(field, f"{value[:60]!r} is not a valid name")
    return value


def filter_cursor(value: str | None) -> str | None:
    """A ``next_cursor`` the dashboard handed out, or None."""
    value = (value or "").strip()
    if not value:
        return None
    if not _CURSOR_RE.fullmatch(value):
        raise ValidationError("cursor", "is not a cursor this dashboard gave")
    return value


def job_id(value: str) -> str:
    """A job id, or JobNotFound for a string that cannot be one."""
    if not _ID_RE.fullmatch(value):
        raise JobNotFound(value[:60])
    return value


@get("/jobs", opt={"ui": "read"}, name="ui-jobs")
async def jobs(request: Request[Any, Any, Any]) -> Response[Any]:
    """Jobs newest first, filtered by ``queue``, ``state`` and ``handler``, a page at a time
    (``cursor``); ``id`` jumps to one job."""
    ui = ui_state(request)
    client = client_of(request)
    params = request.query_params
    queue, state, handler = params.get("queue"), params.get("state"), params.get("handler")
    cursor, lookup = params.get("cursor"), params.get("id")
    if lookup and lookup.strip():
        wanted = lookup.strip()
        try:
            await client.get(job_id(wanted))
        except JobNotFound:
            return page(request, "jobs.html", status=404, nav="jobs", title="Jobs",
                        lookup_error=f"No job has the id {wanted[:80]!r}.", jobs=[],
                        next_cursor=None, filters={"id": wanted}, queues=[], states=tuple(JobState),
                        cursor=None)
        return Redirect(path=ui.url(f"/jobs/{wanted}"), status_code=303)
    errors: dict[str, str] = {}
    filters = {"queue": queue or "", "state": state or "", "handler": handler or ""}
    try:
        queue_name = filter_name("queue", queue)
        handler_name = filter_name("handler", handler)
        states = {JobState(state)} if state else None
        page_cursor = filter_cursor(cursor)
    except ValidationError as exc:
        errors[exc.field] = exc.message
        queue_name = handler_name = page_cursor = None
        states = None
    except ValueError:
        errors["state"] = f"{(state or '')[:40]!r} is not a job state"
        queue_name = handler_name = page_cursor = None
        states = None
    found: list[Job] | None = [] if errors else None
    next_cursor = None
    if found is None:
        found, next_cursor = await gather_page(
            client, JobQuery(queue=queue_name, states=states, handler=handler_name,
                             cursor=page_cursor))
    known = [s.queue for s in await client.queues()]
    handlers = sorted(spec.name for spec in client.registry) if client.registry else []
    return page(request, "jobs.html", status=422 if errors else 200, nav="jobs", title="Jobs",
                jobs=found, next_cursor=next_cursor, filters=filters, errors=errors,
                queues=known, handlers=handlers, states=tuple(JobState), cursor=page_cursor,
                lookup_error="")


@get("/jobs/{job:str}", opt={"ui": "read"}, name="ui-job")
async def job_detail(request: Request[Any, Any, Any], job: FromPath[str]) -> Response[Any]:
    """Every field of a job, its payload and result, its attempts, and the actions its state
    allows."""
    found = await client_of(request).get(job_id(job))
    attempts = await client_of(request).attempts(found.id)
    return page(
        request, "job.html", nav="jobs", title=f"Job {found.id}", job=found,
        attempts=list(reversed(attempts)), can_cancel=found.state in CANCELLABLE,
        can_requeue=found.state in REQUEUEABLE, can_copy=found.state is JobState.COMPLETED,
        live=not found.terminal,
    )


@post("/jobs/{job:str}/cancel", opt={"ui": "admin"}, status_code=303, name="ui-job-cancel")
async def cancel(request: Request[Any, Any, Any], job: FromPath[str]) -> Response[Any]:
    """Cancel a waiting job at once, a running one at its next heartbeat."""
    ui = ui_state(request)
    done = await client_of(request).cancel(job_id(job))
    notice = "cancel_requested" if done.state is JobState.RUNNING else "cancelled"
    return back(ui, f"/jobs/{done.id}", notice)


@post("/jobs/{job:str}/retry", opt={"ui": "admin"}, status_code=303, name="ui-job-retry")
async def requeue_job(request: Request[Any, Any, Any], job: FromPath[str]) -> Response[Any]:
    """The operator's retry: put a dead or cancelled job back in its queue with a fresh retry
    budget (``Client.retry``, a requeue)."""
    ui = ui_state(request)
    done = await client_of(request).retry(job_id(job))
    return back(ui, f"/jobs/{done.id}", "retried")


@post("/jobs/{job:str}/copy", opt={"ui": "admin"}, status_code=303, name="ui-job-copy")
async def copy(request: Request[Any, Any, Any], job: FromPath[str]) -> Response[Any]:
    """Enqueue a new job with a completed job's handler, payload, queue and settings."""
    ui = ui_state(request)
    original = await client_of(request).get(job_id(job))
    new = await client_of(request).enqueue(
        original.handler, original.payload, queue=original.queue, priority=original.priority,
        max_retries=original.max_retries, timeout=original.timeout,
    )
    return back(ui, f"/jobs/{new.id}", "copied")


HANDLERS: Final = [jobs, job_detail, cancel, requeue_job, copy]
