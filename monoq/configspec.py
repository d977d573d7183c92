"""The engine behind ``monoq.config``: keys declared as attrs fields with a ``Spec``, their
checks and conversions, and the layers that load them.

A settings class is an ``@attrs.frozen`` class whose every field is a ``key_field`` (or an
``attrs.field`` with ``validator=validate_field`` and a ``Spec`` under ``META``): the field's
type and spec drive TOML type checks, the parsing of environment strings, unknown-key
detection and the error messages, so adding a key is adding a field. ``monoq.config`` holds
the sections and ``load_config``; this module knows nothing of them.

A layer maps ``section -> key -> Value``; higher layers replace a key's whole value. Every
problem is a ``ConfigError`` whose message starts with the dotted key and says where the bad
value came from.
"""

from __future__ import annotations

import difflib
import json
import math
import tomllib
import typing
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, TypeVar

import attrs

from monoq.core.durations import parse_duration
from monoq.errors import ConfigError, ValidationError

_T = TypeVar("_T")
META: Final = "monoq"  # attrs metadata key holding a field's Spec
# Settings class -> dotted prefix of its keys, for the messages of ``validate_field``.
_PREFIXES: dict[type, str] = {}


def name_prefixes(prefixes: Mapping[type, str]) -> None:
    """Say under which dotted prefix each settings class's keys are named in messages
    (``{WorkerConfig: "worker"}``); a class not named uses its class name."""
    _PREFIXES.update(prefixes)


# --------------------------------------------------------------------------------------------
# Field specs: documentation and checks, stored in attrs metadata


@attrs.frozen
class Spec:
    """How one key is documented and checked (beyond what its type says)."""

    doc: str
    min: float | None = None
    max: float | None = None
    exclusive_min: bool = False  # min < value instead of min <= value
    # For strings and string-list items: returns the normalised value or raises ValueError whose
    # text completes "must ...".
    check: Callable[[str], str] | None = None
    # Replaces the type's own conversion (e.g. priority names); raises ValueError/ValidationError.
    convert: Callable[[object], object] | None = None
    problem: str = ""  # the "must ..." text for ``convert`` failures
    nonempty: bool = False  # lists: at least one item
    unique: bool = False  # lists: no repeated item
    duration: bool = False  # environment text may be a duration ("30s", "5m")


def spec_of(field: attrs.Attribute[Any]) -> Spec:
    spec = field.metadata.get(META)
    if not isinstance(spec, Spec):  # pragma: no cover - every key is declared with key_field
        raise TypeError(f"config field {field.name} has no spec")
    return spec


def validate_field(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """attrs validator: direct construction and ``attrs.evolve`` get the loader's checks."""
    prefix = _PREFIXES.get(type(instance), type(instance).__name__)
    coerce(attribute, value, key=f"{prefix}.{attribute.name}", where="", text=False)


def key_field(default: _T, doc: str, *, hashed: bool = True, secret: bool = False, **spec: Any
         ) -> _T:
    """A documented, checked key with a default (attrs field).

    ``hashed=False`` leaves an unhashable value (a table) out of the class's hash;
    ``secret=True`` leaves the value out of the class's repr.
    """
    field: _T = attrs.field(
        default=default,
        validator=validate_field,
        hash=None if hashed else False,
        repr=not secret,
        metadata={META: Spec(doc, **spec)},
    )
    return field


def one_of(*choices: str, fold: bool = False) -> Callable[[str], str]:
    """A string check accepting exactly ``choices`` (case-insensitively if ``fold``)."""

    def check(value: str) -> str:
        for choice in choices:
            if value == choice or (fold and value.casefold() == choice.casefold()):
                return choice
        raise ValueError("must be one of " + ", ".join(choices))

    return check




# --------------------------------------------------------------------------------------------
# Conversion and checks, driven by a field's type and spec


def got(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def fail(key: str, problem: str, value: object, where: str) -> ConfigError:
    return ConfigError(f"{key}: {problem}, got {got(value)}{where}")


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _range_problem(kind: str, spec: Spec) -> str:
    lo, hi = spec.min, spec.max
    if lo is not None and hi is not None and not spec.exclusive_min:
        return f"must be {kind} between {_fmt(lo)} and {_fmt(hi)}"
    parts = []
    if lo is not None:
        parts.append(f"{'>' if spec.exclusive_min else '>='} {_fmt(lo)}")
    if hi is not None:
        parts.append(f"<= {_fmt(hi)}")
    return f"must be {kind}" + (" " + " and ".join(parts) if parts else "")


def _in_range(value: float, spec: Spec) -> bool:
    if spec.min is not None and (value <= spec.min if spec.exclusive_min else value < spec.min):
        return False
    return spec.max is None or value <= spec.max


_TRUE: Final = frozenset({"1", "true", "yes"})
_FALSE: Final = frozenset({"0", "false", "no"})


def coerce(field: attrs.Attribute[Any], value: object, *, key: str, where: str, text: bool) -> Any:
    """``value`` checked and normalised for ``field``, or a ConfigError naming ``key``.

    ``text`` marks a string from the environment (or a string override for a non-string key),
    which is parsed according to the field's type first: numbers, booleans (1/0/true/false/
    yes/no), comma-separated lists, JSON for tables and lists of tables. ``where`` ends the
    message, saying where the value came from.
    """
    spec = spec_of(field)
    tp = field.type
    raw = value
    if text and isinstance(value, str):
        value = value.strip()

    if spec.convert is not None:
        try:
            return spec.convert(value)
        except (TypeError, ValueError, ValidationError):
            raise fail(key, spec.problem, raw, where) from None

    if tp is bool:
        if text and isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        if isinstance(value, bool):
            return value
        allowed = "true or false" + (" (or 1, 0, yes, no)" if text else "")
        raise fail(key, f"must be {allowed}", raw, where)

    if tp is int or tp is float:
        kind = "an integer" if tp is int else "a number"
        problem = _range_problem(kind, spec)
        if text and spec.duration:
            problem += " (seconds, or a duration such as 30s, 5m, 1h)"
        number: object = value
        if text and isinstance(value, str):
            try:
                number = (
                    int(value)
                    if tp is int
                    else (parse_duration(value) if spec.duration else float(value))
                )
            except ValueError:
                raise fail(key, problem, raw, where) from None
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise fail(key, problem, raw, where)
        if tp is int and not isinstance(number, int):
            raise fail(key, problem, raw, where)
        if not math.isfinite(number) or not _in_range(number, spec):
            raise fail(key, problem, raw, where)
        return int(number) if tp is int else float(number)

    if tp is str:
        if not isinstance(value, str):
            raise fail(key, "must be a string", raw, where)
        return _check_str(spec, value, key=key, where=where)

    origin = typing.get_origin(tp)
    if origin is tuple:
        (item_type, *_rest) = typing.get_args(tp)
        return _coerce_list(spec, item_type, value, key=key, where=where, text=text)

    if origin is Mapping:
        if text and isinstance(value, str):
            value = _json(value, key=key, where=where, what="a JSON object")
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise fail(key, "must be a table", raw, where)
        return MappingProxyType(dict(value))

    raise TypeError(f"{key}: unsupported config type {tp!r}")  # pragma: no cover


def _check_str(spec: Spec, value: str, *, key: str, where: str) -> str:
    if spec.check is None:
        return value
    try:
        return spec.check(value)
    except ValueError as exc:
        raise fail(key, str(exc), value, where) from None


def _json(value: str, *, key: str, where: str, what: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        raise fail(key, f"must be {what}", value, where) from None


def _coerce_list(
    spec: Spec, item_type: Any, value: object, *, key: str, where: str, text: bool
) -> tuple[Any, ...]:
    table = attrs.has(item_type)
    raw = value
    if text and isinstance(value, str):
        if table:
            value = _json(value, key=key, where=where, what="a JSON array of tables")
        else:  # "worker, scheduler" -> ["worker", "scheduler"]; "" -> []
            value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple):
        raise fail(key, "must be a list of tables" if table else "must be a list", raw, where)
    items: list[Any] = []
    for index, item in enumerate(value):
        item_key = f"{key}[{index}]"
        if table:
            items.append(
                item if isinstance(item, item_type) else build(item_type, item, item_key, where)
            )
        elif not isinstance(item, str):
            raise fail(item_key, "must be a string", item, where)
        else:
            items.append(_check_str(spec, item, key=item_key, where=where))
    if spec.nonempty and not items:
        raise fail(key, "must not be empty", raw, where)
    if spec.unique:
        for index, item in enumerate(items):
            if item in items[:index]:
                raise fail(key, f"must not repeat {item!r}", raw, where)
    return tuple(items)


def unknown(key: str, name: str, allowed: Iterable[str], what: str = "key") -> str:
    names = sorted(allowed)
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{key}: unknown {what}{hint}; allowed: {', '.join(names)}"


def build(cls: Any, table: object, prefix: str, where: str) -> Any:
    """An instance of the attrs class ``cls`` from a TOML-shaped table (all keys required
    unless they have a default)."""
    if not isinstance(table, Mapping):
        raise fail(prefix, "must be a table", table, where)
    fields = {f.name: f for f in attrs.fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, item in table.items():
        if name not in fields:
            raise ConfigError(unknown(f"{prefix}.{name}", name, list(fields)) + where)
        kwargs[name] = coerce(fields[name], item, key=f"{prefix}.{name}", where=where, text=False)
    for name, field in fields.items():
        if name not in kwargs and field.default is attrs.NOTHING:
            raise ConfigError(f"{prefix}.{name}: missing required key{where}")
    return cls(**kwargs)


# --------------------------------------------------------------------------------------------
# Layers


@attrs.frozen
class Value:
    """One key's value in one layer, and where it came from (for error messages)."""

    value: object
    where: str  # " (in config.toml)", " (from environment variable MONOQ_WORKER_ID)", ...
    text: bool  # a string to parse by the field's type


Layer = dict[str, dict[str, Value]]  # section -> key -> value


Sections = Mapping[str, Any]  # section name -> settings class


def section_fields(sections: Sections, section: str) -> dict[str, attrs.Attribute[Any]]:
    """The fields of ``section``'s class, by name."""
    return {f.name: f for f in attrs.fields(sections[section])}


def file_layer(sections: Sections, data: Mapping[str, Any], where: str) -> Layer:
    """The layer of a TOML file's tables (``where`` names the file in messages)."""
    layer: Layer = {}
    for section, table in data.items():
        if section not in sections:
            raise ConfigError(unknown(section, section, list(sections), "section") + where)
        if not isinstance(table, Mapping):
            raise fail(section, "must be a table ([section])", table, where)
        fields = section_fields(sections, section)
        for name, value in table.items():
            if name not in fields:
                raise ConfigError(unknown(f"{section}.{name}", name, list(fields)) + where)
            layer.setdefault(section, {})[name] = Value(value, where, text=False)
    return layer


def dotted(sections: Sections, key: str) -> tuple[str, str] | None:
    """(section, key) of a known dotted key, else None."""
    section, _, name = key.partition(".")
    if section in sections and name in section_fields(sections, section):
        return section, name
    return None


def env_layer(sections: Sections, env: Mapping[str, str], prefix: str,
              skip: Collection[str] = ()) -> Layer:
    """The layer of ``<PREFIX><SECTION>_<KEY>`` variables. Variables named in ``skip``, and
    those of sections not in ``sections`` (``MONOQ_DEBUG`` and the like), are left alone; an
    unknown key of a known section is a ``ConfigError``."""
    layer: Layer = {}
    for var in sorted(env):
        if not var.startswith(prefix) or var in skip:
            continue
        section, _, name = var[len(prefix) :].lower().partition("_")
        if section not in sections:
            continue
        where = f" (from environment variable {var})"
        fields = section_fields(sections, section)
        if name not in fields:
            raise ConfigError(unknown(f"{section}.{name}", name, list(fields)) + where)
        layer.setdefault(section, {})[name] = Value(env[var], where, text=True)
    return layer


def override_layer(sections: Sections, overrides: Mapping[str, Any],
                   skip_sections: Collection[str] = ()) -> Layer:
    """The layer of dotted-key overrides (the CLI's); None means "not given", and keys of the
    sections in ``skip_sections`` are left alone. A string for a non-string key is parsed like
    an environment value."""
    layer: Layer = {}
    for key, value in overrides.items():
        if value is None:
            continue  # a CLI flag that was not given
        if any(key.startswith(section + ".") for section in skip_sections):
            continue
        found = dotted(sections, key)
        if found is None:
            section = key.partition(".")[0]
            if section in sections:
                allowed = [f"{section}.{name}" for name in section_fields(sections, section)]
            else:
                allowed = [f"{s}.*" for s in sections]
            raise ConfigError(unknown(key, key, allowed) + " (from override)")
        section, name = found
        is_text = isinstance(value, str) and section_fields(sections, section)[name].type is not str
        layer.setdefault(section, {})[name] = Value(value, " (from override)", text=is_text)
    return layer


def merge_layers(layers: Iterable[Layer]) -> Layer:
    """One layer of ``layers``, lowest first: a higher layer replaces a key's whole value."""
    merged: Layer = {}
    for layer in layers:
        for section, values in layer.items():
            merged.setdefault(section, {}).update(values)
    return merged


def build_sections(sections: Sections, merged: Layer) -> dict[str, Any]:
    """Every section of ``sections`` built from its keys in ``merged`` (defaults elsewhere)."""
    built: dict[str, Any] = {}
    for section, cls in sections.items():
        fields = section_fields(sections, section)
        kwargs = {
            name: coerce(
                fields[name], v.value, key=f"{section}.{name}", where=v.where, text=v.text
            )
            for name, v in merged.get(section, {}).items()
        }
        built[section] = cls(**kwargs)
    return built


def read_toml(path: Path, named_by: str) -> dict[str, Any]:
    """The TOML file at ``path``; ``named_by`` says in messages how it was chosen."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found{named_by}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: invalid TOML: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}{named_by}") from None
