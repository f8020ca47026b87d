"""SET, RigL and MEST updates, checked position by position against hand-made weights."""

import pytest
import torch
from torch import nn

import sparsetrain  # noqa: F401  (registers backends and methods)
from sparsetrain.algorithms import create
from sparsetrain.errors import UserError




MEST_AS_OTHERS = dict(interval_unit="steps", dense_first=False, dense_last=False)
"""MEST defaults to its reference's epochs and dense first/last layers; these tests share one setup."""


def _generic(method):
    return MEST_AS_OTHERS if method == "mest" else {}


def _sparsifier(method, weights, mask, **options):
    layer = nn.Linear(weights.shape[1], weights.shape[0], bias=False)
    opt = torch.optim.SGD(layer.parameters(), lr=0.0)  # lr 0: the weights stay as set
    defaults = dict(density=float(mask.float().mean()), distribution="uniform", update_interval=1,
                    anneal="constant", stop_fraction=1.0, total_steps=10)
    s = create(method, layer, opt, **{**defaults, **options})
    w = s.weights[0]
    w.set_mask(torch.zeros_like(mask))
    w.set_mask(mask)
    with torch.no_grad():
        layer.weight.copy_(weights * mask)
    s.ever_active = {w.name: mask}  # explored so far: the current mask
    return s, layer


WEIGHTS = torch.tensor([[0.9, -0.1, 0.5, 0.0],
                        [-0.3, 0.7, 0.0, 0.2],
                        [0.0, 0.05, -0.8, 0.6]])
MASK = torch.tensor([[True, True, True, False],
                     [True, True, False, True],
                     [False, True, True, False]])  # 8 active of 12


def test_set_drops_exactly_the_k_smallest_magnitude_active_weights():
    s, layer = _sparsifier("set", WEIGHTS, MASK, drop_fraction=0.5, grow_unactivated_only=True)
    layer.weight.grad = torch.zeros_like(layer.weight)
    s.step()
    # k = int(0.5 * 8) = 4 smallest |w| among active: 0.05, -0.1, 0.2, -0.3
    dropped = torch.zeros_like(MASK)
    dropped[2, 1] = dropped[0, 1] = dropped[1, 3] = dropped[1, 0] = True
    new = s.weights[0].mask
    assert torch.equal(new & MASK, MASK & ~dropped)
    # 4 grown among the 4 never-active positions (grow_unactivated_only), all starting at 0
    grown = new & ~MASK
    assert int(grown.sum()) == 4 and torch.equal(grown, ~MASK)
    assert layer.weight[grown].eq(0).all()
    assert torch.equal(layer.weight[MASK & ~dropped], WEIGHTS[MASK & ~dropped])


def test_rigl_grows_exactly_the_k_largest_gradient_positions_not_kept():
    s, layer = _sparsifier("rigl", WEIGHTS, MASK, drop_fraction=0.25)
    grad = torch.tensor([[0.0, 0.0, 0.0, 5.0],
                         [0.0, 0.0, 0.1, 0.0],
                         [3.0, 9.0, 0.0, 0.2]])
    layer.weight.grad = grad.clone()
    s.step()
    # k = int(0.25 * 8) = 2; dropped: |0.05| at (2,1) and |-0.1| at (0,1).
    # Not kept = 4 inactive + 2 dropped; largest |grad| there: (2,1)=9 (just dropped: it keeps
    # its value, as RigL's reference with reinit_when_same=False) and (0,3)=5 (new, at 0).
    new = s.weights[0].mask
    expected = MASK.clone()
    expected[0, 1] = False
    expected[0, 3] = True
    assert torch.equal(new, expected)
    assert layer.weight[0, 3] == 0 and layer.weight[2, 1] == 0.05


def test_after_every_step_pruned_weights_and_their_grads_are_zero():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    s = create("rigl", model, opt, density=0.3, update_interval=2, total_steps=20)
    for _ in range(20):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(8, 6)), torch.randint(0, 3, (8,))).backward()
        s.step()
        for w in s.weights:
            assert w.parameter[~w.mask].eq(0).all()
            assert w.parameter.grad[~w.mask].eq(0).all()


@pytest.mark.parametrize("method", ["set", "rigl", "mest"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_pruned_and_grown_weights_have_zero_optimizer_state(method, optimizer):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = (torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9) if optimizer == "sgd"
           else torch.optim.Adam(model.parameters(), lr=0.01))
    s = create(method, model, opt, density=0.3, update_interval=5, drop_fraction=0.5, total_steps=40,
               **_generic(method))
    for step in range(1, 21):
        before = {w.name: w.mask.clone() for w in s.weights}
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(8, 6)), torch.randint(0, 3, (8,))).backward()
        s.step()
        for w in s.weights:
            grown = w.mask & ~before[w.name]
            state = [v for v in opt.state[w.parameter].values() if v.shape == w.shape]
            assert state, "the optimizer keeps per-weight state"
            for value in state:
                assert value[~w.mask].eq(0).all()
                assert value[grown].eq(0).all()
            if step % 5 == 0:
                assert grown.any(), "an update step grows weights"


@pytest.mark.parametrize("method", ["static", "set", "rigl", "mest"])
@pytest.mark.parametrize("density", [0.05, 0.3, 0.8])
@pytest.mark.parametrize("ranking", ["layer", "global"])
def test_density_is_exact_after_every_update(method, density, ranking):
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8, 7), nn.Linear(7, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    options = {} if method == "static" else dict(update_interval=1, ranking=ranking, stop_fraction=0.5)
    s = create(method, model, opt, density=density, total_steps=30, **options, **_generic(method))
    total = sum(w.numel for w in s.weights)
    expected_total = round(density * total)
    for step in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(4, 1, 10)), torch.randint(0, 3, (4,))).backward()
        s.step()
        active = {w.name: w.active for w in s.weights}
        if method != "mest" or s.step_count >= 15:
            assert sum(active.values()) == expected_total
        if ranking == "layer" and (method != "mest" or s.step_count >= 15):
            assert active == s.targets


def test_itop_rate_never_decreases_and_exceeds_density_with_random_growth():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(10, 30), nn.ReLU(), nn.Linear(30, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    s = create("set", model, opt, density=0.1, update_interval=3, total_steps=60)
    rates = [s.itop_rate()]
    assert rates[0] == pytest.approx(s.density())
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(8, 10)), torch.randint(0, 4, (8,))).backward()
        s.step()
        rates.append(s.itop_rate())
    assert all(b >= a for a, b in zip(rates, rates[1:]))
    assert rates[-1] > 1.5 * s.density()


def test_same_seed_same_masks_different_seed_different_masks():
    def masks(seed):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(10, 30), nn.Linear(30, 4))
        s = create("set", model, torch.optim.SGD(model.parameters(), lr=0.1), density=0.2,
                   total_steps=10, seed=seed)
        return [w.mask.clone() for w in s.weights]
    assert all(torch.equal(a, b) for a, b in zip(masks(0), masks(0)))
    assert not all(torch.equal(a, b) for a, b in zip(masks(0), masks(1)))


def test_update_interval_in_epochs_counts_steps_per_epoch():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    s = create("set", model, opt, density=0.3, update_interval=2, interval_unit="epochs",
               steps_per_epoch=5, total_steps=40, drop_fraction=0.5, anneal="constant")
    changed_at = []
    for step in range(1, 41):
        before = [w.mask.clone() for w in s.weights]
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(8, 6)), torch.randint(0, 3, (8,))).backward()
        s.step()
        if any(not torch.equal(a, w.mask) for a, w in zip(before, s.weights)):
            changed_at.append(step)
    # every 2 epochs = 10 steps, until stop_fraction 0.75 * 40 = 30
    assert changed_at == [10, 20, 30]


def test_epoch_interval_without_steps_per_epoch_is_a_clear_error():
    model = nn.Linear(4, 2)
    with pytest.raises(UserError, match="steps_per_epoch"):
        create("rigl", model, torch.optim.SGD(model.parameters(), lr=0.1), interval_unit="epochs",
               total_steps=10)
    with pytest.raises(UserError, match="total_steps"):
        create("set", model, torch.optim.SGD(model.parameters(), lr=0.1))
