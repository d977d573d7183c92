"""The event loop a monoq process runs on: uvloop when it is installed, else asyncio.

uvloop is a dependency on Linux and macOS (not on Windows, where it does not exist), so
``monoq run`` gets it by default; ``[monoq] loop`` can ask for plain asyncio, or make a missing
uvloop an error instead of a silent fallback.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from monoq.errors import ConfigError

T = TypeVar("T")

CHOICES = ("auto", "uvloop", "asyncio")


def uvloop_available() -> bool:
    """Whether uvloop can be imported here."""
    return importlib.util.find_spec("uvloop") is not None


def loop_options(choice: str = "auto") -> dict[str, Any]:
    """anyio's asyncio ``backend_options`` for ``choice`` (see ``CHOICES``)."""
    if choice not in CHOICES:
        raise ConfigError(f"loop: {choice!r} is not one of {', '.join(CHOICES)}")
    if choice == "asyncio":
        return {"use_uvloop": False}
    if uvloop_available():
        return {"use_uvloop": True}
    if choice == "uvloop":
        raise ConfigError(
            "loop: uvloop was asked for ([monoq] loop = \"uvloop\") but is not installed; "
            "install it (pip install uvloop) or set loop = \"auto\""
        )
    return {"use_uvloop": False}


def run(func: Callable[..., Awaitable[T]], *args: Any, loop: str = "auto") -> T:
    """``anyio.run(func, *args)`` on the loop ``loop`` names."""
    return anyio.run(func, *args, backend="asyncio", backend_options=loop_options(loop))


def loop_name() -> str:
    """``uvloop`` or ``asyncio``: what the running event loop is."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
