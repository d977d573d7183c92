"""Schedules: the list, one schedule with its last runs, the create/edit form with inline
errors, and enable, disable, trigger and delete.

The form's values become the same JSON body the API takes, checked by
``Client.build_schedule``; a refused value is shown next to its field and nothing is stored.
Payloads are shown masked (``monoq.ui.masking``); on save, a masked value left as it was keeps
the stored secret.
"""

from __future__ import annotations

import json
from typing import Any, Final

from litestar import Request, Response, get, post
from litestar.params import FromPath

from monoq.core.models import Schedule
from monoq.errors import HandlerNotFound, ScheduleNotFound, ValidationError
from monoq.ui.core import UiState, back, client_of, page, ui_state
from monoq.ui.jobs import _NAME_RE

RUNS_SHOWN: Final = 20
PRIORITIES: Final = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9")
FORM_FIELDS: Final = ("id", "handler", "kind", "cron", "every", "timezone", "payload", "queue",
                      "priority", "max_retries", "timeout", "enabled", "overlap", "misfire")
# "_new" can never be a schedule id (ids start with a letter or digit).
# Field names in build_schedule's errors ("schedule 'x': cron") -> the form's field names.
_ERROR_FIELDS: Final = {"schedule id": "id", "schedule": "kind"}


def schedule_id(value: str) -> str:
    """A schedule id, or ScheduleNotFound for a string that cannot be one."""
    if not _NAME_RE.fullmatch(value):
        raise ScheduleNotFound(value[:60])
    return value


def _form_field(error_field: str) -> str:
    name = error_field.rsplit(": ", 1)[-1]
    if error_field.startswith("schedule ") and ": " not in error_field:
        name = "schedule"
    return _ERROR_FIELDS.get(name, name)


def form_values(schedule: Schedule | None, ui: UiState, *, visible: bool) -> dict[str, str]:
    """The form's initial values: a schedule's (payload masked, or hidden) or the defaults."""
    if schedule is None:
        return {"id": "", "handler": "", "kind": "cron", "cron": "", "every": "",
                "timezone": "UTC", "payload": "null",
                "queue": ui.client.defaults.queue, "priority": str(ui.client.defaults.priority),
                "max_retries": "", "timeout": "", "enabled": "on", "overlap": "allow",
                "misfire": "skip"}
    every = "" if schedule.every is None else f"{schedule.every:g}s"
    return {
        "id": schedule.id, "handler": schedule.handler,
        "kind": "every" if schedule.every is not None else "cron",
        "cron": schedule.cron or "", "every": every, "timezone": schedule.timezone,
        "payload": json.dumps(ui.masker.mask(schedule.payload), indent=2) if visible else "",
        "queue": schedule.queue, "priority": str(schedule.priority),
        "max_retries": "" if schedule.max_retries is None else str(schedule.max_retries),
        "timeout": "" if schedule.timeout is None else f"{schedule.timeout:g}",
        "enabled": "on" if schedule.enabled else "", "overlap": str(schedule.overlap),
        "misfire": str(schedule.misfire),
    }


def form_body(values: dict[str, str], current: Schedule | None, ui: UiState, *,
              payload_visible: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """The API body for the submitted form values, and the errors found before
    ``build_schedule`` (each field's own format)."""
    errors: dict[str, str] = {}
    body: dict[str, Any] = {}
    if current is None:
        body["id"] = values["id"]
    body["handler"] = values["handler"]
    if values["kind"] == "every":
        body["every"] = values["every"] or None
        body["cron"] = None
        if not values["every"]:
            errors["every"] = "give an interval such as 30s, 5m or 1h"
    else:
        body["cron"] = values["cron"] or None
        body["every"] = None
        if not values["cron"]:
            errors["cron"] = "give a cron expression such as 0 3 * * *"
    body["timezone"] = values["timezone"] or "UTC"
    if payload_visible or current is None:
        text = values["payload"].strip() or "null"
        try:
            payload = json.loads(text)
        except ValueError as exc:
            errors["payload"] = f"is not JSON: {exc}"
        else:
            if current is not None:
                payload = ui.masker.unmask(payload, current.payload)
            body["payload"] = payload
    body["queue"] = values["queue"] or ui.client.defaults.queue
    body["priority"] = values["priority"] or str(ui.client.defaults.priority)
    for name in ("max_retries", "timeout"):
        text = values[name].strip()
        if not text:
            body[name] = None
            continue
        try:
            body[name] = int(text) if name == "max_retries" else float(text)
        except ValueError:
            errors[name] = ("must be a whole number" if name == "max_retries"
                            else "must be a number of seconds")
    body["enabled"] = values["enabled"] == "on"
    body["overlap"] = values["overlap"]
    body["misfire"] = values["misfire"]
    return body, errors


@get("/schedules", opt={"ui": "read"}, name="ui-schedules")
async def schedules(request: Request[Any, Any, Any]) -> Response[Any]:
    """Every schedule: timetable, timezone, next fire, last success and failure, enabled."""
    client = client_of(request)
    rows = [await client.schedule_status(s) for s in await client.list_schedules()]
    return page(request, "schedules.html", nav="schedules", title="Schedules", rows=rows)


@get("/schedules/_new", opt={"ui": "admin"}, name="ui-schedule-new")
async def new_form(request: Request[Any, Any, Any]) -> Response[Any]:
    """An empty form for a new schedule."""
    ui = ui_state(request)
    return _form_page(request, ui, None, form_values(None, ui, visible=True), {})


def _form_page(request: Request[Any, Any, Any], ui: UiState, current: Schedule | None,
               values: dict[str, str], errors: dict[str, str], status: int = 200
               ) -> Response[Any]:
    editing = current is not None
    visible = not editing or ui.payloads_visible(request.scope["state"].get("monoq_viewer"))
    return page(request, "schedule_form.html", status=status, nav="schedules",
                title=f"Edit schedule {current.id}" if current else "New schedule",
                values=values, errors=errors, editing=editing, current=current,
                payload_visible=visible, priorities=PRIORITIES)


@post("/schedules/_new", opt={"ui": "admin"}, status_code=303, name="ui-schedule-create")
async def create(request: Request[Any, Any, Any]) -> Response[Any]:
    """Create a schedule from the form, or show the form again with its errors (422)."""
    return await _save(request, None)


async def _save(request: Request[Any, Any, Any], current: Schedule | None) -> Response[Any]:
    ui = ui_state(request)
    form = await request.form()
    values = {name: str(form.get(name) or "") for name in FORM_FIELDS}
    visible = current is None or ui.payloads_visible(request.scope["state"].get("monoq_viewer"))
    body, errors = form_body(values, current, ui, payload_visible=visible)
    schedule = None
    if not errors:
        try:
            schedule = client_of(request).build_schedule(body, base=current)
        except ValidationError as exc:
            errors[_form_field(exc.field)] = exc.message
        except HandlerNotFound as exc:
            errors["handler"] = str(exc).partition(": ")[2] or str(exc)
    if schedule is not None and current is None \
            and await client_of(request).backend.get_schedule(schedule.id) is not None:
        errors["id"] = f"a schedule named {schedule.id!r} exists already"
    if errors or schedule is None:
        return _form_page(request, ui, current, values, errors, status=422)
    await client_of(request).put_schedule(schedule)
    return back(ui, f"/schedules/{schedule.id}", "saved" if current else "created")


@get("/schedules/{sid:str}", opt={"ui": "read"}, name="ui-schedule")
async def detail(request: Request[Any, Any, Any], sid: FromPath[str]) -> Response[Any]:
    """One schedule with its last runs."""
    schedule = await client_of(request).get_schedule(schedule_id(sid))
    info = await client_of(request).schedule_status(schedule)
    runs = await client_of(request).schedule_runs(schedule.id, limit=RUNS_SHOWN)
    return page(request, "schedule.html", nav="schedules", title=f"Schedule {schedule.id}",
                schedule=schedule, info=info, runs=runs.jobs)


@get("/schedules/{sid:str}/edit", opt={"ui": "admin"}, name="ui-schedule-edit")
async def edit_form(request: Request[Any, Any, Any], sid: FromPath[str]) -> Response[Any]:
    """The form filled with a schedule's definition."""
    ui = ui_state(request)
    schedule = await client_of(request).get_schedule(schedule_id(sid))
    visible = ui.payloads_visible(request.scope["state"].get("monoq_viewer"))
    return _form_page(request, ui, schedule, form_values(schedule, ui, visible=visible), {})


@post("/schedules/{sid:str}/edit", opt={"ui": "admin"}, status_code=303,
      name="ui-schedule-save")
async def save(request: Request[Any, Any, Any], sid: FromPath[str]) -> Response[Any]:
    """Save the edited schedule (its fire history is kept), or show the errors (422)."""
    return await _save(request, await client_of(request).get_schedule(schedule_id(sid)))


@post("/schedules/{sid:str}/enable", opt={"ui": "admin"}, status_code=303,
      name="ui-schedule-enable")
async def enable(request: Request[Any, Any, Any], sid: FromPath[str]) -> Response[Any]:
    """Enable the schedule."""
    ui = ui_state(request)
    await client_of(request).set_schedule_enabled(schedule_id(sid), True)
    return back(ui, await _return_to(request, sid), "enabled")


@post("/schedules/{sid:str}/disable", opt={"ui": "admin"}, status_code=303,
      name="ui-schedule-disable")
async def disable(request: Request[Any, Any, Any], sid: FromPath[str]) -> Response[Any]:
    """Disable the schedule (it stops firing; its history stays)."""
    ui = ui_state(request)
    await client_of(request).set_schedule_enabled(schedule_id(sid), False)
    return back(ui, await _return_to(request, sid), "disabled")


@post("/schedules/{sid:str}/trigger", opt={"ui": "admin"}, status_code=303,
      name="ui-schedule-trigger")
async def trigger(request: Request[Any, Any, Any], sid: FromPath[str]) -> Response[Any]:
    """Enqueue one run now, outside the timetable; go to the new job."""
    ui = ui_state(request)
    job = await client_of(request).trigger_schedule(schedule_id(sid))
    return back(ui, f"/jobs/{job.id}", "triggered")


@get("/schedules/{sid:str}/delete", opt={"ui": "admin"}, name="ui-schedule-delete-confirm")
async def delete_confirm(request: Request[Any, Any, Any], sid: FromPath[str]) -> Response[Any]:
    """Ask before deleting."""
    schedule = await client_of(request).get_schedule(schedule_id(sid))
    return page(request, "schedule_delete.html", nav="schedules",
                title=f"Delete schedule {schedule.id}", schedule=schedule)


@post("/schedules/{sid:str}/delete", opt={"ui": "admin"}, status_code=303,
      name="ui-schedule-delete")
async def delete(request: Request[Any, Any, Any], sid: FromPath[str]) -> Response[Any]:
    """Delete the schedule; its runs stay until retention removes them."""
    ui = ui_state(request)
    await client_of(request).delete_schedule(schedule_id(sid))
    return back(ui, "/schedules", "deleted")


async def _return_to(request: Request[Any, Any, Any], sid: str) -> str:
    """Back to the schedule's page or to the list, whichever the form came from."""
    form = await request.form()
    return f"/schedules/{sid}" if form.get("back") == "detail" else "/schedules"


HANDLERS: Final = [schedules, new_form, create, detail, edit_form, save, enable, disable,
                   trigger, delete_confirm, delete]
