"""Which parameters are sparsified: Linear and Conv1d/2d/3d weights by default."""

from __future__ import annotations

from fnmatch import fnmatchcase

from torch import nn

from sparsetrain.errors import UserError

SPARSIFIABLE_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """All (module name, module) pairs whose ``weight`` may be sparsified, in definition order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, SPARSIFIABLE_LAYERS)]


def select_weights(
    model: nn.Module,
    *,
    dense_first: bool = False,
    dense_last: bool = False,
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
) -> list[str]:
    """Names of the parameters to sparsify, e.g. ``["features.0.weight", "fc.weight"]``.

    ``include``/``exclude`` are glob patterns over parameter names; an empty ``include``
    means every Linear/Conv weight. ``dense_first``/``dense_last`` keep the first/last such
    layer dense.
    """
    names = [f"{module_name}.weight" if module_name else "weight"
             for module_name, _ in prunable_layers(model)]
    if not names:
        raise UserError("the model has no Linear or Conv layer whose weight could be sparsified")
    chosen = list(names)
    if dense_first:
        chosen = [n for n in chosen if n != names[0]]
    if dense_last:
        chosen = [n for n in chosen if n != names[-1]]
    if include:
        chosen = [n for n in chosen if any(fnmatchcase(n, p) for p in include)]
    if exclude:
        chosen = [n for n in chosen if not any(fnmatchcase(n, p) for p in exclude)]
    if not chosen:
        raise UserError("include/exclude/dense_first/dense_last leave no weight to sparsify; "
                        f"sparsifiable weights are: {', '.join(names)}")
    return chosen
