"""The ``log`` job kind: append one line per job to a file (what "phrase1"'s worker did).

Each job appends ``<prefix><payload>\\n`` to ``[plugins.log] path`` (env ``OUTPUT_PATH``,
default ``./processed.log``, relative to the worker's working directory):

- a text (string) payload is written as it is, except that a carriage return becomes the two
  characters ``\\r`` and a line feed the two characters ``\\n``, so one job is always one line
  (text that already contains a backslash followed by ``n`` or ``r`` reads the same way: the
  escaping is not meant to be undone);
- any other JSON value is written as compact JSON (no spaces), which never contains a raw line
  break.

``prefix`` is a template rendered for every line with the fields ``{time}`` (when the line
was written, RFC 3339 UTC with milliseconds), ``{job_id}``, ``{attempt}``, ``{queue}``,
``{handler}`` and ``{worker}``. The default ``"{time} {job_id} "`` tells a re-run of the same
job (delivery is at-least-once) from a new message; ``prefix = ""`` writes bare payloads.

Many worker processes of one host may share the file: each keeps one descriptor opened with
``O_APPEND``, and a line is written by one ``write`` call (repeated only after a short write)
under an exclusive ``flock``, followed by ``fsync`` when ``fsync = true`` (the default) before
the job completes. Lines therefore never interleave or tear. When the path stops naming the open
file (logrotate renamed or removed it) the next line reopens it. The file is created with mode
``0600`` (payloads may be private; the same as the SQLite database), and missing parent
directories are created. The file is opened on a worker's first ``log`` job, not at start, so a
worker that never runs one creates nothing. Failures to open, write or sync (disk full,
permission denied) raise ``LogFileError``: a failed attempt, retried with the normal backoff. A
write that fails halfway has its partial line cut off again; a line written but not synced stays,
so its retry writes it a second time (at-least-once; the prefix shows the attempt or time).

A job's result is ``{"path": <absolute path>, "bytes": <bytes of the line, newline included>}``.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import string
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import anyio.to_thread
import msgspec

import monoq

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_PATH", "DEFAULT_PREFIX", "PREFIX_FIELDS", "LogFileError", "LogPlugin", "log"]

DEFAULT_PATH: Final = "./processed.log"
DEFAULT_PREFIX: Final = "{time} {job_id} "
# The fields a prefix template may name.
PREFIX_FIELDS: Final = ("attempt", "handler", "job_id", "queue", "time", "worker")
FILE_MODE: Final = 0o600
_OPEN_FLAGS: Final = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
# Values used to check a template at start; the longest realistic shape of each field.
_SAMPLE: Final[dict[str, object]] = {
    "attempt": 1, "handler": "log", "job_id": "0" * 26, "queue": "default",
    "time": "2000-01-01T00:00:00.000Z", "worker": "host-1-abcd",
}
_REOPEN_TRIES: Final = 3
_json = msgspec.json.Encoder()


class LogFileError(Exception):
    """The log file could not be opened, written or synced; the job's attempt fails and retries."""


def _utc_now() -> str:
    """Now as RFC 3339 UTC with milliseconds, e.g. ``2024-05-01T12:00:00.123Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_prefix(template: str) -> str:
    """Return ``template`` if it is a valid prefix, else raise ConfigError naming
    ``plugins.log.prefix``: only the ``PREFIX_FIELDS`` by name (``{{`` and ``}}`` for literal
    braces), format specs that apply to them, and no line break in the rendered prefix."""
    key = "plugins.log.prefix"
    allowed = ", ".join("{" + name + "}" for name in PREFIX_FIELDS)
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template)
                  if field is not None]
    except ValueError as exc:
        raise monoq.ConfigError(f"{key}: not a valid template ({exc}), got {template!r}"
                                ) from None
    for field in fields:
        if field not in PREFIX_FIELDS:
            shown = "{" + field + "}" if field else "{} (a field needs a name)"
            raise monoq.ConfigError(f"{key}: unknown field {shown}; allowed: {allowed}, "
                                    f"got {template!r}")
    try:
        rendered = template.format_map(_SAMPLE)
    except (ValueError, TypeError) as exc:
        raise monoq.ConfigError(f"{key}: not a valid template ({exc}), got {template!r}"
                                ) from None
    if "\n" in rendered or "\r" in rendered:
        raise monoq.ConfigError(f"{key}: must not contain a line break, got {template!r}")
    return template


def encode_payload(payload: Any) -> bytes:
    """The payload as the body of one line (UTF-8, no line break): text as it is with CR and LF
    escaped as ``\\r`` and ``\\n``, anything else as compact JSON."""
    if isinstance(payload, str):
        text = payload.replace("\r", "\\r").replace("\n", "\\n")
        # A lone surrogate (possible in JSON text) cannot be UTF-8; write its \\uXXXX form.
        return text.encode("utf-8", errors="backslashreplace")
    try:
        return _json.encode(payload)
    except (TypeError, ValueError, OverflowError) as exc:  # cannot happen for a stored job
        raise monoq.SkipRetry(f"the payload is not JSON: {exc}") from exc


class LogPlugin(monoq.Plugin):
    """``[plugins.log]``: where and how ``log`` jobs append their lines.

    Options: ``path`` (default ``./processed.log``, ``~`` expanded, made absolute against the
    working directory when the worker builds the plugin), ``prefix`` (a template, default
    ``"{time} {job_id} "``), ``fsync`` (default true). One instance per worker process holds
    one descriptor, opened on first use and closed by ``stop``; its threads share it under a
    lock, and processes share the file under ``flock``.
    """

    name = "log"

    def __init__(self, options: monoq.PluginOptions) -> None:
        raw_path = options.string("path", DEFAULT_PATH)
        if not raw_path.strip():
            raise monoq.ConfigError("plugins.log.path: must not be empty, got ''")
        # abspath, not resolve(): logrotate renames the path as given, not a symlink's target
        self.path = Path(os.path.abspath(Path(raw_path).expanduser()))  # noqa: PTH100
        self.prefix = check_prefix(options.string("prefix", DEFAULT_PREFIX))
        self.fsync = options.boolean("fsync", True)
        options.finish()
        self._fd: int | None = None
        # flock does not exclude the threads of one process (they share the descriptor).
        self._lock = threading.Lock()

    async def stop(self) -> None:
        """Close the file."""
        await anyio.to_thread.run_sync(self.close)

    def close(self) -> None:
        """Close the descriptor if open (the next ``append`` opens the file again)."""
        with self._lock:
            self._close()

    async def append(self, payload: Any, *, job_id: str = "", attempt: int = 0,
                     queue: str = "", handler: str = "log", worker: str = "") -> int:
        """Append the line of ``payload`` (prefix rendered from the keyword fields and the
        current time); answers the bytes written. Runs the file I/O in a thread, and returns
        once the line is written (and synced when ``fsync``). Raises LogFileError."""
        body = encode_payload(payload)
        fields: dict[str, object] = {"job_id": job_id, "attempt": attempt, "queue": queue,
                                     "handler": handler, "worker": worker}
        # Not abandoned on cancel: the write finishes (or fails) before the job's outcome.
        return await anyio.to_thread.run_sync(self._append, body, fields)

    # -- in a worker thread ----------------------------------------------------------------

    def _append(self, body: bytes, fields: dict[str, object]) -> int:
        with self._lock:
            fd = self._locked_descriptor()
            try:
                # Rendered under the lock so {time} grows down the file.
                prefix = self.prefix.format_map({**fields, "time": _utc_now()})
                line = prefix.encode("utf-8", errors="backslashreplace") + body + b"\n"
                self._write(fd, line)
                if self.fsync:
                    try:
                        os.fsync(fd)
                    except OSError as exc:
                        raise self._error("cannot sync", exc) from exc
                return len(line)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _locked_descriptor(self) -> int:
        """The descriptor of the file now at ``path``, under an exclusive flock.

        The identity check runs under the lock: a rename by logrotate between our open and our
        write would otherwise send the line to the rotated file after a writer in another
        process already moved on to the new one (harmless, but needlessly out of order).
        """
        for tries_left in reversed(range(_REOPEN_TRIES)):
            fd = self._fd if self._fd is not None else self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:
                raise self._error("cannot lock", exc) from exc
            # After a few reopens in a row (renamed again each time), write to the last one
            # rather than spin.
            try:
                current = not tries_left or self._is_current(fd)
            except BaseException:
                fcntl.flock(fd, fcntl.LOCK_UN)  # never keep other processes waiting
                raise
            if current:
                return fd
            fcntl.flock(fd, fcntl.LOCK_UN)
            logger.info("log file %s was rotated or removed; reopening it", self.path)
            self._close()
        raise AssertionError("unreachable")  # pragma: no cover

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, _OPEN_FLAGS, FILE_MODE)
        except OSError as exc:
            raise self._error("cannot open", exc) from exc
        self._fd = fd
        return fd

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError as exc:  # the data went out with write/fsync; nothing to undo
                logger.warning("closing log file %s failed: %s", self.path, exc)

    def _is_current(self, fd: int) -> bool:
        """True when ``path`` still names the open file (same device and inode)."""
        try:
            named = self.path.stat()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise self._error("cannot stat", exc) from exc
        held = os.fstat(fd)
        return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)

    def _write(self, fd: int, line: bytes) -> None:
        """One ``write`` of the whole line, continued after a short write; on failure a partial
        line is cut off again so that the retry does not leave a fragment."""
        start = os.fstat(fd).st_size
        view = memoryview(line)
        try:
            while view:
                written = os.write(fd, view)
                if written == 0:  # a regular file never does this; do not spin
                    raise OSError(errno.EIO, "the write made no progress")
                view = view[written:]
        except OSError as exc:
            done = len(line) - len(view)
            if done:
                self._cut_back(fd, start, done)
            raise self._error("cannot write to", exc) from exc

    def _cut_back(self, fd: int, start: int, done: int) -> None:
        try:
            # Only when the fragment is the file's tail: never cut another writer's data.
            if os.fstat(fd).st_size == start + done:
                os.ftruncate(fd, start)
        except OSError as exc:
            logger.warning("could not remove a partial line from %s: %s", self.path, exc)

    def _error(self, what: str, exc: OSError) -> LogFileError:
        return LogFileError(f"{what} log file {self.path}: {exc.strerror or exc}")


@monoq.handler("log")
async def log(ctx: monoq.Context, payload: Any) -> dict[str, Any]:
    """Append the payload as one line to the file [plugins.log] path.

    Answers ``{"path": <absolute path>, "bytes": <bytes written, newline included>}``.
    """
    plugin = ctx.plugin(LogPlugin)
    written = await plugin.append(payload, job_id=ctx.job_id, attempt=ctx.attempt,
                                  queue=ctx.queue, handler=ctx.job.handler,
                                  worker=ctx.worker_id)
    return {"path": str(plugin.path), "bytes": written}
