"""Sup-tickets: superpose the cheap tickets of a dynamic sparse run into one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from sparsetrain.algorithms.dynamic import DynamicConfig, DynamicSparsifier
from sparsetrain.algorithms.granet import GraNet, GraNetConfig
from sparsetrain.algorithms.registry import register_method
from sparsetrain.config import check_range, option
from sparsetrain.errors import UserError
from sparsetrain.schedules import ANNEALING, DecaySchedule, UpdateSchedule
from sparsetrain.sparse import topk_mask

_STORAGE = ("weight", "weight_mask", "values", "indices", "indptr")


@dataclass(frozen=True)
class SupTicketsConfig(DynamicConfig):
    """The reference's CIFAR settings (luuyin/Sup-tickets README: RigL/SET underneath)."""

    regrowth: str = option("gradient", "the dynamic method underneath: gradient (RigL) or random (SET) "
                           "regrowth", choices=("gradient", "random"))
    update_interval: int = option(1000, "steps (or epochs, see interval_unit) between topology updates "
                                  "before the cycles (the reference's --update-frequency)")
    drop_fraction: float = option(0.5, "fraction of active weights dropped and regrown at each update "
                                  "before the cycles (--prune-rate)")
    anneal: str = option("constant", "how that fraction decays (--decay-schedule constant)", choices=ANNEALING)
    stop_fraction: float = option(1.0, "fraction of the pre-cycle phase with topology updates (1 = up to "
                                  "the first cycle; inside the cycles only the re-exploration rewires)")
    cycle_epochs: int = option(8, "epochs per cycle; one cheap ticket per cycle (--cycle)")
    cycle_fraction: float = option(0.1, "fraction of the epochs spent in cycles, rounded down to whole "
                                   "cycles; no cycles if it is less than one (--cycle_rate)")
    cycle_lr_1: float = option(0.001, "learning rate at the start and end of each cycle (--lr_1)")
    cycle_lr_2: float = option(0.005, "learning rate in the middle of each cycle (--lr_2)")
    explore_fraction: float = option(0.5, "fraction of each layer's active weights dropped and regrown at "
                                     "the start of every cycle (--large-death-rate)")
    superpose: str = option("caa", "how tickets are superposed: caa (cumulative average, factor 1/(k+1)) "
                            "or ema (moving average with ema_factor)", choices=("caa", "ema"))
    ema_factor: float = option(0.5, "weight of the newest ticket for superpose=ema (--CIMA_factor)")
    recalibrate_bn: bool = option(True, "recompute batch-norm statistics of the superposed network on "
                                  "the last epoch's training inputs (--update_bn)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("cycle_epochs", self.cycle_epochs, 1)
        check_range("cycle_fraction", self.cycle_fraction, 0, 1)
        check_range("cycle_lr_1", self.cycle_lr_1, 0)
        check_range("cycle_lr_2", self.cycle_lr_2, 0)
        check_range("explore_fraction", self.explore_fraction, 0, 1)
        check_range("ema_factor", self.ema_factor, 0, 1)


def cyclic_lr(t: float, lr_1: float, lr_2: float) -> float:
    """Triangular learning rate at position ``t`` in [0, 1) of a cycle: ``lr_1`` at 0, ``lr_2`` at
    0.5, back to ``lr_1`` at 1 (the reference's ``cyclic_learning_rate``, after Garipov et al. 2018)."""
    if t < 0.5:
        return lr_1 * (1 - 2 * t) + lr_2 * 2 * t
    return lr_1 * (2 * t - 1) + lr_2 * (2 - 2 * t)


def cycle_plan(epochs: int, cycle_epochs: int, fraction: float) -> tuple[int, int]:
    """(epochs before the cycles, number of cycles) as the reference's ``epochs_calculation``."""
    cyclic = epochs * fraction
    if cyclic < cycle_epochs:
        return epochs, 0
    cycles = int(cyclic // cycle_epochs)
    return epochs - cycles * cycle_epochs, cycles


@register_method("sup-tickets", help="dynamic sparse training, then cycles whose cheap tickets are "
                 "superposed into one (Yin et al. 2022)")
class SupTickets(DynamicSparsifier):
    """Yin et al. 2022, "Superposing Many Tickets into One: A Performance Booster for Sparse
    Neural Network Training", UAI (reference: luuyin/Sup-tickets, ``CIFAR/main_suptickets.py``).

    RigL (or SET) until the cycles begin; then ``cycles`` cycles of ``cycle_epochs`` epochs with
    the triangular learning rate `cyclic_lr` (set before every optimizer step, over any
    schedule of yours) and no regular topology updates. Each cycle starts with a large
    re-exploration (drop ``explore_fraction`` of each layer's weights by magnitude, regrow as
    many) and ends by collecting the current ticket: the superposed network S becomes
    ``(1 - f) S + f ticket`` (f = 1/(k+1) for the k-th ticket with CAA, S starting as the network
    at the end of the first phase; f = ``ema_factor`` for EMA) over every floating-point
    weight, bias and buffer, and is re-pruned to the density budget by one global magnitude
    ranking (exactly the budget's number of weights, ties to the lower position). At the end
    of the last cycle (the end of training) S replaces the model, with its batch-norm
    statistics recomputed on the inputs of the last training epoch (kept in memory for that).
    The training network itself is never replaced before, as in the reference.
    """

    name = "sup-tickets"
    config_class: ClassVar[type] = SupTicketsConfig

    cycles: int = 0

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, **kwargs: Any) -> None:
        super().__init__(model, optimizer, **kwargs)
        cfg = self.config
        if not self.steps_per_epoch:
            raise UserError("sup-tickets needs steps_per_epoch (its cycles are counted in epochs)")
        spe = self.steps_per_epoch
        pre_epochs, self.cycles = cycle_plan(self.total_steps // spe, cfg.cycle_epochs, cfg.cycle_fraction)
        self.cycle_steps = cfg.cycle_epochs * spe
        self.cycle_start = pre_epochs * spe if self.cycles else self.total_steps
        stop = int(cfg.stop_fraction * self.cycle_start)
        if self.cycles:
            stop = min(stop, self.cycle_start - 1)  # the re-exploration takes the boundary step
        interval = self.interval_steps(cfg.update_interval, cfg.interval_unit)
        self.schedule = UpdateSchedule(interval=interval, stop=stop)
        self.drop_schedule = DecaySchedule(cfg.drop_fraction, max(stop, 1), cfg.anneal)
        self.superposed: dict[str, torch.Tensor] | None = None
        self.tickets = 0
        self.installed = False
        self._bn_inputs: list[torch.Tensor] = []
        self._recalibrating = False
        if cfg.recalibrate_bn and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            model.register_forward_pre_hook(self._capture)
        self.grow_rule = cfg.regrowth
        self.needs_dense_grad = cfg.regrowth == "gradient"
        self._arm_dense_grads()

    # --- phases ------------------------------------------------------------------------
    def _boundary(self, step: int) -> int | None:
        """k if ``step`` (optimizer steps done) is the start of cycle k (= the end of cycle k-1)."""
        if not self.cycles or step < self.cycle_start or (step - self.cycle_start) % self.cycle_steps:
            return None
        k = (step - self.cycle_start) // self.cycle_steps
        return k if k <= self.cycles else None

    def _re_explores_after(self, step: int) -> bool:
        k = self._boundary(step)
        return k is not None and k < self.cycles

    def step(self) -> None:
        coming = self.step_count + 1
        if self.cycles and self.step_count >= self.cycle_start:  # inside the cycles
            t = ((self.step_count - self.cycle_start) % self.cycle_steps) / self.cycle_steps
            for group in self.optimizer.param_groups:
                group["lr"] = cyclic_lr(t, self.config.cycle_lr_1, self.config.cycle_lr_2)
        explore = self._re_explores_after(coming)
        grads = self._dense_grads() if explore and self.needs_dense_grad else {}
        super().step()
        k = self._boundary(self.step_count)
        if k is None:
            return
        self._collect(k)
        if explore:
            with torch.no_grad():
                for group in self._groups():
                    self._rewire(group, self.config.explore_fraction, grads)
        self._arm_dense_grads()
        if k == self.cycles:
            self._install()

    def _arm_dense_grads(self) -> None:
        super()._arm_dense_grads()
        if self.needs_dense_grad and self._re_explores_after(self.step_count + 1):
            for w in self.weights:
                w.want_dense_grad(True)

    # --- tickets -------------------------------------------------------------------------
    def _snapshot(self) -> dict[str, torch.Tensor]:
        """The network as dense tensors: each sparse weight by name, every other float tensor of
        the state dict by its key."""
        out = {w.name: w.values.detach().float().clone() for w in self.weights}
        sparse_modules = {w.name.rpartition(".")[0] for w in self.weights}
        for key, value in self.model.state_dict().items():
            module, _, leaf = key.rpartition(".")
            if (module in sparse_modules and leaf in _STORAGE) or not value.is_floating_point():
                continue
            out[key] = value.detach().clone()
        return out

    @torch.no_grad()
    def _collect(self, k: int) -> None:
        """At the start of cycle 0 keep the network as S; at the end of cycle k-1 superpose."""
        ticket = self._snapshot()
        if k == 0:
            self.superposed = ticket
            return
        f = 1.0 / (k + 1) if self.config.superpose == "caa" else self.config.ema_factor
        mixed = {key: (1 - f) * self.superposed[key] + f * ticket[key] for key in ticket}
        self.superposed = self._reprune(mixed)
        self.tickets = k

    def _reprune(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state`` with every sparse weight outside `superposed_masks` of it set to 0."""
        for name, mask in self.superposed_masks(state).items():
            state[name] = state[name] * mask.to(state[name].device)
        return state

    def superposed_masks(self, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Per sparse layer, the budget's number of largest |weights| of ``state`` (default: the
        superposed network) ranked over all sparse layers at once, ties to the lower position."""
        state = self.superposed if state is None else state
        budget = sum(self.targets[w.name] for w in self.weights)
        keep = topk_mask(torch.cat([state[w.name].abs().reshape(-1) for w in self.weights]), budget)
        out, start = {}, 0
        for w in self.weights:
            out[w.name] = keep[start:start + w.numel].view(w.shape)
            start += w.numel
        return out

    @torch.no_grad()
    def _install(self) -> None:
        """The superposed network replaces the model (masks, weights, biases, buffers)."""
        masks = self.superposed_masks()
        before = self._active_indices()
        for w in self.weights:
            w.set_mask(masks[w.name])
            w.load_dense(self.superposed[w.name])
        state = self.model.state_dict()
        for key, value in self.superposed.items():
            if key in state and key not in masks:
                state[key].copy_(value)
        self._record_active(before)
        self.installed = True
        if self.config.recalibrate_bn:
            self._recalibrate()

    def _capture(self, module: nn.Module, args: tuple) -> None:
        """Keep the inputs of the last training epoch for the batch-norm recalibration."""
        last_epoch = self.total_steps - self.steps_per_epoch
        if self.cycles and module.training and not self._recalibrating and \
                last_epoch <= self.step_count < self.total_steps and args:
            self._bn_inputs.append(args[0].detach())

    @torch.no_grad()
    def _recalibrate(self) -> None:
        """``torch.optim.swa_utils.update_bn`` on the kept inputs: cumulative batch statistics."""
        norms = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms or not self._bn_inputs:
            self._bn_inputs = []
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        was_training = self.model.training
        self.model.train()
        self._recalibrating = True
        for x in self._bn_inputs:
            self.model(x)
        self._recalibrating = False
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        self.model.train(was_training)
        self._bn_inputs = []

    def current_targets(self) -> dict[str, int]:
        """After the superposed network is installed, layers hold what the global ranking gave
        them (the total is the budget)."""
        if self.installed:
            return {w.name: w.active for w in self.weights}
        return super().current_targets()

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(superposed=self.superposed, tickets=self.tickets, installed=self.installed)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.superposed = state.get("superposed")
        self.tickets = int(state.get("tickets", 0))
        self.installed = bool(state.get("installed", False))


@dataclass(frozen=True)
class SupTicketsGraNetConfig(SupTicketsConfig, GraNetConfig):
    """The reference's "cheap tickets created by GraNet" CIFAR command (luuyin/Sup-tickets README:
    --method GraNet --init-density 0.5 --final-density 0.05, --init-prune-epoch 0 and
    --final-prune-epoch 110 of 250 epochs by default, regrowth as the RigL variant)."""

    prune_stop_fraction: float = option(0.44, "fraction of training by which `density` is reached (the "
                                        "reference's default --final-prune-epoch 110 of --epochs 250)")


@register_method("sup-tickets-granet", help="Sup-tickets over GraNet: gradual pruning with regrowth, then "
                 "cycles whose cheap tickets are superposed into one (Yin et al. 2022)")
class SupTicketsGraNet(GraNet, SupTickets):
    """`SupTickets` with GraNet underneath (the reference's ``--method GraNet``): before the
    cycles, GraNet's gradual global magnitude pruning from ``initial_density`` (0.5) down to
    ``density`` on the cubic schedule (ending at ``prune_stop_fraction``), each pruning step
    followed by the regrowth update (drop ⌈r·active⌉ by magnitude, grow by gradient), every
    ``update_interval`` steps; then the cycles, tickets and superposition of `SupTickets`, whose
    budget is the final ``density``. The cycles must begin after pruning has ended."""

    name = "sup-tickets-granet"
    config_class: ClassVar[type] = SupTicketsGraNetConfig

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, **kwargs: Any) -> None:
        super().__init__(model, optimizer, **kwargs)
        if self.cycles and self.pruning.end > self.cycle_start:
            raise UserError(f"sup-tickets-granet: gradual pruning runs until step {self.pruning.end}, after the "
                            f"cycles begin (step {self.cycle_start}); lower prune_stop_fraction or cycle_fraction")

    def current_targets(self) -> dict[str, int]:
        if self.installed:
            return {w.name: w.active for w in self.weights}
        return super().current_targets()
