"""sparsetrain: sparse neural networks on PyTorch.

    import sparsetrain as st
    sparsifier = st.RigL(model, optimizer, density=0.1, total_steps=10_000)
    ...  # in your loop, call sparsifier.step() instead of optimizer.step()
"""

__version__ = "0.1.0"

from sparsetrain import backends, data, distributions, models  # noqa: F401  (registries fill on import)
from sparsetrain.algorithms import (
    MEST, METHODS, SET, Dense, Method, RigL, Sparsifier, Static, create, list_methods,
)

__all__ = ["Dense", "MEST", "METHODS", "Method", "RigL", "SET", "Sparsifier", "Static",
           "create", "data", "distributions", "list_methods", "models"]

from sparsetrain import criteria  # noqa: E402,F401  (criteria registry)
from sparsetrain.algorithms import GMP, PaI, SNIP, GraNet, GraSP, SynFlow  # noqa: E402

__all__ += ["GMP", "GraNet", "GraSP", "PaI", "SNIP", "SynFlow", "criteria"]
from sparsetrain.algorithms import DSN, EdgePopup, SLaK, SupTickets  # noqa: E402

__all__ += ["DSN", "EdgePopup", "SLaK", "SupTickets"]

from sparsetrain.analysis import summary  # noqa: E402
from sparsetrain.sparse import register_layer  # noqa: E402

__all__ += ["register_layer", "summary"]
