"""The ``monoq`` command: run the roles, and administer jobs straight on the backend.

Every command reads the same configuration (``--config``, the environment, flags) and talks to
the backend through the same ``Client`` the API uses; none of them needs the API to be up.
Human-readable tables by default, ``--json`` for scripts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import stat
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import IO, Any, TextIO, cast

import anyio

from monoq.client import Client, client_from_config
from monoq.config import Config, load_config
from monoq.core.audit import MAX_DETAIL_IDS, Actor, AuditEntry, set_actor
from monoq.core.backend import Doctor
from monoq.core.codec import json_decode
from monoq.core.durations import parse_duration
from monoq.core.loop import run as run_loop
from monoq.core.models import Job, JobQuery, JobState, NewJob, rfc3339
from monoq.errors import BackendNotShared, ConfigError, MonoqError, SerializationError
from monoq.logs import setup_logging
from monoq.progress import Progress
from monoq.registry import Registry

EXIT_ERROR = 1
EXIT_USAGE = 2

logger = logging.getLogger(__name__)


class CommandError(MonoqError):
    """A command could not do what was asked; the message says why."""


# -- output helpers -------------------------------------------------------------------------


def _table(rows: Sequence[Sequence[object]], headers: Sequence[str], out: TextIO) -> None:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    out.writelines("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n" for row in cells)


def _dump(value: Any, out: TextIO) -> None:
    out.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _short(value: Any, width: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def _job_rows(jobs: Sequence[Job]) -> list[list[object]]:
    return [[j.id, j.queue, j.handler, j.state, j.priority, j.attempt,
             rfc3339(j.created_at), j.error or ""] for j in jobs]


JOB_HEADERS = ("ID", "QUEUE", "HANDLER", "STATE", "PRIO", "ATTEMPT", "CREATED", "ERROR")


class _JsonArray:
    """Writes ``json.dumps(items, indent=2, ensure_ascii=False) + "\\n"`` one item at a time:
    the same bytes as ``_dump`` of the whole list, without holding the list."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.empty = True

    def add(self, value: Any) -> None:
        # JSON text holds no raw newline inside a string, so each line can be indented
        text = json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  ")
        self.out.write(("[\n  " if self.empty else ",\n  ") + text)
        self.empty = False

    def close(self) -> None:
        self.out.write("[]\n" if self.empty else "\n]\n")


# -- plumbing -----------------------------------------------------------------------------------


def _config(args: argparse.Namespace, **extra: Any) -> Config:
    overrides: dict[str, Any] = dict(extra)
    if getattr(args, "backend", None):
        overrides["backend.url"] = args.backend
    return load_config(args.config, overrides=overrides)


def os_user() -> str:
    """Who runs a CLI command, for the audit log: the login name (``getpass.getuser``: the
    LOGNAME, USER, LNAME or USERNAME variable, else the password database), or ``uid:<n>``
    when neither knows it. Anyone who can run the CLI against the backend can also set
    these variables: the CLI's actor is a statement, not an authentication."""
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return f"uid:{os.getuid()}"


@contextlib.asynccontextmanager
async def _client(args: argparse.Namespace) -> AsyncIterator[Client]:
    """A connected client for an admin command; refuses a process-local backend. Its operator
    actions are recorded in the audit log with the OS user as actor and source ``cli``."""
    set_actor(Actor(os_user(), "cli"))
    config = _config(args)
    registry = Registry.discover(config.monoq.imports)
    client = client_from_config(config, registry=registry)
    if not client.backend.capabilities.shared_across_processes:
        raise BackendNotShared(
            f"`monoq {args.command}` cannot use {client.backend.url}: that backend lives inside "
            "one process, so this command would see an empty queue that vanishes when it exits. "
            "Use a shared backend (sqlite:///./monoq.db or redis://…), or the HTTP API of the "
            "`monoq run` process that owns the memory backend."
        )
    await client.backend.connect()
    try:
        yield client
    finally:
        with anyio.CancelScope(shield=True):
            await client.backend.aclose()


def _run_async(func: Callable[[], Awaitable[int]]) -> int:
    return run_loop(func)


# -- commands -----------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    """monoq run."""
    from monoq.supervisor import EXIT_RECYCLE, Supervisor

    extra: dict[str, Any] = {}
    if args.roles:
        extra["monoq.roles"] = [r.strip() for r in args.roles.split(",") if r.strip()]
    config = _config(args, **extra)
    setup_logging(config.monoq.log_level, config.monoq.log_format)
    supervisor = Supervisor(config)
    code = run_loop(supervisor.run, loop=config.monoq.loop)
    if code == EXIT_RECYCLE and config.worker.recycle == "exec":
        # Start afresh in place: the same pid (a container's main process stays) and the same
        # command line, with none of this process's memory.
        logging.getLogger("monoq").info("recycling: starting a fresh process")
        logging.shutdown()
        os.execv(sys.executable, sys.orig_argv)  # noqa: S606 - our own command line, again
    return code


def _payload(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json_decode(text)
    except SerializationError as exc:
        raise CommandError(f"--payload: {exc}") from exc


def cmd_enqueue(args: argparse.Namespace, stdin: TextIO, out: TextIO) -> int:
    """monoq enqueue."""
    if args.batch or args.file:
        return _enqueue_batch(args, stdin, out)
    if not args.handler:
        raise CommandError("enqueue: give a HANDLER, or --batch to read JSON lines from stdin")
    payload = _payload(args.payload)

    async def main() -> int:
        async with _client(args) as client:
            _check_handler(client, args.handler, args.allow_unknown)
            answer = await client.submit(
                args.handler, payload, queue=args.queue, priority=args.priority,
                delay=args.delay, max_retries=args.max_retries, timeout=args.timeout,
                idempotency_key=args.idempotency_key,
            )
            job = answer.job
            if args.wait is not None:
                job = await client.wait(job.id, timeout=args.wait)
        if args.json:
            _dump(job.to_dict(), out)
        else:
            note = "" if answer.created else " (existing job for this idempotency key)"
            out.write(f"{job.id} {job.state}{note}\n")
            if args.wait is not None:
                out.write(_short(job.result if job.state is JobState.COMPLETED else job.error,
                                 200) + "\n")
        return 0 if args.wait is None or job.state is JobState.COMPLETED else EXIT_ERROR

    return _run_async(main)


def _check_handler(client: Client, handler: str, allow_unknown: bool) -> None:
    if allow_unknown or client.registry is None or handler in client.registry:
        return
    known = ", ".join(spec.name for spec in client.registry) or "none"
    raise CommandError(
        f"no handler named {handler!r} is installed here (known: {known}); pass "
        "--allow-unknown to enqueue it for workers that have it"
    )


BATCH_CALL = 1000  # jobs per enqueue call of `enqueue --batch`: one atomic backend step
PROGRESS_EVERY = 1000  # lines between two progress updates while checking


class _Lines:
    """The JSON lines of ``enqueue --batch``, read twice in bounded memory: once to check every
    line, once to enqueue. A seekable input (a ``--file``, or stdin redirected from a file) is
    read again from where it began; a pipe is copied on the first pass to a spool file (in
    memory up to 8 MiB, then on disk)."""

    def __init__(self, stream: IO[bytes] | TextIO, name: str) -> None:
        self.stream = stream
        self.name = name
        self.start: int | None = None
        self.size: int | None = None  # bytes left to read, when the input is a regular file
        self._spool: IO[bytes] | None = None
        if stream.seekable():
            self.start = stream.tell()
            with contextlib.suppress(OSError, ValueError):  # io.UnsupportedOperation: no fd
                info = os.fstat(stream.fileno())
                if stat.S_ISREG(info.st_mode):
                    self.size = max(info.st_size - self.start, 0)
        else:
            self._spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)  # noqa: SIM115

    def first(self) -> Iterator[tuple[int, bytes | str]]:
        """Number and text of each line, the first time."""
        for number, raw in enumerate(self.stream, 1):
            line = cast("bytes | str", raw)  # bytes from a binary input, str from a text one
            if self._spool is not None:
                self._spool.write(line if isinstance(line, bytes) else line.encode())
            yield number, line

    def again(self) -> Iterator[tuple[int, bytes | str]]:
        """The same lines once more."""
        source: IO[bytes] | TextIO = self.stream
        if self._spool is not None:
            self._spool.seek(0)
            source = self._spool
        elif self.start is not None:
            self.stream.seek(self.start)
        for number, raw in enumerate(source, 1):
            yield number, cast("bytes | str", raw)

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()


def _batch_item(args: argparse.Namespace, where: str, number: int, line: bytes | str
                ) -> dict[str, Any] | None:
    """One line of ``enqueue --batch`` as a submit object with the command's defaults; None for
    a blank line."""
    if not line.strip():
        return None
    try:
        item = json_decode(line)
    except SerializationError as exc:
        raise CommandError(f"{where} line {number}: {exc}; nothing was enqueued") from exc
    if not isinstance(item, dict):
        raise CommandError(f"{where} line {number}: expected a JSON object; nothing was enqueued")
    if args.handler and "handler" not in item and "name" not in item:
        item["handler"] = args.handler
    if args.queue and "queue" not in item:
        item["queue"] = args.queue
    return item


def _enqueue_batch(args: argparse.Namespace, stdin: TextIO, out: TextIO) -> int:
    """Read JSON lines (submit objects) from ``--file`` or stdin: check every line first (a bad
    line enqueues nothing), then enqueue them in calls of ``BATCH_CALL`` jobs, streaming the
    input twice in bounded memory (see ``_Lines``). Each call is atomic, so an input of up to
    ``BATCH_CALL`` jobs is enqueued all or nothing; if a later call fails, the jobs of the calls
    before it stay enqueued (their ids are already on the output) and the error says how many.
    """
    opened: IO[bytes] | None = None
    if args.file and args.file != "-":
        try:
            opened = Path(args.file).open("rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise CommandError(f"--file: {exc}") from exc
        stream: IO[bytes] | TextIO = opened
        where = args.file
    else:  # the bytes under a real stdin (lengths in bytes); a test's StringIO as it is
        stream = getattr(stdin, "buffer", stdin)
        where = "stdin"
    lines = _Lines(stream, where)

    async def main() -> int:
        async with _client(args) as client:
            with Progress(not args.json) as progress:
                count = _check_lines(client, lines, progress)
                enqueued = await _send_lines(client, lines, count, progress)
        if not args.json:
            sys.stderr.write(f"enqueued {enqueued} jobs\n")
        return 0

    def _check_lines(client: Client, lines: _Lines, progress: Progress) -> int:
        task = progress.add(f"checking {where}", lines.size, "bytes")
        count = read = 0
        now = client.clock()
        for number, line in lines.first():
            read += len(line)
            if number % PROGRESS_EVERY == 0:
                progress.update(task, completed=read)
            item = _batch_item(args, where, number, line)
            if item is None:
                continue
            try:
                new = client.build_from_dict(item, now=now)
                _check_handler(client, new.handler, args.allow_unknown)
            except MonoqError as exc:
                raise CommandError(f"{where} line {number}: {exc}; nothing was enqueued") \
                    from exc
            count += 1
        progress.finish(task)
        return count

    async def _send_lines(client: Client, lines: _Lines, count: int, progress: Progress) -> int:
        task = progress.add("enqueueing", count)
        writer = _JsonArray(out) if args.json else None
        chunk: list[NewJob] = []
        enqueued = 0

        async def send() -> None:
            nonlocal enqueued
            jobs = await client.enqueue_many(chunk)
            chunk.clear()
            enqueued += len(jobs)
            if writer is not None:
                for job in jobs:
                    writer.add(job.to_dict())
            else:
                out.writelines(f"{job.id} {job.state}\n" for job in jobs)
            progress.advance(task, len(jobs))

        try:
            now = client.clock()
            for number, line in lines.again():
                item = _batch_item(args, where, number, line)
                if item is None:
                    continue
                try:
                    chunk.append(client.build_from_dict(item, now=now))
                except MonoqError as exc:  # checked already: the input changed meanwhile
                    raise CommandError(f"{where} line {number} changed after it was checked: "
                                       f"{exc}") from exc
                if len(chunk) >= BATCH_CALL:
                    await send()
                    now = client.clock()
            if chunk:
                await send()
        except MonoqError as exc:
            raise CommandError(f"{exc}; {enqueued} of {count} jobs were enqueued before this "
                               "(the first ones of the input, listed on the output)") from exc
        finally:
            if writer is not None:  # the output stays one JSON array, of the jobs enqueued
                writer.close()
        progress.finish(task)
        return enqueued

    try:
        return _run_async(main)
    finally:
        lines.close()
        if opened is not None:
            opened.close()


def _job_stack(args: argparse.Namespace, out: TextIO) -> int:
    """monoq job stack ID: ask the worker running the job where its handler is, and wait for
    the answer, which comes with the worker's next heartbeat."""
    config = _config(args)
    timeout = args.timeout if args.timeout is not None else (
        2 * config.worker.heartbeat_seconds + 5)

    async def main() -> int:
        async with _client(args) as client:
            asked_at = client.clock()
            job = await client.backend.request_stack(args.id, now=asked_at)
            if job is None:
                raise CommandError(f"no job {args.id}")
            if job.state is not JobState.RUNNING:
                raise CommandError(f"job {args.id} is {job.state}, not running: it has no "
                                   "stack to show")
            sys.stderr.write(f"asked worker {job.worker_id}; it answers at its next heartbeat "
                             f"(every {config.worker.heartbeat_seconds:g}s)\n")
            with anyio.move_on_after(timeout):
                while True:
                    job = await client.get(args.id)
                    if job.stack_at is not None and job.stack_at >= asked_at - timedelta(
                            milliseconds=1):
                        break
                    if job.state is not JobState.RUNNING:
                        raise CommandError(f"job {args.id} ended ({job.state}) before its "
                                           "worker answered")
                    await anyio.sleep(0.2)
        if job.stack_at is None or job.stack_at < asked_at - timedelta(milliseconds=1):
            raise CommandError(f"worker {job.worker_id} did not answer within {timeout:g}s "
                               "(is it alive? see `monoq workers`)")
        if args.json:
            _dump({"id": job.id, "worker_id": job.worker_id, "stack_at": rfc3339(job.stack_at),
                   "stack": job.stack}, out)
        else:
            out.write(f"{job.stack}\n")
        return 0

    return _run_async(main)


def cmd_job(args: argparse.Namespace, out: TextIO) -> int:
    """monoq job show|cancel|retry|stack."""
    if args.action == "stack":
        return _job_stack(args, out)

    async def main() -> int:
        async with _client(args) as client:
            if args.action == "cancel":
                job = await client.cancel(args.id)
            elif args.action == "retry":
                job = await client.retry(args.id)
            else:
                job = await client.get(args.id)
            attempts = await client.attempts(args.id) if args.action == "show" else []
        if args.json:
            data = job.to_dict()
            if args.action == "show":
                data["attempts"] = [a.to_dict() for a in attempts]
            _dump(data, out)
            return 0
        if args.action != "show":
            note = " (stops at its next heartbeat)" if job.cancel_requested else ""
            out.write(f"{job.id} {job.state}{note}\n")
            return 0
        fields = job.to_dict()
        width = max(len(k) for k in fields)
        for key, value in fields.items():
            shown = _short(value, 100) if key in ("payload", "result") else value
            if key == "progress" and value is not None:
                shown = f"{value['fraction']:.0%}" + (f" {value['message']}"
                                                       if value["message"] else "")
            out.write(f"{key.ljust(width)}  {'' if shown is None else shown}\n")
        if attempts:
            out.write("\nattempts:\n")
            _table([[a.attempt, a.worker_id, rfc3339(a.started_at), rfc3339(a.finished_at),
                     "" if a.duration is None else f"{a.duration.total_seconds():.3f}s",
                     a.outcome, a.error_type or "", (a.error_message or "")[:60]]
                    for a in attempts],
                   ("#", "WORKER", "STARTED", "FINISHED", "TOOK", "OUTCOME", "ERROR", "MESSAGE"),
                   out)
        return 0

    return _run_async(main)


def cmd_jobs(args: argparse.Namespace, out: TextIO) -> int:
    """monoq jobs."""

    async def main() -> int:
        async with _client(args) as client:
            page = await client.list_jobs(JobQuery(
                queue=args.queue, states=args.state or None, handler=args.handler,
                limit=args.limit, cursor=args.cursor))
        if args.json:
            _dump({"jobs": [j.to_dict() for j in page.jobs], "next_cursor": page.next_cursor},
                  out)
        else:
            _table(_job_rows(page.jobs), JOB_HEADERS, out)
            if page.next_cursor:
                out.write(f"more: --cursor {page.next_cursor}\n")
        return 0

    return _run_async(main)


def cmd_queues(args: argparse.Namespace, out: TextIO) -> int:
    """monoq queues."""

    async def main() -> int:
        async with _client(args) as client:
            stats = await client.queues()
        if args.json:
            _dump([s.to_dict() for s in stats], out)
        else:
            states = list(JobState)
            _table([[s.queue, "paused" if s.paused else "active",
                     *(s.counts.get(st, 0) for st in states)] for s in stats],
                   ("QUEUE", "STATUS", *(st.upper() for st in states)), out)
        return 0

    return _run_async(main)


def cmd_queue(args: argparse.Namespace, out: TextIO) -> int:
    """monoq queue pause|resume NAME."""

    async def main() -> int:
        async with _client(args) as client:
            if args.action == "pause":
                await client.pause(args.name)
            else:
                await client.resume(args.name)
        out.write(f"{args.name} {'paused' if args.action == 'pause' else 'resumed'}\n")
        return 0

    return _run_async(main)


def cmd_dlq(args: argparse.Namespace, out: TextIO) -> int:
    """monoq dlq list|requeue|purge."""

    async def main() -> int:
        async with _client(args) as client:
            if args.action == "list":
                page = await client.list_jobs(JobQuery(
                    queue=args.queue, states=[JobState.DEAD], handler=args.handler,
                    limit=args.limit))
                if args.json:
                    _dump({"jobs": [j.to_dict() for j in page.jobs],
                           "next_cursor": page.next_cursor}, out)
                else:
                    _table(_job_rows(page.jobs), JOB_HEADERS, out)
                return 0
            if args.action == "requeue":
                if not args.ids and not args.all and not (args.queue or args.handler):
                    raise CommandError("dlq requeue: give job ids, --queue/--handler, or --all")
                with Progress(not args.json) as progress:
                    moved = await _requeue_dead(client, args.ids, args.queue, args.handler,
                                                progress)
                if args.json:
                    _dump({"requeued": moved}, out)
                else:
                    out.write(f"requeued {len(moved)} jobs\n")
                return 0
            older = timedelta(seconds=parse_duration(args.older_than)) if args.older_than \
                else timedelta(0)
            with Progress(not args.json) as progress:
                purged = await _purge_dead(client, args.queue, older, progress)
            if args.json:
                _dump({"purged": purged}, out)
            else:
                out.write(f"purged {purged} dead jobs\n")
            return 0

    return _run_async(main)


DLQ_STEP = 500  # dead jobs listed and requeued per step of `dlq requeue`
PURGE_STEP = 1000  # dead jobs deleted per step of `dlq purge`


async def _dead_count(client: Client, queue: str | None) -> int:
    """How many jobs are dead (in ``queue``), from the queues' counts: a progress total."""
    stats = await client.queues([queue] if queue else None)
    return sum(s.counts.get(JobState.DEAD, 0) for s in stats)


async def _requeue_dead(client: Client, ids: Sequence[str], queue: str | None,
                        handler: str | None, progress: Progress) -> list[str]:
    """``Client.requeue_dead`` in steps of ``DLQ_STEP`` jobs, with progress. Ids given are
    requeued a step at a time. Else the dead jobs matching the filters are listed a page at a
    time and each page is requeued before the next is read: pages go down by id (the protocol's
    cursor), so moving a page shifts nothing below it, and every job that was dead when the
    command started is visited once, as with the client's list-then-requeue."""
    async with client.auditing("requeue", target=queue, queue=queue) as note:
        moved = await _requeue_steps(client, ids, queue, handler, progress)
        note.detail.update(requeued=len(moved), ids=moved[:MAX_DETAIL_IDS])
        if ids:
            note.detail["asked"] = len(ids)
        if handler is not None:
            note.detail["handler"] = handler
    return moved


async def _requeue_steps(client: Client, ids: Sequence[str], queue: str | None,
                         handler: str | None, progress: Progress) -> list[str]:
    backend = client.backend
    moved: list[str] = []
    if ids:
        task = progress.add("requeueing", len(ids))
        for start in range(0, len(ids), DLQ_STEP):
            step = list(ids[start : start + DLQ_STEP])
            moved += await backend.requeue(step, now=client.clock())
            progress.advance(task, len(step))
        return moved
    total = None if handler else await _dead_count(client, queue)
    task = progress.add("requeueing dead jobs", total)
    cursor: str | None = None
    while True:
        page = await backend.list_jobs(JobQuery(queue=queue, states={JobState.DEAD},
                                                handler=handler, limit=DLQ_STEP, cursor=cursor))
        if page.jobs:
            moved += await backend.requeue([job.id for job in page.jobs], now=client.clock())
            progress.advance(task, len(page.jobs))
        if page.next_cursor is None:
            return moved
        cursor = page.next_cursor


async def _purge_dead(client: Client, queue: str | None, older_than: timedelta,
                      progress: Progress) -> int:
    """``Client.purge_dead`` with progress: the same bounded deletes of ``PURGE_STEP`` jobs
    until one deletes fewer, from the same horizon."""
    horizon = client.clock() - older_than + timedelta(milliseconds=1)
    total = await _dead_count(client, queue) if not older_than else None
    task = progress.add("purging dead jobs", total)
    purged = 0
    async with client.auditing("purge", target=queue, queue=queue) as note:
        while True:
            n = await client.backend.purge(states={JobState.DEAD}, finished_before=horizon,
                                           queue=queue, limit=PURGE_STEP)
            purged += n
            progress.advance(task, n)
            if n < PURGE_STEP:
                break
        note.detail.update(purged=purged, older_than_seconds=older_than.total_seconds())
    return purged


def cmd_handlers(args: argparse.Namespace, out: TextIO) -> int:
    """monoq handlers."""
    config = _config(args)
    registry = Registry.discover(config.monoq.imports)
    rows = [{"name": s.name, "kind": "async" if s.is_async else "sync", "queue": s.queue,
             "max_retries": s.max_retries, "timeout": s.timeout, "source": s.source,
             "description": s.description} for s in registry]
    if args.json:
        _dump(rows, out)
    else:
        _table([[r["name"], r["kind"], r["queue"] or "", "" if r["max_retries"] is None
                 else r["max_retries"], "" if r["timeout"] is None else r["timeout"],
                 r["description"]] for r in rows],
               ("NAME", "KIND", "QUEUE", "RETRIES", "TIMEOUT", "DESCRIPTION"), out)
    return 0


def cmd_bench(args: argparse.Namespace, out: TextIO) -> int:
    """monoq bench: measure this machine against the project's targets; see monoq.bench."""
    import tempfile

    from monoq.bench import SECTIONS, Bench, print_table

    sections = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = sorted(sections - set(SECTIONS))
    if unknown:
        sys.stderr.write(f"monoq: bench: unknown section(s) {', '.join(unknown)} "
                         f"(known: {', '.join(SECTIONS)})\n")
        return EXIT_USAGE
    options: dict[str, Any] = {}
    for item in args.option or ():
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            sys.stderr.write(f"monoq: bench: --option {item!r} is not KEY=VALUE\n")
            return EXIT_USAGE
        try:
            options[key.strip()] = json.loads(text)
        except ValueError:
            options[key.strip()] = text
    loop = _config(args).monoq.loop
    with tempfile.TemporaryDirectory(prefix="monoq-bench-") as tmp:
        url = args.backend or f"sqlite:///{tmp}/bench.db"
        fresh: Callable[[], None] | None = None
        scheme = url.split("://", 1)[0]
        if scheme == "sqlite":
            path = Path(url.split("://", 1)[1][1:])

            def fresh() -> None:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)

        elif scheme in ("redis", "rediss", "unix"):
            options["key_prefix"] = "monoqbench"  # fresh() deletes every key under it

            def fresh() -> None:
                import redis

                r = redis.Redis.from_url(url)
                doomed: list[bytes] = []
                for key in r.scan_iter("monoqbench*", count=10_000):
                    doomed.append(key)
                    if len(doomed) >= 10_000:  # one UNLINK per 10 000 keys, not one per key
                        r.unlink(*doomed)
                        doomed.clear()
                if doomed:
                    r.unlink(*doomed)
                r.close()

        sys.stderr.write(f"monoq bench on {url} ({args.jobs} jobs, {loop} loop)\n")
        with Progress(not args.json) as progress:
            bench = Bench(url, options, jobs=args.jobs, fresh=fresh, loop=loop,
                          progress=progress)
            rows = run_loop(bench.run, sections, loop=loop)
    if args.json:
        _dump([row.as_dict() for row in rows], out)
    else:
        out.write(print_table(rows, url) + "\n")
    return 0


def cmd_schedules(args: argparse.Namespace, out: TextIO) -> int:
    """monoq schedules list|add|remove|enable|disable|trigger|runs."""
    from monoq.core.schedules import run_to_dict

    async def main() -> int:
        async with _client(args) as client:
            action = args.action
            if action == "list":
                rows = [await client.schedule_status(s) for s in await client.list_schedules()]
                if args.json:
                    _dump(rows, out)
                    return 0
                _table([[r["id"], r["cron"] or f"every {r['every']:g}s", r["timezone"],
                         r["handler"], "yes" if r["enabled"] else "no", r["next_fire_at"] or "",
                         (r["last_success"] or {}).get("finished_at") or "",
                         (r["last_failure"] or {}).get("finished_at") or ""] for r in rows],
                       ("ID", "WHEN", "TZ", "HANDLER", "ENABLED", "NEXT", "LAST SUCCESS",
                        "LAST FAILURE"), out)
                return 0
            if action == "add":
                body: dict[str, Any] = {"id": args.id, "handler": args.handler}
                for name in ("cron", "every", "timezone", "queue", "priority", "max_retries",
                             "timeout", "overlap", "misfire"):
                    value = getattr(args, name)
                    if value is not None:
                        body[name] = value
                if args.payload is not None:
                    body["payload"] = _payload(args.payload)
                body["enabled"] = not args.disabled
                schedule = await client.put_schedule(client.build_schedule(body))
                result: Any = await client.schedule_status(schedule)
            elif action == "remove":
                await client.delete_schedule(args.id)
                result = {"id": args.id, "removed": True}
            elif action in ("enable", "disable"):
                schedule = await client.set_schedule_enabled(args.id, action == "enable")
                result = schedule.to_dict()
            elif action == "trigger":
                result = (await client.trigger_schedule(args.id)).to_dict()
            else:  # runs
                page = await client.schedule_runs(args.id, limit=args.limit)
                runs = [run_to_dict(job) for job in page.jobs]
                if args.json:
                    _dump({"runs": runs, "next_cursor": page.next_cursor}, out)
                else:
                    _table([[r["job_id"], r["fire_time"] or "(triggered)", r["state"],
                             "" if r["duration"] is None else f"{r['duration']:.3f}s",
                             r["error"] or ""] for r in runs],
                           ("JOB", "FIRE TIME", "STATE", "TOOK", "ERROR"), out)
                return 0
        if args.json:
            _dump(result, out)
        elif action == "trigger":
            out.write(f"{result['id']} {result['state']}\n")
        else:
            out.write(f"{args.id} {action.removesuffix('e')}ed\n" if action != "add"
                      else f"{args.id} saved; next fire {result['next_fire_at']}\n")
        return 0

    return _run_async(main)


def _audit_time(text: str | None) -> str | None:
    """``--since``/``--until``: an RFC 3339 time, or a duration meaning that long ago."""
    if text is None:
        return None
    try:
        seconds = parse_duration(text)
    except ValueError:
        return text  # the client checks it is an RFC 3339 time
    from datetime import UTC, datetime

    return rfc3339(datetime.now(UTC) - timedelta(seconds=seconds))


def cmd_audit(args: argparse.Namespace, out: TextIO) -> int:
    """monoq audit: the audit log, newest first (reading it is not recorded)."""

    async def main() -> int:
        filters: dict[str, Any] = {
            "action": args.action, "actor": args.actor, "source": args.source,
            "queue": args.queue, "target": args.target,
            "since": _audit_time(args.since), "until": _audit_time(args.until),
        }
        entries: list[AuditEntry] = []
        cursor = args.cursor
        async with _client(args) as client:
            # pages of a rare filter may end early: read on until the limit or the end
            while True:
                page = await client.list_audit(**filters, limit=args.limit - len(entries),
                                               cursor=cursor)
                entries += page.entries
                cursor = page.next_cursor
                if cursor is None or len(entries) >= args.limit:
                    break
        if args.json:
            _dump({"entries": [e.to_dict() for e in entries], "next_cursor": cursor}, out)
            return 0
        _table([[rfc3339(e.at), e.actor, e.source, e.action, e.target or "", e.queue or "",
                 e.outcome, e.address or "", _short(e.detail_json, 60)] for e in entries],
               ("AT", "ACTOR", "SOURCE", "ACTION", "TARGET", "QUEUE", "OUTCOME", "ADDRESS",
                "DETAIL"), out)
        if cursor:
            out.write(f"more: --cursor {cursor}\n")
        return 0

    return _run_async(main)


def cmd_token(args: argparse.Namespace, out: TextIO) -> int:
    """monoq token create: print a new bearer token once, and the config that admits it."""
    from datetime import UTC, datetime, timedelta

    from monoq.api.tokens import create_token, token_toml
    from monoq.config import format_expiry, parse_expiry

    expires = None
    if args.expires:
        try:  # a duration from now ("30d", "12h") or an RFC 3339 time
            expires = (datetime.now(UTC) + timedelta(seconds=parse_duration(args.expires))
                       ).replace(microsecond=0)
        except ValueError:
            try:
                expires = parse_expiry(args.expires)
            except ValueError as exc:
                raise CommandError(f"token create: --expires {exc} or a duration such as "
                                   "30d") from None
    try:
        token, line = create_token(args.scope, name=args.name, queues=args.queues,
                                   expires=expires)
    except ValueError as exc:
        raise CommandError(f"token create: {exc}") from exc
    if args.json:
        name, scope, digest = line.split()[:3]
        data: dict[str, object] = {"token": token, "name": name, "scope": scope,
                                   "sha256": digest}
        if args.queues:
            data["queues"] = list(dict.fromkeys(args.queues))
        if expires is not None:
            data["expires"] = format_expiry(expires)
        _dump(data, out)
        return 0
    out.write(f"token (shown once, keep it secret):\n  {token}\n\n")
    out.write(f"add to config.toml:\n{token_toml(line)}\n")
    out.write(f"or as a line of the api.tokens_file:\n  {line}\n")
    return 0


def cmd_doctor(args: argparse.Namespace, out: TextIO) -> int:
    """monoq doctor: check that the configured backend is reachable and safely set up."""
    config = _config(args)

    async def main() -> list[tuple[str, str, str]]:
        client = client_from_config(config, registry=Registry())
        backend = client.backend
        checks: list[tuple[str, str, str]] = []
        try:
            await backend.connect()
            await backend.ping()
            checks.append(("reachable", "ok", backend.url))
            if isinstance(backend, Doctor):
                checks += await backend.doctor()
            if not backend.capabilities.shared_across_processes:
                checks.append(("shared", "warn", ("this backend lives in one process: run every "
                                                  "role in it, and use the HTTP API, not the CLI")))
        except MonoqError as exc:
            checks.append(("reachable", "error", str(exc)))
        finally:
            with anyio.CancelScope(shield=True):
                await backend.aclose()
        return checks

    checks = anyio.run(main)
    registry = Registry.discover(config.monoq.imports)
    checks.append(("handlers", "ok" if len(registry) else "warn",
                   ", ".join(spec.name for spec in registry) or "no handlers installed"))
    if args.json:
        _dump([{"check": c, "level": lvl, "message": m} for c, lvl, m in checks], out)
    else:
        _table([[lvl.upper(), c, m] for c, lvl, m in checks], ("LEVEL", "CHECK", "FOUND"), out)
    return EXIT_ERROR if any(lvl == "error" for _, lvl, _ in checks) else 0


# -- parser -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE",
                        help="config file (default: $MONOQ_CONFIG, else ./config.toml if present)")
    common.add_argument("--backend", metavar="URL",
                        help="backend URL, overriding [backend] url (memory://, sqlite:///F, "
                             "redis://H:P/DB)")
    js = argparse.ArgumentParser(add_help=False)
    js.add_argument("--json", action="store_true", help="print JSON instead of a table")

    parser = argparse.ArgumentParser(prog="monoq", description="A job queue that is one program.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="run the api, worker and scheduler roles")
    run.add_argument("--roles", help="comma-separated subset of api,worker,scheduler")

    enq = sub.add_parser("enqueue", parents=[common, js], help="enqueue a job")
    enq.add_argument("handler", nargs="?", help="handler name (in --batch: default for lines)")
    enq.add_argument("--payload", help="JSON payload")
    enq.add_argument("--queue")
    enq.add_argument("--priority", help="0-9 or high/normal/low")
    enq.add_argument("--delay", type=float, help="seconds before the job may run")
    enq.add_argument("--idempotency-key")
    enq.add_argument("--max-retries", type=int)
    enq.add_argument("--timeout", type=float, help="seconds")
    enq.add_argument("--batch", action="store_true",
                     help="read one JSON submit object per line from stdin (or --file)")
    enq.add_argument("--file", metavar="FILE",
                     help="with --batch: read the lines from FILE instead of stdin ('-': "
                          "stdin); streamed, with progress on a terminal")
    enq.add_argument("--wait", type=float, metavar="SECONDS",
                     help="wait up to SECONDS for the job to finish and print its result")
    enq.add_argument("--allow-unknown", action="store_true",
                     help="enqueue for a handler not installed here")

    job = sub.add_parser("job", help="show, cancel or retry one job")
    job_sub = job.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("show", "a job and its attempts"), ("cancel", "cancel a job"),
                         ("retry", "requeue a dead or cancelled job"),
                         ("stack", "where a running job's handler is now (asks its worker)")):
        p = job_sub.add_parser(action, parents=[common, js], help=text)
        p.add_argument("id")
        if action == "stack":
            p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                           help="how long to wait for the worker's answer (default: two "
                                "heartbeats and 5 s)")

    jobs = sub.add_parser("jobs", parents=[common, js], help="list jobs, newest first")
    jobs.add_argument("--state", action="append", choices=[s.value for s in JobState])
    jobs.add_argument("--queue")
    jobs.add_argument("--handler")
    jobs.add_argument("--limit", type=int, default=50)
    jobs.add_argument("--cursor")

    sub.add_parser("queues", parents=[common, js], help="counts by state per queue")
    queue = sub.add_parser("queue", help="pause or resume a queue")
    queue_sub = queue.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action in ("pause", "resume"):
        p = queue_sub.add_parser(action, parents=[common], help=f"{action} a queue")
        p.add_argument("name")

    dlq = sub.add_parser("dlq", help="the dead-letter queue")
    dlq_sub = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = dlq_sub.add_parser("list", parents=[common, js], help="list dead jobs")
    p.add_argument("--queue")
    p.add_argument("--handler")
    p.add_argument("--limit", type=int, default=50)
    p = dlq_sub.add_parser("requeue", parents=[common, js], help="requeue dead jobs")
    p.add_argument("ids", nargs="*")
    p.add_argument("--queue")
    p.add_argument("--handler")
    p.add_argument("--all", action="store_true", help="every dead job")
    p = dlq_sub.add_parser("purge", parents=[common, js], help="delete dead jobs")
    p.add_argument("--queue")
    p.add_argument("--older-than", metavar="DURATION", help='e.g. "7d"; default: all')

    sub.add_parser("handlers", parents=[common, js], help="list installed handlers")

    schedules = sub.add_parser("schedules", help="cron schedules")
    sched_sub = schedules.add_subparsers(dest="action", required=True, metavar="ACTION")
    sched_sub.add_parser("list", parents=[common, js], help="schedules, next and last runs")
    p = sched_sub.add_parser("add", parents=[common, js], help="add or replace a schedule")
    p.add_argument("id")
    p.add_argument("--handler", required=True)
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help='5 fields, or 6 with seconds first ("0 3 * * *")')
    when.add_argument("--every", help='a fixed interval ("30s", "5m", or seconds)')
    p.add_argument("--timezone", help="IANA name the cron expression is read in (default UTC)")
    p.add_argument("--payload", help="JSON payload of each run")
    p.add_argument("--queue")
    p.add_argument("--priority", help="0-9 or high/normal/low")
    p.add_argument("--max-retries", type=int)
    p.add_argument("--timeout", type=float, help="seconds")
    p.add_argument("--overlap", choices=["allow", "skip"])
    p.add_argument("--misfire", choices=["skip", "once"])
    p.add_argument("--disabled", action="store_true", help="store it without firing")
    for action, text in (("remove", "delete a schedule (its runs stay)"),
                         ("enable", "let a schedule fire"), ("disable", "stop a schedule firing"),
                         ("trigger", "run a schedule once now")):
        p = sched_sub.add_parser(action, parents=[common, js], help=text)
        p.add_argument("id")
    p = sched_sub.add_parser("runs", parents=[common, js], help="a schedule's runs")
    p.add_argument("id")
    p.add_argument("--limit", type=int, default=10)

    token = sub.add_parser("token", help="API bearer tokens")
    token_sub = token.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = token_sub.add_parser("create", parents=[js], help="create a token (printed once)")
    p.add_argument("--scope", required=True, choices=["enqueue", "read", "admin"])
    p.add_argument("--name", help="shown in logs; default <scope>-<hash prefix>")
    p.add_argument("--queue", dest="queues", action="append", metavar="QUEUE",
                   help="limit the token to this queue (repeat for more); default every queue")
    p.add_argument("--expires", metavar="WHEN",
                   help="when the token stops working: a duration from now (30d, 12h) or an "
                        "RFC 3339 time (2027-01-31T00:00:00Z); default never")

    sub.add_parser("doctor", parents=[common, js], help="check the backend's setup")

    audit = sub.add_parser("audit", parents=[common, js],
                           help="the audit log of operator actions, newest first")
    audit.add_argument("--action", help="cancel, retry, requeue, purge, pause, resume, "
                                        "schedule.put, schedule.delete, schedule.enable, "
                                        "schedule.disable, schedule.trigger or denied")
    audit.add_argument("--actor", help="a token's name, or an OS user")
    audit.add_argument("--source", choices=["api", "cli", "ui", "python"])
    audit.add_argument("--queue")
    audit.add_argument("--target", help="a job id, queue or schedule id")
    audit.add_argument("--since", metavar="WHEN",
                       help="from this time on: RFC 3339, or a duration ago (1h, 7d)")
    audit.add_argument("--until", metavar="WHEN",
                       help="before this time: RFC 3339, or a duration ago")
    audit.add_argument("--limit", type=int, default=50, help="entries to show (1 to 1000)")
    audit.add_argument("--cursor", help="go on from a previous listing's cursor")

    bench = sub.add_parser("bench", parents=[common, js],
                           help="measure throughput and latency on this machine")
    bench.add_argument("--jobs", type=int, default=10_000, help="jobs per throughput run")
    bench.add_argument("--only", default="single,enqueue,drain,sleep,latency,floor",
                       help="sections to run (comma-separated): single, enqueue, drain, sleep, "
                            "latency, floor (measure each figure's floor), backlog (Redis: "
                            "1 000 000 queued jobs), scale (1, 2 and 4 worker processes)")
    bench.add_argument("--option", action="append", metavar="KEY=VALUE",
                       help="a [backend.options] setting for the backend under test and its "
                            "floors, e.g. synchronous=NORMAL (repeatable; VALUE is JSON or text)")
    return parser


def main(argv: Sequence[str] | None = None, *, stdin: TextIO | None = None,
         out: TextIO | None = None) -> int:
    """Entry point of the ``monoq`` console script; answers the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    stdin = stdin or sys.stdin
    out = out or sys.stdout
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "enqueue":
            return cmd_enqueue(args, stdin, out)
        commands: dict[str, Callable[[argparse.Namespace, TextIO], int]] = {
            "job": cmd_job, "jobs": cmd_jobs, "queues": cmd_queues, "queue": cmd_queue,
            "dlq": cmd_dlq, "handlers": cmd_handlers, "bench": cmd_bench,
            "token": cmd_token, "doctor": cmd_doctor, "schedules": cmd_schedules,
            "audit": cmd_audit,
        }
        return commands[args.command](args, out)
    except ConfigError as exc:
        sys.stderr.write(f"monoq: config error: {exc}\n")
        return EXIT_USAGE
    except BackendNotShared as exc:
        sys.stderr.write(f"monoq: {exc}\n")
        return EXIT_USAGE
    except MonoqError as exc:
        sys.stderr.write(f"monoq: error: {exc}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
