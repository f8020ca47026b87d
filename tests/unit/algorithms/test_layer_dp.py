"""Layer-adaptive DP (Xu et al. 2023): the DP equals brute force; distortions by hand."""

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from sparsetrain.algorithms.layer_dp import (
    distortion_table, dp_allocate, dp_counts, dp_masks, level_counts,
)
from sparsetrain.errors import UserError


def _brute_force(table, costs, budget):
    best, best_choice = np.inf, None
    for choice in itertools.product(*[range(len(c)) for c in costs]):
        if sum(costs[l][j] for l, j in enumerate(choice)) > budget:
            continue
        value = sum(table[l][j] for l, j in enumerate(choice))
        if value < best:
            best, best_choice = value, list(choice)
    return best, best_choice


@pytest.mark.parametrize("seed", range(6))
def test_dp_equals_brute_force_on_a_synthetic_table(seed):
    rng = np.random.default_rng(seed)
    layers, levels = 4, 5
    costs = [sorted(rng.integers(0, 12, size=levels).tolist()) for _ in range(layers)]
    # distortion falls as more weights are kept, as a real curve does, plus noise
    table = np.array([[10.0 / (1 + c) + rng.random() for c in row] for row in costs])
    budget = int(rng.integers(sum(c[0] for c in costs), 30))
    best, expected = _brute_force(table, costs, budget)
    chosen = dp_allocate(table, costs, budget)
    assert chosen == expected
    assert sum(table[l][j] for l, j in enumerate(chosen)) == pytest.approx(best)
    assert sum(costs[l][j] for l, j in enumerate(chosen)) <= budget


def test_dp_prefers_the_layer_whose_distortion_falls_fastest():
    # two layers, levels keep 0/1/2 units; layer 0 hurts a lot when pruned, layer 1 barely
    table = np.array([[9.0, 4.0, 0.0], [1.0, 0.5, 0.0]])
    assert dp_allocate(table, [[0, 1, 2], [0, 1, 2]], 2) == [2, 0]
    assert dp_allocate(table, [[0, 1, 2], [0, 1, 2]], 3) == [2, 1]


def test_dp_without_a_feasible_choice_is_a_user_error():
    with pytest.raises(UserError, match="budget"):
        dp_allocate(np.zeros((1, 2)), [[3, 4]], 2)


def test_level_counts_round_and_cap_at_the_active_weights():
    assert level_counts(10, 10, 4) == [0, 2, 5, 8, 10]  # round(2.5) = 2, round(7.5) = 8
    assert level_counts(10, 6, 4) == [0, 2, 5, 6, 6]


def test_distortion_table_is_the_output_mse_when_only_that_layer_is_pruned():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2, bias=False), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -3.0, 0.5], [2.0, 0.0, -1.5]]))
        model[1].weight.copy_(torch.tensor([[2.0, -1.0]]))
    x = torch.eye(3)
    params = {"0.weight": model[0].weight, "1.weight": model[1].weight}
    counts = {"0.weight": [6, 3, 0], "1.weight": [2, 1, 0]}
    table = distortion_table(model, params, x, counts, curve="mean")
    w0 = model[0].weight.detach().clone()
    w1 = model[1].weight.detach().clone()
    ref = x @ w0.T @ w1.T
    # layer 0 at 3 weights keeps -3, 2, -1.5 (the three largest |w|)
    kept0 = torch.tensor([[0.0, -3.0, 0.0], [2.0, 0.0, -1.5]])
    expected_03 = float(((x @ kept0.T @ w1.T - ref) ** 2).mean())
    # layer 1 at 1 weight keeps 2.0
    expected_11 = float(((x @ w0.T @ torch.tensor([[2.0, 0.0]]).T - ref) ** 2).mean())
    assert table[0, 0] == 0 and table[1, 0] == 0
    assert table[0, 1] == pytest.approx(expected_03)
    assert table[1, 1] == pytest.approx(expected_11)
    assert table[0, 2] == pytest.approx(float((ref ** 2).mean()))
    assert torch.equal(model[0].weight, w0) and torch.equal(model[1].weight, w1)  # restored


def test_dp_counts_and_masks_spend_the_budget_exactly():
    counts = {"a": level_counts(10, 10, 2), "b": level_counts(6, 6, 2)}  # [0,5,10], [0,3,6]
    table = np.array([[5.0, 1.0, 0.0], [4.0, 2.0, 0.0]])
    chosen = dp_counts(table, counts, budget=9)
    assert chosen == {"a": 5, "b": 3}  # 5+3 <= 9: 1+2 beats 0+4 (a=10 needs b=0)
    values = {"a": torch.arange(10.0), "b": torch.tensor([0.5, 9.5, 0.1, 8.0, 7.0, 0.2])}
    masks = dp_masks(values, chosen, budget=9)
    assert int(masks["a"].sum()) + int(masks["b"].sum()) == 9
    assert masks["a"].tolist() == [False] * 4 + [True] * 6  # 5 largest + the spare one (5.0 > 0.5)
    assert masks["b"].nonzero().flatten().tolist() == [1, 3, 4]


def test_worst_case_curve_is_the_largest_per_sample_output_mse_as_rd_prune():
    # RD_PRUNE gen_rd_curves with --worst_case_curve: ((Y - Y_hat) ** 2).mean(dim=1).max()
    model = nn.Sequential(nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, 1.0], [-2.0, 0.5]]))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 2.0]])
    counts = {"0.weight": [4, 2]}
    worst = distortion_table(model, {"0.weight": model[0].weight}, x, counts)
    mean = distortion_table(model, {"0.weight": model[0].weight}, x, counts, curve="mean")
    # at 2 weights the layer keeps 3.0 and -2.0: the outputs lose x1 * [1.0, 0.5]
    # per-sample squared changes: [0, 0], [1, 0.25], [4, 1] -> per-sample means 0, 0.625, 2.5
    assert worst[0, 0] == 0 and worst[0, 1] == pytest.approx(2.5)
    assert mean[0, 1] == pytest.approx((0 + 1 + 0.25 + 4 + 1) / 6)
    from sparsetrain.algorithms.after_training import PruneConfig
    assert PruneConfig(density=0.5).dp_curve == "worst"
