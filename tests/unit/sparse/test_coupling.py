"""Channel coupling: a channel is prunable only where its output reaches exactly one next layer."""

import torch
import torch.nn.functional as F
from torch import nn

from sparsetrain.sparse.coupling import Coupling, couplings


class Block(nn.Module):
    """stem -> [conv1 -> bn1 -> relu -> conv2 -> bn2] + stem -> relu -> conv3 (1x1) -> pool -> fc."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.conv1 = nn.Conv2d(4, 5, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(5)
        self.conv2 = nn.Conv2d(5, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.conv3 = nn.Conv2d(4, 6, 1)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        x = self.stem(x)
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        out = F.max_pool2d(F.relu(out + x), 2)
        return self.fc(self.conv3(out).mean((2, 3)))


def test_residual_partners_flatten_and_pooling_into_a_linear_are_not_prunable():
    model = Block()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    found = couplings(model, torch.randn(1, 3, 8, 8))
    # only conv1's channels are internal to the block: stem and conv2 meet the residual add,
    # conv3 reaches fc through a mean
    assert found == [Coupling("conv1.weight", "conv2.weight", None, ("bn1",))]
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_chain_through_per_channel_ops_couples_and_a_second_consumer_does_not():
    torch.manual_seed(0)
    chain = nn.Sequential(nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), nn.ReLU(inplace=True), nn.MaxPool1d(2),
                          nn.Dropout(0.1), nn.Conv1d(4, 3, 3), nn.Flatten(), nn.Linear(6, 5), nn.GELU(),
                          nn.Linear(5, 2))
    assert couplings(chain, torch.randn(1, 2, 10)) == [
        Coupling("0.weight", "5.weight", "0.bias", ("1",)), Coupling("7.weight", "9.weight", "7.bias", ())]

    class TwoUsers(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(3, 4), nn.Linear(4, 2), nn.Linear(4, 2)

        def forward(self, x):
            h = torch.relu(self.a(x))
            return self.b(h) + self.c(h)

    assert couplings(TwoUsers(), torch.randn(1, 3)) == []


def test_functional_layers_are_found_by_their_parameters_and_shared_layers_are_left_out():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.w1 = nn.Parameter(torch.randn(4, 3))
            self.w2 = nn.Parameter(torch.randn(2, 4))
            self.shared = nn.Linear(2, 2)
            self.out = nn.Linear(2, 1)

        def forward(self, x):
            h = F.linear(F.relu(F.linear(x, self.w1)), self.w2)
            return self.out(self.shared(self.shared(h)))

    found = couplings(Functional(), torch.randn(1, 3))
    assert Coupling("w1", "w2", None, ()) in found
    assert all("shared" not in c.producer and "shared" not in c.consumer for c in found)


def test_channel_params_follow_norms_up_to_the_first_mixing_op_whatever_comes_after():
    from sparsetrain.sparse.coupling import ChannelParams as P, channel_params

    # conv -> bn -> relu -> conv: the first conv owns bn; the second has only its bias
    chain = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    assert channel_params(chain, torch.randn(1, 3, 6, 6)) == {
        "0.weight": P("0.weight", None, ("1",)), "3.weight": P("3.weight", "3.bias", ())}
    # residual: conv2 -> bn2 -> add keeps bn2; the stem fans out (conv1 and the add): no norm;
    # conv3 -> mean -> fc: its bias only
    assert channel_params(Block(), torch.randn(1, 3, 8, 8)) == {
        "stem.weight": P("stem.weight", "stem.bias", ()), "conv1.weight": P("conv1.weight", None, ("bn1",)),
        "conv2.weight": P("conv2.weight", None, ("bn2",)), "conv3.weight": P("conv3.weight", "conv3.bias", ()),
        "fc.weight": P("fc.weight", "fc.bias", ())}
    # conv -> bn -> flatten -> linear -> bn: each owns its norm; a batch norm used twice is nobody's
    flat = nn.Sequential(nn.Conv1d(2, 3, 3), nn.BatchNorm1d(3), nn.Flatten(), nn.Linear(12, 5), nn.BatchNorm1d(5))
    assert channel_params(flat, torch.randn(2, 2, 6)) == {
        "0.weight": P("0.weight", "0.bias", ("1",)), "3.weight": P("3.weight", "3.bias", ("4",))}

    class SharedNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.bn = nn.Conv2d(2, 3, 1), nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

        def forward(self, x):
            return self.bn(self.b(self.bn(self.a(x))))

    assert channel_params(SharedNorm(), torch.randn(1, 2, 4, 4)) == {
        "a.weight": P("a.weight", "a.bias", ()), "b.weight": P("b.weight", "b.bias", ())}
