"""What the OpenAPI document says beyond what litestar infers from the route signatures.

Routes read their bodies by hand (``monoq.api.body``: strict JSON, 415/413/400 before anything
else), so litestar sees no ``data`` parameter and would document no request body; and every
error is ``application/problem+json`` (``monoq.api.problems``), which litestar cannot know.
``documented(...)`` builds the ``operation_class`` of a route: it adds the request body schema
and the problem responses the route can answer.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final

from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    RequestBody,
    Schema,
)

from monoq.api.problems import PROBLEM_JSON

PROBLEM_REF: Final = "#/components/schemas/Problem"
_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
_KEY_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:@/+=-]{0,199}$"
_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"

PROBLEM_SCHEMA: Final = Schema(
    type=OpenAPIType.OBJECT,
    description="RFC 9457 problem details.",
    required=["type", "title", "status", "detail"],
    properties={
        "type": Schema(type=OpenAPIType.STRING),
        "title": Schema(type=OpenAPIType.STRING),
        "status": Schema(type=OpenAPIType.INTEGER),
        "detail": Schema(type=OpenAPIType.STRING),
        "instance": Schema(type=OpenAPIType.STRING),
        "field": Schema(type=OpenAPIType.STRING, description="The offending field, if any."),
        "errors": Schema(
            type=OpenAPIType.ARRAY,
            items=Schema(type=OpenAPIType.OBJECT),
            description="litestar's parameter errors, if any.",
        ),
    },
)


def _name(description: str) -> Schema:
    return Schema(type=OpenAPIType.STRING, pattern=_NAME_PATTERN, description=description)


_SUBMIT_PROPERTIES: Final[dict[str, Schema | Reference]] = {
    "handler": _name("The handler to run (required unless `name` is given)."),
    "name": _name("An alias of `handler`."),
    "payload": Schema(description="Any JSON value, passed to the handler."),
    "queue": _name("The queue (default: the client's default queue)."),
    "priority": Schema(type=OpenAPIType.INTEGER, description="Higher runs first."),
    "delay": Schema(type=OpenAPIType.NUMBER, minimum=0, description="Seconds to wait first."),
    "run_at": Schema(type=OpenAPIType.STRING, description="RFC 3339 start time."),
    "max_retries": Schema(type=OpenAPIType.INTEGER, minimum=0),
    "timeout": Schema(type=OpenAPIType.NUMBER, description="Seconds a run may take."),
    "idempotency_key": Schema(type=OpenAPIType.STRING, pattern=_KEY_PATTERN),
}

SUBMIT_SCHEMA: Final = Schema(
    type=OpenAPIType.OBJECT,
    properties=_SUBMIT_PROPERTIES,
    additional_properties=False,
    description="A job to enqueue.",
)
SUBMIT_EXAMPLE: Final = {"handler": "echo", "payload": {"n": 1}}

BATCH_SCHEMA: Final = Schema(
    type=OpenAPIType.OBJECT,
    required=["jobs"],
    additional_properties=False,
    properties={
        "jobs": Schema(type=OpenAPIType.ARRAY, items=SUBMIT_SCHEMA, min_items=1, max_items=1000)
    },
)
REQUEUE_SCHEMA: Final = Schema(
    type=OpenAPIType.OBJECT,
    additional_properties=False,
    description='`{"ids": [...]}` alone, or `queue` and/or `handler`, or `{"all": true}`.',
    properties={
        "ids": Schema(
            type=OpenAPIType.ARRAY,
            items=Schema(type=OpenAPIType.STRING, pattern=_ID_PATTERN),
            min_items=1,
            max_items=10_000,
        ),
        "queue": _name("Requeue the dead jobs of this queue."),
        "handler": _name("Requeue the dead jobs of this handler."),
        "all": Schema(type=OpenAPIType.BOOLEAN),
    },
)


def json_body(schema: Schema, example: Any = None) -> RequestBody:
    """A required ``application/json`` request body."""
    return RequestBody(
        required=True,
        content={"application/json": OpenAPIMediaType(schema=schema, example=example)},
    )


_SCHEDULE_PROPERTIES: Final[dict[str, Schema | Reference]] = {
    "id": _name("Unique name of the schedule."),
    "handler": _name("The handler of each run."),
    "cron": Schema(type=OpenAPIType.STRING,
                   description="5 fields, or 6 with seconds first; or give `every`."),
    "every": Schema(one_of=[Schema(type=OpenAPIType.NUMBER, minimum=0.001),
                            Schema(type=OpenAPIType.STRING)],
                    description='A fixed interval: seconds or a duration such as "30s".'),
    "timezone": Schema(type=OpenAPIType.STRING, description="IANA name (default UTC)."),
    "payload": Schema(description="Any JSON value, passed to each run."),
    "queue": _name("The queue of each run."),
    "priority": Schema(type=OpenAPIType.INTEGER, minimum=0, maximum=9),
    "max_retries": Schema(type=OpenAPIType.INTEGER, minimum=0),
    "timeout": Schema(type=OpenAPIType.NUMBER, description="Seconds a run may take."),
    "enabled": Schema(type=OpenAPIType.BOOLEAN),
    "overlap": Schema(type=OpenAPIType.STRING, enum=["allow", "skip"]),
    "misfire": Schema(type=OpenAPIType.STRING, enum=["skip", "once"]),
}
SCHEDULE_EXAMPLE: Final = {"id": "nightly", "handler": "echo", "cron": "0 3 * * *",
                           "timezone": "Europe/Paris"}
SCHEDULE_BODY: Final = json_body(
    Schema(type=OpenAPIType.OBJECT, properties=_SCHEDULE_PROPERTIES, required=["id", "handler"],
           additional_properties=False, description="A recurring job."),
    SCHEDULE_EXAMPLE,
)
SCHEDULE_PATCH_BODY: Final = json_body(
    Schema(type=OpenAPIType.OBJECT, properties=_SCHEDULE_PROPERTIES,
           additional_properties=False, description="The fields to change."),
    {"enabled": False},
)

SUBMIT_BODY: Final = json_body(SUBMIT_SCHEMA, SUBMIT_EXAMPLE)
BATCH_BODY: Final = json_body(BATCH_SCHEMA, {"jobs": [SUBMIT_EXAMPLE]})
REQUEUE_BODY: Final = json_body(REQUEUE_SCHEMA, {"all": True})
ENQUEUE_BODY: Final = RequestBody(
    required=False,
    description="Text (a string payload; also a form-encoded body, taken as raw text, which "
    "is what curl -d sends) or JSON (its value).",
    content={
        "text/plain": OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING), example="hi"),
        "application/x-www-form-urlencoded": OpenAPIMediaType(
            schema=Schema(type=OpenAPIType.STRING), example="hello from curl"),
        "application/json": OpenAPIMediaType(schema=Schema(), example={"n": 1}),
    },
)

# Any guarded route: auth (when tokens are configured), the rate limit, an unavailable store.
GUARDED: Final = (401, 403, 429, 503)
# Routes that read a JSON body.
BODY: Final = (400, 413, 415, 422)


def problem_response(status: int) -> OpenAPIResponse:
    """The documented ``application/problem+json`` answer for ``status``."""
    return OpenAPIResponse(
        description=HTTPStatus(status).phrase,
        content={PROBLEM_JSON: OpenAPIMediaType(schema=Reference(ref=PROBLEM_REF))},
    )


def documented(*statuses: Iterable[int] | int, body: RequestBody | None = None) -> type[Operation]:
    """An ``operation_class`` adding ``body`` and problem answers for ``statuses``.

    litestar's own 400 (parameter validation) is replaced too: the API answers it as a problem.
    """
    codes: set[int] = set()
    for item in statuses:
        codes.update((item,) if isinstance(item, int) else item)

    @dataclass
    class DocumentedOperation(Operation):
        def __post_init__(self) -> None:
            if body is not None:
                self.request_body = body
            responses = dict(self.responses or {})
            wanted = set(codes)
            if "400" in responses:
                wanted.add(400)
            for status in sorted(wanted):
                responses[str(status)] = problem_response(status)
            self.responses = responses

    return DocumentedOperation
