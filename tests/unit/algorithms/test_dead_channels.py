"""structure=channel: a channel whose mask row is all zero outputs exactly 0 (its bias and
batch-norm weight and bias held at 0, with their momentum); a regrown channel restarts its batch
norm at weight 1, bias 0, running mean 0, running variance 1; `st.shrink` then removes the dead
channels and computes what the masked model does."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparsetrain as st
from sparsetrain.algorithms import create

# weight -> (its bias, its batch norm): written by hand from the model below
OWNED = {"0.weight": ("0.bias", "1"), "3.weight": (None, "4"), "8.weight": ("8.bias", None)}


def cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def batches(n):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 3, 6, 6, generator=g), torch.randint(0, 4, (8,), generator=g)) for _ in range(n)]


def train(m, model, opt, data, after=None):
    for x, y in data:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        before = m.dead_channel_rows()
        m.step()
        if after:
            after(before)


def dead_rows(m):
    return {w.name: ~w.mask.reshape(w.shape[0], -1).any(1) for w in m.weights}


def entries(model, weight):
    """(tensor, momentum) of every parameter entry a weight's channels own."""
    bias, norm = OWNED[weight]
    names = ([bias] if bias else []) + ([f"{norm}.weight", f"{norm}.bias"] if norm else [])
    return [model.get_parameter(n) for n in names]


def momentum(opt, p):
    return opt.state[p]["momentum_buffer"]


OPTIONS = {"static": {}, "rigl": {"update_interval": 2, "drop_fraction": 0.5, "anneal": "constant"},
           "snip": {"ranking": "layer"}}


@pytest.mark.parametrize("method", ["static", "rigl", "snip"])
def test_dead_channels_hold_bias_and_batch_norm_at_zero_and_live_ones_are_left_alone(method):
    model = cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    m = create(method, model, opt, density=0.5, structure="channel", distribution="uniform", total_steps=6,
               **OPTIONS[method])
    if method == "snip":  # its first forward pass scores the dense model; the masks are set after it
        m.prepare(iter(batches(1)))
        for weight, d in dead_rows(m).items():
            assert bool(d.any()) and all(bool((p[d] == 0).all()) for p in entries(model, weight))
    train(m, model, opt, batches(6))
    dead = dead_rows(m)
    assert all(0 < int(d.sum()) < len(d) for d in dead.values())
    for weight, d in dead.items():
        for p in entries(model, weight):
            assert torch.equal(p[d], torch.zeros_like(p[d])) and torch.equal(momentum(opt, p)[d], torch.zeros_like(p[d]))
            assert bool((p[~d] != 0).all()), (weight, p)  # trained, not held
    # holding changes nothing else: set every entry to 3 and hold again
    with torch.no_grad():
        for weight in dead:
            for p in entries(model, weight):
                p.fill_(3.0)
    m.hold_dead_channels()
    for weight, d in dead.items():
        for p in entries(model, weight):
            assert bool((p[d] == 0).all()) and bool((p[~d] == 3).all())


def test_a_regrown_channel_restarts_its_batch_norm_and_resume_is_exact():
    model = cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    m = create("set", model, opt, density=0.5, structure="channel", distribution="uniform", total_steps=8, update_interval=1,
               drop_fraction=0.5, anneal="constant", seed=3)
    revived = []

    def check(before):
        for weight, now in dead_rows(m).items():
            back = before[weight] & ~now
            norm = OWNED[weight][1]
            if norm is None or not bool(back.any()):
                continue
            bn = model.get_submodule(norm)
            revived.append(int(back.sum()))
            for value, want in ((bn.weight, 1.0), (bn.bias, 0.0), (bn.running_mean, 0.0), (bn.running_var, 1.0)):
                assert bool((value[back] == want).all())
            for p in (bn.weight, bn.bias):
                assert bool((momentum(opt, p)[back] == 0).all())
            assert bool((bn.running_var[~back & ~now] != 1).any())  # live channels keep their statistics

    data = batches(8)
    train(m, model, opt, data[:4], check)
    saved = copy.deepcopy((model.state_dict(), opt.state_dict(), m.state_dict()))
    train(m, model, opt, data[4:], check)
    assert sum(revived) >= 2

    resumed = cnn()  # a fresh process: new masks at init, then the checkpoint is loaded
    opt2 = torch.optim.SGD(resumed.parameters(), lr=0.1, momentum=0.9)
    m2 = create("set", resumed, opt2, density=0.5, structure="channel", distribution="uniform", total_steps=8, update_interval=1,
                drop_fraction=0.5, anneal="constant", seed=3)
    resumed.load_state_dict(saved[0])
    opt2.load_state_dict(saved[1])
    m2.load_state_dict(saved[2])
    train(m2, resumed, opt2, data[4:])
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_shrink_removes_the_dead_channels_of_a_trained_channel_masked_model():
    model = cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    m = create("static", model, opt, density=0.5, structure="channel", distribution="uniform", total_steps=3)
    train(m, model, opt, batches(3))
    dead = {name: int(d.sum()) for name, d in dead_rows(m).items()}
    x = torch.randn(4, 3, 6, 6)
    small = st.shrink(model, x)
    # both convs lose their dead channels (conv2 also the inputs of the dead conv1 channels); the
    # classifier's outputs are the model's and stay
    assert (small[0].out_channels, small[3].in_channels) == (8 - dead["0.weight"], 8 - dead["0.weight"])
    assert (small[3].out_channels, small[8].in_features) == (8 - dead["3.weight"], 8 - dead["3.weight"])
    assert small.shrink_summary.removed_channels == dead["0.weight"] + dead["3.weight"] > 0
    for mode in (True, False):  # batch statistics and running statistics
        model.train(mode), small.train(mode)
        with torch.no_grad():
            torch.testing.assert_close(small(x), model(x), rtol=1e-5, atol=1e-6)
