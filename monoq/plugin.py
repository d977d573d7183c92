"""Handler plugins with settings and a lifetime: ``monoq.Plugin`` and ``monoq.PluginOptions``.

A plugin is a class derived from ``Plugin`` in a handler module (found the same way as its
``@monoq.handler`` functions). Its ``[plugins.<name>]`` table of the configuration reaches its
constructor as ``PluginOptions``, which reads typed values with messages that name the key.
Every worker process builds one instance per plugin, awaits ``start()`` before it claims a job
and ``stop()`` after its last job finished; handlers reach that instance with
``ctx.plugin(TheClass)``. That is where a pooled HTTP client or an open file belongs.

Options come from the file (``[plugins.log] path = "out.log"``), from
``MONOQ_PLUGINS_<NAME>_<KEY>`` variables and from the source systems' names (``OUTPUT_PATH``,
``GIT_STORAGE_PATH``); environment values are strings, which the typed readers parse.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, ClassVar

from monoq.errors import ConfigError

__all__ = ["Plugin", "PluginOptions"]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _fmt(bound: float | None) -> str:
    """A bound as written: 16777216, not 1.67772e+07; 0.5 stays 0.5."""
    if bound is None:
        return ""
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


class PluginOptions:
    """The ``[plugins.<name>]`` table of one plugin, read key by key with type checks.

    Each reader takes the key and its default, and raises ConfigError naming
    ``plugins.<name>.<key>`` when the value has the wrong type or range. ``finish()`` raises
    for keys nobody read, so a typo in the file is an error, not a silent default.
    """

    def __init__(self, plugin: str, values: Mapping[str, Any] | None = None) -> None:
        self.plugin = plugin
        self._values = dict(values or {})
        self._read: set[str] = set()

    def _key(self, key: str) -> str:
        return f"plugins.{self.plugin}.{key}"

    def _take(self, key: str) -> Any:
        self._read.add(key)
        return self._values.get(key)

    def _fail(self, key: str, problem: str, value: object) -> ConfigError:
        return ConfigError(f"{self._key(key)}: {problem}, got {value!r}")

    def string(self, key: str, default: str) -> str:
        """A string."""
        value = self._take(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self._fail(key, "must be a string", value)
        return value

    def boolean(self, key: str, default: bool) -> bool:
        """true or false (from the environment: 1/0, true/false, yes/no, on/off)."""
        value = self._take(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise self._fail(key, "must be true or false", value)

    def number(self, key: str, default: float, *, min: float | None = None,
               max: float | None = None) -> float:
        """A finite number within ``[min, max]``."""
        value = self._take(key)
        if value is None:
            return default
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise self._fail(key, "must be a number", value) from None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value):
            raise self._fail(key, "must be a number", value)
        if (min is not None and value < min) or (max is not None and value > max):
            low, high = _fmt(min), _fmt(max)
            bounds = f"between {low} and {high}" if min is not None and max is not None else (
                f">= {low}" if min is not None else f"<= {high}")
            raise self._fail(key, f"must be {bounds}", value)
        return float(value)

    def integer(self, key: str, default: int, *, min: int | None = None,
                max: int | None = None) -> int:
        """A whole number within ``[min, max]``."""
        value = self.number(key, default, min=min, max=max)
        if not float(value).is_integer():
            raise self._fail(key, "must be a whole number", value)
        return int(value)

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        """A list of strings (from the environment: comma-separated)."""
        value = self._take(key)
        if value is None:
            return default
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        if not isinstance(value, list | tuple) or not all(isinstance(i, str) for i in value):
            raise self._fail(key, "must be a list of strings", value)
        return tuple(value)

    def integers(self, key: str, default: tuple[int, ...] = ()) -> tuple[int, ...]:
        """A list of whole numbers (from the environment: comma-separated)."""
        value = self._take(key)
        if value is None:
            return default
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise self._fail(key, "must be a list of whole numbers", value)
        out = []
        for item in items:
            try:
                if isinstance(item, bool) or (isinstance(item, float) and not item.is_integer()):
                    raise ValueError(item)
                out.append(int(item.strip() if isinstance(item, str) else item))
            except (TypeError, ValueError):
                raise self._fail(key, "must be a list of whole numbers", value) from None
        return tuple(out)

    def table(self, key: str) -> dict[str, str]:
        """A table of string values (e.g. secrets by name); from the environment: JSON."""
        value = self._take(key)
        if value is None:
            return {}
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise self._fail(key, "must be a table (a JSON object in the environment)",
                                 value) from None
        if not isinstance(value, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise self._fail(key, "must be a table of strings", "<table>")
        return dict(value)

    def finish(self) -> None:
        """Raise ConfigError for keys of the table that no reader asked for."""
        unknown = sorted(set(self._values) - self._read)
        if unknown:
            allowed = ", ".join(sorted(self._read)) or "none"
            raise ConfigError(f"{self._key(unknown[0])}: unknown key; allowed: {allowed}")


class Plugin:
    """Base class of a plugin: its settings and the resources its handlers share.

    Subclasses set ``name`` (the ``[plugins.<name>]`` table), read their options in
    ``__init__`` (and call ``options.finish()``), open resources in ``start`` and release them
    in ``stop``. One instance lives per worker process; ``stop`` runs even when ``start`` of a
    later plugin failed.
    """

    name: ClassVar[str] = ""

    def __init__(self, options: PluginOptions) -> None:
        options.finish()

    async def start(self) -> None:
        """Open what the handlers share (called once, before the worker claims a job)."""

    async def stop(self) -> None:
        """Release it (called once, after the worker's last job finished)."""
