"""The ``http`` job kind: each job makes one HTTP request (following redirects) and its outcome
becomes the job's result or steers its retries.

Payload (a JSON object; anything else is dead-lettered at once, before anything is sent)::

    url               http:// or https:// URL (required)
    method            GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS; default POST when json or
                      body is given, else GET
    headers           {"Name": "value"} or {"Name": {"secret": "NAME", "prefix": "Bearer "}}
    params            query parameters {"name": value or [values]} (strings, numbers, booleans),
                      merged into the url's query (a name given in both takes these values)
    json              any JSON value, sent as application/json        } not both
    body              a string, sent as UTF-8 (text/plain by default)  }
    timeout           seconds the whole exchange may take, redirects and body included
                      (default [plugins.http] timeout)
    expect            statuses that count as success (default: any 2xx)
    follow_redirects  true (default) or false; at most [plugins.http] max_redirects hops

Result: ``{"status": 200, "headers": {...}, "body": ..., "truncated": false, "elapsed_ms": 12.3}``
where ``headers`` holds only the names in ``RESULT_HEADERS`` that the response had (lower
case) and ``body`` is the decoded JSON value when the response's type is JSON, else the text
(decoded with the response's charset, UTF-8 by default). A body longer than
``[plugins.http] max_body_bytes`` is cut there (and then never JSON-decoded) with
``truncated: true``; the rest is not downloaded.

Outcomes: a status in ``expect`` completes the job. 429, 503 and the ``retry_statuses`` are
retried after the server's ``Retry-After`` (seconds or an HTTP date, capped at
``max_retry_after``) or, without one, with the normal backoff; other 5xx, timeouts and
connection errors are retried with the normal backoff; any other status (4xx, an unfollowed
3xx, a 2xx outside ``expect``) dead-letters the job at once. The attempt history names what
happened through the exception class (``HttpStatusError``, ``HttpRetryAfter``,
``HttpUnexpectedStatus``, ``HttpTimeout``, ``HttpConnectionError``, ``OutboundRefused``,
``TooManyRedirects``, ``HttpPayloadError``, ``UnknownSecret``) and a message such as
``HTTP 503 Service Unavailable from GET https://host/path``: URLs in messages never carry their
query string or user info.

Secrets: a header given as ``{"secret": "NAME"}`` is resolved on the worker from
``[plugins.http] secrets``, then the variable ``MONOQ_SECRET_NAME``, then the bare variable
``NAME`` only when ``secret_env`` lists it (so a payload cannot read arbitrary variables).
Resolved values are sent only to the origin of ``url`` (a redirect elsewhere drops those
headers), never appear in messages or logs, and are replaced by ``[redacted]`` wherever the
server echoes them into the result.

Outbound safety: the connection itself resolves the host name, checks every address and
connects to the checked address (TLS still verifies the certificate against the name), so DNS
rebinding and redirects cannot reach what the check refused. Refused unless ``[plugins.http]
allow`` lists the host name or a network holding the address: loopback, private (RFC 1918,
fc00::/7), link-local (cloud metadata included), unspecified, multicast, reserved, CGNAT and
other non-global addresses, also in their IPv4-mapped, 6to4 and NAT64 forms. Proxy and .netrc
settings from the environment are ignored (SSL_CERT_FILE and SSL_CERT_DIR, which name trusted
CAs, are honoured), and cookies are never kept between requests.
"""

from __future__ import annotations

import codecs
import email.utils
import ipaddress
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import TYPE_CHECKING, Any, Final

import anyio

import monoq

if TYPE_CHECKING:  # httpx loads with the first http job (monoq.plugins._http_transport)
    import httpx

__all__ = [
    "RESULT_HEADERS",
    "AllowList",
    "HttpConnectionError",
    "HttpPayloadError",
    "HttpPlugin",
    "HttpRetryAfter",
    "HttpStatusError",
    "HttpTimeout",
    "HttpUnexpectedStatus",
    "OutboundRefused",
    "TooManyRedirects",
    "UnknownSecret",
    "address_refusal",
    "http_request",
]

logger = logging.getLogger(__name__)

#: Response headers copied into the result (others, Set-Cookie included, are left out).
RESULT_HEADERS: Final = (
    "content-type", "content-length", "content-encoding", "content-language", "location",
    "etag", "last-modified", "retry-after", "date", "cache-control", "expires", "x-request-id",
)
METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
PAYLOAD_KEYS: Final = ("url", "method", "headers", "params", "json", "body", "timeout", "expect",
                       "follow_redirects")
REDACTED: Final = "[redacted]"
ALLOW_HINT: Final = "allow it with [plugins.http] allow"

# Framing and connection headers belong to the client; letting a payload set them would let it
# desynchronise the connection that the next job reuses.
_CLIENT_HEADERS: Final = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer",
    "upgrade", "proxy-connection",
})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")  # httpx encodes header values as ASCII
_SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_HOST_NAME = re.compile(r"(?=.{1,253}\.?$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
                        r"(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?")
_MAX_URL = 8192

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
QueryParams = list[tuple[str, str | int | float | bool | None]]


# -- errors ------------------------------------------------------------------------------------


class HttpPayloadError(monoq.SkipRetry):
    """The payload is not a valid request; the job is dead-lettered and nothing was sent."""


class UnknownSecret(HttpPayloadError):
    """A header names a secret this worker does not have (the message names it, never a value)."""


class OutboundRefused(monoq.SkipRetry):
    """The request would reach a refused address or scheme; nothing was sent to it."""


class TooManyRedirects(monoq.SkipRetry):
    """The server redirected more than ``[plugins.http] max_redirects`` times."""


class HttpUnexpectedStatus(monoq.SkipRetry):
    """A status that is neither expected nor worth retrying (e.g. 404): dead-lettered at once."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class HttpRetryAfter(monoq.Retry):
    """A 429, 503 or ``retry_statuses`` answer with a Retry-After: retried after that delay."""

    def __init__(self, status: int, after: float, message: str) -> None:
        super().__init__(after=after, reason=message)
        self.status = status


class HttpStatusError(Exception):
    """A status worth retrying (5xx, or 429/503/``retry_statuses`` without a usable
    Retry-After): retried with the normal backoff."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class HttpTimeout(Exception):
    """No complete response in time: retried with the normal backoff."""


class HttpConnectionError(Exception):
    """The connection failed or the server broke the protocol: retried with the normal backoff."""


# -- outbound checks ---------------------------------------------------------------------------

_CGNAT: Final = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_PRIVATE: Final = (ipaddress.IPv4Network("10.0.0.0/8"), ipaddress.IPv4Network("172.16.0.0/12"),
                   ipaddress.IPv4Network("192.168.0.0/16"), ipaddress.IPv6Network("fc00::/7"))
_METADATA: Final = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200"))


def _embedded_ipv4(ip: IPAddress) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 address stands for, and the name of that form."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(ip: IPAddress) -> str | None:
    """Why ``ip`` is refused by default ("a loopback address", ...), or None for a public one."""
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        form, inner = embedded
        reason = address_refusal(inner)
        return None if reason is None else f"an {form} form of {inner}, {reason}"
    suffix = " (cloud metadata)" if ip in _METADATA else ""
    if ip.is_unspecified:
        kind = "an unspecified"
    elif ip.is_loopback:
        kind = "a loopback"
    elif ip.is_link_local:
        kind = "a link-local"
    elif ip.is_multicast:
        kind = "a multicast"
    elif ip in _CGNAT:
        kind = "a shared (CGNAT)"
    elif any(ip in net for net in _PRIVATE):
        kind = "a private"
    elif ip.is_reserved:
        kind = "a reserved"
    elif not ip.is_global:
        kind = "a special-purpose (non-global)"
    else:
        return None
    return f"{kind} address{suffix}"


def _idna(name: str) -> str:
    name = name.strip().lower()
    if not name.isascii():
        name = name.encode("idna").decode("ascii")
    return name.rstrip(".")


@dataclass(frozen=True)
class AllowList:
    """What ``[plugins.http] allow`` opens: networks (``10.0.0.0/8``, ``127.0.0.1``), host names
    (``internal.example``) and host name suffixes (``*.internal.example``, subdomains only).

    A host allowed by name may resolve to any address; an address is allowed when a network
    holds it or the IPv4 address it stands for.
    """

    networks: tuple[IPNetwork, ...] = ()
    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        """Build from entries; ValueError names the first bad one."""
        networks: list[IPNetwork] = []
        names: set[str] = set()
        suffixes: list[str] = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
                continue
            except ValueError:
                pass
            wildcard = entry.strip().startswith("*.")
            try:
                name = _idna(entry.strip()[2:] if wildcard else entry)
            except UnicodeError:
                name = ""
            if not _HOST_NAME.fullmatch(name):
                raise ValueError(f"{entry!r} is neither an address, a network (CIDR) nor a host "
                                 "name (or *.suffix)")
            if wildcard:
                suffixes.append("." + name)
            else:
                names.add(name)
        return cls(tuple(networks), frozenset(names), tuple(suffixes))

    def allows_name(self, host: str) -> bool:
        """True when the host name itself is allowed (whatever it resolves to)."""
        name = host.lower().rstrip(".")
        return name in self.names or any(name.endswith(s) for s in self.suffixes)

    def allows_address(self, ip: IPAddress) -> bool:
        """True when a listed network holds the address or the IPv4 address it stands for."""
        embedded = _embedded_ipv4(ip)
        candidates = [ip] if embedded is None else [ip, embedded[1]]
        return any(c.version == net.version and c in net
                   for c in candidates for net in self.networks)


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# -- transport: httpx requests over the guarded httpcore pool -------------------------------------

# httpcore's errors and the httpx errors that stand for them, the most specific first.

# -- the payload ---------------------------------------------------------------------------------


@dataclass
class HttpRequest:
    """A checked payload, secrets resolved."""

    url: httpx.URL
    method: str
    headers: list[tuple[str, str]]
    params: QueryParams
    content: bytes | None
    timeout: float
    expect: frozenset[int] | None  # None: any 2xx
    follow_redirects: bool
    secret_headers: frozenset[str] = frozenset()  # lower-case names whose value is a secret
    secret_values: tuple[str, ...] = field(default=(), repr=False)


def _bad(key: str, problem: str) -> HttpPayloadError:
    return HttpPayloadError(f"http payload: {key}: {problem}")


def _describe(value: object) -> str:
    """A short, type-level description of a bad value (never the value itself: it may be one)."""
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string",
             list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def _parse_url(value: object) -> httpx.URL:
    if not isinstance(value, str) or not value:
        raise _bad("url", f"must be a non-empty string, got {_describe(value)}")
    if len(value) > _MAX_URL:
        raise _bad("url", f"longer than {_MAX_URL} characters")
    import httpx  # loaded with the first http job

    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise _bad("url", f"not a valid URL ({exc})") from None
    if not url.scheme:
        raise _bad("url", "must be an absolute http:// or https:// URL")
    if url.scheme not in ("http", "https"):
        raise OutboundRefused(f"refused: URL scheme {url.scheme!r} is not allowed; only http "
                              "and https")
    host = url.raw_host.decode("ascii", "replace")
    if not host or not (_is_literal(host) or _HOST_NAME.fullmatch(host)):
        raise _bad("url", "has no valid host name")
    if url.port is not None and not 0 < url.port < 65536:
        raise _bad("url", f"port {url.port} is not between 1 and 65535")
    return url


def _parse_method(payload: Mapping[str, Any]) -> str:
    method = payload.get("method")
    if method is None:
        return "POST" if "json" in payload or "body" in payload else "GET"
    if not isinstance(method, str) or method.upper() not in METHODS:
        shown = repr(method) if isinstance(method, str) and len(method) < 20 else _describe(
            method)
        raise _bad("method", f"must be one of {', '.join(METHODS)}, got {shown}")
    return method.upper()


def _parse_params(value: object) -> QueryParams:
    if value is None:
        return []
    if not isinstance(value, dict):
        raise _bad("params", f"must be an object, got {_describe(value)}")
    out: QueryParams = []
    for name, item in value.items():
        for one in item if isinstance(item, list) else [item]:
            if isinstance(one, bool):
                out.append((name, "true" if one else "false"))
            elif isinstance(one, str | int | float):
                out.append((name, one if isinstance(one, str) else json.dumps(one)))
            else:
                raise _bad(f"params.{name}", "must be a string, number or boolean, or a list of "
                                             f"them, got {_describe(one)}")
    return out


def _parse_expect(value: object) -> frozenset[int] | None:
    if value is None:
        return None
    if (not isinstance(value, list) or not value or len(value) > 500 or not all(
            isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in value)):
        raise _bad("expect", "must be a non-empty list of HTTP statuses (100 to 599)")
    return frozenset(value)


def _parse_timeout(value: object, default: float) -> float:
    if value is None:
        return default
    if (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
            or not 0 < value <= 86400):
        raise _bad("timeout", "must be a number of seconds above 0 and at most 86400")
    return float(value)


def _encode_json(value: object) -> bytes:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise _bad("json", f"cannot be encoded as JSON ({exc})") from None


def parse_payload(payload: object, plugin: HttpPlugin) -> HttpRequest:
    """Check a job's payload and resolve its secrets; HttpPayloadError (or OutboundRefused for a
    scheme other than http/https) names the problem."""
    if not isinstance(payload, dict):
        raise HttpPayloadError(f"http payload: must be an object with at least a url, got "
                               f"{_describe(payload)}")
    unknown = sorted(set(payload) - set(PAYLOAD_KEYS))
    if unknown:
        raise HttpPayloadError(f"http payload: unknown key {unknown[0]!r}; allowed: "
                               f"{', '.join(PAYLOAD_KEYS)}")
    if "url" not in payload:
        raise _bad("url", "is required")
    if "json" in payload and "body" in payload:
        raise HttpPayloadError("http payload: give json or body, not both")
    url = _parse_url(payload["url"])
    method = _parse_method(payload)
    params = _parse_params(payload.get("params"))
    headers, secret_headers, secret_values = _parse_headers(payload.get("headers"), plugin)
    given = {name.lower() for name, _ in headers}
    content: bytes | None = None
    if "json" in payload:
        content = _encode_json(payload["json"])
        if "content-type" not in given:
            headers.append(("Content-Type", "application/json"))
    elif "body" in payload:
        body = payload["body"]
        if not isinstance(body, str):
            raise _bad("body", f"must be a string (use json for other values), got "
                               f"{_describe(body)}")
        content = body.encode()
        if "content-type" not in given:
            headers.append(("Content-Type", "text/plain; charset=utf-8"))
    follow = payload.get("follow_redirects", True)
    if not isinstance(follow, bool):
        raise _bad("follow_redirects", f"must be true or false, got {_describe(follow)}")
    return HttpRequest(
        url=url, method=method, headers=headers, params=params, content=content,
        timeout=_parse_timeout(payload.get("timeout"), plugin.timeout),
        expect=_parse_expect(payload.get("expect")), follow_redirects=follow,
        secret_headers=frozenset(secret_headers), secret_values=tuple(secret_values),
    )


def _parse_headers(value: object, plugin: HttpPlugin
                   ) -> tuple[list[tuple[str, str]], set[str], list[str]]:
    headers: list[tuple[str, str]] = []
    secret_headers: set[str] = set()
    secret_values: list[str] = []
    if value is None:
        return headers, secret_headers, secret_values
    if not isinstance(value, dict):
        raise _bad("headers", f"must be an object, got {_describe(value)}")
    for name, item in value.items():
        if not _TOKEN.fullmatch(name):
            raise _bad("headers", f"{name[:40]!r} is not a valid header name")
        if name.lower() in _CLIENT_HEADERS:
            raise _bad(f"headers.{name}", "is set by the client and cannot be given")
        if isinstance(item, str):
            if not _HEADER_VALUE.fullmatch(item):
                raise _bad(f"headers.{name}", "must be printable ASCII (no line breaks)")
            headers.append((name, item))
        elif isinstance(item, dict):
            secret = plugin.resolve_secret(f"headers.{name}", item)
            headers.append((name, secret.header_value))
            secret_headers.add(name.lower())
            secret_values.append(secret.value)
        else:
            raise _bad(f"headers.{name}", 'must be a string or {"secret": "NAME"}, got '
                                          f"{_describe(item)}")
    return headers, secret_headers, secret_values


@dataclass(frozen=True)
class _Secret:
    value: str = field(repr=False)
    prefix: str = ""

    @property
    def header_value(self) -> str:
        return self.prefix + self.value


# -- results and outcomes ------------------------------------------------------------------------


def _display(url: httpx.URL) -> str:
    """The URL for messages: scheme, host, port and path; never user info or query."""
    path = url.raw_path.split(b"?", 1)[0].decode("ascii", "replace")
    return f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}{path}"


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _keeps_secrets(start: httpx.URL, hop: httpx.URL) -> bool:
    """True when a redirect stays on the origin the secrets were meant for (or only upgrades
    it from http to https on the default ports)."""
    if _origin(start) == _origin(hop):
        return True
    return (start.scheme, start.port, hop.scheme, hop.port) == ("http", None, "https", None) and (
        start.host == hop.host)


def _retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds asked for by a Retry-After header (delta-seconds or an HTTP date), or None."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decode_body(response: httpx.Response, data: bytes, truncated: bool) -> Any:
    try:
        decoder = codecs.getincrementaldecoder(response.charset_encoding or "utf-8")("replace")
    except LookupError:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
    # final=False on a cut body keeps a character split by the cut out of the text
    text: str = decoder.decode(data, final=not truncated)
    if not truncated and text and _is_json(response.headers.get("content-type", "")):
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            pass  # not JSON after all: keep the text
    return text


def _scrub(value: Any, secrets: tuple[str, ...]) -> Any:
    """``value`` with every occurrence of a secret replaced by ``[redacted]``."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            if secret:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, list):
        return [_scrub(item, secrets) for item in value]
    if isinstance(value, dict):
        return {_scrub(k, secrets): _scrub(v, secrets) for k, v in value.items()}
    return value


# -- the plugin and the handler ------------------------------------------------------------------


class HttpPlugin(monoq.Plugin):
    """The ``[plugins.http]`` settings and the worker's one pooled ``httpx.AsyncClient``.

    The client is made by the first job that uses it and closed in ``stop``; every job of the
    worker process shares its connections.
    """

    name = "http"

    def __init__(self, options: monoq.PluginOptions) -> None:
        try:
            self.allow = AllowList.parse(options.strings("allow", ()))
        except ValueError as exc:
            raise monoq.ConfigError(f"plugins.http.allow: {exc}") from None
        self.retry_statuses = frozenset(options.integers("retry_statuses", ()))
        if any(not 400 <= s <= 599 for s in self.retry_statuses):
            raise monoq.ConfigError("plugins.http.retry_statuses: must be HTTP statuses from 400 "
                                    f"to 599, got {sorted(self.retry_statuses)}")
        self.max_body_bytes = options.integer("max_body_bytes", 65536, min=0, max=16 * 2**20)
        self.timeout = options.number("timeout", 30.0, min=0.001, max=86400)
        self.max_redirects = options.integer("max_redirects", 10, min=0, max=100)
        self.max_retry_after = options.number("max_retry_after", 3600.0, min=0, max=86400 * 30)
        self.max_connections = options.integer("max_connections", 100, min=1, max=10000)
        self.user_agent = options.string("user_agent", f"monoq/{monoq.__version__}")
        if not self.user_agent or not _HEADER_VALUE.fullmatch(self.user_agent):
            raise monoq.ConfigError("plugins.http.user_agent: must be non-empty printable ASCII")
        self._secrets = options.table("secrets")
        self.secret_env = frozenset(options.strings("secret_env", ()))
        for key, names in (("secrets", self._secrets), ("secret_env", self.secret_env)):
            bad = sorted(n for n in names if not _SECRET_NAME.fullmatch(n))
            if bad:
                raise monoq.ConfigError(f"plugins.http.{key}: {bad[0]!r} is not a secret name "
                                        "(letters, digits and _, not starting with a digit)")
        for name, secret in self._secrets.items():
            if not _HEADER_VALUE.fullmatch(secret):
                raise monoq.ConfigError(f"plugins.http.secrets: the value of {name!r} must be "
                                        "printable ASCII (it is sent as a header)")
        options.finish()
        self._client: httpx.AsyncClient | None = None
        self._started = False

    @property
    def client(self) -> httpx.AsyncClient:
        """The pooled client (RuntimeError before ``start``), opened on first use, so that
        httpx loads only in a worker that runs http jobs: no proxies or .netrc from the
        environment, no cookie store, redirects followed by ``perform`` itself."""
        if not self._started:
            raise RuntimeError("the http plugin is not started")
        if self._client is None:
            import httpx  # here, not at the top: see above

            from monoq.plugins._http_transport import GuardedTransport

            transport = GuardedTransport(self.allow, max_connections=self.max_connections)
            # Jobs of different senders share this client: a cookie kept from one job's
            # response must never ride along on another's request.
            no_cookies = CookieJar(DefaultCookiePolicy(allowed_domains=[]))
            self._client = httpx.AsyncClient(
                transport=transport, trust_env=False, follow_redirects=False,
                timeout=self.timeout, headers={"User-Agent": self.user_agent},
                cookies=no_cookies)
        return self._client

    async def start(self) -> None:
        """Let jobs use the client (made on first use)."""
        self._started = True

    async def stop(self) -> None:
        """Close the client and its connections."""
        self._started = False
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def resolve_secret(self, where: str, ref: Mapping[str, Any]) -> _Secret:
        """The value of ``{"secret": NAME, "prefix": ...}``: from ``secrets``, then
        ``MONOQ_SECRET_<NAME>``, then ``<NAME>`` when ``secret_env`` lists it."""
        name = ref.get("secret")
        prefix = ref.get("prefix", "")
        if set(ref) - {"secret", "prefix"} or not isinstance(name, str) or not isinstance(
                prefix, str):
            raise _bad(where, 'a secret is written {"secret": "NAME"} or {"secret": "NAME", '
                              '"prefix": "Bearer "}')
        if not _SECRET_NAME.fullmatch(name):
            raise _bad(where, "a secret name has letters, digits and _, not starting with a "
                              "digit")
        if not _HEADER_VALUE.fullmatch(prefix):
            raise _bad(where, "the prefix must be printable ASCII")
        value = self._secrets.get(name)
        if value is None:
            value = os.environ.get(f"MONOQ_SECRET_{name}")
        if value is None and name in self.secret_env:
            value = os.environ.get(name)
        if value is None:
            raise UnknownSecret(
                f"http payload: {where}: unknown secret {name!r}; define it in [plugins.http] "
                f"secrets or as MONOQ_SECRET_{name} on the worker")
        if not _HEADER_VALUE.fullmatch(value):
            raise _bad(where, f"the secret {name!r} is not a valid header value (printable "
                              "ASCII, no line breaks)")
        return _Secret(value, prefix)

    async def perform(self, request: HttpRequest) -> dict[str, Any]:
        """Send ``request`` and turn the answer into a result or the exception that steers the
        job (see the module's documentation)."""
        client = self.client
        # httpx's params= would replace the URL's query; these are merged into it instead
        url = request.url.copy_merge_params(request.params) if request.params else request.url
        outgoing = client.build_request(request.method, url, headers=request.headers,
                                        content=request.content, timeout=request.timeout)
        started = time.perf_counter()
        try:
            with anyio.fail_after(request.timeout):
                response, data, truncated = await self._exchange(outgoing, request)
        except TimeoutError:
            raise HttpTimeout(f"no complete response within {request.timeout:g}s from "
                              f"{self._where(outgoing, request)}") from None
        elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
        final = response.request
        status = response.status_code
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s -> %d in %.1f ms", self._where(final, request), status, elapsed_ms)
        if (status in request.expect) if request.expect is not None else 200 <= status < 300:
            result = {
                "status": status,
                "headers": {n: response.headers[n] for n in RESULT_HEADERS
                            if n in response.headers},
                "body": _decode_body(response, data, truncated),
                "truncated": truncated,
                "elapsed_ms": elapsed_ms,
            }
            return dict(_scrub(result, request.secret_values))
        raise self._status_outcome(response, request)

    def _where(self, outgoing: httpx.Request, request: HttpRequest) -> str:
        return str(_scrub(f"{outgoing.method} {_display(outgoing.url)}", request.secret_values))

    def _status_outcome(self, response: httpx.Response, request: HttpRequest) -> Exception:
        status = response.status_code
        import httpx  # loaded by now (the client)

        phrase = httpx.codes.get_reason_phrase(status)
        line = f"HTTP {status}{' ' + phrase if phrase else ''} from " + self._where(
            response.request, request)
        if status in (429, 503) or status in self.retry_statuses:
            after = _retry_after(response.headers.get("retry-after"), datetime.now(UTC))
            if after is not None:
                after = min(after, self.max_retry_after)
                return HttpRetryAfter(status, after,
                                      f"{line}; retrying after {after:g}s (Retry-After)")
            return HttpStatusError(status, line)
        if 500 <= status <= 599:
            return HttpStatusError(status, line)
        if 300 <= status < 400 and "location" in response.headers and not (
                request.follow_redirects):
            line += " (follow_redirects is false)"
        if request.expect is not None:
            line += f" (expected {', '.join(str(s) for s in sorted(request.expect))})"
        return HttpUnexpectedStatus(status, line)

    async def _exchange(self, outgoing: httpx.Request, request: HttpRequest
                        ) -> tuple[httpx.Response, bytes, bool]:
        """Send, follow redirects (each hop connects through the guard), read the body."""
        client = self.client
        import httpx  # loaded by now (the client)
        hops = 0
        while True:
            try:
                response = await client.send(outgoing, stream=True, follow_redirects=False)
            except httpx.TimeoutException as exc:
                raise self._timeout(exc, outgoing, request) from exc
            except httpx.TransportError as exc:
                raise self._connection_error(exc, outgoing, request) from exc
            try:
                hop = response.next_request if request.follow_redirects else None
                if hop is None:
                    try:
                        data, truncated = await self._read(response)
                    except httpx.TimeoutException as exc:
                        raise self._timeout(exc, outgoing, request) from exc
                    except (httpx.TransportError, httpx.DecodingError) as exc:
                        raise self._connection_error(exc, outgoing, request) from exc
                    return response, data, truncated
            finally:
                await response.aclose()
            hops += 1
            if hops > self.max_redirects:
                raise TooManyRedirects(
                    f"more than {self.max_redirects} redirects from "
                    f"{self._where(outgoing, request)}; raise [plugins.http] max_redirects")
            if hop.url.scheme not in ("http", "https"):
                raise OutboundRefused(
                    f"refused: {self._where(outgoing, request)} redirects to a URL with scheme "
                    f"{hop.url.scheme!r}; only http and https are allowed")
            if not _keeps_secrets(request.url, hop.url):
                for name in request.secret_headers:
                    hop.headers.pop(name, None)
            outgoing = hop

    async def _read(self, response: httpx.Response) -> tuple[bytes, bool]:
        """The (decompressed) body up to max_body_bytes, and whether there was more."""
        room = self.max_body_bytes
        chunks: list[bytes] = []
        async for chunk in response.aiter_bytes():
            if len(chunk) > room:
                chunks.append(chunk[:room])
                return b"".join(chunks), True
            chunks.append(chunk)
            room -= len(chunk)
        return b"".join(chunks), False

    def _timeout(self, exc: httpx.TimeoutException, outgoing: httpx.Request,
                 request: HttpRequest) -> HttpTimeout:
        import httpx  # loaded by now (the client)

        phase = {httpx.ConnectTimeout: "connecting", httpx.ReadTimeout: "waiting for data",
                 httpx.WriteTimeout: "sending",
                 httpx.PoolTimeout: "waiting for a free connection"}.get(type(exc), "waiting")
        return HttpTimeout(f"timed out after {request.timeout:g}s {phase} ("
                           f"{self._where(outgoing, request)})")

    def _connection_error(self, exc: Exception, outgoing: httpx.Request, request: HttpRequest
                          ) -> HttpConnectionError:
        detail = _scrub(str(exc) or type(exc).__name__, request.secret_values)
        return HttpConnectionError(f"{self._where(outgoing, request)} failed: {detail}")


@monoq.handler("http")
async def http_request(ctx: monoq.Context, payload: Any) -> dict[str, Any]:
    """Make the HTTP request the payload describes and return its status, headers and body."""
    plugin = ctx.plugin(HttpPlugin)
    return await plugin.perform(parse_payload(payload, plugin))
