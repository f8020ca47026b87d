"""WOT: blocks, refinement w0 + sum alpha dw, alpha gradient, clamping, masks, BN recalibration."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from sparsetrain.algorithms.base import SparsityConfig
from sparsetrain.algorithms.dynamic import DynamicConfig
from sparsetrain.data import DatasetSplits, TensorData
from sparsetrain.engine.config import TrainConfig
from sparsetrain.engine.trainer import Trainer
from sparsetrain.engine.wot import WOT, WOTConfig, alpha_gradient, parameter_blocks, recalibrate_bn, refine
from sparsetrain.errors import UserError
from sparsetrain.models import create


def splits(n: int = 64) -> DatasetSplits:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 6, 6, generator=g)
    y = (x.flatten(1).mean(1) > 0.5).long()
    return DatasetSplits("tiny", TensorData(x[16:], y[16:]), TensorData(x[:16], y[:16]),
                         TensorData(x[:16], y[:16]), 2, (1, 6, 6))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(4 * 36, 2))

    def forward(self, x):
        return self.classifier(self.features(x))


def test_parameter_blocks_of_preactresnet18_are_the_reference_six():
    model = create("preactresnet18", input_shape=(3, 8, 8), num_classes=10, width=4)
    blocks = parameter_blocks(model)
    assert set(blocks.values()) == set(range(6))
    assert blocks["stem.weight"] == 0
    assert blocks["stages.0.0.conv1.weight"] == 1 and blocks["stages.3.1.bn2.bias"] == 4
    assert blocks["head.0.weight"] == 5 and blocks["head.4.weight"] == 5


def test_refine_is_w0_plus_weighted_deltas():
    w0 = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([[0.5]])}
    deltas = [{"a": torch.tensor([1.0, -1.0]), "b": torch.tensor([[2.0]])},
              {"a": torch.tensor([0.5, 0.5]), "b": torch.tensor([[-4.0]])}]
    alpha = torch.tensor([[0.2, 1.0], [0.5, 0.25]])  # (segments, blocks)
    out = refine(w0, deltas, alpha, {"a": 0, "b": 1})
    torch.testing.assert_close(out["a"], torch.tensor([1 + 0.2 * 1 + 0.5 * 0.5, 2 - 0.2 + 0.5 * 0.5]))
    torch.testing.assert_close(out["b"], torch.tensor([[0.5 + 1.0 * 2 - 0.25 * 4]]))


def test_alpha_gradient_matches_autograd_through_the_refinement():
    model = Net()
    model.eval()
    g = torch.Generator().manual_seed(1)
    w0 = {k: v.detach().clone() for k, v in model.named_parameters()}
    deltas = [{k: 0.1 * torch.randn(v.shape, generator=g) for k, v in w0.items()} for _ in range(3)]
    blocks = parameter_blocks(model)
    assert max(blocks.values()) == 1
    alpha = torch.rand(3, 2, generator=g, dtype=torch.float64).requires_grad_(True)
    x, y = torch.rand(5, 1, 6, 6, generator=g), torch.tensor([0, 1, 1, 0, 1])
    weights = {k: w0[k] + sum(alpha[i, blocks[k]].float() * deltas[i][k] for i in range(3)) for k in w0}
    buffers = dict(model.named_buffers())
    loss = F.cross_entropy(functional_call(model, {**weights, **buffers}, (x,)), y)
    expected, = torch.autograd.grad(loss, alpha)
    refined = {k: v.detach().requires_grad_(True) for k, v in weights.items()}
    loss2 = F.cross_entropy(functional_call(model, {**refined, **buffers}, (x,)), y)
    grads = dict(zip(refined, torch.autograd.grad(loss2, list(refined.values()))))
    torch.testing.assert_close(alpha_gradient(grads, deltas, blocks, 2), expected, rtol=1e-4, atol=1e-6)


def test_bn_recalibration_sets_running_stats_to_the_held_out_batch_statistics():
    model = Net()
    model.eval()
    bn = model.features[1]
    momentum = bn.momentum
    g = torch.Generator().manual_seed(2)
    held_out = [torch.rand(8, 1, 6, 6, generator=g) + 1.0, torch.rand(8, 1, 6, 6, generator=g) * 3]
    assert recalibrate_bn(model, held_out)
    with torch.no_grad():
        acts = [model.features[0](x) for x in held_out]
    means = [a.mean(dim=(0, 2, 3)) for a in acts]
    variances = [a.var(dim=(0, 2, 3), unbiased=True) for a in acts]
    torch.testing.assert_close(bn.running_mean, (means[0] + means[1]) / 2)  # equal batches: mean of means
    torch.testing.assert_close(bn.running_var, (variances[0] + variances[1]) / 2)
    assert bn.momentum == momentum and not model.training
    assert not recalibrate_bn(nn.Linear(2, 2), held_out)


class Recording(WOT):
    """WOT that keeps what it refined from, to check the result independently."""

    def __init__(self, config):
        super().__init__(config)
        self.checks = []

    def refine_now(self, trainer):
        w0 = {k: v.clone() for k, v in self.w0.items()}
        deltas = [{k: v.clone() for k, v in d.items()} for d in self.deltas]
        running = trainer.model.features[1].running_mean.clone()
        super().refine_now(trainer)
        params = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
        masks = {w.name: w.mask.clone() for w in getattr(trainer.method, "weights", [])}
        self.checks.append((w0, deltas, self.alpha.clone(), params, masks, running,
                            trainer.model.features[1].running_mean.clone(), len(trainer.optimizer.state)))


def run(method: str, method_config, **wot) -> tuple[Trainer, Recording]:
    cfg = WOTConfig(gap=2, segments=2, alpha_epochs=2, steps=2, eps=0.1, step_size=0.05, bn_batches=2, **wot)
    callback = Recording(cfg)
    trainer = Trainer(Net(), splits(), TrainConfig(epochs=4, batch_size=16, lr=0.1, device="cpu"),
                      method=method, method_config=method_config, callbacks=[callback])
    trainer.fit()
    return trainer, callback


@pytest.mark.parametrize("variant", ["block", "whole"])
def test_wot_refines_to_w0_plus_alpha_deltas_with_alpha_in_unit_interval(variant):
    trainer, callback = run("static", SparsityConfig(density=0.5), variant=variant, alpha_init="random",
                            alpha_lr=50.0)
    assert callback.refinements == 3 == len(callback.checks)  # 3 steps per epoch x 4 epochs, windows of 2 x 2 steps
    assert trainer.history[-1]["wot_refinements"] == 3
    for w0, deltas, alpha, params, masks, running_before, running_after, optimizer_state in callback.checks:
        assert alpha.shape == (2, 2 if variant == "block" else 1)
        assert (alpha >= 0).all() and (alpha <= 1).all()
        assert ((alpha == 0) | (alpha == 1)).any()  # a large lr drives some alphas onto the clamp
        blocks = parameter_blocks(trainer.model) if variant == "block" else {k: 0 for k in w0}
        for name, value in params.items():
            expected = w0[name] + sum(alpha[i, blocks[name]].float() * deltas[i][name] for i in range(2))
            torch.testing.assert_close(value, expected)
        for name, mask in masks.items():  # pruned weights stay exactly zero
            assert (params[name][~mask] == 0).all()
        assert not torch.equal(running_before, running_after)  # BN statistics re-estimated
        assert optimizer_state == 0  # momentum dropped, as the reference's --reinitialize 1


def test_wot_on_a_dynamic_sparse_model_keeps_masks_and_density():
    trainer, callback = run("set", DynamicConfig(density=0.4, update_interval=1, drop_fraction=0.5))
    assert callback.refinements == 3
    blocks = parameter_blocks(trainer.model)
    for w0, deltas, alpha, params, masks, *_ in callback.checks:
        for name, value in params.items():  # the topology moved inside the window: refined times mask
            expected = w0[name] + sum(alpha[i, blocks[name]].float() * deltas[i][name] for i in range(2))
            if name in masks:
                expected = expected * masks[name]
                assert (params[name][~masks[name]] == 0).all()
            torch.testing.assert_close(value, expected)
    for w in trainer.method.weights:
        assert int(w.mask.sum()) == trainer.method.targets[w.name]
        assert (w.parameter[~w.mask] == 0).all()


def test_wot_needs_a_validation_split():
    data = splits()
    empty = DatasetSplits("tiny", data.train, TensorData(data.val.x[:0], data.val.y[:0]), data.test, 2, (1, 6, 6))
    trainer = Trainer(Net(), empty, TrainConfig(epochs=1, batch_size=16, device="cpu"),
                      callbacks=[WOT(WOTConfig(gap=1, segments=1))])
    with pytest.raises(UserError, match="val_fraction"):
        trainer.fit()


def test_config_validation():
    assert WOTConfig().alpha_init == "zero"
    with pytest.raises(UserError):
        WOTConfig(gap=0)
    with pytest.raises(UserError):
        WOTConfig(variant="layer")


def test_state_dict_round_trip_continues_the_same_window():
    trainer, callback = run("static", SparsityConfig(density=0.5))
    copy = WOT(callback.config)
    copy.load_state_dict(callback.state_dict())
    assert copy.steps == callback.steps == 12 and copy.refinements == callback.refinements
    assert torch.equal(copy.alpha, callback.alpha)
    for name, value in callback.w0.items():
        assert torch.equal(copy.w0[name], value)


def test_alpha_update_takes_one_momentum_step_per_parameter_tensor_as_the_reference():
    from sparsetrain.engine.wot import alpha_momentum_steps
    # update_weights of TienjinHuang/WOT, transcribed with plain floats: for each parameter
    # tensor in order, for each segment j: buf[j][b] = 0.9 buf[j][b] + <delta_j, g>; w[j][b] -= lr buf[j][b];
    # clamp to [0, 1] after the loop
    names, blocks = ["a", "b", "c"], {"a": 0, "b": 0, "c": 1}
    grads = {"a": torch.tensor([1.0, -2.0]), "b": torch.tensor([0.5]), "c": torch.tensor([[3.0]])}
    deltas = [{"a": torch.tensor([0.1, 0.2]), "b": torch.tensor([-1.0]), "c": torch.tensor([[0.05]])},
              {"a": torch.tensor([-0.3, 0.0]), "b": torch.tensor([0.4]), "c": torch.tensor([[-0.2]])}]
    weights = [[0.5, 0.2], [0.1, 0.9]]
    buf = [[0.2, -0.1], [0.0, 0.3]]
    for key in names:
        for j in range(2):
            inner = float((deltas[j][key] * grads[key]).sum())
            buf[j][blocks[key]] = buf[j][blocks[key]] * 0.9 + inner
            weights[j][blocks[key]] = weights[j][blocks[key]] - buf[j][blocks[key]] * 0.1
    expected = [[min(max(w, 0.0), 1.0) for w in row] for row in weights]
    alpha, velocity = alpha_momentum_steps(torch.tensor([[0.5, 0.2], [0.1, 0.9]], dtype=torch.float64),
                                           torch.tensor([[0.2, -0.1], [0.0, 0.3]], dtype=torch.float64),
                                           grads, deltas, blocks, lr=0.1, momentum=0.9)
    torch.testing.assert_close(alpha, torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(velocity, torch.tensor(buf, dtype=torch.float64))
    assert WOTConfig().alpha_step == "tensor"
