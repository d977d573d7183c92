"""``ApiRole``: serves the app on an embedded uvicorn server under the supervisor.

The supervisor owns signals, logging and the backend; this role only listens. ``run`` binds the
socket itself (so a busy port or a bad host is an ``OSError`` raised from ``run`` rather than
uvicorn's ``sys.exit``), reports ``task_status.started()`` once uvicorn is accepting, and returns
after ``stop()`` once uvicorn has drained open requests (at most ``shutdown_timeout`` seconds,
so a 60 s long-poll cannot hold the shutdown).

Without any token configured, binding a non-loopback host is refused unless
``api.allow_public_bind`` is true: an open API on a public address lets anyone enqueue.

With ``api.tls_certfile`` and ``api.tls_keyfile`` the server speaks HTTPS only (plain HTTP to
it fails); ``api.tls_client_ca`` also requires client certificates signed by that CA. The files
are read and checked when the role is built, before anything starts: a missing or unreadable
file, a file that is not PEM, or a key that does not match the certificate (or its password)
is a ConfigError naming the key.
"""

import contextlib
import logging
import math
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import anyio
import anyio.abc
import uvicorn
from litestar import Litestar
from prometheus_client import CollectorRegistry

from monoq.api.app import create_app, is_loopback
from monoq.api.state import STATE_KEY, ApiState
from monoq.client import Client
from monoq.config import ApiConfig, UiConfig
from monoq.errors import ConfigError
from monoq.registry import Registry

logger = logging.getLogger(__name__)

DEFAULT_SHUTDOWN_TIMEOUT: Final = 10.0


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves SIGINT/SIGTERM to the supervisor."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install no signal handlers."""
        yield


def check_bind(api_config: ApiConfig, *, auth_enabled: bool) -> None:
    """ConfigError for a public bind without tokens (unless explicitly allowed)."""
    if auth_enabled or api_config.allow_public_bind or is_loopback(api_config.host):
        return
    raise ConfigError(
        f"api.host: refusing to listen on {api_config.host!r} without authentication: "
        "configure api.tokens (see `monoq token create`), bind to 127.0.0.1, or set "
        "api.allow_public_bind = true"
    )


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket for ``host:port`` (port 0 picks a free one); OSError if it fails."""
    infos = socket.getaddrinfo(
        host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def check_tls(api_config: ApiConfig) -> ssl.SSLContext | None:
    """The server's TLS context from ``api.tls_*`` (None without a certificate), or a
    ConfigError naming the key whose file cannot be used."""
    if not api_config.tls_certfile:
        return None
    for key in ("tls_certfile", "tls_keyfile", "tls_client_ca"):
        path = getattr(api_config, key)
        if not path:
            continue
        try:
            with Path(path).open("rb") as fh:
                fh.read(1)
        except OSError as exc:
            raise ConfigError(f"api.{key}: cannot read {path!r}: {exc.strerror or exc}") \
                from None
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cafile=api_config.tls_certfile)
    except ssl.SSLError:
        raise ConfigError(f"api.tls_certfile: {api_config.tls_certfile!r} holds no PEM "
                          "certificate") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(api_config.tls_certfile, api_config.tls_keyfile,
                                api_config.tls_keyfile_password or None)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"api.tls_keyfile: {api_config.tls_keyfile!r} is not a PEM private key matching "
            f"api.tls_certfile, or api.tls_keyfile_password is wrong ({exc.reason or exc})"
        ) from None
    if api_config.tls_client_ca:
        try:
            context.load_verify_locations(cafile=api_config.tls_client_ca)
        except ssl.SSLError:
            raise ConfigError(f"api.tls_client_ca: {api_config.tls_client_ca!r} holds no PEM "
                              "certificate") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def uvicorn_config(
    app: Litestar, shutdown_timeout: float, api_config: ApiConfig | None = None
) -> uvicorn.Config:
    """The uvicorn settings the api role serves with (HTTPS when ``api_config`` has a
    certificate)."""
    tls: dict[str, object] = {}
    if api_config is not None and api_config.tls_certfile:
        tls = {
            "ssl_certfile": api_config.tls_certfile,
            "ssl_keyfile": api_config.tls_keyfile,
            "ssl_keyfile_password": api_config.tls_keyfile_password or None,
        }
        if api_config.tls_client_ca:
            tls.update(ssl_ca_certs=api_config.tls_client_ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
    return uvicorn.Config(
        app,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=math.ceil(shutdown_timeout),
        **tls,  # type: ignore[arg-type]
    )


async def serve_app(app: Litestar, host: str, port: int) -> None:
    """Serve ``app`` with the api role's uvicorn settings until cancelled (benchmarks)."""
    with bind_socket(host, port) as sock:
        server = EmbeddedServer(uvicorn_config(app, DEFAULT_SHUTDOWN_TIMEOUT))
        await server.serve(sockets=[sock])


class ApiRole:
    """The api role: ``await tg.start(role.run)``, later ``role.stop()``."""

    def __init__(
        self,
        client: Client,
        api_config: ApiConfig,
        *,
        registry: Registry | None = None,
        metrics_registry: CollectorRegistry | None = None,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        ui_config: UiConfig | None = None,
    ) -> None:
        self.config = api_config
        self.app: Litestar = create_app(
            client, api_config, registry=registry, metrics_registry=metrics_registry,
            ui_config=ui_config,
        )
        state = self.app.state[STATE_KEY]
        assert isinstance(state, ApiState)  # noqa: S101
        check_bind(api_config, auth_enabled=state.tokens.enabled)
        self.tls = check_tls(api_config) is not None
        self.shutdown_timeout = shutdown_timeout
        self.address: tuple[str, int] | None = None  # (host, port) once listening
        self._server: EmbeddedServer | None = None
        self._stopping = False

    @property
    def port(self) -> int | None:
        """The port listened on (useful with port 0), or None before ``run`` started."""
        return None if self.address is None else self.address[1]

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until ``stop()``; ``task_status.started()`` once accepting connections."""
        try:
            sock = bind_socket(self.config.host, self.config.port)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"api: cannot listen on {self.config.host}:{self.config.port}: "
                f"{exc.strerror or exc}",
            ) from exc
        try:
            host, port = sock.getsockname()[:2]
            self.address = (host, port)
            server = EmbeddedServer(
                uvicorn_config(self.app, self.shutdown_timeout, self.config))
            self._server = server
            server.should_exit = self._stopping
            done = anyio.Event()

            async def serve() -> None:
                try:
                    await server.serve(sockets=[sock])
                finally:
                    done.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(serve)
                while not server.started:
                    if done.is_set():
                        raise RuntimeError("the api server stopped before it started listening")
                    await anyio.sleep(0.005)
                logger.info("api listening on %s://%s:%d", "https" if self.tls else "http",
                            _url_host(host), port)
                task_status.started()
            logger.info("api stopped")
        finally:
            sock.close()
            self._server = None

    def stop(self) -> None:
        """Ask the server to stop accepting, drain and return from ``run``. Idempotent; may be
        called before ``run``."""
        self._stopping = True
        if self._server is not None:
            self._server.should_exit = True


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
