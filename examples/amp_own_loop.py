"""RigL under mixed precision in your own loop: the loop is unchanged, GradScaler and all.

The method is attached to the optimizer and runs from its step hook, so
``scaler.step(optimizer)`` drives it, and a step the scaler skips (inf/NaN gradients)
skips the method too. Float16 on a GPU, bfloat16 on the CPU.

Run: python examples/amp_own_loop.py
"""

import torch
import torch.nn.functional as F

import sparsetrain as st


def main(epochs: int = 10, seed: int = 0) -> tuple[float, float, int]:
    """Returns (test accuracy, density, optimizer steps the scaler skipped)."""
    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.bfloat16
    data = st.data.load("digits", seed=seed)
    model = st.models.create("mlp", input_shape=data.input_shape, num_classes=data.num_classes).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    steps_per_epoch = -(-len(data.train) // 64)
    sparsifier = st.RigL(model, optimizer, density=0.1, total_steps=epochs * steps_per_epoch,  # the one added line
                         update_interval=20, seed=seed)
    scaler = torch.amp.GradScaler(device)
    iterations = 0
    for epoch in range(epochs):
        order = torch.Generator().manual_seed(epoch)
        for x, y in st.data.batches(data.train, 64, shuffle=True, generator=order):
            optimizer.zero_grad()
            with torch.autocast(device, dtype=dtype):
                loss = F.cross_entropy(model(x.to(device)), y.to(device))
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            scaler.step(optimizer)  # runs RigL too, unless the scaler skips the step
            scaler.update()
            iterations += 1
    model.eval()
    with torch.no_grad(), torch.autocast(device, dtype=dtype):
        accuracy = (model(data.test.x.to(device)).argmax(1).cpu() == data.test.y).float().mean().item()
    skipped = iterations - sparsifier.step_count
    print(f"test accuracy {accuracy:.3f} at density {sparsifier.density():.3f}; "
          f"{sparsifier.step_count} optimizer steps, {skipped} skipped by the scaler")
    return accuracy, sparsifier.density(), skipped


if __name__ == "__main__":
    main()
