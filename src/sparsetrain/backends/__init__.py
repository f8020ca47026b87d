"""How a sparse weight is stored and multiplied; each backend registers in `sparse.BACKENDS`."""

from sparsetrain.backends import masked  # noqa: F401  (registers "masked")
from sparsetrain.backends import sparse  # noqa: F401,E402  (registers "sparse")
