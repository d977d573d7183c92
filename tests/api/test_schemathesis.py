"""Property-based tests of every operation of the served OpenAPI document (schemathesis).

The schema is loaded from the app itself (``/schema/openapi.json`` through schemathesis' ASGI
transport) over a MemoryBackend with the builtin handlers registered and auth off. Each
operation gets a bounded, derandomized run in positive mode (data that fits the schema,
including the documented examples) and in negative mode (data that does not), and every
response must be no server error and conform to the document: status code, content type,
documented headers and body schema.

``negative_data_rejection`` and ``positive_data_acceptance`` are not run: the document
describes shapes, not every server-side rule (a registered handler, a reachable job id), so
positive data may fairly be refused with a documented 4xx.
"""

from collections.abc import Callable
from typing import Any, Final

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from monoq.api import create_app
from monoq.backends.memory import MemoryBackend
from monoq.client import Client
from monoq.config import ApiConfig
from monoq.registry import Registry

MAX_EXAMPLES: Final = 25
CHECKS: Final[list[Callable[..., Any]]] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

APP: Final = create_app(Client(MemoryBackend()), ApiConfig(), registry=Registry.discover())
SCHEMA: Final = schemathesis.openapi.from_asgi("/schema/openapi.json", APP)
OPERATIONS: Final = {
    op.label: op
    for op in (result.ok() for result in SCHEMA.get_all_operations())  # type: ignore[union-attr]
}


def test_document_covers_every_route() -> None:
    served = {(method, route.path.replace(":str}", "}"))
              for route in APP.routes for method in getattr(route, "methods", ())
              if method not in ("HEAD", "OPTIONS") and not route.path.startswith("/schema")}
    assert {tuple(label.split(" ", 1)) for label in OPERATIONS} == served
    bodies = {
        label
        for label, op in OPERATIONS.items()
        if "requestBody" in op.definition.raw  # documented request bodies
    }
    assert bodies == {
        "POST /api/v1/jobs",
        "POST /api/v1/jobs/batch",
        "POST /api/v1/dead-letter/requeue",
        "POST /enqueue",
        "POST /jobs",
        "POST /api/v1/schedules",
        "PATCH /api/v1/schedules/{schedule_id}",
    }


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_operation(label: str, mode: GenerationMode) -> None:
    operation = OPERATIONS[label]
    calls = 0

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case[Any]) -> None:
        nonlocal calls
        calls += 1
        case.call_and_validate(checks=CHECKS)

    run()
    assert calls > 0
