"""Bearer tokens: creation, hashing, loading and constant-time lookup.

A token is ``mq_`` followed by 43 URL-safe characters (256 random bits). Only its SHA-256 (hex)
is stored: in ``[[api.tokens]]`` of config.toml, or in ``api.tokens_file``. Scopes:

- ``enqueue``: the submit routes only (``POST /api/v1/jobs``, ``/jobs/batch``, ``/enqueue``,
  ``POST /jobs``).
- ``read``: every GET of the API (jobs, queues, dead letters, workers, stats, metrics) but
  the audit log.
- ``admin``: everything, including submit, cancel, retry, pause/resume, the dead-letter queue
  and the audit log.

A token may also be limited to some queues (``queues = ["mail", "reports"]``: it then gets 403
for anything about another queue, and lists and stats show only its queues) and may expire
(``expires``, an RFC 3339 time with an offset: from then on it is refused with 401).

``api.tokens_file`` holds either TOML ``[[tokens]]`` tables (``name``, ``scope``, ``sha256``,
optionally ``queues`` and ``expires``) or plain lines ``name scope sha256`` followed by optional
``queues=mail,reports`` and ``expires=<RFC 3339 time>`` (``#`` starts a comment), the form
``create_token`` prints.
"""

import hashlib
import hmac
import secrets
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import attrs

from monoq.config import format_expiry, parse_expiry
from monoq.core.models import NAME_RE
from monoq.errors import ConfigError

Scope = Literal["enqueue", "read", "admin"]
SCOPES: Final[tuple[Scope, ...]] = ("enqueue", "read", "admin")
TOKEN_PREFIX: Final = "mq_"  # noqa: S105 - a recognisable prefix, not a secret

# Which token scopes a route's required scope accepts. admin can do everything; read and
# enqueue are disjoint (a producer's token cannot read other people's payloads).
ACCEPTED_SCOPES: Final[Mapping[str, frozenset[str]]] = {
    "enqueue": frozenset({"enqueue", "admin"}),
    "read": frozenset({"read", "admin"}),
    "admin": frozenset({"admin"}),
}


@attrs.frozen(repr=False)
class TokenEntry:
    """A configured token: its name (safe to log), scope and SHA-256 digest; the queues it is
    limited to (None: every queue) and when it expires (None: never)."""

    name: str
    scope: Scope
    digest: bytes
    queues: frozenset[str] | None = None
    expires: datetime | None = None

    def __repr__(self) -> str:
        return f"TokenEntry(name={self.name!r}, scope={self.scope!r})"

    def expired(self, now: datetime | None = None) -> bool:
        """True from ``expires`` on (``now`` defaults to the current time)."""
        return self.expires is not None and (now or datetime.now(UTC)) >= self.expires

    def allows(self, queue: str) -> bool:
        """Whether the token may touch ``queue``."""
        return self.queues is None or queue in self.queues


def hash_token(token: str) -> str:
    """The hex SHA-256 of ``token``: what the configuration stores."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def create_token(
    scope: str,
    *,
    name: str | None = None,
    queues: Sequence[str] | None = None,
    expires: datetime | None = None,
) -> tuple[str, str]:
    """A new random token of ``scope`` and the ``api.tokens_file`` line that admits it.

    The token is shown once and never stored; the line holds its name, scope and SHA-256, then
    ``queues=a,b`` when ``queues`` limits it and ``expires=<RFC 3339>`` when it expires.
    ``name`` defaults to ``<scope>-<first 8 hex digits of the hash>``. ValueError for a bad
    scope, name or queue name, an empty queue list, or a naive ``expires``.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    extra = ""
    if queues is not None:
        if not queues:
            raise ValueError("queues: give at least one queue (or none to allow every queue)")
        for queue in queues:
            if not NAME_RE.fullmatch(queue):
                raise ValueError(f"queues: {queue!r} is not a valid queue name")
        extra += " queues=" + ",".join(dict.fromkeys(queues))
    if expires is not None:
        if expires.tzinfo is None:
            raise ValueError("expires: give a time with a UTC offset")
        extra += " expires=" + format_expiry(expires)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    digest = hash_token(token)
    name = name or f"{scope}-{digest[:8]}"
    if not NAME_RE.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid token name")
    return token, f"{name} {scope} {digest}{extra}"


def _line_options(parts: Sequence[str], where: str) -> dict[str, str]:
    """``queues=...`` and ``expires=...`` of a tokens_file line, each at most once."""
    options: dict[str, str] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep or key not in ("queues", "expires") or key in options:
            raise ConfigError(f"{where}: expected {_LINE_FORM}, got {part!r}")
        options[key] = value
    return options


_LINE_FORM: Final = "'name scope sha256 [queues=a,b] [expires=<RFC 3339 time>]'"


def token_toml(config_line: str) -> str:
    """The ``[[api.tokens]]`` table for config.toml equivalent to a tokens_file line."""
    name, scope, digest, *rest = config_line.split()
    options = _line_options(rest, "token line")
    text = f'[[api.tokens]]\nname = "{name}"\nscope = "{scope}"\nsha256 = "{digest}"\n'
    if "queues" in options:
        listed = ", ".join(f'"{q}"' for q in options["queues"].split(","))
        text += f"queues = [{listed}]\n"
    if "expires" in options:
        text += f'expires = "{options["expires"]}"\n'
    return text


def _queues(value: object, where: str) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):  # the line form: a,b
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(f"{where}.queues: must be a non-empty list of queue names, got "
                          f"{value!r}")
    for queue in value:
        if not isinstance(queue, str) or not NAME_RE.fullmatch(queue):
            raise ConfigError(f"{where}.queues: {queue!r} is not a valid queue name")
    return frozenset(value)


def _expires(value: object, where: str) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        return parse_expiry(value)
    except ValueError as exc:
        raise ConfigError(f"{where}.expires: {exc}, got {value!r}") from None


def _entry(name: object, scope: object, sha256: object, where: str, *, queues: object = None,
           expires: object = None) -> TokenEntry:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(f"{where}: token name {name!r} is not a valid name")
    if scope not in SCOPES:
        raise ConfigError(f"{where}: scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    if not isinstance(sha256, str) or len(sha256) != 64:
        raise ConfigError(f"{where}: sha256 must be 64 hexadecimal characters")
    try:
        digest = bytes.fromhex(sha256)
    except ValueError:
        raise ConfigError(f"{where}: sha256 must be 64 hexadecimal characters") from None
    return TokenEntry(name=name, scope=scope, digest=digest, queues=_queues(queues, where),
                      expires=_expires(expires, where))


_REQUIRED: Final = frozenset({"name", "scope", "sha256"})
_ALLOWED: Final = _REQUIRED | {"queues", "expires"}


def parse_tokens_file(text: str, where: str) -> list[TokenEntry]:
    """Entries of a tokens file: TOML ``[[tokens]]`` tables, or ``name scope sha256`` lines."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        data = None
    if data is not None:
        tables = data.get("tokens", [])
        if set(data) - {"tokens"} or not isinstance(tables, list):
            raise ConfigError(f"{where}: expected only [[tokens]] tables")
        entries = []
        for index, table in enumerate(tables):
            key = f"{where}: tokens[{index}]"
            if not isinstance(table, dict) or not _REQUIRED <= set(table) <= _ALLOWED:
                raise ConfigError(f"{key} must have name, scope and sha256 (and optionally "
                                  "queues and expires), and nothing else")
            entries.append(_entry(table["name"], table["scope"], table["sha256"], key,
                                  queues=table.get("queues"), expires=table.get("expires")))
        return entries
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if not 3 <= len(parts) <= 5:
            raise ConfigError(f"{where}:{number}: expected {_LINE_FORM}")
        name, scope, sha256, *rest = parts
        options = _line_options(rest, f"{where}:{number}")
        entries.append(_entry(name, scope, sha256, f"{where}:{number}",
                              queues=options.get("queues"), expires=options.get("expires")))
    return entries


def load_tokens(tokens: Iterable[Any], tokens_file: str | Path | None) -> list[TokenEntry]:
    """Every configured token: ``[[api.tokens]]`` entries, then the tokens file's.

    Entries are ApiToken-like objects (``name``, ``scope``, ``sha256``, optionally ``queues``
    and ``expires``) or mappings with those keys. Duplicate names are a ConfigError (logs name
    the token that was used).
    """
    entries: list[TokenEntry] = []
    for index, item in enumerate(tokens):
        get = item.get if isinstance(item, Mapping) else lambda k, i=item: getattr(i, k, None)
        queues = get("queues")
        entries.append(_entry(get("name"), get("scope"), get("sha256"), f"api.tokens[{index}]",
                              queues=None if queues == () else queues,
                              expires=get("expires")))
    if tokens_file:
        path = Path(tokens_file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"api.tokens_file: cannot read {path}: {exc}") from None
        entries += parse_tokens_file(text, f"api.tokens_file ({path})")
    seen: set[str] = set()
    for entry in entries:
        if entry.name in seen:
            raise ConfigError(f"api.tokens: duplicate token name {entry.name!r}")
        seen.add(entry.name)
    return entries


class TokenTable:
    """Looks a presented token up among the configured ones in constant time."""

    def __init__(self, entries: Iterable[TokenEntry]) -> None:
        self.entries = tuple(entries)

    @property
    def enabled(self) -> bool:
        """True when at least one token is configured (auth is off otherwise)."""
        return bool(self.entries)

    def lookup(self, token: str) -> TokenEntry | None:
        """The entry whose hash matches ``token``, or None.

        Every configured digest is compared (``hmac.compare_digest``), so the time taken does
        not depend on which entry matched or how much of a digest did.
        """
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found: TokenEntry | None = None
        for entry in self.entries:
            if hmac.compare_digest(digest, entry.digest) and found is None:
                found = entry
        return found
