"""The process group of a run launched by ``torchrun``: rank, world size, collectives.

``torchrun --nproc-per-node N -m sparsetrain train ...`` starts N processes with the
environment variables ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT``; `init_from_env` joins them into one process group (NCCL on CUDA, gloo on
the CPU) and picks this rank's device. Without those variables (a plain ``python -m
sparsetrain`` or ``sparsetrain``) every helper here answers for a group of one process:
rank 0, world size 1, collectives that return their input. Code above the engine calls
these helpers instead of ``torch.distributed`` so that it runs unchanged in both cases.

Everything here is PyTorch's own distributed engine (``torch.distributed``); nothing is
home-made but the mask fingerprint (`mask_fingerprint`) used to prove that every rank holds
the same masks.
"""

from __future__ import annotations

import gc
import hashlib
import os
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.distributed as dist

from sparsetrain.errors import UserError

TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class MaskMismatchError(UserError):
    """The ranks of a distributed run hold different masks: the run stops rather than train on them."""


def launched_by_torchrun() -> bool:
    """True when this process was started by torchrun (its environment names rank and world)."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def is_distributed() -> bool:
    """True inside an initialized process group."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Processes training this run (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank, 0..world_size()-1 (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    """True on the process that writes files, stores results and prints (rank 0)."""
    return rank() == 0


def init_from_env() -> bool:
    """Join the process group torchrun describes in the environment; True if this call joined.

    Does nothing when not launched by torchrun or when the group already exists. With CUDA
    present each rank takes the GPU of its local rank and the group speaks NCCL for CUDA
    tensors and gloo for CPU ones (so a run with ``--device cpu`` works there too); without
    CUDA, gloo.
    """
    if not launched_by_torchrun() or is_distributed():
        return False
    if torch.cuda.is_available():
        local_rank = int(os.environ["LOCAL_RANK"])
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"torchrun started more processes per node than this machine has GPUs "
                            f"({torch.cuda.device_count()}); lower --nproc-per-node")
        torch.cuda.set_device(local_rank)
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, init_method="env://")
    return True


def check_device(device: torch.device) -> None:
    """Refuse a device a rank cannot train on under DDP: an explicit ``cuda:N`` (each rank
    uses the GPU of its local rank)."""
    if is_distributed() and device.type == "cuda" and device.index != torch.cuda.current_device():
        raise UserError(f"device {str(device)!r}: under torchrun each process uses the GPU of its local "
                        "rank; use --device cuda (or auto)")


def shutdown() -> None:
    """Leave the process group (after a barrier, so no rank exits while another still talks).
    Unreachable objects that still hold the group (a DistributedDataParallel reducer in a
    reference cycle) are collected first: a group that outlives `destroy_process_group` is torn
    down at interpreter exit, where gloo's worker threads abort the process ("terminate called
    without an active exception")."""
    if is_distributed():
        gc.collect()
        dist.barrier()  # gloo aborts a rank whose peer tears its connections down mid-exchange
        dist.destroy_process_group()
        gc.collect()


def barrier() -> None:
    """Wait until every rank gets here (no-op in one process)."""
    if is_distributed():
        dist.barrier()


def collective_device() -> torch.device:
    """Where tensors for a collective must live: the current GPU for NCCL, else the CPU."""
    if is_distributed() and dist.get_backend() == "nccl":  # a group of NCCL alone (user-made)
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """The elementwise sum over ranks of ``values`` (float64, on the CPU)."""
    tensor = torch.as_tensor(values, dtype=torch.float64).to(collective_device())
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu()


def average_(tensor: torch.Tensor) -> torch.Tensor:
    """Replace ``tensor`` in place by its mean over ranks; returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(world_size())
    return tensor


def all_gather_int64(values: Sequence[int]) -> list[list[int]]:
    """Every rank's ``values`` (the same length on each), indexed by rank."""
    tensor = torch.tensor(list(values), dtype=torch.int64, device=collective_device())
    if not is_distributed():
        return [tensor.tolist()]
    out = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(out, tensor)
    return [t.tolist() for t in out]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's picklable ``obj``, indexed by rank."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


@torch.no_grad()
def broadcast_tensors(tensors: Iterable[torch.Tensor], src: int = 0) -> None:
    """Overwrite ``tensors`` on every rank with rank ``src``'s, in place."""
    if not is_distributed():
        return
    device = collective_device()
    for tensor in tensors:
        if tensor.device == device:
            dist.broadcast(tensor, src=src)
        else:
            moved = tensor.to(device)
            dist.broadcast(moved, src=src)
            tensor.copy_(moved)


def shard(n: int, rank_: int | None = None, world: int | None = None) -> slice:
    """This rank's contiguous part of a global batch of ``n`` examples.

    Rank r of N takes rows [r·n/N, (r+1)·n/N) (integer bounds; sizes differ by at most one),
    so the ranks' shards laid end to end are the global batch in its order.
    """
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    return slice(r * n // w, (r + 1) * n // w)


def mask_fingerprint(mask: torch.Tensor) -> int:
    """A 63-bit hash (BLAKE2b) of a boolean mask's shape and bits: equal masks, equal hashes."""
    bits = np.packbits(mask.detach().reshape(-1).to("cpu", torch.bool).numpy())
    digest = hashlib.blake2b(bits.tobytes(), digest_size=8, person=b"sparsetrain")
    digest.update(str(tuple(mask.shape)).encode())
    return int.from_bytes(digest.digest(), "little") >> 1


def check_same_masks(named_masks: Sequence[tuple[str, torch.Tensor]], when: str) -> None:
    """Raise `MaskMismatchError` on every rank unless every rank holds the same masks.

    Each rank hashes its masks (`mask_fingerprint`) and all ranks gather the hashes, so all
    of them reach the same verdict and stop together. ``when`` says where in the run the
    check ran (it goes into the message). Call it on every rank at the same point.
    """
    if is_distributed():
        rows = all_gather_int64([1, *(mask_fingerprint(mask) for _, mask in named_masks)])
        _compare([name for name, _ in named_masks], rows, when)


def _compare(names: list[str], rows: list[list[int]], when: str) -> None:
    """The verdict on gathered rows ``[changed, hash per mask]`` (one per rank)."""
    changed = [r for r, row in enumerate(rows) if row[0]]
    if not changed:
        return
    if len(changed) < len(rows):
        still = [r for r in range(len(rows)) if r not in changed]
        raise MaskMismatchError(
            f"the masks of the {len(rows)} ranks differ {when}: they changed on rank(s) "
            f"{_ranks(changed)} but not on rank(s) {_ranks(still)}; the run stops rather than train on "
            "diverged masks")
    for index, name in enumerate(names, 1):
        hashes = [row[index] for row in rows]
        differing = [r for r, h in enumerate(hashes) if h != hashes[0]]
        if differing:
            raise MaskMismatchError(
                f"the masks of the {len(rows)} ranks differ {when}: layer {name!r} on rank(s) "
                f"{_ranks(differing)} is not rank 0's; the run stops rather than train on diverged "
                "masks (a method drew randomness or scores that are not the same on every rank)")


def _ranks(ranks: list[int]) -> str:
    return ", ".join(map(str, ranks))


class MaskGuard:
    """Proves, after every optimizer step, that every rank holds the same masks.

    ``weights`` are a method's sparse weights (``name`` and boolean ``mask``). A rank notices
    that its masks changed from their tensors' version counters (no pass over the masks);
    then it hashes them. One small all-gather per step carries every rank's flag and hashes:
    if any rank's masks changed, all must have changed to the same masks, else every rank
    raises `MaskMismatchError` at the same step. In one process `check` does nothing.
    """

    def __init__(self, weights: Iterable[Any]) -> None:
        self.weights = list(weights)
        self.seen = self._versions()

    def _versions(self) -> list[tuple[int, int]]:
        return [(id(mask), mask._version) for mask in (w.mask for w in self.weights)]

    def check(self, when: str, force: bool = False) -> None:
        """Compare the ranks' masks if any rank's changed since the last check (or ``force``)."""
        if not is_distributed() or not self.weights:
            return
        versions = self._versions()
        changed = force or versions != self.seen
        self.seen = versions
        hashes = [mask_fingerprint(w.mask) if changed else 0 for w in self.weights]
        _compare([w.name for w in self.weights], all_gather_int64([int(changed), *hashes]), when)
