"""The sparse backend against the masked one: same losses and masks, aligned optimizer state,
conversion both ways with optimizer state, checkpoints, export round trip."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsetrain.algorithms import create
from sparsetrain.backends import sparse as sparse_backend
from sparsetrain.backends.export import export_model, load_exported
from sparsetrain.backends.sparse import SparseLayer, SparseLinear, to_masked, to_sparse


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3)).double()


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(24, 20, generator=g, dtype=torch.float64), torch.randint(0, 3, (24,), generator=g)


def _train(backend, method, steps=50, optimizer="sgd", density=0.1, **options):
    model = _model()
    opt = (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4) if optimizer == "sgd"
           else torch.optim.Adam(model.parameters(), lr=0.01))
    extra = {} if method == "static" else dict(total_steps=steps, update_interval=5, drop_fraction=0.5)
    if method == "mest":  # in steps, on every layer, as the other methods here
        extra.update(interval_unit="steps", dense_first=False, dense_last=False)
    m = create(method, model, opt, density=density, distribution="uniform", backend=backend, seed=7,
               **extra, **options)
    x, y = _data()
    losses, masks = [], []
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        m.step()
        losses.append(loss.item())
        masks.append([w.mask.clone() for w in m.weights])
    return losses, masks, m, opt


@pytest.mark.parametrize("break_even", [0.15, 0.01])  # sparse kernels / dense fallback
@pytest.mark.parametrize("method", ["static", "set", "rigl", "mest"])
def test_sparse_backend_matches_masked_over_50_steps(method, break_even, monkeypatch):
    monkeypatch.setattr(sparse_backend, "BREAK_EVEN", break_even)
    loss_m, masks_m, method_m, _ = _train("masked", method)
    loss_s, masks_s, method_s, _ = _train("sparse", method)
    assert all(isinstance(w.module, SparseLayer) for w in method_s.weights)
    assert max(abs(a - b) for a, b in zip(loss_m, loss_s)) < 1e-4
    for step_m, step_s in zip(masks_m, masks_s):  # after every update (10 of them), the same masks
        assert all(torch.equal(a, b) for a, b in zip(step_m, step_s))
    if method != "static":  # the topology really moved
        assert not all(torch.equal(a, b) for a, b in zip(masks_m[0], masks_m[-1]))
    for wm, ws in zip(method_m.weights, method_s.weights):
        assert ws.parameter.numel() == ws.active == int(wm.mask.sum())
        torch.testing.assert_close(ws.values, wm.values, rtol=0, atol=1e-9)


def test_adam_state_moves_with_the_weights():
    loss_m, _, _, opt_m = _train("masked", "set", steps=20, optimizer="adam")
    loss_s, _, m_s, opt_s = _train("sparse", "set", steps=20, optimizer="adam")
    assert max(abs(a - b) for a, b in zip(loss_m, loss_s)) < 1e-9
    dense_state = [opt_m.state[p] for p in opt_m.param_groups[0]["params"]]
    for w in m_s.weights:
        state = opt_s.state[w.parameter]
        name = w.name
        index = [n for n, _ in _model().named_parameters()].index(name)
        for key in ("exp_avg", "exp_avg_sq"):
            expected = dense_state[index][key].reshape(-1)[w.module.flat_index()]
            torch.testing.assert_close(state[key], expected, rtol=0, atol=1e-12)


def test_set_update_keeps_momentum_with_its_weight_and_zeroes_grown():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    m = create("set", model, opt, density=0.2, distribution="uniform", backend="sparse", total_steps=100,
               update_interval=3, drop_fraction=0.5, seed=1)
    x, y = _data()
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        m.step()
    w = m.weights[1]
    layer = w.module

    def dense(t):
        out = torch.zeros(layer.rows * layer.cols, dtype=t.dtype)
        out[layer.flat_index()] = t
        return out.view(layer.weight_shape)

    before_mask = w.mask
    before_w, before_mom = dense(layer.values.detach()), dense(opt.state[w.parameter]["momentum_buffer"])
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    m.step()  # step 3: optimizer step, then a SET update
    after_mask = w.mask
    assert not torch.equal(before_mask, after_mask)
    kept = before_mask & after_mask
    grown = after_mask & ~before_mask
    momentum = dense(opt.state[w.parameter]["momentum_buffer"])
    values = dense(layer.values.detach())
    assert grown.any() and kept.any()
    assert momentum[grown].eq(0).all() and values[grown].eq(0).all()
    # a weight dropped and grown back in the same update restarts at 0 with zero momentum
    regrown = kept & values.eq(0) & momentum.eq(0)
    survived = kept & ~regrown
    assert int(survived.sum()) >= int(before_mask.sum()) // 2 - int(regrown.sum())
    # a surviving weight moved by exactly -lr * its own momentum: value and momentum are aligned
    torch.testing.assert_close(values[survived], before_w[survived] - 0.1 * momentum[survived], rtol=0, atol=1e-12)
    assert not torch.allclose(momentum[survived], 0.9 * before_mom[survived])  # a gradient was added


def test_dense_gradient_is_recorded_only_before_update_steps():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    m = create("rigl", model, opt, density=0.1, distribution="uniform", backend="sparse", total_steps=100,
               update_interval=4)
    x, y = _data()
    armed = []
    for _ in range(8):
        armed.append([w.module.capture for w in m.weights])
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        m.step()
        assert all(w.module.captured is None for w in m.weights)  # released after use
    assert [a[0] for a in armed] == [False, False, False, True, False, False, False, True]


def test_rigl_dense_gradient_equals_the_masked_one():
    m_masked = create("rigl", _model(), None, density=0.1, distribution="uniform", total_steps=10, update_interval=1)
    m_sparse = create("rigl", _model(), None, density=0.1, distribution="uniform", backend="sparse",
                      total_steps=10, update_interval=1)
    x, y = _data()
    for m in (m_masked, m_sparse):
        F.cross_entropy(m.model(x), y).backward()
    for a, b in zip(m_masked.weights, m_sparse.weights):
        torch.testing.assert_close(b.dense_grad(), a.dense_grad(), rtol=0, atol=1e-12)


def test_masked_to_sparse_and_back_moves_optimizer_state():
    loss_ref, _, _, _ = _train("masked", "static", steps=10)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    create("static", model, opt, density=0.1, distribution="uniform", seed=7)
    x, y = _data()
    losses = []

    def step():  # what Static.step does on either backend: no update of inactive weights
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        for mod in model.modules():
            if not isinstance(mod, SparseLayer) and hasattr(mod, "weight_mask"):
                mod.weight.grad.masked_fill_(~mod.weight_mask, 0)
        opt.step()
        losses.append(loss.item())

    masked = ["0", "2", "4"]
    for i in range(10):
        if i in (2, 6):
            masks = {n: model.get_submodule(n).weight_mask.clone() for n in masked}
            weights = {n: model.get_submodule(n).weight.detach().clone() for n in masked}
            momentum = {n: opt.state[model.get_submodule(n).weight]["momentum_buffer"].clone() for n in masked}
            assert to_sparse(model, opt) == masked
            for n in masked:
                layer = model.get_submodule(n)
                assert isinstance(layer, SparseLinear) and layer.nnz == int(masks[n].sum())
                assert any(p is layer.values for p in opt.param_groups[0]["params"])
                assert torch.equal(opt.state[layer.values]["momentum_buffer"], momentum[n][masks[n]])
                assert torch.equal(layer.values.detach(), weights[n][masks[n]])
        if i in (4, 8):
            values = {n: model.get_submodule(n).values.detach().clone() for n in masked}
            momentum = {n: opt.state[model.get_submodule(n).values]["momentum_buffer"].clone() for n in masked}
            assert to_masked(model, opt) == masked
            for n in masked:
                layer = model.get_submodule(n)
                assert type(layer) is nn.Linear and torch.equal(layer.weight_mask, masks[n])
                assert torch.equal(layer.weight.detach()[masks[n]], values[n])
                assert layer.weight.detach()[~masks[n]].eq(0).all()
                assert torch.equal(opt.state[layer.weight]["momentum_buffer"][masks[n]], momentum[n])
        step()
    assert max(abs(a - b) for a, b in zip(loss_ref, losses)) < 1e-12


def test_checkpoint_round_trip_with_a_changed_number_of_weights():
    _, _, m, opt = _train("sparse", "mest", steps=12, optimizer="adam", density=0.2)
    state = {"model": m.model.state_dict(), "opt": opt.state_dict()}
    model = _model()
    opt2 = torch.optim.Adam(model.parameters(), lr=0.01)
    m2 = create("mest", model, opt2, density=0.2, distribution="uniform", backend="sparse", seed=7,
                total_steps=12, update_interval=5, drop_fraction=0.5, interval_unit="steps", dense_first=False,
                dense_last=False)
    model.load_state_dict(state["model"])
    opt2.load_state_dict(state["opt"])
    x, _ = _data()
    torch.testing.assert_close(model(x), m.model(x), rtol=0, atol=0)
    for a, b in zip(m.weights, m2.weights):
        assert a.active == b.active and torch.equal(a.mask, b.mask)


def _conv2d_net():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))


def _conv1d_net():
    return nn.Sequential(nn.Conv1d(1, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 34, 10))


@pytest.mark.parametrize("net, shape", [(_conv2d_net, (5, 1, 6, 6)), (_conv1d_net, (5, 1, 36))])
def test_export_round_trip_predicts_identically(tmp_path, net, shape):
    torch.manual_seed(0)
    model = net()
    create("set", model, None, density=0.3, backend="sparse", total_steps=10)
    x = torch.randn(shape)
    expected = model(x)
    folder = export_model(model, tmp_path / "exp")
    loaded = load_exported(folder, model=net())
    assert isinstance(loaded[0], SparseLayer) and isinstance(loaded[3], SparseLayer)
    assert [m.nnz for m in loaded if isinstance(m, SparseLayer)] == [m.nnz for m in model if isinstance(m, SparseLayer)]
    assert torch.equal(loaded(x), expected)
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.safetensors"]
