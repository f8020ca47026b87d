"""SLaK: the decomposed kernel equals its branches and one merged kernel; SNIP ratios at random positions."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparsetrain as st
from sparsetrain.models.slak import SLaKConv2d


def _randomize_norms(module, g):
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.weight.shape, generator=g) + 0.5
            m.bias.data = torch.randn(m.bias.shape, generator=g)
            m.running_mean = torch.randn(m.running_mean.shape, generator=g)
            m.running_var = torch.rand(m.running_var.shape, generator=g) + 0.5


def _branch(x, conv, bn):
    """conv then batch norm in eval mode, written out: (conv(x) - mean) / sqrt(var + eps) * gamma + beta."""
    y = F.conv2d(x, conv.weight, padding=conv.padding, groups=conv.groups)
    shape = (1, -1, 1, 1)
    return (y - bn.running_mean.view(shape)) / (bn.running_var.view(shape) + bn.eps).sqrt() \
        * bn.weight.view(shape) + bn.bias.view(shape)


def test_decomposed_kernel_is_the_sum_of_its_branches_and_one_merged_kernel():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    block = SLaKConv2d(4, kernel=9, small=3).eval()
    _randomize_norms(block, g)
    x = torch.randn(2, 4, 12, 10, generator=g)
    out = block(x)
    branches = sum(_branch(x, *b) for b in (block.long, block.wide, block.square))
    assert torch.allclose(out, branches, atol=1e-5)
    assert block.long[0].weight.shape == (4, 1, 9, 3) and block.wide[0].weight.shape == (4, 1, 3, 9)
    weight, bias = block.equivalent()
    assert weight.shape == (4, 1, 9, 9)
    merged = F.conv2d(x, weight, bias, padding=4, groups=4)
    assert torch.allclose(out, merged, atol=1e-5)
    # the merged kernel's corners are 0: only the cross of the two rectangles and the centre square
    assert weight[:, :, :3, :3].eq(0).all() and weight[:, :, 6:, 6:].eq(0).all()


def _loader(g):
    return [(torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g))]


def test_snip_layer_ratios_with_random_positions_on_the_large_kernels_only():
    torch.manual_seed(0)
    model = st.models.create("slak-small", num_classes=10, input_shape=(3, 16, 16), dims=(4, 8, 8), kernels=(9, 7, 7))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    method = st.create("slak", model, opt, total_steps=10)
    names = [w.name for w in method.weights]
    assert names and all(n.endswith((".long.0.weight", ".wide.0.weight")) for n in names)  # not the 5x5 square
    g = torch.Generator().manual_seed(3)
    batch = _loader(g)
    # independent SNIP: |dL/dw * w| on the batch, global top round(0.6 N), each layer's share
    x, y = batch[0]
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    params = dict(model.named_parameters())
    scores = {n: (params[n].grad * params[n]).abs().detach().reshape(-1) for n in names}
    flat = torch.cat(list(scores.values()))
    budget = round(0.6 * flat.numel())
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[torch.argsort(flat, descending=True, stable=True)[:budget]] = True
    counts, start = {}, 0
    for n in names:
        counts[n] = int(keep[start:start + scores[n].numel()].sum())
        start += scores[n].numel()
    model.zero_grad()
    with pytest.raises(Exception, match="call prepare"):
        method.step()
    method.prepare(iter(batch))
    assert {w.name: w.active for w in method.weights} == counts
    assert sum(counts.values()) == budget
    assert len(set(counts[n] / scores[n].numel() for n in names)) > 1  # SNIP ratios differ per layer
    top_positions = {n: keep[sum(scores[m].numel() for m in names[:i]):][:scores[n].numel()]
                     for i, n in enumerate(names)}
    assert any(not torch.equal(w.mask.reshape(-1), top_positions[w.name]) for w in method.weights)  # random places
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        method.step()
    assert {w.name: w.active for w in method.weights} == counts
