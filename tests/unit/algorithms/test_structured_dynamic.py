"""Static, SET, RigL and MEST under a structure: masks keep it after every update, counts are
exact, drop and growth are ranked per group (hand-checked), and bad combinations are refused."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsetrain.algorithms import create
from sparsetrain.errors import ConfigError, UserError


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(4, 8, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 9, 8), nn.ReLU(),
                         nn.Linear(8, 4))


DENSITY = {"2:4": 0.5, "1:4": 0.25, "block:2": 0.3, "channel": 0.3}


CASES = [(method, spec, "layer") for method in ("static", "set", "rigl", "mest") for spec in ("2:4", "block:2", "channel")]
CASES += [("rigl", "1:4", "global"), ("set", "block:2", "global"), ("mest", "2:4", "global")]


@pytest.mark.parametrize("method, spec, ranking", CASES)
def test_masks_keep_the_structure_and_exact_counts_after_every_update(method, spec, ranking):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    options = {} if method == "static" else {"update_interval": 2, "interval_unit": "steps", "ranking": ranking,
                                             "drop_fraction": 0.5, "anneal": "constant",
                                             "grow_unactivated_only": spec == "1:4", "dense_first": False,
                                             "dense_last": False}
    if method == "mest":  # its own step anneal reaches 0 at the stop step, where the excess goes
        options.pop("anneal")
    m = create(method, model, opt, density=DENSITY[spec], structure=spec, distribution="erk", total_steps=8,
               seed=1, **options)
    g = torch.Generator().manual_seed(0)
    masks = []
    for step in range(8):
        x, y = torch.randn(8, 4, 3, 3, generator=g), torch.randint(0, 4, (8,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        m.step()
        assert m.structure_violations() == {}, (step, m.structure_violations())
        if method != "mest" or step + 1 >= m.stop_step:  # MEST's grown excess moves until its stop step
            active = {w.name: w.active for w in m.weights}
            assert active == m.current_targets() and sum(active.values()) == sum(m.targets.values())
        for w in m.weights:
            assert w.parameter[~w.mask].eq(0).all()
        masks.append([w.mask.clone() for w in m.weights])
    if spec.count(":") and spec != "block:2":  # N:M: every layer holds exactly N/M
        assert all(w.active * 4 == w.numel * int(spec[0]) for w in m.weights)
    if method != "static":
        assert any(not torch.equal(a, b) for a, b in zip(masks[0], masks[-1]))  # it rewired
        assert m.itop_rate() > m.density()
    else:
        assert all(torch.equal(a, b) for a, b in zip(masks[0], masks[-1]))


def _rigl_on(weight, mask, spec, density):
    model = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    m = create("rigl", model, None, density=density, structure=spec, distribution="uniform", total_steps=100,
               update_interval=1, drop_fraction=0.5, anneal="constant", sparse_init="none")
    (w,) = m.weights
    w.set_mask(mask.bool())
    w.load_dense(weight)
    return m, w


def test_rigl_two_of_four_drops_in_the_layer_and_regrows_inside_the_groups_that_lost():
    weight = torch.tensor([[0.9, 0.1, 0, 0, 0.2, 0, 0.8, 0]])
    m, w = _rigl_on(weight, torch.tensor([[1, 1, 0, 0, 1, 0, 1, 0]]), "2:4", 0.5)
    grad = torch.tensor([[0, 0, 0.6, 0.5, 0, 0.7, 0, 0.65]])
    m.update_topology({w.name: grad})
    # drop the two smallest (0.1 at 1, 0.2 at 4); each group lost one and regrows its largest |g|:
    # 2 (0.6) in the first, 5 (0.7) in the second -- not 7 (0.65), which unstructured RigL would take
    assert w.mask.int().tolist() == [[1, 0, 1, 0, 0, 1, 1, 0]]
    assert torch.equal(w.values, weight * torch.tensor([[1, 0, 0, 0, 0, 0, 1, 0]]))


def test_rigl_blocks_drop_by_weight_norm_and_grow_by_gradient_norm():
    weight = torch.zeros(4, 4)
    weight[:2, :2] = 0.1  # block (0,0): L2 0.2
    weight[2:, 2:] = 1.0  # block (1,1): L2 2
    mask = weight != 0
    m, w = _rigl_on(weight, mask, "block:2", 0.5)
    grad = torch.zeros(4, 4)
    grad[0, 3] = 3.0               # block (0,1): L2 3, L1 3
    grad[2:, 0] = torch.tensor([2.0, 2.0])  # block (1,0): L2 2.83, L1 4
    m.update_topology({w.name: grad})
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[:2, 2:] = True
    expected[2:, 2:] = True
    assert torch.equal(w.mask, expected)


def test_set_channel_grows_whole_never_active_channels_with_itop():
    model = nn.Linear(3, 6, bias=False)
    m = create("set", model, None, density=1 / 3, structure="channel", total_steps=100, update_interval=1,
               drop_fraction=0.5, anneal="constant", grow_unactivated_only=True)
    (w,) = m.weights
    seen = w.mask.any(1).clone()
    for _ in range(2):  # 2 of 6 channels active; each update swaps one for a never-active one
        before = w.mask.any(1).clone()
        m.update_topology({})
        now = w.mask.any(1)
        grown = now & ~before
        assert int(grown.sum()) == 1 and not (grown & seen).any()
        seen |= now
    assert m.itop_rate() == pytest.approx(4 / 6)


def test_kept_channels_keep_their_dense_init_and_two_of_four_is_scaled_by_sqrt_two():
    dense = nn.Linear(8, 6).weight.detach().clone()
    for spec, density, factor in (("channel", 0.5, 1.0), ("2:4", 0.5, 2 ** 0.5)):
        model = nn.Linear(8, 6)
        model.weight.data.copy_(dense)
        (w,) = create("static", model, None, density=density, structure=spec).weights
        assert torch.allclose(w.values, dense * w.mask * factor)  # sparse_init=layer: the fan-in each unit keeps


@pytest.mark.parametrize("method", ["set", "rigl"])
def test_the_sparse_backend_takes_structured_masks(method):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    m = create(method, model, opt, density=0.5, structure="2:4", backend="sparse", total_steps=6,
               update_interval=2)
    for _ in range(6):
        opt.zero_grad()
        F.cross_entropy(model(torch.randn(4, 8)), torch.randint(0, 4, (4,))).backward()
        m.step()
    assert m.structure_violations() == {} and m.density() == 0.5


def test_fused_qkv_parts_each_hold_the_structure_and_layers_that_do_not_fit_stay_dense():
    model = nn.ModuleDict({"attn": nn.MultiheadAttention(4, 1), "stem": nn.Conv1d(3, 4, 1)})
    m = create("static", model, None, density=0.25, structure="block:2")
    assert m.part_targets["attn.in_proj_weight"] == [4, 4, 4]  # 0.25 of 16 = 4: one 2x2 block per part
    assert m.structure_violations() == {}
    assert "stem.weight" in m.selection.dense and "not a whole number of 2x2 blocks" in m.coverage
    for part in m.weights[0].mask.chunk(3):
        assert int(part.sum()) == 4


@pytest.mark.parametrize("method, options, words", [
    ("prune-dp", {"structure": "2:4", "density": 0.5}, "prune-dp does not take structure=2:4"),
    ("rigl", {"structure": "2:4"}, "density must be 0.5; got density=0.1"),
    ("rigl", {"structure": "channel", "ranking": "global"}, "use ranking=layer"),
    ("set", {"structure": "block:2", "drop_rule": "signed"}, "use drop_rule=magnitude"),
    ("static", {"structure": "3:2"}, "0 < N < M"),
])
def test_bad_combinations_get_one_clear_sentence(method, options, words):
    with pytest.raises((UserError, ConfigError), match=words) as info:
        create(method, _model(), None, total_steps=10, **options)
    assert "\n" not in str(info.value)
