"""Which event loop `monoq run` picks, and that it says so."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from monoq.core import loop
from monoq.errors import ConfigError

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


def test_auto_uses_uvloop_when_it_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert loop.loop_options("auto") == {"use_uvloop": HAS_UVLOOP}
    monkeypatch.setattr(loop, "uvloop_available", lambda: False)
    assert loop.loop_options("auto") == {"use_uvloop": False}
    with pytest.raises(ConfigError, match="uvloop was asked for"):
        loop.loop_options("uvloop")


def test_asyncio_is_plain_asyncio_and_bad_names_are_refused() -> None:
    assert loop.loop_options("asyncio") == {"use_uvloop": False}
    with pytest.raises(ConfigError, match="'tokio' is not one of auto, uvloop, asyncio"):
        loop.loop_options("tokio")


@pytest.mark.parametrize("choice", ["asyncio", "auto"])
def test_run_runs_on_the_chosen_loop(choice: str) -> None:
    async def which() -> str:
        return loop.loop_name()

    expected = "uvloop" if choice == "auto" and HAS_UVLOOP else "asyncio"
    assert loop.run(which, loop=choice) == expected
    assert asyncio.get_event_loop_policy().__class__.__module__.startswith("asyncio")


def test_uvloop_is_installed_with_monoq_where_it_exists() -> None:
    """The dependency is declared for every platform but Windows, so under CI it is here."""
    if sys.platform == "win32":
        pytest.skip("uvloop does not exist on Windows")
    assert HAS_UVLOOP


@pytest.mark.parametrize(("setting", "expected"), [("asyncio", "asyncio"), ("auto", "uvloop")])
def test_monoq_run_says_which_loop_it_runs_on(tmp_path: Path, setting: str,
                                                 expected: str) -> None:
    env = {**os.environ, "MONOQ_MONOQ_LOOP": setting, "MONOQ_MONOQ_ROLES": "worker",
           "MONOQ_BACKEND_URL": f"sqlite:///{tmp_path}/m.db"}
    with subprocess.Popen(
        [sys.executable, "-m", "monoq", "run"], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if "monoq running roles" in line:
                    assert f"(event loop: {expected})" in line, line
                    break
            else:
                pytest.fail("monoq run never said it was running")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
