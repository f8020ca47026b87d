"""Pruning at initialization: the mask is the criterion's top-k, computed once, then fixed."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsetrain.algorithms import PaI, SynFlow, create
from sparsetrain.errors import UserError
from sparsetrain.sparse import topk_mask


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def _batches(seed=0, n=2):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(10, 6, generator=g), torch.randint(0, 3, (10,), generator=g)) for _ in range(n)]


def _global_top(scores, k):
    names = list(scores)
    keep = topk_mask(torch.cat([scores[n].reshape(-1) for n in names]), k)
    return dict(zip(names, [p.view_as(scores[n]) for n, p in
                            zip(names, keep.split([scores[n].numel() for n in names]))]))


def test_snip_keeps_the_global_top_of_abs_grad_times_weight_then_trains_the_fixed_mask():
    model = _model()
    names = ["0.weight", "2.weight"]
    x, y = _batches()[0]
    params = [model.get_parameter(n) for n in names]
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), params)
    expected = _global_top({n: (g * p).abs().detach() for n, p, g in zip(names, params, grads)},
                           round(0.2 * (48 + 24)))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    method = create("snip", model, opt, density=0.2)
    assert method.density() == 1.0  # dense until prepare
    with pytest.raises(UserError, match="call prepare"):
        method.step()
    method.prepare(iter(_batches()))
    masks = {w.name: w.mask.clone() for w in method.weights}
    assert all(torch.equal(masks[n], expected[n]) for n in names)
    assert method.current_targets() == {n: int(expected[n].sum()) for n in names}
    assert method.itop_rate() == pytest.approx(0.2, abs=1 / 72)
    for xb, yb in _batches(1, 3):  # training does not move the mask; pruned weights stay 0
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        method.step()
    for w in method.weights:
        assert torch.equal(w.mask, masks[w.name]) and w.parameter[~w.mask].eq(0).all()
    method.prepare(iter(_batches(5)))  # a second call is a no-op
    assert all(torch.equal(w.mask, masks[w.name]) for w in method.weights)


def test_prune_batches_are_joined_and_batches_are_required_for_data_criteria():
    joined = _batches(0, 2)
    x = torch.cat([b[0] for b in joined])
    y = torch.cat([b[1] for b in joined])
    a = create("snip", _model(), density=0.3, prune_batches=2)
    a.prepare(iter(joined))
    b = create("snip", _model(), density=0.3)
    b.prepare(iter([(x, y)]))
    assert all(torch.equal(wa.mask, wb.mask) for wa, wb in zip(a.weights, b.weights))
    with pytest.raises(UserError, match="needs training batches"):
        create("grasp", _model(), density=0.3).prepare(None)
    create("pai", _model(), density=0.3, criterion="magnitude").prepare(None)  # data-free is fine


def test_synflow_iterates_100_rounds_on_an_exponential_schedule_and_ignores_the_data():
    assert SynFlow(_model(), density=0.1).config.rounds == 100
    method = create("synflow", _model(), density=0.1, rounds=4)
    assert [method.round_density(r) for r in range(1, 5)] == pytest.approx([0.1 ** (r / 4) for r in range(1, 5)])
    method.prepare(iter(_batches(0)))
    other = create("synflow", _model(), density=0.1, rounds=4)
    other.prepare(iter([(torch.randn(3, 6) * 50, torch.zeros(3, dtype=torch.long))]))
    assert all(torch.equal(a.mask, b.mask) for a, b in zip(method.weights, other.weights))
    assert sum(w.active for w in method.weights) == round(0.1 * 72)
    one_shot = create("synflow", _model(), density=0.1, rounds=1)
    one_shot.prepare(iter(_batches(0)))
    assert sum(w.active for w in one_shot.weights) == round(0.1 * 72)


def test_linear_round_schedule_and_layer_allocation():
    method = create("pai", _model(), density=0.25, criterion="magnitude", rounds=2,
                    round_schedule="linear", ranking="layer", distribution="uniform")
    assert method.round_density(1) == pytest.approx(0.625)
    original = _model()
    method.prepare(None)
    assert {w.name: w.active for w in method.weights} == {"0.weight": 12, "2.weight": 6}
    for w in method.weights:  # magnitude within each layer: the kept are the largest
        expected = topk_mask(original.get_parameter(w.name).detach().abs(), w.active)
        assert torch.equal(w.mask, expected)


def test_state_dict_restores_prepared_targets():
    method = create("pai", _model(), density=0.3, criterion="magnitude", ranking="global")
    method.prepare(None)
    state = method.state_dict()
    fresh = PaI(_model(), density=0.3, criterion="magnitude", ranking="global")
    fresh.load_state_dict(state)
    assert fresh.prepared and fresh.current_targets() == method.current_targets()
    fresh.prepare(iter(_batches()))  # no-op after a resume


def _bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def _snip_masks_by_hand(mode, x, y, density):
    """SNIP's global top-k of |g * w| with the network in ``mode``, on a fresh copy of _bn_model."""
    model = _bn_model().train(mode == "train")
    names = ["0.weight", "3.weight"]
    params = [model.get_parameter(n) for n in names]
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), params)
    return _global_top({n: (g * p).abs().detach() for n, p, g in zip(names, params, grads)},
                       round(density * (48 + 24)))


@pytest.mark.parametrize("method_name", ["snip", "grasp", "pai"])
def test_bn_mode_defaults_to_eval_as_synaptic_flow(method_name):
    from sparsetrain.algorithms.pai import PaIConfig
    assert PaIConfig.__dataclass_fields__["bn_mode"].default == "eval"
    method = create(method_name, _bn_model(), density=0.3)
    assert method.config.bn_mode == "eval"


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_snip_scores_in_the_chosen_batch_norm_mode_and_leaves_the_model_as_it_was(mode):
    g = torch.Generator().manual_seed(3)
    x, y = 2 + 3 * torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
    expected = _snip_masks_by_hand(mode, x, y, 0.3)
    other = _snip_masks_by_hand("train" if mode == "eval" else "eval", x, y, 0.3)
    assert any(not torch.equal(expected[n], other[n]) for n in expected)  # the mode matters here
    model = _bn_model().train()  # as under the Trainer
    bn = model[1]
    method = create("snip", model, density=0.3, bn_mode=mode)
    method.prepare(iter([(x, y)]))
    assert all(torch.equal(w.mask, expected[w.name]) for w in method.weights)
    assert model.training and bn.training
    assert torch.equal(bn.running_mean, torch.zeros(8)) and torch.equal(bn.running_var, torch.ones(8))
    assert int(bn.num_batches_tracked) == 0


def test_bad_bn_mode_is_a_config_error():
    with pytest.raises(UserError, match="bn_mode"):
        create("snip", _bn_model(), density=0.3, bn_mode="as_is")
