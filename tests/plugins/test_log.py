"""The ``log`` job kind: one line per job in a real file, through the worker, the API's
``POST /enqueue`` and several processes appending at once."""

from __future__ import annotations

import os
import re
import string
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import pytest
from litestar.testing import AsyncTestClient

from monoq.api import create_app
from monoq.backends.memory import MemoryBackend
from monoq.client import Client
from monoq.config import ApiConfig, Config, load_config
from monoq.core.models import JobState
from monoq.errors import ConfigError
from monoq.plugin import PluginOptions
from monoq.plugins.log import LogPlugin
from monoq.registry import Registry
from monoq.supervisor import Supervisor
from tests.integration._inprocess import supervised

pytestmark = pytest.mark.anyio

# The default prefix "{time} {job_id} " followed by the payload.
DEFAULT_LINE = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (\S+) (.*)")


def log_registry() -> Registry:
    """Only the log module: other plugins' start/stop stay out of these tests."""
    registry = Registry()
    registry.add_module("monoq.plugins.log")
    return registry


def make_config(path: Path | None, *, env: dict[str, str] | None = None,
                **log_options: Any) -> Config:
    overrides: dict[str, Any] = {
        "backend.url": "memory://",
        "worker.heartbeat_seconds": 0.05,
        "worker.grace_seconds": 2,
        "retry.base_seconds": 0.01,
        "retry.max_seconds": 0.05,
        **{f"plugins.log.{key}": value for key, value in log_options.items()},
    }
    if path is not None:
        overrides["plugins.log.path"] = str(path)
    return load_config(os.devnull, env=env or {}, overrides=overrides)


@asynccontextmanager
async def running(config: Config) -> AsyncIterator[Client]:
    """A worker and a scheduler in this process over a fresh memory backend."""
    async with supervised(config, log_registry()) as (client, _):
        yield client


async def run_one(client: Client, payload: Any, **options: Any) -> dict[str, Any]:
    job = await client.enqueue("log", payload, **options)
    with anyio.fail_after(10):
        done = await client.wait(job.id)
    assert done.state is JobState.COMPLETED, done.error
    result: dict[str, Any] = done.result
    return result


def lines_of(path: Path) -> list[str]:
    """The file's lines; every line must end with a newline (none half-written)."""
    data = path.read_bytes().decode("utf-8")
    assert data.endswith("\n") or not data
    return data.split("\n")[:-1]


def by_job_id(path: Path) -> dict[str, str]:
    """Payload part of each default-prefixed line, by job id."""
    found: dict[str, str] = {}
    for line in lines_of(path):
        match = DEFAULT_LINE.fullmatch(line)
        assert match, line
        datetime.fromisoformat(match[1])  # a real RFC 3339 time
        found[match[2]] = match[3]
    return found


def descriptors_of(path: Path) -> int:
    """How many descriptors of this process are open on ``path``."""
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            if fd.readlink() == path:
                count += 1
        except OSError:  # the descriptor iterdir itself used is gone already
            continue
    return count


async def plugin_for(path: Path, **options: Any) -> LogPlugin:
    plugin = LogPlugin(PluginOptions("log", {"path": str(path), **options}))
    await plugin.start()
    return plugin


# -- the main path, through the worker ------------------------------------------------------


async def test_text_and_json_payloads_become_one_line_each(tmp_path: Path) -> None:
    path = tmp_path / "processed.log"
    payloads: list[Any] = [
        "hello from curl",
        {"message": "hello json", "tags": ["a", "b"], "n": 1.5},
        42,
        None,
        ["x", {"y": True}],
        "multi\nline\r\ntext\rend",
        {"text": "a\nb"},  # JSON escapes the newline itself
        "unicode é ✓ and a literal \\ backslash",
        "",
    ]
    expected = [
        "hello from curl",
        '{"message":"hello json","tags":["a","b"],"n":1.5}',
        "42",
        "null",
        '["x",{"y":true}]',
        r"multi\nline\r\ntext\rend",
        r'{"text":"a\nb"}',
        "unicode é ✓ and a literal \\ backslash",
        "",
    ]
    async with running(make_config(path)) as client:
        ids = []
        for payload in payloads:
            job = await client.enqueue("log", payload)
            ids.append(job.id)
        with anyio.fail_after(10):
            done = [await client.wait(job_id) for job_id in ids]
    assert {job.state for job in done} == {JobState.COMPLETED}
    written = by_job_id(path)
    assert [written[job_id] for job_id in ids] == expected
    assert len(lines_of(path)) == len(payloads)  # no payload made a second line
    # The result names the file and the bytes of the line, newline included.
    sizes = {len(line.encode()) + 1 for line in lines_of(path)}
    assert {job.result["path"] for job in done} == {str(path)}
    assert {job.result["bytes"] for job in done} == sizes
    assert set(done[0].result) == {"path", "bytes"}


async def test_custom_prefix_shows_a_re_run_and_errors_are_retried(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    path.mkdir()  # a directory in the way: the first attempt cannot open the file
    config = make_config(path, prefix="{queue}/{handler} #{attempt} [{job_id}] ")
    # The fix below must land before the retry, even on a busy machine: 3 s (make_config's own
    # retry settings are 10 ms, which the fix could miss).
    config = attrs.evolve(config, retry=attrs.evolve(config.retry, base_seconds=3,
                                                     max_seconds=3))
    async with running(config) as client:
        job = await client.enqueue("log", "hello", queue="default")
        with anyio.fail_after(10):
            while (await client.get(job.id)).state is not JobState.RETRYING:
                await anyio.sleep(0.01)
        [first] = await client.attempts(job.id)
        assert first.error_type == "LogFileError"
        assert first.error_message == f"cannot open log file {path}: Is a directory"
        path.rmdir()  # fixed before the retry (3 s later)
        with anyio.fail_after(10):
            done = await client.wait(job.id)
    assert done.state is JobState.COMPLETED
    assert done.attempt == 2
    assert lines_of(path) == [f"default/log #2 [{job.id}] hello"]


async def test_a_full_disk_fails_the_attempt_with_a_clear_error(tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        if os.environ.get("CI"):  # CI must run the disk-full test, never skip it silently
            pytest.fail("no /dev/full on this system", pytrace=False)
        pytest.skip("no /dev/full on this system")
    async with running(make_config(Path("/dev/full"))) as client:
        job = await client.enqueue("log", "x" * 100, max_retries=1)
        with anyio.fail_after(10):
            done = await client.wait(job.id)
        history = await client.attempts(job.id)
    assert done.state is JobState.DEAD
    assert [a.error_type for a in history] == ["LogFileError", "LogFileError"]
    assert history[0].error_message == (
        "cannot write to log file /dev/full: No space left on device")


async def test_empty_prefix_writes_bare_payloads(tmp_path: Path) -> None:
    path = tmp_path / "bare.log"
    async with running(make_config(path, prefix="")) as client:
        await run_one(client, "one")
        await run_one(client, {"two": 2})
    assert lines_of(path) == ["one", '{"two":2}']


async def test_prefix_fields_and_format_specs(tmp_path: Path) -> None:
    path = tmp_path / "fields.log"
    plugin = await plugin_for(path, prefix="{{{worker}}} {attempt:03d} {handler:>5}|")
    try:
        await plugin.append("p", job_id="J", attempt=7, queue="q", handler="log", worker="w-1")
    finally:
        await plugin.stop()
    assert lines_of(path) == ["{w-1} 007   log|p"]


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("{nope} ", ("plugins.log.prefix: unknown field {nope}; allowed: {attempt}, {handler}, "
                     "{job_id}, {queue}, {time}, {worker}")),
        ("{} ", "plugins.log.prefix: unknown field {} (a field needs a name)"),
        ("{0} ", "plugins.log.prefix: unknown field {0}"),
        ("{job_id.real} ", "plugins.log.prefix: unknown field {job_id.real}"),
        ("{time ", "plugins.log.prefix: not a valid template"),
        ("{attempt:zz} ", "plugins.log.prefix: not a valid template"),
        ("{job_id}\n", "plugins.log.prefix: must not contain a line break"),
        ("{job_id:\r>40} ", "plugins.log.prefix: must not contain a line break"),
    ],
)
def test_a_bad_prefix_is_refused_at_start(tmp_path: Path, prefix: str, message: str) -> None:
    options = {"log": {"path": str(tmp_path / "x.log"), "prefix": prefix}}
    with pytest.raises(ConfigError) as info:
        log_registry().build_plugins(options)
    assert str(info.value).startswith(message)
    config = make_config(tmp_path / "x.log", prefix=prefix)
    with pytest.raises(ConfigError, match=r"plugins\.log\.prefix"):
        Supervisor(config, roles=("worker",), client=Client(MemoryBackend()),
                   registry=log_registry(), handle_signals=False)
    assert not (tmp_path / "x.log").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"path": ""}, "plugins.log.path: must not be empty"),
        ({"path": 3}, "plugins.log.path: must be a string"),
        ({"fsync": "sometimes"}, "plugins.log.fsync: must be true or false"),
        ({"mode": "0644"}, "plugins.log.mode: unknown key; allowed: fsync, path, prefix"),
    ],
)
def test_bad_options_name_the_key(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        log_registry().build_plugins({"log": options})
    assert str(info.value).startswith(message)


# -- fsync ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("env", "syncs"), [({}, True), ({"MONOQ_PLUGINS_LOG_FSYNC": "false"},
                                                          False)])
async def test_fsync_runs_before_the_job_completes_unless_turned_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], syncs: bool
) -> None:
    path = tmp_path / "synced.log"
    synced: list[int] = []  # inode of each synced descriptor
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    async with running(make_config(path, env=env)) as client:
        await run_one(client, "a")
        assert synced.count(path.stat().st_ino) == (1 if syncs else 0)
        await run_one(client, "b")
    assert synced.count(path.stat().st_ino) == (2 if syncs else 0)
    assert len(lines_of(path)) == 2


# -- path, file and descriptor ---------------------------------------------------------------


async def test_output_path_env_sets_the_file_and_parents_are_created(tmp_path: Path) -> None:
    path = tmp_path / "data" / "deeper" / "processed.log"
    config = make_config(None, env={"OUTPUT_PATH": str(path)})
    async with running(config) as client:
        result = await run_one(client, "via OUTPUT_PATH")
    assert result["path"] == str(path)
    assert list(by_job_id(path).values()) == ["via OUTPUT_PATH"]
    assert path.stat().st_mode & 0o777 == 0o600


async def test_default_path_is_processed_log_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with running(make_config(None)) as client:
        result = await run_one(client, "here")
    assert result["path"] == str(tmp_path / "processed.log")
    assert list(by_job_id(tmp_path / "processed.log").values()) == ["here"]


async def test_an_existing_file_is_appended_to_and_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "old.log"
    path.write_text("earlier line\n")
    path.chmod(0o644)
    async with running(make_config(path, prefix="")) as client:
        await run_one(client, "new line")
    assert lines_of(path) == ["earlier line", "new line"]
    assert path.stat().st_mode & 0o777 == 0o644


async def test_a_worker_that_runs_no_log_job_creates_no_file(tmp_path: Path) -> None:
    path = tmp_path / "never.log"
    async with running(make_config(path)):
        await anyio.lowlevel.checkpoint()
    assert not path.exists()


async def test_one_descriptor_per_process_closed_by_stop(tmp_path: Path) -> None:
    path = tmp_path / "fd.log"
    plugin = await plugin_for(path, prefix="")
    try:
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(plugin.append, f"line {i}")
        assert descriptors_of(path) == 1
    finally:
        await plugin.stop()
    assert descriptors_of(path) == 0
    assert sorted(lines_of(path)) == sorted(f"line {i}" for i in range(20))


async def test_rotation_and_removal_move_the_next_line_to_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "rotated.log"
    rotated = tmp_path / "rotated.log.1"
    async with running(make_config(path, prefix="")) as client:
        await run_one(client, "before rotation")
        path.rename(rotated)  # what logrotate does (without copytruncate)
        await run_one(client, "after rotation")
        path.unlink()
        await run_one(client, "after removal")
        await run_one(client, "and again")
    assert lines_of(rotated) == ["before rotation"]
    assert lines_of(path) == ["after removal", "and again"]
    assert descriptors_of(rotated) == 0


# -- many processes ------------------------------------------------------------------------

# Each child runs a real worker (memory backend, concurrency 5) whose log jobs append to the
# shared file. Children say "ready" and wait for "go" so that all of them write at once.
CHILD = textwrap.dedent("""
    import os
    import sys
    import anyio
    import anyio.lowlevel
    from monoq.backends.memory import MemoryBackend
    from monoq.client import Client
    from monoq.config import load_config
    from monoq.registry import Registry
    from monoq.supervisor import Supervisor

    path, me, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    letters = sys.argv[5]

    async def main() -> None:
        registry = Registry()
        registry.add_module("monoq.plugins.log")
        config = load_config(os.devnull, env={}, overrides={
            "backend.url": "memory://", "worker.concurrency": 5, "worker.grace_seconds": 5,
            "plugins.log.path": path, "plugins.log.prefix": "<{attempt}> "})
        client = Client(MemoryBackend(), registry=registry)
        supervisor = Supervisor(config, roles=("worker", "scheduler"), client=client,
                                registry=registry, handle_signals=False)
        async with anyio.create_task_group() as tg:
            tg.start_soon(supervisor.run)
            await anyio.lowlevel.checkpoint()
            print("ready", flush=True)
            await anyio.to_thread.run_sync(sys.stdin.readline)
            jobs = await client.enqueue_many([
                {"handler": "log",
                 "payload": f"{me}:{i}:" + letters[(me + i) % len(letters)] * size}
                for i in range(count)])
            with anyio.fail_after(120):
                done = [await client.wait(job.id) for job in jobs]
            supervisor.stop()
        bad = [job.error for job in done if job.state.value != "completed"]
        assert not bad, bad

    anyio.run(main)
""")


@pytest.mark.slow
def test_many_processes_append_whole_lines_that_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "processed.log"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    processes, count, size = 4, 40, 64 * 1024  # lines far above a pipe's or page's size
    letters = string.ascii_letters
    children = [
        subprocess.Popen([sys.executable, str(script), str(path), str(me), str(count),
                          str(size), letters],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for me in range(processes)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.close()
        assert [child.wait(timeout=180) for child in children] == [0] * processes
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
            if child.stdout is not None:
                child.stdout.close()

    expected = sorted(f"<1> {me}:{i}:" + letters[(me + i) % len(letters)] * size
                      for me in range(processes) for i in range(count))
    assert sorted(lines_of(path)) == expected  # every line whole, exactly once
    assert path.stat().st_size == sum(len(line) + 1 for line in expected)


# -- POST /enqueue -------------------------------------------------------------------------


async def test_post_enqueue_reaches_the_file(tmp_path: Path) -> None:
    path = tmp_path / "processed.log"
    registry = log_registry()
    client = Client(MemoryBackend(), registry=registry)
    supervisor = Supervisor(make_config(path), roles=("worker", "scheduler"), client=client,
                            registry=registry, handle_signals=False)
    app = create_app(client, ApiConfig(), registry=registry)
    answers: list[dict[str, Any]] = []
    async with anyio.create_task_group() as tg, AsyncTestClient(app=app) as http:
        tg.start_soon(supervisor.run)
        try:
            sends: list[Callable[[], Any]] = [
                # what `curl -d 'hello from curl'` sends
                lambda: http.post("/enqueue", content=b"hello from curl", headers={
                    "Content-Type": "application/x-www-form-urlencoded"}),
                lambda: http.post("/enqueue", json={"message": "hello json"}),
                lambda: http.post("/enqueue", content=b"two\nlines",
                                  headers={"Content-Type": "text/plain"}),
            ]
            for send in sends:
                response = await send()
                assert response.status_code == 201, response.text
                answers.append(response.json())
            with anyio.fail_after(10):
                done = [await client.wait(answer["id"]) for answer in answers]
        finally:
            supervisor.stop()
    assert all(answer["enqueued"] is True for answer in answers)
    assert {job.handler for job in done} == {"log"}
    written = by_job_id(path)
    assert [written[answer["id"]] for answer in answers] == [
        "hello from curl", '{"message":"hello json"}', r"two\nlines"]
