"""Helpers shared by the route modules: parameter parsing and JSON answers."""

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Final, cast

from litestar import Response
from litestar.di import NamedDependency

from monoq.api.problems import Problem
from monoq.api.state import ApiState, EnqueueCounter
from monoq.client import Client
from monoq.core.models import (
    KEY_RE,
    NAME_RE,
    Enqueued,
    Job,
    JobQuery,
    JobState,
    Page,
    validate_name,
)
from monoq.errors import ValidationError

JSON: Final = "application/json"
MAX_LIMIT: Final = JobQuery.MAX_LIMIT  # a page of jobs
DEFAULT_LIMIT: Final = 50
MAX_BATCH: Final = 1000  # jobs per batch submit
MAX_REQUEUE_IDS: Final = 10_000  # ids per dead-letter requeue
MAX_WAIT: Final = 60.0  # seconds a wait may last
MAX_AGE: Final = 100 * 365 * 86400.0  # DELETE /dead-letter?older_than=
MAX_QUEUE_COUNTERS: Final = 10_000  # per-queue enqueue counters kept for /stats
# Ids and cursors are opaque to the API, but only this alphabet ever reaches a backend. Every
# pattern here is matched whole (``fullmatch``) and is also the one the OpenAPI document shows.
ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
CURSOR_RE: Final = re.compile(r"^[A-Za-z0-9_.:=+/-]{0,256}$")  # empty: the first page
# A priority given as text: a name in any case, or 0-9 in ASCII digits (leading zeros allowed).
PRIORITY_TEXT_RE: Final = re.compile(
    r"^(?:[Hh][Ii][Gg][Hh]|[Nn][Oo][Rr][Mm][Aa][Ll]|[Ll][Oo][Ww]|0*[0-9])$"
)
# RFC 3339 with an offset, as datetime.fromisoformat reads it once T and Z are upper case: no
# leap second (:60) and no year 0000, which Python's datetime cannot hold.
RFC3339_RE: Final = re.compile(
    r"^(?:000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})-[0-9]{2}-[0-9]{2}[Tt]"
    r"[0-9]{2}:[0-9]{2}:[0-5][0-9](?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
# A JSON number: how a number of seconds is written in a query string.
NUMBER_RE: Final = re.compile(r"^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?$")


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c}]" for c in word)


_STATE: Final = "(?:" + "|".join(_any_case(str(s)) for s in JobState) + ")"
# ``state``: states separated by commas, in any case, blanks around them and empty parts ignored.
STATES_RE: Final = re.compile(rf"^\s*{_STATE}?\s*(?:,\s*{_STATE}?\s*)*$")

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
    if not ID_RE.fullmatch(job_id):
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


INTEGER_FIELDS: Final = ("priority", "max_retries")


def integral_numbers(data: dict[str, Any]) -> None:
    """JSON does not tell 3 from 3.0 (nor does JSON Schema's ``integer``): an integral float in
    an integer field becomes an int, which is what the client checks for."""
    for field in INTEGER_FIELDS:
        value = data.get(field)
        if type(value) is float and value.is_integer():
            data[field] = int(value)


def check_priority(field: str, value: object) -> None:
    """Refuse a priority text the client would misread: it takes any Unicode digits
    (``"٣"``) and fails on some that are not decimal (``"²"``)."""
    if isinstance(value, str) and not PRIORITY_TEXT_RE.fullmatch(value):
        raise ValidationError(field, f"{value[:40]!r} is not 0-9 or one of high, normal, low")


def parse_run_at(field: str, value: str) -> datetime:
    """An RFC 3339 time with an offset (``RFC3339_RE``), as an aware UTC datetime; 422 for
    anything else, including an instant outside the years 0001-9999 in UTC."""
    if not RFC3339_RE.fullmatch(value):
        raise ValidationError(field, f"{value[:40]!r} is not an RFC 3339 time with an offset")
    try:
        return datetime.fromisoformat(value.upper()).astimezone(UTC)
    except ValueError:
        raise ValidationError(field, f"{value[:40]!r} is not a valid time") from None
    except OverflowError:
        raise ValidationError(field, f"{value[:40]!r} is outside the years 0001-9999 in UTC") \
            from None


def precheck_submit(data: dict[str, Any], prefix: str = "") -> None:
    """Refuse what the client would take too leniently or fail on: names and keys (see
    ``check_name``), an empty queue name (the client would take it to mean the default queue),
    priority texts (``check_priority``) and times (``parse_run_at``). Normalises ``data`` in
    place: integral floats in integer fields become ints (``integral_numbers``) and a valid
    ``run_at`` its datetime."""
    for field in _NAME_FIELDS:
        value = data.get(field)
        # the common case (a valid name) costs one match; anything else gets the full check
        if value is not None and not (type(value) is str and _name_match(value)):
            check_name(prefix + field, value)
    key = data.get("idempotency_key")
    if isinstance(key, str) and not _key_match(key):
        raise ValidationError(prefix + "idempotency_key", f"{key[:40]!r} is not a valid key")
    priority = data.get("priority")
    if priority is not None and type(priority) is not int:
        check_priority(prefix + "priority", priority)
    if type(priority) is float or type(data.get("max_retries")) is float:
        integral_numbers(data)
    run_at = data.get("run_at")
    if isinstance(run_at, str) and data.get("delay") is None:
        data["run_at"] = parse_run_at(prefix + "run_at", run_at)


def parse_limit(value: str | None) -> int:
    """``limit``: 1..1000, default 50."""
    if value is None:
        return DEFAULT_LIMIT
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise ValidationError("limit", f"must be an integer from 1 to {MAX_LIMIT}")
    return int(value)


def parse_cursor(value: str | None) -> str | None:
    """``cursor``: the ``next_cursor`` of the previous page (empty or absent: the first)."""
    if value is not None and not CURSOR_RE.fullmatch(value):
        raise ValidationError("cursor", "is not a cursor this API returned")
    return value or None


def parse_states(values: Sequence[str] | None) -> set[JobState] | None:
    """``state``, repeatable and/or comma-separated (``STATES_RE``); None when absent."""
    if not values:
        return None
    states: set[JobState] = set()
    for value in values:
        if not STATES_RE.fullmatch(value):
            allowed = ", ".join(s.value for s in JobState)
            raise ValidationError("state", f"{value[:40]!r} is not a list of {allowed}")
        states.update(JobState(part.strip().lower()) for part in value.split(",") if part.strip())
    return states or None


def parse_seconds(field: str, value: str | None, *, default: float, high: float) -> float:
    """A number of seconds from a query parameter: a JSON number from 0 to ``high``; the
    default when absent."""
    if value is None:
        return default
    if not NUMBER_RE.fullmatch(value) or not 0 <= (seconds := float(value)) <= high:
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
        counter = api.enqueued_by_queue.get(labels[0])
        if counter is None:
            if len(api.enqueued_by_queue) >= MAX_QUEUE_COUNTERS:  # bounded, like the metrics
                api.enqueued_by_queue.clear()
            counter = api.enqueued_by_queue.setdefault(labels[0], EnqueueCounter())
        counter.add(count)
        created += count
    api.enqueued.add(created)
    return created
