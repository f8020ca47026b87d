"""A Hugging Face ``Trainer`` callback that sparsifies the model with a sparsetrain method.

    from sparsetrain.integrations.hf import SparsityCallback
    sparsity = SparsityCallback("rigl", density=0.2, update_interval=50)
    Trainer(model, args, train_dataset=..., callbacks=[sparsity]).train()
    print(sparsity.method.coverage)

The method is built when training begins, on the Trainer's model and optimizer, with
``total_steps`` = the Trainer's ``max_steps`` and the run's seed. From then on it runs from
the optimizer's step hook: a step that mixed precision skips (inf/NaN gradients) skips the
method too, and gradient accumulation and clipping happen before it, as in the Trainer.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

import sparsetrain
from sparsetrain.algorithms.base import Method
from sparsetrain.integrations import check_method


class SparsityCallback(TrainerCallback):
    """Builds method ``name`` with ``options`` (as `sparsetrain.create`) when training begins.

    Methods that score data before training (``needs_data``, e.g. SNIP) cannot read the
    Trainer's batches: build one yourself, call its ``prepare``, and pass the Trainer its
    optimizer; the method then runs from that optimizer's hook without any callback.
    """

    def __init__(self, name: str = "rigl", **options: Any) -> None:
        check_method(name)
        self.name = name
        self.options = options
        self.method: Method | None = None

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):  # noqa: ANN001
        if self.method is None:
            torch_optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps it
            options = {"seed": args.seed, **self.options}
            self.method = sparsetrain.create(self.name, model, torch_optimizer, total_steps=state.max_steps,
                                             **options)
        return control
