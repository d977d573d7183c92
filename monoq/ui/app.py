"""``create_ui``: the dashboard, a litestar app of its own that the API mounts under /ui.

A separate app keeps the dashboard's machinery away from the JSON API: its CSRF middleware,
session cookies, HTML error pages, Jinja templates and security headers apply to dashboard
requests only, and the API's bearer-token routes are untouched.

Every response carries the security headers: a Content-Security-Policy that allows scripts,
styles, images and requests from this origin only (no inline script, no eval), forbids
framing (``frame-ancestors 'none'``) and form posts elsewhere; ``X-Content-Type-Options:
nosniff``; ``Referrer-Policy: same-origin``; and ``Cache-Control: no-store`` on pages (they
may show payloads). Static files are served with a long cache life, their URLs carrying a
hash of their content.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Final

import jinja2
from litestar import Litestar, Request, Response
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import CacheControlHeader, MutableScopeHeaders, State
from litestar.exceptions import HTTPException, PermissionDeniedException
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from litestar.types import Message, Scope

from monoq.api.scoping import QueueForbidden
from monoq.api.state import ApiState
from monoq.config import UiConfig
from monoq.errors import (
    BackendError,
    BackendUnavailable,
    Conflict,
    HandlerNotFound,
    JobNotFound,
    MonoqError,
    ScheduleNotFound,
    ValidationError,
)
from monoq.ui import auth, dead, jobs, pages, schedules
from monoq.ui.core import STATIC_DIR, TEMPLATE_DIR, UI_STATE_KEY, UiState, page
from monoq.ui.fmt import ago, dt, iso, num, span, utc
from monoq.ui.masking import Masker
from monoq.ui.session import CSRF_COOKIE, Sessions

logger = logging.getLogger(__name__)

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Final = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
STATIC_PREFIX: Final = "/static"


async def security_headers(message: Message, scope: Scope) -> None:
    """``before_send`` hook: the security headers on every dashboard response, and no caching
    of pages."""
    if message["type"] != "http.response.start":
        return
    headers = MutableScopeHeaders.from_message(message)
    for name, value in SECURITY_HEADERS:
        headers[name.decode()] = value.decode()
    if not str(scope.get("path", "")).startswith(STATIC_PREFIX + "/"):
        headers["cache-control"] = "no-store"


def _error_page(request: Request[Any, Any, Any], status: int, title: str, message: str
                ) -> Response[Any]:
    return page(request, "error.html", status=status, title=title, message=message)


def handle_http_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """litestar's exceptions (404, 405, 413, CSRF 403) as HTML pages."""
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for HTTPException only
    status = exc.status_code
    if status >= 500:
        return handle_unexpected(request, exc)
    if isinstance(exc, PermissionDeniedException) and "CSRF" in str(exc.detail):
        return _error_page(request, 403, "Form refused",
                           "This form was not sent by a page of this dashboard, or the page "
                           "was too old (the CSRF check failed). Reload the page and try "
                           "again.")
    if status == 404:
        return _error_page(request, 404, "Not found", "There is no such page.")
    if status == 413:
        return _error_page(request, 413, "Too large", "The form is larger than allowed.")
    return _error_page(request, status, "Refused", exc.detail or "The request was refused.")


def handle_monoq_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """monoq's errors as HTML pages: 403 (a queue-limited token), 404, 409, 422, 503."""
    if isinstance(exc, JobNotFound):
        return _error_page(request, 404, "No such job", f"{exc} (it may have been purged by "
                           "retention).")
    if isinstance(exc, ScheduleNotFound):
        return _error_page(request, 404, "No such schedule", str(exc) + ".")
    if isinstance(exc, QueueForbidden):
        return _error_page(request, 403, "Not your queue", str(exc) + ".")
    if isinstance(exc, Conflict):
        return _error_page(request, 409, "Not possible now", str(exc) + ".")
    if isinstance(exc, ValidationError | HandlerNotFound):
        return _error_page(request, 422, "Refused", str(exc) + ".")
    if isinstance(exc, BackendUnavailable):
        logger.warning("backend unavailable during dashboard %s %s", request.method,
                       request.url.path)
        return _error_page(request, 503, "Job store unavailable",
                           "The job store cannot be reached right now; this page retries "
                           "by itself.")
    if isinstance(exc, BackendError):
        logger.error("backend error during dashboard %s %s", request.method, request.url.path,
                     exc_info=exc)
        return _error_page(request, 500, "Job store error", "The job store failed; see the "
                           "server log.")
    return handle_unexpected(request, exc)


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """A bug: logged once with its traceback, answered 500 without details."""
    logger.error("unhandled %s during dashboard %s %s", type(exc).__name__, request.method,
                 request.url.path, exc_info=exc)
    return _error_page(request, 500, "Internal error", "Something went wrong; see the server "
                       "log.")


@functools.cache
def _templates() -> jinja2.Environment:
    """The dashboard's Jinja environment, shared by every dashboard app of the process (its
    compiled templates are cached there). Autoescaping is on for every template."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR), autoescape=True, trim_blocks=True,
        lstrip_blocks=True, auto_reload=False, undefined=jinja2.Undefined,
    )
    env.filters.update(utc=utc, iso=iso, span=span, num=num, dt=dt)
    env.globals.update(ago=ago)
    return env


def create_ui(api: ApiState, config: UiConfig, *, prefix: str = "/ui",
              host_check: bool = False) -> Litestar:
    """The dashboard app over the API's state (its client, tokens and rate limiter).

    ``prefix`` is where the API mounts it (links and cookies use it). ``host_check`` refuses
    non-loopback Host headers while no tokens are configured (the API passes True when it
    listens on loopback only).
    """
    sessions = Sessions(config.session_keys, config.session_seconds, api.tokens)
    ui = UiState(api=api, config=config, sessions=sessions, masker=Masker(config.secret_keys),
                 prefix=prefix, host_check=host_check)

    templates = TemplateConfig(instance=JinjaTemplateEngine.from_environment(_templates()))
    csrf = CSRFConfig(
        secret=sessions.csrf_secret, cookie_name=CSRF_COOKIE, cookie_path=prefix,
        cookie_httponly=True, cookie_samesite="strict", cookie_secure=config.cookie_secure,
        header_name="x-csrftoken",
    )
    static = create_static_files_router(
        path=STATIC_PREFIX, directories=[STATIC_DIR], opt={"ui": "public"},
        name="ui-static", cache_control=CacheControlHeader(max_age=86400, public=True),
        include_in_schema=False,
    )
    return Litestar(
        route_handlers=[*auth.HANDLERS, *pages.HANDLERS, *jobs.HANDLERS, *dead.HANDLERS,
                        *schedules.HANDLERS, static],
        before_request=auth.guard,
        before_send=[security_headers],
        csrf_config=csrf,
        template_config=templates,
        exception_handlers={
            MonoqError: handle_monoq_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
        request_max_body_size=api.config.max_body_bytes,
        state=State({UI_STATE_KEY: ui}),
        openapi_config=None,
        logging_config=None,
        debug=False,
    )
