"""ApiRole through a real uvicorn on a free loopback port, inside an anyio task group."""

from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

from monoq.api import ApiRole
from monoq.api.role import bind_socket
from monoq.client import Client
from monoq.config import ApiConfig
from monoq.core.models import JobQuery
from tests.ports import free_port


async def test_serves_until_stopped(client: Client) -> None:
    role = ApiRole(client, ApiConfig(port=free_port(), max_body_bytes=4096))
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(role.run)
            assert role.address is not None
            base = f"http://127.0.0.1:{role.port}"
            async with httpx.AsyncClient(base_url=base) as http:
                created = await http.post("/api/v1/jobs", json={"handler": "echo", "payload": 7})
                assert created.status_code == 201
                job_id = created.json()["id"]
                got = await http.get(f"/api/v1/jobs/{job_id}")
                assert (got.status_code, got.json()["payload"]) == (200, 7)

                async def chunks() -> AsyncIterator[bytes]:
                    for _ in range(8):
                        yield b"x" * 1024

                chunked = await http.post(
                    "/api/v1/jobs",
                    content=chunks(),
                    headers={"Content-Type": "application/json"},
                )
                assert chunked.status_code == 413
                assert chunked.headers["content-type"] == "application/problem+json"
            role.stop()
    assert (await client.get(job_id)).payload == 7
    assert len((await client.list_jobs(JobQuery())).jobs) == 1
    assert role.port is not None  # the address stays known after the run


async def test_stop_before_run_returns_promptly(client: Client) -> None:
    role = ApiRole(client, ApiConfig(port=free_port()))
    role.stop()
    role.stop()  # idempotent
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(role.run)


async def test_busy_port_raises_oserror(client: Client) -> None:
    with bind_socket("127.0.0.1", 0) as taken:
        taken.listen()
        port = taken.getsockname()[1]
        role = ApiRole(client, ApiConfig(port=port))
        with pytest.raises(OSError, match=f"api: cannot listen on 127.0.0.1:{port}: .*in use"):
            await role.run()
