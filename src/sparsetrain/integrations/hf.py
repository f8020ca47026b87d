"""A Hugging Face ``Trainer`` callback that sparsifies the model with a sparsetrain method.

    from sparsetrain.integrations.hf import SparsityCallback
    sparsity = SparsityCallback("rigl", density=0.2, update_interval=50)
    Trainer(model, args, train_dataset=..., callbacks=[sparsity]).train()
    print(sparsity.method.coverage)

The method is built when training begins, on the Trainer's model and optimizer, with
``total_steps`` = the Trainer's ``max_steps`` and the run's seed. From then on it runs from
the optimizer's step hook: a step that mixed precision skips (inf/NaN gradients) skips the
method too, and gradient accumulation and clipping happen before it, as in the Trainer.

Resuming (``trainer.train(resume_from_checkpoint=...)``) is exact: every checkpoint the
Trainer saves gets a ``sparsetrain_method.pt`` beside its weights (the masks and the
method's state), and on resume the method is rebuilt, then given back the checkpoint's
weights, masks and state. The Trainer's own weight loading drops the masks (the model has
none yet when it loads), which is why they travel in this file.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

import sparsetrain
from sparsetrain.algorithms.base import Method
from sparsetrain.atomic import atomic_torch_save
from sparsetrain.backends.masked import MASK_SUFFIX
from sparsetrain.errors import UserError
from sparsetrain.integrations import check_method

STATE_FILE = "sparsetrain_method.pt"


class SparsityCallback(TrainerCallback):
    """Builds method ``name`` with ``options`` (as `sparsetrain.create`) when training begins.

    Methods that score data before training (``needs_data``, e.g. SNIP) cannot read the
    Trainer's batches: build one yourself, call its ``prepare``, and pass the Trainer its
    optimizer; the method then runs from that optimizer's hook without any callback.
    """

    def __init__(self, name: str = "rigl", resume_from: str | None = None, **options: Any) -> None:
        """``resume_from``: the checkpoint folder to resume from, when it is not the Trainer's
        ``<output_dir>/checkpoint-<step>`` (the default place to look on resume)."""
        check_method(name)
        self.name = name
        self.resume_from = resume_from
        self.options = options
        self.method: Method | None = None

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):  # noqa: ANN001
        if self.method is None:
            saved = self._saved_state(args, state) if state.global_step > 0 else None
            loaded = {k: v.detach().clone() for k, v in model.state_dict().items()} if saved else None
            torch_optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps it
            options = {"seed": args.seed, **self.options}
            self.method = sparsetrain.create(self.name, model, torch_optimizer, total_steps=state.max_steps,
                                             **options)
            if saved is not None:  # the new masks changed the loaded weights: put everything back
                model.load_state_dict({**saved["masks"], **loaded}, strict=False)
                self.method.load_state_dict(saved["method"])
        return control

    def on_save(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
        folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        if self.method is not None and args.should_save and os.path.isdir(folder):
            masks = {k: v.detach().cpu() for k, v in model.state_dict().items() if k.endswith(MASK_SUFFIX)}
            atomic_torch_save({"masks": masks, "method": self.method.state_dict()}, os.path.join(folder, STATE_FILE))
        return control

    def _saved_state(self, args, state) -> dict[str, Any]:  # noqa: ANN001
        folder = self.resume_from or os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        path = os.path.join(folder, STATE_FILE)
        if not os.path.isfile(path):
            raise UserError(f"resuming at step {state.global_step}: no {STATE_FILE} in {folder!r} (the masks and "
                            "method state SparsityCallback saves with each checkpoint); pass "
                            "SparsityCallback(..., resume_from=<that checkpoint folder>)")
        return torch.load(path, map_location="cpu", weights_only=True)
