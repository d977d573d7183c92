"""Helpers shared by the route modules: parameter parsing and JSON answers."""

import re
from collections.abc import Iterable, Sequence
from typing import Any, Final, cast

from litestar import Response
from litestar.di import NamedDependency

from monoq.api.problems import Problem
from monoq.api.state import ApiState
from monoq.client import Client
from monoq.core.models import KEY_RE, NAME_RE, Enqueued, Job, JobState, Page, validate_name
from monoq.errors import ValidationError

JSON: Final = "application/json"
MAX_LIMIT: Final = 1000
DEFAULT_LIMIT: Final = 50
# Ids and cursors are opaque to the API, but only this alphabet ever reaches a backend.
_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_CURSOR_RE: Final = re.compile(r"^[A-Za-z0-9_.:=+/-]{1,256}$")

_NAME_FIELDS: Final = ("handler", "name", "queue")
_name_match: Final = NAME_RE.fullmatch
_key_match: Final = KEY_RE.fullmatch

Json = dict[str, Any]
# The app's dependencies (create_app provides both by these parameter names).
ClientDep = NamedDependency[Client]
StateDep = NamedDependency[ApiState]


def answer(
    content: Json, status: int = 200, headers: dict[str, str] | None = None
) -> Response[Json]:
    """A JSON response."""
    return Response(content=content, status_code=status, media_type=JSON, headers=headers or {})


def answer_bytes(
    content: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> Response[Json]:
    """A JSON response whose body is already encoded (see ``monoq.api.jsonout``).

    Typed as ``Response[Json]``: the OpenAPI document describes the JSON, not the bytes.
    """
    response: Response[Any] = Response(
        content=content, status_code=status, media_type=JSON, headers=headers or {}
    )
    return cast("Response[Json]", response)


def job_id_or_404(job_id: str) -> str:
    """The id if it could be one; any other string names no job (404)."""
    if not _ID_RE.match(job_id):
        raise Problem(404, "no job with this id")
    return job_id


def check_name(field: str, value: object) -> str:
    """``validate_name``, and the whole string must match.

    ``NAME_RE`` ends in ``$``, which ``re.match`` also accepts before a final newline, so
    ``"echo\n"`` passes ``validate_name``; the API refuses it.
    """
    name = validate_name(field, value)
    if not NAME_RE.fullmatch(name):
        raise ValidationError(field, f"{name!r} is not a valid name (it ends in a line break)")
    return name


def optional_name(field: str, value: str | None) -> str | None:
    """A queue or handler filter: None, or a valid name (422 otherwise)."""
    return None if value is None else check_name(field, value)


def precheck_submit(data: dict[str, Any], prefix: str = "") -> None:
    """Refuse names and keys the client would accept too leniently (see ``check_name``), and
    an empty queue name, which the client would take to mean the default queue."""
    for field in _NAME_FIELDS:
        value = data.get(field)
        # the common case (a valid name) costs one match; anything else gets the full check
        if value is not None and not (type(value) is str and _name_match(value)):
            check_name(prefix + field, value)
    key = data.get("idempotency_key")
    if isinstance(key, str) and not _key_match(key):
        raise ValidationError(prefix + "idempotency_key", f"{key[:40]!r} is not a valid key")


def parse_limit(value: str | None) -> int:
    """``limit``: 1..1000, default 50."""
    if value is None:
        return DEFAULT_LIMIT
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise ValidationError("limit", f"must be an integer from 1 to {MAX_LIMIT}")
    return int(value)


def parse_cursor(value: str | None) -> str | None:
    """``cursor``: the ``next_cursor`` of the previous page."""
    if value is None or value == "":
        return None
    if not _CURSOR_RE.match(value):
        raise ValidationError("cursor", "is not a cursor this API returned")
    return value


def parse_states(values: Sequence[str] | None) -> set[JobState] | None:
    """``state``, repeatable and/or comma-separated; None when absent."""
    if not values:
        return None
    states: set[JobState] = set()
    for value in values:
        for part in value.split(","):
            name = part.strip().lower()
            if not name:
                continue
            try:
                states.add(JobState(name))
            except ValueError:
                allowed = ", ".join(s.value for s in JobState)
                raise ValidationError("state", f"{part[:40]!r} is not one of {allowed}") from None
    return states or None


def parse_seconds(field: str, value: str | None, *, default: float, high: float) -> float:
    """A number of seconds from a query parameter, 0..high."""
    if value is None or value == "":
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise ValidationError(field, f"must be a number of seconds from 0 to {high:g}") from None
    if not 0 <= seconds <= high:  # also refuses NaN and inf
        raise ValidationError(field, f"must be a number of seconds from 0 to {high:g}")
    return seconds


def page_answer(page: Page) -> Json:
    """``{"jobs": [...], "next_cursor": ...}``."""
    return {"jobs": [job.to_dict() for job in page.jobs], "next_cursor": page.next_cursor}


def job_answer(job: Job) -> Json:
    """A job's JSON form."""
    return job.to_dict()


def count_created(api: ApiState, answers: Iterable[Enqueued]) -> int:
    """Feed the enqueue metrics with the created jobs; answers how many were created."""
    per_label: dict[tuple[str, str], int] = {}
    for item in answers:
        if item.created:
            labels = (item.job.queue, item.job.handler)
            per_label[labels] = per_label.get(labels, 0) + 1
    created = 0
    for labels, count in per_label.items():
        api.metrics.count_enqueued(labels, count)
        created += count
    api.enqueued.add(created)
    return created
