"""A Lightning callback that sparsifies the module with a sparsetrain method.

    from sparsetrain.integrations.lightning import SparsityCallback
    sparsity = SparsityCallback("rigl", density=0.2, update_interval=50)
    lightning.Trainer(max_steps=1000, callbacks=[sparsity]).fit(module, loader)

The method is built at setup, before the optimizers exist and before a checkpoint is
restored (so masks, being module buffers, resume with the model), with ``total_steps`` =
the trainer's estimated optimizer steps; when fitting starts it is hooked to the first
optimizer and runs from its step hook after every optimizer step Lightning makes
(automatic or manual optimization, accumulation, clipping, mixed precision). Its own
state (step count, ITOP map) is saved in the checkpoint with the callback's state.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback

import sparsetrain
from sparsetrain.algorithms.base import Method
from sparsetrain.integrations import check_method


class SparsityCallback(Callback):
    """Builds method ``name`` with ``options`` (as `sparsetrain.create`) for ``trainer.fit``."""

    def __init__(self, name: str = "rigl", **options: Any) -> None:
        check_method(name)
        self.name = name
        self.options = options
        self.method: Method | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:  # noqa: ANN001
        if stage == "fit" and self.method is None:
            self.method = sparsetrain.create(self.name, pl_module, None,
                                             total_steps=trainer.estimated_stepping_batches, **self.options)

    def on_fit_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.method.optimizer = trainer.optimizers[0]
        self.method.hook_optimizer()

    def state_dict(self) -> dict[str, Any]:
        return {} if self.method is None else {"method": self.method.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "method" in state_dict:
            self.method.load_state_dict(state_dict["method"])
