"""Allocation modes: global, layer-wise at a distribution, and ratios-only; exact counts."""

import pytest
import torch

from sparsetrain.algorithms.pruning import (
    allocation_counts, apply_masks, global_counts, masks_from_scores, select_masks,
)
from sparsetrain.distributions import allocate
from sparsetrain.errors import UserError

SCORES = {
    "a": torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.8, 0.3]]),  # 6 weights
    "b": torch.tensor([0.7, 0.6, 0.05, 0.4]),                # 4 weights
}


def test_global_keeps_the_overall_top_k():
    masks = masks_from_scores(SCORES, 0.5, allocation="global")  # keep 5 of 10
    # the five largest: 0.9, 0.8, 0.7, 0.6, 0.5
    assert masks["a"].tolist() == [[True, False, True], [False, True, False]]
    assert masks["b"].tolist() == [True, True, False, False]
    assert global_counts(SCORES, 5) == {"a": 3, "b": 2}


def test_global_ties_break_by_layer_order_then_index():
    scores = {"a": torch.ones(3), "b": torch.ones(3)}
    masks = masks_from_scores(scores, 4 / 6, allocation="global")
    assert masks["a"].tolist() == [True] * 3 and masks["b"].tolist() == [True, False, False]


def test_layer_wise_uses_the_distribution_counts_and_ranks_within_each_layer():
    shapes = {n: tuple(s.shape) for n, s in SCORES.items()}
    counts = allocate("uniform", shapes, 0.5)
    assert allocation_counts(SCORES, 0.5, allocation="layer") == counts == {"a": 3, "b": 2}
    masks = masks_from_scores(SCORES, 0.5, allocation="layer", distribution="uniform")
    assert masks["a"].tolist() == [[True, False, True], [False, True, False]]
    assert masks["b"].tolist() == [True, True, False, False]
    erk = masks_from_scores(SCORES, 0.5, allocation="layer", distribution="erk", power=1.0)
    assert {n: int(m.sum()) for n, m in erk.items()} == allocate("erk", shapes, 0.5, power=1.0)


def test_ratios_keep_the_global_counts_but_draw_positions_at_random():
    scores = {"a": torch.arange(100.0), "b": torch.arange(50.0) * 3}
    glob = masks_from_scores(scores, 0.3, allocation="global")
    ratios = masks_from_scores(scores, 0.3, allocation="ratios", seed=1)
    again = masks_from_scores(scores, 0.3, allocation="ratios", seed=1)
    other = masks_from_scores(scores, 0.3, allocation="ratios", seed=2)
    assert {n: int(m.sum()) for n, m in ratios.items()} == {n: int(m.sum()) for n, m in glob.items()}
    assert all(torch.equal(ratios[n], again[n]) for n in scores)
    assert not torch.equal(ratios["a"], glob["a"]) and not torch.equal(ratios["a"], other["a"])


@pytest.mark.parametrize("allocation", ["global", "layer", "ratios"])
@pytest.mark.parametrize("density", [0.05, 0.3, 0.77, 1.0])
def test_exact_count_and_allowed_positions_only(allocation, density):
    g = torch.Generator().manual_seed(0)
    scores = {"x": torch.randint(0, 3, (7, 5), generator=g).float(),  # many ties
              "y": torch.randint(0, 3, (11,), generator=g).float()}
    allowed = {n: torch.rand(s.shape, generator=g) < 0.9 for n, s in scores.items()}
    shapes = {n: tuple(s.shape) for n, s in scores.items()}
    if allocation == "layer":
        counts = allocate("uniform", shapes, density)
        if any(counts[n] > int(allowed[n].sum()) for n in counts):
            with pytest.raises(UserError, match="should keep"):
                masks_from_scores(scores, density, allocation=allocation, allowed=allowed)
            return
    total = sum(s.numel() for s in scores.values())
    if round(density * total) > sum(int(a.sum()) for a in allowed.values()):
        with pytest.raises(UserError, match="cannot keep"):
            masks_from_scores(scores, density, allocation=allocation, allowed=allowed)
        return
    masks = masks_from_scores(scores, density, allocation=allocation, allowed=allowed)
    assert sum(int(m.sum()) for m in masks.values()) == round(density * total)
    assert all(not (m & ~allowed[n]).any() for n, m in masks.items())


def test_select_masks_refuses_a_count_above_what_is_allowed():
    with pytest.raises(UserError, match="layer 'b' should keep 3 weights but only 1"):
        select_masks(SCORES, {"a": 1, "b": 3}, allowed={"b": torch.tensor([True, False, False, False])})


def test_apply_masks_zeroes_weights_gradients_and_momentum():
    from torch import nn

    from sparsetrain.algorithms import Static
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sparsifier = Static(model, opt, density=1.0)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    model(torch.randn(4, 3)).sum().backward()
    mask = torch.tensor([[True, False, True], [False, True, True]])
    apply_masks(sparsifier.weights, {"weight": mask}, opt)
    assert model.weight[~mask].eq(0).all() and model.weight[mask].ne(0).all()
    assert model.weight.grad[~mask].eq(0).all()
    assert opt.state[model.weight]["momentum_buffer"][~mask].eq(0).all()
