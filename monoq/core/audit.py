"""The audit log: who did what to which queue, job or schedule, when, and from where.

An ``AuditEntry`` is written for every operator action (cancel, retry, requeue, purge, pause,
resume, schedule changes) by ``monoq.client.Client`` (see ``audited``), whichever of the API,
the CLI or the dashboard asked for it, and for every admin request refused for its token's
scope. The actor comes from ``current_actor()``: the API and the dashboard set it per request
(the token's name and the client's address), the CLI once per command (the OS user). A call
made with no actor set (a program using the library directly) is not recorded.

Backends store entries as given (``Backend.append_audit``) and answer them newest first,
``(at, id)`` descending, with filters and a cursor (``Backend.list_audit``); retention deletes
old ones (``Backend.purge_audit``, run by the scheduler). Entries never hold a token or a
payload: only names, ids, counts and error messages.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from datetime import datetime
from typing import Any, Final, Protocol, TypeVar

import attrs

from monoq.core.models import from_ms, rfc3339, to_ms, to_ms_ceil
from monoq.errors import (
    Conflict,
    JobNotFound,
    MonoqError,
    ScheduleNotFound,
    ValidationError,
)

logger = logging.getLogger("monoq.audit")

SOURCES: Final = ("api", "cli", "ui", "python")
OUTCOMES: Final = ("ok", "refused", "not_found", "conflict", "invalid", "failed")
MAX_TEXT: Final = 200  # longest actor, action or target filter (and stored field)
MAX_DETAIL_IDS: Final = 20  # job ids kept in a requeue entry's detail
# The cursor of a page: "<epoch ms of at>-<id>" of its last entry.
CURSOR_RE: Final = re.compile(r"^([0-9]{1,15})-([0-9A-Za-z]{1,64})$")


@attrs.frozen
class AuditEntry:
    """One recorded operator action.

    ``at``: when (the client's clock: the backend's own on Redis), aware UTC, whole
    milliseconds. ``actor``: the API token's name, the dashboard viewer's token name, the OS
    user for the CLI (``anonymous`` when auth is off). ``source``: ``api``, ``cli``, ``ui`` or
    ``python``. ``action``: ``cancel``, ``retry``, ``requeue``, ``purge``, ``pause``,
    ``resume``, ``schedule.put``, ``schedule.delete``, ``schedule.enable``,
    ``schedule.disable``, ``schedule.trigger`` or ``denied``. ``target``: the job id, queue or
    schedule id acted on (None for an action on every queue). ``queue``: the queue concerned,
    when one is. ``outcome``: ``ok``, or why it did not happen (``refused``, ``not_found``,
    ``conflict``, ``invalid``, ``failed``). ``detail_json``: a small JSON object (counts,
    filters, the error message). ``address``: the client's IP address (API and dashboard).
    """

    id: str
    at: datetime
    actor: str
    source: str
    action: str
    target: str | None = None
    queue: str | None = None
    outcome: str = "ok"
    detail_json: str = "{}"
    address: str | None = None

    @property
    def detail(self) -> dict[str, Any]:
        """``detail_json`` decoded."""
        value = json.loads(self.detail_json)
        return value if isinstance(value, dict) else {}

    def to_dict(self) -> dict[str, Any]:
        """The JSON form the API and the CLI answer."""
        return {
            "id": self.id, "at": rfc3339(self.at), "actor": self.actor, "source": self.source,
            "action": self.action, "target": self.target, "queue": self.queue,
            "outcome": self.outcome, "detail": self.detail, "address": self.address,
        }

    def encode(self) -> str:
        """Compact JSON of every field (times in epoch ms), ``id`` first: how Redis keeps it."""
        return json.dumps(
            {"id": self.id, "at": to_ms(self.at), "actor": self.actor, "source": self.source,
             "action": self.action, "target": self.target, "queue": self.queue,
             "outcome": self.outcome, "detail": self.detail_json, "address": self.address},
            separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def decode(cls, text: str | bytes) -> AuditEntry:
        """The entry ``encode`` wrote."""
        data = json.loads(text)
        return cls(id=data["id"], at=from_ms(int(data["at"])), actor=data["actor"],
                   source=data["source"], action=data["action"], target=data["target"],
                   queue=data["queue"], outcome=data["outcome"], detail_json=data["detail"],
                   address=data["address"])

    @property
    def sort_key(self) -> tuple[int, str]:
        """``(epoch ms, id)``: entries are answered by it, descending."""
        return to_ms(self.at), self.id


@attrs.frozen
class AuditPage:
    """One page of ``list_audit``, newest first; pass ``next_cursor`` for the next page."""

    entries: list[AuditEntry]
    next_cursor: str | None


@attrs.frozen
class AuditFilter:
    """What ``list_audit`` keeps: every given field must match exactly; ``since`` is
    inclusive and ``until`` exclusive on ``at``."""

    action: str | None = None
    actor: str | None = None
    source: str | None = None
    queue: str | None = None
    target: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, entry: AuditEntry) -> bool:
        """Whether ``entry`` passes every given filter."""
        return (
            (self.action is None or entry.action == self.action)
            and (self.actor is None or entry.actor == self.actor)
            and (self.source is None or entry.source == self.source)
            and (self.queue is None or entry.queue == self.queue)
            and (self.target is None or entry.target == self.target)
            and (self.since is None or entry.at >= self.since)
            and (self.until is None or entry.at < self.until)
        )


def audit_cursor(entry: AuditEntry) -> str:
    """The cursor that continues after ``entry``."""
    ms, entry_id = entry.sort_key
    return f"{ms}-{entry_id}"


def parse_audit_cursor(cursor: str) -> tuple[int, str]:
    """``(epoch ms, id)`` of a cursor ``audit_cursor`` made; ValidationError otherwise."""
    match = CURSOR_RE.fullmatch(cursor) if isinstance(cursor, str) else None
    if match is None:
        raise ValidationError("cursor", "is not a cursor of the audit log")
    return int(match[1]), match[2]


# -- who is acting ------------------------------------------------------------------------------


@attrs.frozen
class Actor:
    """Who performs the operator actions of the current task: a name, a source and, over
    HTTP, the client's address."""

    name: str
    source: str
    address: str | None = None


_ACTOR: ContextVar[Actor | None] = ContextVar("monoq_audit_actor", default=None)
_RECORDING: ContextVar[bool] = ContextVar("monoq_audit_recording", default=False)


def current_actor() -> Actor | None:
    """The actor of the current task (None: actions are not recorded)."""
    return _ACTOR.get()


def set_actor(actor: Actor | None) -> None:
    """Make ``actor`` the current task's actor (the API and dashboard set it per request: each
    request runs in a task of its own, so it does not leak to others)."""
    _ACTOR.set(actor)


@contextlib.contextmanager
def acting_as(actor: Actor | None) -> Iterator[None]:
    """``actor`` within the block, the previous one after it."""
    token = _ACTOR.set(actor)
    try:
        yield
    finally:
        _ACTOR.reset(token)


def outcome_of(exc: BaseException) -> str:
    """The ``outcome`` recorded for an action that raised ``exc``."""
    if isinstance(exc, JobNotFound | ScheduleNotFound):
        return "not_found"
    if isinstance(exc, Conflict):
        return "conflict"
    if isinstance(exc, ValidationError):
        return "invalid"
    if type(exc).__name__ == "QueueForbidden":  # monoq.api.scoping: a queue-limited token
        return "refused"
    return "failed"


@attrs.define
class AuditNote:
    """What an action fills in while it runs: the queue it turned out to concern and its
    detail (counts, filters)."""

    target: str | None
    queue: str | None
    detail: dict[str, Any] = attrs.Factory(dict)
    outcome: str | None = None  # set to record a refusal that raised nothing (``denied``)


class AuditWriter(Protocol):
    """What ``audited`` needs of its instance (``monoq.client.Client``)."""

    def auditing(self, action: str, *, target: str | None = None, queue: str | None = None
                 ) -> contextlib.AbstractAsyncContextManager[AuditNote]: ...


@contextlib.asynccontextmanager
async def audit_scope(
    write: Callable[[AuditEntry], Awaitable[None]],
    clock: Callable[[], datetime],
    new_id: Callable[[], str],
    action: str,
    *,
    target: str | None = None,
    queue: str | None = None,
    actor: Actor | None = None,
) -> AsyncIterator[AuditNote]:
    """Run an action and record it once it ended (ok, or the outcome its error means).

    Nested scopes record nothing: the outermost one (a queue-limited client's check around the
    plain client's action, a command that requeues page by page) records the whole action.
    Without an actor (``actor`` or ``current_actor()``) nothing is recorded. A failure to
    write the entry is logged and does not fail the action, which already happened.
    """
    who = actor or _ACTOR.get()
    if who is None or _RECORDING.get():
        yield AuditNote(target, queue)
        return
    token = _RECORDING.set(True)
    note = AuditNote(target, queue)
    try:
        yield note
    except MonoqError as exc:
        _RECORDING.reset(token)
        note.detail["error"] = str(exc)[:500]
        await _record(write, clock, new_id, who, action, note, outcome_of(exc))
        raise
    except BaseException:  # cancelled, or a bug: nothing to say about the action
        _RECORDING.reset(token)
        raise
    _RECORDING.reset(token)
    await _record(write, clock, new_id, who, action, note, note.outcome or "ok")


async def _record(write: Callable[[AuditEntry], Awaitable[None]], clock: Callable[[], datetime],
                  new_id: Callable[[], str], who: Actor, action: str, note: AuditNote,
                  outcome: str) -> None:
    entry = AuditEntry(
        id=new_id(), at=from_ms(to_ms(clock())), actor=who.name[:MAX_TEXT], source=who.source,
        action=action, target=None if note.target is None else str(note.target)[:MAX_TEXT],
        queue=note.queue, outcome=outcome,
        detail_json=json.dumps(note.detail, separators=(",", ":"), default=str),
        address=who.address)
    try:
        await write(entry)
    except MonoqError as exc:
        logger.error("audit: could not record %s %s by %s: %s", action, note.target, who.name,
                     exc)


_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])
Describe = Callable[[Mapping[str, Any], Any], Mapping[str, Any]]


def audited(action: str | Callable[[Mapping[str, Any]], str], *, target: str | None = None,
            queue: str | None = None, describe: Describe | None = None) -> Callable[[_F], _F]:
    """Decorate a client method so that each call is recorded (see ``audit_scope``).

    ``action``: the action's name, or a function of the call's arguments (by name) giving it.
    ``target`` / ``queue``: the argument holding the target / the queue, dotted for an
    attribute (``"schedule.id"``). ``describe(arguments, result)`` answers the detail of a
    call that succeeded; its ``queue`` key, when present, becomes the entry's queue.
    """

    def pick(arguments: Mapping[str, Any], path: str | None) -> Any:
        if path is None:
            return None
        head, *rest = path.split(".")
        value = arguments.get(head)
        for part in rest:
            value = getattr(value, part, None)
        return value

    def wrap(method: _F) -> _F:
        signature = inspect.signature(method)

        @functools.wraps(method)
        async def run(self: AuditWriter, *args: Any, **kwargs: Any) -> Any:
            arguments = signature.bind(self, *args, **kwargs).arguments
            name = action if isinstance(action, str) else action(arguments)
            async with self.auditing(name, target=pick(arguments, target),
                                     queue=pick(arguments, queue)) as note:
                result = await method(self, *args, **kwargs)
                if describe is not None:
                    detail = dict(describe(arguments, result))
                    found = detail.pop("queue", None)
                    if note.queue is None and isinstance(found, str):
                        note.queue = found
                    note.detail.update(detail)
                return result

        return run  # type: ignore[return-value]

    return wrap


# -- paging, for backends ------------------------------------------------------------------------

Fetch = Callable[[tuple[int, str] | None, int], Awaitable[list[AuditEntry]]]
SCAN_BATCH: Final = 500  # entries a backend reads per step of a filtered page
MAX_SCANNED: Final = 5000  # entries one page reads at most before it ends early


async def scan_page(fetch: Fetch, filters: AuditFilter | None, limit: int,
                    cursor: str | None) -> AuditPage:
    """A ``list_audit`` page from ``fetch(below, n)``: up to ``n`` entries whose ``sort_key``
    is below ``below`` (every entry when None), newest first.

    The walk starts below the cursor (and below ``until``), stops at ``since``, and reads at
    most ``MAX_SCANNED`` entries: a page of a rare filter then ends early with a cursor after
    the last entry read, as the protocol allows.
    """
    if limit <= 0:
        return AuditPage(entries=[], next_cursor=None)
    wanted = filters or AuditFilter()
    below = parse_audit_cursor(cursor) if cursor else None
    if wanted.until is not None:
        bound = (to_ms_ceil(wanted.until), "")
        below = bound if below is None else min(below, bound)
    since_ms = None if wanted.since is None else to_ms_ceil(wanted.since)
    found: list[AuditEntry] = []
    scanned = 0
    while True:
        batch = await fetch(below, SCAN_BATCH)
        for entry in batch:
            if since_ms is not None and entry.sort_key[0] < since_ms:
                return AuditPage(entries=found, next_cursor=None)
            if wanted.matches(entry):
                if len(found) == limit:
                    return AuditPage(entries=found, next_cursor=audit_cursor(found[-1]))
                found.append(entry)
        if len(batch) < SCAN_BATCH:
            return AuditPage(entries=found, next_cursor=None)
        scanned += len(batch)
        below = batch[-1].sort_key
        if scanned >= MAX_SCANNED:
            return AuditPage(entries=found, next_cursor=audit_cursor(batch[-1]))
