"""Frozen, validated config dataclasses and the helpers that build, check and print them.

Each config field carries its help text in ``metadata`` (open_lth ``hparams.py`` style), so
the CLI and the docs are generated from the dataclasses instead of written by hand.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import sys
import types
import typing
from typing import Any, Iterable, TypeVar

from sparsetrain.errors import ConfigError

C = TypeVar("C")


def option(default: Any, help: str, choices: Iterable[Any] | None = None) -> Any:
    """A dataclass field with its help text (and allowed values) stored in metadata."""
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple for sequence defaults so configs stay hashable")
    return dataclasses.field(default=default, metadata=meta)


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def check_range(
    name: str, value: float, low: float | None = None, high: float | None = None,
    low_open: bool = False, high_open: bool = False,
) -> None:
    """Raise a ConfigError unless ``low (<|<=) value (<|<=) high``."""
    ok = True
    if low is not None:
        ok &= value > low if low_open else value >= low
    if high is not None:
        ok &= value < high if high_open else value <= high
    if not ok:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise ConfigError(f"{name} must be in {left}{lo}, {hi}{right}; got {value!r}")


def validate_choices(config: Any) -> None:
    """Check every field that declares ``choices`` (call from ``__post_init__``)."""
    for f in dataclasses.fields(config):
        choices = f.metadata.get("choices")
        if choices is not None:
            check_choice(f.name, getattr(config, f.name), choices)


def field_type(cls: type, name: str) -> Any:
    """The resolved type annotation of field ``name`` of dataclass ``cls``."""
    return typing.get_type_hints(cls)[name]


def _coerce(name: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner[0])
    if hint is typing.Any:
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list; got {value!r}")
        item = args[0] if args else str
        return tuple(_coerce(name, v, item) for v in value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping; got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{name} must be true or false; got {value!r}")
    if hint in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{name} must be a number; got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{name} must be a number; got {value!r}") from None
        if not math.isfinite(number) or abs(number) > MAX_MAGNITUDE:
            raise ConfigError(f"{name} must be a finite number of at most 1e9 in size; "
                              f"got {value!r}")
        if hint is int:
            if number != int(number):
                raise ConfigError(f"{name} must be a whole number; got {value!r}")
            return int(number)
        return number
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{name} must be a string; got {value!r}")
        return str(value)
    return value


MAX_MAGNITUDE = 1e9
"""No option takes a number beyond this in size: larger values are typos or overflow bait."""


def closest(name: str, allowed: Iterable[str], n: int = 3) -> str:
    """``"; did you mean a, b?"`` naming the allowed values closest to ``name`` (difflib), or
    the whole list when it is short; a message fragment for unknown keys and names."""
    allowed = sorted(allowed)
    near = difflib.get_close_matches(name, allowed, n=n, cutoff=0.6)
    if near:
        return f"; did you mean {', '.join(near)}?"
    if len(allowed) <= 12:
        return f"; allowed: {', '.join(allowed)}"
    return ""


def unknown_key(where: str, key: str, allowed: Iterable[str], suffix: str = "") -> ConfigError:
    """The error for an unknown config key: its name and the closest allowed keys."""
    hint = closest(key, allowed) or " (see `sparsetrain train --help`)"
    return ConfigError(f"unknown {where} key {key!r}{suffix}{hint}")


_NOTED: set[str] = set()


def note_once(message: str) -> None:
    """Print ``sparsetrain: note: <message>`` on stderr, once per process."""
    if message not in _NOTED:
        _NOTED.add(message)
        print(f"sparsetrain: note: {message}", file=sys.stderr)


def canonical_names(cls: type, values: dict[str, Any], where: str = "config") -> dict[str, Any]:
    """``values`` with old key spellings renamed and ``sparsity`` turned into ``density``.

    A config class lists its renamed keys in a ``renamed`` class attribute ({old: new});
    an old spelling still works and says once that it is deprecated. ``sparsity`` (how the
    field usually speaks) is accepted wherever ``density`` is: density = 1 - sparsity.
    """
    values = dict(values)
    for old, new in getattr(cls, "renamed", {}).items():
        if old not in values:
            continue
        if new in values:
            raise ConfigError(f"{where}: give {new} or its old name {old}, not both")
        note_once(f"{old!r} is now called {new!r} (--{new.replace('_', '-')}); the old name "
                  "still works but is deprecated")
        values[new] = values.pop(old)
    names = {f.name for f in dataclasses.fields(cls)}
    if "sparsity" in values and "density" in names:
        if "density" in values:
            raise ConfigError(f"{where}: give density or sparsity (= 1 - density), not both")
        sparsity = _coerce("sparsity", values.pop("sparsity"), float)
        if not 0 <= sparsity < 1:
            raise ConfigError(f"sparsity must be in [0, 1); got {sparsity!r}")
        values["density"] = round(1.0 - sparsity, 12)  # 1 - 0.9 is 0.09999999999999998
    return values


def from_dict(cls: type[C], values: dict[str, Any], where: str = "config") -> C:
    """Build ``cls`` from a plain mapping; unknown keys and wrong types raise a ConfigError."""
    values = canonical_names(cls, values, where)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise unknown_key(where, unknown[0], names)
    kwargs = {k: _coerce(k, v, field_type(cls, k)) for k, v in values.items()}
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON/YAML-friendly dict of a config dataclass (tuples become lists)."""
    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {f.name: plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def config_hash(values: dict[str, Any], length: int = 12) -> str:
    """Stable short hash of a resolved config: the identity of a run (open_lth ``desc.py``)."""
    text = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
