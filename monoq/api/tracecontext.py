"""The API's incoming trace context: a request's ``traceparent`` parents the enqueue it makes.

Installed by ``create_app`` only when tracing is on (``Client.tracing``). For each HTTP request
it reads the propagation headers (``traceparent`` and ``tracestate``, or whatever
``OTEL_PROPAGATORS`` names) with OpenTelemetry's configured propagator and makes that context
current while the request is handled, so the producer span of a submit is a child of the
caller's span. When a span is already current (an ASGI instrumentation made the request's
server span, itself a child of the caller's), that span is left as the parent. The headers are
not part of the OpenAPI document: they are an optional, transport-level convention, like
``X-Request-Id``.
"""

from __future__ import annotations

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send


def trace_context_middleware(app: ASGIApp) -> ASGIApp:
    """Wrap ``app``: HTTP requests run in the context their propagation headers carry."""
    from opentelemetry import context, propagate, trace

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or trace.get_current_span().get_span_context().is_valid:
            await app(scope, receive, send)
            return
        carrier: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            carrier[name] = f"{carrier[name]},{value}" if name in carrier else value
        extracted = propagate.extract(carrier)
        if not trace.get_current_span(extracted).get_span_context().is_valid:
            await app(scope, receive, send)
            return
        token = context.attach(extracted)
        try:
            await app(scope, receive, send)
        finally:
            context.detach(token)

    return middleware
