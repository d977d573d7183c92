"""``python -m monoq.api.httpbench``: the HTTP API's throughput and latency on loopback.

Starts two child processes on free loopback ports:

- the real api role: ``monoq run --roles api --backend URL`` (``MONOQ_API_PORT``);
- a bare litestar app whose one endpoint, ``POST /api/v1/jobs``, reads the body and answers 201
  with a fixed job dict (the real API's answer to the warm-up submit, so the same size), served
  by the same uvicorn settings as ``ApiRole`` (``monoq.api.role.serve_app``).

Then measures, in this process:

- single submits: ``POST /api/v1/jobs``, ``--concurrency`` (64) keep-alive connections, each
  sending its next request as soon as the previous answer is read: requests/s, p50 and p99;
- the same against the bare endpoint, and the ratio real / bare;
- batch submits: ``POST /api/v1/jobs/batch`` with 1000 jobs per request: jobs/s.

The load generator is one asyncio process. ``--client raw`` (the default) speaks HTTP/1.1 over
asyncio streams with a fixed request and a minimal response parser, so the client costs little
CPU next to the server; ``--client httpx`` uses ``httpx.AsyncClient`` with a 64-connection pool
(about three times the client CPU per request). The client's own CPU share is printed: near 100%
means the client, not the server, was the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from pathlib import Path
from typing import Any, Final

from litestar import Litestar, Request, Response, post

from monoq.api.role import serve_app
from monoq.core.loop import run as run_loop

JOB_BODY: Final = b'{"handler":"echo","payload":{"n":1}}'
BATCH_SIZE: Final = 1000
STARTUP_TIMEOUT: Final = 30.0


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- the bare endpoint -------------------------------------------------------------------------


def serve_bare(port: int, job_file: str) -> None:
    """Serve the bare app on 127.0.0.1:``port`` until killed (the ``--serve-bare`` child)."""
    job: dict[str, Any] = json.loads(Path(job_file).read_text())

    @post("/api/v1/jobs", status_code=201)
    async def submit(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        await request.body()
        return Response(content=job, status_code=201, media_type="application/json")

    app = Litestar(route_handlers=[submit], logging_config=None, openapi_config=None)
    run_loop(serve_app, app, "127.0.0.1", port, loop=os.environ.get("MONOQ_MONOQ_LOOP", "auto"))


# -- the load generator ------------------------------------------------------------------------


class Result:
    """Latencies (seconds) and the wall time of one measured run."""

    def __init__(self, latencies: list[float], wall: float, cpu: float, errors: int) -> None:
        self.latencies = latencies
        self.wall = wall
        self.cpu = cpu
        self.errors = errors

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.wall

    def p(self, q: float) -> float:
        return _pct(self.latencies, q) * 1000


Sender = Callable[[], Awaitable[int]]


async def _raw_connection(port: int, path: str, body: bytes) -> tuple[Sender, Callable[[], None]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    async def send() -> int:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        return status

    return send, writer.close


async def _httpx_senders(
    port: int, path: str, body: bytes, n: int
) -> tuple[list[Sender], Callable[[], Awaitable[None]]]:
    import httpx

    client = httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}",
        limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
        timeout=60,
    )
    headers = {"Content-Type": "application/json"}

    async def send() -> int:
        response = await client.post(path, content=body, headers=headers)
        return response.status_code

    return [send] * n, client.aclose


async def load(
    port: int, path: str, body: bytes, *, requests: int, concurrency: int, kind: str
) -> Result:
    """``requests`` POSTs of ``body`` to ``path`` over ``concurrency`` keep-alive connections."""
    closers: list[Callable[[], Any]] = []
    if kind == "httpx":
        senders, aclose = await _httpx_senders(port, path, body, concurrency)
        closers.append(aclose)
    else:
        senders = []
        for _ in range(concurrency):
            send, close = await _raw_connection(port, path, body)
            senders.append(send)
            closers.append(close)
    for send in senders:  # one warm request per connection, not measured
        await send()
    latencies: list[float] = []
    errors = 0
    remaining = requests

    async def worker(send: Sender) -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            status = await send()
            latencies.append(time.perf_counter() - t0)
            if status >= 300:
                errors += 1

    cpu0, t0 = time.process_time(), time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for send in senders:
            tg.create_task(worker(send))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    for close in closers:
        result = close()
        if asyncio.iscoroutine(result):
            await result
    return Result(latencies, wall, cpu, errors)


# -- children ----------------------------------------------------------------------------------


def _wait_listening(port: int, child: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise SystemExit(f"{what} exited with {child.returncode} before listening")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on port {port} within {STARTUP_TIMEOUT:g} s")


def _stop(child: subprocess.Popen[bytes]) -> None:
    child.terminate()
    try:
        child.wait(timeout=15)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def start_api(url: str, port: int) -> subprocess.Popen[bytes]:
    """``monoq run --roles api --backend url`` on ``port``."""
    env = {**os.environ, "MONOQ_API_PORT": str(port), "MONOQ_MONOQ_LOG_LEVEL": "WARNING"}
    child = subprocess.Popen(
        [sys.executable, "-m", "monoq", "run", "--roles", "api", "--backend", url], env=env
    )
    _wait_listening(port, child, "the api role")
    return child


def start_bare(port: int, job_file: str) -> subprocess.Popen[bytes]:
    """The bare app on ``port``."""
    child = subprocess.Popen(
        [sys.executable, "-m", "monoq.api.httpbench", "--serve-bare", str(port), job_file]
    )
    _wait_listening(port, child, "the bare app")
    return child


# -- the run -----------------------------------------------------------------------------------


async def _first_job(port: int) -> dict[str, Any]:
    import httpx

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        response = await http.post(
            "/api/v1/jobs", content=JOB_BODY, headers={"Content-Type": "application/json"}
        )
        response.raise_for_status()
        job: dict[str, Any] = response.json()
        return job


def _batch_body() -> bytes:
    one = json.loads(JOB_BODY)
    return json.dumps({"jobs": [one] * BATCH_SIZE}, separators=(",", ":")).encode()


def run(url: str, requests: int, batches: int, concurrency: int, kind: str) -> str:
    """Measure, answer the markdown table."""
    api_port, bare_port = free_port(), free_port()
    api = start_api(url, api_port)
    bare: subprocess.Popen[bytes] | None = None
    job_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - removed in the finally below
        "w", suffix=".json", delete=False
    )
    try:
        job = asyncio.run(_first_job(api_port))
        with job_file:
            json.dump(job, job_file)
        bare = start_bare(bare_port, job_file.name)

        async def measure() -> tuple[Result, Result, Result]:
            opts: dict[str, Any] = {"concurrency": concurrency, "kind": kind}
            warm = max(200, requests // 10)
            await load(api_port, "/api/v1/jobs", JOB_BODY, requests=warm, **opts)
            await load(bare_port, "/api/v1/jobs", JOB_BODY, requests=warm, **opts)
            single = await load(api_port, "/api/v1/jobs", JOB_BODY, requests=requests, **opts)
            plain = await load(bare_port, "/api/v1/jobs", JOB_BODY, requests=requests, **opts)
            batch = await load(
                api_port,
                "/api/v1/jobs/batch",
                _batch_body(),
                requests=batches,
                concurrency=2,
                kind=kind,
            )
            return single, plain, batch

        single, plain, batch = asyncio.run(measure())
    finally:
        if bare is not None:
            _stop(bare)
        _stop(api)
        with suppress(OSError):
            Path(job_file.name).unlink()
    ratio = single.rate / plain.rate
    job_bytes = len(json.dumps(job, separators=(",", ":")))
    lines = [
        (
            f"API benchmark: {url.split('?')[0]}, loopback, {concurrency} connections, "
            f"client={kind}, {os.cpu_count()} CPUs, response job {job_bytes} bytes"
        ),
        "",
        "| measure | requests | req/s | jobs/s | p50 ms | p99 ms | client CPU | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, res, per in (
        ("single submit POST /api/v1/jobs", single, 1),
        ("bare litestar endpoint (same JSON)", plain, 1),
        (f"batch submit POST /api/v1/jobs/batch ({BATCH_SIZE}/req, 2 conns)", batch, BATCH_SIZE),
    ):
        lines.append(
            f"| {name} | {len(res.latencies)} | {res.rate:,.0f} | {res.rate * per:,.0f} "
            f"| {res.p(0.5):.1f} | {res.p(0.99):.1f} | {res.cpu / res.wall:.0%} | {res.errors} |"
        )
    lines += [
        "",
        (
            f"single submit / bare endpoint: **{ratio:.2f}x** (target >= 0.8); "
            f"batch: **{batch.rate * BATCH_SIZE:,.0f} jobs/s** (target >= 80,000)"
        ),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m monoq.api.httpbench", description=__doc__)
    parser.add_argument("--backend", metavar="URL", help="default: SQLite in a temp file")
    parser.add_argument("--requests", type=int, default=5000, help="single submits (5000)")
    parser.add_argument("--batches", type=int, default=30, help="batch requests (30)")
    parser.add_argument("--concurrency", type=int, default=64, help="connections (64)")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw")
    parser.add_argument(
        "--serve-bare", nargs=2, metavar=("PORT", "JOB_FILE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.serve_bare:
        serve_bare(int(args.serve_bare[0]), args.serve_bare[1])
        return 0
    with tempfile.TemporaryDirectory(prefix="monoq-api-bench-") as tmp:
        url = args.backend or f"sqlite:///{tmp}/bench.db"
        print(run(url, args.requests, args.batches, args.concurrency, args.client))  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
