"""Edge-popup: frozen weights, learned scores, exactly k active weights per layer."""

import json
import math
import sqlite3

import pytest
import torch
from torch import nn

import sparsetrain as st
from sparsetrain.cli import main
from sparsetrain.errors import UserError


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def _topk_by_sort(scores, k):
    """Independent top-k: a stable descending sort of |scores| (ties to the lower position)."""
    order = torch.argsort(scores.abs().reshape(-1), descending=True, stable=True)[:k]
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    mask[order] = True
    return mask.view_as(scores)


@pytest.mark.parametrize("backend", ["masked", "sparse"])
def test_weights_never_change_scores_do_and_the_mask_is_the_top_k_scores(backend):
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    method = st.create("edge-popup", model, opt, density=0.25, backend=backend)
    frozen = {w.name: method.frozen(w).clone() for w in method.weights}
    biases = [model[0].bias.clone(), model[2].bias.clone()]
    first_scores = {w.name: method.scores(w).clone() for w in method.weights}
    g = torch.Generator().manual_seed(1)
    masks_seen = set()
    for _ in range(6):
        x, y = torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        method.step()
        for w in method.weights:
            k = round(0.25 * w.numel)  # uniform allocation: the same fraction in every layer
            assert w.active == k
            assert torch.equal(w.mask, _topk_by_sort(method.scores(w), k))
            dense = torch.zeros(w.numel)
            dense[w.active_index()] = w.active_values()
            assert torch.equal(dense.view(w.shape), frozen[w.name] * w.mask)  # weights = init on the mask
            assert torch.equal(method.frozen(w), frozen[w.name])
            masks_seen.add(w.mask.numpy().tobytes())
    assert all(not torch.equal(method.scores(w), first_scores[w.name]) for w in method.weights)
    assert len(masks_seen) > 2  # the masks moved
    assert torch.equal(model[0].bias, biases[0]) and torch.equal(model[2].bias, biases[1])
    assert method.trains_weights is False


def test_one_step_moves_scores_by_the_straight_through_gradient():
    """y = W x, loss = sum(y): dL/dW_eff[i, j] = sum_b x[b, j] at every position, so plain SGD
    moves score[i, j] by -lr * sum_b x[b, j] * init[i, j] * sign(score[i, j])."""
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(4, 3, bias=False))
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    method = st.create("edge-popup", layer, opt, density=0.5)
    (w,) = method.weights
    scores, init = method.scores(w).clone(), method.frozen(w).clone()
    x = torch.tensor([[1.0, -2.0, 0.5, 3.0], [0.0, 1.0, 1.0, -1.0]])
    opt.zero_grad()
    layer(x).sum().backward()
    method.step()
    expected = scores - 0.1 * x.sum(0).expand(3, 4) * init * scores.sign()
    assert torch.allclose(method.scores(w), expected)
    assert torch.equal(w.mask, _topk_by_sort(expected, 6))


@pytest.mark.parametrize("scale_fan, density", [(False, 0.5), (True, 0.5), (True, 0.2)])
def test_signed_constant_init_is_plus_minus_gain_over_sqrt_fan(scale_fan, density):
    model = nn.Sequential(nn.Conv1d(2, 4, 5))  # fan_in = 2 * 5 = 10
    torch.manual_seed(0)
    signs = model[0].weight.detach().sign().clone()
    method = st.create("edge-popup", model, torch.optim.SGD(model.parameters(), lr=0.1),
                       density=density, scale_fan=scale_fan)
    fan = 10 * (density if scale_fan else 1.0)
    assert torch.allclose(method.frozen(method.weights[0]), signs * math.sqrt(2.0) / math.sqrt(fan))


def test_needs_an_optimizer():
    with pytest.raises(UserError, match="pass the optimizer"):
        st.create("edge-popup", _net(), None, density=0.5)


def test_the_store_records_that_weights_were_never_trained(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSETRAIN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "runs"
    common = ["--model", "mlp", "--dataset", "digits", "--epochs", "1", "--batch-size", "128",
              "--no-progress", "--model-options", "{widths: [16]}", "--out", str(out)]
    assert main(["train", "--method", "edge-popup", "--density", "0.5"] + common) == 0
    assert main(["train", "--method", "set", "--density", "0.5", "--update-interval", "5"] + common) == 0
    with sqlite3.connect(out / "results.db") as db:
        rows = dict(db.execute("SELECT method, final FROM runs").fetchall())
    assert json.loads(rows["edge-popup"])["trained_weights"] is False
    assert json.loads(rows["set"])["trained_weights"] is True


def test_the_first_forward_uses_the_frozen_weights_unscaled():
    """sparse_init must not rescale the frozen weights before the first mask change."""
    model = _net()
    method = st.create("edge-popup", model, torch.optim.SGD(model.parameters(), lr=0.1), density=0.25)
    for w in method.weights:
        assert torch.equal(w.parameter.detach(), method.frozen(w) * w.mask)
