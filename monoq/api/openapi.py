"""The OpenAPI document: what litestar cannot infer from the route signatures.

Routes read their bodies by hand (``monoq.api.body``: strict JSON, 415/413/400 before anything
else) and answer hand-built JSON, so litestar sees neither a request nor a response type. The
document is written here instead, to the letter of the validation code:

- ``Component`` classes: the JSON a route answers (``Job``, ``JobPage``, ``Queue``, ...) and
  ``Problem``, the one body of every error (``monoq.api.problems``). Each carries its schema;
  ``ComponentSchemas`` (a litestar schema plugin) enters them in litestar's own registry, so
  they land in ``#/components/schemas`` and every ``$ref`` to them resolves. (litestar replaces
  ``components.schemas`` of the config with its registry's, so they cannot be given there.)
- ``request_bodies(...)``: the request bodies, in ``#/components/requestBodies``. They depend on
  the app: with a registry, ``handler`` is one of the registered handlers (``create_app``).
- ``documented(...)``: the keyword arguments of a route decorator. Its responses (the success
  answers with their headers and links, and the problem answers the route can give), its query
  and path parameters as the route validates them, its request body, and ``security: []`` for
  the public routes.

Links join a created job to the routes of that job (get, cancel, retry, attempts, wait), and a
created schedule to its routes, through the ``id`` of the answer.
"""

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from http import HTTPStatus
from typing import Any, ClassVar, Final, cast

from litestar.openapi import ResponseSpec
from litestar.openapi.spec import (
    Link,
    OpenAPIFormat,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    Reference,
    RequestBody,
    Schema,
)
from litestar.plugins import OpenAPISchemaPlugin
from litestar.typing import FieldDefinition

from monoq.api.problems import PROBLEM_JSON
from monoq.api.routes._common import (
    CURSOR_RE,
    ID_RE,
    MAX_BATCH,
    MAX_LIMIT,
    MAX_REQUEUE_IDS,
    PRIORITY_TEXT_RE,
    RFC3339_RE,
    STATES_RE,
)
from monoq.client import MAX_DELAY, SUBMIT_FIELDS
from monoq.core.models import (
    KEY_RE,
    MAX_EVERY,
    MAX_RETRIES,
    MAX_TIMEOUT,
    MIN_EVERY,
    NAME_RE,
    AttemptOutcome,
    JobState,
    MisfirePolicy,
    OverlapPolicy,
)
from monoq.core.schedules import SCHEDULE_FIELDS

STRING: Final = OpenAPIType.STRING
INTEGER: Final = OpenAPIType.INTEGER
NUMBER: Final = OpenAPIType.NUMBER
BOOLEAN: Final = OpenAPIType.BOOLEAN
ARRAY: Final = OpenAPIType.ARRAY
OBJECT: Final = OpenAPIType.OBJECT
NULL: Final = OpenAPIType.NULL


def _format(name: str) -> OpenAPIFormat:
    """A ``format`` litestar's enum does not list (``cron``, ``timezone``, ``monoq-duration``):
    the document names the grammar the server applies; tools that do not know it ignore it."""
    return cast("OpenAPIFormat", name)


COMPONENT_REF: Final = "#/components/schemas/"


def ref(component: "type[Component]") -> Reference:
    """A ``$ref`` to a component schema."""
    return Reference(ref=COMPONENT_REF + component.__name__)


def nullable(schema: Schema) -> Schema:
    """``schema`` or JSON null (the field may be given as null: the default then applies)."""
    kind = schema.type
    kinds = [] if kind is None else [kind] if isinstance(kind, OpenAPIType) else list(kind)
    copy = Schema(**{f.name: getattr(schema, f.name) for f in fields(Schema)})
    copy.type = [*kinds, NULL]
    return copy


def text(pattern: str | None = None, description: str | None = None, **extra: Any) -> Schema:
    """A string, matching ``pattern`` when given."""
    return Schema(type=STRING, pattern=pattern, description=description, **extra)


def name(description: str | None = None) -> Schema:
    """A queue, handler or schedule name (``monoq.core.models.NAME_RE``)."""
    return text(NAME_RE.pattern, description)


def time_text(description: str | None = None) -> Schema:
    """An RFC 3339 time as the API writes it (UTC, milliseconds)."""
    return text(description=description, format=OpenAPIFormat.DATE_TIME)


def count(description: str | None = None) -> Schema:
    return Schema(type=INTEGER, minimum=0, description=description)


def closed(properties: Mapping[str, Schema | Reference], description: str | None = None,
           required: Iterable[str] | None = None) -> Schema:
    """An object with exactly these properties (all required unless ``required`` says which)."""
    return Schema(
        type=OBJECT,
        properties=dict(properties),
        required=sorted(properties if required is None else required) or None,
        additional_properties=False,
        description=description,
    )


# --- components: the JSON the API answers -------------------------------------------------------


class Component:
    """A named schema of ``#/components/schemas`` (its name is the class name)."""

    schema: ClassVar[Schema]
    by_name: ClassVar[dict[str, "type[Component]"]] = {}

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        Component.by_name[cls.__name__] = cls


def _references(node: object) -> Iterator[str]:
    """The ``$ref`` targets in a schema, at any depth."""
    if isinstance(node, Reference):
        yield node.ref
    elif isinstance(node, Schema):
        for item in fields(Schema):
            yield from _references(getattr(node, item.name))
    elif isinstance(node, dict):
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list | tuple):
        for value in node:
            yield from _references(value)


class Problem(Component):
    """RFC 9457 problem details, exactly as ``monoq.api.problems`` builds them."""

    schema = closed(
        {
            "type": Schema(type=STRING, const="about:blank",
                           description="Always about:blank: the status says it all."),
            "title": text(description="The status phrase."),
            "status": Schema(type=INTEGER, minimum=400, maximum=599,
                             description="The HTTP status of the answer."),
            "detail": text(description="What went wrong with this request."),
            "instance": text(description="The request path (absent on GET /readyz)."),
            "field": text(description="The offending input, for validation problems: a body "
                          "field (`jobs[2].priority`), a query parameter or `body`."),
            "errors": Schema(
                type=ARRAY,
                items=closed({"message": text(), "key": text(), "source": text()},
                             required=()),
                description="Parameter errors found by the framework, if any.",
            ),
            "queue": nullable(name("For a 429 of backpressure: the full queue (null: all "
                                   "queues together).")),
            "depth": count("For a 429 of backpressure: the waiting jobs it holds."),
            "limit": count("For a 429 of backpressure: its limit."),
        },
        description="RFC 9457 problem details (`application/problem+json`): the body of "
        "every error.",
        required=("type", "title", "status", "detail"),
    )


class StateCounts(Component):
    schema = closed({str(state): count() for state in JobState},
                    description="How many jobs are in each state.")


class Job(Component):
    schema = closed(
        {
            "id": text(ID_RE.pattern),
            "queue": name(),
            "handler": name(),
            "payload": Schema(description="Any JSON value: the handler's input."),
            "priority": Schema(type=INTEGER, minimum=0, maximum=9,
                               description="0 runs first, 9 last."),
            "state": Schema(type=STRING, enum=[str(s) for s in JobState]),
            "attempt": count("Attempts started so far."),
            "max_retries": count(),
            "timeout": Schema(type=NUMBER, exclusive_minimum=0,
                              description="Seconds a run may take."),
            "run_at": time_text("When the job is (or was) due."),
            "created_at": time_text(),
            "started_at": nullable(time_text("Start of the latest attempt.")),
            "finished_at": nullable(time_text()),
            "idempotency_key": nullable(text()),
            "schedule_id": nullable(text(description="The schedule that enqueued it.")),
            "result": Schema(description="The handler's return value (null until completed)."),
            "error": nullable(text(description='The latest error, "Type: message".')),
            "progress": nullable(closed(
                {
                    "fraction": Schema(type=NUMBER, minimum=0, maximum=1,
                                       description="0 to 1, as the handler last reported."),
                    "message": nullable(text(max_length=500)),
                },
                description="How far the running handler said it is (`ctx.progress`); kept "
                            "when the job ends, cleared by a retry. Null when never reported.",
            )),
        },
        description="A job (docs/DESIGN.md §3).",
    )


class JobPage(Component):
    schema = closed(
        {
            "jobs": Schema(type=ARRAY, items=ref(Job), description="Newest first."),
            "next_cursor": nullable(text(CURSOR_RE.pattern, "Pass as `cursor` for the next "
                                         "page; null on the last page.")),
        },
        description="One page of jobs.",
    )


class JobList(Component):
    schema = closed({"jobs": Schema(type=ARRAY, items=ref(Job), description="In the order "
                                    "submitted.")})


class Attempt(Component):
    schema = closed({
        "job_id": text(ID_RE.pattern),
        "attempt": Schema(type=INTEGER, minimum=1),
        "worker_id": text(),
        "started_at": time_text(),
        "finished_at": nullable(time_text()),
        "duration": nullable(Schema(type=NUMBER, minimum=0, description="Seconds.")),
        "outcome": Schema(type=STRING, enum=[str(o) for o in AttemptOutcome]),
        "error_type": nullable(text()),
        "error_message": nullable(text()),
        "traceback": nullable(text()),
    })


class Attempts(Component):
    schema = closed({
        "job_id": text(ID_RE.pattern),
        "attempts": Schema(type=ARRAY, items=ref(Attempt), description="Oldest first."),
    })


class Queue(Component):
    schema = closed({
        "queue": name(),
        "paused": Schema(type=BOOLEAN),
        "counts": ref(StateCounts),
        "oldest_queued_at": nullable(time_text("`run_at` of the oldest queued job.")),
    })


class QueueList(Component):
    schema = closed({"queues": Schema(type=ARRAY, items=ref(Queue))})


class Requeued(Component):
    schema = closed({"requeued": count(), "ids": Schema(type=ARRAY, items=text(ID_RE.pattern))})


class Purged(Component):
    schema = closed({"purged": count()})


class ScheduleRun(Component):
    schema = closed({
        "job_id": text(ID_RE.pattern),
        "fire_time": nullable(text(description="The fire time the run was enqueued for.")),
        "state": Schema(type=STRING, enum=[str(s) for s in JobState]),
        "attempt": count(),
        "created_at": time_text(),
        "finished_at": nullable(time_text()),
        "duration": nullable(Schema(type=NUMBER, description="Seconds.")),
        "result": Schema(),
        "error": nullable(text()),
    })


class Schedule(Component):
    schema = closed(
        {
            "id": name(),
            "handler": name(),
            "cron": nullable(text(format=_format("cron"))),
            "every": nullable(Schema(type=NUMBER, minimum=MIN_EVERY, maximum=MAX_EVERY,
                                     description="Seconds.")),
            "timezone": text(format=_format("timezone")),
            "payload": Schema(),
            "queue": name(),
            "priority": Schema(type=INTEGER, minimum=0, maximum=9),
            "max_retries": nullable(count()),
            "timeout": nullable(Schema(type=NUMBER, exclusive_minimum=0)),
            "enabled": Schema(type=BOOLEAN),
            "overlap": Schema(type=STRING, enum=[str(p) for p in OverlapPolicy]),
            "misfire": Schema(type=STRING, enum=[str(p) for p in MisfirePolicy]),
            "origin": Schema(type=STRING, enum=["config", "api"]),
            "created_at": nullable(time_text()),
            "updated_at": nullable(time_text()),
            "last_fire_at": nullable(time_text()),
            "next_fire_at": nullable(time_text()),
            "last_success": Schema(one_of=[ref(ScheduleRun), Schema(type=NULL)]),
            "last_failure": Schema(one_of=[ref(ScheduleRun), Schema(type=NULL)]),
            "running": Schema(type=BOOLEAN, description="A run is unfinished."),
        },
        description="A schedule with its next fire time and its last success and failure.",
    )


class ScheduleList(Component):
    schema = closed({"schedules": Schema(type=ARRAY, items=ref(Schedule))})


class ScheduleRuns(Component):
    schema = closed({
        "runs": Schema(type=ARRAY, items=ref(ScheduleRun), description="Newest first."),
        "next_cursor": nullable(text(CURSOR_RE.pattern)),
        "last_success": Schema(one_of=[ref(ScheduleRun), Schema(type=NULL)]),
        "last_failure": Schema(one_of=[ref(ScheduleRun), Schema(type=NULL)]),
    })


class ScheduleDeleted(Component):
    schema = closed({"id": name(), "deleted": Schema(type=BOOLEAN, const=True)})


class Worker(Component):
    schema = closed({
        "id": text(),
        "host": text(),
        "pid": count(),
        "roles": Schema(type=ARRAY, items=text()),
        "queues": Schema(type=ARRAY, items=text()),
        "concurrency": count(),
        "busy": count(),
        "started_at": time_text(),
        "last_seen": time_text(),
        "processed": count("Jobs run to an outcome since it started."),
    })


class WorkerList(Component):
    schema = closed({"workers": Schema(type=ARRAY, items=ref(Worker))})


_WINDOW: Final = closed({
    "window_seconds": Schema(type=INTEGER, minimum=1),
    "completed": count(),
    "dead": count(),
    "cancelled": count(),
    "completed_per_second": Schema(type=NUMBER, minimum=0),
})


class Stats(Component):
    schema = closed({
        "counts": ref(StateCounts),
        "queues": count("How many queues."),
        "paused": Schema(type=ARRAY, items=name(), description="The paused queues."),
        "throughput": closed(dict.fromkeys(("1m", "5m", "15m"), _WINDOW),
                             description="Jobs finished in the last 1, 5 and 15 minutes."),
        "process": closed({
            "started_at": time_text(),
            "uptime_seconds": Schema(type=NUMBER, minimum=0),
            "enqueued": closed({key: count() for key in ("total", "1m", "5m", "15m")},
                               description="Jobs this process created."),
        }),
    })


class Enqueued(Component):
    schema = closed({"enqueued": Schema(type=BOOLEAN, const=True), "id": text(ID_RE.pattern)})


class QueueLength(Component):
    schema = closed({"queue": name(), "length": count("Queued + scheduled + retrying jobs.")})


class QueueStats(Component):
    schema = closed({
        "totals": ref(StateCounts),
        "queues": Schema(type=OBJECT, additional_properties=ref(StateCounts),
                         property_names=name()),
    })


# The audit log's query texts (action, actor, target), as GET /api/v1/audit takes them.
AUDIT_TEXT_RE: Final = re.compile(r"^[A-Za-z0-9_.:/@+-]{1,200}$")
AUDIT_SOURCE_RE: Final = re.compile(r"^(?:api|cli|ui|python)$")
AUDIT_CURSOR_RE: Final = re.compile(r"^[0-9]{1,15}-[0-9A-Za-z]{1,64}$")
AUDIT_ACTIONS: Final = ("cancel", "retry", "requeue", "purge", "pause", "resume",
                        "schedule.put", "schedule.delete", "schedule.enable",
                        "schedule.disable", "schedule.trigger", "denied")


class AuditEntry(Component):
    schema = closed({
        "id": text(description="The entry's id."),
        "at": time_text("When the action happened."),
        "actor": text(description="Who: the token's name (API, dashboard; `anonymous` with "
                      "auth off) or the OS user (CLI)."),
        "source": Schema(type=STRING, enum=["api", "cli", "ui", "python"],
                         description="Where from."),
        "action": text(description=f"What: one of {', '.join(AUDIT_ACTIONS)}."),
        "target": nullable(text(description="The job id, queue, schedule id or (`denied`) "
                                "path acted on; null for every queue.")),
        "queue": nullable(name("The queue concerned, when one is.")),
        "outcome": Schema(type=STRING,
                          enum=["ok", "refused", "not_found", "conflict", "invalid", "failed"],
                          description="ok, or why the action did not happen."),
        "detail": Schema(type=OBJECT, description="Counts, filters, the error message."),
        "address": nullable(text(description="The client's address (API and dashboard).")),
    }, description="One operator action in the audit log.")


class AuditPage(Component):
    schema = closed(
        {
            "entries": Schema(type=ARRAY, items=ref(AuditEntry), description="Newest first."),
            "next_cursor": nullable(text(AUDIT_CURSOR_RE.pattern, "Pass as `cursor` for the "
                                         "next page; null on the last page.")),
        },
        description="One page of the audit log. A page may hold fewer than `limit` entries "
        "(even none) and still have a `next_cursor` when the filters match rarely.",
    )


class Health(Component):
    schema = closed({"status": Schema(type=STRING, const="ok")})


class Ready(Component):
    schema = closed({"status": Schema(type=STRING, const="ready")})


class ComponentSchemas(OpenAPISchemaPlugin):
    """Enters ``Component`` classes in litestar's schema registry, and the components their
    schemas refer to, so that ``#/components/schemas`` holds every schema a ``$ref`` names."""

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        annotation = field_definition.annotation
        return isinstance(annotation, type) and issubclass(annotation, Component)

    def to_openapi_schema(self, field_definition: FieldDefinition,
                          schema_creator: Any) -> Schema:
        component: type[Component] = field_definition.annotation
        registered: Schema = schema_creator.schema_registry.get_schema_for_field_definition(
            field_definition)
        for item in fields(Schema):
            setattr(registered, item.name, getattr(component.schema, item.name))
        registered.title = component.__name__
        for target in _references(component.schema):
            used = Component.by_name[target.removeprefix(COMPONENT_REF)]
            schema_creator.for_field_definition(FieldDefinition.from_annotation(used))
        return registered


# --- request bodies ------------------------------------------------------------------------------

PRIORITY_IN: Final = Schema(
    type=[INTEGER, STRING],
    minimum=0,
    maximum=9,
    pattern=PRIORITY_TEXT_RE.pattern,
    description="0 (runs first) to 9, as a number or a string, or high (0), normal (5), "
    "low (9) in any case.",
)
RUN_AT_IN: Final = text(
    RFC3339_RE.pattern,
    "RFC 3339 time with an offset, seconds 00-59, within years 0001-9999 in UTC.",
    format=OpenAPIFormat.DATE_TIME,
)
# A duration: seconds ("300") or parts such as "30s", "5m", "1h", "1d", "500ms", "1m30s"
# (case and surrounding blanks ignored), as monoq.core.durations reads it.
DURATION_TEXT: Final = text(format=_format("monoq-duration"))


def _handler_names(known: Sequence[str] | None) -> Schema:
    """``handler``: a name, and one of ``known`` when the app refuses unknown handlers."""
    if known is None:
        return name("The handler to run.")
    if not known:
        return Schema(schema_not=Schema(), description="No handler is registered.")
    return Schema(type=STRING, enum=sorted(known), description="A registered handler.")


def _submit_schema(known: Sequence[str] | None) -> Schema:
    handler = _handler_names(known)
    properties: dict[str, Schema | Reference] = {
        "handler": handler,
        "name": nullable(name("An alias of `handler` (ignored when `handler` is given).")),
        "payload": Schema(description="Any JSON value, passed to the handler."),
        "queue": nullable(name("The queue (default: the handler's, else the configured one).")),
        "priority": nullable(PRIORITY_IN),
        "delay": nullable(Schema(type=NUMBER, minimum=0, maximum=MAX_DELAY.total_seconds(),
                                 description="Seconds to wait first.")),
        "run_at": nullable(RUN_AT_IN),
        "max_retries": nullable(Schema(type=INTEGER, minimum=0, maximum=MAX_RETRIES)),
        "timeout": nullable(Schema(type=NUMBER, minimum=0.001, maximum=MAX_TIMEOUT,
                                   description="Seconds a run may take.")),
        "idempotency_key": nullable(text(KEY_RE.pattern, "A replay of the key answers the "
                                         "first job with 200.")),
    }
    assert set(properties) == SUBMIT_FIELDS  # noqa: S101 - the client's list of fields
    return Schema(
        type=OBJECT,
        properties=properties,
        additional_properties=False,
        # `handler`, or `name` naming a handler
        any_of=[Schema(required=["handler"]),
                Schema(required=["name"], properties={"name": handler})],
        # `delay` or `run_at`, not both
        schema_not=Schema(required=["delay", "run_at"],
                          properties={"delay": Schema(type=NUMBER), "run_at": Schema(type=STRING)}),
        description="A job to enqueue. Null for an optional field means its default.",
    )


def _schedule_schema(known: Sequence[str] | None, *, create: bool) -> Schema:
    cron = text(format=_format("cron"), description="5 fields, or 6 with seconds first (as "
                "croniter accepts them); or give `every`.")
    every = Schema(any_of=[Schema(type=NUMBER, minimum=MIN_EVERY, maximum=MAX_EVERY), DURATION_TEXT],
                   description="A fixed interval from 1 ms to 366 days: seconds, or a duration "
                   'text: "300", "30s", "5m", "1h", "1d", "500ms", "1m30s" (case and '
                   "surrounding blanks ignored).")
    properties: dict[str, Schema | Reference] = {
        "id": name("Unique name of the schedule."),
        "handler": _handler_names(known),
        "cron": nullable(cron) if create else cron,
        "every": Schema(any_of=[*(every.any_of or []), Schema(type=NULL)],
                        description=every.description) if create else every,
        "timezone": text(format=_format("timezone"),
                         description="An IANA timezone name (default UTC)."),
        "payload": Schema(description="Any JSON value, passed to each run."),
        "queue": name("The queue of each run."),
        "priority": PRIORITY_IN,
        "max_retries": nullable(Schema(type=INTEGER, minimum=0, maximum=MAX_RETRIES)),
        "timeout": nullable(Schema(type=NUMBER, minimum=0.001, maximum=MAX_TIMEOUT)),
        "enabled": Schema(type=BOOLEAN),
        "overlap": Schema(type=STRING, enum=[str(p) for p in OverlapPolicy]),
        "misfire": Schema(type=STRING, enum=[str(p) for p in MisfirePolicy]),
    }
    assert set(properties) == SCHEDULE_FIELDS  # noqa: S101 - the client's list of fields
    given = {"cron": cron, "every": every}  # not null
    if create:
        return Schema(
            type=OBJECT,
            properties=properties,
            required=["id", "handler"],
            additional_properties=False,
            # exactly one of cron and every, not null
            one_of=[Schema(required=[key], properties={key: given[key]}) for key in given],
            description="A recurring job: `cron` or `every`, not both.",
        )
    del properties["id"]  # a schedule's id cannot change
    return Schema(
        type=OBJECT,
        properties=properties,
        additional_properties=False,
        schema_not=Schema(required=["cron", "every"]),
        description="The fields to change. Giving `cron` or `every` switches the schedule to "
        "it (so not both).",
    )


def _requeue_schema() -> Schema:
    ids = Schema(type=ARRAY, items=text(ID_RE.pattern), min_items=1, max_items=MAX_REQUEUE_IDS)
    return Schema(
        one_of=[
            closed({"ids": ids}, description="These dead or cancelled jobs (others are skipped)."),
            Schema(
                type=OBJECT,
                properties={
                    "queue": nullable(name("The dead jobs of this queue.")),
                    "handler": nullable(name("The dead jobs of this handler.")),
                    "all": Schema(type=BOOLEAN, description="Every dead job."),
                },
                additional_properties=False,
                any_of=[  # not null
                    Schema(required=["queue"], properties={"queue": name()}),
                    Schema(required=["handler"], properties={"handler": name()}),
                    Schema(required=["all"], properties={"all": Schema(type=BOOLEAN, const=True)}),
                ],
                description="The dead jobs matching `queue` and/or `handler`, or all of them.",
            ),
        ],
    )


def json_body(schema: Schema, example: Any = None, description: str | None = None) -> RequestBody:
    """A required ``application/json`` request body."""
    return RequestBody(
        required=True,
        description=description,
        content={"application/json": OpenAPIMediaType(schema=schema, example=example)},
    )


def request_bodies(known_handlers: Sequence[str] | None) -> dict[str, RequestBody | Reference]:
    """``#/components/requestBodies`` of an app; ``known_handlers`` are the only handlers it
    accepts (None: any valid name)."""
    submit = _submit_schema(known_handlers)
    handler = "echo" if known_handlers is None or "echo" in known_handlers \
        else min(known_handlers, default=None)
    example = None if handler is None else {"handler": handler, "payload": {"n": 1}}
    schedule_example = None if handler is None else {
        "id": "nightly", "handler": handler, "cron": "0 3 * * *", "timezone": "Europe/Paris"}
    return {
        "SubmitJob": json_body(submit, example),
        "SubmitBatch": json_body(
            closed({"jobs": Schema(type=ARRAY, items=submit, min_items=1, max_items=MAX_BATCH)}),
            None if example is None else {"jobs": [example]},
            "1 to 1000 jobs, all or nothing.",
        ),
        "CreateSchedule": json_body(_schedule_schema(known_handlers, create=True),
                                    schedule_example),
        "ChangeSchedule": json_body(_schedule_schema(known_handlers, create=False),
                                    {"enabled": False}),
        "RequeueDead": json_body(_requeue_schema(), {"all": True}),
        "Enqueue": RequestBody(
            required=False,
            description="Text (a string payload; also a form-encoded body, taken as raw text, "
            "which is what curl -d sends; or no body at all: an empty string) or JSON (its "
            "value).",
            content={
                "text/plain": OpenAPIMediaType(schema=text(), example="hi"),
                "application/x-www-form-urlencoded": OpenAPIMediaType(
                    schema=text(), example="hello from curl"),
                "application/json": OpenAPIMediaType(schema=Schema(), example={"n": 1}),
            },
        ),
    }


# --- parameters ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """How a query or path parameter is documented."""

    schema: Schema
    description: str | None = None
    explode: bool | None = None


JOB_ID: Final = Param(text(ID_RE.pattern), "A job id (any other text names no job: 404).")
QUEUE_NAME: Final = Param(name(), "A queue name (422 if it is not one).")
SCHEDULE_ID: Final = Param(name(), "A schedule id (any other text names no schedule: 404).")
QUEUE_FILTER: Final = Param(name(), "Only jobs of this queue.")
HANDLER_FILTER: Final = Param(name(), "Only jobs of this handler.")
STATE_FILTER: Final = Param(
    Schema(type=ARRAY, items=text(STATES_RE.pattern)),
    "Only jobs in these states: repeat the parameter and/or separate states with commas "
    f"({', '.join(str(s) for s in JobState)}; any case, blanks ignored).",
    explode=True,
)
LIMIT: Final = Param(Schema(type=INTEGER, minimum=1, maximum=MAX_LIMIT, default=50),
                     "Page size.")
CURSOR: Final = Param(text(CURSOR_RE.pattern), "The previous page's `next_cursor` (empty: the "
                      "first page).")
PAGE: Final = {"limit": LIMIT, "cursor": CURSOR}


def seconds_param(high: float, default: float, description: str) -> Param:
    """A number of seconds, 0..``high``, written as a JSON number."""
    return Param(Schema(type=NUMBER, minimum=0, maximum=high, default=default), description)


IDEMPOTENCY_HEADER: Final = Parameter(
    name="Idempotency-Key",
    param_in="header",
    required=False,
    schema=text(KEY_RE.pattern),
    description="Same as the body's `idempotency_key` (if both are given they must be equal).",
)


# --- responses -----------------------------------------------------------------------------------


def _header(schema: Schema, description: str) -> OpenAPIHeader:
    return OpenAPIHeader(schema=schema, required=True, description=description)


RETRY_AFTER: Final = {"Retry-After": _header(Schema(type=INTEGER, minimum=1),
                                             "Seconds to wait before trying again.")}
PROBLEM_HEADERS: Final[Mapping[int, Mapping[str, OpenAPIHeader]]] = {
    401: {"WWW-Authenticate": _header(text(), "The Bearer challenge.")},
    415: {"Accept-Post": _header(text(), "The media types this route reads.")},
    429: RETRY_AFTER,
    503: RETRY_AFTER,
}
LOCATION: Final = {"Location": _header(text(format=OpenAPIFormat.URI_REFERENCE),
                                       "The path of what was created (or found).")}
WAIT_HEADER: Final = {"Monoq-Wait": _header(Schema(type=STRING, enum=["done", "timeout"]),
                                            "done: the job is terminal; timeout: it is not.")}


def _links(target: str, operations: Iterable[str], pointer: str) -> dict[str, Link]:
    return {
        op: Link(operation_id=op, parameters={target: f"$response.body#{pointer}"},
                 description=f"`{target}` is the answer's `{pointer.rsplit('/', 1)[-1]}`.")
        for op in operations
    }


JOB_OPERATIONS: Final = ("get_job", "cancel_job", "retry_job", "job_attempts", "wait_job")
SCHEDULE_OPERATIONS: Final = ("get_schedule", "update_schedule", "delete_schedule",
                              "trigger_schedule", "schedule_runs")
JOB_LINKS: Final = _links("job_id", JOB_OPERATIONS, "/id")
FIRST_JOB_LINKS: Final = _links("job_id", JOB_OPERATIONS, "/jobs/0/id")
SCHEDULE_LINKS: Final = _links("schedule_id", SCHEDULE_OPERATIONS, "/id")


@dataclass(frozen=True)
class Answer:
    """A success response: its status, component, headers and links."""

    status: int
    component: type[Component]
    description: str
    headers: Mapping[str, OpenAPIHeader] = field(default_factory=dict)
    links: Mapping[str, Link] = field(default_factory=dict)
    media_type: str = "application/json"


# Any guarded route: auth (when tokens are configured), the rate limit (when configured), a
# failing or unreachable store.
GUARDED: Final = (401, 403, 429, 500, 503)
# Routes that read a JSON body: malformed (400), too large (413), not JSON (415), invalid (422).
BODY: Final = (400, 413, 415, 422)


def documented(
    *problems: Iterable[int] | int,
    answers: Sequence[Answer] = (),
    body: str | None = None,
    params: Mapping[str, Param] | None = None,
    headers: Sequence[Parameter] = (),
    public: bool = False,
) -> dict[str, Any]:
    """Keyword arguments for a route decorator that document the route exactly.

    ``problems``: the statuses it can answer with a problem; ``answers``: its success
    responses; ``body``: the name of its request body in ``#/components/requestBodies``;
    ``params``: its query and path parameters (by name) as the route validates them;
    ``headers``: the request headers it reads; ``public``: no token is needed.
    """
    codes: set[int] = set()
    for item in problems:
        codes.update((item,) if isinstance(item, int) else item)
    if params:
        codes.add(400)  # litestar's own parameter validation, answered as a problem
    responses: dict[int, ResponseSpec] = {
        answer.status: ResponseSpec(data_container=answer.component, generate_examples=False,
                                    description=answer.description,
                                    media_type=answer.media_type)
        for answer in answers
    }
    for status in sorted(codes):
        responses[status] = ResponseSpec(data_container=Problem, generate_examples=False,
                                         description=HTTPStatus(status).phrase,
                                         media_type=PROBLEM_JSON)
    by_status = {str(answer.status): answer for answer in answers}
    wanted = dict(params or {})

    @dataclass
    class DocumentedOperation(Operation):
        def __post_init__(self) -> None:
            if body is not None:
                self.request_body = Reference(ref=f"#/components/requestBodies/{body}")
            documented_params: list[Parameter | Reference] = []
            for param in self.parameters or ():
                if isinstance(param, Parameter) and param.name in wanted:
                    doc = wanted[param.name]
                    param.schema = doc.schema
                    param.description = doc.description
                    param.explode = doc.explode
                    param.allow_empty_value = False
                documented_params.append(param)
            documented_params.extend(headers)
            self.parameters = documented_params or None
            for status, response in (self.responses or {}).items():
                if not isinstance(response, OpenAPIResponse):
                    continue
                answer = by_status.get(status)
                if answer is not None:
                    response.headers = dict(answer.headers) or None
                    response.links = dict(answer.links) or None
                elif status.isdigit() and int(status) in PROBLEM_HEADERS:
                    response.headers = dict(PROBLEM_HEADERS[int(status)])
            if self.responses:
                self.responses = dict(sorted(self.responses.items()))
            if public:
                self.security = []

    return {"responses": responses, "operation_class": DocumentedOperation}
