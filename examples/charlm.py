"""Shared by the GPT-2 examples: character-level text from Python's own standard library
sources (no download), a tiny GPT-2 built from a config, and the validation loss.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

VOCAB = [chr(c) for c in range(32, 127)] + ["\n", "\t", "<unk>"]
UNKNOWN = len(VOCAB) - 1


def stdlib_text(chars: int) -> str:
    """The first ``chars`` characters of the standard library's .py files, in sorted path order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts, total = [], 0
    for path in sorted(root.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        total += len(text)
        if total >= chars:
            break
    return "".join(parts)[:chars]


def encode(text: str) -> torch.Tensor:
    index = {c: i for i, c in enumerate(VOCAB)}
    return torch.tensor([index.get(c, UNKNOWN) for c in text], dtype=torch.long)


def blocks(ids: torch.Tensor, block: int) -> torch.Tensor:
    """Non-overlapping rows of ``block`` tokens."""
    n = len(ids) // block
    return ids[: n * block].view(n, block)


def splits(chars: int, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) blocks: the first 90% of the text and the last 10%."""
    ids = encode(stdlib_text(chars))
    cut = int(0.9 * len(ids))
    return blocks(ids[:cut], block), blocks(ids[cut:], block)


def gpt2(block: int, layers: int = 2, dim: int = 128, heads: int = 4, seed: int = 0) -> GPT2LMHeadModel:
    """A small GPT-2 (its token embedding tied to the output layer), built from a config."""
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(VOCAB), n_positions=block, n_embd=dim, n_layer=layers, n_head=heads,
                        bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config)


@torch.no_grad()
def validation_loss(model: torch.nn.Module, rows: torch.Tensor, batch: int = 64) -> float:
    """Mean next-character cross-entropy (nats) over the validation blocks."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for chunk in rows.split(batch):
        total += float(model(input_ids=chunk, labels=chunk).loss) * len(chunk)
        count += len(chunk)
    model.train(was_training)
    return total / count


def compare(train, steps: int, chars: int, block: int, batch: int) -> dict[str, dict]:
    """Dense, static and RigL runs of ``train(method, steps, chars, block, batch)`` at equal steps;
    prints what RigL sparsified, its per-layer table and the three validation losses."""
    results = {name: train(method, steps, chars, block, batch)
               for name, method in (("dense", None), ("static", "static"), ("rigl", "rigl"))}
    print(results["rigl"]["coverage"])
    print(results["rigl"]["summary"])
    print(f"\nvalidation loss (nats per character) after {steps} steps of batch {batch}x{block}:")
    for name, r in results.items():
        density = f"density {r['density']:.3f}" if "density" in r else "dense"
        print(f"  {name:<7} {r['val_loss']:.4f}   ({density})")
    return results
