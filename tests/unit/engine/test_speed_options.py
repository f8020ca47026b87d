"""channels_last and compile on the masked backend: a compiled model sees mask updates, and
channels-last training keeps exact masks and follows the default layout's losses.

The compile tests use torch.compile's ``aot_eager`` backend: the same graph capture (Dynamo and
AOTAutograd, where parameters and mask buffers become graph inputs or constants) as the default
``inductor``, without its C++ code generation, which takes 10-15 s per graph on this CPU. The GPU
check (benchmarks/gpu_check.py) runs the mask-change check with inductor.
"""

from __future__ import annotations

import torch
from torch import nn

import sparsetrain as st
from sparsetrain.algorithms.rigl import RigLConfig
from sparsetrain.data import DatasetSplits, TensorData
from sparsetrain.engine import TrainConfig, Trainer
from sparsetrain.engine import precision


def splits(n: int = 64) -> DatasetSplits:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, 6, 6, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0).long() + 2 * (x[:, 1, :3].mean((1, 2)) > 0).long()
    return DatasetSplits("img", TensorData(x, y), TensorData(x[:16], y[:16]), TensorData(x[:16], y[:16]), 4, (2, 6, 6))


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(128, 4))


def trainer(device: str = "cpu", **options) -> Trainer:
    config = TrainConfig(epochs=2, batch_size=16, lr=0.05, device=device, **options)
    method = RigLConfig(density=0.4, distribution="uniform", update_interval=2, drop_fraction=0.5)
    return Trainer(cnn(), splits(), config, method="rigl", method_config=method, seed=2)


def test_a_compiled_model_sees_mask_changes(device):
    model = cnn().to(device)
    sparsifier = st.create("static", model, torch.optim.SGD(model.parameters(), lr=0.1), density=0.5)
    precision.compile_model(model, backend="aot_eager")
    x = torch.randn(4, 2, 6, 6, device=device)
    before = model(x)
    torch.testing.assert_close(before, model.forward(x))  # forward() bypasses the compiled call
    layer = sparsifier.weights[0]
    layer.set_mask(layer.mask & (torch.arange(layer.numel, device=layer.mask.device).reshape(layer.shape) % 3 == 0))  # drop weights
    after = model(x)
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, model.forward(x), rtol=0, atol=0)
    assert all("_orig_mod" not in k for k in model.state_dict())  # compiled in place: same checkpoints


def test_trainer_compile_trains_rigl_with_exact_masks_and_eager_evaluation(monkeypatch, device):
    monkeypatch.setattr(precision, "COMPILE_BACKEND", "aot_eager")
    compiled = trainer(device, compile=True)
    history = compiled.fit()
    method = compiled.method
    for w in method.weights:
        assert int(w.mask.sum()) == method.targets[w.name] and not w.values[~w.mask].any()
    x = compiled.data.test.x.to(device)
    with torch.no_grad():
        compiled.model.eval()
        torch.testing.assert_close(compiled.model(x), compiled.model.forward(x))
    eager = trainer(device)
    eager_history = eager.fit()  # the compiled run saw every RigL update: it follows the eager one
    torch.testing.assert_close(torch.tensor([h["train_loss"] for h in history]),
                               torch.tensor([h["train_loss"] for h in eager_history]), rtol=1e-5, atol=1e-6)
    assert all(torch.equal(a.mask, b.mask) for a, b in zip(method.weights, eager.method.weights))


def test_channels_last_training_keeps_masks_and_follows_the_default_layout(device):
    fast = trainer(device, channels_last=True)
    conv = fast.model[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    history = fast.fit()
    assert conv.is_contiguous(memory_format=torch.channels_last)  # still after training
    plain = trainer(device).fit()
    torch.testing.assert_close(torch.tensor([h["train_loss"] for h in history]),
                               torch.tensor([h["train_loss"] for h in plain]), rtol=1e-4, atol=1e-5)
    method = fast.method
    for w in method.weights:
        assert int(w.mask.sum()) == method.targets[w.name] and not w.values[~w.mask].any()


def test_channels_last_without_conv2d_is_a_noop_with_a_note(capsys):
    model = nn.Sequential(nn.Flatten(), nn.Linear(72, 4))
    assert not precision.to_channels_last(model)
    Trainer(model, splits(), TrainConfig(epochs=1, batch_size=16, device="cpu", channels_last=True),
            method="dense", seed=0)
    assert "channels_last has no effect on this model" in capsys.readouterr().err
