"""RigL at 80% sparsity on a small GPT-2 inside the Hugging Face Trainer, one callback added.

A 2-layer, 128-dim GPT-2 built from a config learns Python's standard-library sources
character by character. Dense, static sparse and RigL train for the same number of steps;
the script prints the per-layer table of the RigL model (attention and MLP sparse, the
tied embedding intact) and the three validation losses.

Run: python examples/hf_gpt2_rigl.py             (quick: 60 steps)
     python examples/hf_gpt2_rigl.py --long      (the README's numbers: 300 steps)
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import transformers
from transformers import Trainer, TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parent))
import charlm  # noqa: E402

import sparsetrain as st  # noqa: E402
from sparsetrain.integrations.hf import SparsityCallback  # noqa: E402


def train(method: str | None, steps: int, chars: int, block: int, batch: int, seed: int = 0) -> dict:
    """Train one run; ``method`` None is dense. Returns its validation loss, density and table."""
    train_rows, val_rows = charlm.splits(chars, block)
    model = charlm.gpt2(block, seed=seed)
    callbacks = []
    if method is not None:
        dynamic = {"update_interval": max(steps // 20, 1), "drop_fraction": 0.3} if method == "rigl" else {}
        sparsity = SparsityCallback(method, density=0.2, distribution="erk", **dynamic)
        callbacks.append(sparsity)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, max_steps=steps, per_device_train_batch_size=batch,
                                 learning_rate=3e-3, warmup_steps=steps // 20, lr_scheduler_type="cosine",
                                 weight_decay=0.0, max_grad_norm=1.0, save_strategy="no", logging_strategy="no",
                                 report_to=[], use_cpu=True, disable_tqdm=True, seed=seed)
        data = [{"input_ids": row, "labels": row} for row in train_rows]
        Trainer(model=model, args=args, train_dataset=data, callbacks=callbacks).train()
    result = {"val_loss": charlm.validation_loss(model, val_rows), "summary": st.summary(model)}
    if method is not None:
        result["density"] = sparsity.method.density()
        result["coverage"] = sparsity.method.coverage
    return result


def main(steps: int = 60, chars: int = 200_000, block: int = 64, batch: int = 16) -> dict[str, dict]:
    transformers.logging.set_verbosity_error()
    return charlm.compare(train, steps, chars, block, batch)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", action="store_true", help="the longer run (300 steps, 300k characters)")
    logging.basicConfig(level=logging.WARNING)
    if parser.parse_args().long:
        main(steps=300, chars=300_000)
    else:
        main()
