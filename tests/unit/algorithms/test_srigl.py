"""SRigL (Lasby et al. 2024; calgaryml/condensed-sparsity ``rigl_constant_fan.py``): constant fan-in,
exact layer counts, the salience rule and neuron ablation, checked against hand-computed masks."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparsetrain  # noqa: F401  (registers backends and methods)
from sparsetrain.algorithms import create
from sparsetrain.algorithms.srigl import SRigLConfig, neurons_to_ablate, salient_counts
from sparsetrain.distributions import allocate
from sparsetrain.errors import UserError


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3)), torch.randn(32, 12)


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 3)), torch.randn(32, 2, 6, 6)


def _fan_ins(w):
    """Active weights per output neuron: a Conv2d filter's fan-in is in x kh x kw."""
    return w.mask.reshape(w.shape[0], -1).sum(dim=1)


@pytest.mark.parametrize("build, backend, gamma_sal", [(_mlp, "masked", 0.3), (_cnn, "masked", 0.95),
                                                       (_mlp, "sparse", 0.95), (_cnn, "sparse", 0.3)])
def test_every_active_neuron_has_the_same_fan_in_and_the_layer_its_exact_count_after_every_update(
        build, backend, gamma_sal):
    model, x = build()
    y = torch.randint(0, 3, (x.shape[0],), generator=torch.Generator().manual_seed(1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    s = create("srigl", model, opt, density=0.3, total_steps=8, update_interval=1, drop_fraction=0.5,
               stop_fraction=1.0, gamma_sal=gamma_sal, ablate_last=True, backend=backend)
    shapes = {w.name: tuple(w.shape) for w in s.weights}
    budgets = allocate("erk", shapes, 0.3)
    ablated_seen = 0
    for _ in range(8):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        s.step()
        for w in s.weights:
            fan_ins = _fan_ins(w)
            alive = int((fan_ins > 0).sum())
            k = budgets[w.name] // alive  # the allocation spread over the neurons that are left
            assert fan_ins[fan_ins > 0].eq(k).all(), (w.name, fan_ins)
            assert w.active == k * alive == s.current_targets()[w.name]
            assert w.values[~w.mask].eq(0).all()
            ablated_seen += w.shape[0] - alive
    if gamma_sal == 0.95:  # a threshold this high ablates some neuron at some update
        assert ablated_seen > 0


def test_conv_fan_in_is_in_channels_times_kernel_from_the_allocation():
    model, _ = _cnn()
    s = create("srigl", model, None, density=0.25, distribution="uniform", total_steps=10, update_interval=1)
    conv, fc = s.weights
    # 6 x 2 x 3 x 3 = 108 weights x 0.25 = 27 -> 27 // 6 filters = 4 of the 18 = 2 x 3 x 3 per filter
    assert _fan_ins(conv).tolist() == [4] * 6 and conv.active == 24
    # 3 x 96 = 288 x 0.25 = 72 -> 24 per output neuron
    assert _fan_ins(fc).tolist() == [24] * 3 and fc.active == 72


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.attn(x, x, x, need_weights=False)[0].mean(1))


def test_q_k_v_of_a_fused_weight_each_keep_a_constant_fan_in_and_their_own_count():
    torch.manual_seed(0)
    model = _Attention()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    s = create("srigl", model, opt, density=0.3, total_steps=6, update_interval=1, stop_fraction=1.0,
               gamma_sal=0.95)
    budgets = allocate("erk", {**{f"q{i}": (16, 16) for i in range(3)}, "head": (3, 16)}, 0.3)
    gen = torch.Generator().manual_seed(1)
    for _ in range(6):
        opt.zero_grad()
        F.cross_entropy(model(torch.randn(8, 5, 16, generator=gen)), torch.randint(0, 3, (8,), generator=gen)).backward()
        s.step()
        for i, part in enumerate(model.attn.in_proj_weight_mask.chunk(3)):  # q, k, v: 16 neurons each
            fan_ins = part.sum(dim=1)
            alive = int((fan_ins > 0).sum())
            assert fan_ins[fan_ins > 0].eq(budgets[f"q{i}"] // alive).all()
            assert int(part.sum()) == s.part_targets["attn.in_proj_weight"][i] == budgets[f"q{i}"] // alive * alive


# --- the salience rule and ablation, by hand ------------------------------------------------------
def test_salience_is_the_union_of_top_magnitudes_and_top_gradients_over_every_position():
    magnitude = torch.tensor([[0.9, 0.8, 0.0, 0.0],
                              [0.7, 0.0, 0.1, 0.0],
                              [0.0, 0.0, 0.0, 0.2]])
    grad = torch.tensor([[0.5, 0.0, 0.0, 0.0],    # the largest gradient sits on an active weight
                         [0.0, 0.0, 0.0, 0.0],
                         [0.4, 0.3, 0.0, 0.0]])
    # top 3 |w|: (0,0) (0,1) (1,0); top 3 |g|: (0,0) (2,0) (2,1) -> union per row: 2, 1, 2
    assert salient_counts(magnitude, grad, 3, 3).tolist() == [2, 1, 2]
    # top 4 |w| adds (2,3); top 1 |g| is (0,0), already salient -> 2, 1, 1
    assert salient_counts(magnitude, grad, 4, 1).tolist() == [2, 1, 1]


def test_threshold_is_lowered_so_that_min_neurons_plus_one_stay():
    counts = torch.tensor([5, 1, 0, 3])
    # threshold 3: neurons with 1 and 0 salient weights go
    assert neurons_to_ablate(counts, 3, 0).tolist() == [False, True, True, False]
    # ranked 5, 3, 1, 0; at least 3 must stay -> threshold lowered to 1: only the empty neuron goes
    assert neurons_to_ablate(counts, 3, 2).tolist() == [False, False, True, False]


def _rigged(**options):
    """Linear(20 -> 4) at density 0.5 (budget 40, fan-in 10): neurons 0-2 hold large weights at
    positions 0-9, neuron 3 tiny ones; the gradient is largest at positions 10-12 of neurons 0-2."""
    model = nn.Sequential(nn.Linear(20, 4, bias=False), nn.ReLU(), nn.Linear(4, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    s = create("srigl", model, opt, density=0.5, distribution="uniform", include=("0.weight",),
               total_steps=10, drop_fraction=0.2, update_interval=1, **options)
    w = s.weights[0]
    mask = torch.zeros(4, 20, dtype=torch.bool)
    mask[:, :10] = True
    w.set_mask(mask)
    values = torch.zeros(4, 20)
    values[:3, :10] = torch.arange(1, 31, dtype=torch.float).reshape(3, 10)  # 1 .. 30
    values[3, :10] = torch.arange(1, 11, dtype=torch.float) / 1000            # 0.001 .. 0.010
    grad = torch.zeros(4, 20)
    grad[:3, 10:13] = torch.tensor([3.0, 2.0, 1.0])
    grad[:3, 15] = 0.5   # fourth in each row: never grown
    with torch.no_grad():
        w.parameter.copy_(values)
    opt.state[w.parameter]["momentum_buffer"] = torch.ones(4, 20)
    return s, w, grad


def test_a_neuron_with_too_few_salient_weights_is_ablated_and_the_others_grow_to_the_raised_fan_in():
    s, w, grad = _rigged()
    s.update_topology({w.name: grad})  # step 0: drop fraction 0.2
    # 40 active, n_prune = int(0.2 * 40) = 8, n_keep = 32. Salient: the 32 largest |w| are the 30 of
    # neurons 0-2 and 0.010, 0.009 of neuron 3; the 8 largest |g| lie in neurons 0-2. Neuron 3 has
    # 2 salient weights < max(1, int(0.3 * 10)) = 3: ablated (min_neurons = 40 // 20 = 2 does not
    # lower the threshold: the third most salient neuron has 12). Fan-in 40 // 3 = 13: neurons 0-2
    # keep their 10 (n_keep 32 > 30 left) and grow positions 10, 11, 12 (largest |g|).
    expected = torch.zeros(4, 20, dtype=torch.bool)
    expected[:3, :13] = True
    assert torch.equal(w.mask, expected)
    assert s.current_targets()[w.name] == 39 and s.ablated_neurons()[w.name] == 1
    values = w.values
    assert torch.equal(values[:3, :10], torch.arange(1, 31, dtype=torch.float).reshape(3, 10))
    assert values[:3, 10:].eq(0).all() and values[3].eq(0).all()  # grown at 0, ablated row off
    momentum = s.optimizer.state[w.parameter]["momentum_buffer"]
    assert momentum[:3, :10].eq(1).all()                          # kept: state untouched
    assert momentum[:3, 10:13].eq(0).all() and momentum[3].eq(0).all()  # grown and ablated: zeroed


def test_without_ablation_the_tiny_neuron_keeps_the_fan_in():
    s, w, grad = _rigged(ablation=False)
    s.update_topology({w.name: grad})
    # n_keep 32 of 40: the 8 smallest (neuron 3's 0.001 .. 0.008) go; fan-in stays 10, so neuron 3
    # keeps 0.009, 0.010 and grows 8 positions by |g|: all 0 there, ties to the lowest, 0-7, the
    # weights just dropped, which come back with their values (as the reference's new_connections).
    expected = torch.zeros(4, 20, dtype=torch.bool)
    expected[:, :10] = True
    assert torch.equal(w.mask, expected) and s.current_targets()[w.name] == 40
    assert torch.equal(w.values[3, :10], torch.arange(1, 11, dtype=torch.float) / 1000)


def test_the_last_layer_is_not_ablated_unless_asked():
    s, w, grad = _rigged()
    s.last_layer = w.name  # as if it were the classifier
    s.update_topology({w.name: grad})
    assert s.ablated_neurons()[w.name] == 0 and s.current_targets()[w.name] == 40


# --- defaults and refusals ---------------------------------------------------------------------
def test_defaults_are_the_released_configs():
    cfg = SRigLConfig()
    expected = dict(distribution="erk", erk_power=1.0, drop_fraction=0.3, anneal="cosine", update_interval=100,
                    stop_fraction=0.75, ablation=True, gamma_sal=0.3, gamma_of="sparse", ablate_last=False,
                    skip_step_on_update=False, reinit_when_same=False, dense_first=False, dense_last=False)
    assert {k: getattr(cfg, k) for k in expected} == expected


@pytest.mark.parametrize("options, words", [
    (dict(ranking="global"), "ranking must be layer"),
    (dict(grow_unactivated_only=True), "grow_unactivated_only"),
    (dict(gamma_sal=0.0), "gamma_sal"),
])
def test_options_it_cannot_honour_are_refused_in_one_sentence(options, words):
    with pytest.raises(UserError, match=words):
        SRigLConfig(**options)


@pytest.mark.parametrize("spec", ["2:4", "block:2", "channel"])
def test_a_structure_other_than_its_own_constant_fan_in_is_refused_in_one_sentence(spec):
    with pytest.raises(UserError, match=f"its own structure \\(a constant fan-in per neuron\\).*{spec}"):
        SRigLConfig(structure=spec, density=0.5)
    assert SRigLConfig(structure="unstructured").structure == "unstructured"


def test_too_low_a_density_for_one_weight_per_neuron_is_refused():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(UserError, match="fewer than one per neuron"):
        create("srigl", model, None, density=0.1, distribution="uniform", total_steps=10)
