"""Resuming from a checkpoint under the Hugging Face Trainer and Lightning gives exactly the
masks, weights and method state of the run that was never interrupted."""

import shutil

import lightning
import pytest
import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

from sparsetrain.errors import UserError
from sparsetrain.integrations import hf, lightning as st_lightning


def _gpt2_run(out, resume=None, **callback):
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=12, n_positions=4,
                                       bos_token_id=0, eos_token_id=0))
    gen = torch.Generator().manual_seed(0)
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 12, (32, 4), generator=gen)]
    sparsity = hf.SparsityCallback("rigl", density=0.3, update_interval=2, distribution="uniform", stop_fraction=1.0,
                                   **callback)
    args = TrainingArguments(output_dir=str(out), max_steps=8, per_device_train_batch_size=4, learning_rate=3e-3,
                             save_strategy="steps", save_steps=4, logging_strategy="no", report_to=[],
                             use_cpu=True, disable_tqdm=True, seed=0)
    Trainer(model=model, args=args, train_dataset=data, callbacks=[sparsity]).train(resume_from_checkpoint=resume)
    return model, sparsity.method


def test_hf_trainer_resumes_masks_weights_and_method_state_exactly(tmp_path):
    whole, method = _gpt2_run(tmp_path / "a")
    shutil.rmtree(tmp_path / "a" / "checkpoint-8")
    shutil.copytree(tmp_path / "a" / "checkpoint-4", tmp_path / "elsewhere")
    resumed, again = _gpt2_run(tmp_path / "a", resume=True)
    assert again.step_count == method.step_count == 8
    masks_at_4 = torch.load(tmp_path / "elsewhere" / hf.STATE_FILE, weights_only=True)["masks"]
    final = {k: v for k, v in whole.state_dict().items() if k.endswith("_mask")}
    assert any(not torch.equal(masks_at_4[k], final[k]) for k in final)  # the update at step 6 moved them
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert again.itop_rate() == method.itop_rate() > 0.3
    # a checkpoint outside output_dir is found through resume_from, and refused clearly without it
    with pytest.raises(UserError, match="no sparsetrain_method.pt"):
        _gpt2_run(tmp_path / "b", resume=str(tmp_path / "elsewhere"))
    moved, _ = _gpt2_run(tmp_path / "c", resume=str(tmp_path / "elsewhere"), resume_from=str(tmp_path / "elsewhere"))
    for key, value in whole.state_dict().items():
        assert torch.equal(value, moved.state_dict()[key]), key


class TinyModule(lightning.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))

    def training_step(self, batch, _index):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def _lightning_run(root, max_steps, ckpt=None):
    gen = torch.Generator().manual_seed(0)
    # every batch the same: Lightning's own resume replays a plain DataLoader's batches in its own order
    x, y = torch.randn(4, 6, generator=gen).repeat(4, 1), torch.randint(0, 3, (4,), generator=gen).repeat(4)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    module = TinyModule()
    sparsity = st_lightning.SparsityCallback("set", density=0.3, update_interval=2, distribution="uniform",
                                             stop_fraction=1.0)
    saver = lightning.pytorch.callbacks.ModelCheckpoint(dirpath=root, every_n_epochs=1, save_top_k=-1)
    trainer = lightning.Trainer(max_steps=max_steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                                enable_model_summary=False, default_root_dir=root, callbacks=[sparsity, saver])
    trainer.fit(module, loader, ckpt_path=ckpt)
    return module, sparsity.method


def test_lightning_resumes_masks_weights_and_method_state_exactly(tmp_path):
    whole, method = _lightning_run(tmp_path / "a", 8)
    checkpoint = next(p for p in (tmp_path / "a").iterdir() if "step=4" in p.name)
    masks_at_4 = {k: v for k, v in torch.load(checkpoint, weights_only=False)["state_dict"].items() if k.endswith("_mask")}
    assert any(not torch.equal(v, whole.state_dict()[k]) for k, v in masks_at_4.items())  # updates after step 4
    resumed, again = _lightning_run(tmp_path / "b", 8, ckpt=str(checkpoint))
    assert again.step_count == method.step_count == 8
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert again.itop_rate() == method.itop_rate() > 0.3
