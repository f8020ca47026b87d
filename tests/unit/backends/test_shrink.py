"""st.shrink on tiny hand-built CNNs: which channels go, which stay and why, weights kept exactly."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sparsetrain.backends.masked import MaskedWeight
from sparsetrain.backends.shrink import shrink
from sparsetrain.errors import UserError


class ConvBN(nn.Module):
    """conv(3->4) - BN - ReLU - conv(4->5) - BN - ReLU - pool - Linear(5->2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 5, 3, padding=1, bias=False), nn.BatchNorm2d(5)
        self.fc = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv1(x)).relu()
        x = self.bn2(self.conv2(x)).relu()
        return self.fc(x.mean((2, 3)))


class Residual(nn.Module):
    """stem(2->4) + [conv a(4->3) - ReLU - conv b(3->4)] -> pool -> Linear(4->2)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.a = nn.Conv2d(4, 3, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = h + self.b(self.a(h).relu())
        return self.fc(h.mean((2, 3)))


def _random_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g))
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def _kill_filter(model: nn.Module, layer: str, channel: int) -> None:
    """Mask every weight of one output channel (the masked backend holds it at 0)."""
    weight = MaskedWeight(model, f"{layer}.weight")
    mask = weight.mask.clone()
    mask[channel] = False
    weight.set_mask(mask)
    bias = model.get_submodule(layer).bias
    if bias is not None:
        with torch.no_grad():
            bias[channel] = 0


def _zero_bn(bn: nn.BatchNorm2d, channel: int) -> None:
    with torch.no_grad():
        bn.weight[channel] = 0
        bn.bias[channel] = 0


def _same_outputs(a: nn.Module, b: nn.Module, shape: tuple[int, ...]) -> None:
    x = torch.randn(5, *shape, generator=torch.Generator().manual_seed(7))
    for train in (False, True):  # running statistics and batch statistics
        a.train(train), b.train(train)
        with torch.no_grad():
            torch.testing.assert_close(b(x), a(x), rtol=1e-5, atol=1e-5)


def test_dead_filter_with_zero_batch_norm_goes_with_the_next_layers_input_channel() -> None:
    torch.manual_seed(0)
    model = ConvBN()
    _random_bn(model)
    _kill_filter(model, "conv1", 1)
    _zero_bn(model.bn1, 1)
    small = shrink(model, (3, 6, 6))
    keep = [0, 2, 3]
    assert small.conv1.weight.shape == (3, 3, 3, 3) and small.bn1.num_features == 3
    assert small.conv2.weight.shape == (5, 3, 3, 3)
    torch.testing.assert_close(small.conv1.weight, model.conv1.weight[keep], rtol=0, atol=0)
    torch.testing.assert_close(small.conv2.weight, model.conv2.weight[:, keep], rtol=0, atol=0)
    torch.testing.assert_close(small.bn1.running_mean, model.bn1.running_mean[keep], rtol=0, atol=0)
    assert not any(n.endswith("_mask") for n, _ in small.named_buffers())  # a plain dense model
    assert any(n.endswith("_mask") for n, _ in model.named_buffers())  # the masked model is untouched
    summary = small.shrink_summary
    assert summary.removed_channels == 1
    assert summary.params_before - summary.params_after == 27 + 2 + 5 * 9  # filter, BN entry, next layer's input
    assert "4 -> 3" in str(summary)
    _same_outputs(model, small, (3, 6, 6))


def test_a_batch_norm_bias_keeps_a_zero_filter_alive() -> None:
    torch.manual_seed(0)
    model = ConvBN()
    _random_bn(model)
    _kill_filter(model, "conv1", 2)  # relu(beta) still reaches conv2: removing it would change outputs
    small = shrink(model, (3, 6, 6))
    assert small.conv1.out_channels == 4 and small.shrink_summary.removed_channels == 0
    text = str(small.shrink_summary)
    assert text.startswith("nothing could be removed")
    assert "conv1: 1 all-zero filter kept (batch norm bn1 has a non-zero weight or bias" in text
    _same_outputs(model, small, (3, 6, 6))


def test_residual_channels_go_only_when_dead_in_every_coupled_layer() -> None:
    torch.manual_seed(0)
    model = Residual()
    _kill_filter(model, "b", 0)  # the stem still writes channel 0 of the residual sum
    _kill_filter(model, "a", 1)  # inside the block: goes with b's input channel 1
    small = shrink(model, (2, 5, 5))
    assert (small.stem.out_channels, small.a.out_channels, small.b.in_channels, small.b.out_channels) == (4, 2, 2, 4)
    assert "a residual add couples the channel with a live channel of stem" in str(small.shrink_summary)
    _same_outputs(model, small, (2, 5, 5))

    _kill_filter(model, "stem", 0)  # now dead in both writers of the sum: goes everywhere
    small = shrink(model, (2, 5, 5))
    assert (small.stem.out_channels, small.a.in_channels, small.b.out_channels, small.fc.in_features) == (3, 3, 3, 3)
    torch.testing.assert_close(small.fc.weight, model.fc.weight[:, 1:], rtol=0, atol=0)
    _same_outputs(model, small, (2, 5, 5))


def test_the_output_layer_keeps_its_size_and_every_layer_keeps_a_channel() -> None:
    model = Residual()
    _kill_filter(model, "fc", 1)  # a dead logit is still an output
    for channel in range(3):
        _kill_filter(model, "a", channel)
    small = shrink(model, (2, 5, 5))
    assert small.fc.out_features == 2
    assert small.a.out_channels == 1 and small.b.in_channels == 1  # all dead: the first one stays (zeros)
    assert "a layer keeps at least one channel" in str(small.shrink_summary)
    _same_outputs(model, small, (2, 5, 5))


def test_keep_masks_cuts_each_mask_to_the_kept_channels() -> None:
    torch.manual_seed(0)
    model = ConvBN()
    g = torch.Generator().manual_seed(3)
    for name in ("conv1", "conv2"):
        weight = MaskedWeight(model, f"{name}.weight")
        weight.set_mask(torch.rand(weight.mask.shape, generator=g) < 0.5)
    _kill_filter(model, "conv2", 4)
    _zero_bn(model.bn2, 4)
    small = shrink(model, (3, 6, 6), keep_masks=True)
    assert torch.equal(small.conv1.weight_mask, model.conv1.weight_mask)
    assert torch.equal(small.conv2.weight_mask, model.conv2.weight_mask[:4])
    assert small.fc.in_features == 4 and not hasattr(small.fc, "weight_mask")


def test_a_model_the_graph_cannot_trace_gets_one_clear_sentence() -> None:
    class ViaWeight(nn.Module):  # uses conv2 through its weight: autograd never sees the module run
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.conv2d(self.conv1(x).relu(), self.conv2.weight)

    with pytest.raises(UserError, match=r"cannot trace ViaWeight: layer 'conv2' does not take part"):
        shrink(ViaWeight(), (3, 8, 8))
    with pytest.raises(UserError, match="removes channels of convolutional networks; Sequential has no Conv"):
        shrink(nn.Sequential(nn.Linear(4, 3)), (4,))
    with pytest.raises(UserError, match="input shape of positive sizes"):
        shrink(ConvBN(), (3, 0, 6))


def test_an_operation_that_does_not_map_zero_to_zero_is_caught_by_the_output_check() -> None:
    class Sigmoid(ConvBN):  # sigmoid(0) = 0.5: a dead conv1 channel still feeds conv2
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.sigmoid(self.conv1(x))
            return self.fc(self.bn2(self.conv2(x)).relu().mean((2, 3)))

    model = Sigmoid()
    _kill_filter(model, "conv1", 0)
    with pytest.raises(UserError, match="outputs would change"):
        shrink(model, (3, 6, 6))


def test_sparse_backend_layers_shrink_like_masked_ones() -> None:
    from sparsetrain.backends import to_sparse

    torch.manual_seed(0)
    model = ConvBN()
    _random_bn(model)
    _kill_filter(model, "conv1", 3)
    _zero_bn(model.bn1, 3)
    masked = shrink(model, (3, 6, 6))
    to_sparse(model)
    small = shrink(model, (3, 6, 6))
    assert small.conv1.out_channels == 3 and isinstance(small.conv1, nn.Conv2d)
    torch.testing.assert_close(small.conv2.weight, masked.conv2.weight, rtol=0, atol=0)


def test_export_shrunk_loads_back_and_refuses_a_foreign_tensors_file(tmp_path) -> None:
    from sparsetrain.backends.export import export_shrunk, load_shrunk

    torch.manual_seed(0)
    model = Residual()
    _kill_filter(model, "a", 2)
    _kill_filter(model, "b", 3)
    _kill_filter(model, "stem", 3)
    small = shrink(model, (2, 5, 5))
    export_shrunk(small, tmp_path / "a")
    loaded = load_shrunk(tmp_path / "a", model=Residual())  # no registered model: the architecture is given
    assert (loaded.a.out_channels, loaded.stem.out_channels) == (2, 3)
    _same_outputs(small, loaded, (2, 5, 5))

    other = copy.deepcopy(model)
    _kill_filter(other, "a", 0)
    export_shrunk(shrink(other, (2, 5, 5)), tmp_path / "b")
    (tmp_path / "a" / "model.safetensors").write_bytes((tmp_path / "b" / "model.safetensors").read_bytes())
    with pytest.raises(UserError, match=r"model.safetensors' does not belong to .*manifest.json"):
        load_shrunk(tmp_path / "a", model=Residual())
    with pytest.raises(UserError, match="has format 'sparsetrain-shrunk/1'; load it with load_shrunk"):
        from sparsetrain.backends.export import load_exported
        load_exported(tmp_path / "b", model=Residual())
    with pytest.raises(UserError, match="no shrink_summary"):
        export_shrunk(Residual(), tmp_path / "c")
