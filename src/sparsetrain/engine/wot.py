"""Weighted Optimization Trajectories (WOT) as a Trainer callback.

Huang et al., "Enhancing Adversarial Training via Reweighting Optimization Trajectory",
ECML PKDD 2023 (reference code: github.com/TienjinHuang/WOT, ``train_cifar.py``).

During adversarial training (use together with `AdversarialTraining`), starting from
weights ``w0`` the callback records the weight change ``dw_i`` over each of K segments of
``gap`` optimizer steps. After K segments it refines the weights to

    w = w0 + sum_i alpha_{i,b} dw_i          (b = block of the parameter)

with one alpha per segment and per block (WOT-B: the model's top-level blocks) or per
segment only (WOT-W). The alphas start at 0 (the reference's default), are optimised by
momentum steps (lr 0.1, momentum 0.9, buffer reset every pass) against PGD examples of
the held-out split for ``alpha_epochs`` passes, and are clamped to [0, 1] after every
batch. As the reference's ``update_weights``, each batch takes one momentum step per
parameter tensor (`alpha_momentum_steps`; ``alpha_step="batch"`` takes one step on the
summed gradient instead). Batch-norm statistics are then re-estimated on clean training batches (cumulative
average, as the reference's ``bn_update``), the optimizer's momentum is dropped
(reference ``--reinitialize 1``), and the next window starts from the refined weights.

Sparse models: refined weights are multiplied by the current masks, so pruned weights
stay exactly zero. Differences from the reference: every segment has exactly ``gap``
steps (the reference's first segment is one step shorter, since it snapshots ``w0`` after
the first step), and block assignment is automatic (`parameter_blocks`) instead of
hand-written per architecture (for PreActResNet-18 it gives the reference's 6 blocks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sparsetrain.config import check_range, option, validate_choices
from sparsetrain.data import batches
from sparsetrain.engine.events import Callback
from sparsetrain.errors import UserError
from sparsetrain.scenarios.adversarial import evaluating, pgd
from sparsetrain.scenarios.normalization import Normalization, PixelModel
from sparsetrain.sparse import generator

Weights = dict[str, torch.Tensor]


@dataclass(frozen=True)
class WOTConfig:
    """WOT options; defaults follow the reference's shipped script (gap 400, 4 segments)."""

    variant: str = option("block", "block: one alpha per segment and block (WOT-B); "
                          "whole: one alpha per segment (WOT-W)", choices=("block", "whole"))
    gap: int = option(400, "optimizer steps per trajectory segment")
    segments: int = option(4, "K: segments per refinement window")
    start_epoch: int = option(0, "epoch at which WOT starts recording the trajectory")
    alpha_init: str = option("zero", "initial alphas (zero: start from w0, as the reference; one: from the "
                             "current weights, better when gap is short)", choices=("zero", "one", "random"))
    alpha_epochs: int = option(10, "passes over the held-out split to optimise the alphas")
    alpha_lr: float = option(0.1, "learning rate of the alphas")
    alpha_momentum: float = option(0.9, "momentum of the alphas' SGD")
    alpha_step: str = option("tensor", "tensor: one momentum step of the shared buffer per parameter tensor "
                             "within each batch (the reference's update_weights); batch: one step per batch "
                             "on the summed gradient (several times smaller steps)", choices=("tensor", "batch"))
    alpha_mode: str = option("eval", "model mode while optimising the alphas", choices=("eval", "train"))
    batch_size: int = option(128, "held-out batch size for the alpha optimisation")
    eps: float = option(8 / 255, "PGD radius of the held-out attack (pixel units)")
    step_size: float = option(2 / 255, "PGD step size of the held-out attack")
    steps: int = option(10, "PGD iterations of the held-out attack")
    norm: str = option("linf", "threat model of the held-out attack", choices=("linf", "l2"))
    bn_data: str = option("train", "data for re-estimating batch-norm statistics", choices=("train", "val"))
    bn_batches: int = option(400, "batches used to re-estimate batch-norm statistics")
    reset_momentum: bool = option(True, "drop the optimizer state after each refinement")

    def __post_init__(self) -> None:
        validate_choices(self)
        for name in ("gap", "segments", "alpha_epochs", "batch_size", "steps", "bn_batches"):
            check_range(name, getattr(self, name), 1)
        check_range("start_epoch", self.start_epoch, 0)
        check_range("alpha_lr", self.alpha_lr, 0)
        check_range("alpha_momentum", self.alpha_momentum, 0, 1, high_open=True)
        check_range("eps", self.eps, 0)
        check_range("step_size", self.step_size, 0)


# --- pure pieces -------------------------------------------------------------------------
def parameter_blocks(model: nn.Module) -> dict[str, int]:
    """Block index of every parameter: the model's top-level children in order.

    A top-level ``nn.Sequential``/``nn.ModuleList`` whose items are themselves containers
    (e.g. ``stages`` of a ResNet) counts each item as a block; parameters registered on
    the model itself form one more block.
    """
    units: list[str] = []
    for name, child in model.named_children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and any(
                len(list(item.children())) > 0 for item in child):
            units += [f"{name}.{i}" for i, _ in enumerate(child)]
        else:
            units.append(name)
    blocks: dict[str, int] = {}
    for pname, _ in model.named_parameters():
        owner = next((i for i, unit in enumerate(units) if pname.startswith(unit + ".")), len(units))
        blocks[pname] = owner
    used = sorted(set(blocks.values()))
    renumber = {old: new for new, old in enumerate(used)}
    return {k: renumber[v] for k, v in blocks.items()}


def refine(w0: Mapping[str, torch.Tensor], deltas: Sequence[Mapping[str, torch.Tensor]],
           alpha: torch.Tensor, blocks: Mapping[str, int]) -> Weights:
    """``w0[p] + sum_i alpha[i, blocks[p]] * deltas[i][p]`` for every parameter p."""
    out = {}
    for name, base in w0.items():
        value = base.clone()
        for i, delta in enumerate(deltas):
            value += alpha[i, blocks[name]].to(base.dtype) * delta[name]
        out[name] = value
    return out


def alpha_gradient(grads: Mapping[str, torch.Tensor], deltas: Sequence[Mapping[str, torch.Tensor]],
                   blocks: Mapping[str, int], num_blocks: int) -> torch.Tensor:
    """d loss / d alpha[i, b] = sum over parameters p of block b of <deltas[i][p], grad[p]>."""
    first = next(iter(grads.values()))
    out = torch.zeros(len(deltas), num_blocks, dtype=torch.float64, device=first.device)
    for name, grad in grads.items():
        for i, delta in enumerate(deltas):
            out[i, blocks[name]] += (delta[name].double() * grad.double()).sum()
    return out


def alpha_momentum_steps(alpha: torch.Tensor, velocity: torch.Tensor, grads: Mapping[str, torch.Tensor],
                         deltas: Sequence[Mapping[str, torch.Tensor]], blocks: Mapping[str, int], *,
                         lr: float, momentum: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of the reference's alpha update (``update_weights`` in TienjinHuang/WOT
    ``train_cifar.py``): for each parameter tensor p in order and each segment i, the buffer
    entry of (i, block of p) takes a momentum step with <deltas[i][p], grad[p]> and the alpha
    moves by ``-lr`` times it, so a block with n tensors moves n times per batch; the alphas
    are clamped to [0, 1] once, after all tensors. Returns the new (alpha, velocity)."""
    alpha, velocity = alpha.clone(), velocity.clone()
    for name, grad in grads.items():
        b = blocks[name]
        for i, delta in enumerate(deltas):
            velocity[i, b] = momentum * velocity[i, b] + (delta[name].double() * grad.double()).sum()
            alpha[i, b] -= lr * velocity[i, b]
    return alpha.clamp(0, 1), velocity


@torch.no_grad()
def recalibrate_bn(model: nn.Module, inputs: Iterable[torch.Tensor]) -> bool:
    """Re-estimate every BatchNorm's running mean/var as the cumulative average over ``inputs``.

    Running stats are reset, momentum set to None (PyTorch's cumulative moving average,
    which equals the reference's momentum ``b / (n + b)``), the batches forwarded in train
    mode, then momenta and modes restored. Returns False (and does nothing) without BN.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return False
    momenta = {m: m.momentum for m in norms}
    modes = {m: m.training for m in model.modules()}
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        for x in inputs:
            model(x)
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
        for module, training in modes.items():
            module.training = training
    return True


def _snapshot(model: nn.Module) -> Weights:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@torch.no_grad()
def _load(model: nn.Module, weights: Mapping[str, torch.Tensor], sparse_weights: Iterable[Any]) -> None:
    params = dict(model.named_parameters())
    for name, value in weights.items():
        params[name].copy_(value)
    for weight in sparse_weights:  # pruned weights stay exactly zero
        weight.apply_mask()


# --- the callback ----------------------------------------------------------------------
class WOT(Callback):
    """Refines the weights along the recent trajectory every ``gap * segments`` steps (see module doc).

    ``normalization`` is the dataset's input normalisation (identity for pixel inputs).
    After a refinement ``alpha`` holds the last alphas (K, B); ``refinements`` counts them
    and each epoch's history gets ``wot_refinements``.
    """

    def __init__(self, config: WOTConfig | None = None, normalization: Normalization | None = None) -> None:
        self.config = config or WOTConfig()
        self.normalization = normalization or Normalization.identity()
        self.w0: Weights | None = None
        self.previous: Weights | None = None
        self.deltas: list[Weights] = []
        self.steps = 0
        self.refinements = 0
        self.alpha: torch.Tensor | None = None

    def on_batch_start(self, trainer: Any) -> None:
        if self.w0 is None and trainer.epoch >= self.config.start_epoch:
            self.w0 = _snapshot(trainer.model)
            self.previous = _snapshot(trainer.model)

    def on_batch_end(self, trainer: Any) -> None:
        if self.w0 is None:
            return
        self.steps += 1
        if self.steps % self.config.gap:
            return
        current = _snapshot(trainer.model)
        self.deltas.append({k: current[k] - self.previous[k] for k in current})
        self.previous = current
        if len(self.deltas) == self.config.segments:
            self.refine_now(trainer)

    def on_eval(self, trainer: Any) -> None:
        trainer.history[-1]["wot_refinements"] = self.refinements

    def state_dict(self) -> dict[str, Any]:
        """The trajectory recorded so far (the Trainer does not checkpoint callbacks yet)."""
        return {"w0": self.w0, "previous": self.previous, "deltas": list(self.deltas),
                "steps": self.steps, "refinements": self.refinements, "alpha": self.alpha}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.w0, self.previous = state["w0"], state["previous"]
        self.deltas = list(state["deltas"])
        self.steps, self.refinements = int(state["steps"]), int(state["refinements"])
        self.alpha = state["alpha"]

    def blocks(self, model: nn.Module) -> tuple[dict[str, int], int]:
        if self.config.variant == "whole":
            return {name: 0 for name, _ in model.named_parameters()}, 1
        blocks = parameter_blocks(model)
        return blocks, max(blocks.values()) + 1

    def refine_now(self, trainer: Any) -> None:
        """Optimise the alphas on the held-out split, load the refined weights, recalibrate BN."""
        cfg = self.config
        model = trainer.model
        if len(trainer.data.val) == 0:
            raise UserError("WOT optimises its weights on the validation split; set val_fraction > 0")
        sparse_weights = getattr(trainer.method, "weights", [])
        blocks, num_blocks = self.blocks(model)
        self.alpha = self.optimise_alpha(model, trainer.data.val, blocks, num_blocks, sparse_weights,
                                         seed=(trainer.seed, self.refinements), device=trainer.device)
        _load(model, refine(self.w0, self.deltas, self.alpha, blocks), sparse_weights)
        source = trainer.data.train if cfg.bn_data == "train" else trainer.data.val
        order = generator(trainer.seed, self.refinements, "wot-bn")
        stream = (x for i, (x, _) in zip(range(cfg.bn_batches), batches(
            source, trainer.config.batch_size, shuffle=True, generator=order, device=trainer.device)))
        recalibrate_bn(model, stream)
        if cfg.reset_momentum:
            trainer.optimizer.state.clear()
        self.w0 = _snapshot(model)
        self.previous = _snapshot(model)
        self.deltas = []
        self.refinements += 1

    def optimise_alpha(self, model: nn.Module, data: Any, blocks: dict[str, int], num_blocks: int,
                       sparse_weights: Sequence[Any], *, seed: tuple[int, int],
                       device: torch.device) -> torch.Tensor:
        """The reference's alpha search: momentum SGD on the robust held-out loss, clamped to [0, 1]."""
        cfg = self.config
        shape = (len(self.deltas), num_blocks)
        dev = next(model.parameters()).device
        if cfg.alpha_init == "zero":
            alpha = torch.zeros(shape, dtype=torch.float64, device=dev)
        elif cfg.alpha_init == "one":
            alpha = torch.ones(shape, dtype=torch.float64, device=dev)
        else:
            alpha = torch.rand(shape, generator=generator(*seed, "wot-alpha"), dtype=torch.float64).to(dev)
        _load(model, refine(self.w0, self.deltas, alpha, blocks), sparse_weights)
        wrapped = PixelModel(model, self.normalization)
        names = [name for name, _ in model.named_parameters()]
        params = [p for _, p in model.named_parameters()]
        attack_random = generator(*seed, "wot-attack")
        with evaluating(model, cfg.alpha_mode == "eval"):
            for _ in range(cfg.alpha_epochs):
                velocity = torch.zeros_like(alpha)
                for x, y in batches(data, cfg.batch_size, shuffle=False, device=device):
                    pixels = self.normalization.invert(x).clamp(0, 1)
                    adv = pgd(wrapped, pixels, y, eps=cfg.eps, step_size=cfg.step_size, steps=cfg.steps,
                              norm=cfg.norm, generator=attack_random, eval_mode=cfg.alpha_mode == "eval")
                    loss = F.cross_entropy(wrapped(adv), y)
                    grads = dict(zip(names, torch.autograd.grad(loss, params, allow_unused=True)))
                    grads = {k: g for k, g in grads.items() if g is not None}
                    if cfg.alpha_step == "tensor":
                        alpha, velocity = alpha_momentum_steps(alpha, velocity, grads, self.deltas, blocks,
                                                               lr=cfg.alpha_lr, momentum=cfg.alpha_momentum)
                    else:
                        velocity = cfg.alpha_momentum * velocity + alpha_gradient(grads, self.deltas, blocks,
                                                                                  num_blocks)
                        alpha = (alpha - cfg.alpha_lr * velocity).clamp(0, 1)
                    _load(model, refine(self.w0, self.deltas, alpha, blocks), sparse_weights)
        return alpha
