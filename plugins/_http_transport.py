"""The network half of the ``http`` job kind: the httpx transport whose connections resolve
and check every address themselves (see ``monoq.plugins.http``, "Outbound safety").

Kept apart so that a worker imports httpx and httpcore only when its first http job runs: a
worker that never runs one does not carry them (about 10 MiB of resident memory).
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import socket
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Final

import anyio
import httpcore
import httpx

from monoq.plugins.http import (
    ALLOW_HINT,
    AllowList,
    IPAddress,
    OutboundRefused,
    _embedded_ipv4,
    _is_literal,
    address_refusal,
)


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """The httpcore network backend of the pool: resolves the host itself, refuses it when any of
    its addresses is refused (``OutboundRefused``), and connects to the checked address.

    Every connection of every request and redirect hop is made here, so no later DNS answer can
    change where it goes. TLS is started by httpcore on the returned stream with the URL's host
    name for SNI and certificate checks.
    """

    def __init__(self, allow: AllowList, inner: httpcore.AsyncNetworkBackend | None = None
                 ) -> None:
        self.allow = allow
        self._inner = inner or httpcore.AnyIOBackend()

    async def _resolve(self, host: str, port: int, timeout: float | None
                       ) -> list[IPAddress]:
        with contextlib.suppress(ValueError):
            return [ipaddress.ip_address(host)]
        try:
            with anyio.fail_after(timeout):
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} took longer than {timeout:g}s"
                                          ) from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        found: list[IPAddress] = []
        for info in infos:
            ip = ipaddress.ip_address(info[4][0])
            if ip not in found:
                found.append(ip)
        if not found:
            raise httpcore.ConnectError(f"{host} has no address")
        return found

    def check(self, host: str, addresses: Iterable[IPAddress]) -> None:
        """Raise OutboundRefused unless every address of ``host`` is allowed."""
        if self.allow.allows_name(host):
            return
        for ip in addresses:
            if self.allow.allows_address(ip):
                continue
            reason = address_refusal(ip)
            if reason is None:
                continue
            where = f"{host} is" if _is_literal(host) else f"{host} resolves to {ip},"
            raise OutboundRefused(f"refused: {where} {reason}; {ALLOW_HINT}")

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Resolve, check, then connect to the first checked address that answers."""
        deadline = math.inf if timeout is None else anyio.current_time() + timeout
        addresses = await self._resolve(host, port, timeout)
        self.check(host, addresses)
        failure: httpcore.ConnectError | None = None
        for ip in addresses:
            embedded = _embedded_ipv4(ip)
            target = str(embedded[1]) if embedded and embedded[0] == "IPv4-mapped" else str(ip)
            left = None if timeout is None else max(0.0, deadline - anyio.current_time())
            try:
                return await self._inner.connect_tcp(target, port, timeout=left,
                                                     local_address=local_address,
                                                     socket_options=socket_options)
            except httpcore.ConnectError as exc:  # try the host's next address
                failure = exc
        raise failure or httpcore.ConnectError(f"cannot connect to {host}")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Never used by the pool (it has no ``uds``); refused all the same."""
        raise OutboundRefused("refused: Unix sockets are not reachable from http jobs")

    async def sleep(self, seconds: float) -> None:
        """Delegated (httpcore sleeps between its own connect retries, which are off)."""
        await self._inner.sleep(seconds)


_EQUIVALENT_ERRORS: Final[tuple[tuple[type[Exception], type[httpx.TransportError]], ...]] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _as_httpx_errors() -> Iterator[None]:
    """Raise httpcore's errors as their httpx counterparts, as an httpx transport must."""
    try:
        yield
    except Exception as exc:
        for core_error, httpx_error in _EQUIVALENT_ERRORS:
            if isinstance(exc, core_error):
                raise httpx_error(str(exc)) from exc
        raise


class _ResponseBody(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors():
            async for chunk in self._stream:
                yield chunk

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            with _as_httpx_errors():
                await close()


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport over an ``httpcore.AsyncConnectionPool`` that connects through
    ``GuardedNetworkBackend``: every connection is checked where it is made."""

    def __init__(self, allow: AllowList, *, max_connections: int) -> None:
        self.network = GuardedNetworkBackend(allow)
        self._pool = httpcore.AsyncConnectionPool(
            # SSL_CERT_FILE / SSL_CERT_DIR may name a private CA; certificates are always checked
            ssl_context=httpx.create_ssl_context(),
            max_connections=max_connections,
            max_keepalive_connections=min(max_connections, 20),
            keepalive_expiry=5.0,
            network_backend=self.network,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the pool."""
        if not isinstance(request.stream, httpx.AsyncByteStream):
            raise TypeError("the http plugin's transport needs an async request body")
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=request.url.raw_scheme, host=request.url.raw_host,
                             port=request.url.port, target=request.url.raw_path),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _as_httpx_errors():
            response = await self._pool.handle_async_request(core_request)
        if not isinstance(response.stream, AsyncIterable):
            raise TypeError("httpcore answered with a sync body")
        return httpx.Response(status_code=response.status, headers=response.headers,
                              stream=_ResponseBody(response.stream),
                              extensions=response.extensions)

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self._pool.aclose()


