"""The conformance kit as a third party uses it: a fourth backend, in a project of its own.

``ThrowawayBackend`` is the memory backend under another name (and with a clock of its own, so
that an optional protocol is exercised too). A fresh pytest process runs the whole kit on it
from a temporary directory holding only what CONTRIBUTING.md tells a backend author to write:
a conftest.py with the plugin and a ``monoq_backend_factory``, and one test module.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import monoq.testing.suite
from monoq.testing.suite import MODULES, gather

HERE = Path(__file__).parent

CONFTEST = '''
from datetime import UTC, datetime

import pytest

from monoq.backends.memory import MemoryBackend
from monoq.testing import OpenBackend, connected

pytest_plugins = ["monoq.testing.plugin"]


class ThrowawayBackend(MemoryBackend):
    """A third party's backend: memory under another name, with a clock of its own."""

    def __init__(self) -> None:
        super().__init__("throwaway://")

    async def server_now(self) -> datetime:
        now = datetime.now(UTC)
        return now.replace(microsecond=now.microsecond // 1000 * 1000)


@pytest.fixture
def monoq_backend_factory() -> OpenBackend:
    return connected(ThrowawayBackend)
'''

TEST_MODULE = '''
from monoq.testing.suite import *
'''

PYTEST_INI = '''
[pytest]
addopts = -p no:cacheprovider
filterwarnings = error
'''


def kit_size() -> int:
    """How many tests the kit holds, its parametrized cases counted one by one."""
    total = 0
    for test in gather().values():
        cases = 1
        for mark in getattr(test, "pytestmark", []):
            if mark.name == "parametrize":
                cases *= len(mark.args[1])
        total += cases
    return total


@pytest.mark.slow
def test_a_fourth_backend_runs_the_whole_kit_as_a_third_party_would(tmp_path: Path) -> None:
    for name, text in [("conftest.py", CONFTEST), ("test_monoq_conformance.py", TEST_MODULE),
                       ("pytest.ini", PYTEST_INI)]:
        (tmp_path / name).write_text(textwrap.dedent(text).lstrip())
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "--junitxml", str(tmp_path / "kit.xml")],
        cwd=tmp_path, capture_output=True, text=True, check=False, timeout=300,
    )
    output = done.stdout[-4000:] + done.stderr[-2000:]
    assert done.returncode == 0, output
    suite = ET.parse(tmp_path / "kit.xml").getroot().find("testsuite")  # noqa: S314 (our file)
    assert suite is not None, output
    assert (suite.get("failures"), suite.get("errors")) == ("0", "0"), output
    assert int(suite.get("tests", "0")) == kit_size(), output
    skips = [s.get("message", "") for s in suite.iter("skipped")]
    # only what ThrowawayBackend does not declare is skipped: Doctor, and the wake-ups by
    # another instance (memory cannot be shared); its ServerTime clock is tested
    assert skips, output
    assert all("ThrowawayBackend does not" in s for s in skips), skips
    assert not any("ServerTime" in s for s in skips), skips


def test_every_module_of_the_kit_is_gathered_and_run_here() -> None:
    found = {info.name for info in pkgutil.iter_modules(monoq.testing.suite.__path__)}
    assert found == {module.__name__.rsplit(".", 1)[1] for module in MODULES}
    for name in found:
        thin = HERE / f"test_{name}.py"
        assert f"from monoq.testing.suite.{name} import *" in thin.read_text(), thin


def test_import_monoq_does_not_load_the_kit_or_pytest() -> None:
    code = ("import sys, monoq, monoq.client, monoq.core.backend; "
            "print(sorted(m for m in ('monoq.testing', 'pytest', '_pytest') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=HERE)
    assert done.stdout.strip() == "[]"
