"""What fuzzing the OpenAPI document found, one plain case each: where the document and the API
disagreed (the document was fixed) and where the API answered 500 or took input by a rule of
its own (the API was fixed)."""

from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient, TestClient

from monoq.registry import Registry
from tests.api._support import AppFactory

Http = AsyncTestClient[Litestar]


def _doc(app: Litestar) -> dict[str, Any]:
    with TestClient(app) as http:
        doc: dict[str, Any] = http.get("/schema/openapi.json").json()
    return doc


@pytest.fixture
def registered(make_app: AppFactory) -> Litestar:
    """An app that refuses unknown handlers, as ``monoq run`` builds it."""
    return make_app(registry=Registry.discover())


# --- the document ------------------------------------------------------------------------------


def test_the_problem_schema_is_defined(http_app: Litestar) -> None:
    doc = _doc(http_app)
    response = doc["paths"]["/api/v1/jobs/{job_id}"]["get"]["responses"]["404"]
    assert response["content"]["application/problem+json"]["schema"] == {
        "$ref": "#/components/schemas/Problem"}
    assert doc["components"]["schemas"]["Problem"]["required"] == [
        "detail", "status", "title", "type"]


@pytest.fixture
def http_app(make_app: AppFactory) -> Litestar:
    return make_app()


@pytest.mark.parametrize("path", ["/api/v1/jobs", "/jobs"])
async def test_a_replayed_submit_answers_the_documented_200(
    make_app: AppFactory, path: str
) -> None:
    app = make_app()
    responses = _doc(app)["paths"][path]["post"]["responses"]
    for status in ("200", "201"):
        assert responses[status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Job"}
        assert responses[status]["headers"]["Location"]["required"] is True
    async with AsyncTestClient(app) as http:
        body = {"handler": "echo", "idempotency_key": "k1"}
        first = await http.post(path, json=body)
        again = await http.post(path, json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == f"/api/v1/jobs/{first.json()['id']}"


def test_a_created_job_links_to_its_routes(http_app: Litestar) -> None:
    answer = _doc(http_app)["paths"]["/api/v1/jobs"]["post"]["responses"]["201"]
    assert {name: (link["operationId"], link["parameters"])
            for name, link in answer["links"].items()} == {
        op: (op, {"job_id": "$response.body#/id"})
        for op in ("get_job", "cancel_job", "retry_job", "job_attempts", "wait_job")}


def test_health_and_readiness_need_no_token(make_app: AppFactory) -> None:
    paths = _doc(make_app(tokens=True))["paths"]
    assert paths["/healthz"]["get"]["security"] == []
    assert paths["/readyz"]["get"]["security"] == []


def test_the_submit_body_lists_the_registered_handlers(registered: Litestar) -> None:
    body = _doc(registered)["components"]["requestBodies"]["SubmitJob"]
    handler = body["content"]["application/json"]["schema"]["properties"]["handler"]
    assert handler["enum"] == sorted(spec.name for spec in Registry.discover())


def test_query_parameters_carry_the_rules_they_are_checked_by(http_app: Litestar) -> None:
    params = {p["name"]: p["schema"]
              for p in _doc(http_app)["paths"]["/api/v1/jobs"]["get"]["parameters"]}
    assert params["limit"] == {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}
    assert params["queue"]["pattern"] == r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
    assert params["cursor"]["pattern"] == r"^[A-Za-z0-9_.:=+/-]{0,256}$"
    assert params["state"]["type"] == "array"


# --- the API -----------------------------------------------------------------------------------


@pytest.mark.parametrize("priority", ["²", "٣", "1.5", " 1", "urgent"])
async def test_a_priority_text_that_is_not_0_to_9_or_a_name_is_422(
    http: Http, priority: str
) -> None:
    """"²" made the client raise a bare ValueError: 500."""
    submit = await http.post("/api/v1/jobs", json={"handler": "echo", "priority": priority})
    assert (submit.status_code, submit.json()["field"]) == (422, "priority")
    batch = await http.post("/api/v1/jobs/batch",
                            json={"jobs": [{"handler": "echo", "priority": priority}]})
    assert (batch.status_code, batch.json()["field"]) == (422, "jobs[0].priority")
    schedule = await http.post("/api/v1/schedules", json={
        "id": "s", "handler": "echo", "every": 60, "priority": priority})
    assert (schedule.status_code, schedule.json()["field"]) == (422, "priority")


@pytest.mark.parametrize(("priority", "stored"), [("HIGH", 0), ("Low", 9), ("0007", 7), (3.0, 3)])
async def test_priorities_the_document_allows_are_taken(
    http: Http, priority: Any, stored: int
) -> None:
    response = await http.post("/api/v1/jobs", json={"handler": "echo", "priority": priority})
    assert (response.status_code, response.json()["priority"]) == (201, stored)


@pytest.mark.parametrize("run_at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
async def test_a_run_at_outside_the_years_0001_to_9999_is_422(http: Http, run_at: str) -> None:
    """The conversion to UTC overflowed: 500."""
    response = await http.post("/api/v1/jobs", json={"handler": "echo", "run_at": run_at})
    assert (response.status_code, response.json()["field"]) == (422, "run_at")


@pytest.mark.parametrize(
    ("run_at", "stored"),
    [
        ("2030-01-01t00:00:00z", "2030-01-01T00:00:00.000Z"),
        ("2030-01-01T01:00:00.123456789+01:00", "2030-01-01T00:00:00.123Z"),
    ],
)
async def test_any_rfc_3339_run_at_is_taken(http: Http, run_at: str, stored: str) -> None:
    response = await http.post("/api/v1/jobs", json={"handler": "echo", "run_at": run_at})
    assert (response.status_code, response.json()["run_at"]) == (201, stored)


@pytest.mark.parametrize("run_at", ["2030-01-01T00:00:60Z", "2030-01-01 00:00:00Z",
                                    "2030-01-01T00:00:00", "20300101T000000Z"])
async def test_a_run_at_that_is_not_rfc_3339_with_an_offset_is_422(
    http: Http, run_at: str
) -> None:
    response = await http.post("/api/v1/jobs", json={"handler": "echo", "run_at": run_at})
    assert (response.status_code, response.json()["field"]) == (422, "run_at")


async def test_integral_floats_are_integers(http: Http) -> None:
    """JSON Schema's integer admits 765.0; the client refused it (422)."""
    response = await http.post("/api/v1/jobs", json={"handler": "echo", "max_retries": 765.0})
    assert (response.status_code, response.json()["max_retries"]) == (201, 765)
    batch = await http.post("/api/v1/jobs/batch",
                            json={"jobs": [{"handler": "echo", "max_retries": 136.0}]})
    assert batch.status_code == 201
    schedule = await http.post("/api/v1/schedules", json={
        "id": "s", "handler": "echo", "every": 60, "max_retries": 2.0, "priority": 1.0})
    assert (schedule.status_code, schedule.json()["max_retries"]) == (201, 2)
    fraction = await http.post("/api/v1/jobs", json={"handler": "echo", "max_retries": 1.5})
    assert fraction.status_code == 422


async def test_a_null_timezone_is_422(http: Http) -> None:
    """It reached ZoneInfo(None): 500."""
    created = await http.post("/api/v1/schedules",
                              json={"id": "s", "handler": "echo", "every": 60, "timezone": None})
    assert (created.status_code, created.json()["field"]) == (422, "timezone")
    assert (await http.post("/api/v1/schedules",
                            json={"id": "s", "handler": "echo", "every": 60})).status_code == 201
    changed = await http.patch("/api/v1/schedules/s", json={"timezone": None})
    assert (changed.status_code, changed.json()["field"]) == (422, "timezone")


async def test_a_change_cannot_null_cron_or_every(http: Http) -> None:
    """Whether it was valid depended on what the schedule held; give the other to switch."""
    assert (await http.post("/api/v1/schedules",
                            json={"id": "s", "handler": "echo", "every": 60})).status_code == 201
    for body in ({"cron": None}, {"every": None}, {"cron": None, "every": 30}):
        response = await http.patch("/api/v1/schedules/s", json=body)
        assert response.status_code == 422, body
    switched = await http.patch("/api/v1/schedules/s", json={"cron": "0 3 * * *"})
    assert (switched.status_code, switched.json()["every"]) == (200, None)


async def test_a_schedule_every_may_be_a_duration_text(http: Http) -> None:
    response = await http.post("/api/v1/schedules",
                               json={"id": "s", "handler": "echo", "every": "1m30s"})
    assert (response.status_code, response.json()["every"]) == (201, 90.0)
    for every in ("", "0s", "367d"):
        refused = await http.post("/api/v1/schedules",
                                  json={"id": "t", "handler": "echo", "every": every})
        assert refused.status_code == 422, every


async def test_options_lists_every_method_of_the_path_without_a_token(
    make_app: AppFactory,
) -> None:
    """It was 403 ("this route declares no scope"), and litestar listed only the methods of
    the first handler registered on the path."""
    async with AsyncTestClient(make_app(tokens=True)) as http:
        for path, allow in (("/api/v1/jobs", "GET, OPTIONS, POST"),
                            ("/api/v1/schedules", "GET, OPTIONS, POST"),
                            ("/api/v1/schedules/s", "DELETE, GET, OPTIONS, PATCH"),
                            ("/api/v1/dead-letter", "DELETE, GET, OPTIONS")):
            response = await http.options(path)
            assert (response.status_code, response.headers["allow"]) == (204, allow), path


@pytest.mark.parametrize("cursor", ["abc\n", "a b", "x" * 257])
async def test_a_cursor_must_be_one_whole(http: Http, cursor: str) -> None:
    response = await http.get("/api/v1/jobs", params={"cursor": cursor})
    assert (response.status_code, response.json()["field"]) == (422, "cursor")


async def test_an_empty_cursor_is_the_first_page(http: Http) -> None:
    await http.post("/api/v1/jobs", json={"handler": "echo"})
    response = await http.get("/api/v1/jobs", params={"cursor": ""})
    assert (response.status_code, len(response.json()["jobs"])) == (200, 1)


@pytest.mark.parametrize("value", ["", " 5", "1_0", "\u0661", ".5", "5.", "0x10", "nan", "-1"])
async def test_seconds_in_a_query_are_a_json_number(http: Http, value: str) -> None:
    """"" meant the default, and anything float() reads was taken."""
    waited = await http.get("/api/v1/jobs/x/wait", params={"timeout": value})
    assert (waited.status_code, waited.json()["field"]) == (422, "timeout")
    purged = await http.delete("/api/v1/dead-letter", params={"older_than": value})
    assert (purged.status_code, purged.json()["field"]) == (422, "older_than")


@pytest.mark.parametrize("value", ["0", "0.5", "1e1", "-0.0", "60"])
async def test_seconds_written_as_json_numbers_are_taken(http: Http, value: str) -> None:
    response = await http.delete("/api/v1/dead-letter", params={"older_than": value})
    assert response.status_code == 200


@pytest.mark.parametrize(("state", "status"), [
    ("queued", 200), ("QUEUED, dead", 200), (",", 200), (" Scheduled ,", 200),
    ("queued;dead", 422), ("finished", 422), ("queued\x00", 422),
])
async def test_states_are_a_comma_separated_list(http: Http, state: str, status: int) -> None:
    response = await http.get("/api/v1/jobs", params={"state": state})
    assert response.status_code == status


async def test_unknown_handlers_are_refused_as_documented(registered: Litestar) -> None:
    async with AsyncTestClient(registered) as http:
        response = await http.post("/api/v1/jobs", json={"name": "nosuch"})
        known = await http.post("/api/v1/jobs", json={"name": "echo", "handler": None})
    assert (response.status_code, response.json()["field"]) == (422, "handler")
    assert known.status_code == 422  # a null handler is no handler, whatever the name


async def test_the_idempotency_header_and_body_key_must_agree(http: Http) -> None:
    response = await http.post("/api/v1/jobs", json={"handler": "echo", "idempotency_key": "a"},
                               headers={"Idempotency-Key": "b"})
    assert (response.status_code, response.json()["field"]) == (422, "idempotency_key")
