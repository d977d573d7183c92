"""The repository layout installs as one ``monoq`` package (docs/DESIGN.md §2)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_symlinks_resolve_to_the_top_level_folders() -> None:
    for name in ("backends", "plugins"):
        link = ROOT / "monoq" / name
        assert link.is_symlink(), f"monoq/{name} must be a committed symlink"
        assert link.resolve() == (ROOT / name).resolve()


def test_entry_points_are_registered() -> None:
    backends = {ep.name: ep.value for ep in entry_points(group="monoq.backends")}
    assert backends["memory"] == "monoq.backends.memory:MemoryBackend"
    handlers = {ep.name: ep.value for ep in entry_points(group="monoq.handlers")}
    assert handlers["builtin"] == "monoq.plugins.builtin"


def test_python_dash_m_monoq_works() -> None:
    done = subprocess.run([sys.executable, "-m", "monoq", "--help"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0
    assert "enqueue" in done.stdout


@pytest.mark.slow
def test_wheel_holds_only_monoq(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path), str(ROOT)],
        check=True, timeout=300, capture_output=True,
    )
    [wheel] = tmp_path.glob("monoq-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert tops == {"monoq", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1]
                    + ".dist-info"}
    assert "monoq/backends/memory.py" in names
    assert "monoq/plugins/builtin.py" in names
    assert "monoq/py.typed" in names
    assert not any(n.startswith(("backends/", "plugins/")) for n in names)
