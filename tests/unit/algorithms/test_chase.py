"""Chase (luuyin/chase): channels go with their next layer's inputs and batch-norm entries, the
floor holds, the channel schedule is the cubic formula, weight counts are exact."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsetrain.algorithms import Chase
from sparsetrain.errors import ConfigError, UserError


class TinyCNN(nn.Module):
    """conv1 -> bn1 -> relu -> conv2 -> bn2 -> relu -> pool -> fc: only conv1's channels are
    prunable (conv2 reaches the classifier through a flatten, as in the reference's VGG)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 3, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def _chase(model, **options):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    options = {"density": 1.0, "grow_fraction": 0.0, "sparse_init": "none", "total_steps": 100,
               "update_interval": 10, "channel_interval": 1, **options}
    return Chase(model, opt, **options), opt


def test_removing_a_filter_removes_the_next_layers_input_channel_and_its_batch_norm_entries():
    torch.manual_seed(0)
    model = TinyCNN()
    with torch.no_grad():  # mean |w| of conv1's filters: 0.5, 0.3, 0.2, 0.4 (filter 2 is the weakest)
        for c, value in enumerate((0.5, 0.3, 0.2, 0.4)):
            model.conv1.weight[c] = value
        model.bn1.bias.fill_(0.7)  # relu(0.7) would leak into conv2 if the entry were kept
    chase, opt = _chase(model, channel_sparsity=0.5, channel_floor=0.0)
    x = torch.randn(2, 1, 5, 5)
    model(x)  # the first forward finds the channels
    assert [(c.producer, c.consumer, c.norms) for c in chase.couplings] == [("conv1.weight", "conv2.weight", ("bn1",))]

    removed = chase.prune_channels(0.25)  # round(4 x 0.75) = 3 channels left: one goes
    assert removed == {"conv1.weight": [2]}
    masks = {w.name: w.mask for w in chase.weights}
    assert not masks["conv1.weight"][2].any() and masks["conv1.weight"][[0, 1, 3]].all()
    assert not masks["conv2.weight"][:, 2].any() and masks["conv2.weight"][:, [0, 1, 3]].all()
    assert masks["fc.weight"].all()
    assert model.conv1.weight[2].eq(0).all() and model.conv2.weight[:, 2].eq(0).all()
    assert model.bn1.weight[2] == 0 and model.bn1.bias[2] == 0
    # the channel's output is exactly 0, in training and in eval mode, and stays so while training
    for _ in range(3):
        opt.zero_grad()
        model(x).sum().backward()
        chase.step()
    assert model.bn1.weight[2] == 0 and model.bn1.bias[2] == 0 and model.conv2.weight[:, 2].eq(0).all()
    for train in (True, False):
        model.train(train)
        out = F.relu(model.bn1(model.conv1(x)))
        assert out[:, 2].eq(0).all() and out[:, [0, 1, 3]].ne(0).any()
    assert chase.channel_counts() == {"conv1.weight": (3, 4)}


def test_pruned_weights_count_as_zero_in_the_channel_score():
    torch.manual_seed(0)
    model = TinyCNN()
    chase, _ = _chase(model, channel_sparsity=0.5, channel_floor=0.0)
    with torch.no_grad():
        model.conv1.weight.copy_(torch.tensor([1.0, 0.6, 0.7, 0.8]).view(4, 1, 1, 1).expand(4, 1, 3, 3))
    w = chase.weights[0]
    mask = torch.ones(4, 1, 3, 3, dtype=torch.bool)
    mask[0, 0, :2] = False  # filter 0 keeps 3 of 9 weights of 1.0: mean 1/3, the weakest
    w.set_mask(mask)
    model(torch.randn(1, 1, 5, 5))
    assert chase.prune_channels(0.25) == {"conv1.weight": [0]}


def _two_layer_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 10, bias=False), nn.ReLU(), nn.Linear(10, 10, bias=False), nn.ReLU(),
                         nn.Linear(10, 3, bias=False))


def test_channel_floor_holds_and_the_rest_comes_from_the_other_layers():
    model = _two_layer_model()
    # Sc = 0.5, beta = 0.4: floor int(10 x 0.5 x 0.4) = 2 channels per layer
    chase, _ = _chase(model, channel_sparsity=0.5, channel_floor=0.4)
    with torch.no_grad():  # layer 0's units are all weaker than layer 2's
        model[0].weight.copy_(torch.arange(1, 11, dtype=torch.float).view(10, 1).expand(10, 4) / 100)
        model[2].weight.copy_(torch.arange(1, 11, dtype=torch.float).view(10, 1).expand(10, 10))
    model(torch.randn(1, 4))
    removed = chase.prune_channels(0.5)  # 20 units -> 10 left; layer 0 alone would drop all 10
    assert sorted(removed["0.weight"]) == list(range(8))  # down to its floor of 2, its weakest first
    assert sorted(removed["2.weight"]) == [0, 1]          # the other 2 from the next layer, weakest first
    assert chase.channel_counts() == {"0.weight": (2, 10), "2.weight": (8, 10)}
    masks = {w.name: w.mask for w in chase.weights}
    assert masks["0.weight"].sum() == 2 * 4 and masks["2.weight"][:, :8].sum() == 0
    assert masks["4.weight"][:, :2].sum() == 0 and masks["4.weight"][:, 2:].all()


def test_channel_schedule_is_the_cubic_formula_and_weight_counts_are_exact():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    total, interval = 96, 4
    chase = Chase(model, opt, density=0.1, total_steps=total, update_interval=interval, channel_interval=2,
                  channel_sparsity=0.5, channel_floor=0.2, elastic_stop_fraction=0.75,
                  channel_stop_fraction=0.75, grow_fraction=0.1, drop_fraction=0.5, seed=1)
    n_all = 256 + 256 + 64
    budget = sum(w.active for w in chase.weights)
    assert budget == chase.budget == round(0.1 * n_all)
    t_c = int(0.75 * total)  # 72: the channel and the elastic phases end here
    g = torch.Generator().manual_seed(0)
    channel_steps, counts = [], []
    for t in range(1, total + 1):
        x = torch.randn(8, 16, generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x), x[:, :4].argmax(1)).backward()
        chase.step()
        alive = sum(a for a, _ in chase.channel_counts().values())
        if (t + interval // 2) % (2 * interval) == 0 and t < t_c:  # 6, 14, ..., 70
            channel_steps.append(t)
            s = 0.5 * (1 - (1 - t / t_c) ** 3)
            assert alive == round(32 * (1 - s)), t
        counts.append(alive)
        active = sum(w.active for w in chase.weights)
        if t % interval == 0:  # a weight update
            if t < t_c:  # prune to the budget, grow delta x N, delta by cosine to 0 at t_c
                delta = 0.1 * (1 + math.cos(math.pi * t / t_c)) / 2
                assert active == budget + round(delta * n_all), t
            else:
                assert active == budget, t
        for w in chase.weights:  # no weight in a removed channel (nor grown into one)
            dead = chase._allowed.get(w.name)
            if dead is not None:
                assert not w.mask[~dead].any()
    assert channel_steps == list(range(6, 72, 8))
    assert counts[-1] == 16 and counts == sorted(counts, reverse=True)


def test_rigl_phase_drops_the_reference_fraction_and_regrows_to_the_budget(monkeypatch):
    model = _two_layer_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    chase = Chase(model, opt, density=0.3, total_steps=40, update_interval=10, channel_sparsity=0.0,
                  elastic_stop_fraction=0.5, seed=0)
    seen, select = [], chase.select_kept
    monkeypatch.setattr(chase, "select_kept", lambda scores, n_keep, fraction:
                        seen.append((scores.numel(), n_keep, fraction)) or select(scores, n_keep, fraction))
    x = torch.randn(8, 4)
    for _ in range(40):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        chase.step()
    active_at_30 = seen[2][0]
    r = 0.005 + (0.5 - 0.005) * (1 + math.cos(math.pi * 30 / 40)) / 2  # the reference's CosineDecay
    assert seen[2][2] == pytest.approx(r)
    assert seen[2][1] == active_at_30 - math.ceil(r * active_at_30)
    assert sum(w.active for w in chase.weights) == chase.budget


def test_channel_pruning_needs_a_forward_pass_and_checks_its_options():
    model = _two_layer_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    chase = Chase(model, opt, density=0.5, total_steps=40, update_interval=2, channel_interval=1)
    with pytest.raises(UserError, match="forward pass"):
        for _ in range(2):
            chase.step()
    with pytest.raises(ConfigError, match="channel_sparsity"):
        Chase(_two_layer_model(), None, total_steps=10, channel_sparsity=1.0)
    with pytest.raises(ConfigError, match="grow_fraction"):
        Chase(_two_layer_model(), None, total_steps=10, density=0.99, grow_fraction=0.05)


def test_state_dict_round_trips_the_removed_channels():
    model = _two_layer_model()
    chase, _ = _chase(model, channel_sparsity=0.5, channel_floor=0.0)
    model(torch.randn(1, 4))
    chase.prune_channels(0.3)
    state = chase.state_dict()
    other, _ = _chase(model, channel_sparsity=0.5, channel_floor=0.0)
    other.load_state_dict(state)
    model(torch.randn(1, 4))
    assert other.channel_counts() == chase.channel_counts()
    assert other._allowed.keys() == chase._allowed.keys()
    assert all(torch.equal(other._allowed[k], chase._allowed[k]) for k in chase._allowed)
