"""The dead-letter page: filter, requeue the selected jobs or every match, purge by age.

Requeueing every match walks the matching dead jobs a page at a time and requeues each page
as it goes (a requeued job leaves the dead state, and the cursor moves on below it), so the
work grows with the matches, not with every job stored. Purging first shows how many dead jobs
the purge would delete (``Client.count_jobs``), then deletes them on confirmation.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

import attrs
from litestar import Request, Response, get, post

from monoq.core.durations import parse_duration
from monoq.core.models import JobQuery, JobState, error_type_of
from monoq.errors import ValidationError
from monoq.ui.core import back, client_of, page, ui_state
from monoq.ui.jobs import filter_cursor, filter_name, gather_page, job_id

REQUEUE_PAGE: Final = 500
MAX_SELECTED: Final = 1000
MAX_AGE: Final = 3650 * 86400.0
# The time-window presets of the filter form: value -> label.
WINDOWS: Final = {"": "any time", "15m": "last 15 minutes", "1h": "last hour",
                  "24h": "last 24 hours", "7d": "last 7 days", "30d": "last 30 days"}
PURGE_AGES: Final = {"0s": "any age", "1h": "1 hour", "1d": "1 day", "7d": "7 days",
                     "30d": "30 days"}
_FIELDS: Final = ("queue", "handler", "error_type", "within", "after", "before")


def parse_when(field: str, value: str | None) -> datetime | None:
    """A ``datetime-local`` form value (``2024-05-01T12:00``), read as UTC; None when empty."""
    value = (value or "").strip()
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(field, f"{value[:40]!r} is not a date and time "
                                     "(YYYY-MM-DDTHH:MM, UTC)") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_age(field: str, value: str | None) -> float:
    """An age such as ``7d``, ``12h`` or ``3600``: seconds, 0 to ten years."""
    text = (value or "").strip()
    if not text:
        return 0.0
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise ValidationError(field, f"{text[:40]!r} is not an age such as 7d, 12h or 30m"
                              ) from None
    if seconds > MAX_AGE:
        raise ValidationError(field, "must be at most 10 years")
    return seconds


class DeadFilter:
    """The filter form's values, checked; ``query`` gives them back for links and forms."""

    def __init__(self, values: dict[str, str], now: datetime) -> None:
        self.values = {name: (values.get(name) or "").strip() for name in _FIELDS}
        self.errors: dict[str, str] = {}
        self.queue = self.handler = self.error_type = None
        self.after: datetime | None = None
        self.before: datetime | None = None
        for name, check in (("queue", filter_name), ("handler", filter_name)):
            try:
                setattr(self, name, check(name, self.values[name]))
            except ValidationError as exc:
                self.errors[name] = exc.message
        error_type = self.values["error_type"]
        if error_type:
            if len(error_type) > 200 or not error_type.isprintable():
                self.errors["error_type"] = "must be an exception name such as TimeoutError"
            else:
                self.error_type = error_type
        within = self.values["within"]
        if within:
            if within not in WINDOWS:
                self.errors["within"] = "choose one of the listed windows"
            else:
                self.after = now - timedelta(seconds=parse_duration(within))
        for name in ("after", "before"):
            try:
                when = parse_when(name, self.values[name])
            except ValidationError as exc:
                self.errors[name] = exc.message
                continue
            if when is not None and name == "after":
                self.after = when if self.after is None else max(self.after, when)
            elif when is not None:
                self.before = when

    def query(self) -> dict[str, str]:
        """The non-empty filter values."""
        return {k: v for k, v in self.values.items() if v}

    @property
    def any(self) -> bool:
        """True when at least one filter is set."""
        return bool(self.query())

    def job_query(self, cursor: str | None = None) -> JobQuery:
        """The ``JobQuery`` of these filters, from ``cursor``."""
        return JobQuery(queue=self.queue, states={JobState.DEAD}, handler=self.handler,
                        error_type=self.error_type, finished_after=self.after,
                        finished_before=self.before, cursor=cursor)


@get("/dead", opt={"ui": "read"}, name="ui-dead")
async def dead(request: Request[Any, Any, Any]) -> Response[Any]:
    """Dead jobs newest first, with filters, selection, requeue and purge."""
    client = client_of(request)
    params = {k: request.query_params.get(k, "") for k in (*_FIELDS, "cursor")}
    filters = DeadFilter(params, client.clock())
    try:
        cursor = filter_cursor(params["cursor"])
    except ValidationError as exc:
        filters.errors["cursor"] = exc.message
        cursor = None
    jobs: list[Any] = []
    next_cursor = None
    if not filters.errors:
        jobs, next_cursor = await gather_page(client, filters.job_query(cursor))
    stats = await client.queues()
    return page(
        request, "dead.html", status=422 if filters.errors else 200, nav="dead",
        title="Dead letter", jobs=jobs, next_cursor=next_cursor, cursor=cursor,
        filters=filters, windows=WINDOWS, purge_ages=PURGE_AGES,
        queues=[s.queue for s in stats],
        dead_by_queue=[(s.queue, s.counts.get(JobState.DEAD, 0)) for s in stats],
        error_types=sorted({error_type_of(j.error) or "" for j in jobs if j.error}),
    )


@post("/dead/requeue", opt={"ui": "admin"}, status_code=303, name="ui-dead-requeue")
async def requeue(request: Request[Any, Any, Any]) -> Response[Any]:
    """Requeue the selected jobs (``ids``), or with ``all`` every dead job matching the
    filters, a page at a time."""
    ui = ui_state(request)
    client = client_of(request)
    form = await request.form()
    filters = DeadFilter({k: str(form.get(k) or "") for k in _FIELDS}, client.clock())
    if form.get("all") == "1":
        if filters.errors:
            name, message = next(iter(filters.errors.items()))
            raise ValidationError(name, message)
        moved = 0
        cursor: str | None = None
        query = filters.job_query()
        # one audit entry for the whole requeue, not one per page
        async with client.auditing("requeue", target=query.queue, queue=query.queue) as note:
            while True:
                result = await client.list_jobs(
                    attrs.evolve(query, cursor=cursor, limit=REQUEUE_PAGE))
                if result.jobs:
                    moved += len(await client.requeue_dead([j.id for j in result.jobs]))
                if result.next_cursor is None:
                    break
                cursor = result.next_cursor
            shown = ("queue", "handler", "error_type", "finished_after", "finished_before")
            note.detail.update(requeued=moved, filters={
                k: str(getattr(query, k)) for k in shown if getattr(query, k) is not None})
        return back(ui, "/dead", "requeued", moved, filters.query())
    ids = [job_id(str(value)) for value in form.getall("ids", [])]
    if not ids:
        return back(ui, "/dead", "nothing_selected", query=filters.query())
    if len(ids) > MAX_SELECTED:
        raise ValidationError("ids", f"select at most {MAX_SELECTED} jobs at once")
    moved_ids = await client.requeue_dead(list(dict.fromkeys(ids)))
    return back(ui, "/dead", "requeued", len(moved_ids), filters.query())


def _purge_args(values: dict[str, str]) -> tuple[str | None, float]:
    queue = filter_name("queue", values.get("queue"))
    return queue, parse_age("older_than", values.get("older_than"))


@get("/dead/purge", opt={"ui": "admin"}, name="ui-dead-purge-confirm")
async def purge_confirm(request: Request[Any, Any, Any]) -> Response[Any]:
    """How many dead jobs a purge would delete, and the button that does it."""
    client = client_of(request)
    values = {k: request.query_params.get(k, "") for k in ("queue", "older_than")}
    queue, age = _purge_args(values)
    horizon = client.clock() - timedelta(seconds=age)
    count = await client.count_jobs(states={JobState.DEAD}, queue=queue,
                                    finished_before=horizon)
    return page(request, "purge.html", nav="dead", title="Purge dead jobs", count=count,
                queue=queue, older_than=values["older_than"] or "0s", age=age, horizon=horizon)


@post("/dead/purge", opt={"ui": "admin"}, status_code=303, name="ui-dead-purge")
async def purge(request: Request[Any, Any, Any]) -> Response[Any]:
    """Delete the dead jobs (of a queue) that died more than ``older_than`` ago."""
    ui = ui_state(request)
    form = await request.form()
    queue, age = _purge_args({k: str(form.get(k) or "") for k in ("queue", "older_than")})
    purged = await client_of(request).purge_dead(queue=queue, older_than=timedelta(seconds=age))
    return back(ui, "/dead", "purged", purged)


HANDLERS: Final = [dead, requeue, purge_confirm, purge]
