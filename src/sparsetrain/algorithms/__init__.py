"""Every sparsity method, registered by name in `METHODS`.

Each method wraps a model and its optimizer; call ``method.step()`` instead of
``optimizer.step()`` in any training loop.
"""

from sparsetrain.algorithms.base import Method, MethodConfig, Sparsifier, SparsityConfig
from sparsetrain.algorithms.dynamic import DynamicConfig, DynamicSparsifier
from sparsetrain.algorithms.mest import MEST, MESTConfig
from sparsetrain.algorithms.registry import METHODS, config_class, create, list_methods, register_method
from sparsetrain.algorithms.rigl import RigL
from sparsetrain.algorithms.set import SET
from sparsetrain.algorithms.static import Dense, Static
from sparsetrain.algorithms.pai import PaI, PaIConfig, SNIP, GraSP, SynFlow
from sparsetrain.algorithms.gmp import GMP, GMPConfig, GradualConfig, GradualPruning
from sparsetrain.algorithms.granet import GraNet, GraNetConfig
from sparsetrain.algorithms.pruning import (
    ALLOCATIONS, allocation_counts, apply_masks, global_counts, masks_from_scores, select_masks,
)

__all__ = [
    "METHODS", "MEST", "MESTConfig", "Dense", "DynamicConfig", "DynamicSparsifier", "Method",
    "MethodConfig", "RigL", "SET", "Sparsifier", "SparsityConfig", "Static", "config_class",
    "create", "list_methods", "register_method",
]
__all__ += [
    "ALLOCATIONS", "GMP", "GMPConfig", "GraNet", "GraNetConfig", "GraSP", "GradualConfig",
    "GradualPruning", "PaI", "PaIConfig", "SNIP", "SynFlow", "allocation_counts", "apply_masks",
    "global_counts", "masks_from_scores", "select_masks",
]
from sparsetrain.algorithms.after_training import (  # noqa: E402  (pruning after training, lottery levels)
    IMP, LAMP, AfterTraining, GlobalMagnitude, LayerAdaptiveDP, LayerMagnitude, PruneConfig,
)

__all__ += ["AfterTraining", "GlobalMagnitude", "IMP", "LAMP", "LayerAdaptiveDP", "LayerMagnitude", "PruneConfig"]
from sparsetrain.algorithms.supermask import EdgePopup, SupermaskConfig  # noqa: E402

__all__ += ["EdgePopup", "SupermaskConfig"]
from sparsetrain.algorithms.suptickets import (  # noqa: E402
    SupTickets, SupTicketsConfig, SupTicketsGraNet, SupTicketsGraNetConfig,
)

__all__ += ["SupTickets", "SupTicketsConfig", "SupTicketsGraNet", "SupTicketsGraNetConfig"]
from sparsetrain.algorithms.dsn import DSN, DSNConfig  # noqa: E402

__all__ += ["DSN", "DSNConfig"]
from sparsetrain.algorithms.slak import SLaK, SLaKConfig  # noqa: E402

__all__ += ["SLaK", "SLaKConfig"]
from sparsetrain.algorithms.chase import Chase, ChaseConfig  # noqa: E402

__all__ += ["Chase", "ChaseConfig"]
from sparsetrain.algorithms.srigl import SRigL, SRigLConfig  # noqa: E402

__all__ += ["SRigL", "SRigLConfig"]
from sparsetrain.algorithms.ugts import UGTs, UGTsConfig, ugts_density  # noqa: E402

__all__ += ["UGTs", "UGTsConfig", "ugts_density"]
