"""Checkpoints: everything needed to resume a run bit-for-bit, written atomically."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Any

import torch

from sparsetrain.atomic import atomic_torch_save
from sparsetrain.errors import UserError, load_error


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
                             "python_version": random.getstate()[0], "python_gauss": random.getstate()[2]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Serialize ``state`` to ``path`` via a temporary file and an atomic rename."""
    atomic_torch_save(state, path)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code from the file)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # torch's message suggests weights_only=False: never do that
        raise UserError(f"checkpoint {str(path)!r} cannot be read safely: it is damaged or holds "
                        "objects other than tensors and plain values") from None
    except Exception as exc:  # corrupt or foreign file
        raise load_error("checkpoint", path, exc) from None
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {str(path)!r} holds a {type(state).__name__}, not a checkpoint")
    return state


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 300 else line[:300] + " ..."


def damaged_checkpoint(path: str | os.PathLike, exc: BaseException) -> UserError:
    """One sentence for a checkpoint at ``path`` that could be read but not applied."""
    reason = f"it has no entry {exc}" if isinstance(exc, KeyError) else _first_line(exc)
    return UserError(f"checkpoint {str(path)!r} is damaged or from another run: {reason}")


def check_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Raise a ValueError unless every per-weight state tensor (momentum, Adam moments) of
    ``optimizer`` has the shape of its parameter (a loaded state is otherwise unchecked)."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                    raise ValueError(f"optimizer state {key!r} has shape {tuple(value.shape)}, "
                                     f"its weights {tuple(param.shape)}")
