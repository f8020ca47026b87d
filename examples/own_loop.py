"""RigL in your own training loop: three added lines (marked) around a plain PyTorch loop.

Run: python examples/own_loop.py
"""

import torch
import torch.nn.functional as F

import sparsetrain as st


def main(epochs: int = 10, seed: int = 0) -> tuple[float, float]:
    torch.manual_seed(seed)
    data = st.data.load("digits", seed=seed)
    model = st.models.create("mlp", input_shape=data.input_shape, num_classes=data.num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    steps_per_epoch = -(-len(data.train) // 64)
    sparsifier = st.RigL(model, optimizer, density=0.1, distribution="erk",      # (1) wrap
                         total_steps=epochs * steps_per_epoch, update_interval=20, seed=seed)
    for epoch in range(epochs):
        order = torch.Generator().manual_seed(epoch)
        for x, y in st.data.batches(data.train, 64, shuffle=True, generator=order):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            sparsifier.step()                                                    # (2) instead of optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(data.test.x).argmax(1) == data.test.y).float().mean().item()
    print(f"test accuracy {accuracy:.3f} at density {sparsifier.density():.3f}, "
          f"ITOP rate {sparsifier.itop_rate():.3f}")                              # (3) inspect
    return accuracy, sparsifier.density()


if __name__ == "__main__":
    main()
