"""The shared language of sparsity: which weights are sparse, their masks, exact top-k.

Algorithms talk to weights only through `SparseWeight` (see ``weights.py``); backends
register a factory in `BACKENDS`.
"""

from sparsetrain.sparse.optim_state import zero_optimizer_state
from sparsetrain.sparse.selection import SPARSIFIABLE_LAYERS, prunable_layers, select_weights
from sparsetrain.sparse.topk import generator, random_scores, seed_for, topk_mask
from sparsetrain.sparse.weights import BACKENDS, SparseWeight, attach, dense_model, dense_state, dense_twin

__all__ = [
    "BACKENDS", "SPARSIFIABLE_LAYERS", "SparseWeight", "attach", "dense_model", "dense_state", "dense_twin", "generator", "prunable_layers",
    "random_scores", "seed_for", "select_weights", "topk_mask", "zero_optimizer_state",
]
