"""``GET /api/v1/audit``: the audit log of operator actions (``monoq.core.audit``).

Admin scope. Filters, each exact: ``action``, ``actor``, ``source``, ``queue``, ``target``;
``since`` (inclusive) and ``until`` (exclusive) are RFC 3339 times; ``limit`` 1-1000 (50) and
``cursor`` (the previous page's ``next_cursor``). Newest first. A token limited to some queues
must give ``queue=`` naming one of them (403 otherwise): entries about other queues, or about
every queue, are not its to read. Reading the log is not itself recorded.
"""

from typing import Final

from litestar import Response, get
from litestar.params import FromQuery

from monoq.api.openapi import (
    AUDIT_CURSOR_RE,
    AUDIT_SOURCE_RE,
    AUDIT_TEXT_RE,
    GUARDED,
    LIMIT,
    QUEUE_FILTER,
    RUN_AT_IN,
    Answer,
    AuditPage,
    Param,
    documented,
    text,
)
from monoq.api.routes._common import (
    ClientDep,
    Json,
    answer,
    optional_name,
    parse_limit,
    parse_run_at,
)
from monoq.errors import ValidationError


def _text(field: str, value: str | None) -> str | None:
    if value is not None and not AUDIT_TEXT_RE.fullmatch(value):
        raise ValidationError(field, f"{value[:40]!r} is not 1 to 200 of A-Z a-z 0-9 _ . : / @ "
                                     "+ -")
    return value


def _source(value: str | None) -> str | None:
    if value is not None and not AUDIT_SOURCE_RE.fullmatch(value):
        raise ValidationError("source", f"{value[:40]!r} is not one of api, cli, ui, python")
    return value


def _cursor(value: str | None) -> str | None:
    if value is not None and not AUDIT_CURSOR_RE.fullmatch(value):
        raise ValidationError("cursor", "is not a cursor of the audit log")
    return value


@get(
    "/audit",
    opt={"scope": "admin"},
    summary="Read the audit log",
    **documented(
        GUARDED,
        422,
        answers=[Answer(200, AuditPage, "A page of audit entries, newest first.")],
        params={
            "action": Param(text(AUDIT_TEXT_RE.pattern), "Only entries of this action "
                            "(cancel, retry, requeue, purge, pause, resume, schedule.put, "
                            "schedule.delete, schedule.enable, schedule.disable, "
                            "schedule.trigger, denied)."),
            "actor": Param(text(AUDIT_TEXT_RE.pattern), "Only entries of this actor (a "
                           "token's name, or the OS user of a CLI command)."),
            "source": Param(text(AUDIT_SOURCE_RE.pattern), "Only entries from this source."),
            "queue": QUEUE_FILTER,
            "target": Param(text(AUDIT_TEXT_RE.pattern), "Only entries about this job id, "
                            "queue or schedule id."),
            "since": Param(RUN_AT_IN, "Only entries at or after this time."),
            "until": Param(RUN_AT_IN, "Only entries before this time."),
            "limit": LIMIT,
            "cursor": Param(text(AUDIT_CURSOR_RE.pattern), "The previous page's "
                            "`next_cursor`."),
        },
    ),
)
async def list_audit(
    client: ClientDep,
    action: FromQuery[str | None] = None,
    actor: FromQuery[str | None] = None,
    source: FromQuery[str | None] = None,
    queue: FromQuery[str | None] = None,
    target: FromQuery[str | None] = None,
    since: FromQuery[str | None] = None,
    until: FromQuery[str | None] = None,
    limit: FromQuery[str | None] = None,
    cursor: FromQuery[str | None] = None,
) -> Response[Json]:
    """``{"entries": [...], "next_cursor": ...}``: operator actions, newest first."""
    page = await client.list_audit(
        action=_text("action", action),
        actor=_text("actor", actor),
        source=_source(source),
        queue=optional_name("queue", queue),
        target=_text("target", target),
        since=None if since is None else parse_run_at("since", since),
        until=None if until is None else parse_run_at("until", until),
        limit=parse_limit(limit),
        cursor=_cursor(cursor),
    )
    return answer({"entries": [e.to_dict() for e in page.entries],
                   "next_cursor": page.next_cursor})


HANDLERS: Final = [list_audit]
