"""What fuzzing the OpenAPI document found, one plain case each: where the document and the API
disagreed (the document was fixed) and where the API answered 500 or took input by a rule of
its own (the API was fixed)."""

from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient, TestClient

from monoq.registry import Registry
from tests.api._support import AppFactory

Http = AsyncTestClient[Litestar]


def _doc(app: Litestar) -> dict[str, Any]:
    with TestClient(app) as http:
        doc: dict[str, Any] = http.get("/schema/openapi.json").json()
    return doc


@pytest.fixture
def registered(make_app: AppFactory) -> Litestar:
    """An app that refuses unknown handlers, as ``monoq run`` builds it."""
    return make_app(registry=Registry.discover())


# --- the API ---------------------------------------------------------------------------------


async def test_options_lists_every_method_of_the_path_without_a_token(
    make_app: AppFactory,
) -> None:
    """It was 403 ("this route declares no scope"), and litestar listed only the methods of
    the first handler registered on the path."""
    async with AsyncTestClient(make_app(tokens=True)) as http:
        for path, allow in (("/api/v1/jobs", "GET, OPTIONS, POST"),
                            ("/api/v1/schedules", "GET, OPTIONS, POST"),
                            ("/api/v1/schedules/s", "DELETE, GET, OPTIONS, PATCH"),
                            ("/api/v1/dead-letter", "DELETE, GET, OPTIONS")):
            response = await http.options(path)
            assert (response.status_code, response.headers["allow"]) == (204, allow), path
