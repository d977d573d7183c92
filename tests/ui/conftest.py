"""Fixtures for the dashboard's HTTP-level tests: apps over a MemoryBackend."""

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from monoq.api import create_app
from monoq.backends.memory import MemoryBackend
from monoq.client import Client
from monoq.config import ApiConfig, UiConfig
from tests.ui._support import API_TOKENS

AppFactory = Callable[..., Litestar]


@pytest.fixture
def backend() -> MemoryBackend:
    """A fresh in-memory backend."""
    return MemoryBackend()


@pytest.fixture
def client(backend: MemoryBackend) -> Client:
    """A client over the fixture backend."""
    return Client(backend)


@pytest.fixture
def make_app(client: Client) -> AppFactory:
    """``make_app(tokens=True, api=None, **ui_fields)`` -> the API app with its dashboard."""

    def make(*, tokens: bool = True, api: dict[str, Any] | None = None, **ui: Any) -> Litestar:
        api_config = ApiConfig(tokens=tuple(API_TOKENS) if tokens else (), **(api or {}))
        return create_app(client, api_config, ui_config=UiConfig(**ui))

    return make


@pytest.fixture
async def secured(make_app: AppFactory) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """A test client of a dashboard with a token of each scope, not logged in."""
    async with AsyncTestClient(app=make_app(), base_url="http://127.0.0.1:8080") as tc:
        yield tc


@pytest.fixture
async def open_ui(make_app: AppFactory) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """A test client of a dashboard without tokens (open, on loopback)."""
    async with AsyncTestClient(app=make_app(tokens=False), base_url="http://127.0.0.1:8080") as tc:
        yield tc
