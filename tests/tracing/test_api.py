"""The API: a request's ``traceparent`` is the parent of the enqueue it makes."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import AsyncTestClient, TestClient
from opentelemetry.trace import SpanKind

from monoq.api import create_app
from monoq.backends.memory import MemoryBackend
from monoq.client import Client
from monoq.config import ApiConfig
from monoq.registry import Registry
from monoq.tracing import Tracing
from tests.tracing._support import PROVIDER, Spans

pytestmark = pytest.mark.anyio

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def app(tracing: bool = True) -> Any:
    client = Client(MemoryBackend(), tracing=Tracing() if tracing else None)
    return create_app(client, ApiConfig(), registry=Registry.discover())


def parent_of(span: Any) -> str:
    assert span.parent is not None
    return f"{span.parent.span_id:016x}"


def trace_of(span: Any) -> str:
    return f"{span.context.trace_id:032x}"


async def test_the_incoming_traceparent_parents_a_submit(spans: Spans) -> None:
    async with AsyncTestClient(app=app()) as http:
        response = await http.post("/api/v1/jobs", json={"handler": "echo", "queue": "mail"},
                                   headers={"traceparent": TRACEPARENT,
                                            "tracestate": "vendor=abc"})
    assert response.status_code == 201, response.text
    [send] = spans.named("send")
    assert send.kind is SpanKind.PRODUCER
    assert trace_of(send) == TRACE_ID
    assert parent_of(send) == PARENT_ID
    assert (send.attributes or {})["messaging.message.id"] == response.json()["id"]
    assert send.context is not None
    assert send.context.trace_state.get("vendor") == "abc"


async def test_the_stored_context_is_the_producer_spans(spans: Spans) -> None:
    backend = MemoryBackend()
    client = Client(backend, tracing=Tracing())
    async with AsyncTestClient(app=create_app(client, ApiConfig())) as http:
        response = await http.post("/api/v1/jobs", json={"handler": "echo"},
                                   headers={"traceparent": TRACEPARENT})
    [send] = spans.named("send")
    job = await client.get(response.json()["id"])
    assert send.context is not None
    assert job.trace_context == f"00-{TRACE_ID}-{send.context.span_id:016x}-01"


async def test_a_batch_and_the_compatibility_route_are_parented_too(spans: Spans) -> None:
    async with AsyncTestClient(app=app()) as http:
        batch = await http.post("/api/v1/jobs/batch",
                                json={"jobs": [{"handler": "echo"}, {"handler": "echo"}]},
                                headers={"traceparent": TRACEPARENT})
        compat = await http.post("/enqueue", content=b"a line",
                                 headers={"traceparent": TRACEPARENT,
                                          "content-type": "text/plain"})
    assert batch.status_code == 201, batch.text
    assert compat.status_code in (200, 201, 202), compat.text
    sends = spans.named("send")
    assert len(sends) == 3
    assert {trace_of(s) for s in sends} == {TRACE_ID}
    assert {parent_of(s) for s in sends} == {PARENT_ID}


async def test_without_a_header_or_with_a_bad_one_the_enqueue_is_a_root(spans: Spans) -> None:
    async with AsyncTestClient(app=app()) as http:
        await http.post("/api/v1/jobs", json={"handler": "echo"})
        await http.post("/api/v1/jobs", json={"handler": "echo"},
                        headers={"traceparent": "00-not-a-trace-context"})
    sends = spans.named("send")
    assert len(sends) == 2
    assert all(s.parent is None for s in sends)
    assert len({trace_of(s) for s in sends}) == 2


async def test_a_server_span_already_current_stays_the_parent(spans: Spans) -> None:
    """With an ASGI instrumentation, its server span (a child of the caller's) is current."""
    inner = app()
    tracer = PROVIDER.get_tracer("asgi-instrumentation")

    async def instrumented(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await inner(scope, receive, send)
            return
        with tracer.start_as_current_span("POST /api/v1/jobs", kind=SpanKind.SERVER):
            await inner(scope, receive, send)

    async with AsyncTestClient(app=instrumented) as http:
        await http.post("/api/v1/jobs", json={"handler": "echo"},
                        headers={"traceparent": TRACEPARENT})
    [server] = spans.kind(SpanKind.SERVER)
    [send] = spans.named("send")
    assert server.context is not None
    assert parent_of(send) == f"{server.context.span_id:016x}"


async def test_without_tracing_a_traceparent_makes_no_span(spans: Spans) -> None:
    async with AsyncTestClient(app=app(tracing=False)) as http:
        response = await http.post("/api/v1/jobs", json={"handler": "echo"},
                                   headers={"traceparent": TRACEPARENT})
    assert response.status_code == 201
    assert response.json().get("trace_context") is None
    assert spans.all() == []


def test_the_openapi_document_is_the_same_with_tracing() -> None:
    """The propagation headers are a transport convention: not documented parameters."""
    docs = []
    for tracing in (False, True):
        with TestClient(app(tracing=tracing)) as http:
            docs.append(http.get("/schema/openapi.json").json())
    assert docs[0] == docs[1]
    assert "traceparent" not in str(docs[1]).lower()
