"""``create_app``: the litestar application of the api role.

Routes reach the backend only through the ``Client`` (a ``Provide`` dependency named ``client``;
``api`` is the per-app ``ApiState``). The supervisor owns the backend's lifetime, so the app has
no lifespan hooks of its own, and the CLI owns logging (``logging_config=None``).

Layout: ``/api/v1/...`` (routes.jobs, routes.queues, routes.dlq, workers and stats), and at the
root ``/healthz``, ``/readyz``, ``/metrics``, the compatibility routes and the OpenAPI document
with its browsable UI under ``/schema`` (``/schema/openapi.json``).

The web dashboard (``monoq.ui``, unless ``[ui] enabled = false``) is a litestar app of its own
mounted under ``/ui``, and ``/`` redirects there. Its sessions, CSRF checks, HTML errors and
security headers stay inside it; both are ASGI routes, outside the API's token scopes (the
dashboard checks its own sessions).
"""

import ipaddress
from typing import Any, Final

from litestar import Litestar, Request, Router, asgi
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import NotFoundException
from litestar.handlers.http_handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityRequirement, SecurityScheme
from litestar.response.base import ASGIResponse
from litestar.routes import HTTPRoute
from litestar.types import Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry

from monoq.api.api_metrics import ApiMetrics
from monoq.api.auth import ROUTE_SCOPES, authorize, route_scope
from monoq.api.openapi import ComponentSchemas, request_bodies
from monoq.api.problems import EXCEPTION_HANDLERS
from monoq.api.routes import audit, compat, dlq, jobs, queues, schedules, system
from monoq.api.scoping import request_client
from monoq.api.state import STATE_KEY, ApiState, RateLimiter
from monoq.api.tokens import TokenTable, load_tokens
from monoq.client import Client
from monoq.config import ApiConfig, UiConfig
from monoq.registry import Registry

API_PREFIX: Final = "/api/v1"
SCHEMA_PATH: Final = "/schema"
UI_PATH: Final = "/ui"
# Scope keys the API's router set for itself; the dashboard app routes the request afresh.
_ROUTER_KEYS: Final = ("route_handler", "path_template", "path_params", "state")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _ui_routes(state: ApiState, ui_config: UiConfig, api_config: ApiConfig) -> list[Any]:
    """The dashboard mounted under ``/ui`` and the ``/`` redirect to it (ASGI routes).

    The dashboard app is built on its first request: an API that nobody browses (and every
    test app) does not pay for it.
    """
    host_check = is_loopback(api_config.host) and not api_config.allow_public_bind
    built: list[Litestar] = []

    def dashboard() -> Litestar:
        if not built:  # no await in between: one app even under concurrent first requests
            from monoq.ui import create_ui

            built.append(create_ui(state, ui_config, prefix=UI_PATH, host_check=host_check))
        return built[0]

    @asgi(UI_PATH, is_mount=True, copy_scope=False, name="ui")
    async def ui_mount(scope: Scope, receive: Receive, send: Send) -> None:
        if not scope["path"].startswith("/"):  # litestar's mount matched a prefix: /uix
            raise NotFoundException()
        inner: dict[str, Any] = {k: v for k, v in scope.items() if k not in _ROUTER_KEYS}
        inner["state"] = {}
        scope["path_template"] = UI_PATH  # the request metrics count dashboard pages as /ui
        await dashboard()(inner, receive, send)  # type: ignore[arg-type]

    @asgi("/", copy_scope=True, name="ui-root")
    async def root_redirect(scope: Scope, receive: Receive, send: Send) -> None:
        redirect = ASGIResponse(status_code=302, headers={"location": f"{UI_PATH}/",
                                                           "cache-control": "no-store"})
        await redirect(scope, receive, send)

    return [ui_mount, root_redirect]


def _check_scopes(handlers: list[HTTPRouteHandler]) -> None:
    for handler in handlers:
        scope = route_scope(handler)
        if scope not in ROUTE_SCOPES:  # pragma: no cover - a programming error, caught by tests
            raise RuntimeError(f"route {handler.handler_name} declares no valid opt['scope']")


def create_app(
    client: Client,
    api_config: ApiConfig,
    *,
    registry: Registry | None = None,
    metrics_registry: CollectorRegistry | None = None,
    ui_config: UiConfig | None = None,
) -> Litestar:
    """The api role's litestar app over ``client``.

    ``registry``, when given and the client has none, lets the app refuse unknown handlers
    (422): routes then use a client with ``known_handlers_only``. ``metrics_registry`` is the
    Prometheus registry ``/metrics`` serves (a fresh one by default); the api's families and
    ``monoq.metrics``' worker families are registered in it. Reads ``api.tokens_file``
    now: a missing or malformed file is a ConfigError. ``ui_config`` configures the dashboard
    (``[ui]``; the defaults when None): mounted under ``/ui`` unless disabled.
    """
    if registry is not None:
        client = Client(
            client.backend,
            registry=registry,
            defaults=client.defaults,
            clock=client.clock,
            known_handlers_only=True,
            tracing=client.tracing,
            limits=client.limits,
        )
    state = ApiState(
        client=client,
        config=api_config,
        registry=registry,
        tokens=TokenTable(load_tokens(api_config.tokens, api_config.tokens_file or None)),
        limiter=RateLimiter(api_config.rate_limit_per_minute),
        metrics=ApiMetrics(metrics_registry),
    )
    v1_handlers = [*jobs.HANDLERS, *queues.HANDLERS, *dlq.HANDLERS, *schedules.HANDLERS,
                   *audit.HANDLERS, *system.V1_HANDLERS]
    root_handlers = [*system.ROOT_HANDLERS, *compat.HANDLERS]
    _check_scopes([*v1_handlers, *root_handlers])
    v1 = Router(
        path=API_PREFIX, route_handlers=v1_handlers, before_request=authorize, tags=["v1"]
    )
    root = Router(path="/", route_handlers=root_handlers, before_request=authorize)
    ui_config = UiConfig() if ui_config is None else ui_config
    ui_routes = _ui_routes(state, ui_config, api_config) if ui_config.enabled else []
    count = state.metrics.count_request

    async def count_request(message: Message, scope: Scope) -> None:
        if message["type"] == "http.response.start":
            route: str = scope.get("path_template") or "unmatched"
            count(str(scope.get("method", "?")), route, message["status"])

    def provide_client(request: Request[Any, Any, Any]) -> Client:
        return request_client(request, state)

    def provide_state() -> ApiState:
        return state

    known = client.registry if client.known_handlers_only else None
    # Without tokens, auth is off: nothing is required (the role then binds to loopback only).
    security: list[SecurityRequirement] | None = (
        [{"bearer": []}, {"apiKey": []}] if state.tokens.enabled else None
    )
    openapi = OpenAPIConfig(
        title="monoq",
        version="1",
        description="Jobs, queues and the dead-letter queue of a monoq deployment. Every error "
        "is `application/problem+json` (the `Problem` schema).",
        path=SCHEMA_PATH,
        components=Components(
            request_bodies=request_bodies(
                None if known is None else [spec.name for spec in known]
            ),
            security_schemes={
                "bearer": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="A token from `monoq token create` (scopes: enqueue, read, admin).",
                ),
                "apiKey": SecurityScheme(
                    type="apiKey",
                    name="X-API-Key",
                    security_scheme_in="header",
                    description="The same tokens, for API-key clients.",
                ),
            },
        ),
        security=security,
        # operationIds are the handler names (get_job, cancel_job...): what the links name
        operation_id_creator=lambda handler, _method, _path: handler.handler_name,
    )
    middleware: list[Any] = []
    if client.tracing is not None:  # a request's traceparent parents its enqueues
        from monoq.api.tracecontext import trace_context_middleware

        middleware.append(trace_context_middleware)
    app = Litestar(
        route_handlers=[v1, root, *ui_routes],
        middleware=middleware,
        dependencies={
            "client": Provide(provide_client, sync_to_thread=False),
            "api": Provide(provide_state, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,
        before_send=[count_request],
        request_max_body_size=api_config.max_body_bytes,
        openapi_config=openapi,
        plugins=[ComponentSchemas()],
        logging_config=None,
        state=State({STATE_KEY: state}),
        debug=False,
    )
    state.allowed_methods.update(
        (route.path, ", ".join(sorted(route.methods)))
        for route in app.routes
        if isinstance(route, HTTPRoute)
    )
    return app
