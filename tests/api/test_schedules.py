"""The /api/v1/schedules routes, over memory://."""

from litestar import Litestar
from litestar.testing import AsyncTestClient

from monoq.client import Client
from monoq.core.models import Outcome
from tests.api._support import count_jobs, finish_job

Http = AsyncTestClient[Litestar]
NIGHTLY = {"id": "nightly", "handler": "echo", "cron": "0 3 * * *", "timezone": "Europe/Paris",
           "payload": {"report": True}, "overlap": "skip", "misfire": "once"}


async def test_create_get_list(http: Http) -> None:
    created = await http.post("/api/v1/schedules", json=NIGHTLY)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["id"] == "nightly"
    assert body["origin"] == "api"
    assert body["next_fire_at"] is not None
    assert body["next_fire_at"].endswith(":00:00.000Z")  # 03:00 Paris is 01:00 or 02:00 UTC
    assert body["last_success"] is None
    assert created.headers["location"] == "/api/v1/schedules/nightly"
    got = (await http.get("/api/v1/schedules/nightly")).json()
    assert got["payload"] == {"report": True}
    assert got["overlap"] == "skip"
    listed = (await http.get("/api/v1/schedules")).json()["schedules"]
    assert [s["id"] for s in listed] == ["nightly"]


async def test_interval_as_duration_text(http: Http) -> None:
    created = await http.post("/api/v1/schedules",
                              json={"id": "tick", "handler": "echo", "every": "90s"})
    assert created.json()["every"] == 90.0
    assert created.json()["cron"] is None


async def test_duplicate_id_is_409_and_changes_nothing(http: Http) -> None:
    await http.post("/api/v1/schedules", json=NIGHTLY)
    again = await http.post("/api/v1/schedules", json={**NIGHTLY, "cron": "* * * * *"})
    assert again.status_code == 409
    assert (await http.get("/api/v1/schedules/nightly")).json()["cron"] == "0 3 * * *"


async def test_bad_definitions_are_422_naming_the_field(http: Http, client: Client) -> None:
    cases = [
        ({**NIGHTLY, "cron": "61 * * * *"}, "cron"),
        ({**NIGHTLY, "timezone": "Mars/Olympus"}, "timezone"),
        ({"id": "x", "handler": "echo"}, "every"),
        ({"id": "x", "handler": "echo", "cron": "* * * * *", "every": 5}, "every"),
        ({**NIGHTLY, "overlap": "sometimes"}, "overlap"),
        ({**NIGHTLY, "id": "bad id"}, "id"),
        ({**NIGHTLY, "colour": "red"}, "colour"),
    ]
    for body, field in cases:
        response = await http.post("/api/v1/schedules", json=body)
        assert response.status_code == 422, (body, response.text)
        assert field in response.json()["detail"], (field, response.json())
    assert await client.list_schedules() == []


async def test_patch_keeps_what_it_does_not_name(http: Http) -> None:
    await http.post("/api/v1/schedules", json=NIGHTLY)
    patched = await http.patch("/api/v1/schedules/nightly", json={"enabled": False})
    assert patched.status_code == 200
    body = patched.json()
    assert body["enabled"] is False
    assert body["next_fire_at"] is None
    assert body["cron"] == "0 3 * * *"
    assert body["payload"] == {"report": True}
    switched = await http.patch("/api/v1/schedules/nightly", json={"every": 60})
    assert switched.json()["cron"] is None
    assert switched.json()["every"] == 60.0
    bad = await http.patch("/api/v1/schedules/nightly", json={"id": "renamed"})
    assert bad.status_code == 422


async def test_trigger_runs_and_history(http: Http, client: Client) -> None:
    await http.post("/api/v1/schedules", json=NIGHTLY)
    triggered = await http.post("/api/v1/schedules/nightly/trigger")
    assert triggered.status_code == 201
    job = triggered.json()
    assert job["schedule_id"] == "nightly"
    assert job["payload"] == {"report": True}
    await finish_job(client, job["id"], Outcome.COMPLETED)
    runs = (await http.get("/api/v1/schedules/nightly/runs")).json()
    assert [r["job_id"] for r in runs["runs"]] == [job["id"]]
    assert runs["runs"][0]["state"] == "completed"
    assert runs["runs"][0]["fire_time"] is None  # triggered by hand, not by the timetable
    assert runs["last_success"]["job_id"] == job["id"]
    assert runs["last_failure"] is None


async def test_delete_then_404(http: Http) -> None:
    await http.post("/api/v1/schedules", json=NIGHTLY)
    assert (await http.delete("/api/v1/schedules/nightly")).status_code == 200
    for method, path in [("GET", "/api/v1/schedules/nightly"),
                         ("DELETE", "/api/v1/schedules/nightly"),
                         ("POST", "/api/v1/schedules/nightly/trigger"),
                         ("GET", "/api/v1/schedules/nightly/runs")]:
        response = await http.request(method, path)
        assert response.status_code == 404, (method, path)
        assert response.headers["content-type"] == "application/problem+json"


async def test_trigger_of_unknown_schedule_enqueues_nothing(http: Http, client: Client) -> None:
    before = await count_jobs(client)
    assert (await http.post("/api/v1/schedules/ghost/trigger")).status_code == 404
    assert await count_jobs(client) == before
