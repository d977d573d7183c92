"""Integration tests run on asyncio, the loop every backend driver and uvicorn need."""

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
