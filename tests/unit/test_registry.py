"""Handler registry and backend discovery."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import pytest

import monoq
from monoq.backends.memory import MemoryBackend
from monoq.core.models import parse_priority, validate_key, validate_name
from monoq.errors import ConfigError, HandlerNotFound, UnknownBackend, ValidationError
from monoq.registry import Registry, open_backend


@pytest.fixture
def module() -> Iterator[types.ModuleType]:
    mod = types.ModuleType("monoq_test_tasks")

    @monoq.handler("tasks.hello", queue="mail", max_retries=7, timeout=12)
    async def hello(ctx: monoq.Context, payload: object) -> str:
        """Say hello."""
        return "hi"

    def not_a_handler() -> None:
        pass

    mod.hello = hello  # type: ignore[attr-defined]
    mod.not_a_handler = not_a_handler  # type: ignore[attr-defined]
    sys.modules[mod.__name__] = mod
    yield mod
    del sys.modules[mod.__name__]


def test_entry_points_bring_the_builtin_handlers() -> None:
    registry = Registry.discover()
    assert {"echo", "sleep", "fail"} <= {spec.name for spec in registry}
    assert "monoq.plugins.builtin" in registry.get("echo").source


def test_imports_register_marked_functions_only(module: types.ModuleType) -> None:
    registry = Registry.discover([module.__name__])
    spec = registry.get("tasks.hello")
    assert (spec.queue, spec.max_retries, spec.timeout) == ("mail", 7, 12)
    assert spec.is_async
    assert spec.description == "Say hello."
    assert "not_a_handler" not in registry


def test_unknown_module_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"monoq\.imports: cannot import .no_such_module_x."):
        Registry.discover(["no_such_module_x"])


def test_two_functions_under_one_name_are_refused(module: types.ModuleType) -> None:
    registry = Registry.discover([module.__name__])

    @monoq.handler("tasks.hello")
    def impostor(ctx: monoq.Context, payload: object) -> None:
        pass

    with pytest.raises(ConfigError, match="registered twice"):
        registry.add_function(impostor, source="elsewhere")


def test_missing_handler_is_handler_not_found() -> None:
    with pytest.raises(HandlerNotFound):
        Registry().get("nope")


def test_bad_handler_names_are_refused_at_decoration() -> None:
    with pytest.raises(ValidationError):
        monoq.handler("has space")


def test_backends_are_found_by_scheme() -> None:
    assert isinstance(open_backend("memory://"), MemoryBackend)
    with pytest.raises(UnknownBackend, match="no backend is installed for nosuch://"):
        open_backend("nosuch://x")
    with pytest.raises(ConfigError, match="not a URL"):
        open_backend("just-a-path")


@pytest.mark.parametrize("bad", ["", "a b", "-lead", "x" * 129, "echo\n", "é", 5, None])
def test_names_outside_the_pattern_are_refused(bad: object) -> None:
    with pytest.raises(ValidationError, match="not a valid name"):
        validate_name("queue", bad)


def test_keys_allow_cron_style_text_but_not_newlines() -> None:
    assert validate_key("k", "cron:nightly:2030-01-01T03:00:00Z")
    with pytest.raises(ValidationError):
        validate_key("k", "order-1\n")


@pytest.mark.parametrize(("given", "want"), [("high", 0), ("normal", 5), ("LOW", 9), (3, 3),
                                             ("7", 7)])
def test_priorities_by_number_or_name(given: object, want: int) -> None:
    assert parse_priority(given) == want


@pytest.mark.parametrize("bad", [10, -1, "urgent", True, 2.5])
def test_bad_priorities_are_refused(bad: object) -> None:
    with pytest.raises(ValidationError, match="priority"):
        parse_priority(bad)
