"""Schemathesis against the served OpenAPI document, in-process over ASGI.

The app is the one the other api tests build (``make_app``: a MemoryBackend and tokens of every
scope), here with the installed handlers registered, so that unknown handlers are refused as in
production; every request carries the admin token. Every check schemathesis runs by default
applies: no server error; status code, content type, headers and body as documented;
schema-valid data accepted and schema-invalid data refused; missing or wrong credentials
refused; unsupported methods answered 405 with ``Allow``, and ``OPTIONS`` with the documented
methods; and, in the stateful run, what was created is there and what was deleted is gone.

- ``test_operations``: every operation through the examples, coverage and fuzzing phases, in
  positive and negative mode (one subtest per operation).
- ``test_stateful``: scenarios that follow the document's links only (link inference is off):
  submit a job, a batch or a schedule, then act on what the answer names; each scenario starts
  from an empty store.

Both are bounded and deterministic (fixed seed, derandomized). The document names three
grammars the server leaves to a library (``format``: ``cron``, ``timezone``,
``monoq-duration``); ``FORMATS`` teaches schemathesis to write valid ones. Two rules a schema
cannot state are kept by ``map_case``: a submit's ``Idempotency-Key`` header must equal the
body's ``idempotency_key`` when both are given (else 422), and a wait on a job that exists
lasts its ``timeout``, which is made 0 when it is valid.
"""

import zoneinfo
from collections.abc import Callable
from typing import Any, Final

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from litestar import Litestar

from monoq.api.state import STATE_KEY, ApiState
from monoq.backends.memory import MemoryBackend
from monoq.core.cron import check_cron
from monoq.core.cron import zone as time_zone
from monoq.core.durations import parse_duration
from monoq.registry import Registry
from tests.api._support import TOKENS, AppFactory

MAX_EXAMPLES: Final = 20  # generated cases per operation and mode in the fuzzing phase
SCENARIOS: Final = 100  # stateful scenarios
STEPS: Final = 10  # calls per scenario, at most
SEED: Final = 20260101
WAIT: Final = "GET /api/v1/jobs/{job_id}/wait"
SUBMITS: Final = ("POST /api/v1/jobs", "POST /jobs", "POST /enqueue")
MAX_EVERY: Final = 366 * 86400


def _cron_field(low: int, high: int) -> st.SearchStrategy[str]:
    number = st.integers(low, high).map(str)
    span = st.tuples(st.integers(low, high), st.integers(low, high)).map(
        lambda pair: f"{pair[0]}-{pair[1]}")
    step = st.integers(1, high - low + 1).map(lambda n: f"*/{n}")
    return st.lists(st.one_of(st.just("*"), number, span, step), min_size=1, max_size=3).map(
        ",".join)


_CRON_FIELDS: Final = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 6)]
CRON: Final = st.one_of(
    st.tuples(*(_cron_field(*bounds) for bounds in _CRON_FIELDS)),
    st.tuples(_cron_field(0, 59), *(_cron_field(*bounds) for bounds in _CRON_FIELDS)),
).map(" ".join)

_UNITS: Final = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION: Final = st.one_of(
    st.integers(1, MAX_EVERY).map(str),
    st.sampled_from(sorted(_UNITS)).flatmap(
        lambda unit: st.integers(1, int(MAX_EVERY / _UNITS[unit])).map(lambda n: f"{n}{unit}")),
    st.tuples(st.integers(0, 1000), st.integers(1, 59)).map(lambda t: f"{t[0]}m{t[1]}s"),
)

FORMATS: Final[dict[str, st.SearchStrategy[str]]] = {
    "cron": CRON,
    "timezone": st.sampled_from(sorted(zoneinfo.available_timezones())),
    "monoq-duration": DURATION,
}
for _format, _strategy in FORMATS.items():
    schemathesis.openapi.format(_format, _strategy)

CONFIG: Final = f"""
seed = {SEED}

[auth.openapi.bearer]
bearer = "{TOKENS['admin']}"

[generation]
deterministic = true
max-examples = {MAX_EXAMPLES}
database = "none"

[phases.stateful]
max-steps = {STEPS}

[phases.stateful.inference]
algorithms = []
"""


def _agree_on_the_key(case: schemathesis.Case[Any]) -> None:
    """A schema-valid submit with both an ``Idempotency-Key`` header and a body key gets the
    header's key in the body too: the server refuses two different keys (422)."""
    meta = case.meta
    if case.operation.label not in SUBMITS or meta is None or meta.generation.mode.is_negative:
        return
    headers: dict[str, Any] = dict(case.headers or {})
    header = headers.get("Idempotency-Key")
    if header is not None and isinstance(case.body, dict) and case.body.get("idempotency_key"):
        case.body["idempotency_key"] = header


def _short_wait(case: schemathesis.Case[Any]) -> None:
    """A wait on a job that exists holds the request for its ``timeout`` (30 s by default): a
    valid or absent one becomes 0 (the answer is then the job with ``Monoq-Wait: timeout``);
    an invalid one stays, to be refused."""
    if case.operation.label != WAIT:
        return
    timeout = dict(case.query or {}).get("timeout")
    try:
        valid = timeout is None or 0 <= float(timeout) <= 60
    except (TypeError, ValueError):
        valid = False
    if valid:
        case.query = {**(case.query or {}), "timeout": 0}


def load(app: Litestar) -> Any:
    """The app's served document, loaded with ``CONFIG`` and the hooks above."""
    schema = schemathesis.openapi.from_asgi(
        "/schema/openapi.json", app, config=schemathesis.Config.from_str(CONFIG)
    )

    @schema.hook
    def map_case(context: Any, case: schemathesis.Case[Any]) -> schemathesis.Case[Any]:
        _agree_on_the_key(case)
        _short_wait(case)
        return case

    return schema


@pytest.fixture
def api_app(make_app: AppFactory) -> Litestar:
    return make_app(tokens=True, registry=Registry.discover())


@pytest.fixture
def api_schema(api_app: Litestar) -> Any:
    return load(api_app)


lazy_schema = schemathesis.pytest.from_fixture("api_schema")


@lazy_schema.parametrize()
def test_operations(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate()


JOB_TARGETS: Final = (
    "GET /api/v1/jobs/{job_id}",
    "POST /api/v1/jobs/{job_id}/cancel",
    "POST /api/v1/jobs/{job_id}/retry",
    "GET /api/v1/jobs/{job_id}/attempts",
    WAIT,
)
SCHEDULE_TARGETS: Final = (
    "GET /api/v1/schedules/{schedule_id}",
    "PATCH /api/v1/schedules/{schedule_id}",
    "DELETE /api/v1/schedules/{schedule_id}",
    "POST /api/v1/schedules/{schedule_id}/trigger",
    "GET /api/v1/schedules/{schedule_id}/runs",
)


def test_stateful(api_app: Litestar, api_schema: Any) -> None:
    state = api_app.state[STATE_KEY]
    assert isinstance(state, ApiState)
    client = state.client
    answered: set[tuple[str, int]] = set()

    class Scenario(api_schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            """An empty store: a scenario (and any replay of it) starts from nothing."""
            client.backend = MemoryBackend()

        def after_call(self, response: Any, case: schemathesis.Case[Any]) -> None:
            super().after_call(response, case)
            answered.add((case.operation.label, response.status_code))

    Scenario.run(
        settings=settings(
            max_examples=SCENARIOS,
            stateful_step_count=STEPS,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
    )
    # The links led to the jobs and schedules the scenarios created. Which scenarios run is
    # fixed for given code, but Hypothesis also draws constants from the modules loaded, so the
    # rarer paths (a schedule's runs, or its change, a few times per run) are not each required.
    reached = {label for label, status in answered if status < 300}
    assert set(JOB_TARGETS) <= reached
    assert SCHEDULE_TARGETS[0] in reached
    assert len(reached & set(SCHEDULE_TARGETS)) >= 3, reached


def test_the_links_join_what_is_created_to_its_routes(api_schema: Any) -> None:
    links: dict[str, set[str]] = {}
    for result in api_schema.get_all_operations():
        operation = result.ok()
        for status, response in operation.definition.raw["responses"].items():
            for link in response.get("links", {}).values():
                links.setdefault(f"{operation.label} {status}", set()).add(link["operationId"])
    jobs = {"get_job", "cancel_job", "retry_job", "job_attempts", "wait_job"}
    for label in ("POST /api/v1/jobs 201", "POST /api/v1/jobs 200", "POST /jobs 201",
                  "POST /jobs 200", "POST /enqueue 201", "POST /enqueue 200",
                  "POST /api/v1/jobs/batch 201", "POST /api/v1/jobs/batch 200",
                  "POST /api/v1/jobs/{job_id}/cancel 200", "POST /api/v1/jobs/{job_id}/retry 200",
                  "POST /api/v1/schedules/{schedule_id}/trigger 201"):
        assert links.pop(label) == jobs, label
    assert links.pop("POST /api/v1/schedules 201") == {
        "get_schedule", "update_schedule", "delete_schedule", "trigger_schedule",
        "schedule_runs"}
    assert links == {}


VALID: Final[dict[str, Callable[[str], bool]]] = {
    "cron": lambda expr: bool(check_cron(expr)),
    "timezone": lambda name: bool(time_zone(name)),
    "monoq-duration": lambda text: 0.001 <= parse_duration(text) <= MAX_EVERY,
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_the_format_strategies_write_what_the_server_takes(fmt: str) -> None:
    @given(FORMATS[fmt])
    @settings(max_examples=200, derandomize=True, database=None, deadline=None)
    def check(value: str) -> None:
        assert VALID[fmt](value), value

    check()
