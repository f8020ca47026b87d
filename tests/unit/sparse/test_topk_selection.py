import pytest
import torch
from torch import nn

from sparsetrain.errors import UserError
from sparsetrain.sparse import generator, select_weights, topk_mask, zero_optimizer_state


def test_topk_ties_go_to_the_lower_index():
    scores = torch.tensor([1.0, 3.0, 3.0, 0.5, 3.0])
    assert topk_mask(scores, 2).tolist() == [False, True, True, False, False]


def test_topk_among_allowed_positions_only():
    scores = torch.tensor([[9.0, 1.0], [5.0, 7.0]])
    allowed = torch.tensor([[False, True], [True, True]])
    assert topk_mask(scores, 2, allowed).tolist() == [[False, False], [True, True]]
    with pytest.raises(ValueError):
        topk_mask(scores, 4, allowed)


def test_generator_depends_on_every_part():
    a = torch.rand(5, generator=generator(0, 10, "grow", 1))
    assert torch.equal(a, torch.rand(5, generator=generator(0, 10, "grow", 1)))
    assert not torch.equal(a, torch.rand(5, generator=generator(0, 11, "grow", 1)))
    assert not torch.equal(a, torch.rand(5, generator=generator(1, 10, "grow", 1)))


def _net():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 8), nn.Linear(8, 2))


def test_select_weights_defaults_and_options():
    net = _net()
    assert select_weights(net) == ["0.weight", "3.weight", "4.weight"]
    assert select_weights(net, dense_first=True, dense_last=True) == ["3.weight"]
    assert select_weights(net, include=("3.*", "4.*")) == ["3.weight", "4.weight"]
    assert select_weights(net, exclude=("0.*",)) == ["3.weight", "4.weight"]
    with pytest.raises(UserError, match="nothing to sparsify.*0.weight: not in include"):
        select_weights(net, include=("nothing*",))


def test_zero_optimizer_state_clears_momentum_and_adam_moments_at_positions():
    p = nn.Parameter(torch.ones(2, 2))
    for opt in (torch.optim.SGD([p], lr=0.1, momentum=0.9), torch.optim.Adam([p], lr=0.1)):
        p.grad = torch.ones(2, 2)
        opt.step()
        positions = torch.tensor([[True, False], [False, True]])
        zero_optimizer_state(opt, p, positions)
        for value in opt.state[p].values():
            if value.shape == p.shape:
                assert value[positions].eq(0).all() and value[~positions].ne(0).all()
