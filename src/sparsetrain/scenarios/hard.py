"""Hard subsets: rank samples by EL2N, GraNd or forgetting scores from short dense runs.

- EL2N (Paul et al., "Deep Learning on a Data Diet", NeurIPS 2021): the L2 norm of the
  error vector ``softmax(f(x)) - onehot(y)``, early in training, averaged over runs.
- GraNd (same paper): the L2 norm of the gradient of the sample's loss with respect to all
  weights, ``||d loss(x, y) / d w||``, averaged over runs (at initialization when
  ``score_epochs`` is 0).
- Forgetting (Toneva et al., "An Empirical Study of Example Forgetting", ICLR 2019): how
  often a sample goes from classified correctly to incorrectly between two presentations;
  samples never classified correctly count as forgotten infinitely often.

Scores come from ``score_runs`` short dense runs of ``score_epochs`` epochs of the run's
own model (SGD with momentum 0.9 at the run's lr and batch size), seeded from the run
seed, and are cached (atomically written ``.npz``) under the run root's ``scores/``
folder, keyed by the data, model and settings, so a grid over methods and densities
computes them once per seed. A higher score means a harder sample. ``subset_split:
test`` scores the test samples with the same runs (forgetting: correctness after each
epoch) and evaluates on the chosen fraction of the test set.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX: parallel jobs may compute the same scores twice
    fcntl = None

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sparsetrain.atomic import atomic_write_bytes
from sparsetrain.data import DatasetSplits, TensorData, batches
from sparsetrain.errors import UserError
from sparsetrain.scenarios.base import Scenario, ScenarioContext, register_scenario, subset
from sparsetrain.scenarios.noise import round_half_up
from sparsetrain.sparse import generator, seed_for

SCORES = ("el2n", "grand", "forgetting")


def el2n(probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample ``||probs - onehot(y)||_2`` for probabilities ``probs`` (N, K)."""
    return (probs - F.one_hot(y, probs.shape[1]).to(probs.dtype)).norm(dim=1)


def forgetting_counts(correct: np.ndarray) -> np.ndarray:
    """Forgetting events per sample from ``correct`` (T presentations, N samples), booleans.

    An event is a presentation where the sample is misclassified after being classified
    correctly at the one before; a sample never classified correctly gets ``inf``.
    """
    correct = np.asarray(correct, dtype=bool)
    events = (correct[:-1] & ~correct[1:]).sum(axis=0).astype(np.float64)
    events[~correct.any(axis=0)] = np.inf
    return events


def grand(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample norm of the gradient of the cross-entropy loss w.r.t. all trainable weights."""
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    grads = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    return torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads.values()))


def select(scores: np.ndarray, fraction: float, which: str) -> np.ndarray:
    """Sorted indices of the ``round(fraction * n)`` highest (``hardest``) or lowest (``easiest``)
    scores; ties go to the lower index."""
    scores = np.asarray(scores, dtype=np.float64)
    k = max(1, round_half_up(fraction * len(scores)))
    order = np.argsort(-scores if which == "hardest" else scores, kind="stable")
    return np.sort(order[:k])


def _per_sample(model: nn.Module, data: TensorData, kind: str, device: torch.device) -> np.ndarray:
    model.eval()
    out = []
    size = 256
    if kind == "grand":  # per-sample gradients of every weight: keep a chunk near 2**28 numbers
        size = int(min(256, max(1, 2**28 // sum(p.numel() for p in model.parameters()))))
    for x, y in batches(data, size, shuffle=False, device=device):
        if kind == "el2n":
            with torch.no_grad():
                out.append(el2n(F.softmax(model(x), dim=1), y))
        else:
            out.append(grand(model, x, y))
    return torch.cat(out).cpu().double().numpy() if out else np.empty(0)


@torch.no_grad()
def _correct(model: nn.Module, data: TensorData, device: torch.device) -> np.ndarray:
    model.eval()
    hits = [(model(x).argmax(1) == y) for x, y in batches(data, 1024, shuffle=False, device=device)]
    return torch.cat(hits).cpu().numpy() if hits else np.empty(0, bool)


def short_run_scores(data: DatasetSplits, context: ScenarioContext, kind: str, epochs: int,
                     runs: int) -> dict[str, np.ndarray]:
    """Scores ``kind`` of every train and test sample, averaged over ``runs`` short dense runs."""
    if context.make_model is None:
        raise ValueError("hard-subset scores need a model factory in the scenario context")
    device = torch.device(context.device)
    n_train = len(data.train)
    totals = {"train": np.zeros(n_train), "test": np.zeros(len(data.test))}
    for r in range(runs):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed_for(context.seed, "scores", r))
            model = context.make_model().to(device)
        opt = torch.optim.SGD(model.parameters(), lr=context.lr, momentum=0.9, weight_decay=5e-4)
        seen = np.zeros((epochs, n_train), bool)
        test_seen = np.zeros((epochs, len(data.test)), bool)
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(n_train, generator=generator(context.seed, "scores", r, epoch))
            for start in range(0, n_train, context.batch_size):
                idx = order[start:start + context.batch_size]
                x, y = data.train.x[idx].to(device), data.train.y[idx].to(device)
                logits = model(x)
                seen[epoch, idx.numpy()] = (logits.argmax(1) == y).cpu().numpy()
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(logits, y).backward()
                opt.step()
            test_seen[epoch] = _correct(model, data.test, device)
        if kind == "forgetting":
            scores = {"train": forgetting_counts(seen), "test": forgetting_counts(test_seen)}
        else:
            scores = {"train": _per_sample(model, data.train, kind, device),
                      "test": _per_sample(model, data.test, kind, device)}
        for split in totals:
            totals[split] += scores[split]
    return {split: total / runs for split, total in totals.items()}


def _fingerprint(data: DatasetSplits) -> str:
    digest = hashlib.sha256()
    for part in (data.train.x, data.train.y, data.test.x, data.test.y):
        digest.update(part.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def cached_scores(data: DatasetSplits, context: ScenarioContext, kind: str, epochs: int,
                  runs: int) -> dict[str, np.ndarray]:
    """`short_run_scores`, read from ``context.cache_dir`` when computed before (atomic writes)."""
    if context.cache_dir is None:
        return short_run_scores(data, context, kind, epochs, runs)
    key = {"kind": kind, "epochs": epochs, "runs": runs, "seed": context.seed, "lr": context.lr,
           "batch_size": context.batch_size, "data": _fingerprint(data), **context.identity}
    name = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = context.cache_dir / f"{kind}-{name}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    # parallel grid jobs of one seed need the same scores: the first computes, the others wait
    with open(path.with_suffix(".lock"), "a") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            try:
                with np.load(path) as stored:
                    return {"train": stored["train"], "test": stored["test"]}
            except (OSError, ValueError, KeyError, zipfile.BadZipFile):
                pass  # unreadable: compute again and overwrite
        scores = short_run_scores(data, context, kind, epochs, runs)
        buffer = io.BytesIO()
        np.savez(buffer, **scores)
        atomic_write_bytes(path, buffer.getvalue())
        return scores


@register_scenario("hard_subset", order=10,
                   help="train (or test) on the hardest/easiest subset_fraction by el2n, grand or forgetting scores")
class HardSubset(Scenario):
    example = {"subset": "hardest", "score_epochs": 1, "score_runs": 1}
    def active(self, config: Any) -> bool:
        return config.subset != "none"

    def apply(self, data: DatasetSplits, config: Any, context: ScenarioContext) -> DatasetSplits:
        if config.subset_score == "forgetting" and config.score_epochs < 2:
            raise UserError("score_epochs must be at least 2 for subset_score forgetting; "
                            f"got {config.score_epochs}")
        scores = cached_scores(data, context, config.subset_score, config.score_epochs, config.score_runs)
        split = config.subset_split
        keep = select(scores[split], config.subset_fraction, config.subset)
        return self.replace(data, **{split: subset(getattr(data, split), keep)})

    def label(self, config: Any) -> str:
        where = "" if config.subset_split == "train" else " (test)"
        return f"{config.subset}{where} {config.subset_fraction:g} by {config.subset_score}"
