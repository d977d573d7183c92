"""What every dashboard route shares: the dashboard's state, the viewer, page rendering.

Routes declare who may use them in ``opt["ui"]``: ``public`` (login, static files),
``session`` (any logged-in viewer: logout), ``read`` (every page) or ``admin`` (every
action). ``monoq.ui.auth.guard`` enforces it before a handler runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import attrs
from litestar import Request
from litestar.response import Redirect, Template

from monoq.api.scoping import ScopedClient
from monoq.api.state import ApiState
from monoq.client import Client
from monoq.config import UiConfig
from monoq.ui.masking import Masker
from monoq.ui.session import Sessions, Viewer

UI_STATE_KEY: Final = "monoq_ui"
VIEWER_KEY: Final = "monoq_viewer"
CLIENT_KEY: Final = "monoq_client"
STATIC_DIR: Final = Path(__file__).parent / "static"
TEMPLATE_DIR: Final = Path(__file__).parent / "templates"
POLL_SECONDS: Final = 2

# Short messages shown after an action redirects back (?notice=<code>&n=<count>): fixed texts,
# so nothing from the query string is ever shown as it came.
NOTICES: Final[Mapping[str, str]] = {
    "paused": "Queue paused: workers stop claiming from it.",
    "resumed": "Queue resumed.",
    "cancelled": "Job cancelled.",
    "cancel_requested": "Cancel requested: the worker stops the job at its next heartbeat.",
    "retried": "Job put back in its queue with a fresh retry budget.",
    "copied": "A new job with the same handler and payload was enqueued.",
    "requeued": "{n} dead job(s) requeued.",
    "purged": "{n} dead job(s) purged.",
    "nothing_selected": "Select at least one job first.",
    "enabled": "Schedule enabled.",
    "disabled": "Schedule disabled.",
    "triggered": "Schedule triggered: one run was enqueued now.",
    "created": "Schedule created.",
    "saved": "Schedule saved.",
    "deleted": "Schedule deleted.",
    "logged_out": "You are logged out.",
}


@attrs.define
class UiState:
    """The dashboard's settings and helpers; one per dashboard app."""

    api: ApiState
    config: UiConfig
    sessions: Sessions
    masker: Masker
    prefix: str
    host_check: bool = False  # open dashboard on loopback: refuse non-loopback Host headers
    assets: dict[str, str] = attrs.field(factory=dict)  # static file -> version for URLs

    @property
    def client(self) -> Client:
        """The API's client: the dashboard's only way to the backend."""
        return self.api.client

    def static_url(self, name: str) -> str:
        """The URL of a static file, with a version that changes with its content."""
        version = self.assets.get(name)
        if version is None:
            path = STATIC_DIR / name
            version = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
            self.assets[name] = version
        return f"{self.prefix}/static/{name}?v={version}"

    def url(self, path: str = "", **query: Any) -> str:
        """``prefix + path`` with the query parameters that are not None or empty."""
        params = {k: v for k, v in query.items() if v is not None and v != ""}
        url = self.prefix + path
        return f"{url}?{urlencode(params, doseq=True)}" if params else url

    def payloads_visible(self, viewer: Viewer | None) -> bool:
        """Whether ``viewer`` may see payloads and results (``ui.show_payloads``)."""
        mode = self.config.show_payloads
        if mode == "never" or viewer is None:
            return False
        return mode == "read" or viewer.can_act


def ui_state(request: Request[Any, Any, Any]) -> UiState:
    """The dashboard app's UiState."""
    state = request.app.state[UI_STATE_KEY]
    assert isinstance(state, UiState)  # noqa: S101 - create_ui puts it there
    return state


def viewer_of(request: Request[Any, Any, Any]) -> Viewer | None:
    """The viewer the guard admitted, None before the guard ran (early errors)."""
    viewer = request.scope.get("state", {}).get(VIEWER_KEY)
    return viewer if isinstance(viewer, Viewer) else None


def client_of(request: Request[Any, Any, Any]) -> Client:
    """The client of this request's viewer: the API's client, or, for a token limited to some
    queues, a ``ScopedClient`` over it (which refuses other queues with ``QueueForbidden``)."""
    ui = ui_state(request)
    viewer = viewer_of(request)
    if viewer is None or viewer.queues is None:
        return ui.client
    state = request.scope.setdefault("state", {})
    found = state.get(CLIENT_KEY)
    if not isinstance(found, ScopedClient):
        found = state[CLIENT_KEY] = ScopedClient(ui.client, viewer.queues,
                                                 name=viewer.name or "")
    return found


def page(
    request: Request[Any, Any, Any],
    template: str,
    *,
    status: int = 200,
    nav: str = "",
    title: str = "",
    **context: Any,
) -> Template:
    """A full HTML page from ``template`` with the shared context (viewer, urls, notice)."""
    ui = ui_state(request)
    viewer = viewer_of(request)
    here = ui.prefix + (request.scope["path"].rstrip("/") or "/")
    query = request.scope.get("query_string", b"").decode("latin-1")
    notice_code = request.query_params.get("notice", "")
    notice = NOTICES.get(notice_code, "")
    if "{n}" in notice:
        count = request.query_params.get("n", "")
        notice = notice.format(n=count if count.isdigit() else "Some")
    return Template(
        template_name=template,
        status_code=status,
        context={
            "ui": ui,
            "viewer": viewer,
            "can_act": viewer is not None and viewer.can_act,
            "nav": nav,
            "title": title,
            "notice": notice,
            "now": ui.client.clock(),
            "poll_seconds": POLL_SECONDS,
            "here": here,
            "poll_url": f"{here}?{query}" if query else here,
            **context,
        },
    )


def back(ui: UiState, path: str, notice: str, count: int | None = None,
         query: Mapping[str, str] | None = None) -> Redirect:
    """303 to a dashboard page with a notice (and ``query``, e.g. the filters in use): the end
    of every successful action."""
    return Redirect(path=ui.url(path, notice=notice, n=count, **(query or {})), status_code=303)
