"""The Hugging Face Trainer and Lightning callbacks keep every invariant over a few hundred steps."""

import lightning
import pytest
import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

from sparsetrain.errors import UserError
from sparsetrain.integrations import hf, lightning as st_lightning


def check_invariants(method, optimizer):
    """Pruned weights and their optimizer state exactly 0; each layer holds its target."""
    for w in method.weights:
        assert int(w.mask.sum()) == method.targets[w.name]
        assert not w.values[~w.mask].any()
        for value in optimizer.state[w.parameter].values():
            if torch.is_tensor(value) and value.shape == w.shape:
                assert not value[~w.mask].any()


class Checker(TrainerCallback):
    def __init__(self, sparsity):
        self.sparsity, self.checked, self.masks_changed = sparsity, 0, False

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        method = self.sparsity.method
        before = getattr(self, "masks", None)
        self.masks = [w.mask.clone() for w in method.weights]
        if before is not None and any(not torch.equal(a, b) for a, b in zip(before, self.masks)):
            self.masks_changed = True
        check_invariants(method, optimizer.optimizer)
        assert method.step_count == state.global_step
        self.checked += 1


def test_hf_trainer_callback_runs_rigl_on_gpt2_and_keeps_the_invariants(tmp_path):
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=12, n_positions=4,
                                       bos_token_id=0, eos_token_id=0))
    gen = torch.Generator().manual_seed(0)
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 12, (64, 4), generator=gen)]
    sparsity = hf.SparsityCallback("rigl", density=0.2, update_interval=10, distribution="uniform")
    checker = Checker(sparsity)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=100, per_device_train_batch_size=2,
                             gradient_accumulation_steps=2, max_grad_norm=0.5, learning_rate=3e-3,
                             save_strategy="no", logging_strategy="no", report_to=[], use_cpu=True,
                             disable_tqdm=True, seed=0)
    Trainer(model=model, args=args, train_dataset=data, callbacks=[sparsity, checker]).train()
    assert checker.checked == 100 and checker.masks_changed  # 100 optimizer steps of 2 micro-batches each
    assert sparsity.method.step_count == 100
    assert model.lm_head.weight is model.transformer.wte.weight
    assert not any(n.startswith(("lm_head", "transformer.wte")) for n, _ in model.named_buffers())
    assert int((model.transformer.wte.weight == 0).sum()) == 0


class TinyModule(lightning.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))

    def training_step(self, batch, _index):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


class LightningChecker(lightning.pytorch.Callback):
    def __init__(self, sparsity):
        self.sparsity, self.checked = sparsity, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        method = self.sparsity.method
        check_invariants(method, trainer.optimizers[0])
        assert method.step_count == trainer.global_step
        self.checked += 1


def test_lightning_callback_keeps_the_invariants_with_accumulation_and_clipping(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, 6, generator=gen), torch.randint(0, 3, (256,), generator=gen)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    module = TinyModule()
    sparsity = st_lightning.SparsityCallback("rigl", density=0.2, update_interval=10, distribution="uniform")
    checker = LightningChecker(sparsity)
    trainer = lightning.Trainer(max_steps=100, accumulate_grad_batches=2, gradient_clip_val=0.5,
                                accelerator="cpu", logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False,
                                default_root_dir=tmp_path, callbacks=[sparsity, checker])
    trainer.fit(module, loader)
    assert checker.checked == 200  # every micro-batch; the method stepped on every second one
    assert sparsity.method.step_count == 100 == trainer.global_step
    assert sparsity.method.total_steps == 100
    assert sparsity.method.itop_rate() > 0.2  # the topology moved


def test_callbacks_refuse_methods_that_read_data_before_training():
    for module in (hf, st_lightning):
        with pytest.raises(UserError, match="reads training batches before training"):
            module.SparsityCallback("snip", density=0.2)
