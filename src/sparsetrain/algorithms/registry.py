"""The method registry: every sparsity method is reachable by name."""

from __future__ import annotations

from typing import Any, Callable

from sparsetrain.registry import Registry

METHODS: Registry = Registry("method")


def register_method(name: str, help: str) -> Callable[[type], type]:
    """Class decorator adding a method under ``name`` with a one-line ``help``."""
    return METHODS.register(name, help=help)


def list_methods() -> list[str]:
    return METHODS.names()


def config_class(name: str) -> type:
    """The config dataclass of method ``name`` (its fields are the method's options)."""
    return METHODS.get(name).config_class


def create(name: str, model: Any, optimizer: Any = None, **options: Any) -> Any:
    """Build method ``name`` around ``model`` and ``optimizer``; ``options`` go to its config
    or to the shared keywords (total_steps, steps_per_epoch, seed, config)."""
    return METHODS.get(name)(model, optimizer, **options)
