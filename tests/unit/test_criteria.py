"""Pruning criteria checked against hand-derived formulas and independent finite differences."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsetrain.algorithms import Static
from sparsetrain.criteria import CRITERIA, lamp_scores, score
from sparsetrain.errors import UserError


def _linear_batch():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, generator=g)
    y = torch.tensor([0, 1, 1, 0, 1])
    return x, y


def test_snip_equals_abs_grad_times_weight_from_the_softmax_formula():
    torch.manual_seed(0)
    model = nn.Linear(3, 2, bias=False)
    x, y = _linear_batch()
    scores = score("snip", model, (x, y))
    # cross-entropy of a linear layer: dL/dW = (softmax(xWᵀ) − onehot(y))ᵀ x / N
    w = model.weight.detach()
    grad = (F.softmax(x @ w.T, dim=1) - F.one_hot(y, 2).float()).T @ x / len(y)
    assert torch.allclose(scores["weight"], (grad * w).abs(), atol=1e-6)
    assert torch.allclose(score("taylor", model, (x, y))["weight"], (grad * w).abs(), atol=1e-6)
    assert torch.allclose(score("gradient", model, (x, y))["weight"], grad.abs(), atol=1e-6)
    assert model.weight.grad is None  # criteria do not write .grad


def test_synflow_on_two_linear_layers_is_the_product_of_paths_and_ignores_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3, bias=False), nn.Linear(3, 2, bias=False))
    w1, w2 = model[0].weight.detach().clone(), model[1].weight.detach().clone()
    a = score("synflow", model, (torch.randn(7, 4), torch.zeros(7, dtype=torch.long)))
    b = score("synflow", model, (torch.randn(2, 4) * 100, torch.ones(2, dtype=torch.long)))
    # R = Σ_k Σ_j Σ_i |w2[k,j]| |w1[j,i]|; the paths through w1[j,i] carry Σ_k |w2[k,j]|,
    # those through w2[k,j] carry Σ_i |w1[j,i]|
    expected1 = w1.abs() * w2.abs().sum(0)[:, None]
    expected2 = w2.abs() * w1.abs().sum(1)[None, :]
    assert torch.allclose(a["0.weight"], expected1, atol=1e-6)
    assert torch.allclose(a["1.weight"], expected2, atol=1e-6)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(model[0].weight, w1) and torch.equal(model[1].weight, w2)  # signs restored
    assert torch.allclose(score("synflow", model, input_shape=(4,))["0.weight"], expected1, atol=1e-6)


def test_grasp_is_theta_times_hessian_gradient_product_with_the_papers_sign():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    T = 2.0
    names = ["0.weight", "2.weight"]
    params = [model.get_parameter(n) for n in names]

    def grads():
        loss = F.cross_entropy(model(x) / T, y)
        return [g.detach().clone() for g in torch.autograd.grad(loss, params)]

    g = grads()
    eps = 1e-5
    with torch.no_grad():  # independent finite difference: Hg ≈ (∇L(θ+εg) − ∇L(θ−εg)) / 2ε
        for p, gi in zip(params, g):
            p.add_(eps * gi)
    plus = grads()
    with torch.no_grad():
        for p, gi in zip(params, g):
            p.sub_(2 * eps * gi)
    minus = grads()
    with torch.no_grad():
        for p, gi in zip(params, g):
            p.add_(eps * gi)
    hg = [(a - b) / (2 * eps) for a, b in zip(plus, minus)]
    scores = score("grasp", model, (x, y), temperature=T)
    for n, p, h in zip(names, params, hg):
        assert torch.allclose(scores[n].double(), p.detach() * h, rtol=1e-4, atol=1e-9)
    # the paper removes the weight with the highest S = −θ ⊙ Hg: ours scores it lowest
    flat_paper = torch.cat([(-p.detach() * h).reshape(-1) for p, h in zip(params, hg)])
    flat_ours = torch.cat([scores[n].reshape(-1) for n in names])
    assert int(flat_ours.argmin()) == int(flat_paper.argmax())
    assert scores["0.weight"].abs().sum() > 0


def test_lamp_on_a_small_vector_by_hand():
    w = torch.tensor([3.0, -1.0, 2.0, 0.5])
    # squares 9, 1, 4, 0.25; ascending 0.25 < 1 < 4 < 9; tails 14.25, 14, 13, 9
    expected = torch.tensor([9 / 9, 1 / 14, 4 / 13, 0.25 / 14.25])
    assert torch.allclose(lamp_scores(w), expected)
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(w.view(2, 2))
    assert torch.allclose(score("lamp", model)["weight"], expected.view(2, 2))
    assert torch.equal(lamp_scores(torch.zeros(3)), torch.zeros(3))


def test_lamp_ties_in_flat_order():
    # two equal weights: the earlier one sorts first, so it gets the larger tail sum
    assert torch.allclose(lamp_scores(torch.tensor([1.0, 1.0])), torch.tensor([0.5, 1.0]))


def test_existing_masks_are_respected_and_magnitude_is_abs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    sparsifier = Static(model, density=0.5, distribution="uniform")
    x, y = torch.randn(4, 4), torch.tensor([0, 1, 2, 0])
    for name in CRITERIA.names():
        scores = score(name, model, (x, y), weights=sparsifier.weights)
        for w in sparsifier.weights:
            s = scores[w.name]
            assert s.shape == w.shape and s.dtype == torch.float32
            assert torch.isinf(s[~w.mask]).all() and (s[~w.mask] < 0).all()
            assert torch.isfinite(s[w.mask]).all(), name
    mag = score("magnitude", model, weights=["2.weight"])
    assert list(mag) == ["2.weight"] and torch.equal(mag["2.weight"], model[2].weight.detach().abs())


def test_random_is_seeded_and_default_weights_are_every_linear():
    model = nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 3))
    a, b = score("random", model, seed=1), score("random", model, seed=1)
    c = score("random", model, seed=2)
    assert list(a) == ["0.weight", "1.weight"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["0.weight"], c["0.weight"])
    assert all(((v >= 0) & (v < 1)).all() for v in a.values())


@pytest.mark.parametrize("name", ["snip", "grasp", "gradient", "taylor"])
def test_data_criteria_need_a_batch(name):
    assert CRITERIA.info(name)["needs_batch"]
    with pytest.raises(UserError, match=f"criterion '{name}' needs a data batch"):
        score(name, nn.Linear(2, 2))
    with pytest.raises(UserError, match="synflow.*input shape"):
        score("synflow", nn.Linear(2, 2))
    assert not math.isnan(float(score("magnitude", nn.Linear(2, 2))["weight"].sum()))
