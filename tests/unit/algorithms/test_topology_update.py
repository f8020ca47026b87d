"""Topology updates on sorted flat positions: the same masks, values and optimizer state on
both backends, state that moves with its weight, exact RigL growth, and the ITOP map kept
as retired positions (hand-checked on tiny layers)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsetrain.algorithms import create


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 20), nn.ReLU(), nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 3)).double()


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 12, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g)


def _dense(w, t):
    """A per-active-weight tensor of either backend as a dense tensor of the weight's shape."""
    if t.shape == w.shape:
        return t.detach().clone()
    out = torch.zeros(w.numel, dtype=t.dtype)
    out[w.active_index()] = t.detach()
    return out.view(w.shape)


def _run(backend, method, optimizer, **options):
    model = _model()
    opt = (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if optimizer == "sgd"
           else torch.optim.Adam(model.parameters(), lr=0.01))
    m = create(method, model, opt, density=0.25, distribution="uniform", backend=backend, seed=3,
               total_steps=40, update_interval=3, drop_fraction=0.4, anneal="constant", **options)
    x, y = _data()
    snapshots = []
    for _ in range(13):  # four updates
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        m.step()
        snapshots.append([(w.mask.clone(), _dense(w, w.parameter),
                           {k: _dense(w, v) for k, v in opt.state[w.parameter].items() if v.dim()})
                          for w in m.weights])
    return snapshots, m


@pytest.mark.parametrize("options", [{}, {"ranking": "global"}, {"grow_unactivated_only": True}])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("method", ["set", "rigl"])
def test_masked_and_sparse_give_identical_masks_values_and_state(method, optimizer, options):
    masked, m_masked = _run("masked", method, optimizer, **options)
    sparse, m_sparse = _run("sparse", method, optimizer, **options)
    for step_m, step_s in zip(masked, sparse):
        for (mask_m, value_m, state_m), (mask_s, value_s, state_s) in zip(step_m, step_s):
            assert torch.equal(mask_m, mask_s)
            torch.testing.assert_close(value_s, value_m, rtol=0, atol=1e-12)
            assert state_m.keys() == state_s.keys() and state_m
            for key in state_m:
                torch.testing.assert_close(state_s[key], state_m[key], rtol=0, atol=1e-12)
    assert not torch.equal(masked[0][0][0], masked[-1][0][0])  # the topology moved
    assert m_masked.retired.keys() == m_sparse.retired.keys()
    assert all(torch.equal(m_masked.retired[k].positions(), m_sparse.retired[k].positions())
               for k in m_masked.retired)
    assert m_masked.itop_rate() == m_sparse.itop_rate() > m_masked.density()


def _tiny(method, backend, **options):
    model = nn.Sequential(nn.Linear(4, 2, bias=False))
    opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
    s = create(method, model, opt, density=0.5, distribution="uniform", backend=backend, update_interval=1,
               anneal="constant", stop_fraction=1.0, total_steps=10, drop_fraction=0.5, **options)
    w = s.weights[0]
    mask = torch.tensor([[True, True, True, False], [True, False, False, True]])
    w.set_mask(mask)
    w.load_dense(torch.tensor([[0.9, -0.1, 0.5, 0.0], [-0.3, 0.0, 0.0, 0.2]]))
    s.ever_active = {w.name: mask}
    return s, model, opt, w


@pytest.mark.parametrize("backend", ["masked", "sparse"])
def test_momentum_moves_with_its_weight_and_grown_weights_start_at_zero(backend):
    s, model, opt, w = _tiny("set", backend)
    # momentum 1, 2, 3, 4 on the active weights (0,0) (0,1) (0,2) (1,0) (1,3) in row-major order
    momentum = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 0.0, 0.0, 5.0]])
    opt.state[w.parameter]["momentum_buffer"] = momentum.reshape(-1)[w.active_index()].clone() \
        if backend == "sparse" else momentum.clone()
    before = w.active_index().clone()
    # keep |w| = 0.9, 0.5, 0.3 (drop 0.1 at (0,1) and 0.2 at (1,3)); grow (0,3) and (1,1)
    keep = torch.tensor([True, False, True, True, False])
    grown = torch.tensor([3, 5])
    w.rewire_flat(keep, grown, opt)
    assert before.tolist() == [0, 1, 2, 4, 7]
    assert w.active_index().tolist() == [0, 2, 3, 4, 5]
    assert torch.equal(_dense(w, w.parameter), torch.tensor([[0.9, 0.0, 0.5, 0.0], [-0.3, 0.0, 0.0, 0.0]]))
    assert torch.equal(_dense(w, opt.state[w.parameter]["momentum_buffer"]),
                       torch.tensor([[1.0, 0.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0]]))
    assert w.mask.tolist() == [[True, False, True, True], [True, True, False, False]]


@pytest.mark.parametrize("backend", ["masked", "sparse"])
def test_rigl_grows_the_largest_gradients_outside_the_kept_weights(backend):
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(30, 40), nn.ReLU(), nn.Linear(40, 5))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    m = create("rigl", model, opt, density=0.2, distribution="uniform", backend=backend, total_steps=20,
               update_interval=1, drop_fraction=0.3, anneal="constant", stop_fraction=1.0)
    x, y = torch.randn(32, 30), torch.randint(0, 5, (32,))
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        before = {w.name: (w.mask.clone(), w.values.clone()) for w in m.weights}
        grads = m._dense_grads()
        opt.step()
        m.step_count += 1
        after_step = {w.name: w.values.clone() for w in m.weights}
        m.update_topology(grads)
        m._arm_dense_grads()
        for w in m.weights:
            mask, _ = before[w.name]
            active = int(mask.sum())
            n_drop = int(0.3 * active)
            # brute force: keep the (active - n_drop) largest |w| (stable: ties to the lower
            # position), then the n_drop largest |g| among the rest
            flat_w = after_step[w.name].reshape(-1).abs().float()
            act = torch.nonzero(mask.reshape(-1)).reshape(-1)
            order = torch.argsort(flat_w[act], descending=True, stable=True)
            kept = act[order[: active - n_drop]]
            score = grads[w.name].reshape(-1).abs().float().clone()
            score[kept] = -1
            grown = torch.topk(score, n_drop).indices
            expected = torch.zeros(w.numel, dtype=torch.bool)
            expected[kept] = True
            expected[grown] = True
            assert torch.equal(w.mask.reshape(-1), expected)
            assert w.active == active
            new = grown[~mask.reshape(-1)[grown]]  # grown where inactive before (a weight just
            assert _dense(w, w.parameter).reshape(-1)[new].eq(0).all()  # dropped keeps its value)


def test_itop_map_by_hand_and_unexplored_growth():
    s, model, opt, w = _tiny("set", "sparse", grow_unactivated_only=True)
    assert s.itop_rate() == 5 / 8 and s.retired[w.name].positions().tolist() == []
    s.update_topology({})
    # drop |w| 0.0 at (0,1)? no: active values 0.9, -0.1, 0.5, -0.3, 0.2 -> drop int(0.5*5) = 2:
    # -0.1 at 1 and 0.2 at 7; grow 2 of the 3 never-active positions 3, 5, 6
    assert s.retired[w.name].positions().tolist() == [1, 7]
    grown = sorted(set(w.active_index().tolist()) - {0, 2, 4})
    assert len(grown) == 2 and set(grown) <= {3, 5, 6}
    assert s.itop_rate() == 7 / 8
    ever = s.ever_active[w.name].reshape(-1)
    assert ever.tolist() == [i in {0, 1, 2, 4, 7, *grown} for i in range(8)]
    # resume: the retired positions round-trip through the state dict
    state = s.state_dict()
    s2, *_ = _tiny("set", "sparse", grow_unactivated_only=True)
    s2.weights[0].set_mask(w.mask)
    s2.load_state_dict(state)
    assert s2.retired[w.name].positions().tolist() == [1, 7] and s2.itop_rate() == 7 / 8
    # an old checkpoint with a dense ever_active map converts to the same retired positions
    s3, *_ = _tiny("set", "sparse", grow_unactivated_only=True)
    s3.weights[0].set_mask(w.mask)
    s3.load_state_dict({"step": state["step"], "ever_active": {w.name: ever.view(2, 4).clone()}})
    assert s3.retired[w.name].positions().tolist() == [1, 7] and s3.itop_rate() == 7 / 8
    # next update: keep |w| 0.9, 0.5, 0.3 (the grown weights are 0), grow 2; only one
    # never-active position is left, so growth falls back to every position not kept
    s.update_topology({})
    active = set(w.active_index().tolist())
    assert len(active) == 5 and {0, 2, 4} <= active
    retired = ({1, 7} | set(grown)) - active
    assert s.retired[w.name].positions().tolist() == sorted(retired)
    assert s.itop_rate() == len(active | retired) / 8


def test_a_method_with_dense_scores_keeps_working():
    """A subclass written against dense scores: drop_scores(weight, grad) over the whole weight,
    grow_scores over every position (it grows by them, not at random)."""
    from sparsetrain.algorithms.dynamic import DynamicSparsifier

    class KeepSmall(DynamicSparsifier):
        name = "keep-small"

        def drop_scores(self, weight, grad):
            return -weight.values.abs()  # keep the smallest magnitudes

        def grow_scores(self, weight, grad, gen):
            return torch.arange(weight.numel, dtype=torch.float32).view(weight.shape)  # last first

    assert KeepSmall.grow_rule == "scores"
    for backend in ("masked", "sparse"):
        model = nn.Sequential(nn.Linear(4, 2, bias=False))
        opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
        s = KeepSmall(model, opt, density=0.5, distribution="uniform", backend=backend, update_interval=1,
                      anneal="constant", stop_fraction=1.0, total_steps=10, drop_fraction=0.5)
        w = s.weights[0]
        w.set_mask(torch.tensor([[True, True, True, False], [True, False, False, False]]))
        w.load_dense(torch.tensor([[0.9, -0.1, 0.5, 0.0], [-0.3, 0.0, 0.0, 0.0]]))
        s.update_topology({})
        # 4 active, drop int(0.5 * 4) = 2 of the largest |w| (0.9, 0.5); grow the 2 highest
        # positions not kept: 7 and 6
        assert w.active_index().tolist() == [1, 4, 6, 7], backend
