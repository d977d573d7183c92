"""RFC 9457 problem details: every error the API answers is ``application/problem+json``.

A body has ``type`` (``about:blank``: the status says it all), ``title`` (the status phrase),
``status``, ``detail`` (what went wrong with this request, never a traceback, a token or a
payload) and ``instance`` (the request path); validation problems add ``field``.

``Problem`` is the exception routes and guards raise for a status of their choosing; the
handlers below turn it, monoq's own errors and litestar's HTTP exceptions into responses.
Anything else is a bug: it is logged once with its traceback and answered 500 with no detail.
"""

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Final

from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.exceptions import ValidationException as LitestarValidationException
from litestar.types import ExceptionHandlersMap

from monoq.api.scoping import QueueForbidden
from monoq.errors import (
    BackendError,
    BackendUnavailable,
    Conflict,
    HandlerNotFound,
    JobNotFound,
    MonoqError,
    QueueFull,
    ScheduleNotFound,
    SerializationError,
    ValidationError,
)

logger = logging.getLogger(__name__)

PROBLEM_JSON: Final = "application/problem+json"
RETRY_AFTER_BACKEND: Final = "5"  # seconds a client should wait when the backend is down
RETRY_AFTER_FULL: Final = "5"  # seconds a client should wait when backpressure refused it


class Problem(Exception):
    """An HTTP error answer: raise it from a route, guard or helper."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})
        self.field = field


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_response(
    request: Request[Any, Any, Any] | None,
    status: int,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response[dict[str, Any]]:
    """A problem+json response for ``status``."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": _title(status),
        "status": status,
        "detail": detail,
    }
    if request is not None:
        body["instance"] = request.url.path
    if extra:
        body.update(extra)
    return Response(
        content=body, status_code=status, media_type=PROBLEM_JSON, headers=dict(headers or {})
    )


def handle_problem(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """``Problem`` -> its response."""
    assert isinstance(exc, Problem)  # noqa: S101 - registered for Problem only
    extra = {"field": exc.field} if exc.field is not None else None
    return problem_response(request, exc.status, exc.detail, headers=exc.headers, extra=extra)


def handle_monoq_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """monoq's errors -> 403 (a queue-limited token), 404, 409, 422 or 503."""
    if isinstance(exc, ValidationError):
        return problem_response(request, 422, str(exc), extra={"field": exc.field})
    if isinstance(exc, HandlerNotFound):
        return problem_response(request, 422, str(exc), extra={"field": "handler"})
    if isinstance(exc, SerializationError):
        return problem_response(request, 422, str(exc), extra={"field": "payload"})
    if isinstance(exc, JobNotFound | ScheduleNotFound):
        return problem_response(request, 404, str(exc))
    if isinstance(exc, QueueForbidden):
        return problem_response(request, 403, str(exc))
    if isinstance(exc, Conflict):
        return problem_response(request, 409, str(exc))
    if isinstance(exc, QueueFull):
        return problem_response(request, 429, str(exc), headers={"Retry-After": RETRY_AFTER_FULL},
                                extra={"queue": exc.queue, "depth": exc.depth,
                                       "limit": exc.limit})
    if isinstance(exc, BackendUnavailable):
        logger.warning("backend unavailable during %s %s", request.method, request.url.path)
        return problem_response(
            request,
            503,
            "the job store is unavailable; retry later",
            headers={"Retry-After": RETRY_AFTER_BACKEND},
        )
    if isinstance(exc, BackendError):
        logger.error("backend error during %s %s", request.method, request.url.path, exc_info=exc)
        return problem_response(request, 500, "the job store failed; see the server log")
    return handle_unexpected(request, exc)


def handle_http_exception(
    request: Request[Any, Any, Any], exc: Exception
) -> Response[dict[str, Any]]:
    """litestar's own exceptions (404 route, 405, 413, parameter validation) -> problem+json."""
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for HTTPException only
    status = exc.status_code
    if status >= 500:
        return handle_unexpected(request, exc)
    detail = exc.detail or _title(status)
    extra: dict[str, Any] = {}
    if isinstance(exc, LitestarValidationException) and isinstance(exc.extra, list):
        # litestar's parameter errors: [{"message": ..., "key": ..., "source": ...}]
        extra["errors"] = [
            {k: v for k, v in item.items() if k in ("message", "key", "source")}
            for item in exc.extra
            if isinstance(item, dict)
        ]
    if status == 413:
        detail = "the request body is larger than the server accepts"
    return problem_response(request, status, detail, headers=exc.headers, extra=extra)


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """A bug: log it once with its traceback, answer 500 without details."""
    logger.error(
        "unhandled %s during %s %s",
        type(exc).__name__,
        request.method,
        request.url.path,
        exc_info=exc,
    )
    return problem_response(request, 500, "internal error; see the server log")


EXCEPTION_HANDLERS: Final[ExceptionHandlersMap] = {
    Problem: handle_problem,
    MonoqError: handle_monoq_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
