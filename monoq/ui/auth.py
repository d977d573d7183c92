"""Who may see and do what in the dashboard: the guard, login and logout.

- Without tokens configured the dashboard is open: every visitor is an admin viewer. The API
  then listens on loopback only, and the dashboard also refuses requests whose Host header is
  not a loopback name (a web page cannot reach it through DNS rebinding).
- With tokens, a visitor without a valid session is sent to the login form (a GET), told to
  log in again (a POST: 401), or, for an htmx refresh, answered 401 with ``HX-Redirect`` so
  the page goes to the login form. The form takes a ``read`` or ``admin`` token; an
  ``enqueue`` token gets no dashboard (403).
- A ``read`` viewer sees every page without action buttons; each action route needs ``admin``
  and answers a read viewer 403.
- A token limited to some queues sees and acts on those queues only (``client_of`` hands its
  pages a ``monoq.api.scoping.ScopedClient``): anything about another queue is a 403 page, and
  lists and counts leave other queues out. An expired token cannot log in, and its sessions end
  when it expires.

CSRF is checked before any of this (litestar's CSRF middleware on the dashboard app), so a
forged POST is refused even by an open dashboard.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from typing import Any, Final

from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.response import Redirect

from monoq.core.audit import Actor, set_actor
from monoq.ui.core import VIEWER_KEY, UiState, page, ui_state, viewer_of
from monoq.ui.session import OPEN_VIEWER, SESSION_COOKIE, Viewer, ViewerScope

logger = logging.getLogger(__name__)

UI_SCOPES: Final = frozenset({"public", "session", "read", "admin"})


def host_is_loopback(host_header: str) -> bool:
    """True when a Host header names this machine: localhost, 127.0.0.0/8 or [::1]."""
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host in ("localhost", "localhost.") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def secure_cookies(ui: UiState, request: Request[Any, Any, Any]) -> bool:
    """Whether cookies get the Secure flag: configured, or the request came over HTTPS."""
    return ui.config.cookie_secure or request.url.scheme == "https"


def safe_next(ui: UiState, target: str | None) -> str:
    """A dashboard path to go to after login; anything else (another site) is the overview."""
    if (
        target
        and target.startswith(ui.prefix)
        and (len(target) == len(ui.prefix) or target[len(ui.prefix)] in "/?")
        and "//" not in target
        and "\\" not in target
        and all(ch.isprintable() and not ch.isspace() for ch in target)
    ):
        return target
    return ui.prefix + "/"


def _here(ui: UiState, request: Request[Any, Any, Any]) -> str:
    path = ui.prefix + (request.scope["path"].rstrip("/") or "/")
    query = request.scope.get("query_string", b"").decode("latin-1")
    return f"{path}?{query}" if query else path


async def guard(request: Request[Any, Any, Any]) -> Response[Any] | None:
    """The dashboard app's ``before_request`` hook: admit the viewer or answer for them."""
    ui = ui_state(request)
    required = request.route_handler.opt.get("ui")
    if required not in UI_SCOPES:  # fail closed on a route that forgot to declare it
        return page(request, "error.html", status=403, title="Forbidden",
                    message="This page declares no access rule.")
    if not ui.api.tokens.enabled:
        if ui.host_check and not host_is_loopback(request.headers.get("host", "")):
            return page(request, "error.html", status=403, title="Forbidden",
                        message="Without tokens the dashboard answers only on loopback "
                                "addresses (localhost, 127.0.0.1, [::1]).")
        request.scope.setdefault("state", {})[VIEWER_KEY] = OPEN_VIEWER
        set_actor(_actor(request, OPEN_VIEWER))
        return None
    viewer = ui.sessions.check(request.cookies.get(SESSION_COOKIE))
    if viewer is not None:
        request.scope.setdefault("state", {})[VIEWER_KEY] = viewer
    if required == "public":
        return None
    if viewer is None:
        login = ui.url("/login", next=_here(ui, request))
        if request.headers.get("hx-request"):
            return Response(content="", status_code=401, headers={"HX-Redirect": login})
        if request.method in ("GET", "HEAD"):
            return Redirect(path=login, status_code=303)
        return page(request, "error.html", status=401, title="Logged out",
                    message="Your session has ended. Log in again, then repeat the action.",
                    link=login)
    set_actor(_actor(request, viewer))
    if required == "admin" and not viewer.can_act and request.method not in ("GET", "HEAD"):
        async with ui.client.auditing("denied", target=ui.prefix + request.scope["path"]) \
                as note:
            note.outcome = "refused"
            note.detail.update(method=request.method, route=request.route_handler.handler_name,
                               reason="a read viewer may not act")
    if required == "admin" and not viewer.can_act:
        return page(request, "error.html", status=403, title="Forbidden",
                    message=f"Token {viewer.name!r} has scope {viewer.scope!r}: it may look at "
                            "the dashboard but not act. Actions need an admin token.")
    return None


def _actor(request: Request[Any, Any, Any], viewer: Viewer) -> Actor:
    """The audit log's actor of a dashboard request: the viewer's token name (``anonymous``
    on an open dashboard), source ``ui``, the client's address."""
    client = request.client
    return Actor(viewer.name or "anonymous", "ui", client.host if client else None)


@get("/login", opt={"ui": "public"}, name="ui-login-form")
async def login_form(request: Request[Any, Any, Any]) -> Response[Any]:
    """The login form (an open dashboard or a logged-in viewer goes straight on to ``next``)."""
    ui = ui_state(request)
    viewer = viewer_of(request)
    target = request.query_params.get("next")
    if viewer is not None:
        return Redirect(path=safe_next(ui, target), status_code=303)
    return page(request, "login.html", title="Log in", next=safe_next(ui, target), error="")


@post("/login", opt={"ui": "public"}, status_code=200, name="ui-login")
async def login(request: Request[Any, Any, Any]) -> Response[Any]:
    """Check the token; on success set the session cookie and go on to ``next``."""
    ui = ui_state(request)
    data = await request.form()
    target = safe_next(ui, data.get("next"))
    if not ui.api.tokens.enabled:
        return Redirect(path=target, status_code=303)
    client = request.client
    wait = ui.api.limiter.check(f"ui-login:{client.host if client else '?'}")
    if wait is not None:
        return page(request, "login.html", status=429, title="Log in", next=target,
                    error=f"Too many attempts; wait {max(1, math.ceil(wait))} s.")
    token = (data.get("token") or "").strip()
    entry = ui.api.tokens.lookup(token) if token else None
    if entry is None:
        logger.info("dashboard login refused: unknown token")
        return page(request, "login.html", status=401, title="Log in", next=target,
                    error="This token is not valid.")
    if entry.expired():
        logger.info("dashboard login refused: token %r has expired", entry.name)
        return page(request, "login.html", status=401, title="Log in", next=target,
                    error="This token has expired.")
    if entry.scope not in ("read", "admin"):
        logger.info("dashboard login refused for token %r of scope %s", entry.name, entry.scope)
        return page(request, "error.html", status=403, title="No dashboard for this token",
                    message=f"Token {entry.name!r} has scope {entry.scope!r}, which may only "
                            "submit jobs. The dashboard needs a read or admin token.")
    scope: ViewerScope = "admin" if entry.scope == "admin" else "read"
    value, viewer = ui.sessions.issue(
        entry.name, scope, queues=entry.queues,
        token_expires=None if entry.expires is None else entry.expires.timestamp())
    logger.info("dashboard login: token %r (%s)", entry.name, scope)
    lifetime = int(ui.config.session_seconds)
    if viewer.expires is not None:
        lifetime = max(0, min(lifetime, int(viewer.expires - ui.sessions.clock())))
    cookie = Cookie(
        key=SESSION_COOKIE, value=value, path=ui.prefix, httponly=True, samesite="strict",
        secure=secure_cookies(ui, request), max_age=lifetime,
    )
    request.scope.setdefault("state", {})[VIEWER_KEY] = viewer
    return Redirect(path=target, status_code=303, cookies=[cookie])


@post("/logout", opt={"ui": "session"}, status_code=200, name="ui-logout")
async def logout(request: Request[Any, Any, Any]) -> Response[Any]:
    """End the session: it is refused from now on, and the browser drops the cookie."""
    ui = ui_state(request)
    viewer = viewer_of(request)
    if isinstance(viewer, Viewer) and not viewer.open:
        ui.sessions.revoke(viewer)
        logger.info("dashboard logout: token %r", viewer.name)
    gone = Cookie(key=SESSION_COOKIE, value="", path=ui.prefix, httponly=True,
                  samesite="strict", secure=secure_cookies(ui, request), max_age=0,
                  expires=0)
    target = ui.url("/login", notice="logged_out") if ui.api.tokens.enabled else ui.prefix + "/"
    return Redirect(path=target, status_code=303, cookies=[gone])


HANDLERS: Final = [login_form, login, logout]
