"""Handler and backend discovery.

Handlers are plain functions marked with ``@monoq.handler``. A ``Registry`` collects them from the
``monoq.handlers`` entry-point group (an entry point names a module, whose marked functions are
all taken, or one marked function) and from plain modules listed in ``[monoq] imports``. Backends
come from the ``monoq.backends`` group, keyed by URL scheme. Module names come from configuration
and installed packages only, never from a job's payload.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib.metadata import entry_points
from typing import Any, TypeVar

import attrs

from monoq.core.backend import Backend
from monoq.core.models import validate_name
from monoq.errors import ConfigError, HandlerNotFound, UnknownBackend
from monoq.plugin import Plugin, PluginOptions

logger = logging.getLogger(__name__)

HANDLER_GROUP = "monoq.handlers"
BACKEND_GROUP = "monoq.backends"
_MARK = "__monoq_handler__"

F = TypeVar("F", bound=Callable[..., Any])


@attrs.frozen
class HandlerSpec:
    """A registered handler: its name, function and per-handler defaults."""

    name: str
    func: Callable[..., Any]
    queue: str | None = None
    max_retries: int | None = None
    timeout: float | None = None
    priority: int | None = None
    source: str = ""  # where it was found: an entry point or module name
    # "thread" (default): async handlers on the loop, sync ones in a thread (a soft timeout);
    # "process": in a child process that is killed at the timeout (see monoq.isolation)
    isolation: str = "thread"

    @property
    def is_async(self) -> bool:
        """True for ``async def`` handlers (run on the loop); sync ones run in a thread."""
        return inspect.iscoroutinefunction(self.func)

    @property
    def description(self) -> str:
        """The first line of the function's docstring."""
        doc = inspect.getdoc(self.func) or ""
        return doc.splitlines()[0] if doc else ""


def handler(
    name: str,
    *,
    queue: str | None = None,
    max_retries: int | None = None,
    timeout: float | None = None,
    priority: int | None = None,
    isolation: str = "thread",
) -> Callable[[F], F]:
    """Mark a function as the handler ``name``; the function itself is returned unchanged.

    ``queue``, ``max_retries``, ``timeout`` (seconds) and ``priority`` become the defaults of jobs
    enqueued for it when the enqueuing side knows the registry. ``isolation="process"`` runs it
    in a pool of child processes that are killed when a job passes its timeout or is
    cancelled: a hard timeout, for sync code that never checks ``ctx.cancelled``. Its payload
    and result cross the process boundary as JSON, and it gets no plugins.
    """
    validate_name("handler", name)
    if queue is not None:
        validate_name("queue", queue)
    if max_retries is not None and max_retries < 0:
        raise ValueError("max_retries must be >= 0")
    if timeout is not None and timeout <= 0:
        raise ValueError("timeout must be > 0")
    if isolation not in ("thread", "process"):
        raise ValueError(f"isolation must be 'thread' or 'process', got {isolation!r}")

    def mark(func: F) -> F:
        if isolation == "process" and "." in func.__qualname__:
            raise ValueError(f"handler {name!r}: isolation='process' needs a module-level "
                             "function (a child process imports it from its module)")
        spec = HandlerSpec(name=name, func=func, queue=queue, max_retries=max_retries,
                           timeout=timeout, priority=priority, isolation=isolation)
        setattr(func, _MARK, spec)
        return func

    return mark


def _specs_in(obj: object) -> Iterator[HandlerSpec]:
    if isinstance(obj, types.ModuleType):
        for value in vars(obj).values():
            spec = getattr(value, _MARK, None)
            if isinstance(spec, HandlerSpec):
                yield spec
        return
    spec = getattr(obj, _MARK, None)
    if not isinstance(spec, HandlerSpec):
        raise ConfigError(f"{obj!r} is neither a module nor a function marked @monoq.handler")
    yield spec


def _plugins_in(obj: object) -> Iterator[type[Plugin]]:
    """The Plugin classes defined in a module (not those it merely imports)."""
    if isinstance(obj, types.ModuleType):
        for value in vars(obj).values():
            if (isinstance(value, type) and issubclass(value, Plugin) and value is not Plugin
                    and value.__module__ == obj.__name__):
                yield value


class Registry:
    """Handlers by name, and the plugin classes of their modules."""

    def __init__(self, specs: Iterable[HandlerSpec] = ()) -> None:
        self._specs: dict[str, HandlerSpec] = {}
        self._plugins: dict[str, type[Plugin]] = {}
        for spec in specs:
            self.add(spec)

    def add_plugin(self, cls: type[Plugin]) -> None:
        """Register a Plugin class under its ``name``; two classes under one name is an error."""
        if not cls.name:
            raise ConfigError(f"plugin class {cls.__qualname__} has no name")
        current = self._plugins.get(cls.name)
        if current is not None and current is not cls:
            raise ConfigError(f"plugin {cls.name!r} is defined twice: by {current.__module__} "
                              f"and by {cls.__module__}")
        self._plugins[cls.name] = cls

    @property
    def plugins(self) -> dict[str, type[Plugin]]:
        """Plugin classes by name."""
        return dict(self._plugins)

    def build_plugins(self, options: Mapping[str, Mapping[str, Any]]) -> dict[type[Plugin], Plugin]:
        """One instance of every plugin, built from its ``[plugins.<name>]`` table.

        Raises ConfigError for a table naming no installed plugin and for bad options.
        """
        for name in options:
            if name not in self._plugins:
                known = ", ".join(sorted(self._plugins)) or "none"
                raise ConfigError(f"plugins.{name}: no plugin of that name is installed "
                                  f"(installed: {known})")
        return {cls: cls(PluginOptions(name, options.get(name)))
                for name, cls in sorted(self._plugins.items())}

    def add(self, spec: HandlerSpec) -> None:
        """Register ``spec``; a second, different function under the same name is an error."""
        current = self._specs.get(spec.name)
        if current is not None and current.func is not spec.func:
            raise ConfigError(
                f"handler {spec.name!r} is registered twice: by {current.source or '?'} "
                f"and by {spec.source or '?'}"
            )
        self._specs[spec.name] = spec

    def add_function(self, func: Callable[..., Any], source: str = "") -> None:
        """Register a function marked with ``@monoq.handler``."""
        for spec in _specs_in(func):
            self.add(attrs.evolve(spec, source=source or spec.source))

    def add_module(self, module: types.ModuleType | str) -> int:
        """Register every marked function of a module; answers how many."""
        if isinstance(module, str):
            try:
                module = importlib.import_module(module)
            except ImportError as exc:
                raise ConfigError(f"monoq.imports: cannot import {module!r}: {exc}") from exc
        specs = list(_specs_in(module))
        for spec in specs:
            self.add(attrs.evolve(spec, source=module.__name__))
        for cls in _plugins_in(module):
            self.add_plugin(cls)
        return len(specs)

    @classmethod
    def discover(cls, imports: Iterable[str] = (), *, entry_points_: bool = True) -> Registry:
        """Handlers from the ``monoq.handlers`` entry points and the ``imports`` modules."""
        registry = cls()
        if entry_points_:
            for ep in entry_points(group=HANDLER_GROUP):
                try:
                    obj = ep.load()
                except Exception as exc:  # a broken plugin must say which one it is
                    raise ConfigError(
                        f"handler plugin {ep.name!r} ({ep.value}) failed to load: {exc}"
                    ) from exc
                for spec in _specs_in(obj):
                    registry.add(attrs.evolve(spec, source=f"entry point {ep.name} ({ep.value})"))
                for plugin_cls in _plugins_in(obj):
                    registry.add_plugin(plugin_cls)
        for name in imports:
            registry.add_module(name)
        return registry

    def get(self, name: str) -> HandlerSpec:
        """The handler ``name``, or HandlerNotFound."""
        try:
            return self._specs[name]
        except KeyError:
            raise HandlerNotFound(f"no handler named {name!r}") from None

    def find(self, name: str) -> HandlerSpec | None:
        """The handler ``name`` or None."""
        return self._specs.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[HandlerSpec]:
        return iter(sorted(self._specs.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._specs)


def backend_schemes() -> dict[str, str]:
    """Installed backends: URL scheme -> entry point value."""
    return {ep.name: ep.value for ep in entry_points(group=BACKEND_GROUP)}


def open_backend(url: str, options: Mapping[str, Any] | None = None) -> Backend:
    """Build (not connect) the backend for ``url`` from the ``monoq.backends`` entry points."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if not scheme:
        raise ConfigError(f"backend.url: {url!r} is not a URL (expected scheme://...)")
    matches = [ep for ep in entry_points(group=BACKEND_GROUP) if ep.name == scheme]
    if not matches:
        known = ", ".join(sorted(backend_schemes())) or "none"
        raise UnknownBackend(
            f"backend.url: no backend is installed for {scheme}:// (installed: {known})"
        )
    factory = matches[0].load()
    backend = factory(url, dict(options or {}))
    if not isinstance(backend, Backend):
        raise ConfigError(f"backend.url: {matches[0].value} does not implement the Backend protocol")
    return backend
