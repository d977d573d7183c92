"""The git job kinds: ``git.index``, ``git.update`` and ``git.delete`` (git-analytics' jobs).

Payload of all three: ``{"url": ..., "branch": ...}``. ``default_branch`` is accepted as an
alias of ``branch``; without either the job follows the remote's default branch (its HEAD).
Accepted URLs: ``https://host/path``, ``ssh://[user@]host[:port]/path``, scp-like
``user@host:path`` and, only with ``[plugins.git] allow_file_urls = true``,
``file:///absolute/path``. Everything else is refused at once (``SkipRetry``).

- ``git.index`` clones the branch into a fresh bare repository (under a temporary name, moved
  into place only once the clone and its analysis succeeded; an older clone is replaced) and
  answers the analysis: head commit, commit count, first and last commit time, authors,
  files by extension.
- ``git.update`` fetches the branch into the existing clone and analyses again. With no clone
  yet it clones, as index does. Both answers carry ``previous_head`` (the head of the analysis
  they replace) and ``new_commits`` (commits since then; null when there was none).
- ``git.delete`` removes the clone, its analysis and its lock file; deleting what is not there
  succeeds (jobs are delivered at least once).

Refused input is dead at once (``SkipRetry``) and changes nothing. A failing git command
(network, authentication, a repository or branch that does not exist: git's exit codes do not
tell these apart) raises ``GitCommandError`` with git's redacted stderr, an ordinary failed
attempt that is retried with the normal backoff and then dead-lettered.

A repository is the pair (URL without credentials, branch as given in the payload): its files
live in ``<storage_path>/<key>/`` where ``key = storage_key(url, branch)``, next to
``<storage_path>/.locks/<key>.lock`` (an exclusive ``flock`` serialises every job on that
repository across all worker processes of the host) and ``<storage_path>/.tmp/`` (clones in
progress; leftovers of a killed run are removed by the next job on the same repository).

git runs as a subprocess in its own process group, without prompts, without the system and
user configuration, and only over https, ssh (and file when allowed); on timeout, cancel or
shutdown the whole group is killed. Credentials (in an https URL, or ``[plugins.git]
credentials`` for its host) never reach git's command line or the disk: git gets them from a
credential helper that reads them from its environment, and every URL in results, errors and
logs has them replaced by ``***``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar
from urllib.parse import SplitResult, quote, unquote, urlsplit

import anyio

import monoq

logger = logging.getLogger(__name__)

__all__ = ["GitCommandError", "GitPlugin", "InvalidInput", "check_branch", "parse_remote",
           "redact", "storage_key"]

# --- input checks ---------------------------------------------------------------------------

MAX_URL_LENGTH = 4096
MAX_BRANCH_BYTES = 255
PAYLOAD_KEYS = ("branch", "default_branch", "url")

_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")
_REMOTE_HELPER = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")  # git's <transport>::<address>
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_SSH_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
_SCP_LIKE = re.compile(
    r"^(?P<user>[A-Za-z0-9_][A-Za-z0-9._-]*)@"
    r"(?P<host>[A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\])"
    r":(?P<path>.*)$"
)
# userinfo after a scheme, in free text (git's stderr, messages)
_USERINFO_IN_TEXT = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s'\"]+@")
_DEFAULT_PORTS = {"https": 443, "ssh": 22}
_AUTHORITY = re.compile(rf"^(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-f:.]+\])(?::[0-9]{{1,5}})?$")


class InvalidInput(ValueError):
    """A payload value the git jobs refuse; the message says why (never with credentials)."""


def redact(text: str, secrets_: Sequence[str] = ()) -> str:
    """``text`` with the userinfo of every URL replaced by ``***`` and each of ``secrets_``
    (values of at least 4 characters) replaced by ``***``."""
    for secret in secrets_:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return _USERINFO_IN_TEXT.sub(r"\1***@", text)


@dataclass(frozen=True, slots=True)
class Remote:
    """A checked remote URL.

    ``url`` is what git is given (no credentials), ``display`` what results, errors and logs
    show (credentials as ``***``), ``key`` the normalised form that names its storage.
    ``username``/``password`` are the (percent-decoded) credentials of an https URL, for the
    credential helper of ``credential_base`` (``https://host[:port]``); ``secrets`` the strings
    to scrub from any text (the secret as written in the URL and decoded).
    """

    kind: str  # "https", "ssh", "scp" or "file"
    url: str
    display: str
    key: str
    authority: str = ""  # host[:port] of an https URL (lower case, no default port)
    username: str | None = None
    password: str | None = None
    credential_base: str | None = None
    secrets: tuple[str, ...] = ()


def _mask(url: str) -> str:
    """A URL not yet understood, as messages may show it: whatever could be credentials (all
    before the last '@' of the part after the scheme, or a user part that is not a plain ssh
    user name) becomes ``***``. It may hide more than needed; it never shows a secret."""
    scheme, sep, rest = url.partition("://")
    if sep:
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}" if "@" in rest else url
    user, at, rest = url.rpartition("@")
    return f"***@{rest}" if at and not _SSH_USER.match(user) else url


def _refuse(display: str, reason: str) -> InvalidInput:
    return InvalidInput(f"payload.url {display!r} is refused: {reason}")


def _host(parts: SplitResult, display: str) -> str:
    """The lower-cased host of ``parts``, bracketed when IPv6; refuses what is not a host."""
    try:
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise _refuse(display, "the port is not a number between 0 and 65535") from None
    if not host:
        raise _refuse(display, "it names no host")
    if host.startswith("-"):
        raise _refuse(display, "a host may not start with '-' (ssh would read it as an option)")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _refuse(display, f"{host!r} is not a host name") from None
        return f"[{host.lower()}]"
    if not _HOSTNAME.match(host):
        raise _refuse(display, f"{host!r} is not a host name")
    return host.lower()


def _port_suffix(parts: SplitResult, scheme: str) -> str:
    port = parts.port
    return f":{port}" if port is not None and port != _DEFAULT_PORTS.get(scheme) else ""


def _repo_path(path: str, display: str) -> str:
    if path.rstrip("/") in ("", "/~"):
        raise _refuse(display, "it names no repository (the path is empty)")
    return path


def parse_remote(url: object, *, allow_file_urls: bool) -> Remote:
    """Check a remote URL and split off its credentials; InvalidInput says what is wrong."""
    if not isinstance(url, str):
        raise InvalidInput(f"payload.url must be a string, got {type(url).__name__}")
    if not url:
        raise InvalidInput("payload.url is required (a https://, ssh:// or user@host:path URL)")
    display = _mask(url)
    if len(url) > MAX_URL_LENGTH:
        raise _refuse(display[:80] + "...", f"it is longer than {MAX_URL_LENGTH} characters")
    if _CONTROL_OR_SPACE.search(url):
        raise _refuse(display, "it contains whitespace or control characters "
                               "(percent-encode them)")
    if url.startswith("-"):
        raise _refuse(display, "it starts with '-' (git would read it as an option)")
    if _REMOTE_HELPER.match(url):
        raise _refuse(display, "remote helpers (<transport>::<address>, e.g. ext::) run "
                               "arbitrary commands and are not accepted")
    if "://" in url:
        scheme = url.split("://", 1)[0].lower()
        if scheme == "https":
            return _parse_https(url, display)
        if scheme == "ssh":
            return _parse_ssh(url, display)
        if scheme == "file":
            return _parse_file(url, display, allow_file_urls)
        if scheme == "http":
            raise _refuse(display, "plain http is not accepted (unencrypted); use https://")
        if scheme == "git":
            raise _refuse(display, "the git:// protocol is not accepted (unencrypted, "
                                   "unauthenticated); use https://")
        raise _refuse(display, f"the scheme {scheme!r} is not accepted; use https://, ssh:// "
                               "or user@host:path")
    match = _SCP_LIKE.match(url)
    if match is None and (url.startswith(("/", ".", "~")) or ":" not in url):
        raise _refuse(display, "local paths are not accepted; use a file:///absolute/path URL "
                               "(needs [plugins.git] allow_file_urls = true)")
    if match is None:
        raise _refuse(display, "it is not a https://, ssh:// or user@host:path URL")
    user, host, path = match["user"], match["host"], match["path"]
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise _refuse(display, f"{host!r} is not a host name") from None
    elif not _HOSTNAME.match(host):
        raise _refuse(display, f"{host!r} is not a host name")
    if path.startswith(":"):
        raise _refuse(display, "the path may not start with ':'")
    _repo_path(path, display)
    normal = f"{user}@{host.lower()}:{path.rstrip('/') or path}"
    return Remote(kind="scp", url=url, display=url, key=normal)


def _parse_https(url: str, display: str) -> Remote:
    parts = urlsplit(url)
    if parts.fragment or url.endswith("#"):
        raise _refuse(display, "a URL fragment (#...) is not accepted")
    host = _host(parts, display)
    path = _repo_path(parts.path, display)
    port = _port_suffix(parts, "https")
    query = f"?{parts.query}" if parts.query else ""
    username = password = None
    scrub: set[str] = set()
    if "@" in parts.netloc:
        username = unquote(parts.username or "")
        password = unquote(parts.password) if parts.password is not None else None
        # The password is the secret; without one, the user name is (a token as user name).
        raw = parts.password if password else parts.username
        secret = password or username
        scrub = {raw or "", secret, quote(secret, safe="")} - {""}
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in username + (password or "")):
            # the credential protocol is line based: a newline would forge fields
            raise _refuse(display, "the credentials contain control characters")
        if not username and not password:
            username = None
    # Default port left out everywhere, so that credentials configured for "host" apply.
    plain = f"https://{host}{port}{path}{query}"
    shown = f"https://***@{host}{port}{path}{query}" if (username or password) else plain
    return Remote(kind="https", url=plain, display=shown,
                  key=f"https://{host}{port}{path.rstrip('/')}{query}",
                  authority=f"{host}{port}", username=username, password=password,
                  credential_base=f"https://{host}{port}" if (username or password) else None,
                  secrets=tuple(sorted(scrub, key=len, reverse=True)))


def _parse_ssh(url: str, display: str) -> Remote:
    parts = urlsplit(url)
    if parts.fragment or parts.query or url.endswith(("#", "?")):
        raise _refuse(display, "a query or fragment is not accepted in an ssh URL")
    host = _host(parts, display)
    if parts.password is not None:
        raise _refuse(display, "an ssh URL cannot carry a password (git runs without "
                               "prompts); use an ssh key")
    user = parts.username
    if user is not None and not _SSH_USER.match(user):
        raise _refuse(display, f"{user!r} is not an ssh user name")
    path = _repo_path(parts.path, display)
    explicit_port = f":{parts.port}" if parts.port is not None else ""
    prefix = f"{user}@" if user else ""
    return Remote(kind="ssh", url=f"ssh://{prefix}{host}{explicit_port}{path}", display=url,
                  key=f"ssh://{prefix}{host}{_port_suffix(parts, 'ssh')}{path.rstrip('/')}")


def _parse_file(url: str, display: str, allowed: bool) -> Remote:
    if not allowed:
        raise _refuse(display, "file:// URLs are disabled; set [plugins.git] allow_file_urls = "
                               "true to allow them")
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise _refuse(display, "a file URL must be file:///absolute/path (no host, no "
                               "credentials)")
    if parts.query or parts.fragment or url.endswith(("#", "?")):
        raise _refuse(display, "a query or fragment is not accepted in a file URL")
    path = parts.path
    if not path.startswith("/") or path.rstrip("/") == "":
        raise _refuse(display, "a file URL must name an absolute path")
    return Remote(kind="file", url=f"file://{path}", display=url,
                  key=f"file://{path.rstrip('/')}")


def check_branch(name: object, field: str = "payload.branch") -> str:
    """``name`` when it is a branch name git accepts (``git check-ref-format``) that does not
    start with '-' and is not ``HEAD``; InvalidInput otherwise."""
    if not isinstance(name, str):
        raise InvalidInput(f"{field} must be a string, got {type(name).__name__}")
    reason = _branch_problem(name)
    if reason:
        raise InvalidInput(f"{field} {name!r} is not a valid branch name: {reason}")
    return name


def _branch_problem(name: str) -> str:
    if not name:
        return "it is empty (leave it out to follow the remote's default branch)"
    if len(name.encode()) > MAX_BRANCH_BYTES:
        return f"it is longer than {MAX_BRANCH_BYTES} bytes"
    if name.startswith("-"):
        return "it starts with '-' (git would read it as an option)"
    if name in ("HEAD", "@"):
        return f"{name!r} is not a branch"
    bad = sorted({c for c in name if ord(c) < 0x20 or ord(c) == 0x7F or c in " ~^:?*[\\"})
    if bad:
        return "it contains " + ", ".join(repr(c) for c in bad)
    for fragment in ("..", "@{", "//"):
        if fragment in name:
            return f"it contains {fragment!r}"
    if name.startswith("/") or name.endswith(("/", ".")):
        return "it starts with '/' or ends with '/' or '.'"
    for part in name.split("/"):
        if part.startswith("."):
            return "a part of it starts with '.'"
        if part.endswith(".lock"):
            return "a part of it ends with '.lock'"
    return ""


def storage_key(url: str, branch: str | None = None) -> str:
    """The storage name of a repository: 32 hex digits of SHA-256 over the normalised URL
    without credentials and the branch as given (``None``: the remote's default branch, a
    repository of its own). Raises InvalidInput for URLs and branches the jobs refuse."""
    remote = parse_remote(url, allow_file_urls=True)
    if branch is not None:
        check_branch(branch)
    return _key(remote, branch)


def _key(remote: Remote, branch: str | None) -> str:
    # A newline can be in neither a checked URL nor a branch name: the pair is unambiguous.
    return hashlib.sha256(f"{remote.key}\n{branch or ''}".encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Request:
    """A checked payload: the remote, the requested branch (None: remote HEAD) and its key."""

    remote: Remote
    branch: str | None

    @property
    def key(self) -> str:
        """The repository's storage key (see ``storage_key``)."""
        return _key(self.remote, self.branch)


def parse_payload(payload: object, *, allow_file_urls: bool) -> Request:
    """The Request of a job payload; InvalidInput names the field at fault."""
    if not isinstance(payload, Mapping):
        raise InvalidInput('the payload must be an object {"url": ..., "branch": ...}, got '
                           f"{type(payload).__name__}")
    unknown = sorted(str(k) for k in payload if k not in PAYLOAD_KEYS)
    if unknown:
        raise InvalidInput(f"payload: unknown key {unknown[0]!r}; allowed: "
                           + ", ".join(PAYLOAD_KEYS))
    remote = parse_remote(payload.get("url"), allow_file_urls=allow_file_urls)
    branch = payload.get("branch")
    alias = payload.get("default_branch")
    if branch is not None:
        check_branch(branch)
    if alias is not None:
        check_branch(alias, "payload.default_branch")
        if branch is not None and branch != alias:
            raise InvalidInput(f"payload.branch {branch!r} and payload.default_branch "
                               f"{alias!r} differ; give one of them")
        branch = alias
    return Request(remote, branch)


# --- running git ----------------------------------------------------------------------------


class GitCommandError(Exception):
    """A git command failed or could not run; the message carries git's (redacted) stderr.

    Raised as an ordinary failed attempt: retried with the normal backoff, then dead.
    """


STDERR_KEEP = 2000  # characters of git's stderr kept in an error: its end, where "fatal:" is
STDOUT_LIMIT = 1 << 20  # bytes kept of a command whose output is collected, not streamed

# Environment variables passed to git from ours; every other GIT_* is dropped (a GIT_DIR or
# GIT_CONFIG_* inherited from a hook or a shell must not steer these commands).
_PASSED_GIT_VARIABLES = frozenset({
    "GIT_SSH", "GIT_SSH_COMMAND", "GIT_SSH_VARIANT", "GIT_SSL_CAINFO", "GIT_SSL_CAPATH",
    "GIT_PROXY_COMMAND", "GIT_EXEC_PATH",
})
_CREDENTIAL_HELPER = (
    # Runs under sh; the secrets come from the environment, never from this text.
    '!f() { test "$1" = get || exit 0; '
    "printf 'username=%s\\npassword=%s\\n' \"$MONOQ_GIT_USERNAME\" \"$MONOQ_GIT_PASSWORD\"; }; f"
)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _Records:
    """Splits a byte stream into records at ``sep`` and hands each to ``handle``."""

    def __init__(self, sep: bytes, handle: Callable[[bytes], None]) -> None:
        self.sep = sep
        self.handle = handle
        self.rest = b""

    def feed(self, chunk: bytes) -> None:
        data = self.rest + chunk
        *records, self.rest = data.split(self.sep)
        for record in records:
            self.handle(record)

    def close(self) -> None:
        if self.rest:
            self.handle(self.rest)
            self.rest = b""


class _Git:
    """Runs git commands for one job on one remote."""

    def __init__(self, plugin: GitPlugin, remote: Remote) -> None:
        self.plugin = plugin
        self.remote = remote
        # Credentials of the URL itself, else those [plugins.git] credentials has for its host.
        self.username, self.password = remote.username, remote.password
        self.credential_base = remote.credential_base
        self.secrets = remote.secrets
        configured = plugin.credentials.get(remote.authority) if remote.kind == "https" else None
        if self.credential_base is None and configured is not None:
            self.username, self.password = configured
            self.credential_base = f"https://{remote.authority}"
            self.secrets = tuple(sorted({self.password or self.username} - {""}))
        self.config = self._config_args()
        self.env = self._environment()

    def _config_args(self) -> list[str]:
        allowed = ["https", "ssh"] + (["file"] if self.plugin.allow_file_urls else [])
        args = ["-c", "protocol.allow=never"]
        for protocol in allowed:
            args += ["-c", f"protocol.{protocol}.allow=always"]
        args += [
            "-c", "core.hooksPath=" + os.devnull,
            # A detached auto-gc would leave our process group and outlive the job.
            "-c", "gc.autoDetach=false",
            "-c", "credential.helper=",
        ]
        if self.credential_base:
            args += ["-c", f"credential.{self.credential_base}.helper={_CREDENTIAL_HELPER}"]
        return args

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("GIT_", "MONOQ_GIT_"))
               or k in _PASSED_GIT_VARIABLES}
        env.update({
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "",  # set but empty: git then neither asks nor falls back to ssh's
            "SSH_ASKPASS": "",
            "SSH_ASKPASS_REQUIRE": "never",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "LC_ALL": "C",
            "GIT_HTTP_LOW_SPEED_LIMIT": "1000",  # bytes/s; below it for ...
            "GIT_HTTP_LOW_SPEED_TIME": "60",  # ... this many seconds, a transfer is stalled
        })
        if "GIT_SSH" not in env and "GIT_SSH_COMMAND" not in env:
            env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"
        if self.credential_base:
            env["MONOQ_GIT_USERNAME"] = self.username or ""
            env["MONOQ_GIT_PASSWORD"] = self.password or ""
        return env

    def redact(self, text: str) -> str:
        """``text`` without this remote's credentials."""
        return redact(text, self.secrets)

    async def run(self, *args: str, what: str, sink: _Records | None = None,
                  check: bool = True) -> tuple[int, bytes]:
        """Run ``git <config> <args>``; answer (exit code, stdout or b"" when streamed).

        The process leads its own process group; on cancellation, on the command timeout and
        on any error the whole group is SIGKILLed and reaped before this returns.
        """
        plugin = self.plugin
        command = [plugin.git, *self.config, *args]
        try:
            # Shielded: a cancellation while the process is being set up would leave it
            # started but without the handle that kills its group (asyncio then kills only
            # the leader, and git's children live on).
            with anyio.CancelScope(shield=True):
                process = await anyio.open_process(
                    command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, cwd=plugin.storage_path, env=self.env,
                    start_new_session=True)
        except OSError as exc:
            raise GitCommandError(f"cannot start git {plugin.git!r} (set [plugins.git] git): "
                                  f"{exc.strerror or exc}") from None
        out = bytearray()
        err = bytearray()
        code: int | None = None
        try:
            stdout, stderr = process.stdout, process.stderr
            if stdout is None or stderr is None:  # cannot happen: both are pipes
                raise GitCommandError(f"{what}: no pipes to git")

            async def drain_stderr() -> None:
                async for chunk in stderr:
                    err.extend(chunk)
                    if len(err) > 4 * STDERR_KEEP:
                        del err[: len(err) - 2 * STDERR_KEEP]

            with anyio.move_on_after(plugin.command_timeout):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(drain_stderr)
                    async for chunk in stdout:
                        if sink is not None:
                            sink.feed(chunk)
                        elif len(out) < STDOUT_LIMIT:
                            out.extend(chunk[: STDOUT_LIMIT - len(out)])
                code = await process.wait()
            if code is None:  # only the deadline stops the block without an exception
                raise GitCommandError(
                    f"{what} did not finish within {plugin.command_timeout:g}s "
                    "([plugins.git] command_timeout_seconds)")
        finally:
            if code is None:  # cancelled, timed out or failed: nothing of it may survive
                _kill_group(process.pid)
            with anyio.CancelScope(shield=True):
                await process.aclose()
        if sink is not None:
            sink.close()
        if code != 0 and check:
            text = err.decode("utf-8", "replace").strip()[-STDERR_KEEP:]
            raise GitCommandError(f"{what} failed ({_exit_text(code)}): "
                                  f"{self.redact(text) or '(no message)'}")
        return code, bytes(out)


# --- analysis -------------------------------------------------------------------------------


def _rfc3339(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _History:
    """Tallies ``git log --format=%ct%x1f%aN%x1f%aE`` records."""

    def __init__(self) -> None:
        self.count = 0
        self.first: int | None = None
        self.last: int | None = None
        self.authors: Counter[tuple[str, str]] = Counter()

    def add(self, record: bytes) -> None:
        if not record:
            return
        when, name, email = record.decode("utf-8", "replace").split("\x1f", 2)
        seconds = int(when)
        self.count += 1
        self.first = seconds if self.first is None else min(self.first, seconds)
        self.last = seconds if self.last is None else max(self.last, seconds)
        self.authors[(name, email)] += 1


class _Tree:
    """Tallies ``git ls-tree -r -z`` records: files (blobs, symlinks too) by extension."""

    def __init__(self) -> None:
        self.files = 0
        self.extensions: Counter[str] = Counter()

    def add(self, record: bytes) -> None:
        meta, _, path = record.partition(b"\t")
        fields = meta.split(b" ")
        if len(fields) < 3 or fields[1] != b"blob":  # submodules are commits, not files
            return
        name = path.rsplit(b"/", 1)[-1].decode("utf-8", "replace")
        extension = PurePosixPath(name).suffix.lower()
        self.files += 1
        self.extensions[extension or "(none)"] += 1


def _top_extensions(counts: Counter[str], limit: int) -> dict[str, int]:
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    top = dict(ordered[:limit])
    rest = sum(n for _, n in ordered[limit:])
    if rest:
        top["(other)"] = top.get("(other)", 0) + rest
    return top


async def _analyse(git: _Git, repo: Path, branch: str, *, max_authors: int,
                   max_extensions: int) -> dict[str, Any]:
    """The analysis of ``refs/heads/<branch>`` in the bare repository ``repo``."""
    ref = f"refs/heads/{branch}"
    gd = f"--git-dir={repo}"
    _, head_out = await git.run(gd, "log", "-1", "--format=%H%x1f%ct%x1f%aN%x1f%aE%x1f%s", ref,
                                "--", what=f"git log of {branch}")
    sha, when, name, email, subject = head_out.decode("utf-8", "replace").rstrip("\n").split(
        "\x1f", 4)
    history = _History()
    await git.run(gd, "log", "--format=%ct%x1f%aN%x1f%aE", ref, "--",
                  what=f"git log of {branch}", sink=_Records(b"\n", history.add))
    tree = _Tree()
    await git.run(gd, "ls-tree", "-r", "-z", "--full-tree", sha, what=f"git ls-tree of {sha}",
                  sink=_Records(b"\0", tree.add))
    authors = sorted(history.authors.items(), key=lambda item: (-item[1], item[0]))
    return {
        "url": git.remote.display,
        "branch": branch,
        "head": {"sha": sha, "subject": subject, "author_name": name, "author_email": email,
                 "committed_at": _rfc3339(int(when))},
        "commit_count": history.count,
        "first_commit_at": _rfc3339(history.first) if history.first is not None else None,
        "last_commit_at": _rfc3339(history.last) if history.last is not None else None,
        "author_count": len(authors),
        "authors": [{"name": n, "email": e, "commits": c}
                    for (n, e), c in authors[:max_authors]],
        "file_count": tree.files,
        "files_by_extension": _top_extensions(tree.extensions, max_extensions),
    }


# --- storage --------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with temporary.open("w", encoding="utf-8") as file:
            json.dump(data, file, indent=2, ensure_ascii=False)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("git: ignoring unreadable %s: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


async def _in_thread(func: Callable[..., Any], *args: Any) -> Any:
    """Run blocking file work in a thread; it runs to its end even when we are cancelled."""
    return await anyio.to_thread.run_sync(func, *args)


def _is_file_at(fd: int, path: Path) -> bool:
    """Whether the open file ``fd`` is the file at ``path`` (same inode), not a deleted one."""
    try:
        current = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (current.st_ino, current.st_dev) == (held.st_ino, held.st_dev)


@contextlib.asynccontextmanager
async def _repository_lock(path: Path, display: str) -> AsyncIterator[Path]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block.

    Non-blocking attempts with short sleeps, so the wait stays cancellable and never ties up a
    thread. After each successful lock the file is checked to still be the one at ``path``:
    ``git.delete`` unlinks the lock file while holding it, and a waiter that locked the
    unlinked file must start over on the new one.
    """
    delay = 0.01
    announced = False
    fd = -1
    try:
        while True:
            if fd < 0:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not announced:
                    logger.info("git: %s is busy (another job holds %s); waiting", display,
                                path.name)
                    announced = True
                await anyio.sleep(delay)
                delay = min(delay * 2, 0.25)
                continue
            if _is_file_at(fd, path):
                break
            os.close(fd)  # locked a file that was deleted meanwhile: take the new one
            fd = -1
        yield path
    finally:
        if fd >= 0:
            os.close(fd)


def _credentials(table: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """``{"host[:port]": "user:password" or "token"}`` -> ``{authority: (user, password)}``.

    A bare token is sent as the user name with an empty password. Errors never show a value.
    """
    found: dict[str, tuple[str, str]] = {}
    for authority, value in table.items():
        name = authority.lower().removesuffix(":443")
        if not _AUTHORITY.match(name):
            raise monoq.ConfigError(f"plugins.git.credentials: {authority!r} is not a host name "
                                    "(write host or host:port, as in the https URLs)")
        if not value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise monoq.ConfigError(f"plugins.git.credentials: the value for {authority!r} is "
                                    "empty or contains control characters")
        user, sep, password = value.partition(":")
        found[name] = (user, password) if sep else (value, "")
    return found


class GitPlugin(monoq.Plugin):
    """Settings and storage of the git jobs (``[plugins.git]``).

    Options: ``storage_path`` (default ``./git-repos``; also ``GIT_STORAGE_PATH``),
    ``allow_file_urls`` (false), ``git`` (the binary, default ``git`` from PATH),
    ``command_timeout_seconds`` (0: no limit of its own, the job's timeout applies),
    ``max_authors`` (100) and ``max_extensions`` (100): how many entries the result lists,
    ``credentials`` (``{"host[:port]": "user:password" or "token"}`` for https URLs that carry
    none, so that tokens need not sit in job payloads).
    """

    name: ClassVar[str] = "git"

    def __init__(self, options: monoq.PluginOptions) -> None:
        storage = options.string("storage_path", "./git-repos")
        self.allow_file_urls = options.boolean("allow_file_urls", False)
        self.git = options.string("git", "git")
        timeout = options.number("command_timeout_seconds", 0, min=0, max=7 * 86400)
        self.max_authors = options.integer("max_authors", 100, min=1, max=100_000)
        self.max_extensions = options.integer("max_extensions", 100, min=1, max=100_000)
        self.credentials = _credentials(options.table("credentials"))
        options.finish()
        if not storage.strip():
            raise monoq.ConfigError("plugins.git.storage_path: must not be empty")
        if not self.git.strip():
            raise monoq.ConfigError("plugins.git.git: must not be empty")
        self.storage_path = Path(storage).absolute()
        self.command_timeout: float | None = timeout or None

    async def start(self) -> None:
        """Create the storage folders; without them or without git only warn: the worker
        runs other jobs too, and each git job then fails with the reason."""
        try:
            self._folders()
        except GitCommandError as exc:
            logger.warning("git: %s; git jobs will fail", exc)
        if shutil.which(self.git) is None:
            logger.warning("git: %r is not an executable on PATH; git jobs will fail "
                           "(set [plugins.git] git)", self.git)

    def _folders(self) -> None:
        try:
            self.storage_path.mkdir(mode=0o700, parents=True, exist_ok=True)
            (self.storage_path / ".locks").mkdir(mode=0o700, exist_ok=True)
            (self.storage_path / ".tmp").mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise GitCommandError(f"cannot create the git storage {self.storage_path} "
                                  f"([plugins.git] storage_path): {exc}") from None

    def request(self, payload: object) -> Request:
        """The checked payload; SkipRetry (dead at once) for input the jobs refuse."""
        try:
            return parse_payload(payload, allow_file_urls=self.allow_file_urls)
        except InvalidInput as exc:
            raise monoq.SkipRetry(str(exc)) from None

    # Paths of one repository.
    def repository_dir(self, key: str) -> Path:
        """Where a repository's clone (``repo.git``) and ``analysis.json`` live."""
        return self.storage_path / key

    def _lock_path(self, key: str) -> Path:
        return self.storage_path / ".locks" / f"{key}.lock"

    def _scratch(self, key: str, what: str) -> Path:
        return self.storage_path / ".tmp" / f"{key}.{what}.{secrets.token_hex(4)}"

    def _leftovers(self, key: str) -> list[Path]:
        return sorted((self.storage_path / ".tmp").glob(f"{key}.*"))

    async def _clean_leftovers(self, key: str) -> int:
        """Remove what killed runs on this repository left in .tmp (called under its lock)."""
        found = self._leftovers(key)
        for path in found:
            logger.info("git: removing %s left by an interrupted job", path)
            await _in_thread(_remove_tree, path)
        return len(found)

    # --- the jobs --------------------------------------------------------------------------

    async def index(self, payload: object) -> dict[str, Any]:
        """Clone (afresh, replacing an older clone) and analyse; the analysis is the result."""
        return await self._clone_or_fetch(self.request(payload), "index")

    async def update(self, payload: object) -> dict[str, Any]:
        """Fetch into the clone (cloning when there is none) and analyse again."""
        return await self._clone_or_fetch(self.request(payload), "update")

    async def delete(self, payload: object) -> dict[str, Any]:
        """Remove the clone, its analysis, leftovers and lock file; fine when nothing is there."""
        request = self.request(payload)
        self._folders()
        target = self.repository_dir(request.key)
        lock = self._lock_path(request.key)
        async with _repository_lock(lock, request.remote.display):
            repository = (target / "repo.git").exists()
            analysis = (target / "analysis.json").exists()
            existed = target.exists()
            leftovers = len(self._leftovers(request.key))
            if existed:
                # Out of the trusted place first, so a crash in the middle of the removal
                # leaves a leftover for the next job, not half a repository.
                trash = self._scratch(request.key, "deleted")
                await _in_thread(target.rename, trash)
                await _in_thread(_fsync_dir, self.storage_path)
            await self._clean_leftovers(request.key)
            lock.unlink(missing_ok=True)
        logger.info("git: deleted %s (%s): %s", request.remote.display,
                    request.branch or "remote HEAD", "removed" if existed else "was not stored")
        return {
            "operation": "delete",
            "url": request.remote.display,
            "branch": request.branch,
            "storage_key": request.key,
            "existed": existed,
            "removed": {"repository": repository, "analysis": analysis,
                        "leftovers": leftovers},
        }

    async def _clone_or_fetch(self, request: Request, operation: str) -> dict[str, Any]:
        self._folders()
        git = _Git(self, request.remote)
        target = self.repository_dir(request.key)
        async with _repository_lock(self._lock_path(request.key), request.remote.display):
            await self._clean_leftovers(request.key)
            previous = _read_json(target / "analysis.json")
            if operation == "update" and (target / "repo.git").is_dir() and previous:
                result = await self._fetch(git, request, target, previous)
            else:
                result = await self._clone(git, request, target, previous)
        # the same fields, in reading order: what was done to what first
        result = {"operation": operation, "url": result["url"], "branch": result["branch"],
                  "storage_key": result["storage_key"]} | result
        logger.info("git: %s of %s (%s) done: %d commits, head %s", operation,
                    request.remote.display, result["branch"], result["commit_count"],
                    result["head"]["sha"])
        return result

    async def _default_branch(self, git: _Git, repo: Path) -> str:
        """The branch the remote's HEAD points at (``git ls-remote --symref``)."""
        what = f"git ls-remote of {git.remote.display}"
        _, out = await git.run(f"--git-dir={repo}", "ls-remote", "--symref", "--",
                               git.remote.url, "HEAD", what=what)
        for line in out.decode("utf-8", "replace").splitlines():
            target, _, name = line.partition("\t")
            if name == "HEAD" and target.startswith("ref: refs/heads/"):
                branch = target.removeprefix("ref: refs/heads/")
                if not _branch_problem(branch):
                    return branch
        raise GitCommandError(f"{what}: the remote has no default branch (an empty repository "
                              "or a detached HEAD); name a branch in the payload")

    async def _fetch_branch(self, git: _Git, repo: Path, branch: str) -> None:
        await git.run(f"--git-dir={repo}", "fetch", "--quiet", "--no-tags",
                      "--no-write-fetch-head", "--", git.remote.url,
                      f"+refs/heads/{branch}:refs/heads/{branch}",
                      what=f"git fetch of {git.remote.display} (branch {branch})")
        await git.run(f"--git-dir={repo}", "symbolic-ref", "HEAD", f"refs/heads/{branch}",
                      what="git symbolic-ref")

    async def _analyse(self, git: _Git, request: Request, repo: Path, branch: str,
                       previous: Mapping[str, Any] | None) -> dict[str, Any]:
        """The analysis, with ``previous_head`` (from ``previous``) and ``new_commits`` (how
        many commits the new head has that the previous one had not; null when unknown)."""
        result = await _analyse(git, repo, branch, max_authors=self.max_authors,
                                max_extensions=self.max_extensions)
        head = previous.get("head") if previous else None
        old = head.get("sha") if isinstance(head, dict) else None
        new_commits = None
        if isinstance(old, str) and re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", old):
            code, _ = await git.run(f"--git-dir={repo}", "cat-file", "-e", f"{old}^{{commit}}",
                                    what="git cat-file", check=False)
            if code == 0:
                _, out = await git.run(f"--git-dir={repo}", "rev-list", "--count",
                                       result["head"]["sha"], f"^{old}", "--",
                                       what="git rev-list")
                new_commits = int(out.strip() or 0)
        else:
            old = None
        result.update(storage_key=request.key, previous_head=old, new_commits=new_commits,
                      analyzed_at=_now())
        return result

    async def _clone(self, git: _Git, request: Request, target: Path,
                     previous: Mapping[str, Any] | None) -> dict[str, Any]:
        """Clone into .tmp, analyse, and move into place only when all of it succeeded."""
        work = self._scratch(request.key, "clone")
        repo = work / "repo.git"
        try:
            await _in_thread(work.mkdir)
            await git.run("init", "--bare", "--quiet", "--template=", "--", str(repo),
                          what="git init")
            branch = request.branch or await self._default_branch(git, repo)
            await self._fetch_branch(git, repo, branch)
            result = await self._analyse(git, request, repo, branch, previous)
            await _in_thread(_write_json, work / "analysis.json", result)
            await _in_thread(self._install, work, target, request.key)
        finally:
            if work.exists():  # failed or cancelled: nothing of this clone may stay
                with anyio.CancelScope(shield=True):
                    await _in_thread(_remove_tree, work)
        return result

    def _install(self, work: Path, target: Path, key: str) -> None:
        """Put a finished clone in place of ``target`` (moving an older one out first)."""
        old = None
        if target.exists():
            old = self._scratch(key, "replaced")
            target.rename(old)
        work.rename(target)
        _fsync_dir(self.storage_path)
        if old is not None:
            _remove_tree(old)

    async def _fetch(self, git: _Git, request: Request, target: Path,
                     previous: Mapping[str, Any]) -> dict[str, Any]:
        """Fetch into the trusted clone (git updates refs only after the objects arrived),
        analyse, and replace analysis.json atomically."""
        repo = target / "repo.git"
        branch = request.branch or await self._default_branch(git, repo)
        await self._fetch_branch(git, repo, branch)
        result = await self._analyse(git, request, repo, branch, previous)
        await _in_thread(_write_json, target / "analysis.json", result)
        return result


# --- handlers -------------------------------------------------------------------------------

# Clones of large repositories take longer than the 5 minutes jobs get by default.
_CLONE_TIMEOUT = 1800


@monoq.handler("git.index", timeout=_CLONE_TIMEOUT)
async def index(ctx: monoq.Context, payload: Any) -> dict[str, Any]:
    """Clone a repository's branch afresh and answer its analysis."""
    return await ctx.plugin(GitPlugin).index(payload)


@monoq.handler("git.update", timeout=_CLONE_TIMEOUT)
async def update(ctx: monoq.Context, payload: Any) -> dict[str, Any]:
    """Fetch a repository's branch (clone it when new) and answer the new analysis."""
    return await ctx.plugin(GitPlugin).update(payload)


@monoq.handler("git.delete")
async def delete(ctx: monoq.Context, payload: Any) -> dict[str, Any]:
    """Remove a repository's clone and analysis; succeeds when there is nothing."""
    return await ctx.plugin(GitPlugin).delete(payload)
