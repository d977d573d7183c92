"""``create_app``: the litestar application of the api role.

Routes reach the backend only through the ``Client`` (a ``Provide`` dependency named ``client``;
``api`` is the per-app ``ApiState``). The supervisor owns the backend's lifetime, so the app has
no lifespan hooks of its own, and the CLI owns logging (``logging_config=None``).

Layout: ``/api/v1/...`` (routes.jobs, routes.queues, routes.dlq, workers and stats), and at the
root ``/healthz``, ``/readyz``, ``/metrics``, the compatibility routes and the OpenAPI document
with its browsable UI under ``/schema`` (``/schema/openapi.json``).
"""

from typing import Final

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.handlers.http_handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import Message, Scope
from prometheus_client import CollectorRegistry

from monoq.api.auth import ROUTE_SCOPES, authorize, route_scope
from monoq.api.metrics import ApiMetrics
from monoq.api.openapi import PROBLEM_SCHEMA
from monoq.api.problems import EXCEPTION_HANDLERS
from monoq.api.routes import compat, dlq, jobs, queues, schedules, system
from monoq.api.state import STATE_KEY, ApiState, RateLimiter
from monoq.api.tokens import TokenTable, load_tokens
from monoq.client import Client
from monoq.config import ApiConfig
from monoq.registry import Registry

API_PREFIX: Final = "/api/v1"
SCHEMA_PATH: Final = "/schema"


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
) -> Litestar:
    """The api role's litestar app over ``client``.

    ``registry``, when given and the client has none, lets the app refuse unknown handlers
    (422): routes then use a client with ``known_handlers_only``. ``metrics_registry`` is the
    Prometheus registry ``/metrics`` serves (a fresh one by default); the api's families and
    ``monoq.metrics``' worker families are registered in it. Reads ``api.tokens_file``
    now: a missing or malformed file is a ConfigError.
    """
    if registry is not None:
        client = Client(
            client.backend,
            registry=registry,
            defaults=client.defaults,
            clock=client.clock,
            known_handlers_only=True,
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
                   *system.V1_HANDLERS]
    root_handlers = [*system.ROOT_HANDLERS, *compat.HANDLERS]
    _check_scopes([*v1_handlers, *root_handlers])
    v1 = Router(
        path=API_PREFIX, route_handlers=v1_handlers, before_request=authorize, tags=["v1"]
    )
    root = Router(path="/", route_handlers=root_handlers, before_request=authorize)
    count = state.metrics.count_request

    async def count_request(message: Message, scope: Scope) -> None:
        if message["type"] == "http.response.start":
            route: str = scope.get("path_template") or "unmatched"
            count(str(scope.get("method", "?")), route, message["status"])

    def provide_client() -> Client:
        return client

    def provide_state() -> ApiState:
        return state

    openapi = OpenAPIConfig(
        title="monoq",
        version="1",
        description="Jobs, queues and the dead-letter queue of a monoq deployment.",
        path=SCHEMA_PATH,
        components=Components(
            schemas={"Problem": PROBLEM_SCHEMA},
            security_schemes={
                "bearer": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="A token from `monoq token create` (scopes: enqueue, read, admin).",
                )
            },
        ),
        security=[{"bearer": []}],
    )
    return Litestar(
        route_handlers=[v1, root],
        dependencies={
            "client": Provide(provide_client, sync_to_thread=False),
            "api": Provide(provide_state, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,
        before_send=[count_request],
        request_max_body_size=api_config.max_body_bytes,
        openapi_config=openapi,
        logging_config=None,
        state=State({STATE_KEY: state}),
        debug=False,
    )
