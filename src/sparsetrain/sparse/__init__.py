"""The shared language of sparsity: which weights are sparse (the layer registry in
``layers.py``), their masks, exact top-k, structures (``structures.py``: N:M, block, channel).

Algorithms talk to weights only through `SparseWeight` (see ``weights.py``); backends
register a factory in `BACKENDS`.
"""

from sparsetrain.sparse.optim_state import zero_optimizer_state
from sparsetrain.sparse.layers import (
    LAYERS, SPARSIFIABLE_LAYERS, LayerKind, Selection, prunable_layers, register_layer, registered_weights,
    choose_weights, select_weights, tied_names,
)
from sparsetrain.sparse.structures import STRUCTURES, Structure, parse_structure
from sparsetrain.sparse.topk import generator, random_scores, seed_for, topk_mask
from sparsetrain.sparse.weights import BACKENDS, SparseWeight, attach, dense_model, dense_state, dense_twin

__all__ = [
    "BACKENDS", "LAYERS", "STRUCTURES", "Structure", "parse_structure", "LayerKind", "SPARSIFIABLE_LAYERS", "Selection", "SparseWeight", "attach", "dense_model",
    "dense_state", "dense_twin", "generator", "prunable_layers", "random_scores", "register_layer",
    "choose_weights", "registered_weights", "seed_for", "select_weights", "tied_names", "topk_mask", "zero_optimizer_state",
]
