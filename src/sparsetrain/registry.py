"""One generic registry, used for every kind of named thing (methods, models, datasets ...).

Modelled on timm's ``_registry.py``: entries are added by decorator and listed by name,
so conformance tests parametrized over a registry cover a new entry the moment it exists.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

from sparsetrain.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects of one kind; unknown names raise a `UserError` listing the valid ones."""

    def __init__(self, kind: str, provider: str | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._info: dict[str, dict[str, Any]] = {}
        self._provider = provider
        """A module whose import registers the entries (imported on first lookup), for a
        registry that a lower floor defines and a higher one fills (e.g. the backends)."""

    def _load(self) -> None:
        if self._provider is not None:
            provider, self._provider = self._provider, None
            importlib.import_module(provider)

    def register(self, name: str, **info: Any) -> Callable[[T], T]:
        """Decorator adding ``obj`` under ``name``; ``info`` is free metadata (e.g. a help line)."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            self._info[name] = info
            return obj

        return add

    def get(self, name: str) -> T:
        self._load()
        if name not in self._entries:
            raise UserError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            )
        return self._entries[name]

    def info(self, name: str) -> dict[str, Any]:
        self.get(name)
        return dict(self._info[name])

    def options(self, name: str, fixed: Iterable[str] = ()) -> dict[str, Any]:
        """The keyword parameters of callable entry ``name`` (minus ``fixed``), with their defaults."""
        skip = set(fixed)
        params = inspect.signature(self.get(name)).parameters.values()
        return {p.name: p.default for p in params
                if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in skip}

    def check_options(self, name: str, given: Iterable[str], fixed: Iterable[str] = ()) -> None:
        """Raise a UserError naming the first of ``given`` that entry ``name`` does not accept."""
        allowed = self.options(name, fixed)
        for key in given:
            if key not in allowed:
                raise UserError(f"unknown option {key!r} for {self.kind} {name!r}; "
                                f"allowed options: {', '.join(sorted(allowed)) or 'none'}")

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._entries)
