"""Fixtures for the tracing tests: the SDK's in-memory exporter (``_support``)."""

from __future__ import annotations

import pytest
from opentelemetry import trace

from tests.tracing._support import EXPORTER, PROVIDER, Spans


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """monoq is an asyncio program: no trio run."""
    return "asyncio"


@pytest.fixture
def spans() -> Spans:
    """The session's exporter, emptied."""
    assert trace.get_tracer_provider() is PROVIDER, "another test replaced the tracer provider"
    EXPORTER.clear()
    return Spans(EXPORTER)
