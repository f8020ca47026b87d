"""A generated node-classification graph: the contextual stochastic block model (CSBM).

Samples are node indices: ``x`` of a sample is ``[i]`` (float), its label the class of node i.
The graph itself (features and edges) is not in the samples: the ``gcn`` model rebuilds the
same graph from the same options (`csbm` is a pure function of them) and propagates over all
of it, returning the rows of the batch's nodes. Pass the ``gcn`` model the options you pass the
data set (the defaults agree).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparsetrain.data.base import DatasetSplits, carve_validation, register_dataset, stratified_split
from sparsetrain.errors import UserError


@dataclass(frozen=True)
class Graph:
    """``features`` (N, F) float32, undirected ``edges`` (2, E) int64 with both directions and no
    self-loops, ``labels`` (N,) int64."""

    features: np.ndarray
    edges: np.ndarray
    labels: np.ndarray


def csbm(nodes: int = 600, classes: int = 4, features: int = 32, p_in: float = 0.03, p_out: float = 0.005,
         mean_shift: float = 1.0, graph_seed: int = 0) -> Graph:
    """A contextual stochastic block model (Deshpande et al. 2018), drawn from ``graph_seed``.

    Classes are blocks of equal size (``nodes % classes`` blocks one larger), randomly placed;
    each unordered pair of distinct nodes is an edge with probability ``p_in`` within a class and
    ``p_out`` across; node i's features are ``mu[y_i] + N(0, I)`` with class means ``mu[c]``
    drawn N(0, I) and scaled to norm ``mean_shift``."""
    if nodes < 2 * classes or classes < 2 or features < 1:
        raise UserError(f"csbm needs classes >= 2, nodes >= 2 * classes and features >= 1; got nodes={nodes}, "
                        f"classes={classes}, features={features}")
    for name, p in (("p_in", p_in), ("p_out", p_out)):
        if not 0 <= p <= 1:
            raise UserError(f"csbm option {name} must be a probability in [0, 1], got {p}")
    rng = np.random.default_rng(graph_seed)
    labels = rng.permutation(np.arange(nodes) % classes).astype(np.int64)
    means = rng.standard_normal((classes, features))
    means *= mean_shift / np.linalg.norm(means, axis=1, keepdims=True)
    x = (means[labels] + rng.standard_normal((nodes, features))).astype(np.float32)
    i, j = np.triu_indices(nodes, k=1)
    p = np.where(labels[i] == labels[j], p_in, p_out)
    keep = rng.random(len(i)) < p
    i, j = i[keep], j[keep]
    edges = np.stack([np.concatenate([i, j]), np.concatenate([j, i])]).astype(np.int64)
    return Graph(x, edges, labels)


@register_dataset("csbm", help="generated graph (contextual stochastic block model): samples are node indices "
                  "for the gcn model; half the nodes (stratified) are the test set")
def load_csbm(*, seed: int, val_fraction: float, data_dir: str | None = None, nodes: int = 600, classes: int = 4,
              features: int = 32, p_in: float = 0.03, p_out: float = 0.005, mean_shift: float = 1.0,
              graph_seed: int = 0) -> DatasetSplits:
    """The nodes of `csbm` (same options) as samples ``[index]``: a stratified half, fixed by
    ``graph_seed``, is the test set; validation is carved from the other half by the run seed."""
    g = csbm(nodes, classes, features, p_in, p_out, mean_shift, graph_seed)
    index = np.arange(nodes, dtype=np.float32)[:, None]
    train, test = stratified_split(g.labels, 0.5, graph_seed)
    return carve_validation("csbm", index[train], g.labels[train], index[test], g.labels[test], seed=seed,
                            val_fraction=val_fraction, num_classes=classes)
