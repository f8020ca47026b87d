"""Optimizers and per-step learning-rate schedules built from a `TrainConfig`."""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass

import torch
from torch import nn

from sparsetrain.engine.config import TrainConfig


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, nesterov=cfg.nesterov and cfg.momentum > 0)
    betas = (cfg.momentum, 0.999)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)


@dataclass(frozen=True)
class LRFactor:
    """Multiplier of the peak lr at a step: linear warm-up, then cosine / step / constant."""

    total_steps: int
    warmup_steps: int
    kind: str
    milestones: tuple[float, ...] = ()
    gamma: float = 0.1

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "cosine":
            span = max(self.total_steps - self.warmup_steps, 1)
            return 0.5 * (1 + math.cos(math.pi * min(step - self.warmup_steps, span) / span))
        if self.kind == "step":
            passed = bisect_right(sorted(m * self.total_steps for m in self.milestones), step)
            return self.gamma ** passed
        return 1.0


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    factor = LRFactor(total_steps=cfg.epochs * steps_per_epoch,
                      warmup_steps=round(cfg.warmup_epochs * steps_per_epoch),
                      kind=cfg.lr_schedule, milestones=cfg.lr_milestones, gamma=cfg.lr_gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
