"""RigL in your own loop on several processes: the method around a DistributedDataParallel model.

Run: torchrun --nproc-per-node 2 examples/ddp_own_loop.py

Each process trains on its share of every epoch (DistributedSampler). DDP averages the dense
gradient over the processes in backward(), before sparsifier.step() masks it, so RigL grows
the same weights on every rank; its random draws are seeded, so SET's would agree as well.
A MaskGuard proves it after every step: if the ranks' masks ever differed, every rank would
stop with the same MaskMismatchError.
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import sparsetrain as st
from sparsetrain.engine.distributed import MaskGuard


def main(epochs: int = 10, seed: int = 0) -> tuple[float, float]:
    dist.init_process_group("gloo")  # torchrun's environment says who and where the others are
    torch.manual_seed(seed)  # the same initial weights everywhere (DDP also copies rank 0's)
    data = st.data.load("digits", seed=seed)
    model = DistributedDataParallel(st.models.create("mlp", input_shape=data.input_shape,
                                                     num_classes=data.num_classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train = TensorDataset(data.train.x, data.train.y)
    sampler = DistributedSampler(train, shuffle=True, seed=seed)
    loader = DataLoader(train, batch_size=32, sampler=sampler)  # 32 per process, 64 per step on 2
    sparsifier = st.RigL(model, optimizer, density=0.1, distribution="erk",  # the DDP model: it is unwrapped
                         total_steps=epochs * len(loader), update_interval=20, seed=seed)
    guard = MaskGuard(sparsifier.weights)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for step, (x, y) in enumerate(loader, 1):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()  # DDP averages every gradient here
            sparsifier.step()                         # instead of optimizer.step()
            guard.check(f"after step {step} of epoch {epoch + 1}")
    model.eval()
    with torch.no_grad():
        accuracy = (model.module(data.test.x).argmax(1) == data.test.y).float().mean().item()
    if dist.get_rank() == 0:
        print(f"test accuracy {accuracy:.3f} at density {sparsifier.density():.3f}, ITOP rate "
              f"{sparsifier.itop_rate():.3f}; masks identical on all {dist.get_world_size()} ranks "
              "after every step")
    dist.barrier()  # leave together: gloo aborts a rank whose peer is already gone
    dist.destroy_process_group()
    return accuracy, sparsifier.density()


if __name__ == "__main__":
    main()
