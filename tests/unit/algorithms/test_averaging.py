"""Lottery Pools never loses validation accuracy; soups keep the mask and are the mean."""

import pytest
import torch
from torch import nn

from sparsetrain.algorithms.averaging import (
    greedy_soup, interpolate, lottery_pools, neighbour_order, recalibrate_bn, uniform_soup,
)
from sparsetrain.errors import UserError
from sparsetrain.sparse import attach


def _sparse_model(seed, density_mask=None):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    weights = attach(model, ["0.weight", "2.weight"])
    if density_mask is not None:
        for w, m in zip(weights, density_mask):
            w.set_mask(m)
    return model, weights


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return x, y


def _accuracy(x, y):
    return lambda m: float((m(x).argmax(1) == y).float().mean())


def _tickets():
    g = torch.Generator().manual_seed(1)
    masks = [(torch.rand(8, 6, generator=g) < 0.5), (torch.rand(3, 8, generator=g) < 0.5)]
    states = []
    for seed in range(3):
        model, _ = _sparse_model(seed, masks)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    return states, masks


@pytest.mark.parametrize("seed", range(4))
def test_lottery_pools_never_returns_lower_validation_accuracy_than_the_ticket(seed):
    states, masks = _tickets()
    x, y = _data(seed)
    model, weights = _sparse_model(0, masks)
    evaluate = _accuracy(x, y)
    model.load_state_dict(states[0])
    ticket_acc = evaluate(model)
    active = sum(w.active for w in weights)
    result = lottery_pools(model, weights, states[0], states[1:], evaluate, alphas=(0.2, 0.5, 0.8))
    assert result.ticket_val_acc == ticket_acc
    assert result.val_acc >= ticket_acc
    assert evaluate(model) == result.val_acc  # the model holds the returned state
    assert sum(w.active for w in weights) == active  # re-pruned to the ticket's density
    for w in weights:
        assert w.parameter[~w.mask].eq(0).all()
    if not result.accepted:
        assert all(torch.equal(result.state[k], states[0][k]) for k in states[0])


def test_lottery_pools_accepts_a_better_interpolation_and_rejects_a_worse_one():
    states, masks = _tickets()
    model, weights = _sparse_model(0, masks)
    # an "accuracy" that rewards moving the first bias towards the candidate's
    target = states[1]["0.bias"]
    evaluate = lambda m: -float((m[0].bias.detach() - target).abs().sum())  # noqa: E731
    result = lottery_pools(model, weights, states[0], [states[1]], evaluate, alphas=(0.25, 1.0))
    assert result.accepted == [(0, 1.0)]
    assert torch.equal(result.state["0.bias"], target)
    worse = lambda m: -float((m[0].bias.detach() - states[0]["0.bias"]).abs().sum())  # noqa: E731
    result = lottery_pools(model, weights, states[0], [states[1]], worse, alphas=(0.25, 1.0))
    assert result.accepted == [] and torch.equal(result.state["0.bias"], states[0]["0.bias"])


def test_uniform_soup_is_the_elementwise_mean_and_keeps_the_mask():
    states, masks = _tickets()
    soup = uniform_soup(states)
    for key, value in states[0].items():
        if value.is_floating_point():
            assert torch.allclose(soup[key], (states[0][key] + states[1][key] + states[2][key]) / 3)
        else:
            assert torch.equal(soup[key], value)
    assert soup["0.weight"][~masks[0]].eq(0).all()


def test_soup_of_different_masks_is_a_user_error():
    states, _ = _tickets()
    other = dict(states[1])
    other["0.weight_mask"] = ~other["0.weight_mask"]
    with pytest.raises(UserError, match="share one mask"):
        uniform_soup([states[0], other])


def test_greedy_soup_adds_an_ingredient_only_when_it_does_not_hurt():
    states, masks = _tickets()
    model, _ = _sparse_model(0, masks)
    target = states[0]["2.bias"]
    evaluate = lambda m: -float((m[2].bias.detach() - target).abs().sum())  # noqa: E731  (state 0 is best)
    soup, chosen = greedy_soup(states, model, evaluate)
    assert chosen[0] == 0
    for i in chosen[1:]:
        assert i in (1, 2)
    expected = uniform_soup([states[i] for i in chosen])
    assert all(torch.equal(soup[k], expected[k]) for k in soup)
    assert evaluate(model) >= evaluate_state(model, states[0], evaluate)


def evaluate_state(model, state, evaluate):
    model.load_state_dict(state)
    return evaluate(model)


def test_interpolate_and_neighbour_order():
    a = {"w": torch.tensor([0.0, 2.0]), "m": torch.tensor([True, False])}
    b = {"w": torch.tensor([4.0, 6.0]), "m": torch.tensor([False, True])}
    mixed = interpolate(a, b, 0.25)
    assert mixed["w"].tolist() == [1.0, 3.0] and mixed["m"].tolist() == [True, False]
    assert neighbour_order(2, 5) == [1, 3, 0, 4]
    assert neighbour_order(0, 4, limit=2) == [1, 2]


def test_lottery_pools_recalibrates_before_every_evaluation_of_a_mix():
    states, masks = _tickets()
    model, weights = _sparse_model(0, masks)
    x, y = _data()
    events = []
    evaluate = lambda m: events.append("eval") or _accuracy(x, y)(m)  # noqa: E731
    lottery_pools(model, weights, states[0], states[1:], evaluate,
                  recalibrate=lambda m: events.append("recal"), alphas=(0.3, 0.6))
    # the ticket itself is evaluated as trained; each of 2 candidates x 2 alphas is recalibrated first
    assert events == ["eval"] + ["recal", "eval"] * 4


def test_recalibrate_bn_resets_then_averages_with_momentum_in_batch_order_as_sms():
    # ZIB-IOL/SMS recalibrate_bn: reset_running_stats(), then model.train()(x) over the unshuffled
    # training batches; each batch moves the statistics by the module's momentum (0.1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2), nn.ReLU(), nn.Linear(2, 2)).eval()
    bn = model[1]
    bn.running_mean.fill_(5.0)
    bn.running_var.fill_(9.0)  # stale averaged statistics
    g = torch.Generator().manual_seed(1)
    inputs = [torch.randn(4, 3, generator=g) + 1, torch.randn(6, 3, generator=g) - 2]
    mean, var = torch.zeros(2), torch.ones(2)
    for x in inputs:  # by hand: pre-BN activations, batch mean and unbiased batch variance
        h = x @ model[0].weight.detach().T + model[0].bias.detach()
        mean = 0.9 * mean + 0.1 * h.mean(0)
        var = 0.9 * var + 0.1 * h.var(0, unbiased=True)
    recalibrate_bn(model, inputs)
    assert torch.allclose(bn.running_mean, mean, atol=1e-6) and torch.allclose(bn.running_var, var, atol=1e-6)
    assert int(bn.num_batches_tracked) == 2 and not model.training


def test_greedy_soup_recalibrates_every_ingredient_and_mix_before_evaluating_and_the_soup():
    states, masks = _tickets()
    model, _ = _sparse_model(0, masks)
    events = []
    evaluate = lambda m: events.append("eval") or 1.0  # noqa: E731  (ties: every ingredient is added)
    soup, chosen = greedy_soup(states, model, evaluate, recalibrate=lambda m: events.append("recal"))
    assert chosen == [0, 1, 2]
    assert events == ["recal", "eval"] * 3 + ["recal", "eval"] * 2 + ["recal"]
