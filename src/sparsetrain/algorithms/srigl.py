"""SRigL: RigL with a constant fan-in per neuron and dynamic neuron ablation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from sparsetrain.algorithms.dynamic import _keep_regrown
from sparsetrain.algorithms.registry import register_method
from sparsetrain.algorithms.rigl import RigL, RigLConfig
from sparsetrain.config import check_range, option
from sparsetrain.errors import UserError
from sparsetrain.sparse import generator, random_scores, topk_mask
from sparsetrain.sparse.layers import registered_weights


@dataclass(frozen=True)
class SRigLConfig(RigLConfig):
    """The released code's defaults (calgaryml/condensed-sparsity ``configs/config.yaml``, the CIFAR
    model groups): ERK, alpha 0.3, delta 100, T_end at 75%, dynamic ablation with gamma_sal 0.3 of
    the sparse fan-in, the classifier never ablated, the optimizer stepped on update iterations."""

    update_interval: int = option(100, "steps (or epochs, see interval_unit) between topology updates "
                                       "(delta: 100 in the reference's CIFAR configs)")
    drop_fraction: float = option(0.3, "fraction of each layer's active weights dropped at the first update "
                                       "(alpha), cosine-decayed to 0 at stop_fraction")
    stop_fraction: float = option(0.75, "fraction of training after which the topology is frozen (T_end)")
    skip_step_on_update: bool = option(False, "on update iterations only rewire, without the optimizer step "
                                       "(False: step, then rewire, as the reference's train_rigl.py)")
    ablation: bool = option(True, "ablate neurons with too few salient weights (dynamic_ablation)")
    gamma_sal: float = option(0.3, "a neuron with fewer than max(1, int(gamma_sal x fan-in)) salient weights is "
                                   "ablated (min_salient_weights_per_neuron; 0.3 for CNNs, 0.95 for ViT)")
    gamma_of: str = option("sparse", "the fan-in gamma_sal multiplies: sparse = the layer's constant fan-in "
                                     "before ablation (use_sparse_const_fan_in_for_ablation), dense = in x kernel",
                           choices=("sparse", "dense"))
    ablate_last: bool = option(False, "also ablate neurons of the model's last layer (the reference's configs "
                                      "exempt the classifier through no_ablation_module_names)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("gamma_sal", self.gamma_sal, 0, 1, low_open=True)
        if self.ranking != "layer":
            raise UserError("srigl keeps a constant fan-in within each layer: ranking must be layer")
        if self.grow_unactivated_only:
            raise UserError("srigl grows by gradient within each neuron: grow_unactivated_only must be false")
        structure = getattr(self, "structure", "unstructured")
        if structure not in (None, "unstructured"):
            raise UserError(f"srigl has its own structure (a constant fan-in per neuron): structure must be "
                            f"unstructured, got {structure!r}")


@register_method("srigl", help="RigL with a constant fan-in per neuron and neuron ablation (Lasby et al. 2024)")
class SRigL(RigL):
    """Lasby, Golubeva, Evci, Nica, Ioannou 2024, "Dynamic Sparse Training with Structured
    Sparsity", ICLR; reference code calgaryml/condensed-sparsity
    (``src/rigl_torch/rigl_constant_fan.py`` ``RigLConstFanScheduler``).

    Every active neuron (output row) of a sparse layer holds the same number k of active
    weights, k = the layer's ERK count // active neurons. The start is a random mask with k
    per neuron. At each RigL update (every ``update_interval`` steps until ``stop_fraction``,
    after the optimizer step, drop fraction cosine-decayed from 0.3), with n_keep the layer's
    active count minus ``int(fraction x active)``:

    1. salience: a weight is salient if it is among the layer's n_keep largest |w| or among its
       (active − n_keep) largest |dense gradient|, wherever it is;
    2. ablation: neurons with fewer than max(1, int(gamma_sal x k)) salient weights are switched
       off (the whole row), but at least the ``budget // dense fan-in + 1`` most salient neurons
       stay (the threshold drops to the salience of that neuron); ablated neurons can return;
    3. k = budget // remaining neurons, so the layer stays at its allocation;
    4. keep the layer's n_keep largest |w| outside ablated neurons, at most k per neuron;
    5. grow each remaining neuron back to exactly k by the largest |dense gradient| among its
       positions not kept (new weights at 0 with zeroed optimizer state; a weight dropped and
       regrown keeps its value and state, as the reference).
    """

    name = "srigl"
    config_class: ClassVar[type] = SRigLConfig
    density_of_all_weights: ClassVar[bool] = False
    """The layer holds k x active neurons, the largest multiple of them within its allocation."""

    def before_attach(self, names: list[str]) -> None:
        kinds = {c.name: c.kind for c in self.selection.chosen}
        for name in names:
            kind = kinds.get(name)
            if kind is not None and (kind.fan_in_dim != 1 or kind.name == "embedding"):
                raise UserError(f"srigl keeps a constant fan-in per output row and cannot sparsify {name} "
                                f"({kind.name} weights): exclude it")
        defaults = [c.name for c in registered_weights(self.model) if not c.kind.opt_in]
        self.last_layer = defaults[-1] if defaults else None
        """The model's last registered layer (its classifier), exempt from ablation by default."""

    def _allocate(self) -> dict[str, int]:
        super()._allocate()
        self.part_budgets = {name: list(parts) for name, parts in self.part_targets.items()}
        """The allocation's count per logical layer (a weight, or each of q/k/v); it holds fan-in x
        active neurons, the largest such multiple within the budget."""
        for w in self.weights:
            rows = w.shape[0] // len(self.part_budgets[w.name])
            for budget in self.part_budgets[w.name]:
                if budget // rows == 0:
                    raise UserError(f"srigl: layer {w.name} gets {budget} weights for {rows} neurons, fewer than "
                                    "one per neuron; raise density")
            self.part_targets[w.name] = [budget // rows * rows for budget in self.part_budgets[w.name]]
        return {name: sum(parts) for name, parts in self.part_targets.items()}

    def init_masks(self) -> None:
        """A random mask with the same fan-in in every neuron (``random_sparsify``)."""
        for index, w in enumerate(self.weights):
            rows = w.shape[0]
            parts = self.part_targets[w.name]
            fan_ins = torch.tensor([t // (rows // len(parts)) for t in parts], device=w.mask.device)
            scores = random_scores(w.shape, generator(self.seed, 0, "init", index), w.mask.device)
            w.set_mask(row_top(scores.reshape(rows, -1), None, fan_ins.repeat_interleave(rows // len(parts)))
                       .view(w.shape))

    def ablated_neurons(self) -> dict[str, int]:
        """Per layer, the number of neurons with no active weight."""
        return {w.name: int((~w.mask.reshape(w.shape[0], -1).any(dim=1)).sum()) for w in self.weights}

    @torch.no_grad()
    def _rewire(self, group: list, fraction: float, grads: dict) -> None:
        """One logical layer (a `Segment`: a weight or one of its row blocks) at a time."""
        (segment,) = group
        w = self.weights[segment.index]
        part = segment.lo * len(self.part_budgets[w.name]) // w.numel
        budget = self.part_budgets[w.name][part]
        if budget >= segment.size:  # a dense layer (ERK gave it density 1): nothing to rewire
            return
        grad = grads.get(w.name)
        if grad is None:
            raise UserError(f"{self.name} needs gradients at the update step; call backward() before step()")
        width = w.numel // w.shape[0]
        first, last = segment.lo // width, segment.hi // width
        rows = last - first
        magnitude = w.values.reshape(-1, width)[first:last].abs().float()
        grow_score = grad.reshape(-1, width)[first:last].abs().float().to(magnitude.device)
        active = w.mask.reshape(-1, width)[first:last]
        full = w.active_index()
        lo, hi = segment.bounds_in(full)
        before = full[lo:hi] - segment.lo
        n_ones = before.numel()
        n_keep = n_ones - int(n_ones * fraction)
        n_keep = min(n_keep, int(torch.count_nonzero(magnitude)))  # only nonzero weights are kept
        ablated = torch.zeros(rows, dtype=torch.bool, device=active.device)
        if self.config.ablation and (self.config.ablate_last or w.name != self.last_layer):
            counts = salient_counts(magnitude, grow_score, n_keep, n_ones - n_keep)
            base = budget // rows if self.config.gamma_of == "sparse" else width
            ablated = neurons_to_ablate(counts, ablation_threshold(self.config.gamma_sal, base), budget // width)
        alive = rows - int(ablated.sum())
        kept, grown = constant_fan_in_masks(magnitude, active, grow_score, n_keep, budget // alive, ablated)
        keep = kept.reshape(-1)[before]
        dropped = before[~keep]
        grown_flat = torch.nonzero(grown.reshape(-1)).reshape(-1)
        if not self.config.reinit_when_same:
            keep, dropped, grown_flat = _keep_regrown(before, keep, dropped, grown_flat)
        keep_all = torch.ones(full.numel(), dtype=torch.bool, device=keep.device)
        keep_all[lo:hi] = keep
        w.rewire_flat(keep_all, grown_flat + segment.lo, self.optimizer)
        self._retire(w, dropped + segment.lo, grown_flat + segment.lo)
        self.part_targets[w.name][part] = budget // alive * alive
        self.targets[w.name] = sum(self.part_targets[w.name])

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "part_targets": {k: list(v) for k, v in self.part_targets.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        for name, parts in state.get("part_targets", {}).items():
            self.part_targets[name] = [int(t) for t in parts]
            self.targets[name] = sum(self.part_targets[name])


# --- the rule as pure functions on (neurons, fan-in) matrices ----------------------------------
def row_top(scores: torch.Tensor, allowed: torch.Tensor | None, counts: torch.Tensor) -> torch.Tensor:
    """Boolean (rows, n) mask of the ``counts[r]`` highest scores of each row r among its ``allowed``
    entries (ties to the lower position)."""
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    take = torch.arange(scores.shape[1], device=scores.device)[None, :] < counts.to(scores.device)[:, None]
    return torch.zeros_like(take).scatter_(1, order, take)


def salient_counts(magnitude: torch.Tensor, grow_score: torch.Tensor, n_keep: int, n_grow: int) -> torch.Tensor:
    """Salient weights per neuron: those among the ``n_keep`` largest magnitudes of the layer or among
    its ``n_grow`` largest |gradients| (both over every position, ``_get_neurons_to_ablate``)."""
    salient = topk_mask(magnitude, n_keep) | topk_mask(grow_score, n_grow)
    return salient.sum(dim=1)


def ablation_threshold(gamma_sal: float, fan_in: int) -> int:
    """The fewest salient weights a neuron needs to stay: max(1, int(gamma_sal x fan_in))."""
    return max(1, int(gamma_sal * fan_in))


def neurons_to_ablate(counts: torch.Tensor, threshold: int, min_neurons: int) -> torch.Tensor:
    """Boolean per neuron: fewer than ``threshold`` salient weights, where the threshold is lowered to
    the salience of the (min_neurons + 1)-th most salient neuron, so that at least min_neurons + 1
    stay (min_neurons = the layer's budget // dense fan-in: fewer could not hold the budget)."""
    ranked = torch.sort(counts, descending=True).values
    if min_neurons < ranked.numel():
        threshold = min(threshold, int(ranked[min_neurons]))
    return counts < threshold


def constant_fan_in_masks(magnitude: torch.Tensor, active: torch.Tensor, grow_score: torch.Tensor, n_keep: int,
                          fan_in: int, ablated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, grown) boolean (neurons, fan-in) masks: keep the layer's ``n_keep`` largest magnitudes
    among the active weights of neurons not ``ablated``, at most ``fan_in`` per neuron (its largest),
    then grow every such neuron to exactly ``fan_in`` by the largest ``grow_score`` among its
    positions not kept (``_get_drop_mask``, ``_get_grow_mask``)."""
    candidates = active & ~ablated[:, None]
    kept = topk_mask(magnitude, min(n_keep, int(candidates.sum())), allowed=candidates).view_as(active)
    if bool((kept.sum(dim=1) > fan_in).any()):
        kept = row_top(magnitude, kept, kept.sum(dim=1).clamp(max=fan_in))
    need = torch.where(ablated, 0, fan_in - kept.sum(dim=1))
    return kept, row_top(grow_score, ~kept, need)
