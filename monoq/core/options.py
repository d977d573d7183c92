"""Parsing a backend's ``[backend.options]`` table: one set of checks and messages for every
backend. Each check raises ``ConfigError`` naming ``backend.options.<key>`` and answers the
value as the backend uses it."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from monoq.errors import ConfigError


def known_options(backend: str, options: Mapping[str, Any] | None,
                  known: Collection[str]) -> dict[str, Any]:
    """``options`` as a dict, when every key is one of ``known`` (the options of the backend
    named ``backend``); else a ``ConfigError`` naming the first unknown key."""
    opts = dict(options or {})
    for key in opts:
        if key not in known:
            if not known:
                raise ConfigError(f"backend.options.{key}: unknown option; {backend} takes none")
            raise ConfigError(
                f"backend.options.{key}: unknown option for the {backend} backend "
                f"(known: {', '.join(known)})"
            )
    return opts


def int_option(key: str, value: object, lo: int, hi: int | None = None) -> int:
    """An integer from ``lo`` to ``hi`` (no upper bound when None); never a bool."""
    if (isinstance(value, bool) or not isinstance(value, int) or value < lo
            or (hi is not None and value > hi)):
        bounds = f">= {lo}" if hi is None else f"{lo}-{hi}"
        raise ConfigError(f"backend.options.{key}: expected an integer {bounds}, got {value!r}")
    return value


def float_option(key: str, value: object) -> float:
    """A positive finite number (an int is taken as a float); never a bool."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"backend.options.{key}: expected a positive number, got {value!r}")
    return float(value)


def bool_option(key: str, value: object) -> bool:
    """``true`` or ``false`` (a TOML boolean, never a string or a number)."""
    if not isinstance(value, bool):
        raise ConfigError(f"backend.options.{key}: expected true or false, got {value!r}")
    return value


def str_option(key: str, value: object) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"backend.options.{key}: expected a non-empty string, got {value!r}")
    return value


def choice_option(key: str, value: object, choices: Sequence[str], *,
                  any_case: bool = False) -> str:
    """One of ``choices``, as written there (with ``any_case``, a string matching one in any
    case)."""
    if isinstance(value, str):
        for choice in choices:
            if value == choice or (any_case and value.lower() == choice.lower()):
                return choice
    raise ConfigError(f"backend.options.{key}: expected {', '.join(choices[:-1])} or "
                      f"{choices[-1]}, got {value!r}")


__all__ = ["bool_option", "choice_option", "float_option", "int_option", "known_options", "str_option"]
