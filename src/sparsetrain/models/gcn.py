"""A graph convolutional network over a graph it holds (for the ``csbm`` node-classification data)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from sparsetrain.errors import UserError
from sparsetrain.models import register_model


class GCN(nn.Module):
    """Kipf & Welling 2017, "Semi-Supervised Classification with Graph Convolutional Networks",
    ICLR, as the GCN of the UGTs reference (TianjinYellow/UGTs-LoG, ``UGTs_GNN/models/networks/
    GCN.py``): layers ``H' = Â H W`` with ``Â = D^-1/2 (A + I) D^-1/2``, bias-free Linear layers
    (the reference's GCNConv has no bias), ReLU between layers, no dropout or norm (the
    reference's forward has them commented out).

    The graph (node features, edges with their normalized weights) is held as non-persistent
    buffers; the input is a batch of node indices ``(B, 1)`` (float, as the ``csbm`` data set
    hands them out), every forward propagates over the whole graph and returns the logits of
    the batch's nodes ``(B, classes)``. A batch holding all training nodes is one full-graph
    step, as in the reference.
    """

    def __init__(self, features: np.ndarray, edges: np.ndarray, widths: Sequence[int], num_classes: int) -> None:
        super().__init__()
        nodes = features.shape[0]
        edges = np.concatenate([edges, np.tile(np.arange(nodes), (2, 1))], axis=1)  # A + I
        degree = np.bincount(edges[0], minlength=nodes).astype(np.float64)
        weight = (degree[edges[0]] * degree[edges[1]]) ** -0.5
        self.register_buffer("features", torch.from_numpy(np.ascontiguousarray(features, np.float32)), persistent=False)
        self.register_buffer("edges", torch.from_numpy(np.ascontiguousarray(edges, np.int64)), persistent=False)
        self.register_buffer("edge_weight", torch.from_numpy(weight.astype(np.float32)), persistent=False)
        sizes = [features.shape[1], *widths, num_classes]
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(sizes[:-1], sizes[1:]))

    def propagate(self, h: Tensor) -> Tensor:
        """``Â h``: node i sums ``Â[i, j] h[j]`` over its edges (j -> i) and itself."""
        target, source = self.edges
        return torch.zeros_like(h).index_add_(0, target, h[source] * self.edge_weight[:, None].to(h.dtype))

    def forward(self, x: Tensor) -> Tensor:
        index = x.reshape(x.shape[0], -1)[:, 0].round().long()
        nodes = self.features.shape[0]
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= nodes):
            raise UserError(f"gcn: inputs are node indices in [0, {nodes}); got {int(index.min())}..{int(index.max())} "
                            "(use the csbm data set with the same graph options)")
        h = self.features
        for i, layer in enumerate(self.layers):
            h = self.propagate(layer(h))
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return h[index]


@register_model("gcn", help="graph convolutional network (Kipf & Welling 2017) over the csbm graph; inputs are "
                "node indices; give it the csbm data set's graph options")
def gcn(*, input_shape: tuple[int, ...] = (1,), num_classes: int, widths: Sequence[int] = (64,), nodes: int = 600,
        features: int = 32, p_in: float = 0.03, p_out: float = 0.005, mean_shift: float = 1.0,
        graph_seed: int = 0) -> nn.Module:
    """A GCN (`GCN`) over `sparsetrain.data.graph.csbm` with these options and ``classes =
    num_classes``: the same graph the ``csbm`` data set with the same options draws."""
    from sparsetrain.data.graph import csbm  # the graph is data: drawn by the data set's generator

    if tuple(input_shape) != (1,):
        raise UserError(f"gcn takes node indices of input shape (1,), got {tuple(input_shape)}")
    widths = tuple(int(w) for w in widths)
    if any(w < 1 for w in widths):
        raise UserError(f"gcn option widths must be positive integers, got {widths}")
    g = csbm(nodes, num_classes, features, p_in, p_out, mean_shift, graph_seed)
    return GCN(g.features, g.edges, widths, num_classes)
