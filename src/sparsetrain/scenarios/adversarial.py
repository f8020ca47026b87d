"""Adversarial attacks in pixel space: FGSM, PGD (L-inf and L2), AutoAttack via torchattacks.

- FGSM: Goodfellow et al., "Explaining and harnessing adversarial examples", ICLR 2015.
- PGD: Madry et al., "Towards deep learning models resistant to adversarial attacks",
  ICLR 2018 (random start, steps of ``step_size`` along the sign of the gradient for
  L-inf or the normalised gradient for L2, projection onto the eps-ball and onto [0, 1]).
- AutoAttack: Croce & Hein, ICML 2020, through the optional ``torchattacks`` package.

Every attack takes a model that maps pixels in [0, 1] to logits; wrap a model that
expects normalised inputs in `PixelModel`. Attacks run with the model in eval mode
(``eval_mode=True``, the default) and restore its previous mode afterwards.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from sparsetrain.config import check_range, option, validate_choices
from sparsetrain.errors import UserError
from sparsetrain.scenarios.normalization import Normalization, PixelModel


@dataclass(frozen=True)
class AttackConfig:
    """One adversarial attack; the defaults are PGD-20 at L-inf eps 8/255, step 2/255."""

    attack: str = option("pgd", "attack", choices=("fgsm", "pgd", "autoattack"))
    norm: str = option("linf", "threat model", choices=("linf", "l2"))
    eps: float = option(8 / 255, "radius of the perturbation ball in pixel units ([0, 1] scale)")
    step_size: float = option(2 / 255, "PGD step size")
    steps: int = option(20, "PGD iterations")
    restarts: int = option(1, "PGD random restarts; the worst case per sample is kept")
    random_start: bool = option(True, "PGD starts from a uniform (L-inf) / random (L2) point in the ball")

    def __post_init__(self) -> None:
        validate_choices(self)
        check_range("eps", self.eps, 0)
        check_range("step_size", self.step_size, 0)
        check_range("steps", self.steps, 1)
        check_range("restarts", self.restarts, 1)
        if self.attack == "fgsm" and self.norm != "linf":
            raise UserError("attack=fgsm supports norm=linf only; use attack=pgd for l2")


@contextlib.contextmanager
def evaluating(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode (when ``enabled``) and restore each module's mode afterwards."""
    modes = {m: m.training for m in model.modules()}
    if enabled:
        model.eval()
    try:
        yield model
    finally:
        for module, training in modes.items():
            module.training = training


def _per_sample_norm(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project perturbations (N, ...) onto the ``norm`` ball of radius ``eps``."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    factor = (eps / _per_sample_norm(delta)).clamp(max=1.0)
    return delta * factor


def _draw(fn, shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``fn`` (torch.rand / randn) drawn from ``generator`` on its own device, moved to ``like``'s."""
    if generator is None:
        return fn(shape, device=like.device, dtype=like.dtype)
    return fn(shape, generator=generator, device=generator.device, dtype=like.dtype).to(like.device)


def _random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    if norm == "linf":
        return (2 * _draw(torch.rand, tuple(x.shape), x, generator) - 1) * eps
    # a random direction, at a radius uniform in [0, eps] (as in Rice et al. 2020)
    direction = _draw(torch.randn, tuple(x.shape), x, generator)
    radius = _draw(torch.rand, (len(x),) + (1,) * (x.dim() - 1), x, generator)
    return direction / _per_sample_norm(direction) * radius * eps


def _step(delta: torch.Tensor, grad: torch.Tensor, step_size: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return delta + step_size * grad.sign()
    return delta + step_size * grad / _per_sample_norm(grad)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step_size: float,
        steps: int, norm: str = "linf", restarts: int = 1, random_start: bool = True,
        generator: torch.Generator | None = None, eval_mode: bool = True) -> torch.Tensor:
    """PGD adversarial examples for pixels ``x`` in [0, 1]; returns ``x_adv`` in the ball and range.

    Over ``restarts`` the worst case per sample is kept: an example that fools the model
    beats one that does not, then the higher cross-entropy wins.
    ``generator`` (any device) draws the random starts.
    """
    if norm not in ("linf", "l2"):
        raise UserError(f"norm must be linf or l2, got {norm!r}")
    x = x.detach()
    best = x.clone()
    best_score = torch.full((len(x),), -float("inf"), device=x.device)
    with evaluating(model, eval_mode), torch.enable_grad():
        for _ in range(restarts):
            delta = _random_start(x, eps, norm, generator) if random_start else torch.zeros_like(x)
            delta = ((x + delta).clamp(0, 1) - x)
            for _ in range(steps):
                delta.requires_grad_(True)
                loss = F.cross_entropy(model(x + delta), y)
                grad, = torch.autograd.grad(loss, delta)
                delta = project(_step(delta.detach(), grad, step_size, norm), eps, norm)
                delta = (x + delta).clamp(0, 1) - x
            with torch.no_grad():
                logits = model(x + delta)
                losses = F.cross_entropy(logits, y, reduction="none")
                # fooling dominates; the loss breaks ties (a bounded squash keeps the order)
                score = (logits.argmax(1) != y).float() * 2 + torch.sigmoid(losses)
                better = score > best_score
                best[better] = (x + delta)[better]
                best_score = torch.where(better, score, best_score)
    return best.detach()


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
         eval_mode: bool = True) -> torch.Tensor:
    """FGSM: ``clip(x + eps * sign(grad_x loss), 0, 1)``; one PGD step of size eps from x."""
    return pgd(model, x, y, eps=eps, step_size=eps, steps=1, norm="linf", random_start=False,
               eval_mode=eval_mode)


def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
               version: str = "standard", seed: int = 0) -> torch.Tensor:
    """AutoAttack (Croce & Hein 2020) through ``torchattacks``; raises a UserError if it is missing."""
    try:
        import torchattacks  # imported here: optional, heavy
    except ImportError:
        raise UserError("attack=autoattack needs the torchattacks package: "
                        "pip install --no-deps torchattacks") from None
    n_classes = int(model(x[:1]).shape[1])
    attack = torchattacks.AutoAttack(model, norm="Linf" if norm == "linf" else "L2", eps=eps,
                                     version=version, n_classes=n_classes, seed=seed)
    with evaluating(model):
        return attack(x, y).detach()


def attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: AttackConfig, *,
           generator: torch.Generator | None = None, eval_mode: bool = True) -> torch.Tensor:
    """Adversarial pixels for ``x`` (pixels in [0, 1]) by the attack ``config`` describes."""
    if config.attack == "fgsm":
        return fgsm(model, x, y, eps=config.eps, eval_mode=eval_mode)
    if config.attack == "autoattack":
        return autoattack(model, x, y, eps=config.eps, norm=config.norm)
    return pgd(model, x, y, eps=config.eps, step_size=config.step_size, steps=config.steps,
               norm=config.norm, restarts=config.restarts, random_start=config.random_start,
               generator=generator, eval_mode=eval_mode)


def robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: AttackConfig, *,
                    normalization: Normalization | None = None, batch_size: int = 256,
                    seed: int = 0) -> float:
    """Accuracy of ``model`` under ``config``'s attack on model inputs ``x`` (normalised as the model expects).

    Inputs are mapped back to pixels with ``normalization``, attacked in pixel space
    within [0, 1], and normalised again inside a `PixelModel`.
    """
    normalization = normalization or Normalization.identity()
    wrapped = PixelModel(model, normalization)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    correct = 0
    for start in range(0, len(y), batch_size):
        xb = normalization.invert(x[start:start + batch_size].to(device)).clamp(0, 1)
        yb = y[start:start + batch_size].to(device)
        adv = attack(wrapped, xb, yb, config, generator=generator)
        with evaluating(model), torch.no_grad():
            correct += int((wrapped(adv).argmax(1) == yb).sum())
    return correct / max(len(y), 1)
