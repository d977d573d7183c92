"""The http job kind against real HTTP servers on 127.0.0.1: the handler called with a Context for
the many small cases, and whole jobs through an in-process worker for retries, dead letters and
the attempt history."""

from __future__ import annotations

import email.utils
import json
import logging
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from pathlib import Path
from typing import Any, Self
from unittest.mock import ANY
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.lowlevel
import pytest

import monoq
from monoq.client import Client
from monoq.config import Config, load_config
from monoq.core.models import AttemptOutcome, JobState
from monoq.errors import ConfigError
from monoq.plugins.http import (
    AllowList,
    HttpConnectionError,
    HttpPayloadError,
    HttpPlugin,
    HttpRetryAfter,
    HttpStatusError,
    HttpTimeout,
    HttpUnexpectedStatus,
    OutboundRefused,
    TooManyRedirects,
    UnknownSecret,
    address_refusal,
    http_request,
)
from monoq.registry import Registry
from tests.certs import self_signed
from tests.integration._inprocess import supervised
from tests.ports import free_port

pytestmark = pytest.mark.anyio

# values of the secrets the tests configure; none may show up where the tests look
CRM_VALUE = "s3cr3t-Crm-T0ken-value"
OTHER_VALUE = "other-Secret-from-env-42"


# -- a real HTTP server ----------------------------------------------------------------------------


@dataclass
class Received:
    """One request as the server saw it."""

    method: str
    path: str  # with its query
    headers: dict[str, str]  # lower-case names
    body: bytes
    client_port: int


@dataclass
class _State:
    received: list[Received] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)  # bugs of the server's routes
    counters: dict[str, int] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)  # frees /slow
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    """Routes (query parameters in brackets):

    /status/<code> [retry_after]     that status with a short text body
    /json                            a JSON object and headers inside and outside the subset
    /text                            "café" in ISO-8859-1
    /raw [type, body]                that body with that content type
    /big [size, type=text|json, char] a body of ``size`` bytes
    /redirect [to, code=302]         a redirect
    /loop                            a redirect to itself
    /flaky [key, fail, status=503, retry_after]  ``status`` for the first ``fail`` calls of key
    /slow                            answers only once the test ends
    /drop                            closes the connection without answering
    /cookie                          sets a cookie
    /echo                            the request as JSON
    """

    protocol_version = "HTTP/1.1"
    state: _State  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with self.state.lock:
            self.state.received.append(Received(
                self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                self.client_address[1]))
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self._route(url.path, query, body)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _send(self, status: int, body: bytes = b"", content_type: str = "text/plain",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": content_type, **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _route(self, path: str, query: dict[str, str], body: bytes) -> None:
        state = self.state
        if path.startswith("/status/"):
            extra = {"Retry-After": query["retry_after"]} if "retry_after" in query else {}
            self._send(int(path.rsplit("/", 1)[1]), b"status page", headers=extra)
        elif path == "/json":
            self._send(200, json.dumps({"hello": "world", "n": [1, 2]}).encode(),
                       "application/json", {
                           "ETag": '"v1"', "Last-Modified": "Wed, 21 Oct 2015 07:28:00 GMT",
                           "Cache-Control": "no-store", "X-Internal": "hidden",
                           "Set-Cookie": "tracker=1"})
        elif path == "/text":
            self._send(200, "café".encode("latin-1"), "text/plain; charset=iso-8859-1")
        elif path == "/raw":
            self._send(200, query.get("body", "").encode(), query["type"])
        elif path == "/big":
            size = int(query["size"])
            if query.get("type") == "json":
                data = json.dumps({"data": "x" * size}).encode()
            else:
                data = (query.get("char", "a") * size).encode()[:size]
            self._send(200, data, "application/json" if query.get("type") == "json"
                       else "text/plain; charset=utf-8")
        elif path == "/redirect":
            self._send(int(query.get("code", "302")), headers={"Location": query["to"]})
        elif path == "/loop":
            self._send(302, headers={"Location": "/loop"})
        elif path == "/flaky":
            with state.lock:
                count = state.counters[query["key"]] = state.counters.get(query["key"], 0) + 1
            if count <= int(query["fail"]):
                extra = {"Retry-After": query["retry_after"]} if "retry_after" in query else {}
                self._send(int(query.get("status", "503")), b"not now", headers=extra)
            else:
                self._send(200, json.dumps({"call": count}).encode(), "application/json")
        elif path == "/slow":
            state.release.wait(30)
            self._send(200, b"late")
        elif path == "/drop":
            self.close_connection = True
        elif path == "/cookie":
            self._send(200, b"ok", headers={"Set-Cookie": "session=abc; Path=/"})
        elif path == "/echo":
            self._send(200, json.dumps({
                "method": self.command, "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode(errors="replace")}).encode(), "application/json")
        else:
            self._send(404, b"no such route")


class _Httpd(ThreadingHTTPServer):
    daemon_threads = True
    state: _State

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        # A client that stops reading (a cut body, a timeout) or rejects the certificate is
        # what some tests do on purpose; anything else is a bug of the test server.
        if error is not None and not isinstance(error, ConnectionError | ssl.SSLError):
            self.state.errors.append(error)


class TestServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 (optionally TLS) recording what it receives."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.state = _State()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.httpd = _Httpd(("127.0.0.1", 0), handler)
        self.httpd.state = self.state
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port: int = self.httpd.server_address[1]
        self.scheme = "https" if tls else "http"
        self._thread = threading.Thread(target=self.httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        """``path`` on this server, reached through ``host``."""
        return f"{self.scheme}://{host}:{self.port}{path}"

    @property
    def received(self) -> list[Received]:
        """The requests received so far."""
        with self.state.lock:
            return list(self.state.received)

    @property
    def paths(self) -> list[str]:
        """The paths (with queries) received so far."""
        return [r.path for r in self.received]

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.state.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)
        assert not self.state.errors, f"the test server failed: {self.state.errors!r}"


@pytest.fixture
def server() -> Iterator[TestServer]:
    """A plain HTTP server for this test."""
    with TestServer() as srv:
        yield srv


# -- calling the handler -----------------------------------------------------------------------------

LOCAL = {"allow": ["127.0.0.1"]}


@asynccontextmanager
async def started(**options: Any) -> AsyncIterator[HttpPlugin]:
    """An HttpPlugin built from ``options`` (a [plugins.http] table), started and then stopped."""
    plugin = HttpPlugin(monoq.PluginOptions("http", options))
    await plugin.start()
    try:
        yield plugin
    finally:
        await plugin.stop()


def context(plugin: HttpPlugin) -> monoq.Context:
    """The Context a worker would give the handler."""
    now = datetime.now(UTC)
    job = monoq.Job(id="job-1", queue="default", handler="http", payload_json=b"{}", priority=5,
                    state=JobState.RUNNING, attempt=1, max_retries=3, timeout=60.0, run_at=now,
                    created_at=now)
    return monoq.Context(job=job, lease_token="lease", worker_id="test",  # noqa: S106 - not one
                         plugins={HttpPlugin: plugin})


async def call(plugin: HttpPlugin, payload: Any) -> dict[str, Any]:
    """Run the http handler once."""
    return await http_request(context(plugin), payload)


# -- requests and results ----------------------------------------------------------------------------


async def test_get_by_default_with_the_documented_result(server: TestServer) -> None:
    async with started(**LOCAL) as plugin:
        result = await call(plugin, {"url": server.url("/json")})
    assert result == {
        "status": 200,
        "headers": {"content-type": "application/json", "content-length": "31",
                    "etag": '"v1"', "last-modified": "Wed, 21 Oct 2015 07:28:00 GMT",
                    "cache-control": "no-store", "date": ANY},
        "body": {"hello": "world", "n": [1, 2]},
        "truncated": False,
        "elapsed_ms": ANY,
    }
    assert isinstance(result["elapsed_ms"], float) and result["elapsed_ms"] >= 0
    [seen] = server.received
    assert seen.method == "GET" and seen.body == b""
    assert seen.headers["user-agent"] == f"monoq/{monoq.__version__}"


async def test_json_is_posted_as_json(server: TestServer) -> None:
    async with started(**LOCAL) as plugin:
        result = await call(plugin, {"url": server.url("/echo"),
                                     "json": {"name": "Zoë", "tags": [1, None]}})
        null = await call(plugin, {"url": server.url("/echo"), "json": None, "method": "put"})
    echo = result["body"]
    assert echo["method"] == "POST"
    assert echo["headers"]["content-type"] == "application/json"
    assert json.loads(echo["body"]) == {"name": "Zoë", "tags": [1, None]}
    assert (null["body"]["method"], null["body"]["body"]) == ("PUT", "null")


async def test_body_is_sent_as_text_and_headers_params_and_method_apply(
        server: TestServer) -> None:
    async with started(**LOCAL, user_agent="crm-sync/2") as plugin:
        text = await call(plugin, {"url": server.url("/echo"), "body": "héllo"})
        custom = await call(plugin, {
            "url": server.url("/echo?fixed=1"), "method": "PATCH", "body": "<a/>",
            "headers": {"Content-Type": "application/xml", "X-Trace": "abc",
                        "User-Agent": "mine"},
            "params": {"q": "a b", "n": 5, "ok": True, "tag": ["x", "y"]},
        })
    assert text["body"]["method"] == "POST"
    assert text["body"]["body"] == "héllo"
    assert text["body"]["headers"]["content-type"] == "text/plain; charset=utf-8"
    assert text["body"]["headers"]["user-agent"] == "crm-sync/2"
    echo = custom["body"]
    assert echo["method"] == "PATCH" and echo["body"] == "<a/>"
    assert echo["path"] == "/echo?fixed=1&q=a+b&n=5&ok=true&tag=x&tag=y"
    assert echo["headers"]["content-type"] == "application/xml"
    assert echo["headers"]["x-trace"] == "abc"
    assert echo["headers"]["user-agent"] == "mine"


async def test_bodies_are_decoded_by_type_and_charset(server: TestServer) -> None:
    async with started(**LOCAL) as plugin:
        latin = await call(plugin, {"url": server.url("/text")})
        problem = await call(plugin, {"url": server.url("/raw"), "params": {
            "type": "application/problem+json", "body": '{"title": "nope"}'}})
        broken = await call(plugin, {"url": server.url("/raw"), "params": {
            "type": "application/json", "body": '{"cut'}})
        nan = await call(plugin, {"url": server.url("/raw"), "params": {
            "type": "application/json", "body": "NaN"}})
        plain = await call(plugin, {"url": server.url("/raw"), "params": {
            "type": "text/plain", "body": '{"a": 1}'}})
        head = await call(plugin, {"url": server.url("/json"), "method": "HEAD"})
    assert latin["body"] == "café"
    assert problem["body"] == {"title": "nope"}
    assert broken["body"] == '{"cut'  # not JSON after all: the text
    assert nan["body"] == "NaN"
    assert plain["body"] == '{"a": 1}'  # JSON only when the response says so
    assert (head["status"], head["body"], head["headers"]["content-length"]) == (200, "", "31")


async def test_bodies_past_max_body_bytes_are_cut_and_flagged(server: TestServer) -> None:
    async with started(**LOCAL, max_body_bytes=1000) as plugin:
        exact = await call(plugin, {"url": server.url("/big?size=1000")})
        big = await call(plugin, {"url": server.url("/big?size=200000")})
        big_json = await call(plugin, {"url": server.url("/big?size=5000&type=json")})
        accents = await call(plugin, {"url": server.url("/big?size=1002&char=é")})
    assert (len(exact["body"]), exact["truncated"]) == (1000, False)
    assert (big["body"], big["truncated"]) == ("a" * 1000, True)
    assert big["headers"]["content-length"] == "200000"
    assert big_json["truncated"] is True
    assert big_json["body"] == '{"data": "' + "x" * 990  # cut JSON stays text
    assert accents["body"] == "é" * 500  # the character split by the cut is left out
    assert accents["truncated"] is True


async def test_cookies_are_not_kept_between_requests(server: TestServer) -> None:
    async with started(**LOCAL) as plugin:
        await call(plugin, {"url": server.url("/cookie")})
        echo = await call(plugin, {"url": server.url("/echo")})
    assert "cookie" not in echo["body"]["headers"]


async def test_one_pooled_client_per_plugin_closed_on_stop(server: TestServer) -> None:
    plugin = HttpPlugin(monoq.PluginOptions("http", LOCAL))
    with pytest.raises(RuntimeError, match="not started"):
        await call(plugin, {"url": server.url("/json")})
    await plugin.start()
    client = plugin.client
    for _ in range(3):
        await call(plugin, {"url": server.url("/json")})
    assert plugin.client is client
    assert len({r.client_port for r in server.received}) == 1  # one connection, reused
    await plugin.stop()
    assert client.is_closed
    with pytest.raises(RuntimeError, match="not started"):
        await call(plugin, {"url": server.url("/json")})


# -- statuses and what they do to the job ---------------------------------------------------------


async def test_expect_lists_the_successful_statuses(server: TestServer) -> None:
    async with started(**LOCAL) as plugin:
        gone = await call(plugin, {"url": server.url("/status/404"), "expect": [200, 404]})
        assert (gone["status"], gone["body"]) == (404, "status page")
        with pytest.raises(HttpUnexpectedStatus) as info:
            await call(plugin, {"url": server.url("/status/201"), "expect": [200]})
    assert str(info.value) == (f"HTTP 201 Created from GET {server.url('/status/201')} "
                               "(expected 200)")


async def test_client_errors_are_dead_at_once_without_the_query(server: TestServer) -> None:
    async with started(**LOCAL) as plugin:
        with pytest.raises(HttpUnexpectedStatus) as info:
            await call(plugin, {"url": server.url("/status/404?token=hunter2"),
                                "params": {"key": "k3y"}})
    assert isinstance(info.value, monoq.SkipRetry)
    assert info.value.status == 404
    assert str(info.value) == f"HTTP 404 Not Found from GET {server.url('/status/404')}"


@pytest.mark.parametrize("status", [500, 502, 504, 599])
async def test_server_errors_raise_for_the_normal_backoff(server: TestServer,
                                                          status: int) -> None:
    async with started(**LOCAL) as plugin:
        with pytest.raises(HttpStatusError) as info:
            await call(plugin, {"url": server.url(f"/status/{status}?retry_after=5")})
    assert not isinstance(info.value, monoq.Retry | monoq.SkipRetry)
    assert str(info.value).startswith(f"HTTP {status} ")
    assert str(info.value).endswith(f"from GET {server.url(f'/status/{status}')}")


async def test_retry_after_sets_the_retry_delay(server: TestServer) -> None:
    soon = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    async with started(**LOCAL, max_retry_after=600) as plugin:
        with pytest.raises(HttpRetryAfter) as seconds:
            await call(plugin, {"url": server.url("/status/503?retry_after=7")})
        with pytest.raises(HttpRetryAfter) as date:
            await call(plugin, {"url": server.url("/status/429"),
                                "params": {"retry_after": soon}})
        with pytest.raises(HttpRetryAfter) as capped:
            await call(plugin, {"url": server.url("/status/503?retry_after=86400")})
        with pytest.raises(HttpStatusError):
            await call(plugin, {"url": server.url("/status/503")})  # no header: normal backoff
        with pytest.raises(HttpStatusError):
            await call(plugin, {"url": server.url("/status/429?retry_after=soon")})  # unusable
    assert isinstance(seconds.value, monoq.Retry)
    assert seconds.value.after == timedelta(seconds=7)
    assert str(seconds.value) == (f"HTTP 503 Service Unavailable from GET "
                                  f"{server.url('/status/503')}; retrying after 7s (Retry-After)")
    assert date.value.after is not None
    assert timedelta(seconds=110) <= date.value.after <= timedelta(seconds=121)
    assert date.value.status == 429
    assert capped.value.after == timedelta(seconds=600)


async def test_retry_statuses_adds_statuses_to_retry(server: TestServer) -> None:
    async with started(**LOCAL) as plugin:
        with pytest.raises(HttpUnexpectedStatus):
            await call(plugin, {"url": server.url("/status/408")})
    async with started(**LOCAL, retry_statuses=[408, 425]) as plugin:
        with pytest.raises(HttpStatusError, match=r"^HTTP 408 Request Timeout from GET"):
            await call(plugin, {"url": server.url("/status/408")})
        with pytest.raises(HttpRetryAfter) as info:
            await call(plugin, {"url": server.url("/status/425?retry_after=3")})
    assert info.value.after == timedelta(seconds=3)


async def test_timeouts_and_connection_failures_raise_for_the_normal_backoff(
        server: TestServer) -> None:
    closed = free_port()
    async with started(allow=["127.0.0.1"], timeout=0.2) as plugin:
        with pytest.raises(HttpTimeout) as default_timeout:
            await call(plugin, {"url": server.url("/slow")})
        with pytest.raises(HttpTimeout) as own_timeout:
            await call(plugin, {"url": server.url("/slow?x=1"), "timeout": 0.1})
        with pytest.raises(HttpConnectionError) as refused:
            await call(plugin, {"url": f"http://127.0.0.1:{closed}/x?secret=1"})
        with pytest.raises(HttpConnectionError) as dropped:
            await call(plugin, {"url": server.url("/drop")})
    assert "0.2s" in str(default_timeout.value)
    assert f"GET {server.url('/slow')}" in str(default_timeout.value)
    assert "0.1s" in str(own_timeout.value) and "x=1" not in str(own_timeout.value)
    assert str(refused.value).startswith(f"GET http://127.0.0.1:{closed}/x failed: ")
    assert "secret=1" not in str(refused.value)
    assert str(dropped.value).startswith(f"GET {server.url('/drop')} failed: ")
    for exc in (default_timeout, refused, dropped):
        assert not isinstance(exc.value, monoq.Retry | monoq.SkipRetry)


# -- redirects ------------------------------------------------------------------------------------


async def test_redirects_are_followed_with_the_right_method(server: TestServer) -> None:
    async with started(**LOCAL) as plugin:
        moved = await call(plugin, {"url": server.url("/redirect?to=/json")})
        see_other = await call(plugin, {"url": server.url("/redirect?code=303&to=/echo"),
                                        "json": {"a": 1}})
        temporary = await call(plugin, {"url": server.url("/redirect?code=307&to=/echo"),
                                        "json": {"a": 1}})
    assert (moved["status"], moved["body"]) == (200, {"hello": "world", "n": [1, 2]})
    assert (see_other["body"]["method"], see_other["body"]["body"]) == ("GET", "")
    assert (temporary["body"]["method"], temporary["body"]["body"]) == ("POST", '{"a":1}')


async def test_unfollowed_and_endless_redirects(server: TestServer) -> None:
    async with started(**LOCAL, max_redirects=3) as plugin:
        kept = await call(plugin, {"url": server.url("/redirect?to=/json"),
                                   "follow_redirects": False, "expect": [302]})
        with pytest.raises(HttpUnexpectedStatus) as unfollowed:
            await call(plugin, {"url": server.url("/redirect?to=/json"),
                                "follow_redirects": False})
        with pytest.raises(TooManyRedirects) as endless:
            await call(plugin, {"url": server.url("/loop")})
    assert (kept["status"], kept["headers"]["location"]) == (302, "/json")
    assert str(unfollowed.value) == (f"HTTP 302 Found from GET {server.url('/redirect')} "
                                     "(follow_redirects is false)")
    assert str(endless.value) == (f"more than 3 redirects from GET {server.url('/loop')}; "
                                  "raise [plugins.http] max_redirects")
    assert server.paths.count("/loop") == 4
    assert "/json" not in server.paths


# -- outbound safety ------------------------------------------------------------------------------

REFUSED = "; allow it with [plugins.http] allow"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:{port}/json", "refused: 127.0.0.1 is a loopback address"),
        ("http://localhost:{port}/json",
         "refused: localhost resolves to 127.0.0.1, a loopback address"),
        ("http://2130706433:{port}/json",
         "refused: 2130706433 resolves to 127.0.0.1, a loopback address"),
        ("http://[::ffff:127.0.0.1]:{port}/json",
         "refused: ::ffff:127.0.0.1 is an IPv4-mapped form of 127.0.0.1, a loopback address"),
        ("http://[::1]:{port}/", "refused: ::1 is a loopback address"),
        ("http://169.254.169.254/latest/meta-data/",
         "refused: 169.254.169.254 is a link-local address (cloud metadata)"),
        ("http://[fd00:ec2::254]/latest/meta-data/",
         "refused: fd00:ec2::254 is a private address (cloud metadata)"),
        ("http://10.1.2.3/", "refused: 10.1.2.3 is a private address"),
        ("https://192.168.0.1/", "refused: 192.168.0.1 is a private address"),
        ("http://172.16.5.4/", "refused: 172.16.5.4 is a private address"),
        ("http://100.64.0.1/", "refused: 100.64.0.1 is a shared (CGNAT) address"),
        ("http://0.0.0.0:{port}/", "refused: 0.0.0.0 is an unspecified address"),
        ("http://[::]:{port}/", "refused: :: is an unspecified address"),
        ("http://224.0.0.1/", "refused: 224.0.0.1 is a multicast address"),
        ("http://240.0.0.1/", "refused: 240.0.0.1 is a reserved address"),
        ("http://[fe80::1]/", "refused: fe80::1 is a link-local address"),
        ("http://[2002:7f00:1::]/",
         "refused: 2002:7f00:1:: is an 6to4 form of 127.0.0.1, a loopback address"),
        ("http://[64:ff9b::a00:1]/",
         "refused: 64:ff9b::a00:1 is an NAT64 form of 10.0.0.1, a private address"),
        ("http://192.0.2.10/", "refused: 192.0.2.10 is a special-purpose (non-global) address"),
    ],
)
async def test_internal_addresses_are_refused_by_default(server: TestServer, url: str,
                                                         message: str) -> None:
    async with started() as plugin:
        with pytest.raises(OutboundRefused) as info:
            await call(plugin, {"url": url.format(port=server.port)})
    assert str(info.value) == message + REFUSED
    assert isinstance(info.value, monoq.SkipRetry)
    assert server.received == []


@pytest.mark.parametrize("url", ["ftp://example.com/file", "file:///etc/passwd",
                                 "gopher://127.0.0.1:70/"])
async def test_only_http_and_https_urls(url: str) -> None:
    async with started() as plugin:
        with pytest.raises(OutboundRefused, match=r"^refused: URL scheme '\w+' is not allowed; "
                                                  r"only http and https$"):
            await call(plugin, {"url": url})


def test_public_addresses_pass_the_check() -> None:
    for address in ("8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "64:ff9b::808:808",
                    "::ffff:8.8.8.8"):
        assert address_refusal(ip_address(address)) is None, address


async def test_the_allow_list_opens_hosts_and_networks(server: TestServer) -> None:
    async with started(allow=["127.0.0.0/8"]) as plugin:
        assert (await call(plugin, {"url": server.url("/json")}))["status"] == 200
        mapped = await call(plugin, {"url": server.url("/json", host="[::ffff:127.0.0.1]")})
        assert mapped["status"] == 200  # sent to the IPv4 address it stands for
    async with started(allow=["LOCALHOST."]) as plugin:
        assert (await call(plugin, {"url": server.url("/json", host="localhost")}))[
            "status"] == 200
        with pytest.raises(OutboundRefused, match=r"127\.0\.0\.1 is a loopback address"):
            await call(plugin, {"url": server.url("/json")})  # the name, not its address
    assert len(server.received) == 3
    allow = AllowList.parse(["10.0.0.0/8", "*.corp.example", "api.example"])
    assert allow.allows_address(ip_address("10.9.8.7"))
    assert allow.allows_address(ip_address("::ffff:10.9.8.7"))
    assert not allow.allows_address(ip_address("11.0.0.1"))
    assert allow.allows_name("db.corp.example") and allow.allows_name("API.example.")
    assert not allow.allows_name("corp.example") and not allow.allows_name("xapi.example")


async def test_connections_go_to_the_checked_addresses(server: TestServer,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # Names only this resolver knows: were the name resolved a second time when connecting
    # (where DNS rebinding would strike), the system resolver would not find it.
    real = anyio.getaddrinfo
    asked: list[str] = []
    names = {"two.test": ["127.0.0.2", "127.0.0.1"], "mixed.test": ["127.0.0.1", "10.0.0.1"]}

    async def resolve(host: Any, port: Any, **kwargs: Any) -> Any:
        asked.append(host)
        if host in names:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in names[host]]
        return await real(host, port, **kwargs)

    monkeypatch.setattr(anyio, "getaddrinfo", resolve)
    async with started(allow=["127.0.0.0/8"]) as plugin:
        # 127.0.0.2 does not answer (the server listens on 127.0.0.1 only): the next address
        result = await call(plugin, {"url": server.url("/echo", host="two.test")})
    async with started(**LOCAL) as plugin:
        with pytest.raises(OutboundRefused) as mixed:
            await call(plugin, {"url": server.url("/echo", host="mixed.test")})
    assert result["body"]["headers"]["host"] == f"two.test:{server.port}"
    assert asked == ["two.test", "mixed.test"]  # once per connection
    assert str(mixed.value) == ("refused: mixed.test resolves to 10.0.0.1, a private address"
                                + REFUSED)  # one refused address refuses the name
    assert len(server.received) == 1


async def test_proxies_from_the_environment_are_ignored(server: TestServer,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with TestServer() as proxy:
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, proxy.url("/"))
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with started() as plugin:  # a proxy would reach what the check refuses
            with pytest.raises(OutboundRefused):
                await call(plugin, {"url": server.url("/json")})
        assert proxy.received == []
    assert server.received == []


async def test_every_redirect_hop_is_checked(server: TestServer) -> None:
    async with started(**LOCAL) as plugin:
        with pytest.raises(OutboundRefused) as metadata:
            await call(plugin, {"url": server.url(
                "/redirect?to=http://169.254.169.254/latest/meta-data/iam/")})
        with pytest.raises(OutboundRefused) as scheme:
            await call(plugin, {"url": server.url("/redirect?to=file:///etc/passwd")})
    assert str(metadata.value) == ("refused: 169.254.169.254 is a link-local address (cloud "
                                   "metadata)" + REFUSED)
    assert str(scheme.value) == (f"refused: GET {server.url('/redirect')} redirects to a URL "
                                 "with scheme 'file'; only http and https are allowed")
    # A hop to an address the check refuses is refused even though a server listens there.
    target = server.url("/json")
    async with started(allow=["localhost"]) as plugin:
        with pytest.raises(OutboundRefused, match=r"^refused: 127\.0\.0\.1 is a loopback"):
            await call(plugin, {"url": server.url(f"/redirect?to={target}", host="localhost")})
    assert [p.split("?")[0] for p in server.paths] == ["/redirect"] * 3


# -- secrets --------------------------------------------------------------------------------------


def _secret_free(text: str | None) -> bool:
    return text is None or (CRM_VALUE not in text and OTHER_VALUE not in text)


async def test_secrets_are_resolved_on_the_worker_and_never_shown(
        server: TestServer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("MONOQ_SECRET_OTHER", OTHER_VALUE)
    payload = {"url": server.url("/echo"), "headers": {
        "Authorization": {"secret": "CRM_TOKEN", "prefix": "Bearer "},
        "X-Other": {"secret": "OTHER"}}}
    async with started(**LOCAL, secrets={"CRM_TOKEN": CRM_VALUE}) as plugin:
        result = await call(plugin, payload)
        with pytest.raises(HttpStatusError) as failed:
            await call(plugin, {**payload, "url": server.url("/status/500")})
    sent = server.received[0].headers
    assert (sent["authorization"], sent["x-other"]) == (f"Bearer {CRM_VALUE}", OTHER_VALUE)
    assert result["body"]["headers"]["authorization"] == "Bearer [redacted]"  # echoed back
    assert result["body"]["headers"]["x-other"] == "[redacted]"
    assert _secret_free(json.dumps(result))
    assert _secret_free(str(failed.value))
    assert caplog.records  # httpx and httpcore did log the exchanges
    assert _secret_free(caplog.text)
    assert all(_secret_free(r.getMessage()) for r in caplog.records)


async def test_secret_sources_and_their_order(server: TestServer,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONOQ_SECRET_TOKEN", "from-monoq-env")
    monkeypatch.setenv("TOKEN", "from-bare-env")
    monkeypatch.setenv("LISTED", "listed-bare-env")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-key-value")

    def ref(name: str) -> dict[str, Any]:
        return {"url": server.url("/echo"), "headers": {"X-Key": {"secret": name}}}

    async with started(**LOCAL, secrets={"TOKEN": "from-config"},
                       secret_env=["LISTED"]) as plugin:
        await call(plugin, ref("TOKEN"))
        await call(plugin, ref("LISTED"))
        with pytest.raises(UnknownSecret) as unlisted:
            await call(plugin, ref("AWS_SECRET_ACCESS_KEY"))
    async with started(**LOCAL) as plugin:
        await call(plugin, ref("TOKEN"))
    assert [r.headers["x-key"] for r in server.received] == [
        "from-config", "listed-bare-env", "from-monoq-env"]
    assert str(unlisted.value) == (
        "http payload: headers.X-Key: unknown secret 'AWS_SECRET_ACCESS_KEY'; define it in "
        "[plugins.http] secrets or as MONOQ_SECRET_AWS_SECRET_ACCESS_KEY on the worker")
    assert isinstance(unlisted.value, monoq.SkipRetry)


async def test_bad_secret_values_are_refused_without_showing_them(
        server: TestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONOQ_SECRET_SPLIT", "line1\r\nX-Injected: " + CRM_VALUE)
    async with started(**LOCAL) as plugin:
        with pytest.raises(HttpPayloadError) as info:
            await call(plugin, {"url": server.url("/echo"),
                                "headers": {"X-Key": {"secret": "SPLIT"}}})
    assert str(info.value) == ("http payload: headers.X-Key: the secret 'SPLIT' is not a valid "
                               "header value (printable ASCII, no line breaks)")
    assert server.received == []


async def test_secret_headers_stay_with_their_origin_on_redirects(server: TestServer) -> None:
    headers = {"X-Key": {"secret": "CRM_TOKEN"}, "X-Plain": "visible"}
    elsewhere = server.url("/echo", host="localhost")
    async with started(allow=["127.0.0.1", "localhost"], secrets={"CRM_TOKEN": CRM_VALUE}) as plugin:
        same = await call(plugin, {"url": server.url("/redirect?to=/echo"), "headers": headers})
        other = await call(plugin, {"url": server.url(f"/redirect?to={elsewhere}"),
                                    "headers": headers})
    assert same["body"]["headers"]["x-key"] == "[redacted]"  # sent again, then scrubbed
    assert "x-key" not in other["body"]["headers"]
    assert other["body"]["headers"]["x-plain"] == "visible"
    assert [r.headers.get("x-key") for r in server.received] == [CRM_VALUE, CRM_VALUE, CRM_VALUE, None]


# -- bad payloads -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("https://example.com", ("http payload: must be an object with at least a url, got a "
                                "string")),
        ({}, "http payload: url: is required"),
        ({"url": 5}, "http payload: url: must be a non-empty string, got a number"),
        ({"url": "/relative"}, "http payload: url: must be an absolute http:// or https:// URL"),
        ({"url": "http://"}, "http payload: url: has no valid host name"),
        ({"url": "http://a b/"}, "http payload: url: has no valid host name"),
        ({"url": "http://x:99999/"}, "http payload: url: port 99999 is not between 1 and 65535"),
        ({"url": "http://[::1/"}, "http payload: url: not a valid URL"),
        ({"jsn": 1}, ("http payload: unknown key 'jsn'; allowed: url, method, headers, params, "
                     "json, body, timeout, expect, follow_redirects")),
        ({"json": {}, "body": "x"}, "http payload: give json or body, not both"),
        ({"method": "TRACE"}, ("http payload: method: must be one of GET, HEAD, POST, PUT, PATCH, "
                              "DELETE, OPTIONS, got 'TRACE'")),
        ({"method": 5}, "http payload: method: must be one of"),
        ({"headers": ["X: y"]}, "http payload: headers: must be an object, got a list"),
        ({"headers": {"X": 5}}, ('http payload: headers.X: must be a string or {"secret": '
                                '"NAME"}, got a number')),
        ({"headers": {"Bad Name": "x"}}, ("http payload: headers: 'Bad Name' is not a valid "
                                         "header name")),
        ({"headers": {"X": "a\r\nInjected: 1"}}, ("http payload: headers.X: must be printable "
                                                 "ASCII (no line breaks)")),
        ({"headers": {"Content-Length": "5"}}, ("http payload: headers.Content-Length: is set by "
                                               "the client and cannot be given")),
        ({"headers": {"Host": "internal"}}, "http payload: headers.Host: is set by the client"),
        ({"headers": {"X": {"secret": "A", "extra": 1}}}, ("http payload: headers.X: a secret "
                                                          "is written")),
        ({"headers": {"X": {"secret": "1bad"}}}, "http payload: headers.X: a secret name has"),
        ({"params": []}, "http payload: params: must be an object, got a list"),
        ({"params": {"a": {"b": 1}}}, ("http payload: params.a: must be a string, number or "
                                      "boolean, or a list of them, got an object")),
        ({"body": 5}, ("http payload: body: must be a string (use json for other values), got a "
                      "number")),
        ({"timeout": 0}, "http payload: timeout: must be a number of seconds above 0"),
        ({"timeout": True}, "http payload: timeout: must be a number of seconds above 0"),
        ({"timeout": "5"}, "http payload: timeout: must be a number of seconds above 0"),
        ({"expect": []}, "http payload: expect: must be a non-empty list of HTTP statuses"),
        ({"expect": [99]}, "http payload: expect: must be a non-empty list of HTTP statuses"),
        ({"expect": 200}, "http payload: expect: must be a non-empty list of HTTP statuses"),
        ({"follow_redirects": "yes"}, ("http payload: follow_redirects: must be true or false, "
                                      "got a string")),
    ],
)
async def test_bad_payloads_are_dead_at_once_and_send_nothing(
        server: TestServer, payload: Any, message: str) -> None:
    if isinstance(payload, dict) and payload and "url" not in payload:
        payload = {"url": server.url("/echo"), **payload}
    async with started(**LOCAL) as plugin:
        with pytest.raises(HttpPayloadError) as info:
            await call(plugin, payload)
    assert str(info.value).startswith(message)
    assert isinstance(info.value, monoq.SkipRetry)
    assert server.received == []


# -- options ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"allow": ["not a host!"]}, ("plugins.http.allow: 'not a host!' is neither an address, "
                                     "a network (CIDR) nor a host name")),
        ({"allow": "10.0.0.0/8, bad/host"}, "plugins.http.allow: 'bad/host' is neither"),
        ({"allow": [10]}, "plugins.http.allow: must be a list of strings"),
        ({"retry_statuses": [200]}, ("plugins.http.retry_statuses: must be HTTP statuses from 400 "
                                    "to 599, got [200]")),
        ({"retry_statuses": ["x"]}, ("plugins.http.retry_statuses: must be a list of whole "
                                    "numbers")),
        ({"max_body_bytes": -1}, "plugins.http.max_body_bytes: must be between 0 and "),
        ({"timeout": 0}, "plugins.http.timeout: must be between 0.001 and 86400, got 0"),
        ({"timeout": "soon"}, "plugins.http.timeout: must be a number"),
        ({"max_redirects": 101}, "plugins.http.max_redirects: must be between 0 and 100"),
        ({"max_retry_after": -1}, "plugins.http.max_retry_after: must be between 0 and"),
        ({"max_connections": 0}, "plugins.http.max_connections: must be between 1 and 10000"),
        ({"secrets": {"A": 1}}, "plugins.http.secrets: must be a table of strings"),
        ({"secrets": {"bad-name": "x"}}, "plugins.http.secrets: 'bad-name' is not a secret name"),
        ({"secrets": {"A": "x\ny"}}, "plugins.http.secrets: the value of 'A' must be printable"),
        ({"secret_env": ["AWS KEY"]}, "plugins.http.secret_env: 'AWS KEY' is not a secret name"),
        ({"user_agent": "a\nb"}, "plugins.http.user_agent: must be non-empty printable ASCII"),
        ({"proxy": "http://p"}, "plugins.http.proxy: unknown key; allowed: allow, "),
    ],
)
def test_bad_options_are_config_errors_naming_the_key(options: dict[str, Any],
                                                      message: str) -> None:
    with pytest.raises(ConfigError) as info:
        HttpPlugin(monoq.PluginOptions("http", options))
    assert str(info.value).startswith(message)


def test_options_come_from_the_environment_too() -> None:
    config = load_config(os.devnull, env={
        "MONOQ_PLUGINS_HTTP_ALLOW": "127.0.0.1, 10.0.0.0/8, internal.example",
        "MONOQ_PLUGINS_HTTP_RETRY_STATUSES": "408,425",
        "MONOQ_PLUGINS_HTTP_MAX_BODY_BYTES": "1024",
        "MONOQ_PLUGINS_HTTP_TIMEOUT": "2.5",
        "MONOQ_PLUGINS_HTTP_SECRETS": json.dumps({"CRM_TOKEN": "x"}),
        "MONOQ_PLUGINS_HTTP_SECRET_ENV": "GITHUB_TOKEN",
    })
    registry = Registry()
    registry.add_module("monoq.plugins.http")
    [plugin] = registry.build_plugins({"http": config.plugins["http"]}).values()
    assert isinstance(plugin, HttpPlugin)
    assert plugin.allow.allows_name("internal.example")
    assert plugin.allow.allows_address(ip_address("10.1.1.1"))
    assert plugin.retry_statuses == {408, 425}
    assert (plugin.max_body_bytes, plugin.timeout) == (1024, 2.5)
    assert plugin.secret_env == {"GITHUB_TOKEN"}


# -- TLS ---------------------------------------------------------------------------------------------


@pytest.fixture
def tls_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestServer]:
    """An HTTPS server whose certificate names only ``localhost``; the plugin trusts it through
    SSL_CERT_FILE (read when the plugin starts)."""
    cert, key = self_signed(tmp_path, "localhost", "DNS:localhost")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    with TestServer(tls=context) as srv:
        yield srv


async def test_tls_checks_the_certificate_against_the_host_name(tls_server: TestServer) -> None:
    async with started(allow=["localhost", "127.0.0.1"]) as plugin:
        # connected to the checked address 127.0.0.1, certificate verified for "localhost"
        result = await call(plugin, {"url": tls_server.url("/json", host="localhost")})
        with pytest.raises(HttpConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await call(plugin, {"url": tls_server.url("/json")})  # no certificate for the IP
    assert result["body"] == {"hello": "world", "n": [1, 2]}
    assert tls_server.paths == ["/json"]


# -- whole jobs through the worker -----------------------------------------------------------------


def worker_config(**plugin: Any) -> Config:
    """A fast in-memory configuration with these [plugins.http] options."""
    return load_config(os.devnull, env={}, overrides={
        "backend.url": "memory://",
        "worker.heartbeat_seconds": 0.05,
        "worker.lease_seconds": 5,
        "worker.grace_seconds": 2,
        "retry.base_seconds": 0.01,
        "retry.max_seconds": 0.05,
        "scheduler.reap_margin_seconds": 0,
        **{f"plugins.http.{key}": value for key, value in plugin.items()},
    })


@asynccontextmanager
async def worker(**plugin: Any) -> AsyncIterator[Client]:
    """A worker and a scheduler in this process, with the http plugin and these options."""
    registry = Registry()
    registry.add_module("monoq.plugins.http")
    async with supervised(worker_config(**plugin), registry) as (client, _):
        yield client


async def run_job(client: Client, payload: Any, **options: Any) -> tuple[monoq.Job,
                                                                        list[monoq.Attempt]]:
    """Enqueue an http job, wait for its end, and answer it with its attempts."""
    job = await client.enqueue("http", payload, **options)
    with anyio.fail_after(10):
        done = await client.wait(job.id)
    return done, await client.attempts(job.id)


async def test_a_job_completes_with_the_response(server: TestServer) -> None:
    async with worker(**LOCAL) as client:
        done, attempts = await run_job(client, {"url": server.url("/json")})
    assert done.state is JobState.COMPLETED
    assert done.result["status"] == 200
    assert done.result["body"] == {"hello": "world", "n": [1, 2]}
    assert [a.outcome for a in attempts] == [AttemptOutcome.COMPLETED]


async def test_server_errors_are_retried_then_dead_with_each_status(server: TestServer) -> None:
    async with worker(**LOCAL) as client:
        done, attempts = await run_job(client, {"url": server.url("/status/500?token=hunter2")},
                                       max_retries=2)
    line = f"HTTP 500 Internal Server Error from GET {server.url('/status/500')}"
    assert done.state is JobState.DEAD and done.attempt == 3
    assert [(a.outcome, a.error_type, a.error_message) for a in attempts] == [
        (AttemptOutcome.FAILED, "HttpStatusError", line)] * 3
    assert done.error == f"HttpStatusError: {line}"
    assert len(server.received) == 3
    assert all("hunter2" not in (a.traceback or "") for a in attempts)


async def test_client_errors_are_dead_after_one_attempt(server: TestServer) -> None:
    async with worker(**LOCAL) as client:
        done, attempts = await run_job(client, {"url": server.url("/status/422"),
                                                "json": {"email": "nope"}})
    assert done.state is JobState.DEAD and done.attempt == 1
    assert [(a.error_type, a.error_message) for a in attempts] == [
        ("HttpUnexpectedStatus",
         f"HTTP 422 Unprocessable Entity from POST {server.url('/status/422')}")]


async def test_retry_after_is_honoured_then_the_job_completes(server: TestServer) -> None:
    async with worker(**LOCAL) as client:
        done, attempts = await run_job(
            client, {"url": server.url("/flaky?key=a&fail=2&status=429&retry_after=0")})
    assert done.state is JobState.COMPLETED and done.attempt == 3
    assert done.result["body"] == {"call": 3}
    assert [a.error_type for a in attempts] == ["HttpRetryAfter", "HttpRetryAfter", None]
    assert attempts[0].error_message == (
        f"HTTP 429 Too Many Requests from GET {server.url('/flaky')}; retrying after 0s "
        "(Retry-After)")


async def test_timeouts_and_refused_connections_are_retried(server: TestServer) -> None:
    closed = free_port()
    async with worker(**LOCAL) as client:
        slow, slow_attempts = await run_job(client, {"url": server.url("/slow"),
                                                     "timeout": 0.1}, max_retries=1)
        down, down_attempts = await run_job(client, {"url": f"http://127.0.0.1:{closed}/"},
                                            max_retries=1)
    assert (slow.state, down.state) == (JobState.DEAD, JobState.DEAD)
    assert [a.error_type for a in slow_attempts] == ["HttpTimeout"] * 2
    assert [a.error_type for a in down_attempts] == ["HttpConnectionError"] * 2
    assert all(a.error_message and "127.0.0.1" in a.error_message for a in down_attempts)


async def test_refused_destinations_and_bad_payloads_are_dead_at_once(
        server: TestServer) -> None:
    async with worker() as client:  # nothing allowed
        refused, refused_attempts = await run_job(client, {"url": server.url("/json")})
        bad, bad_attempts = await run_job(client, {"url": server.url("/json"), "body": 1})
        unknown, _ = await run_job(client, {"url": "https://example.com/",
                                            "headers": {"X": {"secret": "NOPE"}}})
    assert refused.state is JobState.DEAD and refused.attempt == 1
    assert [(a.error_type, a.error_message) for a in refused_attempts] == [
        ("OutboundRefused", "refused: 127.0.0.1 is a loopback address" + REFUSED)]
    assert bad.state is JobState.DEAD and bad.attempt == 1
    assert [a.error_type for a in bad_attempts] == ["HttpPayloadError"]
    assert unknown.state is JobState.DEAD and unknown.attempt == 1
    assert unknown.error is not None and unknown.error.startswith(
        "UnknownSecret: http payload: headers.X: unknown secret 'NOPE'")
    assert server.received == []


async def test_secrets_stay_out_of_jobs_attempts_and_logs(
        server: TestServer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("MONOQ_SECRET_OTHER", OTHER_VALUE)
    headers = {"Authorization": {"secret": "CRM_TOKEN", "prefix": "Bearer "},
               "X-Other": {"secret": "OTHER"}}
    async with worker(**LOCAL, secrets={"CRM_TOKEN": CRM_VALUE}) as client:
        echoed, _ = await run_job(client, {"url": server.url("/echo"), "headers": headers})
        failed, attempts = await run_job(client, {"url": server.url("/status/503"),
                                                  "headers": headers}, max_retries=1)
        stored = await client.get(failed.id)
    assert server.received[0].headers["authorization"] == f"Bearer {CRM_VALUE}"
    assert echoed.state is JobState.COMPLETED
    assert echoed.result["body"]["headers"]["authorization"] == "Bearer [redacted]"
    assert failed.state is JobState.DEAD and len(attempts) == 2
    for text in (json.dumps(echoed.to_dict()), json.dumps(stored.to_dict()), caplog.text,
                 *(a.error_message for a in attempts), *(a.traceback for a in attempts)):
        assert _secret_free(text)
    assert any("503" in r.getMessage() for r in caplog.records)  # the worker did log the failure


def test_a_worker_that_runs_no_http_job_does_not_load_httpx() -> None:
    """httpx and httpcore load with the first http job (about 10 MiB of a worker's memory):
    discovering the handlers and starting and stopping the plugins, as every worker does,
    does not import them; the first use of the client does."""
    code = """
import asyncio, sys
from monoq.registry import Registry

async def main():
    plugins = Registry.discover().build_plugins({})
    for plugin in plugins.values():
        await plugin.start()
    print(sorted(m for m in ("httpx", "httpcore") if m in sys.modules))
    [http] = [p for p in plugins.values() if p.name == "http"]
    http.client
    print(sorted(m for m in ("httpx", "httpcore") if m in sys.modules))
    for plugin in plugins.values():
        await plugin.stop()

asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.split("\n")[:2] == ["[]", "['httpcore', 'httpx']"]
