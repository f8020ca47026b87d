"""FGSM and PGD (L-inf, L2): inside the ball and [0, 1], loss up, eval mode; FGSM = one PGD step."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsetrain.errors import UserError
from sparsetrain.scenarios.adversarial import AttackConfig, attack, autoattack, fgsm, pgd, robust_accuracy
from sparsetrain.scenarios.normalization import Normalization, PixelModel


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


def data(n: int = 6):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, 6, 6, generator=g)
    x[0, 0] = 0.0  # pixels at the range limits
    x[1, 1] = 1.0
    return x, torch.randint(0, 5, (n,), generator=g)


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
@pytest.mark.parametrize("restarts", [1, 2])
def test_pgd_stays_in_the_ball_and_the_range_and_raises_the_loss(norm, eps, restarts, device):
    model = small_model().to(device)
    x, y = (t.to(device) for t in data())
    adv = pgd(model, x, y, eps=eps, step_size=eps / 4, steps=10, norm=norm, restarts=restarts,
              generator=torch.Generator().manual_seed(0))
    delta = (adv - x).flatten(1)
    size = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-6).all()
    assert adv.min() >= 0 and adv.max() <= 1
    assert (adv != x).any()
    model.eval()
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y, reduction="none")
        robust = F.cross_entropy(model(adv), y, reduction="none")
    assert (robust >= clean - 1e-6).all() and robust.mean() > clean.mean()


def test_fgsm_equals_one_pgd_step_of_size_eps_without_random_start():
    model = small_model()
    x, y = data()
    eps = 0.05
    expected = pgd(model, x, y, eps=eps, step_size=eps, steps=1, random_start=False)
    assert torch.equal(fgsm(model, x, y, eps=eps), expected)
    # and by hand: x + eps * sign(grad) clipped to [0, 1], gradient taken in eval mode
    model.eval()
    xr = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(F.cross_entropy(model(xr), y), xr)
    torch.testing.assert_close(expected, (x + eps * grad.sign()).clamp(0, 1))


def test_attacks_run_in_eval_mode_and_restore_the_mode():
    model = small_model()
    model.train()
    bn = model[1]
    before = bn.running_mean.clone()
    x, y = data()
    pgd(model, x, y, eps=0.03, step_size=0.01, steps=3)
    assert model.training and bn.training
    assert torch.equal(bn.running_mean, before)  # eval mode: BN statistics untouched
    model.eval()
    pgd(model, x, y, eps=0.03, step_size=0.01, steps=3, eval_mode=False)
    assert not model.training


def test_restarts_keep_the_worst_case_per_sample():
    model = small_model()
    x, y = data()
    one = [pgd(model, x, y, eps=0.1, step_size=0.02, steps=2, generator=torch.Generator().manual_seed(0))]
    both = pgd(model, x, y, eps=0.1, step_size=0.02, steps=2, restarts=3, generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        loss_one = F.cross_entropy(model(one[0]), y, reduction="none")
        loss_both = F.cross_entropy(model(both), y, reduction="none")
        fooled_one = model(one[0]).argmax(1) != y
        fooled_both = model(both).argmax(1) != y
    # never worse than the first restart: fooled stays fooled, else the loss does not fall
    assert (fooled_both | ~fooled_one).all()
    same = fooled_both == fooled_one
    assert (loss_both[same] >= loss_one[same] - 1e-6).all()


def test_normalised_models_are_attacked_in_pixel_space():
    model = small_model()
    norm = Normalization(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    x_pix, y = data()
    x_in = norm.apply(x_pix)
    torch.testing.assert_close(norm.invert(x_in), x_pix)
    wrapped = PixelModel(model, norm)
    torch.testing.assert_close(wrapped(x_pix), model(x_in))
    cfg = AttackConfig(eps=0.0, steps=1)  # eps 0: robust accuracy is clean accuracy
    model.eval()
    clean = float((model(x_in).argmax(1) == y).float().mean())
    assert robust_accuracy(model, x_in, y, cfg, normalization=norm) == pytest.approx(clean)
    strong = AttackConfig(eps=0.5, step_size=0.1, steps=10)
    assert robust_accuracy(model, x_in, y, strong, normalization=norm) <= clean


def test_attack_dispatches_on_the_config():
    model = small_model()
    x, y = data()
    cfg = AttackConfig(attack="fgsm", eps=0.02)
    torch.testing.assert_close(attack(model, x, y, cfg), fgsm(model, x, y, eps=0.02))


def test_config_validation():
    with pytest.raises(UserError):
        AttackConfig(attack="fgsm", norm="l2")
    with pytest.raises(UserError):
        AttackConfig(steps=0)
    with pytest.raises(UserError):
        AttackConfig(norm="l1")


def test_autoattack_without_torchattacks_is_a_clear_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchattacks", None)  # makes `import torchattacks` fail
    x, y = data(4)
    with pytest.raises(UserError, match="pip install --no-deps torchattacks"):
        autoattack(small_model(), x, y, eps=8 / 255)


def test_autoattack_runs_through_torchattacks():
    pytest.importorskip("torchattacks")
    model = small_model()
    x, y = data(4)
    # version "rand" (APGD-CE and APGD-DLR with EOT) is the cheapest full AutoAttack variant
    adv = autoattack(model, x, y, eps=8 / 255, version="rand")
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
    assert ((adv - x).abs().max() <= 8 / 255 + 1e-6)
