"""Fixtures for the api tests: apps over a MemoryBackend, with and without tokens."""

from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from monoq.api import create_app
from monoq.backends.memory import MemoryBackend
from monoq.client import Client
from monoq.config import ApiConfig
from monoq.registry import Registry
from tests.api._support import API_TOKENS, AppFactory


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """monoq is an asyncio program: no trio run."""
    return "asyncio"


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
    """``make_app(tokens=False, registry=None, **api_config_fields)`` -> a Litestar app."""

    def make(*, tokens: bool = False, registry: Registry | None = None, **fields: Any) -> Litestar:
        config = ApiConfig(tokens=tuple(API_TOKENS) if tokens else (), **fields)
        return create_app(client, config, registry=registry)

    return make


@pytest.fixture
async def http(make_app: AppFactory) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """A test client for an app without tokens (auth off)."""
    async with AsyncTestClient(app=make_app()) as tc:
        yield tc


@pytest.fixture
async def secured(make_app: AppFactory) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """A test client for an app with a token of each scope."""
    async with AsyncTestClient(app=make_app(tokens=True)) as tc:
        yield tc
