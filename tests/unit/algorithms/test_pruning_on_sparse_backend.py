"""Pruning methods give the same masks on the masked and the sparse backend.

The same method, model, seed and batches run once with ``backend="masked"`` and once with
``backend="sparse"``; masks must be equal position by position, the active values and
their momentum equal (up to float rounding of the two kernels), and a few masks are also
checked against an independent computation on a plain dense model.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsetrain.algorithms import create
from sparsetrain.backends.sparse import SparseLayer
from sparsetrain.criteria import score
from sparsetrain.sparse import topk_mask


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(24, 8), nn.ReLU(),
                         nn.Linear(8, 3))


def _batches(n=8):
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        x = torch.randn(12, 1, 8, generator=g)
        out.append((x, (x.sum(dim=(1, 2)) > 0).long() + (x[:, 0, 0] > 1).long()))
    return out


def _run(name, backend, steps=0, model=None, **options):
    model = _model() if model is None else model
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    method = create(name, model, opt, backend=backend, seed=1, total_steps=max(steps, 1), **options)
    data = _batches()
    method.prepare(iter(data))
    for x, y in data[:steps]:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        method.step()
    return method, opt


def _assert_same(masked, sparse):
    (m, m_opt), (s, s_opt) = masked, sparse
    assert all(isinstance(w.module, SparseLayer) for w in s.weights)
    for a, b in zip(m.weights, s.weights):
        assert a.name == b.name
        assert torch.equal(a.mask, b.mask), a.name
        assert b.parameter.numel() == int(b.mask.sum())
        assert torch.allclose(a.values, b.values, atol=1e-6)
        # per-weight optimizer state sits in the sparse values' order (row-major active positions)
        state_a, state_b = m_opt.state.get(a.parameter, {}), s_opt.state.get(b.parameter, {})
        assert state_a.keys() == state_b.keys()
        if "momentum_buffer" in state_a:
            assert torch.allclose(state_a["momentum_buffer"][a.mask], state_b["momentum_buffer"], atol=1e-6)


def _global_top(scores, k):
    flat = torch.cat([s.reshape(-1) for s in scores])
    keep = topk_mask(flat, k)
    return list(keep.split([s.numel() for s in scores]))


def test_snip_masks_match_and_are_the_top_of_grad_times_weight():
    masked, sparse = _run("snip", "masked", density=0.3), _run("snip", "sparse", density=0.3)
    _assert_same(masked, sparse)
    model = _model()  # by hand: global top round(0.3 N) of |dL/dw * w| on the first batch
    x, y = _batches()[0]
    weights = [model[0].weight, model[3].weight, model[5].weight]
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), weights)
    expected = _global_top([(g * w).abs().detach() for g, w in zip(grads, weights)],
                           round(0.3 * sum(w.numel() for w in weights)))
    for w, e in zip(sparse[0].weights, expected):
        assert torch.equal(w.mask.reshape(-1), e)


@pytest.mark.parametrize("name, options", [
    ("grasp", {}),
    ("synflow", {"rounds": 3}),
    ("pai", {"criterion": "taylor", "ranking": "layer", "distribution": "erk"}),
])
def test_pruning_at_init_masks_match(name, options):
    _assert_same(_run(name, "masked", steps=2, density=0.3, **options),
                 _run(name, "sparse", steps=2, density=0.3, **options))


def test_gmp_masks_values_and_momentum_match_through_training():
    options = dict(density=0.25, update_interval=2, stop_fraction=0.8, ranking="global")
    masked, sparse = _run("gmp", "masked", steps=8, **options), _run("gmp", "sparse", steps=8, **options)
    assert sum(w.active for w in sparse[0].weights) == round(0.25 * sum(w.numel for w in sparse[0].weights))
    _assert_same(masked, sparse)


def test_granet_masks_match_through_pruning_and_regrowth():
    options = dict(density=0.2, initial_density=0.6, update_interval=2, prune_stop_fraction=0.8)
    _assert_same(_run("granet", "masked", steps=8, **options), _run("granet", "sparse", steps=8, **options))


@pytest.mark.parametrize("name", ["prune-global", "prune-layer", "prune-lamp", "prune-dp"])
def test_after_training_masks_match(name):
    options = {"dp_levels": 5, "dp_calibration": 24} if name == "prune-dp" else {}
    _assert_same(_run(name, "masked", steps=2, density=0.3, **options),
                 _run(name, "sparse", steps=2, density=0.3, **options))


def test_masked_checkpoint_loads_into_sparse_layers_and_rewinds(tmp_path):
    trained, _ = _run("gmp", "masked", steps=8, density=0.5, update_interval=2, stop_fraction=0.8)
    torch.save({"model": trained.model.state_dict()}, tmp_path / "last.pt")  # dense weights + weight_mask
    start = _model().state_dict()
    runs = {b: _run("imp", b, density=0.25, checkpoint=str(tmp_path / "last.pt"), rewind_to="init")
            for b in ("masked", "sparse")}
    _assert_same(runs["masked"], runs["sparse"])
    previous = {w.name: w.mask for w in trained.weights}
    for w in runs["sparse"][0].weights:  # nested in the checkpoint's mask, values rewound to the init
        assert not (w.mask & ~previous[w.name]).any()
        assert torch.equal(w.values, start[w.name] * w.mask)
    # the kept weights are the globally largest |w| of the checkpoint (among its active ones)
    checkpoint = [trained.model.get_parameter(w.name).detach().abs() for w in trained.weights]
    expected = _global_top(checkpoint, round(0.25 * sum(c.numel() for c in checkpoint)))
    for w, e in zip(runs["sparse"][0].weights, expected):
        assert torch.equal(w.mask.reshape(-1), e)


@pytest.mark.parametrize("criterion", ["magnitude", "random", "gradient", "taylor", "snip", "grasp",
                                       "synflow", "lamp"])
def test_every_criterion_scores_sparse_weights_as_masked_ones_mid_training(criterion):
    """Scores of a trained sparse model (with a backward captured for RigL) equal the masked
    model's: same finite scores, -inf at the same pruned positions; the model is unchanged."""
    x, y = _batches()[0]
    scores = {}
    for backend in ("masked", "sparse"):
        method, opt = _run("static", backend, steps=2, density=0.3)
        for w in method.weights:
            w.want_dense_grad(True)
        F.cross_entropy(method.model(x), y).backward()
        before = {k: v.clone() for k, v in method.model.state_dict().items()}
        grads = [p.grad.clone() for p in method.model.parameters()]
        scores[backend] = score(criterion, method.model, (x, y), weights=method.weights, seed=4)
        assert all(torch.equal(v, method.model.state_dict()[k]) for k, v in before.items())
        assert all(torch.equal(g, p.grad) for g, p in zip(grads, method.model.parameters()))
        masks = {w.name: w.mask for w in method.weights}
    for name, s in scores["sparse"].items():
        m = scores["masked"][name]
        assert torch.equal(torch.isinf(s), ~masks[name]) and torch.equal(torch.isinf(m), ~masks[name])
        assert torch.allclose(s[masks[name]], m[masks[name]], rtol=1e-5, atol=1e-7)


def test_sparse_checkpoint_loads_like_the_masked_one(tmp_path):
    """A sparse-backend run's checkpoint (CSR entries) prunes to the same masks as the masked
    run's checkpoint of the same training, on both backends."""
    options = dict(density=0.5, update_interval=2, stop_fraction=0.8)
    for backend in ("masked", "sparse"):
        trained, _ = _run("gmp", backend, steps=8, **options)
        torch.save({"model": trained.model.state_dict()}, tmp_path / f"{backend}.pt")
    sparse_keys = torch.load(tmp_path / "sparse.pt", weights_only=True)["model"]
    assert "3.indptr" in sparse_keys and "3.weight" not in sparse_keys
    runs = {(b, c): _run("prune-global", b, density=0.25, checkpoint=str(tmp_path / f"{c}.pt"))
            for b in ("masked", "sparse") for c in ("masked", "sparse")}
    _assert_same(runs["masked", "masked"], runs["sparse", "sparse"])
    _assert_same(runs["masked", "sparse"], runs["sparse", "masked"])
    for a, b in zip(runs["masked", "masked"][0].weights, runs["masked", "sparse"][0].weights):
        assert torch.equal(a.mask, b.mask) and torch.allclose(a.values, b.values, atol=1e-6)


def test_checkpoint_masks_are_taken_only_for_the_layers_this_method_sparsifies(tmp_path):
    trained, _ = _run("static", "masked", steps=1, density=0.5)
    torch.save(trained.model.state_dict(), tmp_path / "w.pt")
    for backend in ("masked", "sparse"):
        method, _ = _run("prune-global", backend, density=0.4, dense_last=True, checkpoint=str(tmp_path / "w.pt"))
        assert [w.name for w in method.weights] == ["0.weight", "3.weight"]
        assert "5.weight_mask" not in method.model.state_dict()
        assert torch.equal(method.model[5].weight, trained.model[5].weight)  # dense, with its zeros
        for w in method.weights:
            assert not (w.mask & ~trained.weights[[v.name for v in trained.weights].index(w.name)].mask).any()
