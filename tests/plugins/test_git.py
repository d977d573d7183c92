"""The git job kinds on real repositories made with the git binary, over file:// URLs.

Slow or failing git is played by small fake ``git`` scripts (configured as ``[plugins.git]
git``) that record what they were asked and hand everything else to the real binary.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import monoq
import monoq.plugins.git as gitjobs
from monoq.client import Client
from monoq.config import load_config
from monoq.core.models import AttemptOutcome, JobState
from monoq.errors import ConfigError
from monoq.plugins.git import GitCommandError, GitPlugin, storage_key
from monoq.registry import Registry
from tests.integration._inprocess import supervised

pytestmark = pytest.mark.anyio

REAL_GIT = shutil.which("git") or "git"
EPOCH = datetime(2024, 1, 1, 10, 0, tzinfo=UTC)
ALICE = ("Alice Archer", "alice@example.com")
BOB = ("Bob Baker", "bob@example.com")
CAROL = ("Carol Cole", "carol@example.com")


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    return {**env, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, **extra}


def git_output(*args: str) -> str:
    """What the real git prints for ``args`` (it must succeed)."""
    return subprocess.run([REAL_GIT, *args], capture_output=True, text=True, check=True,
                          env=_clean_env()).stdout


class Origin:
    """A repository to clone from: one commit a day from 2024-01-01 10:00 UTC on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.day = 0
        path.mkdir()
        self.git("init", "-q", "-b", "main")

    @property
    def url(self) -> str:
        return f"file://{self.path}"

    def git(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run([REAL_GIT, *args], cwd=self.path, env=env or _clean_env(),
                              capture_output=True, text=True, check=True)
        return done.stdout.strip()

    def commit(self, who: tuple[str, str], message: str, files: dict[str, str]) -> str:
        for name, text in files.items():
            (self.path / name).parent.mkdir(parents=True, exist_ok=True)
            (self.path / name).write_text(text)
        self.git("add", "--", *files)
        when = f"@{int((EPOCH + timedelta(days=self.day)).timestamp())} +0000"
        self.day += 1
        name, email = who
        self.git("commit", "-q", "-m", message, env=_clean_env(
            GIT_AUTHOR_NAME=name, GIT_AUTHOR_EMAIL=email, GIT_COMMITTER_NAME=name,
            GIT_COMMITTER_EMAIL=email, GIT_AUTHOR_DATE=when, GIT_COMMITTER_DATE=when))
        return self.git("rev-parse", "HEAD")


@pytest.fixture
def origin(tmp_path: Path) -> Origin:
    """main: 6 commits by Alice (3), Bob (2), Carol (1), 8 files; feature: one more by Carol."""
    repo = Origin(tmp_path / "origin")
    repo.commit(ALICE, "Start", {"README.md": "# demo\n", ".gitignore": "*.pyc\n"})
    repo.commit(BOB, "Add the app", {"src/app.py": "print(1)\n", "src/util.py": "X = 1\n"})
    repo.commit(ALICE, "Build and docs", {"Makefile": "all:\n", "docs/guide.md": "guide\n"})
    repo.commit(CAROL, "Settings", {"data/config.json": "{}\n"})
    repo.commit(BOB, "Test the app", {"tests/test_app.py": "def test(): pass\n"})
    repo.commit(ALICE, "Tidy the app", {"src/app.py": "print(2)\n"})
    repo.git("branch", "feature")
    repo.git("checkout", "-q", "feature")
    repo.commit(CAROL, "Fast path", {"lib/fast.rs": "fn main() {}\n"})
    repo.git("checkout", "-q", "main")
    return repo


async def make_plugin(storage: Path, **options: Any) -> GitPlugin:
    values: dict[str, Any] = {"storage_path": str(storage), "allow_file_urls": True, **options}
    plugin = GitPlugin(monoq.PluginOptions("git", values))
    await plugin.start()
    return plugin


def fake_git(where: Path, body: str) -> Path:
    """A ``git`` that runs ``body`` (Python; ``sub`` is the subcommand, ``args`` all arguments,
    ``config`` the leading ``-c`` pairs) and then becomes the real git with the same arguments."""
    script = where / "fake-git"
    script.write_text(
        f"#!{sys.executable}\n"
        "import os, subprocess, sys, time\n"
        f"REAL = {REAL_GIT!r}\n"
        "args = sys.argv[1:]\n"
        "config = []\n"
        "while len(config) < len(args) and args[len(config)] == '-c':\n"
        "    config += args[len(config):len(config) + 2]\n"
        "sub = next((a for a in args[len(config):] if not a.startswith('-')), '')\n"
        + body + "\n"
        "os.execv(REAL, [REAL, *args])\n"
    )
    script.chmod(0o755)
    return script


def hanging_git(where: Path) -> tuple[Path, Path]:
    """A git whose fetch never ends: it starts a child, records both pids, waits for it.

    A shell script (it starts in a millisecond), so that even a short command timeout finds
    both processes recorded."""
    pids = where / "pids"
    script = where / "hanging-git"
    script.write_text(
        "#!/bin/sh\n"
        'for arg in "$@"; do\n'
        '  if [ "$arg" = fetch ]; then\n'
        f'    sleep 1000 & echo "$$ $!" >> {shlex.quote(str(pids))}; wait; exit 1\n'
        "  fi\n"
        "done\n"
        f'exec {shlex.quote(REAL_GIT)} "$@"\n')
    script.chmod(0o755)
    return script, pids


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def recorded_pids(pids: Path, count: int = 2) -> list[int]:
    with anyio.fail_after(10):
        while not pids.exists() or len(pids.read_text().split()) < count:
            await anyio.sleep(0.01)
    return [int(p) for p in pids.read_text().split()]


async def wait_all_gone(found: list[int]) -> None:
    try:
        with anyio.fail_after(5):
            while any(alive(pid) for pid in found):
                await anyio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"still running: {[p for p in found if alive(p)]}") from None


@pytest.fixture
def reap() -> Iterator[list[int]]:
    """Pids a test started through a hanging git; killed at the end whatever happened (only
    while they still run that script or its sleep: a pid may have been reused)."""
    found: list[int] = []
    yield found
    for pid in found:
        with suppress(OSError):
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            if alive(pid) and (b"hanging-git" in command or b"sleep\x001000" in command):
                os.kill(pid, signal.SIGKILL)


def stored(storage: Path) -> list[str]:
    """What the storage folder holds: repository folders (by key), and the entries of .tmp
    and .locks, as sorted relative paths."""
    names = [p.name for p in storage.iterdir() if not p.name.startswith(".")]
    names += [f".tmp/{p.name}" for p in (storage / ".tmp").iterdir()]
    names += [f".locks/{p.name}" for p in (storage / ".locks").iterdir()]
    return sorted(names)


def without_time(result: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(result.pop("analyzed_at"), str)
    return result


def expected_main(origin: Origin, head: str) -> dict[str, Any]:
    return {
        "operation": "index",
        "url": origin.url,
        "branch": "main",
        "storage_key": storage_key(origin.url),
        "head": {"sha": head, "subject": "Tidy the app", "author_name": "Alice Archer",
                 "author_email": "alice@example.com", "committed_at": "2024-01-06T10:00:00Z"},
        "commit_count": 6,
        "first_commit_at": "2024-01-01T10:00:00Z",
        "last_commit_at": "2024-01-06T10:00:00Z",
        "author_count": 3,
        "authors": [
            {"name": "Alice Archer", "email": "alice@example.com", "commits": 3},
            {"name": "Bob Baker", "email": "bob@example.com", "commits": 2},
            {"name": "Carol Cole", "email": "carol@example.com", "commits": 1},
        ],
        "file_count": 8,
        "files_by_extension": {".py": 3, "(none)": 2, ".md": 2, ".json": 1},
        "previous_head": None,
        "new_commits": None,
    }


# --- index, update, delete -------------------------------------------------------------------


async def test_index_answers_the_analysis_and_stores_it_next_to_the_clone(
        origin: Origin, tmp_path: Path) -> None:
    plugin = await make_plugin(tmp_path / "store")
    result = await plugin.index({"url": origin.url})
    head = origin.git("rev-parse", "main")
    assert without_time(dict(result)) == expected_main(origin, head)
    assert list(result["files_by_extension"]) == [".py", "(none)", ".md", ".json"]
    key = result["storage_key"]
    assert stored(tmp_path / "store") == [".locks/" + key + ".lock", key]
    saved = json.loads((tmp_path / "store" / key / "analysis.json").read_text())
    assert saved == {k: v for k, v in result.items() if k != "operation"}
    clone = tmp_path / "store" / key / "repo.git"
    refs = git_output(f"--git-dir={clone}", "for-each-ref", "--format=%(refname) %(objectname)")
    assert refs == f"refs/heads/main {head}\n"


async def test_branch_alias_and_default_branch(origin: Origin, tmp_path: Path) -> None:
    plugin = await make_plugin(tmp_path / "store")
    feature = await plugin.index({"url": origin.url, "branch": "feature"})
    alias = await plugin.index({"url": origin.url, "default_branch": "feature"})
    default = await plugin.index({"url": origin.url})
    assert feature["branch"] == alias["branch"] == "feature"
    assert feature["storage_key"] == alias["storage_key"] != default["storage_key"]
    assert default["branch"] == "main"  # the remote's HEAD
    assert feature["head"]["sha"] == origin.git("rev-parse", "feature")
    assert feature["commit_count"] == 7
    assert feature["last_commit_at"] == "2024-01-07T10:00:00Z"
    assert [(a["name"], a["commits"]) for a in feature["authors"]] == [
        ("Alice Archer", 3), ("Bob Baker", 2), ("Carol Cole", 2)]
    assert feature["files_by_extension"][".rs"] == 1
    assert feature["file_count"] == 9


async def test_update_shows_the_new_head_and_what_came_since(
        origin: Origin, tmp_path: Path) -> None:
    plugin = await make_plugin(tmp_path / "store")
    first = await plugin.index({"url": origin.url, "branch": "main"})
    unchanged = await plugin.update({"url": origin.url, "branch": "main"})
    assert (unchanged["previous_head"], unchanged["new_commits"]) == (first["head"]["sha"], 0)
    new = origin.commit(BOB, "More tests", {"tests/test_more.py": "def test(): pass\n"})
    result = await plugin.update({"url": origin.url, "branch": "main"})
    assert result["operation"] == "update"
    assert result["head"] == {"sha": new, "subject": "More tests", "author_name": "Bob Baker",
                              "author_email": "bob@example.com",
                              "committed_at": "2024-01-08T10:00:00Z"}
    assert (result["commit_count"], result["previous_head"], result["new_commits"]) == (
        7, first["head"]["sha"], 1)
    assert result["authors"][:2] == [
        {"name": "Alice Archer", "email": "alice@example.com", "commits": 3},
        {"name": "Bob Baker", "email": "bob@example.com", "commits": 3}]
    assert result["files_by_extension"][".py"] == 4
    key = result["storage_key"]
    saved = json.loads((tmp_path / "store" / key / "analysis.json").read_text())
    assert saved["head"]["sha"] == new


async def test_update_follows_a_force_push(origin: Origin, tmp_path: Path) -> None:
    plugin = await make_plugin(tmp_path / "store")
    first = await plugin.index({"url": origin.url})
    origin.git("reset", "-q", "--hard", "HEAD~2")
    result = await plugin.update({"url": origin.url})
    assert result["head"]["sha"] == origin.git("rev-parse", "main")
    assert (result["commit_count"], result["previous_head"], result["new_commits"]) == (
        4, first["head"]["sha"], 0)


async def test_update_of_a_repository_never_indexed_clones_it(
        origin: Origin, tmp_path: Path) -> None:
    plugin = await make_plugin(tmp_path / "store")
    result = await plugin.update({"url": origin.url})
    assert result["operation"] == "update"
    assert (result["commit_count"], result["previous_head"], result["new_commits"]) == (
        6, None, None)
    assert (tmp_path / "store" / result["storage_key"] / "repo.git").is_dir()


async def test_index_again_replaces_the_clone(origin: Origin, tmp_path: Path) -> None:
    plugin = await make_plugin(tmp_path / "store")
    first = await plugin.index({"url": origin.url})
    new = origin.commit(CAROL, "Notes", {"NOTES.txt": "n\n"})
    again = await plugin.index({"url": origin.url})
    assert (again["head"]["sha"], again["previous_head"], again["new_commits"]) == (
        new, first["head"]["sha"], 1)
    key = first["storage_key"]
    assert stored(tmp_path / "store") == [".locks/" + key + ".lock", key]


async def test_delete_removes_everything_and_is_idempotent(
        origin: Origin, tmp_path: Path) -> None:
    storage = tmp_path / "store"
    plugin = await make_plugin(storage)
    default = await plugin.index({"url": origin.url})
    feature = await plugin.index({"url": origin.url, "branch": "feature"})
    junk = storage / ".tmp" / f"{default['storage_key']}.clone.0badc0de"
    junk.mkdir()
    result = await plugin.delete({"url": origin.url})
    assert result == {"operation": "delete", "url": origin.url, "branch": None,
                      "storage_key": default["storage_key"], "existed": True,
                      "removed": {"repository": True, "analysis": True, "leftovers": 1}}
    fkey = feature["storage_key"]
    assert stored(storage) == [".locks/" + fkey + ".lock", fkey]  # the other branch stays
    again = await plugin.delete({"url": origin.url})
    assert (again["existed"], again["removed"]) == (
        False, {"repository": False, "analysis": False, "leftovers": 0})
    await plugin.delete({"url": origin.url, "branch": "feature"})
    assert stored(storage) == []


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example.com/team/repo.git", "plain http is not accepted"),
        ("ext::sh", "remote helpers"),
        ("fd::17", "remote helpers"),
        ("-oProxyCommand=calc", "starts with '-'"),
        ("ssh://-oProxyCommand=calc/repo", "may not start with '-'"),
        ("-u@host:repo", "starts with '-'"),
        ("/srv/git/repo.git", "local paths are not accepted"),
        ("./repo", "local paths are not accepted"),
        ("git://example.com/repo.git", "git:// protocol is not accepted"),
        ("ftp://example.com/repo.git", "the scheme 'ftp' is not accepted"),
        ("https://exa mple.com/repo.git", "whitespace or control characters"),
        ("https://example.com/repo.git\n", "whitespace or control characters"),
        ("https://example.com", "names no repository"),
        ("https://exa_mple.com/repo.git", "is not a host name"),
        ("https://example.com:99999/repo.git", "port"),
        ("ssh://git:hunter2@example.com/repo.git", "cannot carry a password"),
        ("https://bob:pa/ss@example.com/repo.git", "'https://***@example.com/repo.git'"),
        ("bob:hunter2@example.com:repo.git", "'***@example.com:repo.git' is refused"),
        ("file://otherhost/srv/repo", "file:///absolute/path"),
        ("repo", "local paths are not accepted"),
        ("file:relative/repo", "is not a https://, ssh:// or user@host:path URL"),
        ("example.com:team/repo.git", "is not a https://, ssh:// or user@host:path URL"),
        ("git@exa_mple.com:team/repo.git", "is not a https://, ssh:// or user@host:path URL"),
        ("git@example.com:", "names no repository"),
        ("git@example.com::x", "may not start with ':'"),
        (42, "payload.url must be a string"),
        ("", "payload.url is required"),
    ],
)
async def test_refused_urls_are_dead_at_once_and_change_nothing(
        tmp_path: Path, url: object, message: str) -> None:
    storage = tmp_path / "store"
    plugin = await make_plugin(storage)
    for job in (plugin.index, plugin.update, plugin.delete):
        with pytest.raises(monoq.SkipRetry) as info:
            await job({"url": url})
        assert message in str(info.value)
        assert "hunter2" not in str(info.value) and "pa/ss" not in str(info.value)
    assert stored(storage) == []


async def test_file_urls_need_allow_file_urls(origin: Origin, tmp_path: Path) -> None:
    plugin = await make_plugin(tmp_path / "store", allow_file_urls=False)
    with pytest.raises(monoq.SkipRetry, match=r"allow_file_urls = true"):
        await plugin.index({"url": origin.url})
    assert stored(tmp_path / "store") == []


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("https://example.com/repo.git", "the payload must be an object"),
        ({"url": "https://example.com/r.git", "brnach": "main"}, "unknown key 'brnach'"),
        ({"url": "https://example.com/r.git", "branch": "a", "default_branch": "b"}, "differ"),
        ({"url": "https://example.com/r.git", "branch": "-x"}, "starts with '-'"),
        ({"url": "https://example.com/r.git", "branch": "a..b"}, "contains '..'"),
        ({"url": "https://example.com/r.git", "branch": "a b"}, "contains ' '"),
        ({"url": "https://example.com/r.git", "branch": "x.lock"}, "ends with '.lock'"),
        ({"url": "https://example.com/r.git", "branch": "a@{1}"}, "contains '@{'"),
        ({"url": "https://example.com/r.git", "branch": ""}, "it is empty"),
        ({"url": "https://example.com/r.git", "branch": "HEAD"}, "'HEAD' is not a branch"),
        ({"url": "https://example.com/r.git", "default_branch": ".x"}, "starts with '.'"),
        ({"url": "https://example.com/r.git", "branch": 7}, "payload.branch must be a string"),
    ],
)
async def test_bad_payloads_and_branches_are_refused(
        tmp_path: Path, payload: object, message: str) -> None:
    storage = tmp_path / "store"
    plugin = await make_plugin(storage)
    with pytest.raises(monoq.SkipRetry) as info:
        await plugin.index(payload)
    assert message in str(info.value)
    assert stored(storage) == []


@pytest.mark.parametrize("name", [
    "main", "feature/x", "release-1.2", "a.b", "ü", "x/.y", "x/y.lock", "a//b", "/a", "a/",
    "a.", "a..b", "a~1", "a^", "a:b", "a?", "a*", "a[b", "a\\b", "a@{b", "a@b", "a\tb",
    ".a", "x.lock", "a b", "a/b/c", "v1.0-rc.2",
])
def test_branch_names_are_judged_as_git_check_ref_format_does(name: str) -> None:
    # (besides, names starting with '-' and the names "HEAD" and "@" are refused on purpose)
    git_accepts = subprocess.run([REAL_GIT, "check-ref-format", f"refs/heads/{name}"],
                                 check=False, env=_clean_env()).returncode == 0
    try:
        gitjobs.check_branch(name)
    except gitjobs.InvalidInput:
        accepted = False
    else:
        accepted = True
    assert accepted == git_accepts


def test_storage_key_ignores_credentials_case_default_ports_and_trailing_slashes() -> None:
    key = storage_key("https://example.com/team/repo.git")
    assert storage_key("https://Alice:tok@EXAMPLE.com:443/team/repo.git/") == key
    assert storage_key("https://example.com:8443/team/repo.git") != key
    assert storage_key("https://example.com/team/repo.git", "main") != key
    assert storage_key("ssh://git@example.com:22/team/repo.git") == storage_key(
        "ssh://git@example.com/team/repo.git")
    assert storage_key("git@example.com:team/repo.git") != storage_key(
        "ssh://git@example.com/team/repo.git")
    assert len(key) == 32 and int(key, 16) >= 0


# --- credentials -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "options", "shown", "fill", "secrets"),
    [
        ("https://alice:p%40ss%3Aword@127.0.0.1:9/team/repo.git", {},
         "https://***@127.0.0.1:9/team/repo.git", "username=alice\npassword=p@ss:word\n",
         ["p@ss:word", "p%40ss%3Aword"]),
        ("https://tok3n-in-url@127.0.0.1:9/team/repo.git", {},
         "https://***@127.0.0.1:9/team/repo.git", "username=tok3n-in-url\npassword=\n",
         ["tok3n-in-url"]),
        ("https://127.0.0.1:9/team/repo.git",
         {"credentials": {"127.0.0.1:9": "x-access-token:tok3n-in-config"}},
         "https://127.0.0.1:9/team/repo.git", "username=x-access-token\npassword=tok3n-in-config\n",
         ["tok3n-in-config"]),
    ],
)
async def test_credentials_stay_off_git_command_lines_results_files_and_logs(
        origin: Origin, tmp_path: Path, caplog: pytest.LogCaptureFixture, url: str,
        options: dict[str, Any], shown: str, fill: str, secrets: list[str]) -> None:
    # The https remote is played by the origin: this git swaps the URL for the file one after
    # recording its command line and what the credential helper we configured answers.
    record = tmp_path / "record.json"
    script = fake_git(tmp_path, (
        "import json\n"
        "urls = [a for a in args if a.startswith('https://')]\n"
        "if urls:\n"
        "    fill = subprocess.run([REAL, *config, 'credential', 'fill'], text=True,\n"
        "        input='protocol=https\\nhost=127.0.0.1:9\\n\\n', capture_output=True).stdout\n"
        f"    with open({str(record)!r}, 'a') as f:\n"
        "        f.write(json.dumps({'argv': args, 'fill': fill}) + '\\n')\n"
        f"    args = ['-c', 'protocol.file.allow=always', *[{origin.url!r} if a in urls "
        "else a for a in args]]\n"
    ))
    caplog.set_level(logging.DEBUG)
    storage = tmp_path / "store"
    plugin = await make_plugin(storage, git=str(script), allow_file_urls=False, **options)
    result = await plugin.index({"url": url})
    await plugin.update({"url": url})
    assert result["url"] == shown
    assert result["head"]["sha"] == origin.git("rev-parse", "main")
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    # each job: ls-remote (no branch given: the remote's HEAD), then fetch
    assert [c["argv"][-2] for c in calls] == ["https://127.0.0.1:9/team/repo.git"] * 4
    assert [fill in c["fill"] for c in calls] == [True] * 4
    everything = [json.dumps(c["argv"]) for c in calls] + [
        json.dumps(result), caplog.text,
        *(p.read_text(errors="replace") for p in storage.rglob("*") if p.is_file())]
    for text in everything:
        for secret in secrets:
            assert secret not in text


async def test_git_runs_without_prompts_user_config_or_inherited_git_variables(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere"))  # e.g. monoq started by a hook
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.delenv("GIT_SSH_COMMAND", raising=False)
    monkeypatch.delenv("GIT_SSH", raising=False)
    record = tmp_path / "record.json"
    script = fake_git(tmp_path, (
        "import json\n"
        "if sub == 'ls-remote':\n"
        f"    json.dump({{'argv': args, 'env': dict(os.environ)}}, open({str(record)!r}, 'w'))\n"
        "    sys.exit(128)\n"
    ))
    plugin = await make_plugin(tmp_path / "store", git=str(script), allow_file_urls=False)
    with pytest.raises(GitCommandError, match=r"git ls-remote of git@example.com:team/repo.git "
                                              r"failed \(exit code 128\): \(no message\)"):
        await plugin.index({"url": "git@example.com:team/repo.git"})
    seen = json.loads(record.read_text())
    argv, env = seen["argv"], seen["env"]
    assert argv[-4:] == ["--symref", "--", "git@example.com:team/repo.git", "HEAD"]
    assert argv[:2] == ["-c", "protocol.allow=never"]
    assert "protocol.ssh.allow=always" in argv and "protocol.file.allow=always" not in argv
    assert {k: env.get(k) for k in ("GIT_TERMINAL_PROMPT", "GIT_ASKPASS", "SSH_ASKPASS",
                                    "GIT_CONFIG_NOSYSTEM", "GIT_CONFIG_GLOBAL", "LC_ALL",
                                    "GIT_SSH_COMMAND", "GIT_DIR", "GIT_CONFIG_COUNT")} == {
        "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": "",
        "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "LC_ALL": "C",
        "GIT_SSH_COMMAND": "ssh -o BatchMode=yes", "GIT_DIR": None, "GIT_CONFIG_COUNT": None}


async def test_configured_credentials_are_only_for_their_host(tmp_path: Path) -> None:
    plugin = await make_plugin(tmp_path / "store",
                               credentials={"Git.Example.com:443": "u:pw", "[::1]:8443": "t"})
    assert plugin.credentials == {"git.example.com": ("u", "pw"), "[::1]:8443": ("t", "")}
    used = gitjobs._Git(plugin, gitjobs.parse_remote("https://git.example.com:443/r.git",
                                                     allow_file_urls=False))
    assert (used.credential_base, used.env["MONOQ_GIT_PASSWORD"]) == (
        "https://git.example.com", "pw")
    other = gitjobs._Git(plugin, gitjobs.parse_remote("https://example.com/r.git",
                                                      allow_file_urls=False))
    assert other.credential_base is None and "MONOQ_GIT_PASSWORD" not in other.env
    assert not any("credential.https" in arg for arg in other.config)


async def test_credentials_echoed_by_git_are_redacted_in_errors(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    script = fake_git(tmp_path, (
        "if sub == 'ls-remote':\n"
        "    sys.stderr.write(\"fatal: unable to access 'https://alice:tok3n-SECRET@127.0.0.1:9/"
        "r.git/': tok3n-SECRET rejected\\n\")\n"
        "    sys.exit(128)\n"
    ))
    caplog.set_level(logging.DEBUG)
    async with running(tmp_path / "store", git=str(script)) as client:
        job = await client.enqueue("git.index",
                                   {"url": "https://alice:tok3n-SECRET@127.0.0.1:9/r.git"},
                                   max_retries=0)
        with anyio.fail_after(10):
            done = await client.wait(job.id)
        [attempt] = await client.attempts(job.id)
    assert done.state is JobState.DEAD
    assert done.error == (
        "GitCommandError: git ls-remote of https://***@127.0.0.1:9/r.git failed (exit code 128):"
        " fatal: unable to access 'https://***@127.0.0.1:9/r.git/': *** rejected")
    for text in (done.error, attempt.error_message or "", attempt.traceback or "", caplog.text,
                 json.dumps(done.result)):
        assert "tok3n-SECRET" not in text


# --- through the worker ------------------------------------------------------------------------


def empty_config(where: Path) -> Path:
    """An empty config file: the tests must not read the repository's ./config.toml."""
    path = where / "empty-config.toml"
    path.touch()
    return path


@asynccontextmanager
async def running(storage: Path, **options: Any) -> AsyncIterator[Client]:
    """A worker and scheduler with only the git jobs, on the memory backend."""
    registry = Registry()
    registry.add_module(gitjobs)
    overrides = {
        "backend.url": "memory://",
        "worker.heartbeat_seconds": 0.05,
        "worker.lease_seconds": 2,
        "worker.grace_seconds": 2,
        "retry.base_seconds": 0.01,
        "retry.max_seconds": 0.05,
        "plugins.git.storage_path": str(storage),
        "plugins.git.allow_file_urls": True,
        **{f"plugins.git.{k}": v for k, v in options.items()},
    }
    config = load_config(empty_config(storage.parent), env={}, overrides=overrides)
    async with supervised(config, registry) as (client, _):
        yield client


async def test_index_update_delete_through_the_worker(origin: Origin, tmp_path: Path) -> None:
    storage = tmp_path / "store"
    payload = {"url": origin.url, "default_branch": "main"}
    async with running(storage) as client:
        with anyio.fail_after(20):
            indexed = await client.wait((await client.enqueue("git.index", payload)).id)
            new = origin.commit(CAROL, "Later", {"later.py": ""})
            updated = await client.wait((await client.enqueue("git.update", payload)).id)
            deleted = await client.wait((await client.enqueue("git.delete", payload)).id)
            refused = await client.wait((await client.enqueue(
                "git.index", {"url": "http://example.com/r.git"})).id)
    assert indexed.state is JobState.COMPLETED and indexed.timeout == 1800
    assert indexed.result["commit_count"] == 6 and indexed.result["branch"] == "main"
    assert updated.result["head"]["sha"] == new and updated.result["new_commits"] == 1
    assert deleted.result["existed"] is True
    assert stored(storage) == []
    assert refused.state is JobState.DEAD and refused.attempt == 1
    assert refused.error is not None and refused.error.startswith(
        "SkipRetry: payload.url 'http://example.com/r.git' is refused: plain http")


# --- failures, leftovers, locks --------------------------------------------------------------


async def test_failed_clone_leaves_nothing_trusted_and_the_retry_succeeds(
        origin: Origin, tmp_path: Path) -> None:
    # git fails once after the fetch (while analysing): the retry must start clean.
    marker = tmp_path / "failed-once"
    script = fake_git(tmp_path, (
        f"if sub == 'ls-tree' and not os.path.exists({str(marker)!r}):\n"
        f"    open({str(marker)!r}, 'w').close()\n"
        "    sys.stderr.write('fatal: disk on fire\\n')\n"
        "    sys.exit(128)\n"
    ))
    storage = tmp_path / "store"
    plugin = await make_plugin(storage, git=str(script))
    key = storage_key(origin.url)
    with pytest.raises(GitCommandError, match=r"git ls-tree of \w+ failed \(exit code 128\): "
                                              "fatal: disk on fire"):
        await plugin.index({"url": origin.url})
    assert stored(storage) == [f".locks/{key}.lock"]  # no clone, no temporary folder
    marker.unlink()
    async with running(storage, git=str(script)) as client:
        job = await client.enqueue("git.index", {"url": origin.url})
        with anyio.fail_after(20):
            done = await client.wait(job.id)
        history = await client.attempts(job.id)
    assert done.state is JobState.COMPLETED and done.attempt == 2
    assert [a.outcome for a in history] == [AttemptOutcome.FAILED, AttemptOutcome.COMPLETED]
    assert "fatal: disk on fire" in (history[0].error_message or "")
    assert done.result["commit_count"] == 6


async def test_leftovers_of_a_killed_run_are_removed_by_the_next(
        origin: Origin, tmp_path: Path) -> None:
    storage = tmp_path / "store"
    plugin = await make_plugin(storage)
    key = storage_key(origin.url)
    half = storage / ".tmp" / f"{key}.clone.deadbeef" / "repo.git"
    half.mkdir(parents=True)
    (half / "HEAD").write_text("ref: refs/heads/main\n")
    other = storage / ".tmp" / "0123456789abcdef0123456789abcdef.clone.cafe"
    other.mkdir()  # another repository's job may be running: not ours to touch
    result = await plugin.update({"url": origin.url})
    assert result["commit_count"] == 6
    assert stored(storage) == [f".locks/{key}.lock", f".tmp/{other.name}", key]


async def test_a_missing_git_binary_is_a_retryable_error(origin: Origin, tmp_path: Path) -> None:
    plugin = await make_plugin(tmp_path / "store", git=str(tmp_path / "no-such-git"))
    with pytest.raises(GitCommandError, match=r"cannot start git .*no-such-git.*"
                                              r"\[plugins.git\] git"):
        await plugin.index({"url": origin.url})


async def test_a_remote_without_default_branch_needs_a_branch(tmp_path: Path) -> None:
    empty = Origin(tmp_path / "empty")
    plugin = await make_plugin(tmp_path / "store")
    with pytest.raises(GitCommandError, match="no default branch"):
        await plugin.index({"url": empty.url})
    with pytest.raises(GitCommandError, match="couldn't find remote ref refs/heads/main"):
        await plugin.index({"url": empty.url, "branch": "main"})


# Another process: takes the lock file's flock, says so, and holds it until its stdin closes.
HOLD_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


async def test_a_job_waits_while_another_process_holds_the_repository(
        origin: Origin, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    calls = tmp_path / "calls"
    script = fake_git(tmp_path, f"open({str(calls)!r}, 'a').write(sub + '\\n')")
    storage = tmp_path / "store"
    plugin = await make_plugin(storage, git=str(script))
    lock = storage / ".locks" / f"{storage_key(origin.url, 'main')}.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline() == "locked\n"
        caplog.set_level(logging.INFO, logger="monoq.plugins.git")
        result: dict[str, Any] = {}

        async def index() -> None:
            result.update(await plugin.index({"url": origin.url, "branch": "main"}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(index)
            with anyio.fail_after(10):
                while "is busy" not in caplog.text:
                    await anyio.sleep(0.01)
            assert not calls.exists()  # not one git command while the other holds the lock
            holder.stdin.close()  # the other process ends, and its lock with it
    finally:
        holder.kill()
        holder.wait()
        holder.stdin.close()
        holder.stdout.close()
    assert result["commit_count"] == 6
    assert "fetch" in calls.read_text().split()


async def test_two_jobs_on_one_repository_never_overlap(origin: Origin, tmp_path: Path) -> None:
    events = tmp_path / "events"
    busy = tmp_path / "busy"
    script = fake_git(tmp_path, (
        "if sub == 'fetch':\n"
        f"    log = open({str(events)!r}, 'a')\n"
        "    log.write('enter\\n'); log.flush()\n"
        "    try:\n"
        f"        os.close(os.open({str(busy)!r}, os.O_CREAT | os.O_EXCL))\n"
        "    except FileExistsError:\n"
        "        log.write('OVERLAP\\n'); log.flush()\n"
        "    time.sleep(0.3)  # a slow fetch, to give an overlap every chance to show\n"
        f"    os.unlink({str(busy)!r})\n"
        "    log.write('exit\\n'); log.close()\n"
    ))
    plugin = await make_plugin(tmp_path / "store", git=str(script))
    results: list[dict[str, Any]] = []

    async def job(which: str) -> None:
        run = plugin.index if which == "index" else plugin.update
        results.append(await run({"url": origin.url}))

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(job, "index")
            tg.start_soon(job, "update")
    assert events.read_text().split() == ["enter", "exit", "enter", "exit"]
    assert sorted(r["operation"] for r in results) == ["index", "update"]


# --- stopping git ----------------------------------------------------------------------------


async def test_cancelling_a_job_kills_the_git_process_group(
        origin: Origin, tmp_path: Path, reap: list[int]) -> None:
    script, pids = hanging_git(tmp_path)
    storage = tmp_path / "store"
    async with running(storage, git=str(script)) as client:
        job = await client.enqueue("git.index", {"url": origin.url})
        found = await recorded_pids(pids)
        reap.extend(found)
        assert all(alive(pid) for pid in found)
        await client.cancel(job.id)
        with anyio.fail_after(10):
            done = await client.wait(job.id)
    assert done.state is JobState.CANCELLED
    await wait_all_gone(found)  # git and the child it started
    assert stored(storage) == [f".locks/{storage_key(origin.url)}.lock"]  # nothing half-done


async def test_cancel_scope_of_a_direct_call_kills_the_git_process_group(
        origin: Origin, tmp_path: Path, reap: list[int]) -> None:
    script, pids = hanging_git(tmp_path)
    plugin = await make_plugin(tmp_path / "store", git=str(script))
    async with anyio.create_task_group() as tg:
        tg.start_soon(plugin.update, {"url": origin.url})
        found = await recorded_pids(pids)
        reap.extend(found)
        tg.cancel_scope.cancel()
    await wait_all_gone(found)
    assert stored(tmp_path / "store") == [f".locks/{storage_key(origin.url)}.lock"]


async def test_command_timeout_kills_the_git_process_group(
        origin: Origin, tmp_path: Path, reap: list[int]) -> None:
    script, pids = hanging_git(tmp_path)
    plugin = await make_plugin(tmp_path / "store", git=str(script),
                               command_timeout_seconds=0.5)
    with pytest.raises(GitCommandError, match=r"git fetch of file://.* \(branch main\) did not "
                                              r"finish within 0.5s"):
        await plugin.index({"url": origin.url, "branch": "main"})
    found = [int(p) for p in pids.read_text().split()]
    reap.extend(found)
    assert len(found) == 2
    await wait_all_gone(found)


# --- options ---------------------------------------------------------------------------------


async def test_result_lists_are_capped_by_the_options(origin: Origin, tmp_path: Path) -> None:
    plugin = await make_plugin(tmp_path / "store", max_authors=1, max_extensions=2)
    result = await plugin.index({"url": origin.url})
    assert result["authors"] == [
        {"name": "Alice Archer", "email": "alice@example.com", "commits": 3}]
    assert result["author_count"] == 3
    assert result["files_by_extension"] == {".py": 3, "(none)": 2, "(other)": 3}
    assert result["file_count"] == 8


def test_storage_path_comes_from_git_storage_path(tmp_path: Path) -> None:
    registry = Registry()
    registry.add_module(gitjobs)
    config = load_config(empty_config(tmp_path), env={"GIT_STORAGE_PATH": str(tmp_path / "repos")})
    [plugin] = registry.build_plugins(config.plugins).values()
    assert isinstance(plugin, GitPlugin)
    assert plugin.storage_path == tmp_path / "repos"
    assert (plugin.allow_file_urls, plugin.git, plugin.command_timeout) == (False, "git", None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"storage_path": 5}, "plugins.git.storage_path: must be a string"),
        ({"storage_path": " "}, "plugins.git.storage_path: must not be empty"),
        ({"allow_file_urls": "maybe"}, "plugins.git.allow_file_urls: must be true or false"),
        ({"git": ""}, "plugins.git.git: must not be empty"),
        ({"command_timeout_seconds": -1}, "plugins.git.command_timeout_seconds: must be between"),
        ({"max_authors": 0}, "plugins.git.max_authors: must be between 1 and 100000"),
        ({"max_extensions": "many"}, "plugins.git.max_extensions: must be a number"),
        ({"storage": "/x"}, "plugins.git.storage: unknown key; allowed: "),
        ({"credentials": {"https://x.com": "t"}},
         "plugins.git.credentials: 'https://x.com' is not a host name"),
        ({"credentials": {"x.com": ""}}, "plugins.git.credentials: the value for 'x.com' is"),
        ({"credentials": "x"}, "plugins.git.credentials: must be a table"),
    ],
)
def test_bad_options_are_config_errors_naming_the_key(
        options: dict[str, Any], message: str) -> None:
    registry = Registry()
    registry.add_module(gitjobs)
    with pytest.raises(ConfigError) as info:
        registry.build_plugins({"git": options})
    assert str(info.value).startswith(message)


async def test_storage_folders_are_made_private_at_start(tmp_path: Path) -> None:
    await make_plugin(tmp_path / "a" / "store")
    assert (tmp_path / "a" / "store").stat().st_mode & 0o777 == 0o700
    assert stored(tmp_path / "a" / "store") == []

