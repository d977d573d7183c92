"""``/api/v1/schedules``: recurring jobs, managed at run time.

Schedules made here have origin ``api``. Those from ``config.toml`` have origin ``config``; a
scheduler re-syncs them from the file when it starts, so edit those in the file.
"""

from typing import Any, Final

from litestar import Request, Response, delete, get, patch, post
from litestar.params import FromPath, FromQuery

from monoq.api.body import read_json_object
from monoq.api.openapi import (
    BODY,
    GUARDED,
    JOB_LINKS,
    LOCATION,
    PAGE,
    SCHEDULE_ID,
    SCHEDULE_LINKS,
    Answer,
    Job,
    ScheduleDeleted,
    ScheduleList,
    ScheduleRuns,
    documented,
)
from monoq.api.openapi import Schedule as ScheduleSchema
from monoq.api.problems import Problem
from monoq.api.routes._common import (
    ClientDep,
    Json,
    answer,
    check_name,
    check_priority,
    integral_numbers,
    job_answer,
    parse_cursor,
    parse_limit,
)
from monoq.client import Client
from monoq.core.models import Schedule
from monoq.core.schedules import run_to_dict
from monoq.errors import ScheduleNotFound, ValidationError


def _precheck(data: dict[str, Any], *, change: bool) -> dict[str, Any]:
    """Refuse what ``Client.build_schedule`` would take too leniently or fail on: a priority
    text it misreads (``check_priority``), a timezone that is not a string, and, in a change,
    a null ``cron`` or ``every`` (whether that leaves the schedule a timetable would depend on
    what it holds now: give the other field to switch)."""
    check_priority("priority", data.get("priority"))
    integral_numbers(data)
    if "timezone" in data and not isinstance(data["timezone"], str):
        raise ValidationError("timezone", "must be an IANA timezone name")
    if change:
        for key, other in (("cron", "every"), ("every", "cron")):
            if key in data and data[key] is None:
                raise ValidationError(key, f"cannot be null; give {other} to switch to it")
    return data


ID_PARAM: Final = {"schedule_id": SCHEDULE_ID}


async def _get(client: Client, schedule_id: str) -> Schedule:
    try:
        return await client.get_schedule(check_name("id", schedule_id))
    except (ScheduleNotFound, ValidationError):
        raise Problem(404, f"no schedule with id {schedule_id!r}") from None


@get("/schedules", opt={"scope": "read"}, summary="List schedules",
     **documented(GUARDED, answers=[Answer(200, ScheduleList, "Every schedule, by id.")]))
async def list_schedules(client: ClientDep) -> Response[Json]:
    """Every schedule with its next fire time, last success and last failure."""
    return answer({"schedules": [await client.schedule_status(s)
                                 for s in await client.list_schedules()]})


@post("/schedules", opt={"scope": "admin"}, status_code=201, summary="Create a schedule",
      **documented(GUARDED, BODY, 409, body="CreateSchedule",
                   answers=[Answer(201, ScheduleSchema, "The schedule was created.", LOCATION,
                                   SCHEDULE_LINKS)]))
async def create_schedule(request: Request[Any, Any, Any], client: ClientDep) -> Response[Json]:
    """Body: ``id``, ``handler``, ``cron`` (5 fields, or 6 with seconds first) or ``every``
    (seconds or "30s"), ``timezone``, ``payload``, ``queue``, ``priority``, ``max_retries``,
    ``timeout``, ``enabled``, ``overlap`` (allow|skip), ``misfire`` (skip|once). 409 if the id
    is taken; a bad cron expression or timezone is 422 naming the field."""
    data = _precheck(await read_json_object(request), change=False)
    schedule = client.build_schedule(data)
    if await client.backend.get_schedule(schedule.id) is not None:
        raise Problem(409, f"schedule {schedule.id!r} exists; PATCH it instead")
    stored = await client.put_schedule(schedule)
    return answer(await client.schedule_status(stored), 201,
                  {"Location": f"/api/v1/schedules/{stored.id}"})


@get("/schedules/{schedule_id:str}", opt={"scope": "read"}, summary="Get a schedule",
     **documented(GUARDED, 404, answers=[Answer(200, ScheduleSchema, "The schedule.")],
                  params=ID_PARAM))
async def get_schedule(schedule_id: FromPath[str], client: ClientDep) -> Response[Json]:
    """One schedule with its next fire time, last success and last failure."""
    return answer(await client.schedule_status(await _get(client, schedule_id)))


@patch("/schedules/{schedule_id:str}", opt={"scope": "admin"}, summary="Change a schedule",
       **documented(GUARDED, BODY, 404, body="ChangeSchedule", params=ID_PARAM,
                    answers=[Answer(200, ScheduleSchema, "The schedule as changed.")]))
async def update_schedule(schedule_id: FromPath[str], request: Request[Any, Any, Any],
                          client: ClientDep) -> Response[Json]:
    """Change some fields (same names as create); the fire history is kept."""
    current = await _get(client, schedule_id)
    data = _precheck(await read_json_object(request), change=True)
    stored = await client.put_schedule(client.build_schedule(data, base=current))
    return answer(await client.schedule_status(stored))


@delete("/schedules/{schedule_id:str}", opt={"scope": "admin"}, status_code=200,
        summary="Delete a schedule",
        **documented(GUARDED, 404, answers=[Answer(200, ScheduleDeleted, "It is gone.")],
                     params=ID_PARAM))
async def delete_schedule(schedule_id: FromPath[str], client: ClientDep) -> Response[Json]:
    """Delete the schedule; its runs stay until retention removes them."""
    await _get(client, schedule_id)
    await client.delete_schedule(schedule_id)
    return answer({"id": schedule_id, "deleted": True})


@post("/schedules/{schedule_id:str}/trigger", opt={"scope": "admin"}, status_code=201,
      summary="Run a schedule now",
      **documented(GUARDED, 404, 422, params=ID_PARAM,
                   answers=[Answer(201, Job, "The run's job.", LOCATION, JOB_LINKS)]))
async def trigger_schedule(schedule_id: FromPath[str], client: ClientDep) -> Response[Json]:
    """Enqueue one run now, outside the timetable; 201 with the job."""
    await _get(client, schedule_id)
    job = await client.trigger_schedule(schedule_id)
    return answer(job_answer(job), 201, {"Location": f"/api/v1/jobs/{job.id}"})


@get("/schedules/{schedule_id:str}/runs", opt={"scope": "read"}, summary="A schedule's runs",
     **documented(GUARDED, 404, 422, params={**ID_PARAM, **PAGE},
                  answers=[Answer(200, ScheduleRuns, "A page of runs, newest first.")]))
async def schedule_runs(schedule_id: FromPath[str], client: ClientDep,
                        limit: FromQuery[str | None] = None,
                        cursor: FromQuery[str | None] = None) -> Response[Json]:
    """Runs newest first: job id, fire time, state, duration; plus last success and failure."""
    schedule = await _get(client, schedule_id)
    page = await client.schedule_runs(schedule.id, limit=parse_limit(limit),
                                      cursor=parse_cursor(cursor))
    status = await client.schedule_status(schedule)
    return answer({"runs": [run_to_dict(job) for job in page.jobs],
                   "next_cursor": page.next_cursor,
                   "last_success": status["last_success"],
                   "last_failure": status["last_failure"]})


HANDLERS: Final = [list_schedules, create_schedule, get_schedule, update_schedule,
                   delete_schedule, trigger_schedule, schedule_runs]
