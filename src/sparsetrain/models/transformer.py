"""A small Transformer encoder classifier whose every weight is an nn.Linear weight."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sparsetrain.errors import UserError
from sparsetrain.models import register_model


class Attention(nn.Module):
    """Multi-head self-attention with separate q, k, v and output nn.Linear projections.

    Written out (not nn.MultiheadAttention) so that sparsifiers see four Linear weights.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = (proj(x).view(b, n, self.heads, d // self.heads).transpose(1, 2)
                   for proj in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm encoder block: x + attn(LN(x)), then x + MLP(LN(x)) with MLP ratio 2."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """Transformer encoder classifier (Vaswani et al., "Attention is all you need", 2017),
    with the patch embedding of ViT (Dosovitskiy et al., ICLR 2021).

    A (C, L) sequence is cut into patches of ``patch`` steps along L; a (C, H, W) image into
    ``patch`` x ``patch`` squares. Inputs whose sizes ``patch`` does not divide are padded with
    zeros at the end. Each patch is embedded by a Linear layer, a learned positional
    embedding is added, ``depth`` pre-norm blocks follow, then a final LayerNorm, mean
    pooling over tokens and a Linear head.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        patch: int = 4,
    ) -> None:
        super().__init__()
        self.input_shape = input_shape
        self.patch = patch
        channels, *sizes = input_shape
        self.grid = [math.ceil(s / patch) for s in sizes]
        tokens = math.prod(self.grid)
        self.embed = nn.Linear(channels * patch ** len(sizes), dim)
        self.pos = nn.Parameter(torch.zeros(1, tokens, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def patchify(self, x: Tensor) -> Tensor:
        """(B, C, *sizes) -> (B, tokens, C * patch**len(sizes))."""
        p = self.patch
        b, c = x.shape[:2]
        pads: list[int] = []
        for s, g in zip(reversed(x.shape[2:]), reversed(self.grid)):
            pads += [0, g * p - s]
        if any(pads):
            x = F.pad(x, pads)
        if x.dim() == 3:  # (B, C, L) -> (B, L/p, C*p)
            return x.reshape(b, c, self.grid[0], p).permute(0, 2, 1, 3).reshape(b, self.grid[0], -1)
        gh, gw = self.grid  # (B, C, H, W) -> (B, gh*gw, C*p*p)
        x = x.reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, gh * gw, -1)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == len(self.input_shape):  # channel dim left out: one channel
            x = x.unsqueeze(1)
        h = self.embed(self.patchify(x)) + self.pos
        h = self.norm(self.blocks(h))
        return self.head(h.mean(dim=1))


@register_model("transformer", help="small pre-norm Transformer encoder on 1D or 2D patches")
def transformer(
    *,
    input_shape: tuple[int, ...] = (1, 40),
    num_classes: int,
    dim: int = 64,
    depth: int = 2,
    heads: int = 4,
    patch: int = 4,
) -> nn.Module:
    """Transformer classifier (see `Transformer`); a 1-D ``input_shape`` (L,) means one channel."""
    if len(input_shape) == 1:
        input_shape = (1, *input_shape)
    if len(input_shape) not in (2, 3):
        raise UserError(
            f"transformer needs an input_shape of (C, L) or (C, H, W), got {input_shape}"
        )
    for key, value in (("dim", dim), ("depth", depth), ("heads", heads), ("patch", patch)):
        if value < 1:
            raise UserError(f"transformer option {key} must be a positive integer, got {value}")
    if dim % heads:
        raise UserError(f"transformer option heads ({heads}) must divide dim ({dim})")
    return Transformer(input_shape, num_classes, dim=dim, depth=depth, heads=heads, patch=patch)
