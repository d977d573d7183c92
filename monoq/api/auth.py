"""Authorisation: every route declares the scope it needs in ``opt["scope"]``.

``public`` routes (health, readiness, the OpenAPI document) and litestar's OPTIONS answers need
nothing. Other routes pass the ``authorize`` hook (``require_scope`` as a guard), which runs
before the body is read:

- with tokens configured (sent as ``Authorization: Bearer <token>`` or ``X-API-Key: <token>``),
  a missing or unknown token is 401, so is an expired one (its answer says it expired: only
  the holder of the token can learn that), and a token whose scope does not cover the route is
  403; a token limited to some queues reaches the routes through a ``ScopedClient``
  (``monoq.api.scoping``), which answers 403 for anything about another queue;
- with no tokens configured, auth is off (the role then refuses a non-loopback bind);
- then the per-client rate limit: the key is the token's name, or the client address when auth
  is off; over the limit is 429 with ``Retry-After``.

Every guarded request also names its actor for the audit log (``monoq.core.audit``): the
token's name (``anonymous`` with auth off), source ``api`` and the client's address. An action
(not a GET) refused for its token's scope on an ``admin`` route is recorded as a ``denied``
entry (an auditor wants the attempts too); unknown and expired tokens are not (anyone could send them,
so they would let anyone fill the log), only logged.

Nothing here logs a token: only a token's configured name ever reaches a log line.
"""

import logging
import math
from typing import Any, Final

from litestar import Response
from litestar.connection import ASGIConnection, Request
from litestar.enums import MediaType
from litestar.handlers.base import BaseRouteHandler

from monoq.api.body import header as raw_header
from monoq.api.problems import Problem
from monoq.api.scoping import QUEUES_KEY
from monoq.api.state import api_state
from monoq.api.tokens import ACCEPTED_SCOPES
from monoq.core.audit import Actor, set_actor

logger = logging.getLogger(__name__)

ROUTE_SCOPES: Final = frozenset({"public", "enqueue", "read", "admin"})
_OPTIONS: Final = frozenset({"OPTIONS"})
_BEARER: Final = {"WWW-Authenticate": 'Bearer realm="monoq"'}
_INVALID: Final = {"WWW-Authenticate": 'Bearer realm="monoq", error="invalid_token"'}
_EXPIRED: Final = {"WWW-Authenticate": 'Bearer realm="monoq", error="invalid_token", '
                                       'error_description="the token expired"'}


_READS: Final = frozenset({"GET", "HEAD"})  # refused reads are not recorded, only actions
ACTOR_KEY: Final = "monoq_actor"  # request state: the audit log's actor of the request


def _address(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The client's address as the server saw it (no proxy header is trusted)."""
    client = connection.client
    return client.host if client else None


def route_scope(handler: BaseRouteHandler) -> str | None:
    """The scope a route handler declares, or None if it declares none."""
    scope = handler.opt.get("scope")
    return scope if isinstance(scope, str) else None


def _bearer(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The token of ``Authorization: Bearer <token>``, else of ``X-API-Key: <token>`` (the
    header that API-key clients, such as the cron job system's, send)."""
    header = raw_header(connection, b"authorization")
    if header is None:
        key = raw_header(connection, b"x-api-key")
        return key.strip() or None if key is not None else None
    kind, _, value = header.strip().partition(" ")
    if kind.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


async def authorize(request: Request[Any, Any, Any]) -> Response[None] | None:
    """The ``before_request`` hook of every guarded route: ``require_scope`` for its handler.

    A hook rather than a litestar guard: a guard is handed a copy of the route handler on every
    request, which costs more than the check itself. Like a guard it runs before the body is
    read and its ``Problem`` reaches the app's exception handlers.

    The OPTIONS handler litestar adds to every path declares no scope: it is answered here,
    publicly (it tells which methods exist; a CORS preflight asks it without a token), with the
    path's methods. litestar 2's own answer lists only the methods of the first handler
    registered on the path (litestar issue 4169).
    """
    handler = request.scope["route_handler"]
    if request.scope["method"] == "OPTIONS" and route_scope(handler) is None \
            and frozenset(getattr(handler, "http_methods", ())) == _OPTIONS:
        allowed = api_state(request).allowed_methods.get(next(iter(handler.paths)), "OPTIONS")
        return Response(content=None, status_code=204, headers={"Allow": allowed},
                        media_type=MediaType.TEXT)
    try:
        check_scope(request, handler)
    except Problem as refused:
        actor = request.scope.get("state", {}).get(ACTOR_KEY)
        if refused.status == 403 and route_scope(handler) == "admin" and actor is not None \
                and request.method not in _READS:
            await _record_denied(request, handler, actor)
        raise
    return None


async def _record_denied(request: Request[Any, Any, Any], handler: BaseRouteHandler,
                         actor: Actor) -> None:
    """A ``denied`` audit entry for an admin request refused for its token's scope."""
    client = api_state(request).client
    target = request.url.path
    async with client.auditing("denied", target=target, actor=actor) as note:
        note.outcome = "refused"
        note.detail.update(method=request.method, route=handler.handler_name,
                           reason="the token's scope does not allow this route")


def require_scope(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Guard form of ``check_scope`` (for routers that use guards)."""
    check_scope(connection, handler)


def check_scope(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Authenticate, authorise against the route's scope, then rate-limit."""
    required = route_scope(handler)
    if required == "public":
        return
    if (
        required is None or required not in ACCEPTED_SCOPES
    ):  # fail closed on a route that forgot its scope
        raise Problem(403, "this route declares no scope")
    state = api_state(connection)
    key: str
    if state.tokens.enabled:
        token = _bearer(connection)
        if token is None:
            raise Problem(401, "a bearer token is required", headers=_BEARER)
        entry = state.tokens.lookup(token)
        if entry is None:
            logger.info("rejected an unknown bearer token for %s", connection.url.path)
            raise Problem(401, "the bearer token is not valid", headers=_INVALID)
        if entry.expired():
            logger.info("rejected the expired token %r for %s", entry.name, connection.url.path)
            raise Problem(401, "the bearer token has expired", headers=_EXPIRED)
        actor = Actor(entry.name, "api", _address(connection))
        connection.scope.setdefault("state", {})[ACTOR_KEY] = actor
        if entry.scope not in ACCEPTED_SCOPES[required]:
            raise Problem(
                403,
                f"token {entry.name!r} has scope {entry.scope!r}; this route needs {required!r}",
            )
        request_state = connection.scope.setdefault("state", {})
        request_state["monoq_token"] = entry.name
        if entry.queues is not None:
            request_state[QUEUES_KEY] = (entry.queues, entry.name)
        key = f"token:{entry.name}"
    else:
        actor = Actor("anonymous", "api", _address(connection))
        key = f"addr:{actor.address or '?'}"
    wait = state.limiter.check(key)
    if wait is not None:
        seconds = max(1, math.ceil(wait))
        raise Problem(
            429,
            f"rate limit of {state.config.rate_limit_per_minute} requests per minute exceeded",
            headers={"Retry-After": str(seconds)},
        )
    set_actor(actor)
