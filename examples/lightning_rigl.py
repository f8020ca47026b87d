"""RigL at 80% sparsity on a small GPT-2 wrapped in a Lightning module, one callback added.

The same model and data as ``hf_gpt2_rigl.py`` (a 2-layer, 128-dim GPT-2 learning Python's
standard-library sources character by character), trained by ``lightning.Trainer``:
dense, static sparse and RigL for the same number of steps, then the per-layer table of
the RigL model and the three validation losses.

Run: python examples/lightning_rigl.py           (quick: 60 steps)
     python examples/lightning_rigl.py --long    (the README's numbers: 300 steps)
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import lightning
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
import charlm  # noqa: E402

import sparsetrain as st  # noqa: E402
from sparsetrain.integrations.lightning import SparsityCallback  # noqa: E402


class CharGPT(lightning.LightningModule):
    """A GPT-2 language model with AdamW, linear warm-up and cosine decay."""

    def __init__(self, block: int, steps: int, lr: float = 3e-3) -> None:
        super().__init__()
        self.model = charlm.gpt2(block)
        self.steps, self.lr = steps, lr

    def training_step(self, batch: list[torch.Tensor], _index: int) -> torch.Tensor:
        (rows,) = batch
        return self.model(input_ids=rows, labels=rows).loss

    def configure_optimizers(self):  # noqa: ANN201
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=0.0)
        schedule = transformers.get_cosine_schedule_with_warmup(optimizer, self.steps // 20, self.steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def train(method: str | None, steps: int, chars: int, block: int, batch: int, seed: int = 0) -> dict:
    """Train one run; ``method`` None is dense. Returns its validation loss, density and table."""
    train_rows, val_rows = charlm.splits(chars, block)
    module = CharGPT(block, steps)
    callbacks = []
    if method is not None:
        dynamic = {"update_interval": max(steps // 20, 1), "drop_fraction": 0.3} if method == "rigl" else {}
        sparsity = SparsityCallback(method, density=0.2, distribution="erk", seed=seed, **dynamic)
        callbacks.append(sparsity)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(train_rows), batch_size=batch,
                                         shuffle=True, generator=torch.Generator().manual_seed(seed))
    trainer = lightning.Trainer(max_steps=steps, gradient_clip_val=1.0, accelerator="cpu", logger=False,
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                                callbacks=callbacks)
    trainer.fit(module, loader)
    result = {"val_loss": charlm.validation_loss(module.model, val_rows), "summary": st.summary(module.model)}
    if method is not None:
        result["density"] = sparsity.method.density()
        result["coverage"] = sparsity.method.coverage
    return result


def main(steps: int = 60, chars: int = 200_000, block: int = 64, batch: int = 16) -> dict[str, dict]:
    warnings.filterwarnings("ignore", module="lightning")
    return charlm.compare(train, steps, chars, block, batch)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", action="store_true", help="the longer run (300 steps, 300k characters)")
    if parser.parse_args().long:
        main(steps=300, chars=300_000)
    else:
        main()
