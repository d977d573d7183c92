"""The handler module these tests use must be importable by name, in child processes too."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).parent


@pytest.fixture
def handlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """``monoq_isolation_handlers``, imported by name; ``$ISOLATION_DIR`` is a fresh folder."""
    monkeypatch.syspath_prepend(str(HERE))  # spawned children inherit sys.path
    monkeypatch.setenv("ISOLATION_DIR", str(tmp_path))
    module = importlib.import_module("monoq_isolation_handlers")
    yield module
    sys.modules.pop("monoq_isolation_handlers", None)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
