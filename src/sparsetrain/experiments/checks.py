"""Checks run before a command trains anything: everything a user can get wrong in the
output folder, the device or the grid is reported in one sentence before any model, data
or run folder is made."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from sparsetrain.errors import UserError


def check_out_folder(out: Path, flag: str = "--out") -> None:
    """``out`` is a folder we may write into (existing or creatable), not a file."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{flag} {str(out)!r} is a file; give a folder (it is created if missing)")
    parent = next((p for p in [out, *out.parents] if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise UserError(f"{flag} {str(out)!r}: {str(parent)!r} is a file, not a folder")
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {str(out)!r}: the folder {str(parent)!r} is not writable")


def check_device(name: str) -> None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` with GPU N present."""
    import torch

    if name in ("auto", "cpu"):
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"device must be auto, cpu, cuda or cuda:N; got {name!r}") from None
    if device.type != "cuda":
        raise UserError(f"device must be auto, cpu, cuda or cuda:N; got {name!r}")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise UserError(f"device {name!r} asks for CUDA, but no CUDA GPU is available here; "
                        "use --device cpu or auto")
    if device.index is not None and device.index >= count:
        raise UserError(f"device {name!r} does not exist: this machine has {count} CUDA GPU(s), "
                        f"cuda:0 to cuda:{count - 1}")


def check_before_training(spec: Any) -> None:
    """What a run spec can get wrong that the config classes cannot see: the device."""
    check_device(spec.train.device)


def check_grid(runs: Sequence[Any]) -> None:
    """Devices and data folders of every run of a grid, before any worker starts."""
    for entry in runs:
        spec = getattr(entry, "spec", entry)
        exp = getattr(spec, "experiment", None)
        if exp is None:
            continue
        check_before_training(spec)
        if exp.data_dir is not None and Path(exp.data_dir).expanduser().exists() \
                and not Path(exp.data_dir).expanduser().is_dir():
            raise UserError(f"data_dir {exp.data_dir!r} is a file; give the folder holding the dataset files")


def check_streamed(exp: Any, data: Any) -> None:
    """A dataset streamed from disk (imagenet_folder) refuses the options that need its
    splits in memory: the data scenarios, robustness evaluation and adversarial training."""
    from sparsetrain.data import in_memory
    from sparsetrain.scenarios.apply import describe

    if in_memory(data):
        return
    used = [] if describe(exp) == "clean" else [describe(exp)]
    used += [f"{key}={getattr(exp, key)}" for key in ("robust_eval", "wot")
             if getattr(exp, key) != "none"]
    used += ["adversarial_training"] if exp.adversarial_training else []
    if used:
        raise UserError(f"dataset {exp.dataset!r} streams its images from disk; {', '.join(used)} needs the "
                        "whole dataset in memory (use a reader such as imagefolder, or leave it off)")
