"""Configuration: ``config.toml``, environment variables and overrides -> one frozen ``Config``.

Every section is an ``@attrs.frozen`` class and every key one attrs field whose metadata holds
its documentation and its checks (bounds, allowed values, a name check). The loader is driven by
those fields alone: TOML type checks, parsing of environment strings, unknown-key detection and
error messages all come from the field's type and metadata, so adding a key is adding a field.
This module holds the sections and ``load_config``; the engine that reads the fields (specs,
coercion, building, layers) is ``monoq.configspec``.

Layers, lowest first: built-in defaults, the config file, the source systems' environment
names (``SOURCE_ENV_NAMES``), ``MONOQ_<SECTION>_<KEY>`` variables, then ``overrides`` (the CLI).
A higher layer replaces a key's whole value (a table or a list is not merged).

Every problem is a ``ConfigError`` whose message starts with the dotted key (or, for a file
that cannot be read or parsed, with the file's path) and says where the bad value came from.

Relative paths (the SQLite URL, ``api.tokens_file``) are relative to the working directory,
not to the config file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import quote

import attrs

from monoq.configspec import META as _META
from monoq.configspec import (
    Layer,
    Value,
    build,
    build_sections,
    env_layer,
    fail,
    file_layer,
    merge_layers,
    name_prefixes,
    override_layer,
    read_toml,
    spec_of,
)
from monoq.configspec import Spec as _Spec
from monoq.configspec import key_field as _key
from monoq.configspec import one_of as _one_of
from monoq.configspec import validate_field as _validate_field
from monoq.core.durations import parse_duration
from monoq.core.models import MAX_EVERY, MIN_EVERY, DepthLimits, parse_priority, validate_name
from monoq.core.retry import RetryPolicy
from monoq.errors import ConfigError, ValidationError

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_FILE",
    "ENV_PREFIX",
    "PLUGINS_SECTION",
    "SOURCE_ENV_NAMES",
    "ApiConfig",
    "ApiToken",
    "AuditConfig",
    "BackendConfig",
    "Config",
    "ConfigKey",
    "JobsConfig",
    "MonoqConfig",
    "RetentionConfig",
    "RetryConfig",
    "ScheduleConfig",
    "SchedulerConfig",
    "TracingConfig",
    "UiConfig",
    "WorkerConfig",
    "config_as_dict",
    "config_keys",
    "format_expiry",
    "load_config",
    "parse_duration",
    "parse_expiry",
]

DEFAULT_CONFIG_FILE: Final = "config.toml"  # read from the working directory when present
ENV_PREFIX: Final = "MONOQ_"
CONFIG_ENV: Final = "MONOQ_CONFIG"  # the config file's path; not a key

# Environment names of the systems monoq replaces (docs/DESIGN.md §1), so their deployment files keep
# working. They sit below MONOQ_* variables: the monoq name wins when both are set. An empty value
# counts as unset, because compose files often declare these names with nothing after the '='.
SOURCE_ENV_NAMES: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "WORKER_CONCURRENCY": ("worker.concurrency",),
        "JOB_TIMEOUT": ("jobs.timeout_seconds",),  # a duration: "300", "30s", "5m", "1h"
        "MAX_RETRIES": ("jobs.max_retries",),
        "REDIS_URL": ("backend.url",),
        "PORT": ("api.port",),  # git-analytics and Cronny; API_PORT wins when both are set
        "API_PORT": ("api.port",),
        # git-analytics' and phrase1's queue: the API submits to it and the worker consumes it
        "REDIS_QUEUE_NAME": ("api.queue_name", "jobs.queue", "worker.queues"),
        "QUEUE_NAME": ("api.queue_name", "jobs.queue", "worker.queues"),
        "OUTPUT_PATH": ("plugins.log.path",),  # phrase1's output file
        "GIT_STORAGE_PATH": ("plugins.git.storage_path",),  # git-analytics' clones
    }
)
# Also read: REDIS_ADDR (host:port) with REDIS_PASSWORD and REDIS_DB make backend.url when
# REDIS_URL is not set (git-analytics, phrase1); HTTP_ADDR ("host:port" or ":port") sets
# api.host and api.port (phrase1).
PLUGINS_SECTION: Final = "plugins"

ROLES: Final = ("api", "worker", "scheduler")
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS: Final = ("text", "json")
TOKEN_SCOPES: Final = ("enqueue", "read", "admin")
SHOW_PAYLOADS: Final = ("admin", "read", "never")
SECRET_KEY_NAMES: Final = ("password", "secret", "token", "authorization", "api_key")

def _name(value: str) -> str:
    """A queue or handler name, as ``monoq.core.models.validate_name`` defines it."""
    try:
        return validate_name("name", value)
    except ValidationError:
        raise ValueError(
            "must be a name of 1-128 letters, digits and _ . : -, starting with a letter or digit"
        ) from None


def _optional_name(value: str) -> str:
    return value if value == "" else _name(value)


def _module(value: str) -> str:
    if value and all(part.isidentifier() for part in value.split(".")):
        return value
    raise ValueError("must be a module name such as 'myapp.tasks'")


def _url(value: str) -> str:
    scheme, sep, _ = value.partition("://")
    if sep and scheme:
        return value
    raise ValueError("must be a URL such as 'sqlite:///./monoq.db', 'redis://host:6379/0'")


def _nonempty(value: str) -> str:
    if value.strip():
        return value
    raise ValueError("must not be empty")


_SHA256: Final = re.compile(r"[0-9a-fA-F]{64}")


def _sha256(value: str) -> str:
    if _SHA256.fullmatch(value):
        return value.lower()
    raise ValueError("must be the SHA-256 of the token, 64 hexadecimal characters")


# An RFC 3339 time with an offset (T or a space between date and time), as TOML and JSON give it.
_RFC3339: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-5][0-9](?:\.[0-9]+)?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def parse_expiry(value: object) -> datetime:
    """A token's ``expires``: an RFC 3339 time with an offset (a string, or a TOML offset
    date-time), as an aware UTC datetime. ValueError (its text completes "must ...")."""
    problem = "must be an RFC 3339 time with an offset, such as 2027-01-31T00:00:00Z"
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(problem)
        return value.astimezone(UTC)
    if not isinstance(value, str) or not _RFC3339.fullmatch(value.strip()):
        raise ValueError(problem)
    try:
        return datetime.fromisoformat(value.strip().upper().replace(" ", "T")).astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError(problem) from None


def format_expiry(when: datetime) -> str:
    """``when`` as the RFC 3339 UTC text ``expires`` is stored as (``...Z``)."""
    text = when.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


def _expires(value: object) -> str:
    """``api.tokens[].expires``: "" (never) or an RFC 3339 time, stored as UTC text."""
    if value == "":
        return ""
    return format_expiry(parse_expiry(value))


def _token_queues(value: object) -> tuple[str, ...]:
    """``api.tokens[].queues``: the default () (every queue) or a non-empty list of names."""
    if value == ():
        return ()
    if not isinstance(value, list | tuple) or not value \
            or not all(isinstance(item, str) for item in value):
        raise ValueError("must be a non-empty list of queue names")
    return tuple(dict.fromkeys(_name(item) for item in value))


def _list_to_tuple(value: object) -> object:
    """attrs converter: a non-empty list becomes a tuple (the class stays hashable)."""
    return tuple(value) if isinstance(value, list) and value else value


def _priority(value: object) -> int:
    if isinstance(value, str):
        value = value.strip()
    return parse_priority(value)


# --------------------------------------------------------------------------------------------
# Sections


@attrs.frozen
class MonoqConfig:
    """``[monoq]``: which roles this process runs, what it imports, how it logs."""

    roles: tuple[str, ...] = _key(
        ROLES,
        "Roles this process runs: any of api, worker, scheduler (at least one, no repeats).",
        check=_one_of(*ROLES),
        nonempty=True,
        unique=True,
    )
    imports: tuple[str, ...] = _key(
        (),
        "Modules imported at start so that their @monoq.handler functions register "
        "(handlers installed through the monoq.handlers entry point need no entry here).",
        check=_module,
    )
    log_level: str = _key(
        "INFO", "Log level: DEBUG, INFO, WARNING or ERROR.", check=_one_of(*LOG_LEVELS, fold=True)
    )
    log_format: str = _key(
        "text",
        "Log format: text (human-readable lines) or json (one object per line).",
        check=_one_of(*LOG_FORMATS),
    )
    loop: str = _key(
        "auto",
        "Event loop of `monoq run`: auto (uvloop when it is installed, else asyncio), uvloop "
        "(refuse to start without it) or asyncio.",
        check=_one_of("auto", "uvloop", "asyncio"),
    )
    health_port: int = _key(
        0,
        "Port of the health and metrics listener (GET /healthz, /readyz, /metrics, no token) "
        "of a process without the api role; 0 = none. Ignored with the api role, which serves "
        "these on api.port.",
        min=0,
        max=65535,
    )
    health_host: str = _key(
        "127.0.0.1",
        "Address the health listener binds to: loopback unless set (e.g. 0.0.0.0 for a "
        "kubelet's probes and Prometheus).",
        check=_nonempty,
    )


@attrs.frozen
class BackendConfig:
    """``[backend]``: where jobs are stored; the URL scheme picks the backend."""

    url: str = _key(
        "sqlite:///./monoq.db",
        "Storage URL; its scheme picks the backend: memory://, sqlite:///path, "
        "redis://host:port/db.",
        check=_url,
    )
    options: Mapping[str, Any] = _key(
        MappingProxyType({}),
        "Backend-specific settings, passed to the backend, which validates them.",
        hashed=False,
    )

    @property
    def scheme(self) -> str:
        """The URL scheme (``sqlite``, ``redis``, ``memory``): the backend's entry-point name."""
        return self.url.partition("://")[0]


@attrs.frozen
class WorkerConfig:
    """``[worker]``: what the worker role consumes and how it holds leases."""

    queues: tuple[str, ...] = _key(
        ("default",),
        "Queues to consume, tried in turn.",
        check=_name,
        nonempty=True,
        unique=True,
    )
    concurrency: int = _key(5, "Jobs run at the same time by this process.", min=1, max=10000)
    lease_seconds: float = _key(
        30.0,
        "How long a claimed job stays leased without a heartbeat before it counts as failed and "
        "is retried.",
        min=0,
        exclusive_min=True,
        duration=True,
    )
    heartbeat_seconds: float = _key(
        10.0,
        "How often running jobs' leases are renewed; must be below lease_seconds.",
        min=0,
        exclusive_min=True,
        duration=True,
    )
    grace_seconds: float = _key(
        25.0,
        "On shutdown, how long running jobs may finish before they are handed back to the queue.",
        min=0,
        duration=True,
    )
    id: str = _key(
        "",
        'This worker\'s id in /workers and attempt history; "" = host-pid.',
        check=_optional_name,
    )
    max_jobs: int = _key(
        0,
        "Recycle the process after it finished this many jobs (0 = never): it stops claiming, "
        "lets its running jobs finish, and starts afresh as `recycle` says.",
        min=0,
    )
    max_memory_mb: float = _key(
        0.0,
        "Recycle the process when its resident memory (RSS) passes this many MiB (0 = never), "
        "checked every second; the running jobs finish first.",
        min=0,
    )
    recycle: str = _key(
        "exec",
        '"exec": the process replaces itself with a fresh one (same pid and command line); '
        '"exit": it exits with code 75 for its orchestrator (systemd, Kubernetes, compose) to '
        "restart it.",
        check=_one_of("exec", "exit"),
    )

    def __attrs_post_init__(self) -> None:
        # A heartbeat that is not more frequent than the lease lets every lease expire.
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ConfigError(
                f"worker.heartbeat_seconds: must be less than worker.lease_seconds "
                f"({self.lease_seconds:g}), got {self.heartbeat_seconds:g}"
            )


@attrs.frozen
class JobsConfig:
    """``[jobs]``: defaults for new jobs that do not set these themselves."""

    queue: str = _key("default", "Queue of a job that names none.", check=_name)
    priority: int = _key(
        5,
        "Priority of a job that sets none: 0 (runs first) to 9, or high (0), normal (5), low (9).",
        convert=_priority,
        problem="must be 0-9 or one of high, normal, low",
    )
    max_retries: int = _key(
        3, "Retries after the first attempt before a job is dead-lettered.", min=0, max=1000
    )
    timeout_seconds: float = _key(
        300.0,
        "Longest a single attempt may run before it is cancelled and counted as failed.",
        min=0,
        exclusive_min=True,
        duration=True,
    )


@attrs.frozen
class RetryConfig:
    """``[retry]``: backoff between attempts, ``min(base * factor ** (n - 1), max)`` +/- jitter."""

    base_seconds: float = _key(2.0, "Wait after the first failure.", min=0, duration=True)
    factor: float = _key(2.0, "Multiplier for each further failure.", min=1)
    max_seconds: float = _key(3600.0, "Cap on any single wait.", min=0, duration=True)
    jitter: float = _key(
        0.0, "Random spread, as a fraction of the wait (0.1 = +/- 10%).", min=0, max=1
    )


@attrs.frozen
class SchedulerConfig:
    """``[scheduler]``: promotion of due jobs, cron, reaping of expired leases."""

    reap_margin_seconds: float = _key(
        1.0,
        "An expired lease is reaped this long after it expired, allowing for clock skew "
        "between machines.",
        min=0,
        duration=True,
    )
    max_sleep_seconds: float = _key(
        60.0,
        "Longest the scheduler sleeps between passes when nothing is due sooner.",
        min=0,
        exclusive_min=True,
        duration=True,
    )
    batch_size: int = _key(1000, "Most jobs promoted, reaped or pruned per step.", min=1)
    misfire_grace_seconds: float = _key(
        5.0,
        "A cron fire found this late or later counts as missed (the schedule's misfire policy "
        "decides whether it still runs).",
        min=0,
        exclusive_min=True,
        duration=True,
    )


@attrs.frozen
class RetentionConfig:
    """``[retention]``: how long finished jobs are kept before they are deleted."""

    completed_seconds: float = _key(
        86400.0, "Keep completed jobs this long.", min=0, exclusive_min=True, duration=True
    )
    dead_seconds: float = _key(
        2592000.0,
        "Keep dead-lettered jobs this long.",
        min=0,
        exclusive_min=True,
        duration=True,
    )
    cancelled_seconds: float = _key(
        2592000.0, "Keep cancelled jobs this long.", min=0, exclusive_min=True, duration=True
    )
    interval_seconds: float = _key(
        60.0, "How often the scheduler prunes.", min=0, exclusive_min=True, duration=True
    )
    runs_per_schedule: int = _key(
        10, "Finished runs kept per schedule (the newest ones).", min=1, max=100000
    )


@attrs.frozen
class AuditConfig:
    """``[audit]``: the audit log of operator actions (cancel, retry, requeue, purge, pause,
    resume, schedule changes; who, what, when, from where)."""

    retention_seconds: float = _key(
        7776000.0,
        "Keep audit entries this long (default 90 days; 0 = keep them forever). The scheduler "
        "deletes older ones when it prunes finished jobs.",
        min=0,
        duration=True,
    )


def _queue_limit(value: str) -> str:
    """``queue=limit`` (a queue name and a positive whole number)."""
    queue, sep, limit = value.partition("=")
    _name(queue)
    if not sep or not limit.isdigit() or int(limit) < 1:
        raise ValueError("must be queue=limit with a whole number limit of at least 1, "
                         "such as 'mail=10000'")
    return value


@attrs.frozen
class BackpressureConfig:
    """``[backpressure]``: refuse enqueues into queues that already hold too many waiting
    jobs (queued, scheduled, retrying), with QueueFull (HTTP 429 and Retry-After)."""

    max_depth: int = _key(0, "The most waiting jobs one queue may hold (0 = no limit).", min=0)
    queues: tuple[str, ...] = _key(
        (), 'Per-queue limits instead of max_depth, as "queue=limit".', check=_queue_limit,
        unique=True)
    max_total: int = _key(0, "The most waiting jobs all queues together may hold (0 = no "
                             "limit).", min=0)

    def limits(self) -> DepthLimits | None:
        """As the backend's DepthLimits; None when nothing is limited."""
        queues = {q: int(n) for q, _, n in (item.partition("=") for item in self.queues)}
        if not (self.max_depth or queues or self.max_total):
            return None
        return DepthLimits(default=self.max_depth, queues=queues, total=self.max_total)


@attrs.frozen
class ApiToken:
    """One ``[[api.tokens]]`` entry: a named bearer token, stored as its SHA-256."""

    name: str = attrs.field(
        validator=_validate_field,
        metadata={_META: _Spec("Name shown in logs.", check=_name)},
    )
    scope: str = attrs.field(
        validator=_validate_field,
        metadata={
            _META: _Spec(
                "enqueue (submit jobs), read (also read), admin (everything).",
                check=_one_of(*TOKEN_SCOPES),
            )
        },
    )
    sha256: str = attrs.field(
        validator=_validate_field,
        metadata={_META: _Spec("Hex SHA-256 of the token (monoq token create).", check=_sha256)},
    )
    queues: tuple[str, ...] = attrs.field(
        default=(),
        converter=_list_to_tuple,
        validator=_validate_field,
        metadata={
            _META: _Spec(
                "Queues the token is limited to; none = every queue.",
                convert=_token_queues,
                problem="must be a non-empty list of queue names (1-128 letters, digits and "
                "_ . : -, starting with a letter or digit)",
            )
        },
    )
    expires: str = attrs.field(
        default="",
        validator=_validate_field,
        metadata={
            _META: _Spec(
                'When the token stops working, an RFC 3339 time; "" = never.',
                convert=_expires,
                problem="must be an RFC 3339 time with an offset, such as "
                "2027-01-31T00:00:00Z",
            )
        },
    )


@attrs.frozen
class ApiConfig:
    """``[api]``: the HTTP server of the api role."""

    host: str = _key("127.0.0.1", "Address to listen on.", check=_nonempty)
    port: int = _key(8080, "Port to listen on.", min=1, max=65535)
    allow_public_bind: bool = _key(
        False, "Allow a non-loopback host even when no tokens are configured."
    )
    max_body_bytes: int = _key(
        1048576, "Largest request body accepted; larger ones get 413.", min=1
    )
    default_handler: str = _key(
        "log",
        "Handler of jobs submitted through the compatibility POST /enqueue (log appends each "
        "body as a line to [plugins.log] path).",
        check=_name,
    )
    queue_name: str = _key(
        "default", "Queue of jobs submitted through the compatibility POST /enqueue.", check=_name
    )
    tokens: tuple[ApiToken, ...] = _key(
        (), "Bearer tokens, as [[api.tokens]] tables with name, scope and sha256."
    )
    tokens_file: str = _key("", 'A TOML file holding more [[tokens]] entries; "" = none.')
    rate_limit_per_minute: int = _key(
        0, "Requests per minute allowed per client; 0 = no limit.", min=0
    )
    tls_certfile: str = _key(
        "",
        'PEM certificate chain the API serves HTTPS with (its own certificate first); "" = '
        "plain HTTP. Needs tls_keyfile.",
    )
    tls_keyfile: str = _key("", 'PEM private key of tls_certfile; "" = none.')
    tls_keyfile_password: str = _key(
        "", 'Password of an encrypted tls_keyfile; "" = the key is not encrypted.', secret=True
    )
    tls_client_ca: str = _key(
        "",
        'PEM CA certificates: when set, every client must present a certificate they signed '
        '(mutual TLS); "" = no client certificates.',
    )

    def __attrs_post_init__(self) -> None:
        seen: set[str] = set()
        for token in self.tokens:
            if token.name in seen:
                raise ConfigError(f"api.tokens: duplicate token name {token.name!r}")
            seen.add(token.name)
        if bool(self.tls_certfile) != bool(self.tls_keyfile):
            given, missing = (("tls_certfile", "tls_keyfile") if self.tls_certfile
                              else ("tls_keyfile", "tls_certfile"))
            raise ConfigError(f"api.{missing}: required when api.{given} is set (HTTPS needs "
                              "both the certificate and its key)")
        for key in ("tls_keyfile_password", "tls_client_ca"):
            if getattr(self, key) and not self.tls_certfile:
                raise ConfigError(f"api.{key}: set only with api.tls_certfile and "
                                  "api.tls_keyfile")


def _secret_key_name(value: str) -> str:
    if value.strip():
        return value.strip()
    raise ValueError("must be a non-empty part of a key name such as 'password'")


def _session_key(value: str) -> str:
    if len(value) >= 32:
        return value
    raise ValueError("must be at least 32 characters (e.g. python -c 'import secrets; "
                     "print(secrets.token_urlsafe(32))')")


@attrs.frozen
class UiConfig:
    """``[ui]``: the web dashboard the api role serves under /ui."""

    enabled: bool = _key(True, "Serve the web dashboard under /ui (and redirect / there).")
    show_payloads: str = _key(
        "admin",
        "Who sees job payloads and results in the dashboard: admin (admin tokens only), read "
        "(every dashboard user) or never.",
        check=_one_of(*SHOW_PAYLOADS),
    )
    secret_keys: tuple[str, ...] = _key(
        SECRET_KEY_NAMES,
        "Keys whose values the dashboard masks in payloads, results and schedules, at any "
        "depth: a key is masked when its name, lower-cased without _ and -, contains one of "
        "these, lower-cased without _ and -.",
        check=_secret_key_name,
    )
    session_seconds: int = _key(
        28800, "How long a dashboard login lasts, in seconds.", min=60, max=30 * 86400
    )
    session_keys: tuple[str, ...] = _key(
        (),
        "Keys (32 characters or more) that sign dashboard session cookies: the first signs, "
        "all verify. None = a random key per process (logins end when it restarts, and several "
        "api processes behind one address need shared keys).",
        check=_session_key,
    )
    cookie_secure: bool = _key(
        False,
        "Mark the dashboard's cookies Secure (sent over HTTPS only); set it when a TLS proxy "
        "serves the dashboard. A login that arrives over HTTPS gets a Secure session cookie "
        "anyway.",
    )
    overdue_seconds: float = _key(
        60.0,
        "The overview flags a queue whose oldest queued job has waited longer than this.",
        min=0,
        exclusive_min=True,
        duration=True,
    )
    scheduler_silent_seconds: float = _key(
        180.0,
        "The overview flags the scheduler as silent when none has run for this long.",
        min=0,
        exclusive_min=True,
        duration=True,
    )


@attrs.frozen
class TracingConfig:
    """``[tracing]``: OpenTelemetry spans for enqueues and attempts (``monoq.tracing``)."""

    enabled: bool = _key(
        False,
        "Make OpenTelemetry spans: one per enqueue (producer) and one per attempt (consumer), "
        "with the trace context stored on the job. Needs opentelemetry-api (pip install "
        "'monoq[otel]'); the spans go to the tracer provider the application sets up.",
    )
    consumer: str = _key(
        "child",
        "How an attempt's span relates to its job's enqueue span: child (in the enqueuing "
        "request's trace, and linked to it) or link (a trace of its own, linked to it).",
        check=_one_of("child", "link"),
    )


def _every(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError
    seconds = parse_duration(value) if isinstance(value, str) else float(value)  # type: ignore[arg-type]
    if not MIN_EVERY <= seconds <= MAX_EVERY:
        raise ValueError
    return seconds


def _cron(value: object) -> str | None:
    from monoq.core.cron import check_cron  # croniter loads only when schedules are used

    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError
    return check_cron(value)


def _timezone(value: object) -> str:
    from monoq.core.cron import zone

    if not isinstance(value, str):
        raise TypeError
    zone(value)
    return value


def _json_value(value: object) -> object:
    json.dumps(value)  # TOML values are JSON values, except dates
    return value


def _optional_count(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError
    if not 0 <= value <= 1000:
        raise ValueError
    return value


def _optional_seconds(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError
    if not 0 < value <= 604800:
        raise ValueError
    return float(value)


@attrs.frozen
class ScheduleConfig:
    """One ``[[schedules]]`` entry: a recurring job synced into the backend at start."""

    id: str = attrs.field(
        validator=_validate_field,
        metadata={_META: _Spec("Unique name of the schedule.", check=_name)},
    )
    handler: str = attrs.field(
        validator=_validate_field,
        metadata={_META: _Spec("Handler of each run.", check=_name)},
    )
    cron: str | None = _key(
        None, "Cron expression: 5 fields, or 6 with seconds first.", convert=_cron,
        problem="must be a cron expression of 5 fields, or 6 with seconds first",
    )
    every: float | None = _key(
        None, 'Fixed interval instead of cron: seconds or a duration ("30s", "5m").',
        convert=_every, problem="must be a duration between 1 ms and 366 days",
    )
    timezone: str = _key(
        "UTC", "IANA timezone the cron expression is read in.", convert=_timezone,
        problem="must be an IANA timezone such as UTC or Europe/Paris",
    )
    payload: object = _key(None, "Payload of each run (any TOML value).", convert=_json_value,
                           problem="must be a JSON-compatible value")
    queue: str = _key("default", "Queue of each run.", check=_name)
    priority: int = _key(5, "Priority of each run: 0-9 or high/normal/low.", convert=_priority,
                         problem="must be 0-9 or one of high, normal, low")
    max_retries: int | None = _key(None, "Retries of each run; default: the handler's.",
                                   convert=_optional_count,
                                   problem="must be an integer between 0 and 1000")
    timeout_seconds: float | None = _key(None, "Timeout of each run; default: the handler's.",
                                         convert=_optional_seconds,
                                         problem="must be a number of seconds up to 604800")
    enabled: bool = _key(True, "Whether the schedule fires.")
    overlap: str = _key("allow", "allow: fire even if the previous run is unfinished; skip: "
                        "skip that fire.", check=_one_of("allow", "skip"))
    misfire: str = _key("skip", "After downtime: skip missed fires, or fire once to catch up.",
                        check=_one_of("skip", "once"))

    def __attrs_post_init__(self) -> None:
        if (self.cron is None) == (self.every is None):
            raise ConfigError(f"schedules.{self.id}: give exactly one of cron and every")


@attrs.frozen
class Config:
    """The whole configuration: one attribute per section, plus the file it came from."""

    monoq: MonoqConfig = attrs.field(factory=MonoqConfig)
    backend: BackendConfig = attrs.field(factory=BackendConfig)
    worker: WorkerConfig = attrs.field(factory=WorkerConfig)
    jobs: JobsConfig = attrs.field(factory=JobsConfig)
    retry: RetryConfig = attrs.field(factory=RetryConfig)
    scheduler: SchedulerConfig = attrs.field(factory=SchedulerConfig)
    retention: RetentionConfig = attrs.field(factory=RetentionConfig)
    api: ApiConfig = attrs.field(factory=ApiConfig)
    ui: UiConfig = attrs.field(factory=UiConfig)
    tracing: TracingConfig = attrs.field(factory=TracingConfig)
    backpressure: BackpressureConfig = attrs.field(factory=BackpressureConfig)
    audit: AuditConfig = attrs.field(factory=AuditConfig)
    schedules: tuple[ScheduleConfig, ...] = ()
    # [plugins.<name>] tables, checked by each plugin (monoq.Plugin) when a worker builds it
    plugins: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict, hash=False)
    source: str | None = attrs.field(default=None, eq=False)  # the file read; None = defaults

    def retry_policy(self) -> RetryPolicy:
        """The ``[retry]`` section as the core's backoff policy."""
        return RetryPolicy(
            base=self.retry.base_seconds,
            factor=self.retry.factor,
            max=self.retry.max_seconds,
            jitter=self.retry.jitter,
        )


for _cls in (
    MonoqConfig,
    BackendConfig,
    WorkerConfig,
    JobsConfig,
    RetryConfig,
    SchedulerConfig,
    RetentionConfig,
    ApiToken,
    ApiConfig,
    UiConfig,
    TracingConfig,
    BackpressureConfig,
    AuditConfig,
    ScheduleConfig,
    Config,
):
    attrs.resolve_types(_cls)

# Section name -> section class, in file order. Every Config field except ``source`` is a section.
_SECTIONS: Final[Mapping[str, Any]] = {
    f.name: f.type for f in attrs.fields(Config) if f.type is not None and attrs.has(f.type)
}
# Class -> dotted prefix of its keys, for the messages of the attrs validators.
name_prefixes({
    **{cls: name for name, cls in _SECTIONS.items()},
    ApiToken: "api.tokens",
    ScheduleConfig: "schedules",
})


# --------------------------------------------------------------------------------------------
# monoq's own layers and file (the generic ones are in monoq.configspec)


def _source_env_layer(env: Mapping[str, str]) -> Layer:
    layer: Layer = {}
    for var, keys in SOURCE_ENV_NAMES.items():
        text = env.get(var, "")
        if text.strip():
            where = f" (from environment variable {var})"
            for key in keys:
                section, name = key.split(".", 1)
                layer.setdefault(section, {})[name] = Value(text, where, text=True)
    addr = env.get("REDIS_ADDR", "").strip()
    if addr and not env.get("REDIS_URL", "").strip():
        password = env.get("REDIS_PASSWORD", "")
        auth = f":{quote(password, safe='')}@" if password else ""
        db = env.get("REDIS_DB", "").strip() or "0"
        where = " (from environment variables REDIS_ADDR, REDIS_PASSWORD, REDIS_DB)"
        if not db.isdigit():
            raise ConfigError(f"backend.url: REDIS_DB must be a database number, got {db!r}"
                              + where)
        layer.setdefault("backend", {})["url"] = Value(f"redis://{auth}{addr}/{db}", where,
                                                        text=True)
    http_addr = env.get("HTTP_ADDR", "").strip()
    if http_addr:
        where = " (from environment variable HTTP_ADDR)"
        host, sep, port = http_addr.rpartition(":")
        if not sep:
            raise ConfigError(f"api.port: HTTP_ADDR must be host:port or :port, got "
                              f"{http_addr!r}{where}")
        if host:
            layer.setdefault("api", {})["host"] = Value(host.strip("[]"), where, text=True)
        layer.setdefault("api", {})["port"] = Value(port, where, text=True)
    return layer


def _locate(path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> tuple[Path, str] | None:
    """The config file to read and how it was chosen, or None for defaults only."""
    if path is not None:
        return Path(path), ""
    named = env.get(CONFIG_ENV, "")
    if named:
        return Path(named), f" (named by {CONFIG_ENV})"
    default = Path(DEFAULT_CONFIG_FILE)
    if default.is_file():
        return default, ""
    return None


# --------------------------------------------------------------------------------------------
# Public API


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Read the configuration from defaults, a file, the environment and ``overrides``.

    The file is ``path`` if given (it must exist), else ``$MONOQ_CONFIG`` if set (it must
    exist), else ``./config.toml`` if it exists; with none of these, the defaults apply.
    ``env`` defaults to ``os.environ``. ``overrides`` maps dotted keys to values, as the CLI
    gives them (``{"monoq.roles": ["worker"]}``); a string for a non-string key is parsed like
    an environment value (``"worker,scheduler"``) and None means "not given". Raises
    ConfigError on the first problem; its message starts with the dotted key (or the file's
    path) and says where the value came from.
    """
    env = os.environ if env is None else env
    layers: list[Layer] = []
    source: str | None = None
    schedules: tuple[ScheduleConfig, ...] = ()
    plugin_tables: dict[str, dict[str, Any]] = {}
    located = _locate(path, env)
    if located is not None:
        file_path, named_by = located
        data = read_toml(file_path, named_by)
        source = os.fspath(file_path)
        schedules = _schedules(data.pop("schedules", []), f" (in {file_path})")
        plugin_tables = _plugin_tables(data.pop(PLUGINS_SECTION, {}), f" (in {file_path})")
        layers.append(file_layer(_SECTIONS, data, f" (in {file_path})"))
    layers.append(_source_env_layer(env))
    # [plugins.*] keys are read by _plugin_options, MONOQ_CONFIG names the file
    layers.append(env_layer(_SECTIONS, env, ENV_PREFIX, skip=(CONFIG_ENV,)))
    layers.append(override_layer(_SECTIONS, overrides or {}, skip_sections=(PLUGINS_SECTION,)))
    merged = merge_layers(layers)
    sections = build_sections(_SECTIONS, merged)
    plugins = _plugin_options(plugin_tables, merged.get(PLUGINS_SECTION, {}), env,
                              overrides or {})
    return Config(**sections, schedules=schedules, plugins=plugins, source=source)


def _plugin_tables(value: object, where: str) -> dict[str, dict[str, Any]]:
    if not isinstance(value, Mapping):
        raise fail(PLUGINS_SECTION, "must be a table of [plugins.<name>] tables", value, where)
    tables: dict[str, dict[str, Any]] = {}
    for name, table in value.items():
        if not isinstance(table, Mapping):
            raise fail(f"{PLUGINS_SECTION}.{name}", "must be a table", table, where)
        tables[name] = dict(table)
    return tables


def _plugin_options(
    tables: Mapping[str, Mapping[str, Any]],
    source_env: Mapping[str, Value],
    env: Mapping[str, str],
    overrides: Mapping[str, Any],
) -> dict[str, dict[str, Any]]:
    """``[plugins.*]`` from the file, then source-system names, then ``MONOQ_PLUGINS_<NAME>_<KEY>``
    variables, then ``plugins.<name>.<key>`` overrides. The values stay raw (environment values
    are strings): each plugin checks its own table."""
    out = {name: dict(table) for name, table in tables.items()}
    for dotted, value in source_env.items():
        name, _, key = dotted.partition(".")
        out.setdefault(name, {})[key] = value.value
    prefix = f"{ENV_PREFIX}{PLUGINS_SECTION.upper()}_"
    for var in sorted(env):
        if var.startswith(prefix) and env[var].strip():
            name, _, key = var[len(prefix):].lower().partition("_")
            if not name or not key:
                raise ConfigError(f"{var}: expected {prefix}<PLUGIN>_<KEY>, e.g. "
                                  f"{prefix}LOG_PATH")
            out.setdefault(name, {})[key] = env[var]
    for dotted, value in overrides.items():
        if value is not None and dotted.startswith(PLUGINS_SECTION + "."):
            _, name, key = [*dotted.split(".", 2), "", ""][:3]
            if not name or not key:
                raise ConfigError(f"{dotted}: expected plugins.<name>.<key> (from override)")
            out.setdefault(name, {})[key] = value
    return out


def _schedule_key(index: int, item: object) -> str:
    """``schedules[2]``, or ``schedules[2] (nightly)`` when the table names its id."""
    sid = item.get("id") if isinstance(item, Mapping) else None
    return f"schedules[{index}] ({sid})" if isinstance(sid, str) else f"schedules[{index}]"


def _schedules(value: object, where: str) -> tuple[ScheduleConfig, ...]:
    """``[[schedules]]`` tables; ids must be unique."""
    if not isinstance(value, list):
        raise fail("schedules", "must be an array of tables ([[schedules]])", value, where)
    items = tuple(build(ScheduleConfig, item, _schedule_key(i, item), where)
                  for i, item in enumerate(value))
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise ConfigError(f"schedules: duplicate schedule id {item.id!r}{where}")
        seen.add(item.id)
    return items


# A token's optional keys, left out of ``config_as_dict`` when not set.
_TOKEN_OPTIONAL: Final = frozenset({"queues", "expires"})


def _plain(value: object) -> Any:
    cls: Any = type(value)
    if attrs.has(cls):
        return {f.name: _plain(getattr(value, f.name)) for f in attrs.fields(cls)
                if not (cls is ApiToken and f.name in _TOKEN_OPTIONAL
                        and getattr(value, f.name) == f.default)}
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def config_as_dict(config: Config) -> dict[str, Any]:
    """``{section: {key: value}}`` in TOML shapes (lists, dicts), for ``monoq config show``.

    ``source`` is not included. Loading the result as overrides gives an equal Config.
    """
    data = {section: _plain(getattr(config, section)) for section in _SECTIONS}
    if config.schedules:
        data["schedules"] = _plain(config.schedules)
    if config.plugins:
        data[PLUGINS_SECTION] = _plain(config.plugins)
    return data


@attrs.frozen
class ConfigKey:
    """One documented key: for ``monoq config show`` and the README's table."""

    key: str  # dotted, e.g. "worker.concurrency"
    env: str  # its MONOQ_* variable
    default: Any  # in TOML shape
    doc: str
    source_env: tuple[str, ...] = ()  # source-system names that also set it


def config_keys() -> list[ConfigKey]:
    """Every key, in section and field order, with its default, variable and documentation."""
    keys = []
    for section, cls in _SECTIONS.items():
        for field in attrs.fields(cls):
            dotted = f"{section}.{field.name}"
            keys.append(
                ConfigKey(
                    key=dotted,
                    env=f"{ENV_PREFIX}{section.upper()}_{field.name.upper()}",
                    default=_plain(field.default),
                    doc=spec_of(field).doc,
                    source_env=tuple(v for v, k in SOURCE_ENV_NAMES.items() if dotted in k),
                )
            )
    return keys
