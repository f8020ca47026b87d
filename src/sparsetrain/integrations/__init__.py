"""Callbacks that run a sparsetrain method inside other training frameworks.

They only adapt: each builds the method with `sparsetrain.create` on the framework's model
and optimizer, and the method runs from the optimizer's step hook, as in a user's own loop.

- `sparsetrain.integrations.hf.SparsityCallback` for the Hugging Face ``Trainer``
  (``pip install "sparsetrain[hf]"``);
- `sparsetrain.integrations.lightning.SparsityCallback` for Lightning
  (``pip install "sparsetrain[lightning]"``).

Each module imports its framework, so import the one you use.
"""

from sparsetrain.algorithms import METHODS
from sparsetrain.errors import UserError


def check_method(name: str) -> None:
    """Refuse a method a callback cannot build: unknown, or one that reads data before training."""
    if getattr(METHODS.get(name), "needs_data", False):
        raise UserError(f"method {name!r} reads training batches before training; build it yourself, call its "
                        "prepare(batches) and give the framework its optimizer (the method runs from its hook)")
