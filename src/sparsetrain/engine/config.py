"""The Trainer's options: optimizer, learning-rate schedule, epochs and batches."""

from __future__ import annotations

from dataclasses import dataclass

from sparsetrain.config import check_range, option, validate_choices
from sparsetrain.data.augment import AUGMENTATIONS
from sparsetrain.engine.precision import PRECISIONS


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = option(10, "number of passes over the training set")
    start_epoch: int = option(0, "the epoch of the `epochs`-long schedule training starts at: the lr schedule "
                              "and batch order continue from there (lottery levels rewound to an epoch, as "
                              "open_lth)")
    batch_size: int = option(128, "examples per optimizer step")
    optimizer: str = option("sgd", "optimizer", choices=("sgd", "adam", "adamw"))
    lr: float = option(0.1, "peak learning rate")
    momentum: float = option(0.9, "SGD momentum (Adam/AdamW: beta1)")
    weight_decay: float = option(5e-4, "L2 penalty (AdamW: decoupled weight decay)")
    nesterov: bool = option(False, "Nesterov momentum for SGD")
    lr_schedule: str = option("cosine", "learning-rate schedule after warm-up",
                              choices=("cosine", "step", "constant"))
    warmup_epochs: float = option(0.0, "epochs of linear warm-up from 0 to lr")
    lr_milestones: tuple[float, ...] = option((0.5, 0.75), "step schedule: fractions of training where lr is multiplied by lr_gamma")
    lr_gamma: float = option(0.1, "step schedule: factor applied at each milestone")
    device: str = option("auto", "auto (CUDA when present), cpu, cuda or cuda:N")
    augment: str = option("none", "augmentation of each training batch: crop_flip = random crop "
                          "with 4-pixel zero padding and horizontal flip (images)",
                          choices=("none", *AUGMENTATIONS))
    precision: str = option("fp32", "arithmetic of forward and backward: fp32, bf16 (autocast) or fp16 (autocast "
                            "and a GradScaler; a step with inf/NaN gradients is skipped, masks included); "
                            "masked backend only", choices=PRECISIONS)
    channels_last: bool = option(False, "4-D conv weights and image batches in channels-last memory format "
                                 "(faster convolutions on GPUs); masked backend only; no effect without 4-D weights")
    compile: bool = option(False, "torch.compile the model (masked backend only; the first steps are slow)")
    workers: int = option(0, "DataLoader processes decoding a streamed dataset (imagenet_folder); 0 decodes "
                          "in the training process; the batches are the same for any number")

    def __post_init__(self) -> None:
        validate_choices(self)
        check_range("epochs", self.epochs, 1)
        check_range("start_epoch", self.start_epoch, 0, self.epochs, high_open=True)
        check_range("batch_size", self.batch_size, 1)
        check_range("workers", self.workers, 0)
        check_range("lr", self.lr, 0, low_open=True)
        check_range("momentum", self.momentum, 0, 1, high_open=True)
        check_range("weight_decay", self.weight_decay, 0)
        check_range("warmup_epochs", self.warmup_epochs, 0, self.epochs)
        check_range("lr_gamma", self.lr_gamma, 0, 1, low_open=True)
        for milestone in self.lr_milestones:
            check_range("lr_milestones", milestone, 0, 1)
