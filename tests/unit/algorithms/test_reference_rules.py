"""Dynamic methods against independent transcriptions of their reference code's update rules.

Each expected mask / value below is computed by a small re-statement of the reference's rule
(cited per test) on dense tensors, never by calling sparsetrain's own selection code.
"""

import math

import numpy as np

import torch
from torch import nn

import sparsetrain  # noqa: F401  (registers backends and methods)
from sparsetrain.algorithms import create

WEIGHTS = torch.tensor([[0.9, -0.1, 0.5, 0.0, 0.31],
                        [-0.3, 0.7, 0.0, 0.2, -0.62],
                        [0.0, 0.05, -0.8, 0.6, 0.44]])
MASK = torch.tensor([[True, True, True, False, True],
                     [True, True, False, True, False],
                     [False, True, True, True, True]])  # 11 active of 15
GRAD = torch.tensor([[0.0, 0.0, 0.0, 5.0, 0.3],
                     [0.0, 0.0, 0.1, 0.0, 7.0],
                     [3.0, 9.0, 0.0, 0.2, 0.0]])


def _layer(weights=WEIGHTS, mask=MASK):
    layer = nn.Linear(weights.shape[1], weights.shape[0], bias=False)
    with torch.no_grad():
        layer.weight.copy_(weights * mask)
    return layer


def _install(s, layer, mask, weights):
    w = s.weights[0]
    w.set_mask(mask)
    with torch.no_grad():
        layer.weight.copy_(weights * mask)
    s.ever_active = {w.name: mask}


def rigl_torch_update(weight, mask, grad, momentum, drop_fraction):
    """rigl-torch ``RigLScheduler._rigl_step`` (REINIT_WHEN_SAME = False) for one layer, restated:
    keep the n_ones - n_prune largest |w| (inactive weights are 0), grow the n_prune largest
    |grad| outside the kept set, zero weight and momentum of new connections, then mask both."""
    n_ones = int(mask.sum())
    n_prune = int(n_ones * drop_fraction)
    order = torch.argsort((weight * mask).abs().flatten(), descending=True, stable=True)
    kept = torch.zeros(mask.numel(), dtype=torch.bool)
    kept[order[:n_ones - n_prune]] = True
    score = grad.abs().flatten().clone()
    score[kept] = score.min() - 1
    grown = torch.zeros_like(kept)
    grown[torch.argsort(score, descending=True, stable=True)[:n_prune]] = True
    new = (grown & ~mask.flatten()).view(mask.shape)
    new_mask = (kept | grown).view(mask.shape)
    weight = torch.where(new, torch.zeros_like(weight), weight) * new_mask
    momentum = torch.where(new, torch.zeros_like(momentum), momentum) * new_mask
    return new_mask, weight, momentum


def test_rigl_update_iteration_matches_the_reference_rule_and_skips_the_optimizer_step():
    layer = _layer()
    opt = torch.optim.SGD(layer.parameters(), lr=0.5, momentum=0.9)
    s = create("rigl", layer, opt, density=11 / 15, distribution="uniform", update_interval=1,
               anneal="constant", drop_fraction=0.3, stop_fraction=1.0, total_steps=10)
    _install(s, layer, MASK, WEIGHTS)
    momentum = torch.arange(15, dtype=torch.float32).view(3, 5) / 10 * MASK
    opt.state[layer.weight]["momentum_buffer"] = momentum.clone()
    layer.weight.grad = GRAD.clone()
    s.step()
    mask, weight, buf = rigl_torch_update(WEIGHTS * MASK, MASK, GRAD, momentum, 0.3)
    # int(0.3 * 11) = 3 dropped: -0.1 (0,1), 0.05 (2,1), 0.2 (1,3); grown: (2,1) grad 9 (just
    # dropped: keeps 0.05 and its momentum), (1,4) grad 7 and (0,3) grad 5 (new, at 0)
    assert mask[2, 1] and weight[2, 1] == 0.05 and buf[2, 1] == momentum[2, 1] != 0
    assert torch.equal(s.weights[0].mask, mask)
    assert torch.equal(layer.weight.detach(), weight)  # no SGD step on the update iteration
    assert torch.equal(opt.state[layer.weight]["momentum_buffer"], buf)


def test_rigl_options_restore_the_old_behaviour():
    layer = _layer()
    opt = torch.optim.SGD(layer.parameters(), lr=0.01)
    s = create("rigl", layer, opt, density=11 / 15, distribution="uniform", update_interval=1,
               anneal="constant", drop_fraction=0.3, stop_fraction=1.0, total_steps=10,
               reinit_when_same=True, skip_step_on_update=False)
    _install(s, layer, MASK, WEIGHTS)
    layer.weight.grad = GRAD.clone()
    s.step()
    stepped = (WEIGHTS - 0.01 * GRAD) * MASK  # the SGD step on the old mask, then the rewiring
    mask, kept_value, _ = rigl_torch_update(stepped, MASK, GRAD, torch.zeros(3, 5), 0.3)
    # int(0.3 * 11) = 3 dropped: -0.04 (2,1), -0.1 (0,1), 0.2 (1,3); grown by |grad|: (2,1) 9,
    # which was just dropped and restarts at 0 (reinit_when_same), (1,4) 7 and (0,3) 5
    assert mask[2, 1] and kept_value[2, 1] != 0
    expected = kept_value.clone()
    expected[2, 1] = 0.0
    assert torch.equal(s.weights[0].mask, mask)
    assert torch.allclose(layer.weight.detach(), expected)


def test_rigl_takes_the_optimizer_step_on_other_iterations():
    layer = _layer()
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    s = create("rigl", layer, opt, density=11 / 15, distribution="uniform", update_interval=2,
               drop_fraction=0.3, total_steps=10)
    _install(s, layer, MASK, WEIGHTS)
    layer.weight.grad = GRAD.clone()
    s.step()  # step 1: not an update
    assert torch.allclose(layer.weight.detach(), (WEIGHTS - 0.5 * GRAD) * MASK)


def test_granet_regrowth_rate_is_the_reference_cosine_decay_and_pruning_ends_at_half():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    s = create("granet", model, None, density=0.1, total_steps=40, update_interval=4)
    # the reference's CosineDecay: a CosineAnnealingLR(T_max = all steps, eta_min = 0.005) on a
    # dummy optimizer at lr = death rate 0.5, stepped once per training step before it is read
    dummy = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.5)
    stepper = torch.optim.lr_scheduler.CosineAnnealingLR(dummy, 40, eta_min=0.005)
    for t in range(1, 41):
        dummy.step()  # (a no-op: keeps torch from warning about the order)
        stepper.step()
        assert math.isclose(s.drop_schedule.at(t), dummy.param_groups[0]["lr"], rel_tol=1e-9, abs_tol=1e-12)
    assert s.pruning.end == 20  # final_prune_epoch 80 of 160 epochs


def _mest_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 12), nn.ReLU(), nn.Linear(12, 3))


def _top(values, k):
    """Reference pruning (``weight_pruning``, irregular, sp_lmd = 0): the k largest |w| stay."""
    order = torch.argsort(values.abs().flatten(), descending=True, stable=True)
    keep = torch.zeros(values.numel(), dtype=torch.bool)
    keep[order[:k]] = True
    return keep.view(values.shape)


def _mest_run(soft_bound):
    model = _mest_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)  # lr 0: weights stay as set
    s = create("mest", model, opt, density=0.2, total_steps=100, steps_per_epoch=10, seed=1,
               soft_bound=soft_bound)
    return model, opt, s


def test_mest_defaults_follow_the_released_code_and_mutate_at_the_start():
    _, _, s = _mest_run(soft_bound=True)
    # profiles: uniform, first conv and classifier dense; the mutation at epoch 0 grows
    # int(0.5 * 24) = 12 on top of the target 24 of the 120 middle weights
    assert [w.name for w in s.weights] == ["2.weight"] and s.targets == {"2.weight": 24}
    assert s.weights[0].active == 36 and s.config.grad_coeff == 0.0


def test_mest_soft_bound_update_prunes_to_target_by_magnitude_then_grows_at_random():
    model, opt, s = _mest_run(soft_bound=True)
    w, layer = s.weights[0], model[2]
    values = (torch.randperm(120, generator=torch.Generator().manual_seed(3)).float() + 1).view(12, 10) / 100
    with torch.no_grad():
        layer.weight.copy_(values * w.mask)
    opt.state[layer.weight]["momentum_buffer"] = torch.ones(12, 10) * w.mask
    x, y = torch.randn(4, 6), torch.randint(0, 3, (4,))
    for step in range(1, 51):  # the update at step 50 = the start of epoch 5
        before = w.mask.clone()
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        s.step()
    kept = _top(values * before, 24)
    grown = w.mask & ~kept
    assert torch.equal(w.mask & kept, kept) and int(grown.sum()) == 12 and w.active == 36
    assert torch.equal(layer.weight.detach()[kept], values[kept])
    assert layer.weight.detach()[grown].eq(0).all()
    assert opt.state[layer.weight]["momentum_buffer"][grown].eq(0).all()
    for step in range(51, 76):  # step 75 = 0.75 of training: the last prune, to the target
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        s.step()
    assert torch.equal(w.mask, kept)  # the grown weights are still at 0: pruned away
    assert s.current_targets() == {"2.weight": 24}


def test_mest_without_soft_bound_prunes_below_target_and_grows_back():
    model, opt, s = _mest_run(soft_bound=False)
    w, layer = s.weights[0], model[2]
    assert w.active == 24  # EM: prune to 24 - 12, grow 12 back
    values = (torch.randperm(120, generator=torch.Generator().manual_seed(4)).float() + 1).view(12, 10) / 100
    with torch.no_grad():
        layer.weight.copy_(values * w.mask)
    before = w.mask.clone()
    s.update_topology({})
    kept = _top(values * before, 12)
    assert w.active == 24 and torch.equal(w.mask & kept, kept) and int((w.mask & ~kept).sum()) == 12


def test_mest_mutation_schedule_is_the_scripts_bounds():
    model = _mest_model()
    s = create("mest", model, None, density=0.1, total_steps=160, steps_per_epoch=1)
    # EM&S script: lower (prune-to) sparsity 0.9, upper (grow-to) 0.85-0.875-0.9, stepping at
    # epochs 90 and 120, updates every 5 epochs at epoch start: grown = (0.9 - upper) / 0.1 x target
    for epoch in range(1, 160):
        due = epoch % 5 == 0 and epoch <= 120  # 125..155: the reference prunes to 0.9, grows 0: no-op
        assert s.schedule.is_update(epoch) == due
        if due:
            upper = [0.85, 0.875, 0.9][sum(epoch >= e for e in (90, 120))]
            assert math.isclose(s.drop_schedule.at(epoch), (0.9 - upper) / 0.1, abs_tol=1e-12)


def mocanu_rewire_core(weights, zeta):
    """dcmocanu/sparse-evolutionary-artificial-neural-networks ``rewireMask`` (the kept part,
    ``weightMaskCore``), restated with numpy on the dense matrix whose inactive entries are 0."""
    values = np.sort(weights.ravel())
    first_zero = np.abs(values).argmin()                                # find_first_pos(values, 0)
    last_zero = values.shape[0] - np.abs(values)[::-1].argmin()         # find_last_pos(values, 0)
    largest_negative = values[int((1 - zeta) * first_zero)]
    smallest_positive = values[int(min(values.shape[0] - 1, last_zero + zeta * (values.shape[0] - last_zero)))]
    return (weights > smallest_positive) | (weights < largest_negative)


def test_set_mocanu_removes_the_signed_fractions_of_the_reference():
    values = (torch.randperm(48, generator=torch.Generator().manual_seed(5)).float() - 23.5).view(6, 8) / 10
    mask = torch.rand(6, 8, generator=torch.Generator().manual_seed(6)) < 0.55
    mask[0, 0] = True
    values[0, 0] = 0.0  # an active weight at exactly 0: the reference removes it
    layer = _layer(values, mask)
    opt = torch.optim.SGD(layer.parameters(), lr=0.0, momentum=0.9)
    s = create("set-mocanu", layer, opt, density=float(mask.float().mean()), distribution="uniform",
               total_steps=10, steps_per_epoch=2)
    _install(s, layer, mask, values)
    core = torch.from_numpy(mocanu_rewire_core((values * mask).numpy(), 0.3))
    layer.weight.grad = torch.zeros(6, 8)
    s.step()
    assert torch.equal(s.weights[0].mask, mask)  # step 1: not the end of an epoch, no update yet
    layer.weight.grad = torch.zeros(6, 8)
    s.step()  # step 2: end of epoch 1, zeta = 0.3
    new = s.weights[0].mask
    assert int(new.sum()) == int(mask.sum()) and torch.equal(new & core, core)
    assert int((mask & ~core).sum()) >= 2 and layer.weight.detach()[new & ~core].eq(0).all()
    assert all(s.schedule.is_update(2 * e) and s.drop_schedule.at(2 * e) == 0.3 for e in range(1, 6))


def test_set_signed_rule_on_the_rigl_schedule():
    s = create("set", _layer(), None, density=11 / 15, distribution="uniform", drop_rule="signed",
               total_steps=10, update_interval=1)
    assert s.drop_schedule.at(1) < 0.3 and s.stop_step == 7  # cosine from 0.3, frozen at 75%


def test_unactivated_growth_takes_all_never_active_positions_first_then_the_rest():
    layer = _layer()
    s = create("rigl", layer, None, density=11 / 15, distribution="uniform", update_interval=1,
               anneal="constant", drop_fraction=0.5, stop_fraction=1.0, total_steps=10,
               grow_unactivated_only=True)
    _install(s, layer, MASK, WEIGHTS)
    fired = MASK.clone()
    fired[1, 2] = fired[2, 0] = True  # active once, inactive now: 2 of the 4 inactive never fired
    s.ever_active = {"weight": fired}
    layer.weight.grad = GRAD.clone()
    s.step()
    # ITOP ``random_unfired_growth`` when fewer unfired than needed: all unfired grow, then
    # the remaining int(0.5 * 11) - 2 = 3 by the growth rule (here |grad|) among the rest
    kept = _top(WEIGHTS * MASK, 6)
    unfired = ~fired
    rest = _top(GRAD.abs() * ~(kept | unfired), 3)  # the 3 largest |grad| are positive ones
    assert int(unfired.sum()) == 2 and int(rest.sum()) == 3
    assert torch.equal(s.weights[0].mask, kept | unfired | rest)


def test_granet_without_regrowth_needs_no_floor_setting():
    s = create("granet", nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)), None, density=0.1,
               total_steps=40, update_interval=4, drop_fraction=0.0)
    assert s.drop_schedule.at(4) == 0.0 and s.drop_schedule.at(40) == 0.0
