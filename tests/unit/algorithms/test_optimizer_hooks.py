"""A method attached to an optimizer runs from the optimizer's step hook, in any loop."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparsetrain as st


def net(dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).to(dtype)


def batches(n, size=8, dtype=torch.float32):
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(size, 6, generator=gen, dtype=dtype), torch.randint(0, 3, (size,), generator=gen))
            for _ in range(n)]


def rigl(model, opt, steps=12, backend="masked"):
    return st.RigL(model, opt, density=0.3, total_steps=steps, update_interval=2, drop_fraction=0.5,
                   distribution="uniform", backend=backend)


def check_invariants(sp):
    """Pruned weights and their optimizer state exactly 0; every layer holds its target."""
    for w in sp.weights:
        assert int(w.mask.sum()) == sp.targets[w.name]
        assert not w.values[~w.mask].any()
        for value in sp.optimizer.state[w.parameter].values():
            if torch.is_tensor(value) and value.shape == w.shape:
                assert not value[~w.mask].any()


def train(driver, opt_class=torch.optim.SGD, clip=None, backend="masked", **opt_options):
    """Train RigL on a fixed data stream; ``driver`` 'method' calls sparsifier.step(), 'optimizer'
    calls optimizer.step() and lets the hook run the method."""
    model = net()
    opt = opt_class(model.parameters(), lr=0.05, **opt_options)
    sp = rigl(model, opt, backend=backend)
    for x, y in batches(12):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        (sp.step if driver == "method" else opt.step)()
        check_invariants(sp)
    return sp, model


@pytest.mark.parametrize("opt_class,options", [(torch.optim.SGD, {"momentum": 0.9, "weight_decay": 1e-3}),
                                               (torch.optim.AdamW, {})])
def test_plain_optimizer_step_equals_sparsifier_step(opt_class, options):
    a, model_a = train("method", opt_class, **options)
    b, model_b = train("optimizer", opt_class, **options)
    assert b.step_count == 12 and a.step_count == 12
    for wa, wb in zip(a.weights, b.weights):
        assert torch.equal(wa.mask, wb.mask)
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)


def test_plain_optimizer_step_drives_the_sparse_backend_too():
    a, model_a = train("method", backend="sparse", momentum=0.9)
    b, model_b = train("optimizer", backend="sparse", momentum=0.9)
    assert b.step_count == 12
    for wa, wb in zip(a.weights, b.weights):
        assert torch.equal(wa.mask, wb.mask)
        torch.testing.assert_close(wa.values, wb.values)


def test_clipping_before_the_step_is_what_rigl_reads():
    a, model_a = train("method", clip=0.05, momentum=0.9)
    b, model_b = train("optimizer", clip=0.05, momentum=0.9)
    for wa, wb in zip(a.weights, b.weights):
        assert torch.equal(wa.mask, wb.mask)


def test_grad_scaler_skipping_a_step_skips_the_method():
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sp = rigl(model, opt)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    data = batches(6)
    for i, (x, y) in enumerate(data):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        if i == 3:  # an update step of the schedule (steps 2, 4, ...): inject an overflow
            model[2].weight.grad[0, 0] = float("inf")
            before = ([p.detach().clone() for p in model.parameters()], [w.mask.clone() for w in sp.weights])
        scaler.step(opt)
        scaler.update()
        if i == 3:
            assert sp.step_count == 3  # neither the optimizer nor the method stepped
            assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before[0]))
            assert all(torch.equal(w.mask, m) for w, m in zip(sp.weights, before[1]))
            assert scaler.get_scale() == 2.0 ** 7
        check_invariants(sp)
    assert sp.step_count == 5
    assert any(not torch.equal(w.mask, m) for w, m in zip(sp.weights, before[1]))  # the next update ran


def test_accumulating_four_micro_batches_equals_one_large_batch():
    big = batches(8, size=16, dtype=torch.float64)
    runs = []
    for micro in (1, 4):
        model = net(torch.float64)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        sp = rigl(model, opt, steps=8)
        for x, y in big:
            opt.zero_grad()
            for xs, ys in zip(x.chunk(micro), y.chunk(micro)):
                (F.cross_entropy(model(xs), ys) / micro).backward()
            opt.step()
            check_invariants(sp)
        runs.append((sp, model))
    (a, model_a), (b, model_b) = runs
    assert a.step_count == b.step_count == 8
    for wa, wb in zip(a.weights, b.weights):
        assert torch.equal(wa.mask, wb.mask)
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(pa, pb)


def test_a_new_method_on_the_same_optimizer_replaces_the_old_hook_and_remove_hook_stops_it():
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    first = st.Static(model, opt, density=0.5)
    second = st.Static(model, opt, density=0.5)
    x, y = batches(1)[0]
    F.cross_entropy(model(x), y).backward()
    opt.step()
    assert (first.step_count, second.step_count) == (0, 1)
    second.step()  # the explicit call steps once, not twice through the hook
    assert second.step_count == 2
    second.remove_hook()
    opt.step()
    assert second.step_count == 2
