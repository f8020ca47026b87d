"""How a sparse weight is stored and multiplied; each backend registers in `sparse.BACKENDS`."""

from sparsetrain.backends import masked  # noqa: F401  (registers "masked")
from sparsetrain.backends import sparse  # noqa: F401,E402  (registers "sparse")
from sparsetrain.backends.export import export_model, export_shrunk, load_exported, load_shrunk  # noqa: E402
from sparsetrain.backends.sparse import fuse_activations, to_masked, to_sparse, unfuse_activations  # noqa: E402

__all__ = ["export_model", "export_shrunk", "fuse_activations", "load_exported", "load_shrunk", "to_masked",
           "to_sparse", "unfuse_activations"]
