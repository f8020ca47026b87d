"""Gradual pruning: GMP follows the cubic schedule exactly; GraNet prunes then regrows the right counts."""

import math

import pytest
import torch
from torch import nn

from sparsetrain.algorithms import GMP, GraNet
from sparsetrain.distributions import allocate
from sparsetrain.errors import ConfigError, UserError
from sparsetrain.sparse import topk_mask


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 6, bias=False), nn.Linear(6, 4, bias=False))


def _cubic(t, t0, interval, n, d_i, d_f):
    """Zhu & Gupta 2017 eq. 1 in density, evaluated at the last pruning step <= t."""
    j = min((t - t0) // interval, n) if t > t0 else 0
    if j < 1:
        return d_i
    return d_f + (d_i - d_f) * (1 - j * interval / (n * interval)) ** 3


@pytest.mark.parametrize("d_i", [1.0, 0.6])
def test_gmp_global_density_after_every_step_is_the_cubic_formula(d_i):
    model = _model()
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    method = GMP(model, None, density=0.1, initial_density=d_i, total_steps=40, update_interval=4,
                 start_fraction=0.1, stop_fraction=0.8, ranking="global")
    # t0 = 4, end = 32, n = (32 - 4) // 4 = 7 pruning steps: 8, 12, ..., 32
    assert (method.pruning.start, method.pruning.end, method.pruning.rounds) == (4, 32, 7)
    n_total = 84
    assert sum(w.active for w in method.weights) == round(d_i * n_total)
    for t in range(1, 41):
        method.step()
        expected = _cubic(t, 4, 4, 7, d_i, 0.1)
        assert sum(w.active for w in method.weights) == round(expected * n_total), t
    if d_i == 1.0:  # weights never moved (no optimizer): the survivors are the global top-8 |w|
        flat = torch.cat([original[w.name].abs().reshape(-1) for w in method.weights])
        keep = topk_mask(flat, 8)
        assert torch.equal(torch.cat([w.mask.reshape(-1) for w in method.weights]), keep)
    assert method.current_targets() == {w.name: w.active for w in method.weights}


def test_gmp_layer_wise_counts_follow_the_distribution_at_each_pruning_step():
    method = GMP(_model(), None, density=0.2, total_steps=20, update_interval=2, stop_fraction=0.5,
                 ranking="layer", distribution="uniform")
    shapes = {"0.weight": (6, 10), "1.weight": (4, 6)}
    assert method.config.distribution == "uniform"
    for t in range(1, 21):
        method.step()
        d = _cubic(t, 0, 2, 5, 1.0, 0.2)
        assert {w.name: w.active for w in method.weights} == allocate("uniform", shapes, d), t
    assert method.current_targets() == method.targets == allocate("uniform", shapes, 0.2)
    for w in method.weights:
        assert w.parameter[~w.mask].eq(0).all()


def test_gmp_interval_in_epochs():
    method = GMP(_model(), None, density=0.5, total_steps=20, steps_per_epoch=5, update_interval=1,
                 interval_unit="epochs")
    assert (method.pruning.interval, method.pruning.rounds, method.pruning.end) == (5, 3, 15)
    with pytest.raises(UserError, match="needs steps_per_epoch"):
        GMP(_model(), None, density=0.5, total_steps=20, update_interval=1, interval_unit="epochs")


def test_gmp_config_and_schedule_errors():
    with pytest.raises(ConfigError, match="initial_density"):
        GMP(_model(), None, density=0.5, initial_density=0.4, total_steps=10)
    with pytest.raises(ConfigError, match="stop_fraction must be greater"):
        GMP(_model(), None, density=0.5, start_fraction=0.5, stop_fraction=0.5, total_steps=10)
    with pytest.raises(UserError, match="needs total_steps"):
        GMP(_model(), None, density=0.5)
    with pytest.raises(UserError, match="leaves no pruning step"):
        GMP(_model(), None, density=0.5, update_interval=20, total_steps=10)


def test_granet_prunes_to_the_schedule_then_drops_by_magnitude_and_regrows_by_gradient():
    torch.manual_seed(0)
    layer = nn.Linear(5, 4, bias=False)  # 20 weights
    with torch.no_grad():
        layer.weight.copy_(torch.randperm(20).float().add(1).view(4, 5))  # distinct magnitudes 1..20
    method = GraNet(layer, None, density=0.25, initial_density=0.5, total_steps=4, update_interval=1,
                    prune_stop_fraction=0.5, drop_fraction=0.5)
    w = method.weights[0]
    assert w.active == 10  # random init at density 0.5
    before = w.mask.clone()
    values = layer.weight.detach().clone()
    grad = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    layer.weight.grad = grad.clone()
    method.step()  # t = 1: prune to 0.25 + 0.25 (1 - 1/2)^3, then regenerate
    d1 = 0.25 + 0.25 * (1 - 1 / 2) ** 3
    n_pruned = round(d1 * 20)                                  # 6
    rate = 0.005 + 0.495 / 2 * (1 + math.cos(math.pi * 1 / 4))  # cosine decay over 4 steps to 0.005
    n_drop = math.ceil(rate * n_pruned)                        # 3
    assert (n_pruned, n_drop) == (6, 3)
    pruned = topk_mask(values.abs(), n_pruned, allowed=before)
    kept = topk_mask(values.abs(), n_pruned - n_drop, allowed=pruned)
    grown = topk_mask(grad.abs(), n_drop, allowed=~kept)
    assert torch.equal(w.mask, kept | grown)
    again = grown & pruned  # dropped and regrown at once: keeps its value, as the reference
    assert layer.weight[grown & ~again].eq(0).all()
    assert torch.equal(layer.weight[kept | again], values[kept | again])
    layer.weight.grad = grad.clone()
    method.step()  # t = 2: final density 0.25 -> 5 weights; rate 0.2525 -> ceil(1.26) = 2 regrown
    assert w.active == 5 and method.density() == 0.25
    assert method.plan(5, 5, 0.25, 20) == (3, 2)
    for _ in range(2):
        layer.weight.grad = grad.clone()
        method.step()
    assert w.active == 5 and method.current_targets() == {"weight": 5}


def test_granet_can_start_dense():
    method = GraNet(_model(), None, density=0.2, initial_density=1.0, total_steps=8, update_interval=2)
    assert method.density() == 1.0
