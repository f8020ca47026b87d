"""sparsetrain: sparse neural networks on PyTorch.

    import sparsetrain as st
    sparsifier = st.RigL(model, optimizer, density=0.1, total_steps=10_000)
    ...  # in your loop, call sparsifier.step() instead of optimizer.step()

Names are loaded on first use (PEP 562), so ``import sparsetrain`` and ``sparsetrain
--help`` do not pay for importing torch; ``st.RigL`` or ``st.models`` load what they need.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = ("algorithms", "analysis", "backends", "criteria", "data", "distributions", "engine",
               "experiments", "models", "registry", "reporting", "scenarios", "schedules", "sparse")
_FROM_ALGORITHMS = ("DSN", "Dense", "EdgePopup", "GMP", "GraNet", "GraSP", "MEST", "METHODS", "Method", "PaI",
                    "RigL", "SET", "SLaK", "SNIP", "SRigL", "Sparsifier", "Static", "SupTickets", "SynFlow", "UGTs", "create",
                    "list_methods")

_ELSEWHERE = {"summary": "sparsetrain.analysis", "register_layer": "sparsetrain.sparse",
              "shrink": "sparsetrain.backends.shrink", "load_shrunk": "sparsetrain.backends.export",
              "semi_structured": "sparsetrain.backends.semi_structured"}

__all__ = [*_FROM_ALGORITHMS, *_ELSEWHERE, "criteria", "data", "distributions", "models"]


def __getattr__(name: str) -> Any:
    if name in _FROM_ALGORITHMS:
        value = getattr(importlib.import_module("sparsetrain.algorithms"), name)
    elif name in _ELSEWHERE:
        value = getattr(importlib.import_module(_ELSEWHERE[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"sparsetrain.{name}")
    else:
        raise AttributeError(f"module 'sparsetrain' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_FROM_ALGORITHMS, *_ELSEWHERE, *_SUBMODULES})
