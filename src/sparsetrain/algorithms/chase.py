"""Chase: channel-aware dynamic sparse training (unstructured DST that ends in fewer channels)."""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from sparsetrain.algorithms.base import warn_few_updates
from sparsetrain.algorithms.dead_channels import zero_channels
from sparsetrain.algorithms.dynamic import DynamicConfig, DynamicSparsifier
from sparsetrain.algorithms.registry import register_method
from sparsetrain.config import check_range, option
from sparsetrain.errors import ConfigError, UserError
from sparsetrain.schedules import ANNEALING, CubicSchedule, DecaySchedule
from sparsetrain.sparse.coupling import Coupling, couplings


@dataclass(frozen=True)
class ChaseConfig(DynamicConfig):
    """The reference's VGG-19 / CIFAR-100 script (luuyin/chase ``Cifar/scripts/vgg19.sh``:
    160 epochs of 500 steps, ``--density 0.1 --start_layer_rate 0.5 --minumum_ratio 0.2
    --layer_interval 8000 --update_frequency 1000 --death-rate 0.05 --stop_gmp_epochs 130``)."""

    distribution: str = option("erk", "initial layer-wise density allocation (the reference: fixed_ERK)",
                               choices=("uniform", "er", "erk", "scores", "custom"))
    update_interval: int = option(1000, "steps (or epochs, see interval_unit) between weight-level updates "
                                        "(the reference's --update_frequency 1000)")
    ranking: str = option("global", "weights are pruned and grown over all layers at once, as the reference "
                                    "(global_magnitude / global_gradients)", choices=("global",))
    grow_fraction: float = option(0.05, "delta: before elastic_stop_fraction each update prunes to the budget "
                                        "and grows delta x all weights on top of it, delta decaying to 0 by "
                                        "cosine (the reference's --death-rate 0.05)")
    elastic_stop_fraction: float = option(0.8125, "fraction of training with those elastic updates; after it "
                                                  "RigL-style updates (the reference: the last 30 of 160 epochs)")
    drop_fraction: float = option(0.5, "RigL-style phase: fraction of the active weights dropped and regrown "
                                       "by gradient, cosine-decayed over the whole run (the reference's 0.5)")
    anneal: str = option("cosine", "how that fraction decays", choices=ANNEALING)
    anneal_floor: float = option(0.005, "the fraction at the end of training (the reference's eta_min 0.005)")
    stop_fraction: float = option(1.0, "fraction of training after which the topology is frozen")
    reinit_when_same: bool = option(True, "a weight pruned and regrown in one update restarts at 0 (the reference "
                                          "zeroes pruned weights before it grows)")
    channel_sparsity: float = option(0.5, "Sc: fraction of the prunable channels removed by channel_stop_fraction "
                                          "(the reference's --start_layer_rate 0.5); 0 = plain unstructured DST")
    channel_floor: float = option(0.2, "beta: no layer keeps fewer than int(out x (1 - Sc) x beta) channels "
                                       "(the reference's --minumum_ratio: 0.2 in its VGG-19 script, 0.5 for "
                                       "ResNet-50); 1 takes Sc of every layer's channels, the fastest shrunk "
                                       "model (docs/performance_structured.md)")
    channel_interval: int = option(8, "weight-level updates between channel-pruning steps; channels are pruned "
                                      "half an update_interval before an update (the reference: every 8000 "
                                      "steps, at 7500, 15500, ...)")
    channel_stop_fraction: float = option(0.8125, "fraction of training over which the channel sparsity follows "
                                                  "the cubic schedule to Sc (the reference's --stop_gmp_epochs "
                                                  "130 of 160)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("grow_fraction", self.grow_fraction, 0, 1)
        check_range("elastic_stop_fraction", self.elastic_stop_fraction, 0, 1)
        check_range("channel_sparsity", self.channel_sparsity, 0, 1, high_open=True)
        check_range("channel_floor", self.channel_floor, 0, 1)
        check_range("channel_interval", self.channel_interval, 1)
        check_range("channel_stop_fraction", self.channel_stop_fraction, 0, 1, low_open=True)
        if self.grow_fraction + self.density > 1:
            raise ConfigError(f"density + grow_fraction must be at most 1, got {self.density:g} + "
                              f"{self.grow_fraction:g}")


@register_method("chase", help="channel-aware DST: unstructured updates while the weakest channels are "
                               "removed gradually (Yin et al. 2023)")
class Chase(DynamicSparsifier):
    """Yin et al. 2023, "Dynamic Sparsity Is Channel-Level Sparsity Learner", NeurIPS; reference
    code luuyin/chase (``Cifar/sparselearning/core_dst_chase.py`` ``Masking.step``, ``del_layer``,
    ``truncate_weights_prune``/``_grow``, ``truncate_weights``; ``Cifar/main_dst_chase.py``).

    Two levels on one random ERK mask at ``density``:

    * Channels: half an update interval before every ``channel_interval``-th weight update, until
      ``channel_stop_fraction``, the channel sparsity is raised to the cubic schedule
      s_t = Sc (1 − (1 − t/T)³) (T = the channel stop step): the prunable channels are ranked
      together by the mean |w| of their whole filter (pruned weights count as 0) and the lowest go
      until round(C (1 − s_t)) of the C prunable channels are left, no layer below
      int(out · (1 − Sc) · β) (a layer that would go below keeps exactly its floor, and the rest are
      taken from the others). A channel is prunable when its output reaches exactly one next layer
      through batch norms and per-channel ops (`sparsetrain.sparse.coupling`); with the filter go
      the next layer's input channel, the producer's bias entry and the batch-norm weight and bias
      of that channel, so its output is exactly 0 (see docs/fidelity.md for what the reference does).
    * Weights, every ``update_interval`` steps: until ``elastic_stop_fraction``, a global magnitude
      prune to the budget B (the initial active count) followed by growth of round(δ_t · N) weights
      at the largest |gradient| (N = all sparsified weights, δ_t = ``grow_fraction`` decaying to 0
      by cosine), so the network trains at B + δ_t·N between updates; afterwards RigL-style: drop
      ⌈r_t · active⌉ smallest magnitudes globally and regrow back to B by gradient, r_t from
      ``drop_fraction`` by cosine over the whole run. Growth never enters a removed channel; new
      weights start at 0 with zeroed optimizer state. Removed channels stay removed, and the budget
      they held is regrown elsewhere, so B is the weight count of the original network's layers.
    """

    name = "chase"
    config_class: ClassVar[type] = ChaseConfig
    needs_dense_grad = True
    grow_rule = "gradient"

    def __init__(self, model, optimizer=None, **kwargs: Any) -> None:
        super().__init__(model, optimizer, **kwargs)
        cfg = self.config
        self.budget = sum(self.targets.values())
        """B: the active weights after each update of the RigL-style phase."""
        self.elastic_stop = int(cfg.elastic_stop_fraction * self.total_steps)
        self.grow_schedule = DecaySchedule(cfg.grow_fraction, max(self.elastic_stop, 1), "cosine", 0.0)
        self.channel_stop = int(cfg.channel_stop_fraction * self.total_steps)
        self.channel_schedule = CubicSchedule(1.0, 1.0 - cfg.channel_sparsity, 0, 1, max(self.channel_stop, 1))
        """Fraction of the prunable channels kept at step t: 1 − s_t."""
        self.channel_period = cfg.channel_interval * self.schedule.interval
        self.couplings: list[Coupling] | None = None
        """The prunable producer -> consumer pairs, found at the model's first forward pass."""
        self.alive: dict[str, torch.Tensor] = {}
        """Producer weight name -> one bool per output channel, False once removed."""
        self._allowed: dict[str, torch.Tensor] = {}
        self._channels_pruned_at = -1
        self._trace_hook = None
        if cfg.channel_sparsity > 0:
            trace = weakref.WeakMethod(self._trace)  # a deep copy of the model does not copy the method
            self._trace_hook = model.register_forward_pre_hook(
                lambda module, args, kwargs: trace() and trace()(module, args, kwargs), with_kwargs=True)
            first = self.channel_period - self.schedule.interval // 2
            warn_few_updates(self.name, "channel-pruning step", len(range(first, self.channel_stop, self.channel_period)),
                             self.channel_period, self.channel_stop, self.total_steps, "channel_stop_fraction")

    # --- schedules ------------------------------------------------------------------------
    def is_channel_step(self, step: int) -> bool:
        """True if channels are pruned after optimizer step ``step`` (the reference's
        ``(steps + update_frequency/2) % layer_interval == 0``, before the channel stop)."""
        return (0 < step < self.channel_stop
                and (step + self.schedule.interval // 2) % self.channel_period == 0)

    def channel_sparsity_at(self, step: int) -> float:
        """s_t = Sc (1 − (1 − t/T)³): the fraction of the prunable channels removed by step t."""
        return 1.0 - self.channel_schedule.at(step)

    # --- finding the channels ---------------------------------------------------------------
    def _trace(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        """At the first forward pass: trace one sample to find the prunable channels."""
        if self._trace_hook is None:
            return
        self._trace_hook.remove()
        self._trace_hook = None
        one = tuple(a[:1] if torch.is_tensor(a) and a.dim() else a for a in args)
        self._set_couplings(couplings(module, *one, **kwargs))

    def _set_couplings(self, found: list[Coupling]) -> None:
        sparse = {w.name: w for w in self.weights}
        self.couplings = [c for c in found if c.producer in sparse and c.consumer in sparse]
        for c in self.couplings:
            if c.producer not in self.alive:
                self.alive[c.producer] = torch.ones(sparse[c.producer].shape[0], dtype=torch.bool,
                                                    device=sparse[c.producer].mask.device)
        self._update_allowed()

    def _update_allowed(self) -> None:
        """Per weight, the positions outside removed channels (only weights that lost some)."""
        sparse = {w.name: w for w in self.weights}
        allowed: dict[str, torch.Tensor] = {}
        for c in self.couplings or ():
            alive = self.alive[c.producer]
            if bool(alive.all()):
                continue
            for name, dim in ((c.producer, 0), (c.consumer, 1)):
                w = sparse[name]
                shape = [1] * len(w.shape)
                shape[dim] = -1
                keep = alive.to(w.mask.device).view(shape).expand(w.shape)
                allowed[name] = allowed[name] & keep if name in allowed else keep.clone()
        self._allowed = allowed

    # --- the order of operations --------------------------------------------------------------
    def step(self) -> None:
        super().step()
        self._prune_channels_if_due()
        self._zero_removed_channels()

    def update_topology(self, grads: dict[str, torch.Tensor | None]) -> None:
        self._prune_channels_if_due()  # the reference removes channels before it updates weights
        super().update_topology(grads)

    def plan(self, active: int, target: int, fraction: float, numel: int) -> tuple[int, int]:
        room = numel - sum(int((~a).sum()) for a in self._allowed.values())
        if self.step_count < self.elastic_stop:  # prune to the budget, grow delta x N on top
            n_keep = min(active, self.budget)
            n_grow = round(self.grow_schedule.at(self.step_count) * numel)
        else:  # RigL-style: drop ceil(r x active), grow back to the budget
            n_keep = active - min(active, math.ceil(fraction * active - 1e-9))
            n_grow = max(self.budget - n_keep, 0)
        return n_keep, max(min(n_grow, room - n_keep), 0)

    def _grow(self, group, grads, excluded, n, total):  # noqa: ANN001
        if self._allowed:  # never grow into a removed channel
            offset, parts = 0, [excluded]
            for s in group:
                allowed = self._allowed.get(self.weights[s.index].name)
                if allowed is not None:
                    dead = torch.nonzero(~allowed.reshape(-1)[s.lo:s.hi]).reshape(-1)
                    parts.append(dead.to(excluded.device) + offset)
                offset += s.size
            excluded = torch.unique(torch.cat(parts))
        return super()._grow(group, grads, excluded, n, total)

    # --- channel pruning ----------------------------------------------------------------------
    def _prune_channels_if_due(self) -> None:
        t = self.step_count
        if self.config.channel_sparsity == 0 or not self.is_channel_step(t) or self._channels_pruned_at == t:
            return
        self._channels_pruned_at = t
        if self.couplings is None:
            raise UserError("chase: the model must run a forward pass before the first channel-pruning step "
                            "(it finds the prunable channels on it)")
        self.prune_channels(self.channel_sparsity_at(t))

    @torch.no_grad()
    def prune_channels(self, sparsity: float) -> dict[str, list[int]]:
        """Remove the weakest channels until round(C (1 − sparsity)) of the C prunable channels are
        left (never below a layer's floor). Returns the removed channels per producer."""
        if not self.couplings:
            return {}
        total = sum(int(self.alive[c.producer].numel()) for c in self.couplings)
        alive_now = sum(int(self.alive[c.producer].sum()) for c in self.couplings)
        n_remove = alive_now - round(total * (1 - sparsity))
        if n_remove <= 0:
            return {}
        floors = {c.producer: int(self.alive[c.producer].numel() * (1 - self.config.channel_sparsity)
                                  * self.config.channel_floor) for c in self.couplings}
        removed = _select_channels(self.channel_scores(), {k: v.cpu() for k, v in self.alive.items()}, floors, n_remove)
        self.remove_channels(removed)
        return removed

    @torch.no_grad()
    def channel_scores(self) -> dict[str, torch.Tensor]:
        """Producer weight name -> the mean |w| of each output channel's whole filter (pruned
        weights count as 0; the reference's ``--mag_wise`` score), on the CPU."""
        sparse = {w.name: w for w in self.weights}
        return {c.producer: sparse[c.producer].values.detach().abs().reshape(len(self.alive[c.producer]), -1)
                .float().mean(1).cpu() for c in self.couplings or ()}

    @torch.no_grad()
    def remove_channels(self, removed: dict[str, list[int]]) -> None:
        """Remove the given output channels of producers (weight name -> channel indices): their
        filters, the next layer's matching input channels, their bias and batch-norm entries."""
        before = self._active_indices()
        for c in self.couplings or ():
            gone = removed.get(c.producer)
            if gone:
                self.alive[c.producer][torch.tensor(gone, device=self.alive[c.producer].device)] = False
        self._update_allowed()
        for w in self.weights:
            if w.name in self._allowed:
                keep = self._allowed[w.name].reshape(-1)[w.active_index()]
                if not bool(keep.all()):
                    w.rewire_flat(keep, torch.zeros(0, dtype=torch.long, device=w.mask.device), self.optimizer)
        self._record_active(before)
        self._zero_removed_channels()

    @torch.no_grad()
    def _zero_removed_channels(self) -> None:
        """A removed channel's bias and batch-norm weight and bias are 0 (with their optimizer
        state), so its output is exactly 0 in training and in eval mode."""
        for c in self.couplings or ():
            dead = ~self.alive[c.producer]
            if bool(dead.any()):
                zero_channels(self.model, self.optimizer, c.bias, c.norms, dead)

    # --- bookkeeping --------------------------------------------------------------------------
    def channel_counts(self) -> dict[str, tuple[int, int]]:
        """Producer weight name -> (channels left, channels at the start)."""
        return {name: (int(a.sum()), int(a.numel())) for name, a in self.alive.items()}

    def current_targets(self) -> dict[str, int]:
        return {w.name: w.active for w in self.weights}  # global ranking: only the total is fixed

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "alive": {k: v.clone() for k, v in self.alive.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        for name, value in state.get("alive", {}).items():
            self.alive[name] = value.clone().bool()
        if self.couplings is not None:
            self._update_allowed()


def _select_channels(scores: dict[str, torch.Tensor], alive: dict[str, torch.Tensor],
                     floors: dict[str, int], n: int) -> dict[str, list[int]]:
    """The ``n`` alive channels with the lowest scores over all layers (ties to the earlier layer,
    then the lower index), where a layer that would fall below its floor gives exactly its lowest
    channels down to the floor and the rest of ``n`` comes from the other layers (the reference's
    ``del_layer`` loop over ``residual_layer``)."""
    removed: dict[str, list[int]] = {}
    open_layers = [name for name in scores if int(alive[name].sum()) > floors[name]]
    order = {name: i for i, name in enumerate(scores)}
    while n > 0 and open_layers:
        candidates = sorted((float(scores[name][i]), order[name], i, name) for name in open_layers
                            for i in torch.nonzero(alive[name]).reshape(-1).tolist()
                            if i not in removed.get(name, ()))
        picked: dict[str, list[int]] = {}
        for _, _, i, name in candidates[:n]:
            picked.setdefault(name, []).append(i)
        over = [name for name in open_layers
                if int(alive[name].sum()) - len(removed.get(name, ())) - len(picked.get(name, ())) < floors[name]]
        if not over:
            for name, idx in picked.items():
                removed.setdefault(name, []).extend(idx)
            return removed
        for name in over:  # clamp to the floor with the layer's own lowest channels
            left = int(alive[name].sum()) - len(removed.get(name, ()))
            own = [i for _, _, i, layer in candidates if layer == name][:left - floors[name]]
            removed.setdefault(name, []).extend(own)
            n -= len(own)
            open_layers.remove(name)
    return removed
