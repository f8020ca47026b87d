"""UGTs: frozen weights, raw scores ranked globally, the sparsity rising over the first half."""

import math

import pytest
import torch
from torch import nn

import sparsetrain as st
from sparsetrain.algorithms import ugts_density


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8, bias=False), nn.ReLU(), nn.Linear(8, 3, bias=False))  # 48 + 24 weights


def test_density_schedule_is_the_reference_linear_rise_over_the_first_half():
    # sparsity_e = 0.9 * e / 10 for e < 10 (20 epochs), then 0.9
    expected = {0: 1.0, 1: 0.91, 5: 0.55, 9: 0.19, 10: 0.1, 19: 0.1}
    for step, density in expected.items():
        assert ugts_density(step, 20, 0.1, 0.5) == pytest.approx(density)
    assert ugts_density(0, 20, 0.1, 0.0) == 0.1


def test_global_top_k_of_raw_scores_on_the_schedule_weights_frozen_scores_move():
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    method = st.create("ugts", model, opt, density=0.25, total_steps=6)  # decay over 3 steps
    frozen = {w.name: method.frozen(w).clone() for w in method.weights}
    first = {w.name: method.scores(w).clone() for w in method.weights}
    # N = 72, K = 18: 72 - 54 * t / 3 active after step t
    counts = [72, 54, 36, 18, 18, 18, 18]
    assert sum(w.active for w in method.weights) == counts[0]
    g = torch.Generator().manual_seed(1)
    for t in range(1, 7):
        x, y = torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        method.step()
        flat = torch.cat([method.scores(w).reshape(-1) for w in method.weights])
        order = torch.argsort(flat, descending=True, stable=True)[:counts[t]]  # raw scores, not |scores|
        keep = torch.zeros(72, dtype=torch.bool)
        keep[order] = True
        assert torch.equal(torch.cat([w.mask.reshape(-1) for w in method.weights]), keep)
        assert sum(w.active for w in method.weights) == counts[t]
        for w in method.weights:
            assert torch.equal(method.frozen(w), frozen[w.name])
            assert torch.equal(w.parameter.detach(), frozen[w.name] * w.mask)
    assert all(not torch.equal(method.scores(w), first[w.name]) for w in method.weights)
    assert method.density() == 0.25 and method.trains_weights is False


def test_one_step_moves_raw_scores_by_grad_times_init_without_sign():
    """loss = sum(W x): dL/dW_eff[i, j] = sum_b x[b, j], so SGD moves score[i, j] by -lr * sum_b x[b, j] * init."""
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(4, 3, bias=False))
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    method = st.create("ugts", layer, opt, density=0.5, decay_fraction=0.0)
    (w,) = method.weights
    scores, init = method.scores(w).clone(), method.frozen(w).clone()
    x = torch.tensor([[1.0, -2.0, 0.5, 3.0], [0.0, 1.0, 1.0, -1.0]])
    opt.zero_grad()
    layer(x).sum().backward()
    method.step()
    assert torch.allclose(method.scores(w), scores - 0.1 * x.sum(0).expand(3, 4) * init)


def test_weights_and_scores_are_kaiming_uniform_within_sqrt_6_over_fan_in():
    model = nn.Sequential(nn.Linear(50, 400, bias=False))
    method = st.create("ugts", model, torch.optim.SGD(model.parameters(), lr=0.1), density=0.5, total_steps=10)
    bound = math.sqrt(6 / 50)
    for t in (method.frozen(method.weights[0]), method.scores(method.weights[0])):
        assert t.abs().max() <= bound and t.abs().max() > 0.99 * bound
        assert t.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.03)  # U(-b, b) has std b/sqrt(3)


def test_layer_ranking_keeps_each_layers_count_on_the_schedule():
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    method = st.create("ugts", model, opt, density=0.25, total_steps=4, ranking="layer")  # decay over 2 steps
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    # layer counts: 48 - 36 t / 2 and 24 - 18 t / 2
    for t, (a, b) in enumerate([(48, 24), (30, 15), (12, 6), (12, 6)]):
        assert [w.active for w in method.weights] == [a, b]
        assert method.current_targets() == dict(zip([w.name for w in method.weights], (a, b)))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        method.step()
